//! The product's settings with their defaults, parsed as the binary parses
//! them, so the benchmark uses the pipeline's real batch size and producer
//! configuration rather than copies of them.

use clap::Parser;
use votestream::config::{Cli, Command, ConsumerSettings, IngressSettings};

pub fn ingress(brokers: &str, topic: &str) -> anyhow::Result<IngressSettings> {
    let args = [
        "votestream",
        "ingress",
        "--kafka-brokers",
        brokers,
        "--votes-topic",
        topic,
    ];
    match Cli::try_parse_from(args)?.command {
        Command::Ingress(settings) => Ok(settings),
        _ => anyhow::bail!("not the ingress subcommand"),
    }
}

pub fn consumer() -> anyhow::Result<ConsumerSettings> {
    match Cli::try_parse_from(["votestream", "consumer"])?.command {
        Command::Consumer(settings) => Ok(settings),
        _ => anyhow::bail!("not the consumer subcommand"),
    }
}
