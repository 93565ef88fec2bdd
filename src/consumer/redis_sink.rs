//! The Redis aggregator: pre-aggregates each batch and applies it with one Lua
//! script that is fenced by the stored offset of each partition, so a replayed
//! record is never counted twice and a gap (Redis lost data) is detected.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use deadpool_redis::Pool;
use deadpool_redis::redis::{self, Script};

use super::aggregate::{aggregate, offsets_partition, unapplied};
use super::batch::SharedBatch;
use super::metrics::ConsumerMetrics;
use super::sink::{Sink, SinkActor, SinkError, WriteFailure, Written};
use crate::redis_keys::{LOGS_TAIL_LEN, RedisKeys};
use crate::stores::{STORE_TIMEOUT, redis_pool};

pub type RedisAggregator = SinkActor<RedisWriter>;

/// How often one batch may be narrowed after a concurrent writer (another
/// consumer finishing a revoked partition) moved the stored offsets.
const MAX_ADJUSTMENTS: usize = 8;

pub struct RedisWriter {
    url: String,
    keys: Arc<RedisKeys>,
    script: Arc<Script>,
    metrics: Arc<ConsumerMetrics>,
}

impl RedisWriter {
    pub fn new(url: &str, keys: RedisKeys, metrics: Arc<ConsumerMetrics>) -> RedisWriter {
        RedisWriter {
            url: url.to_owned(),
            keys: Arc::new(keys),
            script: Arc::new(Script::new(include_str!("apply.lua"))),
            metrics,
        }
    }
}

impl Sink for RedisWriter {
    const NAME: &'static str = "redis_aggregator";
    type Conn = Pool;

    fn up_flag(metrics: &ConsumerMetrics) -> &AtomicBool {
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
                let arg = serde_json::to_string(&deltas).map_err(|e| io(&e))?;
                let mut call = script.prepare_invoke();
                for key in keys.script_keys() {
                    call.key(key);
                }
                let reply: Vec<String> = call
                    .arg(arg)
                    .arg(LOGS_TAIL_LEN)
                    .arg(deltas.tail_json())
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| io(&e))?;
                match parse_reply(&reply) {
                    Reply::Ok => {
                        record_latency(&metrics, &batch, &applied);
                        metrics.votes_applied.inc_by(deltas.total as u64);
                        return Ok(Written {
                            votes: deltas.total as usize,
                        });
                    }
                    Reply::Adjust(stored) => {
                        for (field, offset) in stored {
                            let partition = offsets_partition(&batch.topic, &field)
                                .filter(|p| batch.ranges.iter().any(|r| r.partition == *p));
                            if let Some(partition) = partition {
                                applied.insert(partition, offset);
                            }
                        }
                    }
                    Reply::Gap { field, stored } => {
                        tracing::warn!(seq = batch.seq, ranges = ?deltas.ranges, %field, stored, "gap");
                        return Err(WriteFailure::Refused(SinkError::Gap { field, stored }));
                    }
                    Reply::Unexpected => return Err(io(&format!("unexpected script reply {reply:?}"))),
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

#[derive(Debug, PartialEq)]
enum Reply {
    Ok,
    Adjust(Vec<(String, i64)>),
    Gap { field: String, stored: i64 },
    Unexpected,
}

fn parse_reply(reply: &[String]) -> Reply {
    match reply.split_first() {
        Some((status, _)) if status == "ok" => Reply::Ok,
        Some((status, rest)) if status == "adjust" => {
            let pairs: Option<Vec<(String, i64)>> = rest
                .chunks(2)
                .map(|c| match c {
                    [field, stored] => stored.parse().ok().map(|s| (field.clone(), s)),
                    _ => None,
                })
                .collect();
            pairs.map_or(Reply::Unexpected, Reply::Adjust)
        }
        Some((status, [field, stored])) if status == "gap" => match stored.parse() {
            Ok(stored) => Reply::Gap {
                field: field.clone(),
                stored,
            },
            Err(_) => Reply::Unexpected,
        },
        _ => Reply::Unexpected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn script_replies_are_understood() {
        assert_eq!(parse_reply(&s(&["ok", "12"])), Reply::Ok);
        assert_eq!(
            parse_reply(&s(&["adjust", "votes/0", "41", "votes/3", "7"])),
            Reply::Adjust(vec![("votes/0".into(), 41), ("votes/3".into(), 7)])
        );
        assert_eq!(
            parse_reply(&s(&["gap", "votes/2", "-1"])),
            Reply::Gap {
                field: "votes/2".into(),
                stored: -1
            }
        );
        assert_eq!(parse_reply(&s(&["adjust", "votes/0"])), Reply::Unexpected);
        assert_eq!(parse_reply(&s(&[])), Reply::Unexpected);
    }
}
