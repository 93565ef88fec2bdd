//! Kafka failures and shutdown: a missing broker turns into UNAVAILABLE / 503
//! within the configured bound, service resumes when the broker returns, and
//! SIGTERM under load loses no acknowledged vote.
//!
//! The shared broker on 127.0.0.1:9092 is never stopped (other tests use it):
//! "no broker" is a free port, and "the broker returns" is a private
//! single-node Kafka this test starts, stops and restarts with
//! `scripts/stack up|down kafka` under its own STACK_DIR and ports. A TCP proxy
//! in front of the shared broker would not do: librdkafka learns the broker's
//! advertised address (127.0.0.1:9092) from metadata and bypasses the proxy.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tonic::Code;
use votestream::proto::{CastVotesRequest, item_result};

use super::support::{TestIngress, assert_record_shape, free_port, grpc_vote, records, seed_vote};
use crate::common::{TempTopic, kafka_brokers, unique};

/// Produce timeout given to the ingress in these tests, and the generous bound the tests allow.
const PRODUCE_TIMEOUT_MS: &str = "2000";
const BOUND: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_broker_reachable_votes_fail_with_503_and_unavailable_within_the_bound() {
    let nowhere = format!("127.0.0.1:{}", free_port());
    let ingress = TestIngress::start(&nowhere, "votes", &["--produce-timeout-ms", PRODUCE_TIMEOUT_MS]).await;
    let mut grpc = ingress.grpc().await;

    let started = Instant::now();
    let response = ingress
        .client
        .post(ingress.url("/votes"))
        .json(&seed_vote(1))
        .send()
        .await
        .expect("an answer");
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["error"], "kafka_timeout", "{reply}");

    let started = Instant::now();
    let (status, reply) = ingress.post_json(&json!([seed_vote(1), seed_vote(2)])).await;
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert_eq!(
        (status, reply["error"].as_str()),
        (503, Some("kafka_timeout")),
        "{reply}"
    );

    let started = Instant::now();
    let status = grpc.cast_vote(grpc_vote("Alux Nahual")).await.expect_err("unavailable");
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let started = Instant::now();
    let votes = vec![grpc_vote("Alux Nahual"), grpc_vote("Bohemia Suburbana")];
    let status = grpc
        .cast_votes(CastVotesRequest { votes })
        .await
        .expect_err("unavailable");
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Bad input is still told apart from an outage.
    let mut bad = grpc_vote("Alux Nahual");
    bad.year = Some(3000);
    assert_eq!(grpc.cast_vote(bad).await.unwrap_err().code(), Code::InvalidArgument);

    let (status, body) = ingress.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let (status, _) = ingress.get("/healthz").await;
    assert_eq!(status, 200, "the process itself is fine");
    let (_, metrics) = ingress.get("/metrics").await;
    for line in [
        r#"votestream_ingress_votes_rejected_total{route="http",reason="kafka_timeout"} 3"#,
        r#"votestream_ingress_votes_rejected_total{route="grpc",reason="kafka_timeout"} 3"#,
        r#"votestream_ingress_votes_accepted_total{route="http"} 0"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    ingress.stop().await;
}

/// A single-node Kafka of this test's own, under a temporary STACK_DIR; stopped
/// and its data removed when dropped.
struct PrivateKafka {
    dir: PathBuf,
    port: u16,
    controller_port: u16,
}

impl PrivateKafka {
    async fn start() -> PrivateKafka {
        let port = free_port();
        let controller_port = std::iter::repeat_with(free_port)
            .find(|p| *p != port)
            .expect("a second free port");
        let kafka = PrivateKafka {
            dir: std::env::temp_dir().join(unique("votestream-private-kafka")),
            port,
            controller_port,
        };
        kafka.stack("up").await;
        kafka
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn command(&self, action: &str) -> Command {
        let mut command = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stack"));
        command
            .args([action, "kafka"])
            .env("STACK_DIR", &self.dir)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string());
        command
    }

    /// `scripts/stack <action> kafka`, off the runtime's threads (starting takes ~15 s).
    async fn stack(&self, action: &str) {
        let mut command = self.command(action);
        let status = tokio::task::spawn_blocking(move || command.status())
            .await
            .expect("the stack task")
            .expect("scripts/stack runs");
        assert!(
            status.success(),
            "scripts/stack {action} kafka failed (logs under {:?})",
            self.dir
        );
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        let _ = self.command("down").status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_broker_returns_the_ingress_accepts_votes_again_without_a_restart() {
    let kafka = PrivateKafka::start().await;
    let ingress = TestIngress::start(&kafka.brokers(), "votes", &["--produce-timeout-ms", PRODUCE_TIMEOUT_MS]).await;
    let mut grpc = ingress.grpc().await;
    let mut acked = Vec::new();

    let (status, reply) = ingress.post_json(&seed_vote(1)).await;
    assert_eq!(status, 200, "{reply}");
    acked.push(reply["id"].as_str().unwrap().to_owned());
    acked.push(
        grpc.cast_vote(grpc_vote("Alux Nahual"))
            .await
            .expect("accepted")
            .into_inner()
            .id,
    );

    kafka.stack("down").await;
    let started = Instant::now();
    let (status, reply) = ingress.post_json(&seed_vote(2)).await;
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert_eq!(status, 503, "{reply}");
    let started = Instant::now();
    let status = grpc.cast_vote(grpc_vote("Alux Nahual")).await.expect_err("unavailable");
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(ingress.get("/readyz").await.0, 503);

    kafka.stack("up").await;
    // librdkafka reconnects with a backoff of at most a second; allow a generous number of tries.
    let mut tries = 0;
    let reply = loop {
        tries += 1;
        let (status, reply) = ingress.post_json(&seed_vote(3)).await;
        if status == 200 {
            break reply;
        }
        assert_eq!(status, 503, "{reply}");
        assert!(tries < 30, "still {status} after {tries} tries: {reply}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("accepted again after {tries} tries");
    acked.push(reply["id"].as_str().unwrap().to_owned());
    acked.push(
        grpc.cast_vote(grpc_vote("Alux Nahual"))
            .await
            .expect("accepted")
            .into_inner()
            .id,
    );
    assert_eq!(ingress.get("/readyz").await.0, 200);
    ingress.stop().await;

    let records = records(&kafka.brokers(), "votes").await;
    let keys: HashSet<&str> = records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys.len(), records.len(), "no vote twice");
    for id in &acked {
        assert!(keys.contains(id.as_str()), "acknowledged vote {id} is not in Kafka");
    }
}

/// The ingress binary, killed when dropped if it is still running.
struct IngressProcess {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl IngressProcess {
    /// Starts `votestream ingress` on free ports; returns it with its HTTP and gRPC addresses,
    /// read from its "listening" log line.
    fn start(topic: &str) -> (IngressProcess, String, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_votestream"))
            .args(["ingress", "--kafka-brokers", &kafka_brokers(), "--votes-topic", topic])
            .args([
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--http-workers",
                "2",
            ])
            .args(["--shutdown-timeout-secs", "10"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .expect("the votestream binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, addresses) = std::sync::mpsc::channel();
        let lines = log.clone();
        // Keeps draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("ingress listening: HTTP on ").nth(1) {
                    let http = rest.split([',', ' ']).next().unwrap_or_default().to_owned();
                    let grpc = rest.split("gRPC on ").nth(1).and_then(|r| r.split(';').next());
                    let _ = found.send((http, grpc.unwrap_or_default().to_owned()));
                }
                lines.lock().unwrap().push(line);
            }
        });
        let (http, grpc) = addresses
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no listening line; log: {:?}", log.lock().unwrap()));
        (IngressProcess { child, log }, http, grpc)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for IngressProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the load tasks saw: the ids of acknowledged votes, and how many
/// successful replies arrived after SIGTERM had been sent.
#[derive(Default)]
struct Tally {
    acked: Mutex<Vec<String>>,
    acked_count: AtomicUsize,
    after_signal: AtomicUsize,
    signal_sent: AtomicBool,
}

impl Tally {
    fn record(&self, ids: impl IntoIterator<Item = String>) {
        let ids: Vec<String> = ids.into_iter().collect();
        self.acked_count.fetch_add(ids.len(), Ordering::SeqCst);
        if self.signal_sent.load(Ordering::SeqCst) {
            self.after_signal.fetch_add(1, Ordering::SeqCst);
        }
        self.acked.lock().unwrap().extend(ids);
    }

    /// An error is expected once the ingress stops; before that it fails the test.
    fn failed(&self, what: String) -> Result<(), String> {
        match self.signal_sent.load(Ordering::SeqCst) {
            true => Ok(()),
            false => Err(what),
        }
    }
}

async fn http_load(http: String, tally: Arc<Tally>) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let batch = Value::Array((0..10).map(seed_vote).collect());
    loop {
        let response = match client.post(format!("http://{http}/votes")).json(&batch).send().await {
            Ok(response) if response.status() == 200 => response,
            Ok(response) => return tally.failed(format!("HTTP {}", response.status())),
            Err(e) => return tally.failed(format!("HTTP error {e}")),
        };
        let Ok(reply) = response.json::<Value>().await else {
            return tally.failed("an unreadable reply".into());
        };
        let ids = reply["ids"].as_array().cloned().unwrap_or_default();
        tally.record(ids.iter().filter_map(|id| id.as_str().map(str::to_owned)));
    }
}

async fn grpc_load(grpc: String, tally: Arc<Tally>) -> Result<(), String> {
    let mut client = votestream::proto::vote_service_client::VoteServiceClient::connect(format!("http://{grpc}"))
        .await
        .map_err(|e| format!("gRPC connect: {e}"))?;
    for round in 0.. {
        let ids = if round % 2 == 0 {
            client
                .cast_vote(grpc_vote("Alux Nahual"))
                .await
                .map(|r| vec![r.into_inner().id])
        } else {
            let votes = (0..10).map(|i| grpc_vote(&format!("Banda {i}"))).collect();
            client.cast_votes(CastVotesRequest { votes }).await.map(|r| {
                r.into_inner()
                    .results
                    .into_iter()
                    .filter_map(|r| match r.outcome {
                        Some(item_result::Outcome::Accepted(a)) => Some(a.id),
                        _ => None,
                    })
                    .collect()
            })
        };
        match ids {
            Ok(ids) => tally.record(ids),
            Err(status) => return tally.failed(format!("gRPC {status:?}")),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_leaves_every_acknowledged_vote_in_kafka() {
    let topic = TempTopic::create("ingress-sigterm", 6).await;
    let (mut process, http, grpc) = IngressProcess::start(&topic.name);
    let tally = Arc::new(Tally::default());
    let mut load = Vec::new();
    for _ in 0..3 {
        load.push(tokio::spawn(http_load(http.clone(), tally.clone())));
        load.push(tokio::spawn(grpc_load(grpc.clone(), tally.clone())));
    }

    // Let the load run until a few hundred votes are acknowledged, then send SIGTERM mid-stream.
    let deadline = Instant::now() + Duration::from_secs(120);
    while tally.acked_count.load(Ordering::SeqCst) < 300 {
        assert!(
            Instant::now() < deadline,
            "the load did not get going; log:\n{}",
            process.log()
        );
        assert!(
            load.iter().all(|t| !t.is_finished()),
            "a load task stopped early; log:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &process.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    tally.signal_sent.store(true, Ordering::SeqCst);

    for task in load {
        let outcome = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("load ends once the ingress stops")
            .expect("load task");
        assert_eq!(
            outcome,
            Ok(()),
            "a request failed before SIGTERM; log:\n{}",
            process.log()
        );
    }
    let exit = tokio::task::spawn_blocking(move || {
        let exit = process.child.wait();
        (exit, process)
    })
    .await
    .unwrap();
    let (exit, process) = exit;
    assert!(exit.expect("exit status").success(), "log:\n{}", process.log());
    assert!(process.log().contains("producer flushed"), "log:\n{}", process.log());

    let acked = tally.acked.lock().unwrap().clone();
    let after = tally.after_signal.load(Ordering::SeqCst);
    eprintln!("{} votes acknowledged, {after} replies after SIGTERM", acked.len());
    assert!(
        after > 0,
        "no request was in flight when SIGTERM arrived; the test proved nothing"
    );

    let records = records(&kafka_brokers(), &topic.name).await;
    let keys: HashSet<&str> = records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys.len(), records.len(), "no vote twice");
    for id in &acked {
        assert!(keys.contains(id.as_str()), "acknowledged vote {id} is not in Kafka");
    }
    for record in records.iter().filter(|r| acked.contains(&r.key)).take(5) {
        let route = record.value["route"].as_str().unwrap_or_default().to_owned();
        assert_record_shape(record, &route);
    }
}
