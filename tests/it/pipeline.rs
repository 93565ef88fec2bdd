//! Helpers for tests that run the real `votestream` binary against the local
//! stack: a per-test world (topics, consumer group, Redis prefix, Mongo
//! database), a vote generator with known totals, process control and checks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use votestream::schema::redis::RedisKeys;

use chrono::Utc;
use deadpool_redis::redis;
use futures_util::TryStreamExt;
use harness::kafka::CommittedReader;
use mongodb::bson::doc;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::oneshot;
use votestream::schema::mongo::LogDocument;
use votestream::vote::{Route, Rules, Vote, VoteRecord};

use crate::common::{TempTopic, delete_prefix, free_port, kafka_brokers, mongodb_uri, redis_url, scratch_dir, unique};

/// Partitions of every world's votes topic.
pub const PARTITIONS: i32 = 6;

pub const BANDS: [(&str, [&str; 2]); 3] = [
    ("Bohemia Suburbana", ["Vidas Ajenas", "Ciudad de Piedra"]),
    ("Alux Nahual", ["Alux Nahual", "Hijos del Maíz"]),
    ("Malacates Trébol Shop", ["Resistencia", "Caramelo"]),
];

/// Everything one test owns, removed when it drops.
pub struct World {
    pub topic: TempTopic,
    pub dlq: TempTopic,
    pub group: String,
    pub prefix: String,
    pub database: String,
    pub redis_url: String,
    pub mongodb_uri: String,
    pub dir: std::path::PathBuf,
}

impl World {
    pub async fn new(name: &str) -> World {
        World {
            topic: TempTopic::create(&format!("{name}-votes"), PARTITIONS).await,
            dlq: TempTopic::create(&format!("{name}-dlq"), 1).await,
            group: unique(&format!("{name}-group")),
            prefix: format!("{}:", unique(name)),
            database: unique(name),
            redis_url: redis_url(),
            mongodb_uri: mongodb_uri(),
            dir: scratch_dir(name),
        }
    }

    /// Starts `votestream consumer` for this world; its log goes to `dir/consumer-N.log`.
    pub fn spawn_consumer(&self, n: usize, extra_env: &[(&str, &str)]) -> ConsumerProcess {
        let port = free_port();
        let mut cmd = self.command("consumer", &format!("consumer-{n}.log"));
        cmd.env("CONSUMER_HTTP_ADDR", format!("127.0.0.1:{port}"));
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn votestream consumer");
        ConsumerProcess { child, port }
    }

    /// `votestream <subcommand>` on this world's topics, group, Redis prefix
    /// and Mongo database; its log goes to `dir/<log>`.
    pub fn command(&self, subcommand: &str, log: &str) -> Command {
        let log = std::fs::File::create(self.dir.join(log)).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_votestream"));
        let place = harness::ConsumerPlace {
            brokers: &kafka_brokers(),
            topic: &self.topic.name,
            dlq_topic: &self.dlq.name,
            group: &self.group,
            redis_url: &self.redis_url,
            key_prefix: &self.prefix,
            mongodb_uri: &self.mongodb_uri,
            database: &self.database,
            http_addr: None,
        };
        cmd.arg(subcommand)
            .envs(place.env())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        cmd
    }

    /// Runs a consumer for this world inside the test process (where a
    /// process boundary is not the point): `flags` are the command line's.
    pub fn run_consumer(&self, flags: &[&str]) -> InProcessConsumer {
        let (brokers, redis, mongo) = (kafka_brokers(), self.redis_url.clone(), self.mongodb_uri.clone());
        let world = [
            ("--kafka-brokers", brokers.as_str()),
            ("--votes-topic", &self.topic.name),
            ("--dlq-topic", &self.dlq.name),
            ("--consumer-group", &self.group),
            ("--redis-url", &redis),
            ("--redis-key-prefix", &self.prefix),
            ("--mongodb-uri", &mongo),
            ("--mongodb-database", &self.database),
            ("--consumer-http-addr", "127.0.0.1:0"),
        ];
        let args = ["votestream", "consumer"]
            .into_iter()
            .chain(world.iter().flat_map(|(flag, value)| [*flag, *value]))
            .chain(flags.iter().copied());
        let cli = <votestream::config::Cli as clap::Parser>::try_parse_from(args).expect("valid consumer flags");
        let votestream::config::Command::Consumer(settings) = cli.command else {
            panic!("expected consumer settings");
        };
        let consumer = votestream::consumer::Consumer::build(settings).expect("the consumer builds");
        let addr = consumer.addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(consumer.run(async {
            let _ = stopped.await;
        }));
        InProcessConsumer {
            addr,
            stop: Some(stop),
            run,
        }
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    pub async fn redis_total(&self) -> i64 {
        let Ok(client) = redis::Client::open(self.redis_url.as_str()) else {
            return -1;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return -1;
        };
        let total: Option<i64> = redis::cmd("GET")
            .arg(RedisKeys::new(&self.prefix).total)
            .query_async(&mut conn)
            .await
            .unwrap_or(None);
        total.unwrap_or(0)
    }

    pub async fn logs(&self) -> mongodb::Collection<LogDocument> {
        let client = mongodb::Client::with_uri_str(&self.mongodb_uri).await.unwrap();
        votestream::schema::mongo::logs(&client.database(&self.database))
    }

    /// A reader of the group's committed offsets, to poll.
    pub fn committed_reader(&self) -> CommittedReader {
        CommittedReader::new(&kafka_brokers(), &self.group, &self.topic.name, 0..PARTITIONS).expect("an offsets reader")
    }

    /// The end of each partition of the votes topic.
    pub fn high_watermarks(&self) -> BTreeMap<i32, i64> {
        harness::kafka::high_watermarks(&kafka_brokers(), &self.topic.name).expect("high watermarks")
    }

    /// Drops the test's Redis keys and Mongo database.
    pub async fn clean(&self) {
        delete_prefix(&mut self.redis().await, &self.prefix).await.unwrap();
        let client = mongodb::Client::with_uri_str(&self.mongodb_uri).await.unwrap();
        client.database(&self.database).drop().await.unwrap();
    }
}

pub struct ConsumerProcess {
    pub child: Child,
    pub port: u16,
}

impl ConsumerProcess {
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then the exit status once it has drained.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        harness::send_term(self.child.id()).expect("SIGTERM");
        self.child.wait().expect("exit status")
    }

    /// Its exit status once it exits by itself; panics naming `what` if it
    /// is still running after `limit` (a hang guard, not a measurement).
    pub async fn exited(&mut self, what: &str, limit: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        crate::common::eventually(what, limit, || std::future::ready(child.try_wait().expect("status"))).await
    }

    pub async fn metrics(&self) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        reqwest::get(url).await.ok()?.text().await.ok()
    }

    /// The process's peak resident memory, in MiB (VmHWM).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        harness::memory::peak_rss_mib(self.child.id())
    }
}

/// A consumer running inside the test process; it stops when dropped.
pub struct InProcessConsumer {
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    run: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessConsumer {
    /// Stops it as SIGTERM would (drain, commit) and returns how it ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stop.take());
        (&mut self.run).await.expect("the consumer task")
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a set of votes must produce in Redis.
#[derive(Debug, Default, PartialEq)]
pub struct Expected {
    pub total: i64,
    pub by_band: HashMap<String, i64>,
    pub by_album: HashMap<String, i64>,
    pub by_route: HashMap<String, i64>,
    pub rank_sum: HashMap<String, f64>,
}

impl Expected {
    pub fn add(&mut self, v: &VoteRecord) {
        self.total += 1;
        *self.by_band.entry(v.name.clone()).or_default() += 1;
        *self.by_album.entry(v.album_key()).or_default() += 1;
        *self.by_route.entry(v.route.as_str().to_owned()).or_default() += 1;
        *self.rank_sum.entry(v.album_key()).or_default() += v.rank;
    }

    /// The average rank per album as the consumer must store it: 2 decimals.
    pub fn averages(&self) -> HashMap<String, String> {
        self.by_album
            .iter()
            .map(|(album, &n)| (album.clone(), format!("{:.2}", self.rank_sum[album] / n as f64)))
            .collect()
    }
}

/// `n` votes spread over bands, albums and routes. Ranks are multiples of 0.5,
/// so sums are exact in binary floating point and averages can be compared exactly.
pub fn votes(n: usize) -> (Vec<VoteRecord>, Expected) {
    let mut expected = Expected::default();
    let rules = Rules::default();
    let records: Vec<VoteRecord> = (0..n)
        .map(|i| {
            let (band, albums) = BANDS[i % BANDS.len()];
            let album = albums[(i / BANDS.len()) % 2];
            let rank = ((i * 7) % 21) as f64 / 2.0;
            let route = if i % 3 == 0 { Route::Grpc } else { Route::Http };
            let v = Vote::new(band, album, 1990 + (i % 30) as i64, rank, &rules)
                .unwrap()
                .stamp(route, Utc::now());
            expected.add(&v);
            v
        })
        .collect();
    (records, expected)
}

/// Produces records (key = vote id) and waits for every delivery.
pub async fn produce(topic: &str, records: &[VoteRecord]) {
    let payloads: Vec<(String, Vec<u8>)> = records.iter().map(|v| (v.id.to_string(), v.to_json())).collect();
    produce_raw(topic, &payloads).await;
}

pub async fn produce_raw(topic: &str, records: &[(String, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .unwrap();
    for chunk in records.chunks(10_000) {
        let sends = chunk.iter().map(|(key, payload)| {
            producer.send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(60),
            )
        });
        for result in futures_util::future::join_all(sends).await {
            result.map_err(|(e, _)| e).expect("produced");
        }
    }
}

/// Waits until Redis has counted `total` votes (or fails after `limit`).
pub async fn wait_for_total(world: &World, total: i64, limit: Duration) {
    let started = std::time::Instant::now();
    crate::common::eventually(&format!("votes:total = {total}"), limit, || async {
        (world.redis_total().await == total).then_some(())
    })
    .await;
    eprintln!(
        "redis counted {total} votes after {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Waits until the group's committed offsets reach the end of every
/// partition (both sinks confirmed everything), then checks every Redis
/// counter and the Mongo logs.
pub async fn assert_exact(world: &World, expected: &Expected, votes: &[VoteRecord]) {
    let started = std::time::Instant::now();
    let high = world.high_watermarks();
    let reader = world.committed_reader();
    crate::common::eventually(
        "committed offsets at the end of every partition",
        Duration::from_secs(120),
        || {
            let committed = reader.read().expect("committed offsets");
            let high = high.clone();
            async move { (committed == high).then_some(()) }
        },
    )
    .await;
    eprintln!(
        "offsets committed to the end after {:.1} s more",
        started.elapsed().as_secs_f64()
    );
    let mut conn = world.redis().await;
    let p = &world.prefix;
    let total: i64 = redis::cmd("GET")
        .arg(RedisKeys::new(p).total)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(total, expected.total, "votes:total");
    let hash = |key: String| {
        let mut conn = conn.clone();
        async move {
            let m: HashMap<String, String> = redis::cmd("HGETALL").arg(key).query_async(&mut conn).await.unwrap();
            m
        }
    };
    let ints = |m: HashMap<String, String>| -> HashMap<String, i64> {
        m.into_iter().map(|(k, v)| (k, v.parse().unwrap())).collect()
    };
    assert_eq!(
        ints(hash(RedisKeys::new(p).by_band).await),
        expected.by_band,
        "votes:by_band"
    );
    assert_eq!(
        ints(hash(RedisKeys::new(p).by_album).await),
        expected.by_album,
        "votes:by_album"
    );
    assert_eq!(
        ints(hash(RedisKeys::new(p).by_route).await),
        expected.by_route,
        "votes:by_route"
    );
    let sums: HashMap<String, f64> = hash(RedisKeys::new(p).rank_sum_by_album)
        .await
        .into_iter()
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    assert_eq!(sums, expected.rank_sum, "rank:sum_by_album");
    assert_eq!(
        hash(RedisKeys::new(p).rank_avg_by_album).await,
        expected.averages(),
        "rank:avg_by_album"
    );

    let logs = world.logs().await;
    let docs: Vec<LogDocument> = logs.find(doc! {}).await.unwrap().try_collect().await.unwrap();
    assert_eq!(docs.len(), votes.len(), "one log per vote");
    let logged: HashSet<String> = docs.into_iter().map(|d| d.id).collect();
    let sent: HashSet<String> = votes.iter().map(|v| v.id.to_string()).collect();
    assert!(logged == sent, "every vote logged under its id, and nothing else");
}
