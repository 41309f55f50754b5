use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = controller::Config::parse();
    common::shutdown::init_logging(&config.log_level);
    let server = controller::Server::bind(config).await?;
    server.run(common::shutdown::on_signals()).await
}
