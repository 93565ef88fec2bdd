//! The `logs` collection in MongoDB, read side: one page of logs newest first,
//! and the newest logs for the live tail.
//!
//! The order is (received_at desc, _id desc): the vote id breaks ties between
//! votes received in the same millisecond, so a cursor names one exact
//! position. Every call is bounded by the backend timeout (server selection
//! included), so an unreachable database is a quick 503, not a hung request.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{self, Document, doc};
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize, Serializer};

use super::error::LogsError;
use super::query::{Cursor, Filter, LogQuery};
use crate::stores::{LOGS_COLLECTION, mongo_client};
use crate::vote::format_instant;

/// One vote as the logs app shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub id: String,
    pub received_at: DateTime<Utc>,
    pub band: String,
    pub album: String,
    pub year: i64,
    pub rank: f64,
    pub route: String,
}

impl LogEntry {
    /// The position of this log in the (received_at, _id) order.
    pub fn position(&self) -> (i64, &str) {
        (self.received_at.timestamp_millis(), &self.id)
    }
}

/// The JSON item of `/logs` and `/logs/stream`: the UTC date and time as the
/// page prints them, plus the exact instant.
impl Serialize for LogEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Item<'a> {
            id: &'a str,
            date: String,
            time: String,
            received_at: String,
            band: &'a str,
            album: &'a str,
            year: i64,
            rank: f64,
            route: &'a str,
        }
        Item {
            id: &self.id,
            date: self.received_at.format("%Y-%m-%d").to_string(),
            time: self.received_at.format("%H:%M:%S").to_string(),
            received_at: format_instant(&self.received_at),
            band: &self.band,
            album: &self.album,
            year: self.year,
            rank: self.rank,
            route: &self.route,
        }
        .serialize(s)
    }
}

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
}

impl LogStore {
    /// Prepares the client; it connects lazily, so the app starts (and
    /// answers 503) while MongoDB is down, and recovers when it comes back.
    pub async fn new(uri: &str, database: &str, timeout: Duration) -> anyhow::Result<LogStore> {
        let db = mongo_client(uri, "votestream-logs", timeout).await?.database(database);
        Ok(LogStore {
            logs: db.collection(LOGS_COLLECTION),
            db,
            timeout,
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

    /// The newest `limit` logs received at or after `since`, newest first.
    pub async fn newest_since(&self, since: Option<i64>, limit: usize) -> Result<Vec<LogEntry>, LogsError> {
        let filter = match since {
            Some(ms) => doc! { "received_at": { "$gte": bson::DateTime::from_millis(ms) } },
            None => doc! {},
        };
        self.newest(filter, limit).await
    }

    async fn newest(&self, filter: Document, limit: usize) -> Result<Vec<LogEntry>, LogsError> {
        let documents: Vec<LogDocument> = self
            .bounded(async {
                self.logs
                    .find(filter)
                    .sort(doc! { "received_at": -1, "_id": -1 })
                    .limit(i64::try_from(limit).unwrap_or(i64::MAX))
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

    pub async fn ping(&self) -> Result<(), LogsError> {
        self.bounded(self.db.run_command(doc! { "ping": 1 })).await.map(drop)
    }

    /// The index that serves the (received_at desc, _id desc) order. The
    /// documented `{received_at: -1}` index alone cannot: MongoDB would sort
    /// every matching document in memory for each page. Creating an index
    /// that exists is a no-op.
    pub async fn ensure_index(&self) -> Result<(), LogsError> {
        let model = IndexModel::builder()
            .keys(doc! { "received_at": -1, "_id": -1 })
            .build();
        self.bounded(self.logs.create_index(model)).await.map(drop)
    }

    async fn bounded<T>(&self, call: impl IntoFuture<Output = mongodb::error::Result<T>>) -> Result<T, LogsError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(LogsError::from_mongo),
            Err(_) => Err(LogsError::MongoUnavailable {
                detail: format!("no answer within {:?}", self.timeout),
            }),
        }
    }
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
    fn an_item_carries_the_utc_date_time_and_the_exact_instant() {
        let entry = LogEntry {
            id: "v1".into(),
            received_at: DateTime::from_timestamp_millis(1_764_181_439_123).unwrap(),
            band: "<script>alert(1)</script>".into(),
            album: "Fiebre".into(),
            year: 1995,
            rank: 8.5,
            route: "grpc".into(),
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "v1",
                "date": "2025-11-26",
                "time": "18:23:59",
                "received_at": "2025-11-26T18:23:59.123Z",
                "band": "<script>alert(1)</script>",
                "album": "Fiebre",
                "year": 1995,
                "rank": 8.5,
                "route": "grpc",
            })
        );
    }

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
