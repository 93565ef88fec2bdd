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

pub mod aggregate;
pub mod batch;
pub mod commit;
mod http;
pub mod metrics;
pub mod mongo_sink;
pub mod reader;
pub mod rebalance;
pub mod redis_sink;
pub mod sink;

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;

use actix::Supervisor;
use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::ConsumerSettings;
use metrics::ConsumerMetrics;
use mongo_sink::{MongoLogger, MongoWriter};
use reader::{KafkaReader, ReaderConfig};
use redis_sink::{RedisAggregator, RedisWriter};

/// Runs the consumer until `shutdown` resolves, then drains in-flight
/// batches, commits and returns. Blocks the calling thread (it owns an actix System).
pub fn run(settings: ConsumerSettings, shutdown: impl Future<Output = ()> + 'static) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.consumer.consumer_http_addr)
        .with_context(|| format!("binding {}", settings.consumer.consumer_http_addr))?;
    actix::System::new().block_on(serve(settings, listener, shutdown))
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
    let redis = RedisAggregator::new(
        RedisWriter::new(&settings.redis.redis_url, config.keys.clone(), metrics.clone()),
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
    let (finished_tx, mut finished) = watch::channel(false);
    let reader_metrics = metrics.clone();
    let _reader =
        Supervisor::start(move |_| KafkaReader::new(config, redis, mongo, reader_metrics, stop_rx, finished_tx));

    shutdown.await;
    tracing::info!("shutting down: draining in-flight batches");
    let _ = stop.send(true);
    let _ = finished.wait_for(|done| *done).await;
    server_handle.stop(true).await;
    tracing::info!("consumer stopped");
    Ok(())
}
