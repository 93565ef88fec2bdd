//! The Redis aggregator: applies each batch with one Lua script that decides
//! every record's outcome (DESIGN.md, "Outcomes") and is fenced by the stored
//! offset of each partition, so a replayed record is never counted twice and
//! a gap (Redis lost data) is detected.

use std::future::Future;
use std::sync::Arc;

use deadpool_redis::Pool;
use deadpool_redis::redis;

use super::aggregate::decide;
use prometheus_client::metrics::gauge::Gauge;

use super::batch::SharedBatch;
use super::metrics::ConsumerMetrics;
use super::sink::{Sink, SinkActor, SinkError, WriteFailure, Written};
use crate::schema::redis::{ApplyReply, ApplyScript, RedisKeys, Window};
use crate::stores::{STORE_TIMEOUT, redis_pool};

pub type RedisAggregator = SinkActor<RedisWriter>;

pub struct RedisWriter {
    url: String,
    keys: Arc<RedisKeys>,
    window: Window,
    script: Arc<ApplyScript>,
    metrics: Arc<ConsumerMetrics>,
}

impl RedisWriter {
    /// A writer applying the contest's rules under `window` (the voting
    /// window and the dedup window).
    pub fn new(url: &str, keys: RedisKeys, window: Window, metrics: Arc<ConsumerMetrics>) -> RedisWriter {
        RedisWriter {
            url: url.to_owned(),
            keys: Arc::new(keys),
            window,
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
        let window = self.window;
        async move {
            let io = |e: &dyn std::fmt::Display| WriteFailure::Io(format!("redis: {e}"));
            let mut conn = pool.get().await.map_err(|e| io(&e))?;
            let decide = decide(&batch, window);
            if decide.ranges.is_empty() {
                let _ = batch.outcomes.set(Vec::new());
                return Ok(Written { votes: 0 });
            }
            let reply = script.apply(&mut conn, &keys, &decide).await;
            match reply.map_err(|e| WriteFailure::Io(e.to_string()))? {
                ApplyReply::Applied { decided, outcomes, .. } => {
                    if outcomes.len() != decide.records.len() {
                        return Err(io(&format!(
                            "the script decided {} outcomes for {} records",
                            outcomes.len(),
                            decide.records.len()
                        )));
                    }
                    if decided == decide.records.len() {
                        // A first pass over these records (no replay): their latency is real.
                        record_latency(&metrics, &batch);
                    }
                    metrics.votes_applied.inc_by(decided as u64);
                    let _ = batch.outcomes.set(outcomes);
                    Ok(Written { votes: decided })
                }
                ApplyReply::Gap { field, stored } => {
                    tracing::warn!(seq = batch.seq, ranges = ?decide.ranges, %field, stored, "gap");
                    Err(WriteFailure::Refused(SinkError::Gap { field, stored }))
                }
            }
        }
    }
}

fn record_latency(metrics: &ConsumerMetrics, batch: &SharedBatch) {
    let now = chrono::Utc::now();
    for (_, vote) in batch.votes() {
        let ms = (now - vote.received_at).num_milliseconds().max(0);
        metrics.end_to_end_seconds.observe(ms as f64 / 1000.0);
    }
}
