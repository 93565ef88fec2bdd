//! The `votestream` binary: parses the command line and runs one subcommand.

use clap::Parser;
use votestream::config::{Cli, Command};
use votestream::ingress::Ingress;
use votestream::shutdown;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    votestream::telemetry::init();
    match cli.command {
        Command::Ingress(settings) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async {
                let ingress = Ingress::build(&settings)?;
                ingress.run(shutdown::signal()).await
            })
        }
        Command::Consumer(settings) => votestream::consumer::run(settings, shutdown::signal()),
        Command::Logs(_) | Command::All(_) => {
            anyhow::bail!("this subcommand is not built yet")
        }
    }
}
