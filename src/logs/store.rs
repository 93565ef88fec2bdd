//! The `logs` collection in MongoDB, read side: one page of logs newest first.
//!
//! The order is (received_at desc, _id desc): the vote id breaks ties between
//! votes received in the same millisecond, so a cursor names one exact
//! position. Every call is bounded by the backend timeout (server selection
//! included), so an unreachable database is a quick 503, not a hung request;
//! the same bound goes to the server as `maxTimeMS`, so a query the app gives
//! up on stops in the database too. At most `max_queries` pages are asked of
//! MongoDB at once: whatever the load on the page, the database holds a
//! bounded number of queries and the consumer's writes go on.

use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use futures_util::TryStreamExt;
use mongodb::bson::{self, Document, doc};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::error::LogsError;
use super::metrics::Metrics;
use super::query::{Cursor, Filter, LogQuery};
use crate::log_entry::LogEntry;
use crate::stores::{LOGS_COLLECTION, mongo_client};

/// The stored document, as far as this app reads it. Numbers are read
/// leniently (a year stored as Int32 or Int64, a rank as an integer or a
/// double), since different writers pick different BSON types.
#[derive(Debug, Deserialize)]
struct LogDocument {
    #[serde(rename = "_id")]
    id: String,
    received_at: bson::DateTime,
    name: String,
    album: String,
    year: i64,
    rank: f64,
    route: String,
}

impl TryFrom<LogDocument> for LogEntry {
    type Error = LogsError;

    fn try_from(d: LogDocument) -> Result<LogEntry, LogsError> {
        let millis = d.received_at.timestamp_millis();
        let received_at = DateTime::from_timestamp_millis(millis)
            .ok_or_else(|| LogsError::bad_document(format!("log {}: received_at {millis} ms is out of range", d.id)))?;
        Ok(LogEntry {
            id: d.id,
            received_at,
            band: d.name,
            album: d.album,
            year: d.year,
            rank: d.rank,
            route: d.route,
        })
    }
}

/// Least time left for a query to be worth sending (and a non-zero maxTimeMS).
const MIN_QUERY_TIME: Duration = Duration::from_millis(10);

/// One page of `GET /logs`; `next` is absent on the last page.
#[derive(Debug, Serialize)]
pub struct Page {
    pub items: Vec<LogEntry>,
    pub next: Option<Cursor>,
}

#[derive(Clone)]
pub struct LogStore {
    db: Database,
    logs: Collection<LogDocument>,
    timeout: Duration,
    slots: Arc<Semaphore>,
    max_queries: usize,
    metrics: Arc<Metrics>,
}

impl LogStore {
    /// Prepares the client; it connects lazily, so the app starts (and
    /// answers 503) while MongoDB is down, and recovers when it comes back.
    pub async fn new(
        uri: &str,
        database: &str,
        timeout: Duration,
        max_queries: usize,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<LogStore> {
        let db = mongo_client(uri, "votestream-logs", timeout).await?.database(database);
        Ok(LogStore {
            logs: db.collection(LOGS_COLLECTION),
            db,
            timeout,
            slots: Arc::new(Semaphore::new(max_queries)),
            max_queries,
            metrics,
        })
    }

    /// Newest first, `query.limit` logs at most, strictly after `query.before`.
    pub async fn page(&self, query: &LogQuery) -> Result<Page, LogsError> {
        let mut filter = filter_document(&query.filter);
        if let Some(before) = &query.before {
            let at = bson::DateTime::from_millis(before.received_at_ms);
            filter.insert(
                "$or",
                vec![
                    doc! { "received_at": { "$lt": at } },
                    doc! { "received_at": at, "_id": { "$lt": &before.id } },
                ],
            );
        }
        // One more than asked tells whether another page exists, so the last
        // page carries no cursor to an empty page.
        let mut items = self.newest(filter, query.limit + 1).await?;
        let next = if items.len() > query.limit {
            items.truncate(query.limit);
            items.last().map(Cursor::of)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn newest(&self, filter: Document, limit: usize) -> Result<Vec<LogEntry>, LogsError> {
        let deadline = Instant::now() + self.timeout;
        let Ok(_slot) = tokio::time::timeout_at(deadline, self.slots.acquire()).await else {
            return Err(self.busy());
        };
        self.metrics.queries_active.inc();
        let _active = scopeguard(|| {
            self.metrics.queries_active.dec();
        });
        let left = deadline.saturating_duration_since(Instant::now());
        // MongoDB reads maxTimeMS 0 as "no limit": a query that would leave with
        // (almost) no time is not sent at all.
        if left < MIN_QUERY_TIME {
            return Err(self.busy());
        }
        let documents: Vec<LogDocument> = self
            .bounded_by(left, async {
                self.logs
                    .find(filter)
                    .sort(doc! { "received_at": -1, "_id": -1 })
                    .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                    // The server gives the query up when this app does.
                    .max_time(left)
                    .projection(doc! {
                        "_id": 1, "received_at": 1, "name": 1, "album": 1, "year": 1, "rank": 1, "route": 1,
                    })
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        documents.into_iter().map(LogEntry::try_from).collect()
    }

    /// Every query slot stayed taken for (nearly) the whole timeout.
    fn busy(&self) -> LogsError {
        self.metrics.queries_refused.inc();
        LogsError::MongoUnavailable {
            detail: format!("{} queries outstanding for {:?}", self.max_queries, self.timeout),
        }
    }

    pub async fn ping(&self) -> Result<(), LogsError> {
        self.bounded(self.db.run_command(doc! { "ping": 1 })).await.map(drop)
    }

    async fn bounded<T>(&self, call: impl IntoFuture<Output = mongodb::error::Result<T>>) -> Result<T, LogsError> {
        self.bounded_by(self.timeout, call).await
    }

    async fn bounded_by<T>(
        &self,
        limit: Duration,
        call: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, LogsError> {
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result.map_err(LogsError::from_mongo),
            Err(_) => Err(LogsError::MongoUnavailable {
                detail: format!("no answer within {:?}", self.timeout),
            }),
        }
    }
}

/// Runs `f` when dropped: undoes a gauge increment on every way out.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

fn filter_document(filter: &Filter) -> Document {
    let mut document = Document::new();
    if let Some(band) = &filter.band {
        document.insert("name", band);
    }
    if let Some(album) = &filter.album {
        document.insert("album", album);
    }
    if let Some(route) = filter.route {
        document.insert("route", route.as_str());
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vote::Route;

    #[test]
    fn filters_become_exact_matches_on_the_stored_field_names() {
        let filter = Filter {
            band: Some("Alux Nahual".into()),
            album: None,
            route: Some(Route::Http),
        };
        assert_eq!(
            filter_document(&filter),
            doc! { "name": "Alux Nahual", "route": "http" }
        );
        assert_eq!(filter_document(&Filter::default()), doc! {});
    }

    #[test]
    fn year_and_rank_are_read_whatever_numeric_type_was_stored() {
        let stored = doc! {
            "_id": "v1", "received_at": bson::DateTime::from_millis(0), "logged_at": bson::DateTime::from_millis(5),
            "name": "b", "album": "a", "year": 1990_i32, "rank": 7_i32, "route": "http", "partition": 3, "offset": 42_i64,
        };
        let document: LogDocument = bson::from_document(stored).unwrap();
        let entry = LogEntry::try_from(document).unwrap();
        assert_eq!((entry.year, entry.rank), (1990, 7.0));
    }
}
