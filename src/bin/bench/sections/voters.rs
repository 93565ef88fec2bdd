//! The contest backlog (issue 14): records from many voters, 30 % of them
//! changed ratings and 5 % retries, drained by the consumer against the
//! slowest raw sink, and the Redis memory the rules keep (each voter's
//! ratings, the set of voters, the remembered vote ids), at a tenth of the
//! voters and at all of them, to show how it grows.

use deadpool_redis::redis;
use votestream::schema::redis::RedisKeys;

use super::{repeated, step};
use crate::report::Report;
use crate::stack::Stack;
use crate::{Args, data, drain, raw, settings};

/// What the rules keep in Redis after a contest backlog.
struct Memory {
    ratings: i64,
    voters: i64,
    seen: i64,
    /// `MEMORY USAGE ... SAMPLES 10000` of `voters:ratings`, `voters:seen`, `votes:seen`.
    ratings_bytes: i64,
    voters_bytes: i64,
    seen_bytes: i64,
    /// `INFO memory` `used_memory` after the drain minus before the backlog.
    used_delta: i64,
}

pub async fn contest(args: &Args, stack: &Stack, report: &mut Report) -> anyhow::Result<()> {
    let full = (args.voters_backlog, args.voters);
    let tenth = (args.voters_backlog / 10, (args.voters / 10).max(1));
    for (backlog, voters) in [tenth, full] {
        step(&format!(
            "producing a contest backlog of {backlog} records from {voters} voters"
        ));
        let topic = stack.topic("contest", 6).await?;
        let producer = raw::producer(stack, &topic)?;
        let mut conn = stack.redis().await?;
        let before = used_memory(&mut conn).await?;
        let chunk = 100_000;
        for start in (0..backlog).step_by(chunk) {
            let records: Vec<_> = (start..backlog.min(start + chunk))
                .map(|i| data::contest_vote(i, voters))
                .collect();
            raw::produce_with(&producer, &records).await?;
        }
        if (backlog, voters) == full {
            raw_sinks(args, stack, report, backlog, voters).await?;
        }
        let reps = if (backlog, voters) == full { args.reps() } else { 1 };
        let mut memory = None;
        let rates = repeated(
            reps,
            &format!("contest drain, {voters} voters"),
            "records/s",
            async || {
                let how = drain::Drain {
                    keep_counters: memory.is_none(),
                    ..drain::Drain::default()
                };
                let drained = drain::drain(stack, &topic, how, &format!("contest-{voters}")).await?;
                if memory.is_none() {
                    let keys = RedisKeys::new(&drained.prefix);
                    memory = Some(measure(&mut conn, &keys, before).await?);
                    stack.delete_prefix(&drained.prefix).await;
                }
                Ok(drained.votes_per_s)
            },
        )
        .await?;
        stack.delete_topic(&topic).await;
        let m = memory.expect("the first run measures");
        eprintln!(
            "  {} ratings from {} voters, {} vote ids remembered; MEMORY USAGE ratings {} B, voters {} B, ids {} B; used_memory +{} B",
            m.ratings, m.voters, m.seen, m.ratings_bytes, m.voters_bytes, m.seen_bytes, m.used_delta
        );
        let per = |bytes: i64, n: i64| bytes as f64 / n.max(1) as f64;
        let at = format!("{voters} voters");
        report.add(
            format!("contest.bytes_per_voter_{voters}"),
            format!("Redis per voter (their ratings and set entry), {at}"),
            "B",
            vec![per(m.ratings_bytes + m.voters_bytes, m.voters)],
        );
        report.add(
            format!("contest.bytes_per_rating_{voters}"),
            format!("Redis per current rating (voters:ratings), {at}"),
            "B",
            vec![per(m.ratings_bytes, m.ratings)],
        );
        report.add(
            format!("contest.bytes_per_dedup_entry_{voters}"),
            format!("Redis per remembered vote id (votes:seen), {at}"),
            "B",
            vec![per(m.seen_bytes, m.seen)],
        );
        report.add(
            format!("contest.used_memory_mib_{voters}"),
            format!("Redis used_memory growth over the contest backlog ({backlog} records), {at}"),
            "MiB",
            vec![m.used_delta as f64 / 1_048_576.0],
        );
        if (backlog, voters) == full {
            report.add(
                "contest.drain_records_per_s",
                format!("consumer drain of {backlog} contest records from {voters} voters (30 % changes, 5 % retries)"),
                "records/s",
                rates,
            );
        }
    }
    super::against_slowest_of(
        report,
        "contest.drain_records_per_s",
        "contest_drain",
        "contest drain",
        [
            ("Redis", "contest.raw_redis_apply"),
            ("Mongo", "contest.raw_mongo_insert"),
        ],
    );
    // Beside it, against the raw section's figures (anonymous votes, 100
    // batches into a fresh collection), when that section ran too.
    let slowest = super::slowest_of(report, super::RAW_SINKS);
    if let (Some((_, slowest)), Some(drain)) = (slowest, report.median("contest.drain_records_per_s")) {
        report.add(
            "contest.drain_vs_raw_section",
            "contest drain / slowest sink of the raw section (anonymous votes, fresh collection)",
            "x",
            vec![drain / slowest],
        );
    }
    Ok(())
}

/// The sinks' raw limits for this very contest: its `backlog` records in the
/// consumer's batches, applied by the Redis script under a fresh prefix (the
/// rules decide each against the ratings so far), and their logs inserted
/// into one fresh collection, as many as the drain writes. Writing a million
/// logs into one collection is slower than the raw section's 100 batches into
/// a fresh one (the indexes grow), so the drain is judged against the same
/// work. The Mongo writers: the best of 1, 2, 4 and 8 over the first 100
/// batches, then that many over all of them.
async fn raw_sinks(
    args: &Args,
    stack: &Stack,
    report: &mut Report,
    backlog: usize,
    voters: usize,
) -> anyhow::Result<()> {
    let batch_size = settings::consumer()?.consumer.batch_max_records;
    let n = (backlog / batch_size).max(1);
    let records = |i| data::contest_vote(i, voters);
    let batches = data::batches_of(n, batch_size, 6, "contest", records);
    let reps = args.reps();
    let runs = repeated(reps, "raw Redis apply of the contest", "records/s", async || {
        raw::redis(stack, &batches).await
    })
    .await?;
    report.add(
        "contest.raw_redis_apply",
        format!("raw Redis apply.lua of the contest ({n} batches of {batch_size})"),
        "records/s",
        runs,
    );
    let first = &batches[..n.min(100)];
    let mut best = (1, 0.0);
    for writers in super::MONGO_WRITERS {
        let rate = raw::mongo(stack, first, writers).await?;
        eprintln!(
            "  raw Mongo insert of the contest's first {} logs, {writers} writer(s): {rate:.0} docs/s",
            first.len() * batch_size
        );
        if rate > best.1 {
            best = (writers, rate);
        }
    }
    let writers = best.0;
    let runs = repeated(reps, "raw Mongo insert of the contest's logs", "docs/s", async || {
        raw::mongo(stack, &batches, writers).await
    })
    .await?;
    report.add(
        "contest.raw_mongo_insert",
        format!(
            "raw Mongo insert_many of the contest's {} logs into one collection, {writers} writers",
            n * batch_size
        ),
        "docs/s",
        runs,
    );
    Ok(())
}

/// Fields `MEMORY USAGE` averages over: every field (`SAMPLES 0`) of a hash of
/// a million takes longer than a Redis reply may.
const MEMORY_SAMPLES: i64 = 10_000;

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<i64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("INFO memory has no used_memory"))
}

async fn measure(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &RedisKeys,
    before: i64,
) -> anyhow::Result<Memory> {
    let usage = async |conn: &mut redis::aio::MultiplexedConnection, key: &str| -> anyhow::Result<i64> {
        let bytes: Option<i64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(MEMORY_SAMPLES)
            .query_async(conn)
            .await?;
        Ok(bytes.unwrap_or(0))
    };
    let ratings: i64 = redis::cmd("HLEN").arg(&keys.ratings).query_async(conn).await?;
    let voters: i64 = redis::cmd("SCARD").arg(&keys.voters_seen).query_async(conn).await?;
    let seen: i64 = redis::cmd("HLEN").arg(&keys.votes_seen).query_async(conn).await?;
    Ok(Memory {
        ratings,
        voters,
        seen,
        ratings_bytes: usage(conn, &keys.ratings).await?,
        voters_bytes: usage(conn, &keys.voters_seen).await?,
        seen_bytes: usage(conn, &keys.votes_seen).await?,
        used_delta: used_memory(conn).await? - before,
    })
}
