//! The Redis aggregator: pre-aggregates each batch and applies it with one Lua
//! script that is fenced by the stored offset of each partition, so a replayed
//! record is never counted twice and a gap (Redis lost data) is detected.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use deadpool_redis::Pool;
use deadpool_redis::redis;

use super::aggregate::{aggregate, unapplied};
use prometheus_client::metrics::gauge::Gauge;

use super::batch::SharedBatch;
use super::metrics::ConsumerMetrics;
use super::sink::{Sink, SinkActor, SinkError, WriteFailure, Written};
use crate::schema::redis::{ApplyReply, ApplyScript, RedisKeys, StoredOffset, offsets_partition};
use crate::stores::{STORE_TIMEOUT, redis_pool};

pub type RedisAggregator = SinkActor<RedisWriter>;

/// How often one batch may be narrowed after a concurrent writer (another
/// consumer finishing a revoked partition) moved the stored offsets.
const MAX_ADJUSTMENTS: usize = 8;

pub struct RedisWriter {
    url: String,
    keys: Arc<RedisKeys>,
    script: Arc<ApplyScript>,
    metrics: Arc<ConsumerMetrics>,
}

impl RedisWriter {
    pub fn new(url: &str, keys: RedisKeys, metrics: Arc<ConsumerMetrics>) -> RedisWriter {
        RedisWriter {
            url: url.to_owned(),
            keys: Arc::new(keys),
            script: Arc::new(ApplyScript::default()),
            metrics,
        }
    }
}

impl Sink for RedisWriter {
    const NAME: &'static str = "redis_aggregator";
    type Conn = Pool;

    fn up_flag(metrics: &ConsumerMetrics) -> &Gauge {
        &metrics.redis_up
    }

    fn connect(&self) -> impl Future<Output = Result<Pool, String>> + 'static {
        let url = self.url.clone();
        async move {
            let pool = redis_pool(&url, STORE_TIMEOUT).map_err(|e| format!("redis pool: {e}"))?;
            let mut conn = pool.get().await.map_err(|e| format!("redis: {e}"))?;
            let _: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            Ok(pool)
        }
    }

    fn write(&self, pool: Pool, batch: SharedBatch) -> impl Future<Output = Result<Written, WriteFailure>> + 'static {
        let keys = self.keys.clone();
        let script = self.script.clone();
        let metrics = self.metrics.clone();
        async move {
            let io = |e: &dyn std::fmt::Display| WriteFailure::Io(format!("redis: {e}"));
            let mut conn = pool.get().await.map_err(|e| io(&e))?;
            let mut applied: BTreeMap<i32, i64> = BTreeMap::new();
            for _ in 0..MAX_ADJUSTMENTS {
                let deltas = aggregate(&batch, &applied);
                if deltas.ranges.is_empty() {
                    return Ok(Written { votes: 0 });
                }
                let reply = script.apply(&mut conn, &keys, &deltas).await;
                match reply.map_err(|e| WriteFailure::Io(e.to_string()))? {
                    ApplyReply::Applied { .. } => {
                        record_latency(&metrics, &batch, &applied);
                        metrics.votes_applied.inc_by(deltas.total as u64);
                        return Ok(Written {
                            votes: deltas.total as usize,
                        });
                    }
                    ApplyReply::Adjust(stored) => {
                        for StoredOffset { field, offset } in stored {
                            let partition = offsets_partition(&batch.topic, &field)
                                .filter(|p| batch.ranges.iter().any(|r| r.partition == *p));
                            if let Some(partition) = partition {
                                applied.insert(partition, offset);
                            }
                        }
                    }
                    ApplyReply::Gap { field, stored } => {
                        tracing::warn!(seq = batch.seq, ranges = ?deltas.ranges, %field, stored, "gap");
                        return Err(WriteFailure::Refused(SinkError::Gap { field, stored }));
                    }
                }
            }
            Err(io(&"stored offsets kept moving under this batch"))
        }
    }
}

fn record_latency(metrics: &ConsumerMetrics, batch: &SharedBatch, applied: &BTreeMap<i32, i64>) {
    let now = chrono::Utc::now();
    for (_, vote) in unapplied(batch, applied) {
        let ms = (now - vote.received_at).num_milliseconds().max(0);
        metrics.end_to_end_seconds.observe(ms as f64 / 1000.0);
    }
}
