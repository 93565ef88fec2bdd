//! What votestream's integration tests (`tests/it`) and its benchmark
//! (`votestream-bench`) share: private FerretDB and Redis servers started and
//! stopped by their own PIDs ([`servers`]), a reader of a consumer group's
//! committed offsets ([`kafka`]), a process's memory ([`memory`]), unique
//! names, free ports and polling until a condition holds.
//!
//! Errors are returned, not panicked on: the benchmark reports them, the
//! tests `expect` them.

pub mod kafka;
pub mod memory;
pub mod servers;

/// Where a `votestream consumer` under test reads and writes: the
/// environment it is started with, so every test and benchmark run isolates
/// it the same way (own topic, group, key prefix and database).
pub struct ConsumerPlace<'a> {
    pub brokers: &'a str,
    pub topic: &'a str,
    pub dlq_topic: &'a str,
    pub group: &'a str,
    pub redis_url: &'a str,
    pub key_prefix: &'a str,
    pub mongodb_uri: &'a str,
    pub database: &'a str,
    /// The consumer's HTTP address (`None`: its default, or set apart).
    pub http_addr: Option<&'a str>,
}

impl ConsumerPlace<'_> {
    /// The consumer's environment variables for this place.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        [
            ("KAFKA_BROKERS", self.brokers),
            ("VOTES_TOPIC", self.topic),
            ("DLQ_TOPIC", self.dlq_topic),
            ("CONSUMER_GROUP", self.group),
            ("REDIS_URL", self.redis_url),
            ("REDIS_KEY_PREFIX", self.key_prefix),
            ("MONGODB_URI", self.mongodb_uri),
            ("MONGODB_DATABASE", self.database),
        ]
        .into_iter()
        .chain(self.http_addr.map(|addr| ("CONSUMER_HTTP_ADDR", addr)))
        .map(|(name, value)| (name, value.to_owned()))
        .collect()
    }
}

/// Sends SIGTERM to `pid` (a child this program started), without waiting.
pub fn send_term(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -TERM {pid} failed ({status})");
    Ok(())
}

use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// A name no other test, run or earlier run uses: `prefix-<uuid v7>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// A port nothing listens on right now (for servers about to be started).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `check` every 200 ms until it returns `Some`; an error naming
/// `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes every Redis key that starts with `prefix` (SCAN, so a large
/// database is not blocked the way KEYS would block it; UNLINK, so a hash of
/// a million fields is freed in the background rather than within the reply,
/// which could outlast the client's response timeout).
pub async fn delete_prefix(conn: &mut MultiplexedConnection, prefix: &str) -> redis::RedisResult<()> {
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let _: i64 = redis::cmd("UNLINK").arg(keys).query_async(conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
