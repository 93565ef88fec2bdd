//! The Kafka reader actor: reads `votes`, decodes and validates each record
//! (bad ones go to the dead-letter topic), forms batches by count and time,
//! hands each batch to both sinks and commits offsets once both have written
//! it, in partition order. A batch leaves when it is full, when it is old
//! enough, or as soon as no further record is ready while fewer batches than
//! the Mongo logger's writers are in flight (adaptive batching: at once under
//! light load, sized by the sinks' pace under load, full in a drain).
//!
//! Backpressure: at most `mailbox_capacity` batches are in flight and each
//! sink's actix channel holds one more, so every `Addr::send` finds room and
//! batches enter both mailboxes in dispatch order (order matters: the Redis
//! script is fenced by offsets);
//! when the sinks fall behind the limit is reached and the reader stops taking
//! records; if that lasts (a sink is down), the assigned partitions are paused
//! (the consumer keeps polling, so it stays in its group). Memory stays
//! bounded by one open batch and librdkafka's capped prefetch.
//!
//! Where to start reading a partition is chosen in `rebalance.rs`. If the
//! Redis script finds Redis behind a batch (it lost data), the reader drains
//! what is in flight and seeks every partition back the same way ("rewind").

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::time::Instant;

use super::batch::{Batcher, Entry, SharedBatch};
use super::commit::CommitTracker;
use super::metrics::ConsumerMetrics;
use super::mongo_sink::MongoLogger;
use super::rebalance::{PartitionStart, ReaderContext, Rebalanced};
use super::redis_sink::RedisAggregator;
use super::sink::{Backoff, SinkError, WriteBatch, Written};
use crate::config::ConsumerSettings;
use crate::redis_keys::RedisKeys;
use crate::vote::{Rules, VoteRecord};

/// Everything the reader needs, cloned into each incarnation of its loop.
#[derive(Clone)]
pub struct ReaderConfig {
    pub brokers: String,
    pub topic: String,
    pub dlq_topic: String,
    pub group: String,
    pub redis_url: String,
    pub keys: RedisKeys,
    pub rules: Rules,
    pub batch_max_records: usize,
    pub batch_max_wait: Duration,
    pub max_in_flight: usize,
    /// A batch that is not due leaves when nothing more is ready only while
    /// fewer batches than this are in flight (the Mongo logger's writers).
    pub eager_in_flight: usize,
    /// Before each restart of the reader and each retry of a dead letter; the sinks' too.
    pub backoff: Backoff,
}

impl ReaderConfig {
    pub fn from_settings(s: &ConsumerSettings) -> ReaderConfig {
        ReaderConfig {
            brokers: s.kafka.kafka_brokers.clone(),
            topic: s.kafka.votes_topic.clone(),
            dlq_topic: s.kafka.dlq_topic.clone(),
            group: s.consumer.consumer_group.clone(),
            redis_url: s.redis.redis_url.clone(),
            keys: RedisKeys::new(&s.redis.redis_key_prefix),
            rules: s.rules.rules(),
            batch_max_records: s.consumer.batch_max_records,
            batch_max_wait: Duration::from_millis(s.consumer.batch_max_wait_ms),
            max_in_flight: s.consumer.mailbox_capacity.max(1),
            eager_in_flight: s.consumer.mongo_writers.clamp(1, s.consumer.mailbox_capacity.max(1)),
            backoff: Backoff::new(
                Duration::from_millis(s.consumer.restart_backoff_min_ms),
                Duration::from_millis(s.consumer.restart_backoff_max_ms),
            ),
        }
    }
}

pub struct KafkaReader {
    /// What each incarnation of the read loop starts from.
    run: ReadLoop,
    /// Told once the reader has drained and committed after shutdown.
    finished: watch::Sender<bool>,
    backoff: Backoff,
}

impl KafkaReader {
    pub fn new(
        config: ReaderConfig,
        redis: Addr<RedisAggregator>,
        mongo: Addr<MongoLogger>,
        metrics: Arc<ConsumerMetrics>,
        shutdown: watch::Receiver<bool>,
        finished: watch::Sender<bool>,
    ) -> KafkaReader {
        let backoff = config.backoff.clone();
        KafkaReader {
            run: ReadLoop {
                config,
                redis,
                mongo,
                metrics,
                shutdown,
            },
            finished,
            backoff,
        }
    }
}

impl Actor for KafkaReader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let delay = self.backoff.delay();
        let run = self.run.clone();
        ctx.spawn(
            async move {
                tokio::time::sleep(delay).await;
                let started = Instant::now();
                (run.run().await, started.elapsed())
            }
            .into_actor(self)
            .map(|(result, ran), act, ctx| match result {
                // Drained after shutdown: stay idle (stopping would only restart us).
                Ok(()) => {
                    let _ = act.finished.send(true);
                }
                Err(error) => {
                    tracing::warn!(actor = "kafka_reader", %error, "reader failed; restarting");
                    act.backoff.failed_after(ran);
                    ConsumerMetrics::set_up(&act.run.metrics.kafka_up, false);
                    ctx.stop();
                }
            }),
        );
    }
}

impl Supervised for KafkaReader {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.run.metrics.restarted("kafka_reader");
    }
}

type InFlight = Pin<Box<dyn Future<Output = (u64, Result<Written, SinkError>, Result<Written, SinkError>)>>>;

#[derive(Clone)]
struct ReadLoop {
    config: ReaderConfig,
    redis: Addr<RedisAggregator>,
    mongo: Addr<MongoLogger>,
    metrics: Arc<ConsumerMetrics>,
    shutdown: watch::Receiver<bool>,
}

/// The loop's state besides the Kafka clients.
struct State {
    batcher: Batcher,
    tracker: CommitTracker,
    /// Per partition, the last offset handed to the sinks.
    prev: BTreeMap<i32, i64>,
    /// Per partition, the lowest offset still to be read: anything below it
    /// (a record fetched before a seek) is not taken twice.
    next: BTreeMap<i32, i64>,
    /// Per partition, what Redis had stored at assignment: poison records at
    /// or below it were dead-lettered before and are not sent again.
    dlq_done: BTreeMap<i32, i64>,
    in_flight: FuturesUnordered<InFlight>,
    next_seq: u64,
    paused: bool,
    /// Since when the open batch has been full with no room in flight.
    blocked_since: Option<Instant>,
    rewind: bool,
    /// The latest committable offset per partition, committed again at shutdown.
    committable: BTreeMap<i32, i64>,
    /// Offsets that advanced since the last commit, and when the next commit may go.
    uncommitted: BTreeMap<i32, i64>,
    commit_at: Option<Instant>,
}

impl State {
    /// Records where each partition starts: the offset before it was handed
    /// out, and what Redis had (for dead letters already sent).
    fn start_at(&mut self, starts: &[PartitionStart]) {
        for s in starts {
            self.prev.insert(s.partition, s.start - 1);
            self.next.insert(s.partition, s.start);
            self.dlq_done.insert(s.partition, s.redis_stored);
        }
    }
}

impl ReadLoop {
    fn consumer(&self) -> KafkaResult<StreamConsumer<ReaderContext>> {
        let context = ReaderContext {
            topic: self.config.topic.clone(),
            redis_url: self.config.redis_url.clone(),
            keys: self.config.keys.clone(),
            metrics: self.metrics.clone(),
            events: Mutex::new(Vec::new()),
        };
        ClientConfig::new()
            .set("bootstrap.servers", &self.config.brokers)
            .set("group.id", &self.config.group)
            // Offsets are committed by the reader, only after both sinks wrote a batch.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // A killed consumer's partitions move to the others within 10 s, not Kafka 4's 45 s.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "2000")
            // Caps what librdkafka prefetches, so memory stays bounded whatever the backlog:
            // 4 MiB is some 16 batches of votes, and one fetch may overshoot it by fetch.max.bytes.
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.max.bytes", "4194304")
            // Feeds the lag gauge and Kafka's readiness.
            .set("statistics.interval.ms", "2000")
            .create_with_context(context)
    }

    fn dlq_producer(&self) -> KafkaResult<FutureProducer> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
    }

    async fn run(self) -> Result<(), KafkaError> {
        let consumer = self.consumer()?;
        let dlq = self.dlq_producer()?;
        consumer.subscribe(&[&self.config.topic])?;
        let mut shutdown = self.shutdown.clone();
        let mut st = State {
            batcher: Batcher::new(self.config.batch_max_records, self.config.batch_max_wait),
            tracker: CommitTracker::default(),
            prev: BTreeMap::new(),
            next: BTreeMap::new(),
            dlq_done: BTreeMap::new(),
            in_flight: FuturesUnordered::new(),
            next_seq: 0,
            paused: false,
            blocked_since: None,
            rewind: false,
            committable: BTreeMap::new(),
            uncommitted: BTreeMap::new(),
            commit_at: None,
        };
        loop {
            if *shutdown.borrow() {
                break;
            }
            if st.rewind && st.in_flight.is_empty() {
                self.rewind(&consumer, &mut st).await?;
            }
            if st.commit_at.is_some_and(|t| Instant::now() >= t) {
                st.commit_at = None;
                let offsets = std::mem::take(&mut st.uncommitted);
                // Empty when a revoke took every partition that had advanced.
                if !offsets.is_empty() {
                    self.commit(&consumer, &offsets, CommitMode::Async);
                }
            }
            let can_dispatch = !st.rewind && st.in_flight.len() < self.config.max_in_flight;
            if can_dispatch && !st.batcher.is_empty() {
                // Adaptive batching: while the batch is not due, take what is ready
                // now; when nothing is, it leaves at once rather than at its age limit.
                let now = Instant::now();
                let ready = if st.batcher.is_due(now) {
                    None
                } else {
                    consumer.recv().now_or_never()
                };
                if let Some(received) = ready {
                    self.received(&consumer, &dlq, &mut st, received).await?;
                    continue;
                }
                let idle = st.in_flight.len() < self.config.eager_in_flight;
                if st.batcher.should_leave(now, false, idle) {
                    self.dispatch(&mut st);
                    continue;
                }
            }
            // While the open batch cannot be handed on, take no more records. A short
            // wait is the rhythm of a drain: the records librdkafka prefetched wait for
            // us. Only a long one (a sink is down) pauses the partitions, and then the
            // consumer is polled again, so it stays in its group. Pausing drops the
            // prefetched records and resuming fetches them again: paused for every wait,
            // a 1M backlog drained at 5k votes/s instead of 20k in release.
            let blocked = st.rewind || (!can_dispatch && st.batcher.is_full());
            let now = Instant::now();
            if !blocked {
                st.blocked_since = None;
            }
            let pause_at = blocked.then(|| *st.blocked_since.get_or_insert(now) + PAUSE_AFTER);
            let pause_due = st.rewind || pause_at.is_some_and(|t| now >= t);
            self.set_paused(&consumer, &mut st, pause_due);
            let pause_timer = pause_at.filter(|_| !pause_due);
            let deadline = st.batcher.deadline().filter(|_| can_dispatch);
            tokio::select! {
                _ = shutdown.changed() => {}
                Some((seq, redis, mongo)) = st.in_flight.next(), if !st.in_flight.is_empty() => {
                    self.metrics.in_flight_batches.set(st.in_flight.len() as i64);
                    self.completed(&mut st, seq, redis, mongo);
                }
                _ = sleep_until(deadline), if deadline.is_some() => {}
                _ = sleep_until(pause_timer), if pause_timer.is_some() => {}
                _ = sleep_until(st.commit_at), if st.commit_at.is_some() => {}
                received = consumer.recv(), if !blocked || pause_due => {
                    self.received(&consumer, &dlq, &mut st, received).await?;
                }
            }
            self.apply_rebalances(&consumer, &mut st);
        }
        self.drain(&consumer, &mut st).await;
        Ok(())
    }

    /// What one `recv` gave: assignment changes first, then the record.
    async fn received(
        &self,
        consumer: &StreamConsumer<ReaderContext>,
        dlq: &FutureProducer,
        st: &mut State,
        received: KafkaResult<BorrowedMessage<'_>>,
    ) -> Result<(), KafkaError> {
        self.apply_rebalances(consumer, st);
        match received {
            Ok(msg) => self.take_record(dlq, st, &msg).await,
            Err(error) => {
                tracing::warn!(%error, "kafka consumer error");
                Ok(())
            }
        }
    }

    /// Applies assignment changes reported by the rebalance callback.
    fn apply_rebalances(&self, consumer: &StreamConsumer<ReaderContext>, st: &mut State) {
        for event in consumer.context().take() {
            match event {
                Rebalanced::Revoked(partitions) => {
                    st.tracker.forget(partitions.iter().copied());
                    for p in &partitions {
                        st.prev.remove(p);
                        st.next.remove(p);
                        st.dlq_done.remove(p);
                        st.committable.remove(p);
                        st.uncommitted.remove(p);
                    }
                    st.batcher.retain(|e| !partitions.contains(&e.partition));
                    st.paused = false;
                }
                Rebalanced::Assigned(starts) => {
                    st.start_at(&starts);
                    // A new assignment is not paused.
                    st.paused = false;
                }
            }
        }
    }

    async fn take_record(
        &self,
        dlq: &FutureProducer,
        st: &mut State,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(), KafkaError> {
        self.metrics.records_read.inc();
        let (partition, offset) = (msg.partition(), msg.offset());
        match st.next.get(&partition) {
            None => return Ok(()),                         // no longer ours
            Some(&next) if offset < next => return Ok(()), // already taken
            Some(_) => {}
        }
        st.next.insert(partition, offset + 1);
        let vote = match VoteRecord::decode(msg.payload().unwrap_or_default(), &self.config.rules) {
            Ok(vote) => Some(vote),
            Err(reason) => {
                if offset > st.dlq_done.get(&partition).copied().unwrap_or(-1) {
                    self.dead_letter(dlq, msg, &reason).await?;
                }
                None
            }
        };
        st.batcher.push(
            Entry {
                partition,
                offset,
                vote,
            },
            Instant::now(),
        );
        Ok(())
    }

    /// Sends a record that cannot be counted to the dead-letter topic, with
    /// the reason and origin in headers; returns once Kafka has it.
    async fn dead_letter(
        &self,
        dlq: &FutureProducer,
        msg: &BorrowedMessage<'_>,
        reason: &str,
    ) -> Result<(), KafkaError> {
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "origin.topic",
                value: Some(msg.topic()),
            })
            .insert(Header {
                key: "origin.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "origin.offset",
                value: Some(&offset),
            });
        let key = format!("{}/{}/{}", msg.topic(), partition, offset);
        let payload = msg.payload().unwrap_or_default();
        let mut backoff = self.config.backoff.clone();
        loop {
            let record = FutureRecord::to(&self.config.dlq_topic)
                .key(&key)
                .payload(payload)
                .headers(headers.clone());
            match dlq.send(record, Duration::from_secs(10)).await {
                Ok(_) => {
                    self.metrics.dlq_records.inc();
                    tracing::warn!(partition = msg.partition(), offset = msg.offset(), %reason, "record dead-lettered");
                    return Ok(());
                }
                Err((error, _)) => {
                    tracing::warn!(%error, "dead-letter produce failed; retrying");
                    tokio::time::sleep(backoff.delay()).await;
                }
            }
        }
    }

    fn dispatch(&self, st: &mut State) {
        st.next_seq += 1;
        let batch: SharedBatch = Arc::new(st.batcher.take(st.next_seq, &self.config.topic, &mut st.prev));
        self.metrics.batch_size.observe(batch.entries.len() as f64);
        st.tracker
            .dispatched(batch.seq, batch.ranges.iter().map(|r| (r.partition, r.last)));
        // Both sends are created now, in dispatch order; there is room in both
        // mailboxes because in-flight batches never exceed their capacity.
        let to_redis = self.redis.send(WriteBatch(batch.clone()));
        let to_mongo = self.mongo.send(WriteBatch(batch.clone()));
        let seq = batch.seq;
        st.in_flight.push(Box::pin(async move {
            let (redis, mongo) = futures_util::future::join(to_redis, to_mongo).await;
            let flatten = |r: Result<Result<Written, SinkError>, MailboxError>| r.unwrap_or(Err(SinkError::Stopped));
            (seq, flatten(redis), flatten(mongo))
        }));
        self.metrics.in_flight_batches.set(st.in_flight.len() as i64);
    }

    fn completed(
        &self,
        st: &mut State,
        seq: u64,
        redis: Result<Written, SinkError>,
        mongo: Result<Written, SinkError>,
    ) {
        match (redis, mongo) {
            (Ok(_), Ok(_)) => {
                let advanced = st.tracker.confirmed(seq);
                if !advanced.is_empty() {
                    st.committable.extend(&advanced);
                    st.uncommitted.extend(&advanced);
                    st.commit_at.get_or_insert_with(|| Instant::now() + COMMIT_EVERY);
                }
            }
            (redis, mongo) => {
                for e in [redis.err(), mongo.err()].into_iter().flatten() {
                    tracing::warn!(error = %e, seq, "batch not written; re-reading from what Redis and Kafka hold");
                }
                st.rewind = true;
            }
        }
    }

    fn commit(&self, consumer: &StreamConsumer<ReaderContext>, offsets: &BTreeMap<i32, i64>, mode: CommitMode) {
        let mut tpl = TopicPartitionList::new();
        for (&p, &next) in offsets {
            let _ = tpl.add_partition_offset(&self.config.topic, p, Offset::Offset(next));
        }
        if let Err(error) = consumer.commit(&tpl, mode) {
            tracing::warn!(%error, "offset commit failed; a later commit or a replay covers it");
        }
    }

    fn set_paused(&self, consumer: &StreamConsumer<ReaderContext>, st: &mut State, pause: bool) {
        if pause == st.paused {
            return;
        }
        let Ok(assignment) = consumer.assignment() else { return };
        let result = if pause {
            consumer.pause(&assignment)
        } else {
            consumer.resume(&assignment)
        };
        match result {
            Ok(()) => st.paused = pause,
            Err(error) => tracing::warn!(%error, pause, "pause/resume failed"),
        }
    }

    /// After a batch was refused: everything in flight has come back; seek
    /// every assigned partition to where Redis and Kafka say to start.
    async fn rewind(&self, consumer: &StreamConsumer<ReaderContext>, st: &mut State) -> Result<(), KafkaError> {
        self.metrics.rewinds.inc();
        st.batcher.clear();
        st.tracker.clear();
        let mut tpl = consumer.assignment()?;
        let starts = consumer.context().choose_starts(consumer, &mut tpl);
        st.start_at(&starts);
        for e in tpl.elements() {
            consumer.seek(e.topic(), e.partition(), e.offset(), Duration::from_secs(10))?;
        }
        st.rewind = false;
        self.set_paused(consumer, st, false);
        tracing::info!("rewound to Redis's and Kafka's offsets");
        Ok(())
    }

    /// Shutdown: hand on what was read, wait for the sinks, commit synchronously.
    async fn drain(&self, consumer: &StreamConsumer<ReaderContext>, st: &mut State) {
        if !st.batcher.is_empty() && !st.rewind {
            self.dispatch(st);
        }
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some((seq, redis, mongo)) = st.in_flight.next().await {
                self.completed(st, seq, redis, mongo);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("sinks did not finish within {DRAIN_TIMEOUT:?}; those batches will be read again");
        }
        if !st.committable.is_empty() {
            self.commit(consumer, &st.committable, CommitMode::Sync);
        }
        tracing::info!(committed = ?st.committable, "reader drained");
    }
}

/// Offsets are committed at most this often: with adaptive batching a trickle
/// of votes makes many small batches, and a commit per batch (a hundred a
/// second) kept the group coordinator so busy that heartbeats timed out.
/// A later commit covers the earlier ones; a crash replays at most this much
/// more, which the Redis fence and the logs' `_id` make harmless.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// How long the reader may wait for room in flight before it pauses its partitions.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// How long shutdown waits for in-flight batches (Kubernetes' grace period is longer).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
