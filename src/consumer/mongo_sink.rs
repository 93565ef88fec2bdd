//! The Mongo logger: one document per vote record, with the outcome the Redis
//! script decided, written with an unordered `insert_many` per batch. The
//! record's position is the `_id`, so a replayed record hits a duplicate-key
//! error, which means "already logged", not a failure.

use mongodb::Collection;
use mongodb::bson::{self, doc};
use mongodb::error::{ErrorKind, WriteFailure as MongoWriteFailure};
use std::future::Future;

use prometheus_client::metrics::gauge::Gauge;

use super::batch::SharedBatch;
use super::metrics::ConsumerMetrics;
use super::sink::{Sink, SinkActor, WriteFailure, Written};
use crate::schema::mongo::{LogDocument, ensure_indexes, logs};
use crate::stores::{STORE_TIMEOUT, mongo_client};

pub type MongoLogger = SinkActor<MongoWriter>;

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

pub struct MongoWriter {
    uri: String,
    database: String,
}

impl MongoWriter {
    pub fn new(uri: &str, database: &str) -> MongoWriter {
        MongoWriter {
            uri: uri.to_owned(),
            database: database.to_owned(),
        }
    }
}

/// The `logs` collection, with its indexes ensured (a no-op when they exist).
pub async fn logs_collection(uri: &str, database: &str) -> mongodb::error::Result<Collection<LogDocument>> {
    let db = mongo_client(uri, "votestream", STORE_TIMEOUT).await?.database(database);
    db.run_command(doc! {"ping": 1}).await?;
    ensure_indexes(&db).await?;
    Ok(logs(&db))
}

impl Sink for MongoWriter {
    const NAME: &'static str = "mongo_logger";
    type Conn = Collection<LogDocument>;

    fn up_flag(metrics: &ConsumerMetrics) -> &Gauge {
        &metrics.mongo_up
    }

    fn connect(&self) -> impl Future<Output = Result<Collection<LogDocument>, String>> + 'static {
        let (uri, database) = (self.uri.clone(), self.database.clone());
        async move {
            logs_collection(&uri, &database)
                .await
                .map_err(|e| format!("mongo: {e}"))
        }
    }

    // Not `async fn`: the future must be 'static, so it may not borrow `self`.
    #[allow(clippy::manual_async_fn)]
    fn write(
        &self,
        logs: Collection<LogDocument>,
        batch: SharedBatch,
    ) -> impl Future<Output = Result<Written, WriteFailure>> + 'static {
        async move {
            let now = bson::DateTime::now();
            let Some(outcomes) = batch.outcomes.get() else {
                return Err(WriteFailure::Io(
                    "mongo: the batch reached the logger before Redis decided it".into(),
                ));
            };
            let docs: Vec<LogDocument> = batch
                .votes()
                .zip(outcomes)
                .map(|((e, v), &outcome)| LogDocument::of(v, &batch.topic, (e.partition, e.offset), outcome, now))
                .collect();
            if docs.is_empty() {
                return Ok(Written { votes: 0 });
            }
            let total = docs.len();
            match logs.insert_many(docs).ordered(false).await {
                Ok(r) => Ok(Written {
                    votes: r.inserted_ids.len(),
                }),
                Err(e) => match only_duplicates(&e) {
                    Some(duplicates) => Ok(Written {
                        votes: total - duplicates,
                    }),
                    None => Err(WriteFailure::Io(format!("mongo: {e}"))),
                },
            }
        }
    }
}

/// `Some(n)` when every error of an unordered insert is a duplicate `_id`.
fn only_duplicates(e: &mongodb::error::Error) -> Option<usize> {
    match e.kind.as_ref() {
        ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
            let errors = failure.write_errors.as_ref()?;
            errors.iter().all(|w| w.code == DUPLICATE_KEY).then_some(errors.len())
        }
        ErrorKind::Write(MongoWriteFailure::WriteError(w)) if w.code == DUPLICATE_KEY => Some(1),
        _ => None,
    }
}
