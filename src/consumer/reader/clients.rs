//! The read loop's Kafka clients: the group consumer, whose offsets only the
//! loop commits (after both sinks wrote them), and the dead-letter producer.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::ReaderConfig;
use crate::consumer::metrics::ConsumerMetrics;
use crate::consumer::rebalance::ReaderContext;
use crate::consumer::sink::Backoff;
use crate::kafka_options::PassThrough;

/// The group consumer of the votes topic.
pub(super) type VotesConsumer = StreamConsumer<ReaderContext>;

pub(super) fn votes_consumer(config: &ReaderConfig, metrics: Arc<ConsumerMetrics>) -> KafkaResult<VotesConsumer> {
    let context = ReaderContext {
        topic: config.topic.clone(),
        redis_url: config.redis_url.clone(),
        keys: config.keys.clone(),
        metrics,
        events: Mutex::new(Vec::new()),
        pending: AtomicBool::new(false),
        rebalanced: tokio::sync::Notify::new(),
        closing: AtomicBool::new(false),
        assigned_once: AtomicBool::new(false),
    };
    let mut client = ClientConfig::new();
    if let Some(instance) = &config.group_instance_id {
        // Static membership: a restart within the session timeout is no rebalance.
        client.set("group.instance.id", instance);
    }
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set(
            "partition.assignment.strategy",
            config.rebalance_protocol.assignment_strategy(),
        )
        // Offsets are committed by the reader, only after both sinks wrote a batch.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A killed consumer's partitions move to the others within this (10 s by default, not
        // Kafka 4's 45 s); a static member must be back within it.
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", "2000")
        // Caps what librdkafka prefetches, so memory stays bounded whatever the backlog:
        // 4 MiB is some 16 batches of votes, and one fetch may overshoot it by fetch.max.bytes.
        .set("queued.max.messages.kbytes", "4096")
        .set("fetch.max.bytes", "4194304")
        // A fetch waits up to 3 ms for 64 KiB rather than returning each new record at once:
        // under a steady load the broker answers a few hundred fetches a second instead of one
        // per produce request, and batches are larger, so Kafka, Redis and MongoDB each do less
        // per vote (end to end at 3,972 votes/s on 2 cores: p99 594 -> 107 ms; BENCHMARKS.md).
        // A backlog fills 64 KiB at once; an idle consumer asks ~300 times a second (2-4 % of a
        // core of the broker). Overridable with --kafka-option.
        .set("fetch.wait.max.ms", "3")
        .set("fetch.min.bytes", "65536")
        // Feeds the lag gauge and Kafka's readiness.
        .set("statistics.interval.ms", "2000")
        .pass_through(&config.kafka_options)
        .create_with_context(context)
}

/// Sends records that cannot be counted to the dead-letter topic.
pub(super) struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    /// Between retries of one record.
    backoff: Backoff,
    metrics: Arc<ConsumerMetrics>,
}

impl DeadLetters {
    pub(super) fn new(config: &ReaderConfig, metrics: Arc<ConsumerMetrics>) -> KafkaResult<DeadLetters> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .pass_through(&config.kafka_options)
            .create()?;
        Ok(DeadLetters {
            producer,
            topic: config.dlq_topic.clone(),
            backoff: config.backoff.clone(),
            metrics,
        })
    }

    /// Sends `msg` with the reason and origin in headers; returns once Kafka
    /// has it, retrying until then.
    pub(super) async fn send(&self, msg: &BorrowedMessage<'_>, reason: &str) {
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "origin.topic",
                value: Some(msg.topic()),
            })
            .insert(Header {
                key: "origin.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "origin.offset",
                value: Some(&offset),
            });
        let key = format!("{}/{}/{}", msg.topic(), partition, offset);
        let payload = msg.payload().unwrap_or_default();
        let mut backoff = self.backoff.clone();
        loop {
            let record = FutureRecord::to(&self.topic)
                .key(&key)
                .payload(payload)
                .headers(headers.clone());
            match self.producer.send(record, Duration::from_secs(10)).await {
                Ok(_) => {
                    self.metrics.dlq_records.inc();
                    tracing::warn!(partition = msg.partition(), offset = msg.offset(), %reason, "record dead-lettered");
                    return;
                }
                Err((error, _)) => {
                    tracing::warn!(%error, "dead-letter produce failed; retrying");
                    tokio::time::sleep(backoff.delay()).await;
                }
            }
        }
    }
}
