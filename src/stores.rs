//! Clients for the two stores, configured alike for every process: each wait
//! is bounded, so an unreachable server surfaces as an error within the given
//! time (the drivers' defaults wait up to 30 s), and connections are made
//! lazily, so a process starts while a store is down.

use std::time::Duration;

use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use mongodb::Client;
use mongodb::options::ClientOptions;

/// How long the consumer's sinks wait on a store before treating it as down.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// A Redis pool whose waits (for a connection, to create one, to recycle one) are bounded by `timeout`.
pub fn redis_pool(url: &str, timeout: Duration) -> Result<Pool, deadpool_redis::CreatePoolError> {
    let mut config = deadpool_redis::Config::from_url(url);
    config.pool = Some(PoolConfig {
        timeouts: Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        },
        ..PoolConfig::default()
    });
    config.create_pool(Some(Runtime::Tokio1))
}

/// A MongoDB client whose server selection and connection are bounded by
/// `timeout`; `app_name` unless the URI names one.
pub async fn mongo_client(uri: &str, app_name: &str, timeout: Duration) -> mongodb::error::Result<Client> {
    let mut options = ClientOptions::parse(uri).await?;
    options.server_selection_timeout = Some(timeout);
    options.connect_timeout = Some(timeout);
    options.app_name.get_or_insert_with(|| app_name.to_owned());
    Client::with_options(options)
}
