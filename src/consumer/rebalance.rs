//! The Kafka consumer's context: where each assigned partition starts
//! reading (the lower of what Redis counted and what Kafka knows both sinks
//! wrote), what the rebalance callbacks tell the read loop, and the lag and
//! readiness read from librdkafka's statistics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::metrics::ConsumerMetrics;
use crate::schema::redis::{RedisKeys, offsets_partition};

/// What the rebalance callback tells the read loop.
#[derive(Debug)]
pub(super) enum Rebalanced {
    Assigned(Vec<PartitionStart>),
    Revoked(Vec<i32>),
}

/// Where reading an assigned partition starts, and what Redis had stored for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PartitionStart {
    pub(super) partition: i32,
    /// The first offset to read.
    pub(super) start: i64,
    /// The last offset Redis had applied (-1 for none, or when Redis could not be asked).
    pub(super) redis_stored: i64,
}

/// The consumer's context: rebalance callbacks and statistics.
pub(super) struct ReaderContext {
    pub(super) topic: String,
    pub(super) redis_url: String,
    pub(super) keys: RedisKeys,
    pub(super) metrics: Arc<ConsumerMetrics>,
    pub(super) events: Mutex<Vec<Rebalanced>>,
    /// `events` holds something not taken yet.
    pub(super) pending: AtomicBool,
    /// Wakes the read loop when an event is pushed.
    pub(super) rebalanced: tokio::sync::Notify,
    /// Set once the reader stops reading: the consumer is about to close.
    pub(super) closing: AtomicBool,
    /// Set by the first assignment (the group join is complete).
    pub(super) assigned_once: AtomicBool,
}

impl ReaderContext {
    fn push(&self, event: Rebalanced) {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).push(event);
        self.pending.store(true, Ordering::SeqCst);
        // The callback runs while the loop polls for records: an idle loop
        // (nothing to read, nothing in flight) must wake to apply it.
        self.rebalanced.notify_one();
    }

    /// The events since the last call; asked after every record, so the
    /// lock is taken only when there is something to take.
    pub(super) fn take(&self) -> Vec<Rebalanced> {
        if !self.pending.swap(false, Ordering::SeqCst) {
            return Vec::new();
        }
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The offsets Redis has applied, per partition of our topic. This runs
    /// inside the rebalance callback, so it uses a short, blocking connection.
    fn redis_offsets(&self) -> Result<BTreeMap<i32, i64>, String> {
        use deadpool_redis::redis::Commands;
        let client = deadpool_redis::redis::Client::open(self.redis_url.as_str()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        let stored: BTreeMap<String, i64> = conn.hgetall(&self.keys.offsets).map_err(|e| e.to_string())?;
        Ok(stored
            .into_iter()
            .filter_map(|(field, offset)| Some((offsets_partition(&self.topic, &field)?, offset)))
            .collect())
    }

    /// Sets each partition's starting offset in `tpl`, and returns them.
    pub(super) fn choose_starts<K: Consumer<ReaderContext>>(
        &self,
        consumer: &K,
        tpl: &mut TopicPartitionList,
    ) -> Vec<PartitionStart> {
        let committed = consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)).ok();
        let redis = match self.redis_offsets() {
            Ok(r) => Some(r),
            Err(error) => {
                // Kafka's committed offsets alone are safe: if Redis turns out to be
                // behind them, the script reports a gap and the reader rewinds.
                tracing::warn!(%error, "cannot read consumer:offsets from Redis; starting from Kafka's committed offsets");
                None
            }
        };
        let mut chosen = Vec::new();
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        for p in partitions {
            // Kafka answered but holds no commit for the partition: both sinks confirmed none
            // of it, so it starts at the beginning (Mongo may lag what Redis counted).
            let committed_next = committed.as_ref().map(|c| {
                c.find_partition(&self.topic, p)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or(0)
            });
            let redis_stored = redis.as_ref().map(|r| r.get(&p).copied().unwrap_or(-1));
            let start = start_offset(redis_stored, committed_next);
            let _ = tpl.set_partition_offset(&self.topic, p, Offset::Offset(start));
            chosen.push(PartitionStart {
                partition: p,
                start,
                redis_stored: redis_stored.unwrap_or(-1),
            });
        }
        tracing::info!(partitions = ?chosen, "assigned partitions start");
        chosen
    }
}

/// Where to start a partition: after what Redis counted, but never after what
/// Kafka knows both sinks wrote (Mongo may be behind Redis). `None` means the
/// store could not be asked; a partition without a commit is `Some(0)`.
pub fn start_offset(redis_stored: Option<i64>, committed_next: Option<i64>) -> i64 {
    match (redis_stored, committed_next) {
        (Some(stored), Some(next)) => (stored + 1).min(next),
        (Some(stored), None) => stored + 1,
        (None, Some(next)) => next,
        (None, None) => 0,
    }
}

impl ClientContext for ReaderContext {
    fn stats(&self, stats: Statistics) {
        let up = stats.brokers.values().any(|b| b.state == "UP");
        ConsumerMetrics::set_up(&self.metrics.kafka_up, up);
        if let Some(topic) = stats.topics.get(&self.topic) {
            // `desired`: assigned to this consumer; librdkafka keeps reporting
            // a revoked partition's last lag, and the -1 partition is internal.
            let lags = topic.partitions.values().filter(|p| p.partition >= 0).map(|p| {
                let known = p.desired && p.consumer_lag >= 0;
                (p.partition, known.then_some(p.consumer_lag))
            });
            self.metrics.set_lag(lags);
        }
    }
}

/// Under the cooperative protocol each callback names only the partitions
/// that change owner (added to, or taken from, what this consumer reads);
/// under the eager one an assignment is the whole set and a revoke takes all.
impl ConsumerContext for ReaderContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let count = tpl.count() as u64;
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assigned_once.store(true, Ordering::SeqCst);
                if self.closing.load(Ordering::SeqCst) {
                    // An assignment that arrives while the consumer closes is
                    // only acknowledged, at once: nothing will be read from
                    // it, and a slow callback here (offsets asked of Redis
                    // and Kafka) can hold up librdkafka's close.
                    tracing::info!(partitions = count, "assignment while closing: acknowledged, not read");
                } else {
                    let starts = self.choose_starts(consumer, tpl);
                    self.push(Rebalanced::Assigned(starts));
                }
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(error) = assigned {
                    tracing::error!(%error, "assign failed");
                }
                self.metrics.partitions_assigned.inc_by(count);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked = tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>();
                tracing::info!(partitions = ?revoked, cooperative, "revoked");
                self.push(Rebalanced::Revoked(revoked));
                let unassigned = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(error) = unassigned {
                    tracing::error!(%error, "unassign failed");
                }
                self.metrics.partitions_revoked.inc_by(count);
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
            }
        }
        // What it reads now, whichever way the protocol moved partitions.
        let owned = consumer.assignment().map_or(0, |a| a.count());
        self.metrics.partitions_owned.set(owned as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_starts_after_redis_but_never_after_kafkas_commit() {
        // Fresh contest: the beginning.
        assert_eq!(start_offset(Some(-1), None), 0);
        assert_eq!(start_offset(None, None), 0);
        // Redis ahead of the commit (Mongo had not confirmed): the commit wins.
        assert_eq!(start_offset(Some(99), Some(50)), 50);
        // Redis lost data: start after what Redis really has.
        assert_eq!(start_offset(Some(9), Some(50)), 10);
        assert_eq!(start_offset(Some(-1), Some(50)), 0);
        // Redis unreachable: Kafka's commit.
        assert_eq!(start_offset(None, Some(50)), 50);
        // No commit yet (Kafka says 0) while Redis counted some: Mongo may not have them.
        assert_eq!(start_offset(Some(881), Some(0)), 0);
        // Kafka unreachable: after what Redis counted.
        assert_eq!(start_offset(Some(9), None), 10);
    }
}
