//! The `votestream` binary: parses the command line and runs one subcommand.

use anyhow::Context as _;
use clap::Parser;
use tokio::sync::watch;
use votestream::config::{AllSettings, Cli, Command};
use votestream::consumer::Consumer;
use votestream::ingress::Ingress;
use votestream::logs::LogsApp;
use votestream::shutdown::{self, stop_all_after};

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    votestream::telemetry::init();
    // Secrets from files, then the credentials tried once (issue 15): a refusal stops here.
    let prepared = cli
        .command
        .load_secrets()
        .and_then(|()| runtime()?.block_on(votestream::credentials::check(&cli.command)));
    if let Err(e) = prepared {
        eprintln!("votestream: {e:#}");
        // Recount's exit status 2: could not recount.
        std::process::exit(if matches!(cli.command, Command::Recount(_)) {
            2
        } else {
            1
        });
    }
    match cli.command {
        Command::Ingress(settings) => runtime()?.block_on(async {
            let ingress = Ingress::build(&settings)?;
            ingress.run(shutdown::signal()).await
        }),
        Command::Consumer(settings) => runtime()?.block_on(async {
            let consumer = Consumer::build(settings)?;
            consumer.run(shutdown::signal()).await
        }),
        Command::Logs(settings) => runtime()?.block_on(async {
            let app = LogsApp::build(&settings).await?;
            tracing::info!(addr = %app.addr(), scheme = app.scheme(), admin = ?app.admin_addr(), "logs app listening");
            app.run(shutdown::signal()).await
        }),
        Command::All(settings) => all(settings),
        Command::Recount(settings) => {
            let report = runtime()?.block_on(votestream::recount::recount(&settings));
            match report {
                Ok(report) => {
                    print!("{}", report.render());
                    std::process::exit(if report.differences.is_empty() { 0 } else { 1 });
                }
                Err(e) => {
                    eprintln!("votestream recount: {e:#}");
                    std::process::exit(2);
                }
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Ingress, consumer and logs in one process; one SIGTERM stops all three,
/// each draining as it would alone.
fn all(settings: AllSettings) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    runtime()?.block_on(async {
        let consumer = Consumer::build(settings.consumer())?;
        let ingress = Ingress::build(&settings.ingress())?;
        let logs = LogsApp::build(&settings.logs()).await?;
        tracing::info!(logs = %logs.addr(), "votestream all: ingress, consumer and logs running");
        let on_signal = stop.clone();
        tokio::spawn(async move {
            shutdown::signal().await;
            let _ = on_signal.send(true);
        });
        // Whichever part ends first (signal or failure) stops the others; each
        // drains as it would alone.
        let (ingress, consumer, logs) = tokio::join!(
            stop_all_after(stop.clone(), ingress.run(shutdown::stopped(stopped.clone()))),
            stop_all_after(stop.clone(), consumer.run(shutdown::stopped(stopped.clone()))),
            stop_all_after(stop.clone(), logs.run(shutdown::stopped(stopped.clone()))),
        );
        ingress
            .context("ingress")
            .and(consumer.context("consumer"))
            .and(logs.context("logs"))
    })
}
