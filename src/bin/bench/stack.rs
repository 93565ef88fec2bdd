//! The local stack as the benchmark uses it: the services' addresses, the
//! topics, Redis prefixes and Mongo databases it creates (all removed by
//! [`Stack::clean_up`], whatever happened), and the processes it starts (the
//! `votestream` binary, a private FerretDB), each stopped by its own PID.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_redis::redis;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use votestream::schema::redis::RedisKeys;

pub struct Stack {
    pub brokers: String,
    pub redis_url: String,
    pub mongodb_uri: String,
    /// The `votestream` binary the consumer and ingress runs start.
    pub votestream: PathBuf,
    /// Logs of the started processes and private FerretDB data.
    pub scratch: PathBuf,
    admin: AdminClient<DefaultClientContext>,
    topics: Mutex<Vec<String>>,
    prefixes: Mutex<Vec<String>>,
    databases: Mutex<Vec<String>>,
}

/// A name no other run uses.
pub fn unique(label: &str) -> String {
    format!("bench-{label}-{}", uuid::Uuid::now_v7().simple())
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
        let admin = ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
        Ok(Stack {
            brokers,
            redis_url,
            mongodb_uri,
            votestream,
            scratch,
            admin,
            topics: Mutex::new(Vec::new()),
            prefixes: Mutex::new(Vec::new()),
            databases: Mutex::new(Vec::new()),
        })
    }

    /// A fresh topic, deleted at clean-up (or earlier by [`Stack::delete_topic`]).
    pub async fn topic(&self, label: &str, partitions: i32) -> anyhow::Result<String> {
        let name = unique(label);
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let new = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
        for result in self.admin.create_topics([&new], &options).await? {
            result.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
        }
        self.topics.lock().expect("lock").push(name.clone());
        Ok(name)
    }

    pub async fn delete_topic(&self, name: &str) {
        if let Err(error) = self.admin.delete_topics(&[name], &AdminOptions::new()).await {
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

    fn offsets_client(&self, group: Option<&str>) -> anyhow::Result<BaseConsumer> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        if let Some(group) = group {
            config.set("group.id", group);
        }
        Ok(config.create()?)
    }

    /// The end of each partition.
    pub fn high_watermarks(&self, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
        let client = self.offsets_client(None)?;
        let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
            .unwrap_or_default();
        partitions
            .into_iter()
            .map(|p| Ok((p, client.fetch_watermarks(topic, p, Duration::from_secs(10))?.1)))
            .collect()
    }

    /// A reusable reader of one group's committed offsets on `partitions` of `topic`.
    pub fn committed_reader(&self, group: &str, topic: &str, partitions: Vec<i32>) -> anyhow::Result<CommittedReader> {
        Ok(CommittedReader {
            client: self.offsets_client(Some(group))?,
            topic: topic.to_owned(),
            partitions,
        })
    }

    pub async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await?)
    }

    /// `votes:total` under `prefix` (0 before the first batch).
    pub async fn redis_total(&self, conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> i64 {
        redis::cmd("GET")
            .arg(RedisKeys::new(prefix).total)
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
        Ok(vec![
            ("KAFKA_BROKERS", self.brokers.clone()),
            ("VOTES_TOPIC", topic.to_owned()),
            // A poison record would be a bug here; its dead letter goes to a topic nobody reads.
            ("DLQ_TOPIC", format!("{topic}.dlq")),
            ("CONSUMER_GROUP", group.to_owned()),
            ("REDIS_URL", self.redis_url.clone()),
            ("REDIS_KEY_PREFIX", prefix.to_owned()),
            ("MONGODB_URI", mongodb_uri.to_owned()),
            ("MONGODB_DATABASE", database.to_owned()),
            ("CONSUMER_HTTP_ADDR", format!("127.0.0.1:{}", free_port()?)),
        ])
    }
}

pub struct CommittedReader {
    client: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
}

impl CommittedReader {
    /// The group's committed offset per partition (-1 where none).
    pub fn read(&self) -> anyhow::Result<BTreeMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for &p in &self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = self.client.committed_offsets(tpl, Duration::from_secs(10))?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), o),
                _ => (e.partition(), -1),
            })
            .collect())
    }
}

async fn delete_keys(url: &str, prefix: &str) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL").arg(keys).query_async(&mut conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
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
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
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
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        Ok(self.child.wait()?)
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

/// FerretDB of our own (the binary `scripts/stack up` installs), so Mongo can
/// be stopped without touching the shared one on 27017.
pub struct PrivateFerretDb {
    process: Option<Process>,
    port: u16,
    dir: PathBuf,
}

impl PrivateFerretDb {
    pub fn binary() -> PathBuf {
        let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let cache = set("STACK_CACHE").unwrap_or_else(|| {
            set("XDG_CACHE_HOME")
                .unwrap_or_else(|| set("HOME").unwrap_or_else(|| PathBuf::from("/root")).join(".cache"))
                .join("votestream")
        });
        cache.join("ferretdb-v1.24.2/ferretdb")
    }

    pub fn start(scratch: &Path) -> anyhow::Result<PrivateFerretDb> {
        let dir = scratch.join(unique("ferretdb"));
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::create_dir_all(dir.join("state"))?;
        let mut db = PrivateFerretDb {
            process: None,
            port: free_port()?,
            dir,
        };
        db.spawn()?;
        Ok(db)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let binary = Self::binary();
        anyhow::ensure!(
            binary.exists(),
            "FerretDB is not at {}; `scripts/stack up` installs it",
            binary.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("ferretdb.log"))?;
        let child = Command::new(binary)
            .arg("--handler=sqlite")
            .arg(format!("--sqlite-url=file:{}/", self.dir.join("data").display()))
            .arg(format!("--listen-addr=127.0.0.1:{}", self.port))
            .arg(format!("--state-dir={}", self.dir.join("state").display()))
            .args(["--telemetry=disable", "--debug-addr=-", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.process = Some(Process { child });
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!("FerretDB did not listen on {} within 30 s", self.port)
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// SIGKILL (our child only).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts again on the same port and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.spawn()
    }
}

impl Drop for PrivateFerretDb {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
