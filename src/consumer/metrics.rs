//! What the consumer reports on `/metrics` and `/readyz`: one struct shared
//! by the actors, updated per batch (never per record on a log line).

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ops::{Dependency, Readiness};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub(crate) sink: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActorLabel {
    pub(crate) actor: &'static str,
}

pub struct ConsumerMetrics {
    pub(crate) records_read: Counter,
    pub(crate) batches_applied: Family<SinkLabel, Counter>,
    pub(crate) votes_applied: Counter,
    pub(crate) batch_size: Histogram,
    pub(crate) apply_seconds: Family<SinkLabel, Histogram>,
    pub(crate) dlq_records: Counter,
    pub(crate) actor_restarts: Family<ActorLabel, Counter>,
    pub(crate) rewinds: Counter,
    pub(crate) consumer_lag: Gauge,
    pub(crate) end_to_end_seconds: Histogram,
    pub(crate) in_flight_batches: Gauge,
    pub(crate) partitions_assigned: Counter,
    pub(crate) partitions_revoked: Counter,
    pub(crate) partitions_owned: Gauge,
    pub(crate) kafka_up: AtomicBool,
    pub(crate) redis_up: AtomicBool,
    pub(crate) mongo_up: AtomicBool,
}

impl ConsumerMetrics {
    pub fn new() -> ConsumerMetrics {
        ConsumerMetrics {
            records_read: Counter::default(),
            batches_applied: Family::default(),
            votes_applied: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            apply_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
            dlq_records: Counter::default(),
            actor_restarts: Family::default(),
            rewinds: Counter::default(),
            consumer_lag: Gauge::default(),
            end_to_end_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            in_flight_batches: Gauge::default(),
            partitions_assigned: Counter::default(),
            partitions_revoked: Counter::default(),
            partitions_owned: Gauge::default(),
            kafka_up: AtomicBool::new(false),
            redis_up: AtomicBool::new(false),
            mongo_up: AtomicBool::new(false),
        }
    }

    /// Registers every metric on the consumer's registry ([`crate::ops::registry`]).
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register("records_read", "Kafka records read", self.records_read.clone());
        r.register(
            "partitions_assigned",
            "Partitions the group gave this consumer",
            self.partitions_assigned.clone(),
        );
        r.register(
            "partitions_revoked",
            "Partitions the group took from this consumer",
            self.partitions_revoked.clone(),
        );
        r.register(
            "partitions_owned",
            "Partitions this consumer reads now",
            self.partitions_owned.clone(),
        );
        r.register(
            "batches_applied",
            "Batches written, per sink",
            self.batches_applied.clone(),
        );
        r.register(
            "votes_applied",
            "Votes newly counted in Redis",
            self.votes_applied.clone(),
        );
        r.register("batch_size", "Records per batch", self.batch_size.clone());
        r.register(
            "apply_seconds",
            "Time to write one batch, per sink",
            self.apply_seconds.clone(),
        );
        r.register(
            "dlq_records",
            "Records sent to the dead-letter topic",
            self.dlq_records.clone(),
        );
        r.register(
            "actor_restarts",
            "Supervised actor restarts, per actor",
            self.actor_restarts.clone(),
        );
        r.register("rewinds", "Re-reads after Redis was found behind", self.rewinds.clone());
        r.register(
            "lag",
            "Records not yet read, over the assigned partitions",
            self.consumer_lag.clone(),
        );
        r.register(
            "end_to_end_seconds",
            "From a vote's received_at to its count in Redis",
            self.end_to_end_seconds.clone(),
        );
        r.register(
            "in_flight_batches",
            "Batches handed to the sinks, not yet confirmed",
            self.in_flight_batches.clone(),
        );
    }

    pub(crate) fn restarted(&self, actor: &'static str) {
        self.actor_restarts.get_or_create(&ActorLabel { actor }).inc();
    }

    pub(crate) fn set_up(flag: &AtomicBool, up: bool) {
        flag.store(up, Ordering::Relaxed);
    }

    /// Whether each connection the consumer needs is up, by dependency.
    pub(crate) fn readiness(&self) -> Readiness {
        let up = |flag: &AtomicBool| flag.load(Ordering::Relaxed);
        Readiness::of([
            (Dependency::Kafka, up(&self.kafka_up)),
            (Dependency::Redis, up(&self.redis_up)),
            (Dependency::Mongodb, up(&self.mongo_up)),
        ])
    }
}

impl Default for ConsumerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
