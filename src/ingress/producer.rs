//! The Kafka side of the ingress: one idempotent producer shared by both
//! routes. A vote counts as produced only once its delivery report says Kafka
//! has it (acks=all), and every wait for that report is bounded by the
//! configured produce timeout, so a dead broker turns into a prompt error
//! rather than a hung client.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::{KafkaArgs, ProducerArgs};
use crate::kafka_options::PassThrough;
use crate::vote::VoteRecord;

/// Why Kafka did not acknowledge a vote. None of these is the client's fault:
/// they all mean "try again later".
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    #[error("Kafka did not acknowledge the vote within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the producer queue is full: Kafka is not keeping up")]
    QueueFull,
    #[error("Kafka did not accept the vote: {0}")]
    Kafka(KafkaError),
}

impl ProduceError {
    /// A stable, low-cardinality label for metrics and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            ProduceError::Timeout(_) => "kafka_timeout",
            ProduceError::QueueFull => "kafka_queue_full",
            ProduceError::Kafka(_) => "kafka_error",
        }
    }

    fn from_kafka(e: KafkaError, timeout: Duration) -> ProduceError {
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::MessageTimedOut) => ProduceError::Timeout(timeout),
            Some(RDKafkaErrorCode::QueueFull) => ProduceError::QueueFull,
            _ => ProduceError::Kafka(e),
        }
    }
}

/// Produces vote records to the votes topic; cheap to clone (one librdkafka
/// client underneath).
#[derive(Clone)]
pub struct VoteProducer {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl VoteProducer {
    /// Creates the client. librdkafka connects in the background, so this
    /// succeeds even when no broker answers yet: sends then fail within the
    /// timeout and `/readyz` says why.
    pub fn new(kafka: &KafkaArgs, args: &ProducerArgs) -> Result<VoteProducer, KafkaError> {
        let timeout = args.produce_timeout();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &kafka.kafka_brokers)
            .set("client.id", "votestream-ingress")
            // No duplicates and no reordering from the client's own retries.
            .set("enable.idempotence", "true")
            // Acknowledged means written by every in-sync replica, so an acknowledged vote survives a broker loss.
            .set("acks", "all")
            .set("linger.ms", args.producer_linger_ms.to_string())
            .set("batch.size", args.producer_batch_bytes.to_string())
            .set("compression.type", args.producer_compression.as_str())
            .set("queue.buffering.max.messages", args.producer_queue_messages.to_string())
            // librdkafka gives up on a vote when the client stops waiting for it, so a vote that
            // was answered UNAVAILABLE is not quietly written much later.
            .set("message.timeout.ms", args.produce_timeout_ms.to_string())
            // After a broker outage, reconnect within a second rather than librdkafka's 10 s
            // default, so the ingress serves again soon after Kafka returns.
            .set("reconnect.backoff.max.ms", "1000")
            .pass_through(&kafka.kafka_options)
            .create()?;
        Ok(VoteProducer {
            producer,
            topic: kafka.votes_topic.clone(),
            timeout,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces one record (key = the voter, or the vote id when anonymous; value = its JSON) and waits for
    /// Kafka's acknowledgement, at most the produce timeout. Returns the time
    /// the acknowledgement took.
    pub async fn send(&self, record: &VoteRecord) -> Result<Duration, ProduceError> {
        let started = Instant::now();
        let key = record.key();
        let payload = record.to_json();
        let delivery = self.producer.send(
            FutureRecord::to(&self.topic).key(&key).payload(&payload),
            Timeout::After(self.timeout),
        );
        // The outer bound covers the whole wait: queueing, librdkafka's timeout scan (which runs
        // about once a second) and the delivery report.
        match tokio::time::timeout(self.timeout, delivery).await {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err((e, _))) => Err(ProduceError::from_kafka(e, self.timeout)),
            Err(_) => Err(ProduceError::Timeout(self.timeout)),
        }
    }

    /// Produces many records at once (they share librdkafka batches) and
    /// waits for every acknowledgement; one result per record, in order.
    pub async fn send_all(&self, records: &[&VoteRecord]) -> Vec<Result<Duration, ProduceError>> {
        join_all(records.iter().map(|record| self.send(record))).await
    }

    /// Whether Kafka answers a metadata request for the votes topic within
    /// `timeout`. Blocks the calling thread: call it from a blocking task.
    pub fn check_ready(&self, timeout: Duration) -> Result<(), String> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(|e| format!("no metadata from Kafka: {e}"))?;
        match metadata.topics().iter().find(|t| t.name() == self.topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
            Some(t) => Err(format!("topic {:?} is not available: {:?}", self.topic, t.error())),
            None => Err(format!("topic {:?} is not in Kafka's metadata", self.topic)),
        }
    }

    /// An error the producer cannot recover from (e.g. the idempotent
    /// producer lost its sequence); the process must restart to produce again.
    pub fn fatal_error(&self) -> Option<String> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code:?}: {reason}"))
    }

    /// Waits until every queued record is delivered or failed, at most
    /// `timeout`. Blocks the calling thread: call it from a blocking task.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// Records still queued or awaiting acknowledgement.
    pub fn pending(&self) -> i32 {
        self.producer.in_flight_count()
    }
}
