//! The contest's status in Redis, kept by every consumer (their writes
//! agree): `contest:status` (`not_open`, `open`, `closed` or `final`, with
//! the window) for the logs app and Grafana, and, once the close plus
//! `--final-grace-secs` has passed, `contest:end`: each partition's end
//! offset, taken once (the first consumer to take it wins). The result is
//! final when every partition is counted up to its end (DESIGN.md, "The end
//! of the contest").

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use deadpool_redis::redis::{self, AsyncCommands, Script};
use tokio::sync::watch;

use crate::contest::{Phase, Status, VotingWindow, end_offsets, is_final};
use crate::kafka_options::KafkaOptions;
use crate::schema::redis::{RedisKeys, offsets_field};
use crate::stores::{STORE_TIMEOUT, redis_pool};
use crate::vote::format_instant;

/// How often the status is written again.
const EVERY: Duration = Duration::from_secs(1);

/// Writes the end offsets unless some consumer already did.
const TAKE_END: &str = "if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end";

pub struct ContestWatch {
    pub window: VotingWindow,
    pub grace: Duration,
    pub keys: RedisKeys,
    pub redis_url: String,
    pub brokers: String,
    pub kafka_options: KafkaOptions,
    pub topic: String,
}

impl ContestWatch {
    /// Keeps the status until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let pool = match redis_pool(&self.redis_url, STORE_TIMEOUT) {
            Ok(pool) => pool,
            Err(e) => {
                tracing::error!(error = %e, "contest status: no Redis pool; the status is not kept");
                return;
            }
        };
        loop {
            if let Err(e) = self.tick(&pool).await {
                tracing::warn!(error = %e, "contest status not updated; retrying");
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn tick(&self, pool: &deadpool_redis::Pool) -> Result<(), String> {
        let mut conn = pool.get().await.map_err(|e| format!("redis: {e}"))?;
        let now = Utc::now();
        let status = match self.window.phase(now) {
            Phase::NotOpen => Status::NotOpen,
            Phase::Open => Status::Open,
            Phase::Closed => {
                let closes = self.window.closes_at.unwrap_or(now);
                let grace = chrono::Duration::from_std(self.grace).unwrap_or_default();
                if now >= closes + grace {
                    self.take_end(&mut conn).await?;
                }
                // The end offsets and the counted ones in one round trip.
                let (end, counted): (BTreeMap<String, i64>, BTreeMap<String, i64>) = redis::pipe()
                    .hgetall(&self.keys.contest_end)
                    .hgetall(&self.keys.offsets)
                    .query_async(&mut *conn)
                    .await
                    .map_err(|e| format!("redis: {e}"))?;
                if is_final(&end, &counted) {
                    Status::Final
                } else {
                    Status::Closed
                }
            }
        };
        let mut fields = vec![
            ("status", status.as_str().to_owned()),
            ("updated_at", format_instant(&now)),
        ];
        fields.extend(self.window.opens_at.map(|t| ("opens_at", format_instant(&t))));
        fields.extend(self.window.closes_at.map(|t| ("closes_at", format_instant(&t))));
        // Replaced whole, so a field of an earlier configuration (a window since removed) goes.
        let _: () = redis::pipe()
            .atomic()
            .del(&self.keys.contest_status)
            .hset_multiple(&self.keys.contest_status, &fields)
            .query_async(&mut *conn)
            .await
            .map_err(|e| format!("redis: {e}"))?;
        Ok(())
    }

    async fn take_end(&self, conn: &mut deadpool_redis::Connection) -> Result<(), String> {
        let taken: bool = conn
            .exists(&self.keys.contest_end)
            .await
            .map_err(|e| format!("redis: {e}"))?;
        if taken {
            return Ok(());
        }
        let (brokers, options, topic) = (self.brokers.clone(), self.kafka_options.clone(), self.topic.clone());
        let ends = tokio::task::spawn_blocking(move || end_offsets(&brokers, &options, &topic, Duration::from_secs(5)))
            .await
            .map_err(|e| format!("kafka: {e}"))??;
        let script = Script::new(TAKE_END);
        let mut call = script.prepare_invoke();
        call.key(&self.keys.contest_end);
        for (partition, end) in &ends {
            call.arg(offsets_field(&self.topic, *partition)).arg(*end);
        }
        let _: redis::Value = call.invoke_async(conn).await.map_err(|e| format!("redis: {e}"))?;
        tracing::info!(
            ?ends,
            "voting closed: end offsets taken; the result is final once they are counted"
        );
        Ok(())
    }
}
