//! The Kafka reader actor: reads `votes`, decodes and validates each record
//! (bad ones go to the dead-letter topic), forms batches by count and time,
//! hands each batch to Redis and then to the Mongo logger (small decided
//! batches merged into one write), and commits offsets once both have
//! written it, in partition order. A batch leaves when it is full, when it is
//! old enough, or as soon as no further record is ready while Redis has no
//! batch left to decide (adaptive batching: at once under light load, sized
//! by Redis's pace under load, full in a drain).
//!
//! Backpressure: at most `mailbox_capacity` full batches' worth of records
//! are in flight, at most that many batches wait for Redis (whose actix
//! channel holds one more) and at most `mongo_writers` writes for Mongo, so
//! every `Addr::send` finds room and batches enter Redis's mailbox in
//! dispatch order (order matters: the Redis
//! script is fenced by offsets);
//! when the sinks fall behind the limit is reached and the reader stops taking
//! records; if that lasts (a sink is down), the assigned partitions are paused
//! (the consumer keeps polling, so it stays in its group). Memory stays
//! bounded by one open batch and librdkafka's capped prefetch.
//!
//! Where to start reading a partition is chosen in `rebalance.rs`. If the
//! Redis script finds Redis behind a batch (it lost data), the reader drains
//! what is in flight and seeks every partition back the same way ("rewind").
//!
//! The actor here restarts the read loop (`read_loop.rs`) after a failure;
//! `clients.rs` sets up the Kafka clients the loop uses, and `partitions.rs`
//! keeps where each assigned partition stands; `throttle.rs` decides when
//! to stop taking records and when to pause the partitions.

mod clients;
mod partitions;
mod read_loop;
mod throttle;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::ConsumerMetrics;
use super::mongo_sink::MongoLogger;
use super::redis_sink::RedisAggregator;
use super::sink::Backoff;
use crate::config::{ConsumerSettings, RebalanceProtocol};
use crate::kafka_options::KafkaOptions;
use crate::schema::redis::RedisKeys;
use crate::vote::Rules;
use read_loop::ReadLoop;

/// Everything the reader needs, cloned into each incarnation of its loop.
#[derive(Clone)]
pub struct ReaderConfig {
    pub brokers: String,
    /// Pass-through librdkafka options (`--kafka-option`), for both of the reader's clients.
    pub kafka_options: KafkaOptions,
    pub topic: String,
    pub dlq_topic: String,
    pub group: String,
    pub redis_url: String,
    pub keys: RedisKeys,
    pub rules: Rules,
    pub batch_max_records: usize,
    pub batch_max_wait: Duration,
    pub max_in_flight: usize,
    /// Mongo writes the reader keeps in flight (the logger's writers), each
    /// of one batch or of several small ones Redis decided.
    pub mongo_writers: usize,
    /// Before each restart of the reader and each retry of a dead letter; the sinks' too.
    pub backoff: Backoff,
    /// How long shutdown waits for the batches in flight.
    pub drain_timeout: Duration,
    /// Static group membership (`group.instance.id`), when set.
    pub group_instance_id: Option<String>,
    pub session_timeout_ms: u32,
    pub rebalance_protocol: RebalanceProtocol,
}

impl ReaderConfig {
    pub fn from_settings(s: &ConsumerSettings) -> ReaderConfig {
        ReaderConfig {
            brokers: s.kafka.kafka_brokers.clone(),
            kafka_options: s.kafka.kafka_options.clone(),
            topic: s.kafka.votes_topic.clone(),
            dlq_topic: s.kafka.dlq_topic.clone(),
            group: s.consumer.consumer_group.clone(),
            redis_url: s.redis.redis_url.clone(),
            keys: RedisKeys::new(&s.redis.redis_key_prefix),
            rules: s.rules.rules(),
            batch_max_records: s.consumer.batch_max_records,
            batch_max_wait: Duration::from_millis(s.consumer.batch_max_wait_ms),
            // Both at least 1: Consumer::build refuses less.
            max_in_flight: s.consumer.mailbox_capacity,
            mongo_writers: s.consumer.mongo_writers.min(s.consumer.mailbox_capacity),
            backoff: Backoff::new(
                Duration::from_millis(s.consumer.restart_backoff_min_ms),
                Duration::from_millis(s.consumer.restart_backoff_max_ms),
            ),
            drain_timeout: s.consumer.drain_timeout(),
            group_instance_id: s.consumer.group_instance_id.clone(),
            session_timeout_ms: s.consumer.session_timeout_ms,
            rebalance_protocol: s.consumer.rebalance_protocol,
        }
    }
}

/// How the reader ended, as its consumer waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEnd {
    Running,
    /// Drained and committed after shutdown.
    Drained,
    /// Ended by an error no restart can mend; the consumer stops with it.
    Fatal(String),
}

pub struct KafkaReader {
    /// What each incarnation of the read loop starts from.
    run: ReadLoop,
    metrics: Arc<ConsumerMetrics>,
    /// Told once the reader has drained and committed after shutdown, or
    /// has ended for good.
    finished: watch::Sender<ReaderEnd>,
    backoff: Backoff,
}

/// The reader's name in logs and metrics.
const ACTOR: &str = "kafka_reader";

impl KafkaReader {
    pub fn new(
        config: ReaderConfig,
        redis: Addr<RedisAggregator>,
        mongo: Addr<MongoLogger>,
        metrics: Arc<ConsumerMetrics>,
        shutdown: watch::Receiver<bool>,
        finished: watch::Sender<ReaderEnd>,
    ) -> KafkaReader {
        let backoff = config.backoff.clone();
        metrics.supervised(ACTOR);
        KafkaReader {
            run: ReadLoop::new(config, redis, mongo, metrics.clone(), shutdown),
            metrics,
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
                    let _ = act.finished.send(ReaderEnd::Drained);
                }
                // librdkafka's fatal errors leave the consumer unusable, and a new
                // one would meet the same cause: the consumer stops with it.
                Err(error @ KafkaError::MessageConsumptionFatal(code)) => {
                    let hint = if code == RDKafkaErrorCode::FencedInstanceId {
                        "; another consumer of the group runs with the same --group-instance-id, and each needs its own"
                    } else {
                        ""
                    };
                    let message = format!("the Kafka consumer failed for good: {error}{hint}");
                    tracing::error!(actor = ACTOR, "{message}");
                    ConsumerMetrics::set_up(&act.metrics.kafka_up, false);
                    let _ = act.finished.send(ReaderEnd::Fatal(message));
                }
                Err(error) => {
                    tracing::warn!(actor = ACTOR, %error, "reader failed; restarting");
                    act.backoff.failed_after(ran);
                    ConsumerMetrics::set_up(&act.metrics.kafka_up, false);
                    ctx.stop();
                }
            }),
        );
    }
}

impl Supervised for KafkaReader {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.metrics.restarted(ACTOR);
    }
}
