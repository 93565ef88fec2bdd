//! One log as users see it: the JSON item of `GET /logs`, of the live
//! stream's `log` events, and of the `logs:tail` Redis stream the consumer
//! feeds (DESIGN.md, "Redis keys"). The consumer encodes it, the logs app
//! reads it back, so both sides share this one type.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};

use crate::schema::redis::Outcome;
use crate::vote::{VoteRecord, format_instant};

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
    /// The voter as sent, `None` when anonymous.
    pub voter: Option<String>,
    /// What the rules decided (DESIGN.md, "Outcomes").
    pub outcome: Outcome,
}

/// The JSON item of `/logs` and `/logs/stream`: the UTC date and time as the
/// page prints them, plus the exact instant. Borrowed from a [`LogEntry`]
/// (the logs app) or a [`VoteRecord`] (the consumer, with no copy per vote).
#[derive(Serialize)]
struct Item<'a, Id: Serialize> {
    id: Id,
    date: String,
    time: String,
    received_at: String,
    band: &'a str,
    album: &'a str,
    year: i64,
    rank: f64,
    route: &'a str,
    /// Always present: null for an anonymous vote.
    voter: Option<&'a str>,
    /// Absent from the consumer's items: its script puts the outcome it
    /// decided in front of each one.
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
}

impl<'a, Id: Serialize> Item<'a, Id> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: Id,
        at: &DateTime<Utc>,
        band: &'a str,
        album: &'a str,
        year: i64,
        rank: f64,
        route: &'a str,
        voter: Option<&'a str>,
        outcome: Option<Outcome>,
    ) -> Self {
        Item {
            id,
            date: at.format("%Y-%m-%d").to_string(),
            time: at.format("%H:%M:%S").to_string(),
            received_at: format_instant(at),
            band,
            album,
            year,
            rank,
            route,
            voter,
            outcome: outcome.map(Outcome::as_str),
        }
    }
}

impl Serialize for LogEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self;
        Item::new(
            &e.id,
            &e.received_at,
            &e.band,
            &e.album,
            e.year,
            e.rank,
            &e.route,
            e.voter.as_deref(),
            Some(e.outcome),
        )
        .serialize(s)
    }
}

/// A vote as the same log item, without copying it: what the consumer writes
/// to the `logs:tail` stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoteItem<'a>(pub &'a VoteRecord);

impl Serialize for VoteItem<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        Item::new(
            &v.id,
            &v.received_at,
            &v.name,
            &v.album,
            i64::from(v.year),
            v.rank,
            v.route.as_str(),
            v.voter.as_deref(),
            None,
        )
        .serialize(s)
    }
}

/// The fields a live-stream filter looks at, read back from an encoded item.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ItemKey {
    pub band: String,
    pub album: String,
    pub route: String,
}

#[cfg(test)]
mod tests {
    use super::*;

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
            voter: Some("u7".into()),
            outcome: Outcome::Changed,
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
                "voter": "u7",
                "outcome": "changed",
            })
        );
    }

    #[test]
    fn a_vote_is_encoded_as_the_same_item_as_its_log() {
        let vote = crate::vote::Vote::new("La Tona", "Tona", 1999, 6.5, &crate::vote::Rules::default())
            .unwrap()
            .stamp(
                crate::vote::Route::Http,
                DateTime::from_timestamp_millis(1_764_181_439_123).unwrap(),
            );
        let entry = LogEntry {
            id: vote.id.to_string(),
            received_at: vote.received_at,
            band: "La Tona".into(),
            album: "Tona".into(),
            year: 1999,
            rank: 6.5,
            route: "http".into(),
            voter: None,
            outcome: Outcome::Counted,
        };
        // The same item but for the outcome, which the consumer's script puts in front.
        let mut item: serde_json::Value = serde_json::to_value(VoteItem(&vote)).unwrap();
        assert!(item.get("outcome").is_none());
        item["outcome"] = "counted".into();
        assert_eq!(item, serde_json::to_value(&entry).unwrap());
        assert_eq!(item["voter"], serde_json::Value::Null);
    }

    #[test]
    fn an_encoded_item_gives_back_the_fields_filters_look_at() {
        let entry = LogEntry {
            id: "v1".into(),
            received_at: DateTime::from_timestamp_millis(0).unwrap(),
            band: "Bohemia Suburbana".into(),
            album: "Mil Palabras".into(),
            year: 1998,
            rank: 9.0,
            route: "http".into(),
            voter: None,
            outcome: Outcome::Late,
        };
        let key: ItemKey = serde_json::from_str(&serde_json::to_string(&entry).unwrap()).unwrap();
        assert_eq!(
            key,
            ItemKey {
                band: "Bohemia Suburbana".into(),
                album: "Mil Palabras".into(),
                route: "http".into()
            }
        );
    }
}
