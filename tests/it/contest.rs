//! The contest's rules end to end (DESIGN.md, "Outcomes"): a sequence of
//! voters' ratings, changes, retries, anonymous votes and late records must
//! reach exactly what the reference model ([`crate::pipeline::Expected`])
//! predicts, through every failure at once, and `votestream recount` must
//! agree with the result, and notice when it is tampered with.

use std::process::Stdio;
use std::time::Duration;

use deadpool_redis::redis;
use votestream::schema::redis::RedisKeys;

use crate::common::eventually;
use crate::consumer::{HEAVY, progress_past};
use crate::pipeline::{World, assert_exact, produce, votes, wait_for_received};

/// Deletes every key of the world's prefix at once (one script: atomic),
/// as a Redis restarted without persistence would lose them.
async fn wipe(world: &World) {
    let mut conn = world.redis().await;
    let wiped: i64 = redis::Script::new(
        "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('DEL', k) end return n",
    )
    .arg(format!("{}*", world.prefix))
    .invoke_async(&mut conn)
    .await
    .expect("wipe");
    assert!(wiped > 0, "the wipe deleted the counters");
}

/// `votestream recount` for the world: its exit code and what it printed.
fn recount(world: &World) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_votestream"))
        .args([
            "recount",
            "--kafka-brokers",
            &crate::common::kafka_brokers(),
            "--votes-topic",
            &world.topic.name,
            "--redis-url",
            &world.redis_url,
            "--redis-key-prefix",
            &world.prefix,
            "--voting-closes-at",
            &votestream::vote::format_instant(&world.closes_at),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run votestream recount");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn a_contest_matches_the_reference_model_through_kills_a_redis_wipe_and_a_pair_and_recounts_the_same() {
    let _turn = HEAVY.lock().await;
    let world = World::new("contest").await;
    let n = 100_000;
    let (records, expected) = votes(n);
    eprintln!(
        "model: {} received, {} current ratings, {} voters, outcomes {:?}",
        expected.received, expected.total, expected.voters, expected.by_outcome
    );
    assert_eq!(expected.voters, 5_000, "5,000 voters");
    for outcome in ["counted", "changed", "duplicate", "late"] {
        assert!(
            expected.by_outcome[outcome] >= 1_000,
            "the sequence has {outcome} records"
        );
    }
    produce(&world.topic.name, &records).await;
    let small = [("BATCH_MAX_RECORDS", "250")];

    // Two consumers in one group; one is killed midway.
    let mut a = world.spawn_consumer(0, &small);
    let mut b = world.spawn_consumer(1, &small);
    let seen = progress_past(&world, 10_000).await;
    b.kill9();
    eprintln!("pair: second consumer SIGKILLed at {seen} decided");

    // Three SIGKILLs of the consumer, with a wipe of Redis between the first two.
    for (round, kill) in (2..).zip(1..=3) {
        let seen = progress_past(&world, world.redis_received().await + 4_000).await;
        a.kill9();
        eprintln!("SIGKILL {kill} at {seen} decided");
        assert!(seen < n as i64, "killed mid-backlog");
        if kill == 1 {
            wipe(&world).await;
            eprintln!("redis wiped");
        }
        a = world.spawn_consumer(round, &small);
    }
    wait_for_received(&world, n as i64, Duration::from_secs(600)).await;
    assert_exact(&world, &expected, &records).await;
    assert!(a.terminate().success());

    let (code, report) = recount(&world);
    eprintln!("{report}");
    assert_eq!(code, 0, "the recount agrees: {report}");
    assert!(report.contains("no differences"), "{report}");

    // A live counter tampered with: the recount names it and fails.
    let mut conn = world.redis().await;
    let keys = RedisKeys::new(&world.prefix);
    let _: i64 = redis::cmd("HINCRBY")
        .arg(&keys.by_band)
        .arg("Alux Nahual")
        .arg(3)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (code, report) = recount(&world);
    assert_eq!(code, 1, "a tampered counter is a difference: {report}");
    assert!(report.contains("votes:by_band[Alux Nahual]"), "{report}");
    let scratch: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}recount:*", world.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(scratch.is_empty(), "the recount leaves no scratch keys: {scratch:?}");
    world.clean().await;
}

#[tokio::test]
async fn after_the_close_the_result_turns_final_once_everything_produced_is_counted_and_its_digest_is_the_recounts() {
    let _turn = HEAVY.lock().await;
    let world = World::new("final").await;
    let n = 3_000;
    let (records, expected) = votes(n);
    produce(&world.topic.name, &records).await;
    // The world's close is long past: the end offsets are taken at once.
    let consumer = world.run_consumer(&["--final-grace-secs", "0"]);
    wait_for_received(&world, n as i64, Duration::from_secs(300)).await;
    assert_exact(&world, &expected, &records).await;
    let keys = RedisKeys::new(&world.prefix);
    let mut conn = world.redis().await;
    let status: std::collections::HashMap<String, String> =
        eventually("contest:status final", Duration::from_secs(30), || {
            let mut conn = conn.clone();
            let key = keys.contest_status.clone();
            async move {
                let status: std::collections::HashMap<String, String> =
                    redis::cmd("HGETALL").arg(key).query_async(&mut conn).await.ok()?;
                (status.get("status").map(String::as_str) == Some("final")).then_some(status)
            }
        })
        .await;
    assert_eq!(
        status.get("closes_at"),
        Some(&votestream::vote::format_instant(&world.closes_at))
    );
    let end: std::collections::BTreeMap<String, i64> = redis::cmd("HGETALL")
        .arg(&keys.contest_end)
        .query_async(&mut conn)
        .await
        .unwrap();
    let high = world.high_watermarks();
    assert_eq!(end.len(), high.len(), "an end offset per partition");
    for (partition, offset) in &high {
        let field = votestream::schema::redis::offsets_field(&world.topic.name, *partition);
        assert_eq!(end.get(&field), Some(offset), "{field}: its high watermark");
    }
    consumer.stop().await.expect("a clean stop");

    let live = votestream::recount::Counters::read(&mut conn, &keys).await.unwrap();
    let digest = votestream::schema::redis::standings_digest(&live.standings());
    let (code, report) = recount(&world);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains(&format!("recount digest: {digest}")), "{report}");
    world.clean().await;
}
