//! `votestream consumer`: one actix System with three supervised actors.
//!
//! ```text
//! KafkaReader --WriteBatch--> RedisAggregator (counters, offset-fenced Lua script)
//!      \-------WriteBatch--> MongoLogger     (one log document per vote)
//!      <-- both confirmed --  offsets committed in partition order
//! ```
//!
//! Delivery: at least once from Kafka, exactly once in effect on Redis (the
//! script skips what it counted before) and on Mongo (the vote id is `_id`).

mod aggregate;
mod batch;
mod commit;
mod contest;
mod http;
mod metrics;
mod mongo_sink;
mod reader;
mod rebalance;
mod redis_sink;
mod sink;

// What the benchmark's raw-sink runs and the fencing tests drive directly:
// the sinks' writes, without the actors around them.
pub use batch::{Batch, Batcher, Entry, PartitionRange, SharedBatch};
pub use metrics::ConsumerMetrics;
pub use mongo_sink::{MongoWriter, logs_collection};
pub use redis_sink::RedisWriter;
pub use sink::{Sink, SinkError, WriteFailure};

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix::Supervisor;
use anyhow::Context as _;
use tokio::sync::{oneshot, watch};

use crate::config::ConsumerSettings;
use mongo_sink::MongoLogger;
use reader::{KafkaReader, ReaderConfig, ReaderEnd};
use redis_sink::RedisAggregator;

/// A consumer ready to run: settings checked, HTTP listener bound.
///
/// Built like the ingress and the logs app: [`Consumer::build`] binds the
/// listener (port 0 picks a free one, which is how tests run it in process),
/// [`Consumer::addr`] is the bound address, [`Consumer::run`] serves until
/// its shutdown future resolves.
pub struct Consumer {
    settings: ConsumerSettings,
    listener: TcpListener,
    addr: SocketAddr,
}

impl Consumer {
    /// Checks the settings and binds the HTTP listener (`/healthz`, `/readyz`,
    /// `/metrics`); starts nothing yet.
    pub fn build(settings: ConsumerSettings) -> anyhow::Result<Consumer> {
        let c = &settings.consumer;
        anyhow::ensure!(c.batch_max_records >= 1, "--batch-max-records must be at least 1");
        anyhow::ensure!(c.mailbox_capacity >= 1, "--mailbox-capacity must be at least 1");
        anyhow::ensure!(c.mongo_writers >= 1, "--mongo-writers must be at least 1");
        anyhow::ensure!(
            c.restart_backoff_min_ms <= c.restart_backoff_max_ms,
            "--restart-backoff-min-ms ({}) must not exceed --restart-backoff-max-ms ({})",
            c.restart_backoff_min_ms,
            c.restart_backoff_max_ms
        );
        anyhow::ensure!(
            c.group_instance_id.as_ref().is_none_or(|id| !id.trim().is_empty()),
            "--group-instance-id must not be blank"
        );
        settings.contest.window()?;
        anyhow::ensure!(
            i64::try_from(c.dedup_window_secs).is_ok_and(|s| s <= i64::MAX / 1000),
            "--dedup-window-secs is too large"
        );
        let wanted = settings.consumer.consumer_http_addr;
        let listener = TcpListener::bind(wanted).with_context(|| format!("binding {wanted}"))?;
        let addr = listener.local_addr()?;
        Ok(Consumer {
            settings,
            listener,
            addr,
        })
    }

    /// The HTTP address actually bound (the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs until `shutdown` resolves, then drains in-flight batches, commits
    /// and returns.
    ///
    /// The actors run on a thread of their own, in an actix System (a
    /// single-threaded runtime); this future only waits for `shutdown` and
    /// for that thread, so any Tokio runtime can await it. Dropping it before
    /// it ends also stops the consumer, as `shutdown` would.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (done_tx, mut done) = oneshot::channel();
        let Consumer { settings, listener, .. } = self;
        std::thread::Builder::new()
            .name("consumer".into())
            .spawn(move || {
                let stopped = async {
                    let _ = stop_rx.await;
                };
                let result = actix::System::new().block_on(serve(settings, listener, stopped));
                let _ = done_tx.send(result);
            })
            .context("starting the consumer thread")?;
        tokio::select! {
            result = &mut done => return result.unwrap_or_else(|_| Err(thread_panicked())),
            () = shutdown => {}
        }
        drop(stop);
        done.await.unwrap_or_else(|_| Err(thread_panicked()))
    }
}

/// The consumer thread ended without a result: it panicked.
fn thread_panicked() -> anyhow::Error {
    anyhow::anyhow!("the consumer thread panicked")
}

async fn serve(
    settings: ConsumerSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(ConsumerMetrics::new());
    let mut registry = crate::ops::registry("consumer");
    metrics.register(&mut registry);
    tracing::info!(addr = %listener.local_addr()?, "consumer HTTP listening");
    let server = http::server(listener, metrics.clone(), registry)?;
    let server_handle = server.handle();
    actix::spawn(server);

    // The sinks' mailboxes hold what the reader may have in flight (see sink.rs).
    let config = ReaderConfig::from_settings(&settings);
    let window = settings.contest.window()?;
    let dedup_ms = settings.consumer.dedup_window().as_millis() as i64;
    let redis = RedisAggregator::new(
        RedisWriter::new(
            &settings.redis.redis_url,
            config.keys.clone(),
            window.script_window(dedup_ms),
            metrics.clone(),
        ),
        config.max_in_flight,
        1,
        config.backoff.clone(),
        metrics.clone(),
    )
    .start_supervised();
    let mongo = MongoLogger::new(
        MongoWriter::new(&settings.mongo.mongodb_uri, &settings.mongo.mongodb_database),
        config.max_in_flight,
        settings.consumer.mongo_writers,
        config.backoff.clone(),
        metrics.clone(),
    )
    .start_supervised();

    let (stop, stop_rx) = watch::channel(false);
    let watch = contest::ContestWatch {
        window,
        grace: settings.consumer.final_grace(),
        keys: config.keys.clone(),
        redis_url: settings.redis.redis_url.clone(),
        brokers: settings.kafka.kafka_brokers.clone(),
        kafka_options: settings.kafka.kafka_options.clone(),
        topic: settings.kafka.votes_topic.clone(),
    };
    actix::spawn(watch.run(stop_rx.clone()));
    let (finished_tx, mut finished) = watch::channel(ReaderEnd::Running);
    let reader_metrics = metrics.clone();
    let _reader =
        Supervisor::start(move |_| KafkaReader::new(config, redis, mongo, reader_metrics, stop_rx, finished_tx));

    let mut fatal = finished.clone();
    tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down: draining in-flight batches");
            let _ = stop.send(true);
            let _ = finished.wait_for(|end| *end != ReaderEnd::Running).await;
        }
        _ = fatal.wait_for(|end| matches!(end, ReaderEnd::Fatal(_))) => {}
    }
    server_handle.stop(true).await;
    let end = finished.borrow().clone();
    match end {
        ReaderEnd::Fatal(message) => Err(anyhow::anyhow!(message)),
        _ => {
            tracing::info!("consumer stopped");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::{Cli, Command};

    fn built(flags: &[&str]) -> anyhow::Result<Consumer> {
        let args = ["votestream", "consumer", "--consumer-http-addr", "127.0.0.1:0"];
        let cli = Cli::try_parse_from(args.iter().chain(flags)).expect("flags parse");
        let Command::Consumer(settings) = cli.command else {
            panic!("consumer settings");
        };
        Consumer::build(settings)
    }

    #[test]
    fn settings_that_cannot_work_are_refused_by_name() {
        for (flags, named) in [
            (&["--batch-max-records", "0"][..], "--batch-max-records"),
            (&["--mailbox-capacity", "0"], "--mailbox-capacity"),
            (&["--mongo-writers", "0"], "--mongo-writers"),
            (
                &["--restart-backoff-min-ms", "900", "--restart-backoff-max-ms", "100"],
                "--restart-backoff-min-ms",
            ),
            (&["--group-instance-id", " "], "--group-instance-id"),
            (
                &[
                    "--voting-opens-at",
                    "2026-12-24T20:00:00Z",
                    "--voting-closes-at",
                    "2026-12-24T19:00:00Z",
                ],
                "--voting-closes-at",
            ),
            (&["--dedup-window-secs", "18446744073709551615"], "--dedup-window-secs"),
        ] {
            let error = built(flags).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(named), "{flags:?}: {error:?}");
        }
        let consumer = built(&[]).expect("the defaults build");
        assert_ne!(consumer.addr().port(), 0, "port 0 picks a free port");
    }
}
