use bench::{Driver, DriverChoice};
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
        if config.verify {
            let checked = bench::verify(&config).await?;
            eprintln!("verified: all {checked} keys read back through the client library");
        }
    }
    let outcome = match config.driver {
        DriverChoice::One(driver) => bench::run(&config, driver, config.duration).await,
        DriverChoice::Both => {
            let (raw, library) = bench::run_both(&config).await;
            let labelled = |driver: Driver| bench::Config {
                label: format!("{} ({})", config.label, driver.name()),
                ..config.clone()
            };
            println!("{}", bench::report::text(&labelled(Driver::Raw), &raw));
            println!("{}", bench::report::text(&labelled(Driver::Client), &library));
            println!("{}", bench::report::comparison(&raw, &library));
            if let Some(path) = &config.json {
                let mut report = bench::report::json(&config, &raw);
                report["client_library"] = bench::report::json(&labelled(Driver::Client), &library);
                std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
            }
            return Ok(());
        }
    };
    println!("{}", bench::report::text(&config, &outcome));
    if let Some(path) = &config.json {
        std::fs::write(path, serde_json::to_vec_pretty(&bench::report::json(&config, &outcome))?)?;
    }
    if let Some(path) = &config.plot {
        std::fs::write(path, bench::report::svg(&config, &outcome))?;
    }
    if config.delete_all {
        let started = std::time::Instant::now();
        let deleted = bench::delete_all(&config).await?;
        println!("deleted all {deleted} keys in {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(())
}
