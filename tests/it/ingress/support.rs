//! Helpers for the ingress tests: an in-process ingress on free ports (the
//! same `Ingress` the binary runs), clients for both routes, and a reader
//! that returns everything a topic holds.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use votestream::config::{Cli, Command, IngressSettings};
use votestream::ingress::Ingress;
use votestream::proto::vote_service_client::VoteServiceClient;

use crate::common::{kafka_brokers, unique};

/// Listeners on free ports of 127.0.0.1, with few HTTP workers (2 cores).
pub const LOCAL_LISTENERS: [&str; 6] = [
    "--grpc-addr",
    "127.0.0.1:0",
    "--http-addr",
    "127.0.0.1:0",
    "--http-workers",
    "2",
];

/// Settings as `votestream ingress` would parse them: free ports on
/// 127.0.0.1, the given broker and topic, then `extra` flags.
pub fn settings(brokers: &str, topic: &str, extra: &[&str]) -> IngressSettings {
    let mut args = vec![
        "votestream",
        "ingress",
        "--kafka-brokers",
        brokers,
        "--votes-topic",
        topic,
    ];
    args.extend_from_slice(&LOCAL_LISTENERS);
    args.extend_from_slice(extra);
    match Cli::try_parse_from(args).expect("valid ingress flags").command {
        Command::Ingress(settings) => settings,
        other => panic!("parsed {other:?}"),
    }
}

/// An ingress running in the test's runtime until [`TestIngress::stop`].
pub struct TestIngress {
    pub http: String,
    pub grpc_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestIngress {
    pub async fn start(brokers: &str, topic: &str, extra: &[&str]) -> TestIngress {
        let ingress = Ingress::build(&settings(brokers, topic, extra)).expect("ingress builds");
        let http = format!("http://{}", ingress.http_addr());
        let grpc_addr = ingress.grpc_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ingress.run(async {
            let _ = stopped.await;
        }));
        TestIngress {
            http,
            grpc_addr,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn grpc(&self) -> VoteServiceClient<Channel> {
        let addr = self.grpc_addr.expect("gRPC is on");
        VoteServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("gRPC connects")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// POSTs `body` as JSON to /votes; returns the status and the JSON reply.
    pub async fn post_json(&self, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url("/votes"))
            .json(body)
            .send()
            .await
            .expect("HTTP request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON reply"))
    }

    /// POSTs raw bytes to /votes with the given Content-Type (none if `None`).
    pub async fn post_raw(&self, content_type: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let mut request = self.client.post(self.url("/votes")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON reply"))
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.client.get(self.url(path)).send().await.expect("HTTP request");
        (response.status().as_u16(), response.text().await.expect("a body"))
    }

    /// Stops the ingress as SIGTERM would, and checks that it stopped cleanly.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("ingress task").expect("ingress stops cleanly");
        }
    }
}

impl Drop for TestIngress {
    fn drop(&mut self) {
        // A failed test still stops its ingress, so its ports and producer go away.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A valid vote, as the seed's data files send it: every field a string.
pub fn seed_vote(n: usize) -> Value {
    json!({"name": format!("Banda {n}"), "album": "Álbum", "year": "1997", "rank": "9.5"})
}

/// A valid vote with typed fields.
pub fn typed_vote(n: usize) -> Value {
    json!({"name": format!("Banda {n}"), "album": "Álbum", "year": 2001, "rank": 7.25})
}

pub fn grpc_vote(name: &str) -> votestream::proto::Vote {
    votestream::proto::Vote {
        name: Some(name.into()),
        album: Some("Jamás".into()),
        year: Some(1997),
        rank: Some(8.5),
        voter: None,
        request_id: None,
    }
}

/// One record of the votes topic: its key and its JSON value.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub value: Value,
}

/// Everything `topic` holds now, read from the beginning of each partition.
/// The sum of the high watermarks says how many records to expect, so the
/// read stops exactly there instead of waiting for "no more".
/// Asserts that `topic` holds no record at all.
pub async fn assert_nothing_produced(topic: &str) {
    assert!(records(&kafka_brokers(), topic).await.is_empty(), "nothing produced");
}

pub async fn records(brokers: &str, topic: &str) -> Vec<Record> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("ingress-test-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut assignment = TopicPartitionList::new();
    let mut expected = 0;
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .expect("watermarks");
        expected += high - low;
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    while (out.len() as i64) < expected {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("the topic's records within 30 s")
            .expect("a record");
        out.push(Record {
            key: String::from_utf8(message.key().expect("a key").to_vec()).expect("a UTF-8 key"),
            value: serde_json::from_slice(message.payload().expect("a value")).expect("a JSON value"),
        });
    }
    out
}

/// Checks that `records` are exactly the votes with `ids`, each once, keyed
/// by its id, with the documented JSON and the given route.
pub fn assert_exactly(records: &[Record], ids: &[String], route: &str) {
    let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    let unique_keys: HashSet<&str> = keys.iter().copied().collect();
    assert_eq!(unique_keys.len(), keys.len(), "a vote is in Kafka twice: {keys:?}");
    let expected: HashSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        unique_keys, expected,
        "the topic holds other votes than the replies announced"
    );
    for record in records {
        assert_record_shape(record, route);
    }
}

/// The DESIGN.md record: key = id; value `{id, name, album, year, rank, route, received_at}`.
pub fn assert_record_shape(record: &Record, route: &str) {
    let object = record.value.as_object().expect("a JSON object");
    let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["album", "id", "name", "rank", "received_at", "route", "year"]);
    assert_eq!(record.value["id"], record.key.as_str());
    let id = uuid::Uuid::parse_str(&record.key).expect("a UUID key");
    assert_eq!(id.get_version_num(), 7, "a UUIDv7 id");
    assert_eq!(record.value["route"], route);
    assert!(record.value["name"].is_string() && record.value["album"].is_string());
    assert!(record.value["year"].is_i64(), "year is an integer: {}", record.value);
    assert!(record.value["rank"].is_f64() || record.value["rank"].is_i64());
    let received_at = record.value["received_at"].as_str().expect("received_at is a string");
    // RFC 3339, UTC, milliseconds: 2026-11-26T18:25:39.123Z
    assert_eq!(received_at.len(), 24, "{received_at}");
    assert!(received_at.ends_with('Z'), "{received_at}");
    chrono::DateTime::parse_from_rfc3339(received_at).expect("RFC 3339");
}

pub use crate::common::free_port;
