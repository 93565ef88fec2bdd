//! Raw limits: each store alone, driven by the product's own clients with the
//! pipeline's record shape and batch size, nothing else running.
//!
//! - Kafka produce: the ingress's producer (idempotent, acks=all, its linger,
//!   batch and compression settings), a window of records in flight.
//! - Kafka consume: a consumer with the reader's settings, assigned every
//!   partition of the votes topic from the beginning (no group join), reading
//!   to the end.
//! - Redis: the aggregator's write (pre-aggregation plus one `apply.lua` call
//!   per batch), one batch after another, as the sink actor writes them.
//! - Mongo: the logger's write (one unordered `insert_many` per batch), with
//!   1, 2, 4 or 8 batches in flight at once (the logger keeps several).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use votestream::consumer::ConsumerMetrics;
use votestream::consumer::MongoWriter;
use votestream::consumer::RedisWriter;
use votestream::consumer::SharedBatch;
use votestream::consumer::{Sink, WriteFailure};
use votestream::ingress::VoteProducer;
use votestream::schema::redis::{RedisKeys, Window};
use votestream::vote::VoteRecord;

use crate::settings;
use crate::stack::Stack;

/// Records awaiting Kafka's acknowledgement at once (the producer's queue holds 100,000).
const PRODUCE_WINDOW: usize = 50_000;

/// The ingress's producer, producing to `topic`.
pub fn producer(stack: &Stack, topic: &str) -> anyhow::Result<VoteProducer> {
    let ingress = settings::ingress(&stack.brokers, topic)?;
    Ok(VoteProducer::new(&ingress.kafka, &ingress.ingress.producer)?)
}

/// Produces `records` to `topic` with a new producer of the ingress's; returns votes/s.
pub async fn produce(stack: &Stack, topic: &str, records: &[VoteRecord]) -> anyhow::Result<f64> {
    produce_with(&producer(stack, topic)?, records).await
}

/// Produces `records` with `producer`, a window of them in flight; returns votes/s.
pub async fn produce_with(producer: &VoteProducer, records: &[VoteRecord]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut failed = 0usize;
    for record in records {
        if in_flight.len() >= PRODUCE_WINDOW
            && let Some(result) = in_flight.next().await
        {
            failed += usize::from(Result::is_err(&result));
        }
        in_flight.push(producer.send(record));
    }
    while let Some(result) = in_flight.next().await {
        failed += usize::from(Result::is_err(&result));
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} records were not acknowledged",
        records.len()
    );
    Ok(records.len() as f64 / elapsed.as_secs_f64())
}

/// Reads all of `topic` from the beginning; returns records/s.
pub async fn consume(stack: &Stack, topic: &str) -> anyhow::Result<f64> {
    let ends = stack.high_watermarks(topic)?;
    let total: i64 = ends.values().sum();
    // The reader's fetch settings (src/consumer/reader/clients.rs); no group join: partitions are assigned.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("group.id", crate::stack::unique("raw-consume"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("queued.max.messages.kbytes", "16384")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for &p in ends.keys() {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    let started = Instant::now();
    consumer.assign(&tpl)?;
    let (mut read, mut bytes) = (0i64, 0usize);
    while read < total {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;
        bytes += msg.payload().map_or(0, <[u8]>::len);
        read += 1;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(bytes > 0, "empty records");
    Ok(read as f64 / elapsed.as_secs_f64())
}

fn failure(e: WriteFailure) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

/// Connects `writer`, then writes `batches` one after another as the sink actor
/// does; returns the votes written and the time the writes took (connecting aside).
async fn write_all<S: Sink>(writer: &S, batches: &[SharedBatch]) -> anyhow::Result<(usize, Duration)> {
    let conn = writer.connect().await.map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let mut votes = 0;
    for batch in batches {
        votes += writer.write(conn.clone(), batch.clone()).await.map_err(failure)?.votes;
    }
    Ok((votes, started.elapsed()))
}

/// The consumer's default dedup window (`--dedup-window-secs`), in ms.
const DEDUP_MS: i64 = 86_400_000;

/// Applies `batches` to Redis under a fresh prefix; returns votes/s.
pub async fn redis(stack: &Stack, batches: &[SharedBatch]) -> anyhow::Result<f64> {
    let prefix = stack.prefix("raw-redis");
    let writer = RedisWriter::new(
        &stack.redis_url,
        RedisKeys::new(&prefix),
        Window {
            dedup: DEDUP_MS,
            ..Window::default()
        },
        Arc::new(ConsumerMetrics::new()),
    );
    let (votes, elapsed) = write_all(&writer, batches).await?;
    stack.delete_prefix(&prefix).await;
    let expected: usize = batches.iter().map(|b| b.vote_count()).sum();
    anyhow::ensure!(votes == expected, "Redis counted {votes} of {expected} votes");
    Ok(votes as f64 / elapsed.as_secs_f64())
}

/// Inserts the log documents of `batches` into a fresh database, `writers`
/// batches in flight at once; returns documents/s.
pub async fn mongo(stack: &Stack, batches: &[SharedBatch], writers: usize) -> anyhow::Result<f64> {
    let database = stack.database("raw-mongo");
    let writer = MongoWriter::new(&stack.mongodb_uri, &database);
    let conn = writer.connect().await.map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let written: Vec<_> = futures_util::stream::iter(batches)
        .map(|batch| writer.write(conn.clone(), batch.clone()))
        .buffer_unordered(writers.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut docs = 0;
    for result in written {
        docs += result.map_err(failure)?.votes;
    }
    stack.drop_database(&database).await;
    let expected: usize = batches.iter().map(|b| b.vote_count()).sum();
    anyhow::ensure!(docs == expected, "Mongo inserted {docs} of {expected} documents");
    Ok(docs as f64 / elapsed.as_secs_f64())
}
