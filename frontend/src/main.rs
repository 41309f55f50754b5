use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::shutdown::init_logging();
    let server = frontend::Server::bind(frontend::Config::parse()).await?;
    let (trigger, shutdown) = common::shutdown::channel();
    tokio::spawn(async move {
        common::shutdown::on_signal().await;
        trigger.trigger();
    });
    server.run(shutdown).await
}
