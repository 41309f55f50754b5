use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = bench::Config::parse();
    config.validate()?;
    if config.preload {
        eprintln!("preloading {} keys...", config.keys);
        bench::preload(&config).await?;
    }
    let outcome = bench::run(&config).await;
    println!("{}", bench::report::text(&config, &outcome));
    if let Some(path) = &config.json {
        std::fs::write(path, serde_json::to_vec_pretty(&bench::report::json(&config, &outcome))?)?;
    }
    if let Some(path) = &config.plot {
        std::fs::write(path, bench::report::svg(&config, &outcome))?;
    }
    Ok(())
}
