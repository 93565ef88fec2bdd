//! End-to-end latency: from a vote's `received_at` (stamped by the ingress)
//! to the moment Redis holds it, with the real ingress and consumer binaries
//! running together under a steady, paced gRPC load.
//!
//! "Applied" is observed from outside: a thread polls the `consumer:offsets`
//! hash (written by the same atomic script as the counters) about once a
//! millisecond and notes when each partition's offset moves. Afterwards the
//! topic is read back: a record at (partition, offset) was applied at the
//! first poll that saw its partition at or past that offset. Resolution:
//! the poll interval plus `received_at`'s millisecond truncation, ~2 ms.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use deadpool_redis::redis::{self, Commands};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use votestream::schema::redis::RedisKeys;
use votestream::vote::VoteRecord;

use crate::ingress::{self, Ingress, percentile};
use crate::stack::{Stack, unique};

pub struct Paced {
    pub rate: f64,
    pub batch: usize,
    pub window: Duration,
}

pub struct Window {
    pub achieved_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub votes: usize,
}

/// Per partition, (offset, when first seen) in the order seen.
type Applied = BTreeMap<i32, Vec<(i64, SystemTime)>>;

fn poll_offsets(url: String, key: String, stop: Arc<AtomicBool>) -> anyhow::Result<Applied> {
    let mut conn = redis::Client::open(url.as_str())?.get_connection()?;
    let mut applied = Applied::new();
    let mut last: HashMap<i32, i64> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let stored: HashMap<String, i64> = conn.hgetall(&key)?;
        let now = SystemTime::now();
        for (field, offset) in stored {
            let Some(partition) = field.rsplit_once('/').and_then(|(_, p)| p.parse().ok()) else {
                continue;
            };
            if last.insert(partition, offset) != Some(offset) {
                applied.entry(partition).or_default().push((offset, now));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(applied)
}

/// Every record of `topic` in `[from, to)` per partition.
async fn read_back(
    stack: &Stack,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    to: &BTreeMap<i32, i64>,
) -> anyhow::Result<Vec<(i32, i64, VoteRecord)>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("group.id", unique("e2e-read"))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut wanted = 0;
    for (&p, &start) in from {
        let end = to.get(&p).copied().unwrap_or(start);
        if end > start {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            wanted += end - start;
        }
    }
    consumer.assign(&tpl)?;
    let mut records = Vec::new();
    while (records.len() as i64) < wanted {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;
        let (p, o) = (msg.partition(), msg.offset());
        if o < to.get(&p).copied().unwrap_or(0) {
            let vote: VoteRecord = serde_json::from_slice(msg.payload().unwrap_or_default())?;
            records.push((p, o, vote));
        }
    }
    Ok(records)
}

/// Runs `reps` paced windows through ingress and consumer; one result per window.
pub async fn run(stack: &Stack, load: &Paced, reps: usize) -> anyhow::Result<Vec<Window>> {
    let topic = stack.topic("e2e", 6).await?;
    let group = unique("e2e-group");
    let prefix = stack.prefix("e2e");
    let database = stack.database("e2e");
    let env = stack.consumer_env(&topic, &group, &prefix, &stack.mongodb_uri, &database)?;
    let mut consumer = stack.spawn_votestream(&["consumer"], &env, "e2e-consumer")?;
    let ingress = Ingress::start(stack, &topic, "e2e-ingress").await?;
    let mut redis = stack.redis().await?;

    // Warm-up: the consumer joins its group and every connection is open.
    let (mut sent, _) = ingress::paced(&ingress, load.rate, load.batch, Duration::from_secs(2)).await?;
    wait_for_total(stack, &mut redis, &prefix, sent as i64, &mut consumer).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (url, key, stop) = (stack.redis_url.clone(), RedisKeys::new(&prefix).offsets, stop.clone());
        std::thread::spawn(move || poll_offsets(url, key, stop))
    };
    let mut windows = Vec::new();
    for _ in 0..reps {
        let before = stack.high_watermarks(&topic)?;
        let (accepted, failed) = ingress::paced(&ingress, load.rate, load.batch, load.window).await?;
        anyhow::ensure!(failed == 0, "{failed} paced requests failed");
        sent += accepted;
        wait_for_total(stack, &mut redis, &prefix, sent as i64, &mut consumer).await?;
        windows.push((before, stack.high_watermarks(&topic)?, accepted));
    }
    stop.store(true, Ordering::Relaxed);
    let applied = poller
        .join()
        .map_err(|_| anyhow::anyhow!("the offsets poller panicked"))??;
    drop(ingress);
    consumer.terminate()?;

    let mut results = Vec::new();
    for (before, after, accepted) in windows {
        let mut ms = Vec::new();
        for (p, o, vote) in read_back(stack, &topic, &before, &after).await? {
            let seen = applied
                .get(&p)
                // Offsets only grow, so the first change at or past `o` is found by bisection.
                .and_then(|changes| changes.get(changes.partition_point(|(offset, _)| *offset < o)))
                .map(|&(_, at)| DateTime::<Utc>::from(at));
            let at = seen.ok_or_else(|| anyhow::anyhow!("record {p}/{o} never seen applied"))?;
            ms.push((at - vote.received_at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        results.push(Window {
            achieved_per_s: accepted as f64 / load.window.as_secs_f64(),
            p50_ms: percentile(&ms, 0.50),
            p99_ms: percentile(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or(f64::NAN),
            votes: ms.len(),
        });
    }
    stack.delete_topic(&topic).await;
    stack.delete_prefix(&prefix).await;
    stack.drop_database(&database).await;
    Ok(results)
}

async fn wait_for_total(
    stack: &Stack,
    redis: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    total: i64,
    consumer: &mut crate::stack::Process,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while stack.redis_received(redis, prefix).await < total {
        consumer.ensure_running("the consumer")?;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "Redis did not count {total} votes within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
