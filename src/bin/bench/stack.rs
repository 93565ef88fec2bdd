//! The local stack as the benchmark uses it: the services' addresses, the
//! topics, Redis prefixes and Mongo databases it creates (all removed by
//! [`Stack::clean_up`], whatever happened), and the processes it starts (the
//! `votestream` binary; a private FerretDB comes from the shared harness),
//! each stopped by its own PID.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use anyhow::Context as _;
use deadpool_redis::redis;
use harness::kafka::CommittedReader;
use votestream::schema::redis::RedisKeys;

pub struct Stack {
    pub brokers: String,
    pub redis_url: String,
    pub mongodb_uri: String,
    /// The `votestream` binary the consumer and ingress runs start.
    pub votestream: PathBuf,
    /// Logs of the started processes and private FerretDB data.
    pub scratch: PathBuf,
    topics: Mutex<Vec<String>>,
    prefixes: Mutex<Vec<String>>,
    databases: Mutex<Vec<String>>,
}

/// A name no other run uses.
pub fn unique(label: &str) -> String {
    harness::unique(&format!("bench-{label}"))
}

impl Stack {
    pub fn new(
        brokers: String,
        redis_url: String,
        mongodb_uri: String,
        votestream: PathBuf,
        scratch: PathBuf,
    ) -> anyhow::Result<Stack> {
        anyhow::ensure!(
            votestream.exists(),
            "{} not found: build it first (cargo build --release --bins)",
            votestream.display()
        );
        std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        Ok(Stack {
            brokers,
            redis_url,
            mongodb_uri,
            votestream,
            scratch,
            topics: Mutex::new(Vec::new()),
            prefixes: Mutex::new(Vec::new()),
            databases: Mutex::new(Vec::new()),
        })
    }

    /// A fresh topic, deleted at clean-up (or earlier by [`Stack::delete_topic`]).
    pub async fn topic(&self, label: &str, partitions: i32) -> anyhow::Result<String> {
        let name = unique(label);
        harness::kafka::create_topic(&self.brokers, &name, partitions).await?;
        self.topics.lock().expect("lock").push(name.clone());
        Ok(name)
    }

    pub async fn delete_topic(&self, name: &str) {
        if let Err(error) = harness::kafka::delete_topic(&self.brokers, name).await {
            eprintln!("warning: deleting topic {name}: {error}");
        }
        self.topics.lock().expect("lock").retain(|t| t != name);
    }

    /// A fresh Redis key prefix, its keys deleted at clean-up.
    pub fn prefix(&self, label: &str) -> String {
        let prefix = format!("{}:", unique(label));
        self.prefixes.lock().expect("lock").push(prefix.clone());
        prefix
    }

    /// A fresh database on the shared Mongo, dropped at clean-up.
    pub fn database(&self, label: &str) -> String {
        let name = unique(label);
        self.databases.lock().expect("lock").push(name.clone());
        name
    }

    pub async fn drop_database(&self, name: &str) {
        if let Err(error) = drop_database(&self.mongodb_uri, name).await {
            eprintln!("warning: dropping database {name}: {error}");
        }
        self.databases.lock().expect("lock").retain(|d| d != name);
    }

    pub async fn delete_prefix(&self, prefix: &str) {
        if let Err(error) = delete_keys(&self.redis_url, prefix).await {
            eprintln!("warning: deleting Redis keys {prefix}*: {error}");
        }
        self.prefixes.lock().expect("lock").retain(|p| p != prefix);
    }

    /// Removes everything the run created that is still there.
    pub async fn clean_up(&self) {
        let topics = self.topics.lock().expect("lock").clone();
        for topic in topics {
            self.delete_topic(&topic).await;
        }
        let prefixes = self.prefixes.lock().expect("lock").clone();
        for prefix in prefixes {
            self.delete_prefix(&prefix).await;
        }
        let databases = self.databases.lock().expect("lock").clone();
        for database in databases {
            self.drop_database(&database).await;
        }
    }

    /// The end of each partition.
    pub fn high_watermarks(&self, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
        harness::kafka::high_watermarks(&self.brokers, topic)
    }

    /// A reusable reader of one group's committed offsets on `partitions` of `topic`.
    pub fn committed_reader(&self, group: &str, topic: &str, partitions: Vec<i32>) -> anyhow::Result<CommittedReader> {
        CommittedReader::new(&self.brokers, group, topic, partitions)
    }

    pub async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await?)
    }

    /// `votes:received` under `prefix`: the records decided (0 before the first batch).
    pub async fn redis_received(&self, conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> i64 {
        redis::cmd("GET")
            .arg(RedisKeys::new(prefix).received)
            .query_async::<Option<i64>>(conn)
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Starts `votestream <args>` with `env`; its stderr goes to `<scratch>/<log>.log`.
    pub fn spawn_votestream(&self, args: &[&str], env: &[(&str, String)], log: &str) -> anyhow::Result<Process> {
        let log = std::fs::File::create(self.scratch.join(format!("{log}.log")))?;
        let mut command = Command::new(&self.votestream);
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.votestream.display()))?;
        Ok(Process { child })
    }

    /// The settings a consumer of `topic` needs, isolated by group, prefix and
    /// database, with its HTTP server on a free port.
    pub fn consumer_env(
        &self,
        topic: &str,
        group: &str,
        prefix: &str,
        mongodb_uri: &str,
        database: &str,
    ) -> anyhow::Result<Vec<(&'static str, String)>> {
        let place = harness::ConsumerPlace {
            brokers: &self.brokers,
            topic,
            // A poison record would be a bug here; its dead letter goes to a topic nobody reads.
            dlq_topic: &format!("{topic}.dlq"),
            group,
            redis_url: &self.redis_url,
            key_prefix: prefix,
            mongodb_uri,
            database,
            http_addr: Some(&format!("127.0.0.1:{}", harness::free_port()?)),
        };
        Ok(place.env())
    }
}

async fn delete_keys(url: &str, prefix: &str) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    Ok(harness::delete_prefix(&mut conn, prefix).await?)
}

async fn drop_database(uri: &str, name: &str) -> anyhow::Result<()> {
    let client = votestream::stores::mongo_client(uri, "votestream-bench", votestream::stores::STORE_TIMEOUT).await?;
    client.database(name).drop().await?;
    Ok(())
}

/// A child process, killed (SIGKILL) if still running when dropped.
pub struct Process {
    child: Child,
}

impl Process {
    /// Peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        harness::memory::peak_rss_mib(self.child.id())
    }

    /// CPU time used so far (user + system, all threads), in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        harness::memory::cpu_seconds(self.child.id())
    }

    /// Fails if the process has already exited.
    pub fn ensure_running(&mut self, what: &str) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!("{what} exited early ({status})"),
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.send_term()?;
        Ok(self.child.wait()?)
    }

    /// SIGTERM, without waiting.
    pub fn send_term(&self) -> anyhow::Result<()> {
        harness::send_term(self.child.id())
    }

    /// The exit status, once the process has exited.
    pub fn exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
