//! Addresses of the local stack and helpers for isolated, self-cleaning tests.

use std::time::Duration;

pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn mongodb_uri() -> String {
    std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

pub use harness::{delete_prefix, unique};

/// A fresh topic, deleted when the guard drops.
pub struct TempTopic {
    pub name: String,
}

impl TempTopic {
    pub async fn create(prefix: &str, partitions: i32) -> TempTopic {
        let name = unique(prefix);
        harness::kafka::create_topic(&kafka_brokers(), &name, partitions)
            .await
            .expect("topic created");
        TempTopic { name }
    }
}

impl Drop for TempTopic {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot be async; a short-lived runtime on another thread deletes the topic.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                let _ = rt.block_on(harness::kafka::delete_topic(&kafka_brokers(), &name));
            }
        })
        .join();
    }
}

/// A port nothing listens on right now (for servers the tests start).
pub fn free_port() -> u16 {
    harness::free_port().expect("a free port")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    harness::eventually(what, limit, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A folder under target/ for a test's logs and private data.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique(name));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
