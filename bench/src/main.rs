use clap::Parser;

fn main() -> anyhow::Result<()> {
    let config = bench::Config::parse();
    config.validate()?;
    common::runtime::build(Some(config.threads))?.block_on(measure(config))
}

async fn measure(config: bench::Config) -> anyhow::Result<()> {
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
