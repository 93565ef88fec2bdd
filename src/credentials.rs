//! The credentials a process was given, tried once at start. A store that
//! refuses them stops the process with an error naming the store and the
//! setting to fix, instead of a process that runs and retries forever. A
//! store that does not answer is no verdict: the process starts as always
//! and its usual retries and `/readyz` take over. Without credentials
//! (no user or password in the URL, no SASL in the Kafka options) nothing is
//! tried. No message shows a secret.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::{Command, KafkaArgs, MongoArgs, RedisArgs};
use crate::kafka_options::PassThrough;

/// How long each store has to answer the check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Tries the credentials of every store `command` reaches, at once; an error
/// for the first store that refuses them.
pub async fn check(command: &Command) -> anyhow::Result<()> {
    let (kafka, redis, mongo) = command.stores();
    let (kafka, redis, mongo) = tokio::join!(
        async {
            match kafka {
                Some(k) => check_kafka(k).await,
                None => Ok(()),
            }
        },
        async {
            match redis {
                Some(r) => check_redis(r).await,
                None => Ok(()),
            }
        },
        async {
            match mongo {
                Some(m) => check_mongo(m).await,
                None => Ok(()),
            }
        },
    );
    kafka.and(redis).and(mongo)
}

/// Redis: an `AUTH` refused (wrong user or password).
pub async fn check_redis(redis: &RedisArgs) -> anyhow::Result<()> {
    use deadpool_redis::redis::{Client, ErrorKind};
    // A URL that does not parse is reported where the pool is made.
    let Ok(client) = Client::open(redis.redis_url.as_str()) else {
        return Ok(());
    };
    let info = client.get_connection_info().redis_settings();
    if info.username().is_none() && info.password().is_none() {
        return Ok(());
    }
    match tokio::time::timeout(CHECK_TIMEOUT, client.get_multiplexed_async_connection()).await {
        Ok(Err(e)) if e.kind() == ErrorKind::AuthenticationFailed => {
            anyhow::bail!("redis refused the user and password of the Redis URL (--redis-url / --redis-url-file): {e}")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "redis: the credentials could not be checked at start"),
        Err(_) => {
            tracing::warn!("redis: the credentials could not be checked at start (no answer within {CHECK_TIMEOUT:?})")
        }
        Ok(Ok(_)) => {}
    }
    Ok(())
}

/// MongoDB: an authentication refused (wrong user, password or auth source).
pub async fn check_mongo(mongo: &MongoArgs) -> anyhow::Result<()> {
    use mongodb::bson::doc;
    use mongodb::error::ErrorKind;
    use mongodb::options::ClientOptions;
    let Ok(mut options) = ClientOptions::parse(&mongo.mongodb_uri).await else {
        return Ok(());
    };
    if options.credential.is_none() {
        return Ok(());
    }
    options.server_selection_timeout = Some(CHECK_TIMEOUT);
    options.connect_timeout = Some(CHECK_TIMEOUT);
    let Ok(client) = mongodb::Client::with_options(options) else {
        return Ok(());
    };
    let ping = client
        .database(&mongo.mongodb_database)
        .run_command(doc! { "ping": 1 })
        .await;
    let refused = |message: &str| {
        anyhow::anyhow!(
            "mongodb refused the credentials of the MongoDB URI (--mongodb-uri / --mongodb-uri-file): {message}"
        )
    };
    if let Err(e) = ping {
        match e.kind.as_ref() {
            ErrorKind::Authentication { message, .. } => return Err(refused(message)),
            // AuthenticationFailed, as a server may answer it.
            ErrorKind::Command(c) if c.code == 18 => return Err(refused(&c.message)),
            _ => tracing::warn!(error = %e, "mongodb: the credentials could not be checked at start"),
        }
    }
    Ok(())
}

/// Kafka: SASL authentication refused (wrong mechanism, user or password).
pub async fn check_kafka(kafka: &KafkaArgs) -> anyhow::Result<()> {
    if !kafka.kafka_options.authenticates() {
        return Ok(());
    }
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.kafka_brokers)
        .pass_through(&kafka.kafka_options);
    let refused = tokio::task::spawn_blocking(move || -> Result<Option<String>, KafkaError> {
        let consumer: BaseConsumer<AuthWatch> = config.create_with_context(AuthWatch::default())?;
        let deadline = Instant::now() + CHECK_TIMEOUT;
        // A metadata request fails at once while the connection is still being made (and
        // authenticated), so it is asked again until an answer, a refusal or the deadline.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer =
                consumer.fetch_metadata(None, left.clamp(Duration::from_millis(100), Duration::from_millis(500)));
            // Serves librdkafka's events: its error callback reports the refusal.
            let _ = consumer.poll(Duration::from_millis(100));
            if let Some(reason) = consumer.context().refused.lock().ok().and_then(|r| r.clone()) {
                return Ok(Some(reason));
            }
            match answer {
                Ok(_) => return Ok(None),
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::SaslAuthenticationFailed) => {
                    return Ok(Some(e.to_string()));
                }
                Err(e) if Instant::now() >= deadline => {
                    tracing::warn!(error = %e, "kafka: the credentials could not be checked at start");
                    return Ok(None);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    })
    .await?;
    match refused {
        Ok(Some(reason)) => anyhow::bail!(
            "kafka refused the SASL credentials of the Kafka options (--kafka-option / --kafka-options-file): {reason}"
        ),
        Ok(None) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("kafka: {e}")),
    }
}

/// Remembers an authentication failure librdkafka reports while the check runs.
#[derive(Default)]
struct AuthWatch {
    refused: Mutex<Option<String>>,
}

impl ClientContext for AuthWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication) {
            if let Ok(mut refused) = self.refused.lock() {
                refused.get_or_insert_with(|| reason.to_owned());
            }
        } else {
            tracing::debug!(%error, reason, "kafka: while checking the credentials");
        }
    }
}

impl ConsumerContext for AuthWatch {}
