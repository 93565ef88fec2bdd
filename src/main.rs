//! The `votestream` binary: parses the command line and runs one subcommand.

use clap::Parser;
use votestream::config::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    votestream::telemetry::init();
    match cli.command {
        Command::Consumer(settings) => votestream::consumer::run(settings, votestream::shutdown::signal()),
        Command::Ingress(_) | Command::Logs(_) | Command::All(_) => {
            anyhow::bail!("this subcommand is not built yet")
        }
    }
}
