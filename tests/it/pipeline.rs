//! Helpers for tests that run the real `votestream` binary against the local
//! stack: a per-test world (topics, consumer group, Redis prefix, Mongo
//! database), a vote generator with known totals, process control and checks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use votestream::schema::redis::{Outcome, RedisKeys, average_of, rank_micros};

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
    /// The `--voting-closes-at` of the world's consumers ([`CLOSES_MS`]).
    pub closes_at: chrono::DateTime<Utc>,
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
            closes_at: chrono::DateTime::from_timestamp_millis(CLOSES_MS).unwrap(),
        }
    }

    /// Starts `votestream consumer` for this world; its log goes to `dir/consumer-N.log`.
    pub fn spawn_consumer(&self, n: usize, extra_env: &[(&str, &str)]) -> ConsumerProcess {
        let port = free_port();
        let mut cmd = self.command("consumer", &format!("consumer-{n}.log"));
        cmd.env("CONSUMER_HTTP_ADDR", format!("127.0.0.1:{port}"));
        cmd.env("VOTING_CLOSES_AT", votestream::vote::format_instant(&self.closes_at));
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
        let closes = votestream::vote::format_instant(&self.closes_at);
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
            ("--voting-closes-at", &closes),
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

    /// `votes:received`: the records decided so far (0 when unreachable or unset).
    pub async fn redis_received(&self) -> i64 {
        self.redis_int(RedisKeys::new(&self.prefix).received).await
    }

    async fn redis_int(&self, key: String) -> i64 {
        let Ok(client) = redis::Client::open(self.redis_url.as_str()) else {
            return -1;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return -1;
        };
        let value: Option<i64> = redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap_or(None);
        value.unwrap_or(0)
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

/// The contest every world's records are judged by: votes are received
/// from [`T0_MS`] on, one millisecond apart, and voting closes at
/// [`CLOSES_MS`]; the last records of a sequence are received after it.
pub const T0_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
/// `--voting-closes-at` of every world's consumers: some 14 hours after
/// [`T0_MS`], less than the dedup window, so a retry after the close of a
/// vote counted before it is still a duplicate.
pub const CLOSES_MS: i64 = T0_MS + 50_000_000;
/// The dedup window the worlds' consumers use (the default).
pub const DEDUP_MS: i64 = 86_400_000;

/// The reference model: plain Rust over the sent sequence, in send order
/// (a voter's records, and a vote id's, share a key, hence a partition, so
/// Kafka keeps their order), predicting every counter, average and outcome
/// the pipeline must reach (DESIGN.md, "Outcomes").
#[derive(Debug, Default, PartialEq)]
pub struct Expected {
    pub closes_ms: Option<i64>,
    pub total: i64,
    pub received: i64,
    pub voters: i64,
    pub by_band: HashMap<String, i64>,
    pub by_album: HashMap<String, i64>,
    pub by_route: HashMap<String, i64>,
    /// In millionths of a point.
    pub rank_sum: HashMap<String, i64>,
    pub by_outcome: HashMap<String, i64>,
    /// Every record's (vote id, outcome), in send order.
    pub outcomes: Vec<(String, Outcome)>,
    seen: HashMap<uuid::Uuid, i64>,
    ratings: HashMap<(String, String), i64>,
    voter_set: HashSet<String>,
}

impl Expected {
    pub fn closing_at(closes: chrono::DateTime<Utc>) -> Expected {
        Expected {
            closes_ms: Some(closes.timestamp_millis()),
            ..Expected::default()
        }
    }

    /// Judges the next record of the sequence.
    pub fn add(&mut self, v: &VoteRecord) -> Outcome {
        let t = v.received_at.timestamp_millis();
        let album = v.album_key();
        let micros = rank_micros(v.rank);
        let outcome = if self.seen.get(&v.id).is_some_and(|&at| t - at <= DEDUP_MS) {
            Outcome::Duplicate
        } else if self.closes_ms.is_some_and(|c| t >= c) {
            Outcome::Late
        } else if let Some(voter) = &v.voter {
            match self.ratings.insert((voter.clone(), album.clone()), micros) {
                Some(old) => {
                    *self.rank_sum.entry(album.clone()).or_default() += micros - old;
                    Outcome::Changed
                }
                None => {
                    self.voter_set.insert(voter.clone());
                    Outcome::Counted
                }
            }
        } else {
            Outcome::Counted
        };
        if outcome == Outcome::Counted {
            self.total += 1;
            *self.by_band.entry(v.name.clone()).or_default() += 1;
            *self.by_album.entry(album.clone()).or_default() += 1;
            *self.rank_sum.entry(album).or_default() += micros;
        }
        if matches!(outcome, Outcome::Counted | Outcome::Changed) {
            self.seen.insert(v.id, t);
        }
        self.voters = self.voter_set.len() as i64;
        self.received += 1;
        *self.by_route.entry(v.route.as_str().to_owned()).or_default() += 1;
        *self.by_outcome.entry(outcome.as_str().to_owned()).or_default() += 1;
        self.outcomes.push((v.id.to_string(), outcome));
        outcome
    }

    /// The average rank per album as the consumer must store it: 2 decimals.
    pub fn averages(&self) -> HashMap<String, String> {
        self.by_album
            .iter()
            .map(|(album, &n)| (album.clone(), average_of(self.rank_sum[album], n)))
            .collect()
    }
}

/// `n` records of a contest: a quarter anonymous (some with a request id),
/// the rest from a pool of `n / 20` voters (at least 10) rating the bands'
/// albums again and again (so ratings change), about 5 % retries (a request
/// sent again with its request id, a little later: a duplicate), and the
/// last 3 % received after the close (late, or duplicates of votes counted
/// before it). Ranks are in tenths, spread over 0..=10, and both routes.
/// Returns them with what they must count ([`Expected`]).
pub fn votes(n: usize) -> (Vec<VoteRecord>, Expected) {
    let mut expected = Expected::closing_at(chrono::DateTime::from_timestamp_millis(CLOSES_MS).unwrap());
    let late_from = n * 97 / 100;
    let rules = Rules::default();
    let pool = (n / 20).max(10);
    let mut records: Vec<VoteRecord> = Vec::with_capacity(n);
    for i in 0..n {
        let base = if i >= late_from { CLOSES_MS } else { T0_MS };
        let at = chrono::DateTime::from_timestamp_millis(base + i as i64).unwrap();
        // Every 20th record (from the 40th on) resends an earlier request that had a request id.
        if i >= 40 && i % 20 == 7 {
            let original = records[i - 32].clone();
            if original.request_id.is_some() {
                let retry = VoteRecord {
                    received_at: at,
                    ..original
                };
                expected.add(&retry);
                records.push(retry);
                continue;
            }
        }
        let (band, albums) = BANDS[(i * 7) % BANDS.len()];
        let album = albums[(i / 3) % 2];
        let rank = ((i * 37) % 101) as f64 / 10.0;
        let route = if i % 3 == 0 { Route::Grpc } else { Route::Http };
        // The i-th record's place among the voters' records (every 4th record is anonymous).
        let j = i - i / 4;
        let voter = (i % 4 != 0).then(|| format!("voter-{:05}", (j * 7_919) % pool));
        let request = (i % 2 == 1).then(|| format!("req-{i}"));
        let v = Vote::new(band, album, 1990 + (i % 30) as i64, rank, &rules)
            .unwrap()
            .with_ids(voter.as_deref(), request.as_deref())
            .unwrap()
            .stamp(route, at);
        expected.add(&v);
        records.push(v);
    }
    (records, expected)
}

/// Produces records as the ingress does (key = the voter, or the vote id)
/// and waits for every delivery.
pub async fn produce(topic: &str, records: &[VoteRecord]) {
    let payloads: Vec<(String, Vec<u8>)> = records.iter().map(|v| (v.key(), v.to_json())).collect();
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

/// Waits until Redis has decided `received` records (or fails after `limit`).
pub async fn wait_for_received(world: &World, received: i64, limit: Duration) {
    let started = std::time::Instant::now();
    crate::common::eventually(&format!("votes:received = {received}"), limit, || async {
        (world.redis_received().await == received).then_some(())
    })
    .await;
    eprintln!(
        "redis decided {received} records after {:.1} s",
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
    let conn = world.redis().await;
    let keys = RedisKeys::new(&world.prefix);
    let int = |key: String| {
        let mut conn = conn.clone();
        async move {
            let v: Option<i64> = redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap();
            v.unwrap_or(0)
        }
    };
    assert_eq!(int(keys.total.clone()).await, expected.total, "votes:total");
    assert_eq!(int(keys.received.clone()).await, expected.received, "votes:received");
    assert_eq!(int(keys.voters_total.clone()).await, expected.voters, "voters:total");
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
    for (key, expected, name) in [
        (&keys.by_band, &expected.by_band, "votes:by_band"),
        (&keys.by_album, &expected.by_album, "votes:by_album"),
        (&keys.by_route, &expected.by_route, "votes:by_route"),
        (&keys.rank_sum_by_album, &expected.rank_sum, "rank:sum_by_album"),
        (&keys.by_outcome, &expected.by_outcome, "votes:by_outcome"),
    ] {
        assert_eq!(&ints(hash(key.clone()).await), expected, "{name}");
    }
    assert_eq!(
        hash(keys.rank_avg_by_album.clone()).await,
        expected.averages(),
        "rank:avg_by_album"
    );

    let logs = world.logs().await;
    let docs: Vec<LogDocument> = logs.find(doc! {}).await.unwrap().try_collect().await.unwrap();
    assert_eq!(docs.len(), votes.len(), "one log per record");
    let mut logged: Vec<(String, Outcome)> = docs
        .into_iter()
        .map(|d| (d.vote_id.unwrap_or_default(), d.outcome))
        .collect();
    let mut sent = expected.outcomes.clone();
    logged.sort();
    sent.sort();
    assert!(
        logged == sent,
        "every record logged once, under its vote id, with the outcome the model gives it"
    );
}
