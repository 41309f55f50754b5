use clap::Parser;

fn main() -> anyhow::Result<()> {
    let config = frontend::Config::parse();
    common::shutdown::init_logging(&config.log_level);
    common::runtime::build(config.worker_threads)?.block_on(async {
        let server = frontend::Server::bind(config).await?;
        server.run(common::shutdown::on_signals()).await
    })
}
