//! Kafka failures: a missing broker turns into UNAVAILABLE / 503 within the
//! configured bound, and service resumes when the broker returns, without
//! restarting the ingress.
//!
//! The shared broker on 127.0.0.1:9092 is never stopped (other tests use it):
//! "no broker" is a free port, and "the broker returns" is a private
//! single-node Kafka this test starts, stops and restarts with
//! `scripts/stack up|down kafka` under its own STACK_DIR and ports. A TCP proxy
//! in front of the shared broker would not do: librdkafka learns the broker's
//! advertised address (127.0.0.1:9092) from metadata and bypasses the proxy.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;
use votestream::ops::{Dependency, Readiness};
use votestream::proto::CastVotesRequest;
use votestream::proto::vote_service_client::VoteServiceClient;

use super::support::{TestIngress, free_port, grpc_vote, records, seed_vote};
use crate::common::unique;

/// Produce timeout given to the ingress in these tests.
const PRODUCE_TIMEOUT_MS: &str = "2000";

/// Awaits `f`, a request that must get an answer: the ingress gives up on
/// Kafka after its produce timeout. Only a hang trips the guard (a minute,
/// thirty times the produce timeout): how fast the answer comes is measured
/// nowhere in the tests.
async fn answered<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("an answer: the ingress must give up on Kafka, not hang")
}

/// Casts one vote over gRPC, which must be accepted; returns its id.
async fn accepted_grpc_vote(grpc: &mut VoteServiceClient<Channel>) -> String {
    grpc.cast_vote(grpc_vote("Alux Nahual"))
        .await
        .expect("accepted")
        .into_inner()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_broker_reachable_votes_fail_with_503_and_unavailable_instead_of_hanging() {
    let nowhere = format!("127.0.0.1:{}", free_port());
    let ingress = TestIngress::start(&nowhere, "votes", &["--produce-timeout-ms", PRODUCE_TIMEOUT_MS]).await;
    let mut grpc = ingress.grpc().await;

    let response = answered(async {
        ingress
            .client
            .post(ingress.url("/votes"))
            .json(&seed_vote(1))
            .send()
            .await
            .expect("an answer")
    })
    .await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["error"], "kafka_timeout", "{reply}");

    let (status, reply) = answered(ingress.post_json(&json!([seed_vote(1), seed_vote(2)]))).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (503, Some("kafka_timeout")),
        "{reply}"
    );

    let status = answered(async { grpc.cast_vote(grpc_vote("Alux Nahual")).await.expect_err("unavailable") }).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let status = answered(async {
        let votes = vec![grpc_vote("Alux Nahual"), grpc_vote("Bohemia Suburbana")];
        grpc.cast_votes(CastVotesRequest { votes })
            .await
            .expect_err("unavailable")
    })
    .await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Bad input is still told apart from an outage.
    let mut bad = grpc_vote("Alux Nahual");
    bad.year = Some(3000);
    assert_eq!(grpc.cast_vote(bad).await.unwrap_err().code(), Code::InvalidArgument);

    let (status, body) = ingress.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let readiness: Readiness = serde_json::from_str(&body).unwrap();
    assert_eq!(readiness, Readiness::of([(Dependency::Kafka, false)]));
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
    /// The SASL and SASL-over-TLS listeners scripts/stack adds (unused here).
    sasl_ports: [u16; 2],
}

impl PrivateKafka {
    async fn start() -> PrivateKafka {
        let mut ports = Vec::new();
        while ports.len() < 4 {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let kafka = PrivateKafka {
            dir: std::env::temp_dir().join(unique("votestream-private-kafka")),
            port: ports[0],
            controller_port: ports[1],
            sasl_ports: [ports[2], ports[3]],
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
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
            .env("KAFKA_SASL_PORT", self.sasl_ports[0].to_string())
            .env("KAFKA_SASL_TLS_PORT", self.sasl_ports[1].to_string());
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
    acked.push(accepted_grpc_vote(&mut grpc).await);

    kafka.stack("down").await;
    let (status, reply) = answered(ingress.post_json(&seed_vote(2))).await;
    assert_eq!(status, 503, "{reply}");
    let status = answered(async { grpc.cast_vote(grpc_vote("Alux Nahual")).await.expect_err("unavailable") }).await;
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
    acked.push(accepted_grpc_vote(&mut grpc).await);
    assert_eq!(ingress.get("/readyz").await.0, 200);
    ingress.stop().await;

    let records = records(&kafka.brokers(), "votes").await;
    let keys: HashSet<&str> = records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys.len(), records.len(), "no vote twice");
    for id in &acked {
        assert!(keys.contains(id.as_str()), "acknowledged vote {id} is not in Kafka");
    }
}
