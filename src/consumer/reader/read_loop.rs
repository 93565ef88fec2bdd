//! The read loop: takes records, forms batches, hands each to both sinks,
//! commits what both wrote, holds back when they fall behind, rewinds when a
//! batch is refused, and drains on shutdown. One run lasts until shutdown or
//! the first Kafka error, after which the actor starts another.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::time::Instant;

use super::ReaderConfig;
use super::clients::{DeadLetters, VotesConsumer, votes_consumer};
use super::partitions::Partitions;
use super::throttle::Throttle;
use crate::consumer::batch::{Batcher, Entry, SharedBatch, Sinks};
use crate::consumer::metrics::ConsumerMetrics;
use crate::consumer::mongo_sink::MongoLogger;
use crate::consumer::rebalance::Rebalanced;
use crate::consumer::redis_sink::RedisAggregator;
use crate::consumer::sink::{SinkError, WriteBatch, Written};
use crate::vote::VoteRecord;

/// Offsets are committed at most this often: with adaptive batching a trickle
/// of votes makes many small batches, and a commit for each would keep the
/// group coordinator busy enough to delay heartbeats. A later commit covers
/// the earlier ones; a crash replays at most this much more, which the Redis
/// fence and the logs' `_id` make harmless.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub(super) struct ReadLoop {
    config: ReaderConfig,
    redis: Addr<RedisAggregator>,
    mongo: Addr<MongoLogger>,
    metrics: Arc<ConsumerMetrics>,
    shutdown: watch::Receiver<bool>,
}

/// A dispatched batch, once both sinks have answered.
struct Replies {
    seq: u64,
    redis: Result<Written, SinkError>,
    mongo: Result<Written, SinkError>,
}

type InFlight = Pin<Box<dyn Future<Output = Replies>>>;

/// The loop's state besides the Kafka clients.
struct State {
    batcher: Batcher,
    partitions: Partitions,
    in_flight: FuturesUnordered<InFlight>,
    next_seq: u64,
    throttle: Throttle,
    /// Whether the assigned partitions are paused.
    paused: bool,
    /// A batch was refused: nothing more is read or handed on until
    /// everything in flight is back and the partitions are rewound.
    rewind_pending: bool,
    /// When the offsets confirmed since the last commit are committed.
    commit_at: Option<Instant>,
    /// A fatal error of the Kafka consumer (it can read no more): the loop
    /// drains what is in flight and ends with it.
    fatal: Option<KafkaError>,
}

impl ReadLoop {
    pub(super) fn new(
        config: ReaderConfig,
        redis: Addr<RedisAggregator>,
        mongo: Addr<MongoLogger>,
        metrics: Arc<ConsumerMetrics>,
        shutdown: watch::Receiver<bool>,
    ) -> ReadLoop {
        ReadLoop {
            config,
            redis,
            mongo,
            metrics,
            shutdown,
        }
    }

    pub(super) async fn run(self) -> Result<(), KafkaError> {
        let consumer = votes_consumer(&self.config, self.metrics.clone())?;
        let dlq = DeadLetters::new(&self.config, self.metrics.clone())?;
        consumer.subscribe(&[&self.config.topic])?;
        let mut shutdown = self.shutdown.clone();
        let mut st = State {
            batcher: Batcher::new(self.config.batch_max_records, self.config.batch_max_wait),
            partitions: Partitions::default(),
            in_flight: FuturesUnordered::new(),
            next_seq: 0,
            throttle: Throttle::default(),
            paused: false,
            rewind_pending: false,
            commit_at: None,
            fatal: None,
        };
        while !*shutdown.borrow() && st.fatal.is_none() {
            if st.rewind_pending && st.in_flight.is_empty() {
                self.rewind(&consumer, &mut st)?;
            }
            self.commit_if_due(&consumer, &mut st);
            let can_dispatch = !st.rewind_pending && st.in_flight.len() < self.config.max_in_flight;
            if can_dispatch && self.fill_or_dispatch(&consumer, &dlq, &mut st).await {
                continue;
            }
            let blocked = !can_dispatch && st.batcher.is_full();
            let hold = st.throttle.check(blocked, st.rewind_pending, Instant::now());
            self.set_paused(&consumer, &mut st, hold.pauses());
            let deadline = st.batcher.deadline().filter(|_| can_dispatch);
            // Whichever comes first: the open batch's age limit, the pause, the next commit.
            let wake_at = [deadline, hold.pause_at(), st.commit_at].into_iter().flatten().min();
            tokio::select! {
                _ = shutdown.changed() => {}
                Some(replies) = st.in_flight.next(), if !st.in_flight.is_empty() => {
                    self.metrics.in_flight_batches.set(st.in_flight.len() as i64);
                    self.completed(&mut st, replies);
                }
                _ = sleep_until(wake_at) => {}
                () = consumer.context().rebalanced.notified() => {}
                received = consumer.recv(), if hold.polls() => {
                    self.received(&consumer, &dlq, &mut st, received).await;
                }
            }
            self.apply_rebalances(&consumer, &mut st);
        }
        self.drain(&consumer, &mut st).await;
        close_within(consumer, CLOSE_WAIT).await;
        st.fatal.map_or(Ok(()), Err)
    }

    /// With an open batch and room in flight: takes a record that is ready
    /// now, or hands the batch on when it should leave (adaptive batching: a
    /// batch that is not due leaves as soon as nothing more is ready, rather
    /// than at its age limit). Returns whether it did either.
    async fn fill_or_dispatch(&self, consumer: &VotesConsumer, dlq: &DeadLetters, st: &mut State) -> bool {
        if st.batcher.is_empty() {
            return false;
        }
        let now = Instant::now();
        if !st.batcher.is_due(now)
            && let Some(received) = consumer.recv().now_or_never()
        {
            self.received(consumer, dlq, st, received).await;
            return true;
        }
        let sinks = if st.in_flight.len() < self.config.eager_in_flight {
            Sinks::Idle
        } else {
            Sinks::Busy
        };
        if st.batcher.should_leave(now, sinks) {
            self.dispatch(st);
            return true;
        }
        false
    }

    /// What one `recv` gave: assignment changes first, then the record.
    async fn received(
        &self,
        consumer: &VotesConsumer,
        dlq: &DeadLetters,
        st: &mut State,
        received: KafkaResult<BorrowedMessage<'_>>,
    ) {
        self.apply_rebalances(consumer, st);
        match received {
            Ok(msg) => self.take_record(dlq, st, &msg).await,
            Err(error @ KafkaError::MessageConsumptionFatal(_)) => st.fatal = Some(error),
            Err(error) => tracing::warn!(%error, "kafka consumer error"),
        }
    }

    /// Applies assignment changes reported by the rebalance callback.
    fn apply_rebalances(&self, consumer: &VotesConsumer, st: &mut State) {
        let events = consumer.context().take();
        if events.is_empty() {
            return;
        }
        for event in events {
            match event {
                Rebalanced::Revoked(partitions) => {
                    st.partitions.revoke(&partitions);
                    st.batcher.retain(|e| !partitions.contains(&e.partition));
                }
                Rebalanced::Assigned(starts) => st.partitions.assign(&starts),
            }
        }
        // Newly assigned partitions start unpaused (the partitions kept by an
        // incremental assignment keep their state): while the reader holds
        // back, it holds them all.
        if st.paused
            && let Ok(assignment) = consumer.assignment()
            && let Err(error) = consumer.pause(&assignment)
        {
            tracing::warn!(%error, "pausing the new assignment failed");
        }
        // A commit sent while the group rebalanced may have been refused
        // ("generation id is not valid"), and no batch may come again for
        // its partitions: every committable offset goes out once more,
        // under the new generation.
        st.partitions.recommit_all();
        st.commit_at.get_or_insert(Instant::now() + COMMIT_EVERY);
    }

    async fn take_record(&self, dlq: &DeadLetters, st: &mut State, msg: &BorrowedMessage<'_>) {
        self.metrics.records_read.inc();
        let (partition, offset) = (msg.partition(), msg.offset());
        if !st.partitions.take(partition, offset) {
            return;
        }
        let vote = match VoteRecord::decode(msg.payload().unwrap_or_default(), &self.config.rules) {
            Ok(vote) => Some(vote),
            Err(reason) => {
                if !st.partitions.dead_lettered_before(partition, offset) {
                    dlq.send(msg, &reason).await;
                }
                None
            }
        };
        let entry = Entry {
            partition,
            offset,
            vote,
        };
        st.batcher.push(entry, Instant::now());
    }

    fn dispatch(&self, st: &mut State) {
        st.next_seq += 1;
        let batch = st.batcher.take(st.next_seq, &self.config.topic, |p, last| {
            st.partitions.hand_out(p, last)
        });
        st.partitions.dispatched(&batch);
        let batch: SharedBatch = Arc::new(batch);
        self.metrics.batch_size.observe(batch.entries.len() as f64);
        // Redis decides each record's outcome, which the log carries, so the
        // batch goes to the Mongo logger once Redis has applied it. The Redis
        // send is created now, in dispatch order (Redis applies one batch at a
        // time, so its replies and the Mongo sends follow that order); there
        // is room in both mailboxes because in-flight batches never exceed
        // their capacity.
        let to_redis = self.redis.send(WriteBatch(batch.clone()));
        let mongo = self.mongo.clone();
        let seq = batch.seq;
        st.in_flight.push(Box::pin(async move {
            let flatten = |r: Result<Result<Written, SinkError>, MailboxError>| r.unwrap_or(Err(SinkError::Stopped));
            let redis = flatten(to_redis.await);
            let mongo = match redis {
                Ok(_) => flatten(mongo.send(WriteBatch(batch)).await),
                // Nothing to log: the batch is read again.
                Err(_) => Ok(Written { votes: 0 }),
            };
            Replies { seq, redis, mongo }
        }));
        self.metrics.in_flight_batches.set(st.in_flight.len() as i64);
    }

    fn completed(&self, st: &mut State, replies: Replies) {
        let Replies { seq, redis, mongo } = replies;
        if redis.is_ok() && mongo.is_ok() {
            if st.partitions.confirmed(seq) {
                st.commit_at.get_or_insert_with(|| Instant::now() + COMMIT_EVERY);
            }
            return;
        }
        for e in [redis.err(), mongo.err()].into_iter().flatten() {
            tracing::warn!(error = %e, seq, "batch not written; re-reading from what Redis and Kafka hold");
        }
        st.rewind_pending = true;
    }

    fn commit_if_due(&self, consumer: &VotesConsumer, st: &mut State) {
        if st.commit_at.is_none_or(|t| Instant::now() < t) {
            return;
        }
        st.commit_at = None;
        let offsets = st.partitions.take_uncommitted();
        // Empty when a revoke took every partition that had advanced.
        if !offsets.is_empty() {
            self.commit(consumer, &offsets, CommitMode::Async);
        }
    }

    fn commit(&self, consumer: &VotesConsumer, offsets: &BTreeMap<i32, i64>, mode: CommitMode) {
        let mut tpl = TopicPartitionList::new();
        for (&p, &next) in offsets {
            let _ = tpl.add_partition_offset(&self.config.topic, p, Offset::Offset(next));
        }
        if let Err(error) = consumer.commit(&tpl, mode) {
            tracing::warn!(%error, "offset commit failed; a later commit or a replay covers it");
        }
    }

    fn set_paused(&self, consumer: &VotesConsumer, st: &mut State, pause: bool) {
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
    fn rewind(&self, consumer: &VotesConsumer, st: &mut State) -> Result<(), KafkaError> {
        self.metrics.rewinds.inc();
        st.batcher.clear();
        let mut tpl = consumer.assignment()?;
        let starts = consumer.context().choose_starts(consumer, &mut tpl);
        st.partitions.rewind(&starts);
        for e in tpl.elements() {
            consumer.seek(e.topic(), e.partition(), e.offset(), Duration::from_secs(10))?;
        }
        st.rewind_pending = false;
        self.set_paused(consumer, st, false);
        tracing::info!("rewound to Redis's and Kafka's offsets");
        Ok(())
    }

    /// Shutdown: hand on what was read, wait for the sinks, commit synchronously.
    async fn drain(&self, consumer: &VotesConsumer, st: &mut State) {
        // From here on an assignment is only acknowledged (see ReaderContext::rebalance).
        consumer.context().closing.store(true, Ordering::SeqCst);
        if !st.batcher.is_empty() && !st.rewind_pending {
            self.dispatch(st);
        }
        let timeout = self.config.drain_timeout;
        let drained = tokio::time::timeout(timeout, async {
            while let Some(replies) = st.in_flight.next().await {
                self.completed(st, replies);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("sinks did not finish within {timeout:?}; those batches will be read again");
        }
        let committable = st.partitions.committable();
        if !committable.is_empty() {
            self.commit(consumer, &committable, CommitMode::Sync);
        }
        tracing::info!(committed = ?committable, "reader drained");
        // librdkafka can hang closing a cooperative consumer whose assignment
        // arrives mid-close (a consumer stopped while it is still joining
        // the group): let a join in progress finish before the consumer is
        // dropped. Records received meanwhile are not taken.
        let deadline = Instant::now() + JOIN_WAIT;
        while !consumer.context().assigned_once.load(Ordering::SeqCst) && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
        }
    }
}

/// Longest a stopping reader waits for a group join in progress to finish.
const JOIN_WAIT: Duration = Duration::from_secs(30);

/// Longest a stopping reader waits for librdkafka to close the consumer.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Closes (drops) the consumer on a thread of its own and waits at most
/// `limit` for it. librdkafka's close can hang for good in the revoke
/// callback of a cooperative consumer (seen with static membership, in
/// `incremental_unassign`); by then the offsets are committed, so the reader
/// goes on and the process exits, leaving the group to notice it gone.
async fn close_within(consumer: VotesConsumer, limit: Duration) {
    let (closed, done) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("kafka-close".into()).spawn(move || {
        drop(consumer);
        let _ = closed.send(());
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "no thread to close the Kafka consumer on; not closing it");
        return;
    }
    if tokio::time::timeout(limit, done).await.is_err() {
        tracing::warn!(
            ?limit,
            "the Kafka consumer did not close in time; going on without waiting (offsets are committed)"
        );
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
