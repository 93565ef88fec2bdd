//! What the consumer reports on `/metrics` and `/readyz`: one struct shared
//! by the actors, updated per batch (never per record on a log line).

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    partition: i32,
}

/// `dependency` is named as in `/readyz`'s checks: `kafka`, `redis`, `mongodb`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabel {
    dependency: &'static str,
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
    consumer_lag: Family<PartitionLabel, Gauge>,
    pub(crate) end_to_end_seconds: Histogram,
    pub(crate) in_flight_batches: Gauge,
    pub(crate) partitions_assigned: Counter,
    pub(crate) partitions_revoked: Counter,
    pub(crate) partitions_owned: Gauge,
    /// 1 while the dependency answers, else 0: `/readyz` and the
    /// `dependency_up` series read the same gauges.
    pub(crate) kafka_up: Gauge,
    pub(crate) redis_up: Gauge,
    pub(crate) mongo_up: Gauge,
    dependency_up: Family<DependencyLabel, Gauge>,
}

impl ConsumerMetrics {
    pub fn new() -> ConsumerMetrics {
        let dependency_up = Family::<DependencyLabel, Gauge>::default();
        // Created at start (at 0, down until connected), so the series exist before any change.
        let up = |dependency| dependency_up.get_or_create(&DependencyLabel { dependency }).clone();
        let (kafka_up, redis_up, mongo_up) = (up("kafka"), up("redis"), up("mongodb"));
        ConsumerMetrics {
            records_read: Counter::default(),
            batches_applied: Family::default(),
            votes_applied: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            apply_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
            dlq_records: Counter::default(),
            actor_restarts: Family::default(),
            rewinds: Counter::default(),
            consumer_lag: Family::default(),
            end_to_end_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            in_flight_batches: Gauge::default(),
            partitions_assigned: Counter::default(),
            partitions_revoked: Counter::default(),
            partitions_owned: Gauge::default(),
            kafka_up,
            redis_up,
            mongo_up,
            dependency_up,
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
            "Records not yet read, per partition this consumer is assigned",
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
        r.register(
            "dependency_up",
            "1 while the dependency (kafka, redis, mongodb) answers, else 0, as /readyz reports it",
            self.dependency_up.clone(),
        );
    }

    /// Creates `actor`'s restart counter at 0 when the actor is built, so
    /// that its first restart shows as an increase, not as a new series.
    pub fn supervised(&self, actor: &'static str) {
        let _ = self.actor_restarts.get_or_create(&ActorLabel { actor });
    }

    pub(crate) fn restarted(&self, actor: &'static str) {
        self.actor_restarts.get_or_create(&ActorLabel { actor }).inc();
    }

    pub(crate) fn set_up(flag: &Gauge, up: bool) {
        flag.set(i64::from(up));
    }

    /// Whether each connection the consumer needs is up, by dependency.
    pub(crate) fn readiness(&self) -> Readiness {
        let up = |flag: &Gauge| flag.get() == 1;
        Readiness::of([
            (Dependency::Kafka, up(&self.kafka_up)),
            (Dependency::Redis, up(&self.redis_up)),
            (Dependency::Mongodb, up(&self.mongo_up)),
        ])
    }

    /// Each partition's lag, from librdkafka's statistics: `Some` for a
    /// partition assigned here, `None` for one that is not (any more), whose
    /// series goes away.
    pub(crate) fn set_lag(&self, partitions: impl IntoIterator<Item = (i32, Option<i64>)>) {
        for (partition, lag) in partitions {
            let label = PartitionLabel { partition };
            if let Some(lag) = lag {
                self.consumer_lag.get_or_create(&label).set(lag);
            } else {
                self.consumer_lag.remove(&label);
            }
        }
    }
}

impl Default for ConsumerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::metrics_text;

    fn exposition(metrics: &ConsumerMetrics) -> String {
        let mut registry = crate::ops::registry("consumer");
        metrics.register(&mut registry);
        metrics_text(&registry)
    }

    #[test]
    fn dependencies_start_down_and_readiness_reads_the_exported_gauges() {
        let metrics = ConsumerMetrics::new();
        let text = exposition(&metrics);
        for dependency in ["kafka", "redis", "mongodb"] {
            assert!(
                text.contains(&format!(
                    "votestream_consumer_dependency_up{{dependency=\"{dependency}\"}} 0"
                )),
                "{text}"
            );
        }
        let up = |kafka, redis, mongodb| {
            Readiness::of([
                (Dependency::Kafka, kafka),
                (Dependency::Redis, redis),
                (Dependency::Mongodb, mongodb),
            ])
        };
        ConsumerMetrics::set_up(&metrics.redis_up, true);
        assert_eq!(metrics.readiness(), up(false, true, false));
        assert!(exposition(&metrics).contains(r#"votestream_consumer_dependency_up{dependency="redis"} 1"#));
        ConsumerMetrics::set_up(&metrics.redis_up, false);
        assert_eq!(metrics.readiness(), up(false, false, false));
    }

    #[test]
    fn lag_is_shown_for_assigned_partitions_only() {
        let metrics = ConsumerMetrics::new();
        metrics.set_lag([(0, Some(5)), (1, Some(0)), (2, None)]);
        let text = exposition(&metrics);
        assert!(text.contains(r#"votestream_consumer_lag{partition="0"} 5"#), "{text}");
        assert!(text.contains(r#"votestream_consumer_lag{partition="1"} 0"#), "{text}");
        assert!(!text.contains(r#"partition="2""#), "{text}");
        // Partition 0 revoked: its series goes rather than freezing at its last value.
        metrics.set_lag([(0, None), (1, Some(7))]);
        let text = exposition(&metrics);
        assert!(!text.contains(r#"partition="0""#), "{text}");
        assert!(text.contains(r#"votestream_consumer_lag{partition="1"} 7"#), "{text}");
    }

    #[test]
    fn a_supervised_actor_has_a_restart_series_at_zero_before_any_restart() {
        let metrics = ConsumerMetrics::new();
        metrics.supervised("redis_aggregator");
        assert!(
            exposition(&metrics).contains(r#"votestream_consumer_actor_restarts_total{actor="redis_aggregator"} 0"#)
        );
        metrics.restarted("redis_aggregator");
        assert!(
            exposition(&metrics).contains(r#"votestream_consumer_actor_restarts_total{actor="redis_aggregator"} 1"#)
        );
    }
}
