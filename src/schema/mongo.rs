//! The `logs` collection: one [`LogDocument`] per vote, and the index that
//! serves the logs app's page order on MongoDB.

use chrono::{DateTime, Utc};
use mongodb::bson::{self, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::log_entry::LogEntry;
use crate::schema::redis::Outcome;
use crate::vote::VoteRecord;

/// The collection of one log per vote, written by the consumer and read by the logs app.
pub const LOGS_COLLECTION: &str = "logs";

/// The name of the index on [`page_order`].
pub const PAGE_ORDER_INDEX: &str = "received_at_desc_id_desc";

/// The logs app's page order: newest first, the vote id breaking ties
/// between votes received in the same millisecond, so a cursor names one
/// exact position.
pub fn page_order() -> Document {
    doc! { "received_at": -1, "_id": -1 }
}

/// One record's log. Its position in Kafka (`<topic>/<partition>/<offset>`)
/// is the `_id`, so a replayed record is a duplicate key ("already logged"),
/// never a second document, while a duplicate vote (a retry: the same vote
/// id at another position) has a log of its own.
///
/// Numbers are read leniently: a year stored as Int32 or Int64 (in range),
/// a rank stored as an integer or a double, whatever the writer chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogDocument {
    /// The record's position ([`LogDocument::position`]).
    #[serde(rename = "_id")]
    pub id: String,
    /// The vote id (logs written before voters existed have it as `_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_id: Option<String>,
    /// The voter as sent; absent when anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voter: Option<String>,
    /// What the rules decided (older logs, without it, were all counted).
    #[serde(default = "counted")]
    pub outcome: Outcome,
    /// When the ingress accepted the vote.
    pub received_at: bson::DateTime,
    /// When the consumer wrote this document.
    pub logged_at: bson::DateTime,
    pub name: String,
    pub album: String,
    pub year: i32,
    pub rank: f64,
    pub route: String,
    /// Where the vote was read in Kafka.
    pub partition: i32,
    pub offset: i64,
}

impl LogDocument {
    /// The `_id` of the record at `partition`/`offset` of `topic`.
    pub fn position(topic: &str, partition: i32, offset: i64) -> String {
        format!("{topic}/{partition}/{offset}")
    }

    /// The log of `vote`, read at `topic`/`partition`/`offset`, decided
    /// `outcome`, written at `logged_at`.
    pub fn of(
        vote: &VoteRecord,
        topic: &str,
        (partition, offset): (i32, i64),
        outcome: Outcome,
        logged_at: bson::DateTime,
    ) -> LogDocument {
        LogDocument {
            id: LogDocument::position(topic, partition, offset),
            vote_id: Some(vote.id.to_string()),
            voter: vote.voter.clone(),
            outcome,
            received_at: bson::DateTime::from_millis(vote.received_at.timestamp_millis()),
            logged_at,
            name: vote.name.clone(),
            album: vote.album.clone(),
            year: vote.year,
            rank: vote.rank,
            route: vote.route.as_str().to_owned(),
            partition,
            offset,
        }
    }

    /// The log as the logs app shows it; an error names a document whose
    /// instant is out of range.
    pub fn entry(self) -> Result<LogEntry, String> {
        let millis = self.received_at.timestamp_millis();
        let received_at = DateTime::<Utc>::from_timestamp_millis(millis)
            .ok_or_else(|| format!("log {}: received_at {millis} ms is out of range", self.id))?;
        Ok(LogEntry {
            id: self.vote_id.unwrap_or(self.id),
            received_at,
            band: self.name,
            album: self.album,
            year: i64::from(self.year),
            rank: self.rank,
            route: self.route,
            voter: self.voter,
            outcome: self.outcome,
        })
    }
}

fn counted() -> Outcome {
    Outcome::Counted
}

/// The `logs` collection of `db`.
pub fn logs(db: &Database) -> Collection<LogDocument> {
    db.collection(LOGS_COLLECTION)
}

/// Creates the indexes the logs need (creating one that exists is a no-op).
/// The consumer calls it when it connects, the logs app when MongoDB is
/// first reachable.
pub async fn ensure_indexes(db: &Database) -> mongodb::error::Result<()> {
    let index = IndexModel::builder()
        .keys(page_order())
        .options(IndexOptions::builder().name(PAGE_ORDER_INDEX.to_owned()).build())
        .build();
    logs(db).create_index(index).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vote::{Route, Rules, Vote};

    #[test]
    fn a_log_keeps_the_vote_and_where_it_was_read() {
        let at = DateTime::from_timestamp_millis(1_764_181_439_123).unwrap();
        let vote = Vote::new("La Tona", "Tona", 1999, 6.5, &Rules::default())
            .unwrap()
            .stamp(Route::Http, at);
        let log = LogDocument::of(
            &vote,
            "votes",
            (3, 42),
            Outcome::Counted,
            bson::DateTime::from_millis(5),
        );
        let stored = bson::to_document(&log).unwrap();
        assert_eq!(
            stored,
            doc! {
                "_id": "votes/3/42", "vote_id": vote.id.to_string(), "outcome": "counted",
                "received_at": bson::DateTime::from_millis(1_764_181_439_123),
                "logged_at": bson::DateTime::from_millis(5), "name": "La Tona", "album": "Tona",
                "year": 1999_i32, "rank": 6.5, "route": "http", "partition": 3_i32, "offset": 42_i64,
            }
        );
        let entry = log.entry().unwrap();
        assert_eq!(
            (entry.id, entry.received_at, entry.year, entry.voter),
            (vote.id.to_string(), at, 1999, None)
        );
        let vote = vote.clone();
        let voter = crate::vote::VoteRecord {
            voter: Some("u1".into()),
            ..vote
        };
        let log = LogDocument::of(
            &voter,
            "votes",
            (0, 1),
            Outcome::Duplicate,
            bson::DateTime::from_millis(5),
        );
        let stored = bson::to_document(&log).unwrap();
        assert_eq!(
            (stored.get_str("voter"), stored.get_str("outcome")),
            (Ok("u1"), Ok("duplicate"))
        );
    }

    #[test]
    fn year_and_rank_are_read_whatever_numeric_type_was_stored() {
        let stored = doc! {
            "_id": "v1", "received_at": bson::DateTime::from_millis(0), "logged_at": bson::DateTime::from_millis(5),
            "name": "b", "album": "a", "year": 1990_i64, "rank": 7_i32, "route": "http", "partition": 3, "offset": 42_i64,
        };
        let log: LogDocument = bson::from_document(stored).unwrap();
        let entry = log.entry().unwrap();
        assert_eq!((entry.year, entry.rank), (1990, 7.0));
        assert_eq!(
            (entry.id.as_str(), entry.outcome),
            ("v1", Outcome::Counted),
            "a log from before outcomes"
        );
    }
}
