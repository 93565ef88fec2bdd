//! The `votestream` binary: parses the command line and runs one subcommand.

use clap::Parser;
use votestream::config::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    votestream::telemetry::init();
    match cli.command {
        Command::Logs(settings) => runtime()?.block_on(async {
            let app = votestream::logs::LogsApp::build(&settings).await?;
            tracing::info!(addr = %app.addr(), "logs app listening");
            app.run(votestream::shutdown::signal()).await
        }),
        Command::Ingress(_) | Command::Consumer(_) | Command::All(_) => {
            anyhow::bail!("this subcommand is not built yet")
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
