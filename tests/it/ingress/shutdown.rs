//! SIGTERM during load, against the real binary (so `main` and its signal
//! handling are under test too): every vote a client was told is accepted is
//! in Kafka, in-flight requests get their replies, and the process exits 0
//! after flushing its producer.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use votestream::proto::{CastVotesRequest, item_result};

use super::support::{LOCAL_LISTENERS, assert_record_shape, grpc_vote, records, seed_vote};
use crate::common::{TempTopic, kafka_brokers};

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
            .args(LOCAL_LISTENERS)
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
///
/// Two flags, because `kill` is a child process: the ingress may act on the
/// signal before `kill` has returned. Errors are allowed from the moment the
/// test is about to send it (`signal_sending`); a success counts as "after
/// the signal" only once `kill` has returned (`signal_sent`).
#[derive(Default)]
struct Tally {
    acked: Mutex<Vec<String>>,
    acked_count: AtomicUsize,
    after_signal: AtomicUsize,
    signal_sending: AtomicBool,
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
        if self.signal_sending.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(what)
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
    tally.signal_sending.store(true, Ordering::SeqCst);
    harness::send_term(process.child.id()).expect("SIGTERM");
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
