//! Quick throughput check of the ingress, per route: starts an ingress in this
//! process (the same `Ingress` the binary runs) against the local Kafka on a
//! temporary topic, drives each route with concurrent clients for a few
//! seconds, and prints votes/s and request latency (p50, p99). A benchmark
//! prints figures; it asserts nothing.
//!
//!   cargo run --release --example ingress_load [-- <extra ingress flags, e.g. --producer-linger-ms 2>]
//!
//! Environment: KAFKA_BROKERS [127.0.0.1:9092], LOAD_SECONDS [10] per route,
//! LOAD_CONCURRENCY [32] clients, LOAD_BATCH [50] votes per batch request.
//! Client, ingress and broker share this machine, so the figures are a floor
//! for the ingress alone, not a capacity plan.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};
use tonic::transport::Channel;
use votestream::config::{Cli, Command};
use votestream::ingress::Ingress;
use votestream::proto::vote_service_client::VoteServiceClient;
use votestream::proto::{CastVotesRequest, Vote};

#[derive(Clone, Copy, Debug)]
enum Scenario {
    GrpcOne,
    GrpcBatch,
    HttpObject,
    HttpArray,
}

impl Scenario {
    fn label(self, batch: usize) -> String {
        match self {
            Scenario::GrpcOne => "gRPC CastVote (1 vote)".into(),
            Scenario::GrpcBatch => format!("gRPC CastVotes ({batch} votes)"),
            Scenario::HttpObject => "HTTP object (1 vote)".into(),
            Scenario::HttpArray => format!("HTTP array ({batch} votes)"),
        }
    }
}

struct Load {
    seconds: u64,
    concurrency: usize,
    batch: usize,
    http: String,
    grpc: String,
}

/// What one client saw: request latencies (in the measured window) and votes acknowledged.
#[derive(Default)]
struct ClientTally {
    latencies: Vec<Duration>,
    votes: u64,
    errors: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn grpc_vote(i: usize) -> Vote {
    Vote {
        name: Some(format!("Banda {}", i % 20)),
        album: Some("Álbum".into()),
        year: Some(1990 + (i % 30) as i32),
        rank: Some((i % 11) as f64),
    }
}

/// The seed's format: every field a string.
fn json_vote(i: usize) -> Value {
    json!({"name": format!("Banda {}", i % 20), "album": "Álbum", "year": (1990 + i % 30).to_string(), "rank": (i % 11).to_string()})
}

async fn client(
    load: Arc<Load>,
    scenario: Scenario,
    warm_until: Instant,
    until: Instant,
) -> anyhow::Result<ClientTally> {
    let mut tally = ClientTally::default();
    let http = reqwest::Client::new();
    let mut grpc = VoteServiceClient::new(Channel::from_shared(load.grpc.clone())?.connect().await?);
    let url = format!("{}/votes", load.http);
    let array = Value::Array((0..load.batch).map(json_vote).collect());
    let object = json_vote(7);
    let mut i = 0;
    while Instant::now() < until {
        i += 1;
        let started = Instant::now();
        let acked: anyhow::Result<u64> = match scenario {
            Scenario::GrpcOne => grpc.cast_vote(grpc_vote(i)).await.map(|_| 1).map_err(Into::into),
            Scenario::GrpcBatch => {
                let votes = (0..load.batch).map(|j| grpc_vote(i + j)).collect();
                grpc.cast_votes(CastVotesRequest { votes })
                    .await
                    .map(|r| u64::from(r.into_inner().accepted))
                    .map_err(Into::into)
            }
            Scenario::HttpObject | Scenario::HttpArray => {
                let body = if matches!(scenario, Scenario::HttpObject) {
                    &object
                } else {
                    &array
                };
                let response = http.post(&url).json(body).send().await?;
                anyhow::ensure!(response.status() == 200, "HTTP {}", response.status());
                let reply: Value = response.json().await?;
                Ok(reply["accepted"].as_u64().unwrap_or(1))
            }
        };
        let latency = started.elapsed();
        if started < warm_until {
            continue;
        }
        match acked {
            Ok(votes) => {
                tally.votes += votes;
                tally.latencies.push(latency);
            }
            Err(_) => tally.errors += 1,
        }
    }
    Ok(tally)
}

async fn run(load: Arc<Load>, scenario: Scenario) -> anyhow::Result<()> {
    let warmup = Duration::from_secs(1);
    let started = Instant::now();
    let warm_until = started + warmup;
    let until = warm_until + Duration::from_secs(load.seconds);
    let clients: Vec<_> = (0..load.concurrency)
        .map(|_| tokio::spawn(client(load.clone(), scenario, warm_until, until)))
        .collect();
    let mut latencies = Vec::new();
    let (mut votes, mut errors) = (0, 0);
    for c in clients {
        let tally = c.await??;
        latencies.extend(tally.latencies);
        votes += tally.votes;
        errors += tally.errors;
    }
    let window = (Instant::now() - warm_until).as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{:<28} {:>10.0} {:>12.0} {:>9.1} {:>9.1} {:>7}",
        scenario.label(load.batch),
        votes as f64 / window,
        latencies.len() as f64 / window,
        percentile(0.50),
        percentile(0.99),
        errors
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let brokers = env_or("KAFKA_BROKERS", "127.0.0.1:9092".to_owned());
    let topic = format!("ingress-load-{}", uuid::Uuid::now_v7().simple());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_topics([&NewTopic::new(&topic, 6, TopicReplication::Fixed(1))], &options)
        .await?
    {
        result.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }

    let mut args = vec![
        "votestream".to_owned(),
        "ingress".into(),
        "--kafka-brokers".into(),
        brokers.clone(),
        "--votes-topic".into(),
        topic.clone(),
        "--grpc-addr".into(),
        "127.0.0.1:0".into(),
        "--http-addr".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(std::env::args().skip(1));
    let Command::Ingress(settings) = Cli::try_parse_from(args)?.command else {
        anyhow::bail!("not the ingress subcommand");
    };
    let ingress = Ingress::build(&settings)?;
    let load = Arc::new(Load {
        seconds: env_or("LOAD_SECONDS", 10),
        concurrency: env_or("LOAD_CONCURRENCY", 32),
        batch: env_or("LOAD_BATCH", 50),
        http: format!("http://{}", ingress.http_addr()),
        grpc: format!("http://{}", ingress.grpc_addr().context("gRPC is switched off")?),
    });
    // The ingress gets its own runtime, as in the binary, so the load clients do not share its
    // scheduler (they still share the CPUs).
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(ingress.run(async {
                let _ = stopped.await;
            }))
    });

    println!(
        "{} clients, {} s per route after 1 s warm-up, batches of {}, {} CPUs, linger {} ms, compression {:?}",
        load.concurrency,
        load.seconds,
        load.batch,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        settings.ingress.producer.producer_linger_ms,
        settings.ingress.producer.producer_compression,
    );
    println!(
        "{:<28} {:>10} {:>12} {:>9} {:>9} {:>7}",
        "route", "votes/s", "requests/s", "p50 ms", "p99 ms", "errors"
    );
    let result = async {
        for scenario in [
            Scenario::GrpcOne,
            Scenario::GrpcBatch,
            Scenario::HttpObject,
            Scenario::HttpArray,
        ] {
            run(load.clone(), scenario).await?;
        }
        anyhow::Ok(())
    }
    .await;

    let _ = stop.send(());
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the ingress thread panicked"))??;
    admin.delete_topics(&[topic.as_str()], &AdminOptions::new()).await?;
    result
}
