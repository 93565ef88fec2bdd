//! `votestream recount`: the audit a contest organiser runs before announcing
//! the winner (DESIGN.md, "Recount"). It takes one consistent snapshot of the
//! live counters and of the offsets they were counted up to, replays the
//! votes topic from its beginning up to those offsets into a scratch key
//! prefix with the consumer's own rules (the same batches, the same script),
//! compares every counter and average, prints the differences and says
//! whether there are any. Votes may keep flowing meanwhile: what was counted
//! after the snapshot is not compared.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_redis::redis::{self, AsyncCommands};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::config::RecountSettings;
use crate::consumer::{Batcher, ConsumerMetrics, Entry, RedisWriter, Sink, WriteFailure};
use crate::kafka_options::PassThrough;
use crate::schema::redis::{RedisKeys, Standings, offsets_field, offsets_partition, standings_digest};
use crate::stores::redis_pool;
use crate::vote::VoteRecord;

/// Every counter the rules keep, as read at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// `consumer:offsets`: the last offset counted per partition field.
    pub offsets: BTreeMap<String, i64>,
    pub scalars: BTreeMap<&'static str, i64>,
    pub hashes: BTreeMap<&'static str, BTreeMap<String, String>>,
}

impl Counters {
    /// Reads them all in one MULTI, so they belong together.
    pub async fn read(conn: &mut impl redis::aio::ConnectionLike, keys: &RedisKeys) -> redis::RedisResult<Counters> {
        let scalars = scalar_keys(keys);
        let hashes = hash_keys(keys);
        let mut pipe = redis::pipe();
        pipe.atomic().hgetall(&keys.offsets);
        for (_, key) in &scalars {
            pipe.get(key);
        }
        for (_, key) in &hashes {
            pipe.hgetall(key);
        }
        let (offsets, rest): (BTreeMap<String, i64>, Vec<redis::Value>) = {
            let mut values: Vec<redis::Value> = pipe.query_async(conn).await?;
            let offsets = redis::from_redis_value(values.remove(0))?;
            (offsets, values)
        };
        let mut rest = rest.into_iter();
        let mut c = Counters {
            offsets,
            ..Counters::default()
        };
        for (name, _) in scalars {
            let value: Option<i64> = redis::from_redis_value(rest.next().unwrap_or(redis::Value::Nil))?;
            c.scalars.insert(name, value.unwrap_or(0));
        }
        for (name, _) in hashes {
            let value: BTreeMap<String, String> = redis::from_redis_value(rest.next().unwrap_or(redis::Value::Nil))?;
            c.hashes.insert(name, value);
        }
        Ok(c)
    }

    /// The standings these counters certify ([`standings_digest`]).
    pub fn standings(&self) -> Standings {
        let ints = |name: &str| -> BTreeMap<String, i64> {
            self.hashes
                .get(name)
                .map(|h| {
                    h.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.parse().ok()?)))
                        .collect()
                })
                .unwrap_or_default()
        };
        Standings {
            by_band: ints("votes:by_band"),
            by_album: ints("votes:by_album"),
            rank_sum: ints("rank:sum_by_album"),
        }
    }

    /// Every difference between `self` (live) and `recounted`, one line
    /// each; empty when they agree.
    pub fn differences(&self, recounted: &Counters) -> Vec<String> {
        let mut out = Vec::new();
        for (name, live) in &self.scalars {
            let again = recounted.scalars.get(name).copied().unwrap_or(0);
            if *live != again {
                out.push(format!("{name}: live {live}, recount {again}"));
            }
        }
        let empty = BTreeMap::new();
        for (name, live) in &self.hashes {
            let again = recounted.hashes.get(name).unwrap_or(&empty);
            for field in live.keys().chain(again.keys().filter(|k| !live.contains_key(*k))) {
                let (a, b) = (live.get(field), again.get(field));
                if a != b {
                    let show = |v: Option<&String>| v.map_or("(none)".to_owned(), Clone::clone);
                    out.push(format!("{name}[{field}]: live {}, recount {}", show(a), show(b)));
                }
            }
        }
        out
    }
}

fn scalar_keys(keys: &RedisKeys) -> [(&'static str, &str); 3] {
    [
        ("votes:total", &keys.total),
        ("votes:received", &keys.received),
        ("voters:total", &keys.voters_total),
    ]
}

fn hash_keys(keys: &RedisKeys) -> [(&'static str, &str); 6] {
    [
        ("votes:by_band", &keys.by_band),
        ("votes:by_album", &keys.by_album),
        ("votes:by_route", &keys.by_route),
        ("votes:by_outcome", &keys.by_outcome),
        ("rank:sum_by_album", &keys.rank_sum_by_album),
        ("rank:avg_by_album", &keys.rank_avg_by_album),
    ]
}

/// What a recount found.
#[derive(Debug)]
pub struct Report {
    pub live: Counters,
    pub recounted: Counters,
    /// Records replayed per partition (dead letters included).
    pub replayed: BTreeMap<i32, i64>,
    pub differences: Vec<String>,
}

impl Report {
    /// The text `votestream recount` prints.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let upto: Vec<String> = self.live.offsets.iter().map(|(f, o)| format!("{f}@{o}")).collect();
        let _ = writeln!(s, "recount up to the offsets counted live: {}", upto.join(" "));
        let replayed: i64 = self.replayed.values().sum();
        let _ = writeln!(s, "records replayed: {replayed}");
        for (name, value) in &self.recounted.scalars {
            let _ = writeln!(s, "{name}: {value}");
        }
        let _ = writeln!(s, "live digest:    {}", standings_digest(&self.live.standings()));
        let _ = writeln!(s, "recount digest: {}", standings_digest(&self.recounted.standings()));
        if self.differences.is_empty() {
            let _ = writeln!(s, "no differences: every counter and average agrees");
        } else {
            let _ = writeln!(s, "{} differences:", self.differences.len());
            for d in &self.differences {
                let _ = writeln!(s, "  {d}");
            }
        }
        s
    }
}

/// Runs a recount (see the module docs).
pub async fn recount(settings: &RecountSettings) -> anyhow::Result<Report> {
    let live_keys = RedisKeys::new(&settings.redis.redis_key_prefix);
    let scratch_prefix = match &settings.scratch_prefix {
        Some(p) => p.clone(),
        None => format!("{}recount:{}:", settings.redis.redis_key_prefix, uuid::Uuid::now_v7()),
    };
    anyhow::ensure!(
        scratch_prefix != settings.redis.redis_key_prefix,
        "--scratch-prefix must differ from the live --redis-key-prefix"
    );
    let scratch_keys = RedisKeys::new(&scratch_prefix);
    let pool = redis_pool(&settings.redis.redis_url, Duration::from_secs(10)).context("redis")?;
    let mut conn = pool.get().await.context("redis: connecting")?;
    let taken: usize = conn.exists(scratch_keys.all()).await.context("redis")?;
    anyhow::ensure!(taken == 0, "the scratch prefix {scratch_prefix:?} already holds keys");
    let live = Counters::read(&mut conn, &live_keys)
        .await
        .context("redis: reading the live counters")?;
    let topic = &settings.kafka.votes_topic;
    let limits: BTreeMap<i32, i64> = live
        .offsets
        .iter()
        .filter_map(|(field, &offset)| Some((offsets_partition(topic, field)?, offset)))
        .filter(|&(_, offset)| offset >= 0)
        .collect();

    let window = settings.contest.window()?;
    let dedup_ms = i64::try_from(settings.dedup_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let writer = RedisWriter::new(
        &settings.redis.redis_url,
        scratch_keys.clone(),
        window.script_window(dedup_ms),
        Arc::new(ConsumerMetrics::new()),
    );
    let result = replay(settings, &writer, &limits).await;
    let recounted = Counters::read(&mut conn, &scratch_keys)
        .await
        .context("redis: reading the recount");
    if !settings.keep_scratch {
        let _: redis::RedisResult<()> = conn.del(scratch_keys.all()).await;
    }
    let replayed = result?;
    let mut recounted = recounted?;
    // The recount's offsets are its own; compare counters only.
    recounted.offsets = live.offsets.clone();
    let differences = live.differences(&recounted);
    Ok(Report {
        live,
        recounted,
        replayed,
        differences,
    })
}

/// Reads every partition from offset 0 up to its limit and applies the
/// records in batches as the consumer does.
async fn replay(
    settings: &RecountSettings,
    writer: &RedisWriter,
    limits: &BTreeMap<i32, i64>,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let topic = &settings.kafka.votes_topic;
    let mut replayed: BTreeMap<i32, i64> = limits.keys().map(|&p| (p, 0)).collect();
    if limits.is_empty() {
        return Ok(replayed);
    }
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka.kafka_brokers)
        .set("group.id", format!("votestream-recount-{}", uuid::Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .pass_through(&settings.kafka.kafka_options)
        .create()
        .context("kafka: creating the reader")?;
    let mut assignment = TopicPartitionList::new();
    for &p in limits.keys() {
        let (low, _) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("kafka: watermarks of {topic}/{p}"))?;
        anyhow::ensure!(
            low == 0,
            "{topic}/{p} no longer starts at offset 0 (it starts at {low}: retention deleted records), so it cannot be recounted"
        );
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment).context("kafka: assigning partitions")?;

    let conn = writer.connect().await.map_err(anyhow::Error::msg)?;
    let mut batcher = Batcher::new(settings.batch_max_records.max(1), Duration::from_secs(3600));
    let mut handed_out: BTreeMap<i32, i64> = BTreeMap::new();
    let mut open: BTreeMap<i32, i64> = limits.clone();
    let mut seq = 0;
    let rules = settings.rules.rules();
    while !open.is_empty() {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .context("kafka: no record for 30 s before the counted offsets were reached")?
            .context("kafka")?;
        let (p, offset) = (msg.partition(), msg.offset());
        let Some(&limit) = open.get(&p) else { continue };
        if offset > limit {
            open.remove(&p);
            continue;
        }
        let vote: Option<VoteRecord> = msg.payload().and_then(|b| VoteRecord::decode(b, &rules).ok());
        batcher.push(
            Entry {
                partition: p,
                offset,
                vote,
            },
            tokio::time::Instant::now(),
        );
        *replayed.entry(p).or_default() += 1;
        if offset >= limit {
            open.remove(&p);
        }
        if batcher.is_full() || open.is_empty() {
            seq += 1;
            // The scratch prefix starts empty: a partition's first batch follows offset -1.
            let batch = batcher.take(seq, topic, |p, last| Some(handed_out.insert(p, last).unwrap_or(-1)));
            match writer.write(conn.clone(), Arc::new(batch)).await {
                Ok(_) => {}
                Err(WriteFailure::Io(e)) => anyhow::bail!("{e}"),
                Err(WriteFailure::Refused(e)) => anyhow::bail!("redis: {e}"),
            }
        }
    }
    tracing::debug!(fields = ?limits.keys().map(|&p| offsets_field(topic, p)).collect::<Vec<_>>(), "replayed");
    Ok(replayed)
}
