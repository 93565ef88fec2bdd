//! The read loop: takes records, forms batches, hands each to Redis and,
//! once Redis decided it, to the Mongo logger (several small decided batches
//! in one write), commits what both wrote, holds back when they fall behind,
//! rewinds when a batch is refused, and drains on shutdown. One run lasts
//! until shutdown or the first Kafka error, after which the actor starts
//! another.

use std::collections::{BTreeMap, VecDeque};
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
use crate::consumer::batch::{Batch, Batcher, Entry, SharedBatch, Sinks};
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

/// A batch sent to Redis, once Redis answered.
type Deciding = Pin<Box<dyn Future<Output = (SharedBatch, Result<Written, SinkError>)>>>;

/// A Mongo write of one or several decided batches (their `seq` and record
/// count), once the logger answered.
type Logging = Pin<Box<dyn Future<Output = (Vec<(u64, usize)>, Result<Written, SinkError>)>>>;

/// The loop's state besides the Kafka clients.
struct State {
    batcher: Batcher,
    partitions: Partitions,
    /// Batches sent to Redis, not yet answered (Redis applies one at a time, in order).
    deciding: FuturesUnordered<Deciding>,
    /// Batches Redis applied, waiting for a free Mongo writer.
    decided: VecDeque<SharedBatch>,
    /// Mongo writes in flight, at most `mongo_writers`.
    logging: FuturesUnordered<Logging>,
    /// Batches handed to the sinks and not yet written by both (or refused), and their records.
    pending: usize,
    pending_records: usize,
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
            deciding: FuturesUnordered::new(),
            decided: VecDeque::new(),
            logging: FuturesUnordered::new(),
            pending: 0,
            pending_records: 0,
            next_seq: 0,
            throttle: Throttle::default(),
            paused: false,
            rewind_pending: false,
            commit_at: None,
            fatal: None,
        };
        while !*shutdown.borrow() && st.fatal.is_none() {
            if st.rewind_pending && st.pending == 0 {
                self.rewind(&consumer, &mut st)?;
            }
            self.commit_if_due(&consumer, &mut st);
            self.log_decided(&mut st);
            let can_dispatch = !st.rewind_pending && self.has_room(&st);
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
                Some((batch, redis)) = st.deciding.next(), if !st.deciding.is_empty() => {
                    self.decided(&mut st, batch, redis);
                }
                Some((batches, mongo)) = st.logging.next(), if !st.logging.is_empty() => {
                    self.logged(&mut st, batches, mongo);
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
        // Redis decides a batch in a few milliseconds and the logger merges
        // the small batches waiting for it, so a batch leaves as soon as
        // Redis has nothing left to decide: counting keeps up with the votes
        // while logging keeps its writes large.
        let sinks = if st.deciding.is_empty() {
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

    /// Whether another batch may go to the sinks: Redis's mailbox has room,
    /// and the records handed out and not yet written by both stay within
    /// `max_in_flight` full batches.
    fn has_room(&self, st: &State) -> bool {
        st.deciding.len() < self.config.max_in_flight
            && st.pending_records < self.config.max_in_flight * self.config.batch_max_records
    }

    fn dispatch(&self, st: &mut State) {
        st.next_seq += 1;
        let batch = st.batcher.take(st.next_seq, &self.config.topic, |p, last| {
            st.partitions.hand_out(p, last)
        });
        st.partitions.dispatched(&batch);
        let batch: SharedBatch = Arc::new(batch);
        self.metrics.batch_size.observe(batch.entries.len() as f64);
        st.pending += 1;
        st.pending_records += batch.entries.len();
        self.metrics.in_flight_batches.set(st.pending as i64);
        // Redis decides each record's outcome, which the log carries, so the
        // batch goes to the Mongo logger once Redis has applied it. There is
        // room in Redis's mailbox: `has_room`.
        let to_redis = self.redis.send(WriteBatch(batch.clone()));
        st.deciding
            .push(Box::pin(async move { (batch, flatten(to_redis.await)) }));
    }

    /// Redis answered `batch`: on to the logger, or, refused, re-read.
    fn decided(&self, st: &mut State, batch: SharedBatch, redis: Result<Written, SinkError>) {
        match redis {
            Ok(_) => st.decided.push_back(batch),
            Err(error) => {
                tracing::warn!(%error, seq = batch.seq, "batch not applied in Redis; re-reading from what Redis and Kafka hold");
                self.finished(st, &[(batch.seq, batch.entries.len())]);
                st.rewind_pending = true;
            }
        }
    }

    /// Hands the decided batches to free Mongo writers, several small ones
    /// merged into one write of at most `batch_max_records` votes.
    fn log_decided(&self, st: &mut State) {
        while st.logging.len() < self.config.mongo_writers
            && let Some(first) = st.decided.pop_front()
        {
            let mut votes = first.vote_count();
            let mut taken = vec![first];
            while let Some(next) = st.decided.front() {
                let more = next.vote_count();
                if votes + more > self.config.batch_max_records {
                    break;
                }
                votes += more;
                taken.extend(st.decided.pop_front());
            }
            let batches: Vec<(u64, usize)> = taken.iter().map(|b| (b.seq, b.entries.len())).collect();
            let to_mongo = self.mongo.send(WriteBatch(Batch::merged(&taken)));
            st.logging
                .push(Box::pin(async move { (batches, flatten(to_mongo.await)) }));
        }
    }

    /// The logger answered a write of `batches`: each one written by both
    /// sinks is confirmed (its offsets committable once every batch before
    /// it is); refused, they are re-read.
    fn logged(&self, st: &mut State, batches: Vec<(u64, usize)>, mongo: Result<Written, SinkError>) {
        self.finished(st, &batches);
        match mongo {
            Ok(_) => {
                let mut advanced = false;
                for &(seq, _) in &batches {
                    advanced |= st.partitions.confirmed(seq);
                }
                if advanced {
                    st.commit_at.get_or_insert_with(|| Instant::now() + COMMIT_EVERY);
                }
            }
            Err(error) => {
                tracing::warn!(%error, ?batches, "batches not logged; re-reading from what Redis and Kafka hold");
                st.rewind_pending = true;
            }
        }
    }

    /// `batches` (seq, records) are no longer pending.
    fn finished(&self, st: &mut State, batches: &[(u64, usize)]) {
        st.pending -= batches.len();
        st.pending_records -= batches.iter().map(|&(_, n)| n).sum::<usize>();
        self.metrics.in_flight_batches.set(st.pending as i64);
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
            loop {
                self.log_decided(st);
                tokio::select! {
                    Some((batch, redis)) = st.deciding.next(), if !st.deciding.is_empty() => {
                        self.decided(st, batch, redis);
                    }
                    Some((batches, mongo)) = st.logging.next(), if !st.logging.is_empty() => {
                        self.logged(st, batches, mongo);
                    }
                    else => break,
                }
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

fn flatten(reply: Result<Result<Written, SinkError>, MailboxError>) -> Result<Written, SinkError> {
    reply.unwrap_or(Err(SinkError::Stopped))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
