//! The consumer against the real stack: exact totals in Redis and Mongo, and
//! committed offsets at the end of every partition, through normal draining,
//! crashes, restarts of its stores, two consumers and poison records.

use std::time::Duration;
use votestream::schema::redis::{Outcome, RedisKeys};

use crate::common::eventually;
use crate::pipeline::{ConsumerProcess, World, assert_exact, produce, produce_raw, votes, wait_for_received};
use harness::servers::{PrivateMongo, PrivateRedis};

/// Heavy tests share 2 cores; one at a time keeps each well inside its limits.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_hundred_thousand_votes_are_counted_and_logged_exactly() {
    let _turn = HEAVY.lock().await;
    let world = World::new("drain").await;
    let (records, expected) = votes(100_000);
    produce(&world.topic.name, &records).await;
    let consumer = world.run_consumer(&[]);
    wait_for_received(&world, 100_000, Duration::from_secs(600)).await;
    assert_exact(&world, &expected, &records).await;
    consumer.stop().await.expect("a clean stop");
    world.clean().await;
}

/// Waits until Redis has decided more than `floor` records and returns how many.
pub async fn progress_past(world: &World, floor: i64) -> i64 {
    eventually(
        &format!("votes:received past {floor}"),
        Duration::from_secs(180),
        || async {
            let total = world.redis_received().await;
            (total > floor).then_some(total)
        },
    )
    .await
}

#[tokio::test]
async fn a_consumer_killed_three_times_while_draining_still_counts_exactly() {
    let _turn = HEAVY.lock().await;
    let world = World::new("kill9").await;
    let n = 60_000;
    let (records, expected) = votes(n);
    produce(&world.topic.name, &records).await;
    let small_batches = [("BATCH_MAX_RECORDS", "250")];
    let mut floor = 0;
    for round in 0..3 {
        let mut consumer = world.spawn_consumer(round, &small_batches);
        let seen = progress_past(&world, floor + 3_000).await;
        consumer.kill9();
        assert!(
            seen < n as i64,
            "round {round}: killed mid-backlog ({seen} of {n} counted)"
        );
        floor = world.redis_received().await;
        eprintln!("round {round}: SIGKILL with {floor} of {n} counted");
    }
    let mut consumer = world.spawn_consumer(3, &small_batches);
    wait_for_received(&world, n as i64, Duration::from_secs(300)).await;
    assert_exact(&world, &expected, &records).await;
    assert!(consumer.terminate().success());
    world.clean().await;
}

#[tokio::test]
async fn redis_and_mongo_restarts_while_draining_lose_and_double_count_nothing() {
    let _turn = HEAVY.lock().await;
    let mut world = World::new("restarts").await;
    // Without persistence, the hardest case: Redis comes back empty, the
    // script reports a gap and the reader recounts from the log.
    let mut redis = PrivateRedis::start(&world.dir, false).expect("a private Redis");
    let mut mongo = PrivateMongo::start(&world.dir).expect("a private FerretDB");
    world.redis_url = redis.url();
    world.mongodb_uri = mongo.uri();
    let n = 40_000;
    let (records, expected) = votes(n);
    produce(&world.topic.name, &records).await;
    let mut consumer = world.spawn_consumer(0, &[("BATCH_MAX_RECORDS", "250")]);

    let seen = progress_past(&world, 3_000).await;
    redis.crash_and_restart(Duration::from_secs(2)).expect("Redis restarts");
    eprintln!("redis killed and restarted empty at {seen} counted");
    let floor = progress_past(&world, seen).await;
    mongo.crash();
    // Once the in-flight batches are stuck behind Mongo, reading stops.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let read_before = counter(
        &consumer.metrics().await.expect("metrics"),
        "votestream_consumer_records_read_total",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let read_after = counter(
        &consumer.metrics().await.expect("metrics"),
        "votestream_consumer_records_read_total",
    );
    let paused = world.redis_received().await;
    mongo.start_again().expect("FerretDB restarts");
    eprintln!(
        "mongo down at {floor} counted: reading paused at {read_before} read ({read_after} 2 s later), {paused} counted"
    );
    assert!(read_after - read_before <= 250.0, "reading pauses while Mongo is down");
    assert!(paused < n as i64, "mongo restarted mid-backlog");

    wait_for_received(&world, n as i64, Duration::from_secs(300)).await;
    assert_exact(&world, &expected, &records).await;
    let metrics = consumer.metrics().await.expect("metrics");
    for actor in ["redis_aggregator", "mongo_logger"] {
        let restarts = counter(
            &metrics,
            &format!("votestream_consumer_actor_restarts_total{{actor=\"{actor}\"}}"),
        );
        assert!(restarts >= 1.0, "{actor} restarted (metrics say {restarts})");
    }
    assert!(
        counter(&metrics, "votestream_consumer_rewinds_total") >= 1.0,
        "the lost counts were re-read"
    );
    let peak = consumer.peak_rss_mib().expect("peak RSS");
    eprintln!("consumer peak RSS {peak:.1} MiB");
    assert!(peak < 512.0, "memory stays bounded: peak RSS {peak:.1} MiB");
    assert!(consumer.terminate().success());
}

#[tokio::test]
async fn two_consumers_in_one_group_with_one_killed_midway_count_exactly() {
    let _turn = HEAVY.lock().await;
    let world = World::new("pair").await;
    let n = 40_000;
    let (records, expected) = votes(n);
    produce(&world.topic.name, &records).await;
    let batches = [("BATCH_MAX_RECORDS", "250")];
    let mut first = world.spawn_consumer(0, &batches);
    let mut second = world.spawn_consumer(1, &batches);
    let seen = progress_past(&world, 8_000).await;
    first.kill9();
    eprintln!("first consumer killed at {seen} counted");
    assert!(seen < n as i64);
    wait_for_received(&world, n as i64, Duration::from_secs(300)).await;
    assert_exact(&world, &expected, &records).await;
    assert!(second.terminate().success());
    world.clean().await;
}

/// A consumer's `/metrics`, once it answers.
async fn metrics_of(consumer: &ConsumerProcess) -> String {
    eventually("the consumer's /metrics", Duration::from_secs(60), || {
        consumer.metrics()
    })
    .await
}

#[tokio::test]
async fn a_static_member_restarted_within_the_session_timeout_takes_no_partition_from_the_other() {
    let _turn = HEAVY.lock().await;
    let world = World::new("static").await;
    let n = 60_000;
    let (records, expected) = votes(n);
    produce(&world.topic.name, &records).await;
    let settings = |name: &'static str| {
        [
            ("BATCH_MAX_RECORDS", "250"),
            ("GROUP_INSTANCE_ID", name),
            // Room for a restart on a busy machine.
            ("SESSION_TIMEOUT_MS", "30000"),
        ]
    };
    let mut first = world.spawn_consumer(0, &settings("first"));
    let mut second = world.spawn_consumer(1, &settings("second"));
    let owned = |metrics: &str| counter(metrics, "votestream_consumer_partitions_owned ");
    // Both hold some of the six partitions, and the group has settled.
    let (first_owned, baseline) = eventually("both consumers to own partitions", Duration::from_secs(120), || async {
        let (a, b) = (first.metrics().await?, second.metrics().await?);
        (owned(&a) > 0.0 && owned(&b) > 0.0 && owned(&a) + owned(&b) == 6.0)
            .then(|| (owned(&a), counter(&a, "votestream_consumer_partitions_revoked_total ")))
    })
    .await;

    let seen = progress_past(&world, 10_000).await;
    assert!(second.terminate().success(), "clean exit on SIGTERM");
    eprintln!("second consumer restarted at {seen} counted; the first owns {first_owned} partitions");
    let second = world.spawn_consumer(2, &settings("second"));
    wait_for_received(&world, n as i64, Duration::from_secs(300)).await;
    assert_exact(&world, &expected, &records).await;

    let (a, b) = (metrics_of(&first).await, metrics_of(&second).await);
    assert_eq!(
        counter(&a, "votestream_consumer_partitions_revoked_total "),
        baseline,
        "the first consumer gave up no partition during the restart"
    );
    assert_eq!(owned(&a), first_owned, "and kept all of its own");
    assert_eq!(
        owned(&b),
        6.0 - first_owned,
        "the restarted one got its partitions back"
    );
    assert!(first.terminate().success());
    drop(second);
    world.clean().await;
}

/// A consumer stopped while it is still joining its group (its assignment
/// arrives mid-close) exits instead of hanging in librdkafka's close. It is
/// stopped a few milliseconds after it starts, at several moments; a SIGTERM
/// that beats the process's signal handler ends it by the signal, which is
/// no hang either. Only a hang trips the guard; how long the exit takes is
/// measured nowhere.
#[tokio::test]
async fn a_static_member_stopped_while_it_joins_the_group_exits() {
    use std::os::unix::process::ExitStatusExt;

    let _turn = HEAVY.lock().await;
    let world = World::new("join-stop").await;
    for (round, wait_ms) in [10_u64, 30, 60, 100, 150, 250].into_iter().enumerate() {
        let mut consumer = world.spawn_consumer(round, &[("GROUP_INSTANCE_ID", "joining")]);
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        harness::send_term(consumer.child.id()).expect("SIGTERM");
        let exited = consumer.exited("the consumer to exit", Duration::from_secs(90)).await;
        assert!(
            exited.success() || exited.signal() == Some(15),
            "round {round} (SIGTERM after {wait_ms} ms): {exited}"
        );
    }
    world.clean().await;
}

/// Two consumers started under one `--group-instance-id` (a mistake): the
/// broker fences the earlier one, which stops with an error that names the
/// setting instead of failing every commit from then on.
#[tokio::test]
async fn a_consumer_fenced_by_a_twin_with_its_instance_name_stops_with_a_clear_error() {
    let _turn = HEAVY.lock().await;
    let world = World::new("fenced").await;
    let (records, _) = votes(2_000);
    produce(&world.topic.name, &records).await;
    let twin = [("GROUP_INSTANCE_ID", "twin")];
    let mut first = world.spawn_consumer(0, &twin);
    progress_past(&world, 0).await;
    let mut second = world.spawn_consumer(1, &twin);
    let exited = first
        .exited("the fenced consumer to stop", Duration::from_secs(120))
        .await;
    let log = std::fs::read_to_string(world.dir.join("consumer-0.log")).expect("its log");
    assert!(!exited.success(), "a fenced consumer fails: {exited}\n{log}");
    assert!(log.contains("same --group-instance-id"), "{log}");
    assert!(second.terminate().success(), "the one that kept the name runs on");
    world.clean().await;
}

#[tokio::test]
async fn poison_records_go_to_the_dead_letter_topic_once_and_the_rest_is_counted() {
    let _turn = HEAVY.lock().await;
    let world = World::new("poison").await;
    let (records, expected) = votes(2_000);
    let valid = records[0].clone();
    let mut wrong_type = serde_json::to_value(&valid).unwrap();
    wrong_type["year"] = serde_json::json!("1997");
    let mut out_of_range = serde_json::to_value(&valid).unwrap();
    out_of_range["rank"] = serde_json::json!(11.5);
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"{not json".to_vec()),
        ("wrong types", serde_json::to_vec(&wrong_type).unwrap()),
        ("out of range", serde_json::to_vec(&out_of_range).unwrap()),
        ("empty value", Vec::new()),
    ];
    // Poison spread among the valid records: 4 kinds x 5 = 20 records.
    let mut mixed: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, v) in records.iter().enumerate() {
        if i % 100 == 0 {
            let (kind, bytes) = &poison[(i / 100) % poison.len()];
            mixed.push((format!("poison-{i}-{kind}"), bytes.clone()));
        }
        mixed.push((v.key(), v.to_json()));
    }
    let poison_count = mixed.len() - records.len();
    produce_raw(&world.topic.name, &mixed).await;

    let consumer = world.run_consumer(&["--batch-max-records", "100"]);
    wait_for_received(&world, records.len() as i64, Duration::from_secs(300)).await;
    assert_exact(&world, &expected, &records).await;

    let dead = read_all(&world.dlq.name, poison_count, Duration::from_secs(60)).await;
    assert_eq!(
        dead.len(),
        poison_count,
        "each poison record dead-lettered exactly once"
    );
    let mut origins = std::collections::HashSet::new();
    for (key, headers) in &dead {
        assert!(
            key.starts_with(&format!("{}/", world.topic.name)),
            "dlq key names the origin: {key}"
        );
        assert!(!headers["reason"].is_empty());
        assert!(headers.contains_key("origin.partition") && headers.contains_key("origin.offset"));
        origins.insert(key.clone());
    }
    assert_eq!(origins.len(), poison_count, "no record dead-lettered twice");
    let reasons: Vec<&str> = dead.iter().map(|(_, h)| h["reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("empty record value")));
    assert!(reasons.iter().any(|r| r.contains("not a vote record")));
    assert!(reasons.iter().any(|r| r.contains("rank")));

    let health = reqwest::get(format!("http://{}/healthz", consumer.addr)).await.unwrap();
    assert!(health.status().is_success(), "the consumer keeps running");
    consumer.stop().await.expect("a clean stop");
    world.clean().await;
}

#[tokio::test]
async fn sigterm_with_a_backlog_exits_cleanly_and_a_restart_finishes_exactly() {
    let _turn = HEAVY.lock().await;
    let world = World::new("sigterm").await;
    let n = 40_000;
    let (records, expected) = votes(n);
    produce(&world.topic.name, &records).await;
    let batches = [("BATCH_MAX_RECORDS", "250")];
    let mut consumer = world.spawn_consumer(0, &batches);
    progress_past(&world, 3_000).await;
    let status = consumer.terminate();
    let at_exit = world.redis_received().await;
    assert!(status.success(), "exit status {status:?}");
    assert!(at_exit < n as i64, "stopped with a backlog ({at_exit} of {n} counted)");
    eprintln!("SIGTERM: clean exit with {at_exit} of {n} counted");
    let mut consumer = world.spawn_consumer(1, &batches);
    wait_for_received(&world, n as i64, Duration::from_secs(300)).await;
    assert_exact(&world, &expected, &records).await;
    assert!(consumer.terminate().success());
    world.clean().await;
}

fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Reads a topic from the beginning until `expected` records arrived, then a
/// little longer to catch extras; returns (key, headers) per record.
async fn read_all(
    topic: &str,
    expected: usize,
    limit: Duration,
) -> Vec<(String, std::collections::HashMap<String, String>)> {
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers;
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", crate::common::kafka_brokers())
        .set("group.id", crate::common::unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let wait = if out.len() >= expected {
            Duration::from_secs(3)
        } else {
            deadline - tokio::time::Instant::now()
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((key, headers));
            }
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => return out,
        }
    }
}

/// The live page's feed: every counted vote once in `logs:tail`, in offset
/// order within each partition, through a SIGKILL of the consumer and a
/// Mongo outage (the stream keeps about 64 batches; this backlog is some 20).
#[tokio::test]
async fn the_live_tail_gets_each_vote_once_in_order_through_a_kill_and_a_mongo_outage() {
    use std::collections::{BTreeMap, HashMap};

    use deadpool_redis::redis;
    use futures_util::TryStreamExt;
    use votestream::schema::mongo::LogDocument;

    let _turn = HEAVY.lock().await;
    let mut world = World::new("tail").await;
    let mut mongo = PrivateMongo::start(&world.dir).expect("a private FerretDB");
    world.mongodb_uri = mongo.uri();
    let n = 5_000;
    let (records, expected) = votes(n);
    produce(&world.topic.name, &records).await;
    let small_batches = [("BATCH_MAX_RECORDS", "250")];
    let mut consumer = world.spawn_consumer(0, &small_batches);
    let seen = progress_past(&world, 1_000).await;
    consumer.kill9();
    eprintln!("consumer killed at {seen} counted");
    let mut consumer = world.spawn_consumer(1, &small_batches);
    let floor = progress_past(&world, seen).await;
    mongo.crash();
    tokio::time::sleep(Duration::from_secs(3)).await;
    mongo.start_again().expect("FerretDB restarts");
    eprintln!("mongo down for 3 s at {floor} counted");
    wait_for_received(&world, n as i64, Duration::from_secs(300)).await;
    assert_exact(&world, &expected, &records).await;

    // Read in pages: one long reply can outlast the client's response timeout.
    let mut conn = world.redis().await;
    let mut tail: Vec<(String, Vec<(String, String)>)> = Vec::new();
    loop {
        let from = tail.last().map_or_else(|| "-".to_owned(), |(id, _)| format!("({id}"));
        let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(RedisKeys::new(&world.prefix).logs_tail)
            .arg(from)
            .arg("+")
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await
            .expect("XRANGE logs:tail");
        if page.is_empty() {
            break;
        }
        tail.extend(page);
    }
    // A record is its vote id and receive time (a duplicate shares the id, not the time).
    let records_seen: Vec<(String, String)> = tail
        .iter()
        .flat_map(|(_, fields)| {
            let (_, logs) = fields
                .iter()
                .find(|(name, _)| name == votestream::schema::redis::LOGS_TAIL_FIELD)
                .expect("a logs field");
            let items: Vec<serde_json::Value> = serde_json::from_str(logs).expect("log items");
            items.into_iter().map(|item| {
                let field = |name: &str| item[name].as_str().expect(name).to_owned();
                assert!(item["outcome"].is_string(), "each item carries its outcome: {item}");
                (field("id"), field("received_at"))
            })
        })
        .collect();
    assert_eq!(records_seen.len(), n, "one entry per record, none twice");
    let unique: std::collections::HashSet<&(String, String)> = records_seen.iter().collect();
    assert_eq!(unique.len(), n);

    // Where each record sits in Kafka, from its log.
    let logs: Vec<LogDocument> = world
        .logs()
        .await
        .find(mongodb::bson::doc! {})
        .await
        .expect("find logs")
        .try_collect()
        .await
        .expect("read logs");
    let position: HashMap<(String, String), (i32, i64)> = logs
        .iter()
        .map(|d| {
            let at = chrono::DateTime::from_timestamp_millis(d.received_at.timestamp_millis()).unwrap();
            let key = (
                d.vote_id.clone().unwrap_or_default(),
                votestream::vote::format_instant(&at),
            );
            (key, (d.partition, d.offset))
        })
        .collect();
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for record in &records_seen {
        let (partition, offset) = position[record];
        let previous = last.insert(partition, offset).unwrap_or(-1);
        assert!(
            offset > previous,
            "partition {partition}: offset {offset} after {previous}"
        );
    }
    assert!(consumer.terminate().success());
    world.clean().await;
}

/// A crowd on the logs page (20 live streams, 20 clients paging ever deeper)
/// over 200,000 logs on FerretDB, which answers every page by scanning the
/// collection: the consumer's drain still completes exactly, and FerretDB's
/// memory stays bounded because the app never has more than
/// `--logs-max-queries` queries outstanding, each stops at its `maxTimeMS`,
/// and pages pause once FerretDB runs one out of time.
#[tokio::test]
async fn a_crowd_on_the_logs_page_neither_stops_the_drain_nor_grows_the_database() {
    use clap::Parser;
    use votestream::config::{Cli, Command};
    use votestream::logs::LogsApp;
    use votestream::schema::mongo::LogDocument;

    /// FerretDB's resident memory must stay under this.
    const RSS_BOUND_MIB: f64 = 1_024.0;
    let _turn = HEAVY.lock().await;
    let mut world = World::new("crowd").await;
    let mongo = PrivateMongo::start(&world.dir).expect("a private FerretDB");
    world.mongodb_uri = mongo.uri();

    // 200,000 logs already stored, in the consumer's shape.
    let logs = world.logs().await;
    let start = chrono::Utc::now().timestamp_millis() - 3_600_000;
    for chunk in 0..40_i64 {
        let docs: Vec<LogDocument> = (0..5_000_i64)
            .map(|i| {
                let n = chunk * 5_000 + i;
                let at = mongodb::bson::DateTime::from_millis(start + n);
                LogDocument {
                    id: LogDocument::position("votes", (n % 6) as i32, n),
                    vote_id: Some(uuid::Uuid::now_v7().to_string()),
                    voter: None,
                    outcome: Outcome::Counted,
                    received_at: at,
                    logged_at: at,
                    name: "Alux Nahual".into(),
                    album: "Alux Nahual".into(),
                    year: 1985,
                    rank: 7.0,
                    route: "grpc".into(),
                    partition: (n % 6) as i32,
                    offset: n,
                }
            })
            .collect();
        logs.insert_many(docs).await.expect("seed logs");
    }

    let n = 20_000;
    let (records, _) = votes(n);
    produce(&world.topic.name, &records).await;
    let args = [
        "votestream",
        "logs",
        "--logs-addr",
        "127.0.0.1:0",
        "--mongodb-uri",
        &world.mongodb_uri,
        "--mongodb-database",
        &world.database,
        "--redis-url",
        &world.redis_url,
        "--redis-key-prefix",
        &world.prefix,
    ];
    let Command::Logs(settings) = Cli::try_parse_from(args).expect("logs settings").command else {
        panic!("logs settings expected");
    };
    let app = LogsApp::build(&settings).await.expect("logs app");
    let base = format!("http://{}", app.addr());
    let (stop_app, app_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = app_stopped.await;
    }));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let http = reqwest::Client::new();
    let mut crowd = Vec::new();
    for _ in 0..20 {
        let (http, base, mut stopped) = (http.clone(), base.clone(), stopped.clone());
        crowd.push(tokio::spawn(async move {
            let mut logs = 0_usize;
            if let Ok(mut response) = http.get(format!("{base}/logs/stream")).send().await {
                loop {
                    tokio::select! {
                        _ = stopped.changed() => break,
                        chunk = response.chunk() => match chunk {
                            Ok(Some(bytes)) => logs += bytes.windows(10).filter(|w| w == b"event: log").count(),
                            _ => break,
                        },
                    }
                }
            }
            (logs, 0_usize, 0_usize)
        }));
    }
    for _ in 0..20 {
        let (http, base, stopped) = (http.clone(), base.clone(), stopped.clone());
        crowd.push(tokio::spawn(async move {
            let (mut answered, mut refused) = (0_usize, 0_usize);
            let mut path = "/logs?limit=50".to_owned();
            while !*stopped.borrow() {
                let Ok(response) = http.get(format!("{base}{path}")).send().await else {
                    continue;
                };
                if !response.status().is_success() {
                    refused += 1;
                    path = "/logs?limit=50".to_owned();
                    // As a page would, try again a moment later (a paused page is answered at once).
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                answered += 1;
                let page: serde_json::Value = response.json().await.unwrap_or_default();
                path = match page["next"].as_str() {
                    Some(cursor) => format!("/logs?limit=50&before={cursor}"),
                    None => "/logs?limit=50".to_owned(),
                };
            }
            (0_usize, answered, refused)
        }));
    }

    let mut consumer = world.spawn_consumer(0, &[]);
    let mut peak = 0.0_f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while world.redis_received().await < n as i64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the drain did not finish in 10 minutes"
        );
        peak = peak.max(mongo.pid().and_then(harness::memory::rss_mib).unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_for_received(&world, n as i64, Duration::from_secs(60)).await;
    // Logged too: the group committed the end of every partition (both sinks wrote it all).
    let (committed, ends) = (world.committed_reader(), world.high_watermarks());
    eventually("every offset committed", Duration::from_secs(120), || async {
        (committed.read().expect("committed offsets") == ends).then_some(())
    })
    .await;
    let _ = stop.send(true);
    let (mut streamed, mut answered, mut refused) = (0, 0, 0);
    for client in crowd {
        let (s, a, r) = client.await.expect("client");
        (streamed, answered, refused) = (streamed + s, answered + a, refused + r);
    }
    eprintln!(
        "crowd: {streamed} logs streamed, {answered} pages answered, {refused} refused; FerretDB peak RSS {peak:.0} MiB"
    );
    assert!(streamed > 0, "the live streams got the new logs");
    assert!(peak < RSS_BOUND_MIB, "FerretDB peak RSS {peak:.0} MiB");
    let logged = logs.count_documents(mongodb::bson::doc! {}).await.expect("count logs");
    assert_eq!(
        logged,
        200_000 + n as u64,
        "every new vote logged once, beside the 200,000"
    );
    assert!(consumer.terminate().success());
    let _ = stop_app.send(());
    server.await.expect("server task").expect("server stops cleanly");
    world.clean().await;
}
