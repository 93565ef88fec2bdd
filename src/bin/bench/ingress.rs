//! Ingress load: the real `votestream ingress` binary on free ports, driven
//! per route by concurrent closed-loop clients (each sends its next request
//! when the last one is answered, i.e. acknowledged by Kafka), after a
//! warm-up. Also the paced (open-loop) gRPC sender of the end-to-end run.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use votestream::proto::vote_service_client::VoteServiceClient;
use votestream::proto::{CastVotesRequest, Vote};

use harness::free_port;

use crate::stack::{Process, Stack};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    GrpcSingle,
    GrpcBatch,
    HttpSingle,
    HttpArray,
}

impl Route {
    pub const ALL: [Route; 4] = [Route::GrpcSingle, Route::GrpcBatch, Route::HttpSingle, Route::HttpArray];

    pub fn key(self) -> &'static str {
        match self {
            Route::GrpcSingle => "grpc_single",
            Route::GrpcBatch => "grpc_batch",
            Route::HttpSingle => "http_single",
            Route::HttpArray => "http_array",
        }
    }

    pub fn label(self, batch: usize) -> String {
        match self {
            Route::GrpcSingle => "gRPC CastVote (1 vote)".into(),
            Route::GrpcBatch => format!("gRPC CastVotes ({batch} votes)"),
            Route::HttpSingle => "HTTP POST /votes object (1 vote)".into(),
            Route::HttpArray => format!("HTTP POST /votes array ({batch} votes)"),
        }
    }
}

/// A running `votestream ingress`.
pub struct Ingress {
    pub http: String,
    pub grpc: String,
    _process: Process,
}

impl Ingress {
    pub async fn start(stack: &Stack, topic: &str, log: &str) -> anyhow::Result<Ingress> {
        let (grpc_port, http_port) = (free_port()?, free_port()?);
        let env = [
            ("KAFKA_BROKERS", stack.brokers.clone()),
            ("VOTES_TOPIC", topic.to_owned()),
            ("GRPC_ADDR", format!("127.0.0.1:{grpc_port}")),
            ("HTTP_ADDR", format!("127.0.0.1:{http_port}")),
        ];
        let mut process = stack.spawn_votestream(&["ingress"], &env, log)?;
        let http = format!("http://127.0.0.1:{http_port}");
        let client = reqwest::Client::new();
        for _ in 0..300 {
            process.ensure_running("the ingress")?;
            let ready = client.get(format!("{http}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(Ingress {
                    http,
                    grpc: format!("http://127.0.0.1:{grpc_port}"),
                    _process: process,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the ingress was not ready within 30 s")
    }

    pub async fn grpc_client(&self) -> anyhow::Result<VoteServiceClient<Channel>> {
        let channel = Channel::from_shared(self.grpc.clone())?.connect().await?;
        Ok(VoteServiceClient::new(channel))
    }
}

pub struct Load {
    pub warmup: Duration,
    pub measure: Duration,
    pub concurrency: usize,
    pub batch: usize,
}

/// What one route did in the measured window.
pub struct Measured {
    pub votes_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

pub fn grpc_vote(i: usize) -> Vote {
    let v = crate::data::vote(i);
    Vote {
        name: Some(v.name),
        album: Some(v.album),
        year: Some(v.year),
        rank: Some(v.rank),
        voter: v.voter,
        request_id: v.request_id,
    }
}

/// The seed's format: every field a string.
fn json_vote(i: usize) -> Value {
    let v = crate::data::vote(i);
    json!({"name": v.name, "album": v.album, "year": v.year.to_string(), "rank": v.rank.to_string()})
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    votes: u64,
    errors: u64,
}

async fn client(
    ingress_http: String,
    grpc: VoteServiceClient<Channel>,
    route: Route,
    load: (usize, Instant, Instant),
) -> Tally {
    let (batch, warm_until, until) = load;
    let mut grpc = grpc;
    let mut tally = Tally::default();
    let http = reqwest::Client::new();
    let url = format!("{ingress_http}/votes");
    let array = Value::Array((0..batch).map(json_vote).collect());
    let object = json_vote(7);
    let mut i = 0;
    while Instant::now() < until {
        i += 1;
        let started = Instant::now();
        let acked: anyhow::Result<u64> = async {
            match route {
                Route::GrpcSingle => Ok(grpc.cast_vote(grpc_vote(i)).await.map(|_| 1)?),
                Route::GrpcBatch => {
                    let votes = (0..batch).map(|j| grpc_vote(i * batch + j)).collect();
                    let reply = grpc.cast_votes(CastVotesRequest { votes }).await?;
                    Ok(u64::from(reply.into_inner().accepted))
                }
                Route::HttpSingle | Route::HttpArray => {
                    let body = if route == Route::HttpSingle { &object } else { &array };
                    let response = http.post(&url).json(body).send().await?;
                    anyhow::ensure!(response.status() == 200, "HTTP {}", response.status());
                    let reply: Value = response.json().await?;
                    Ok(reply["accepted"].as_u64().unwrap_or(1))
                }
            }
        }
        .await;
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
    tally
}

/// Drives one route with `load.concurrency` clients (one connection each).
pub async fn measure(ingress: &Ingress, route: Route, load: &Load) -> anyhow::Result<Measured> {
    let mut grpc_clients = Vec::new();
    for _ in 0..load.concurrency {
        grpc_clients.push(ingress.grpc_client().await?);
    }
    let warm_until = Instant::now() + load.warmup;
    let until = warm_until + load.measure;
    let mut clients = JoinSet::new();
    for grpc in grpc_clients {
        clients.spawn(client(
            ingress.http.clone(),
            grpc,
            route,
            (load.batch, warm_until, until),
        ));
    }
    let mut latencies = Vec::new();
    let (mut votes, mut errors) = (0, 0);
    while let Some(tally) = clients.join_next().await {
        let tally = tally?;
        latencies.extend(tally.latencies);
        votes += tally.votes;
        errors += tally.errors;
    }
    let window = (Instant::now() - warm_until).as_secs_f64();
    latencies.sort_unstable();
    let ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    Ok(Measured {
        votes_per_s: votes as f64 / window,
        p50_ms: percentile(&ms, 0.50),
        p99_ms: percentile(&ms, 0.99),
        errors,
    })
}

/// The `p` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sends `rate` votes/s for `duration` as gRPC batches of `batch`, evenly
/// spaced whatever the replies do (open loop); returns the votes acknowledged.
pub async fn paced(ingress: &Ingress, rate: f64, batch: usize, duration: Duration) -> anyhow::Result<(u64, u64)> {
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(ingress.grpc_client().await?);
    }
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(batch as f64 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let until = Instant::now() + duration;
    let mut requests = JoinSet::new();
    let mut i = 0;
    while Instant::now() < until {
        ticker.tick().await;
        let mut client = channels[i % channels.len()].clone();
        let votes = (0..batch).map(|j| grpc_vote(i * batch + j)).collect();
        requests.spawn(async move { client.cast_votes(CastVotesRequest { votes }).await });
        i += 1;
    }
    let (mut accepted, mut failed) = (0, 0);
    while let Some(reply) = requests.join_next().await {
        match reply? {
            Ok(reply) => accepted += u64::from(reply.into_inner().accepted),
            Err(_) => failed += 1,
        }
    }
    Ok((accepted, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }
}
