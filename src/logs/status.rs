//! The contest's status as `/results` tells it: what the consumer wrote in
//! `contest:status`, or, while none has, what this app's own voting window
//! says.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use crate::contest::{Phase, Status, VotingWindow};
use crate::vote::format_instant;

/// Where the contest stands, and its window (RFC 3339, null when unset).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contest {
    #[serde(serialize_with = "status_name")]
    pub status: Status,
    pub opens_at: Option<String>,
    pub closes_at: Option<String>,
}

fn status_name<S: Serializer>(status: &Status, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(status.as_str())
}

const STATUSES: [Status; 4] = [Status::NotOpen, Status::Open, Status::Closed, Status::Final];

impl Contest {
    /// `contest:status` as the consumer wrote it; while no consumer has
    /// (the key is absent, or its status unknown), this app's own window at
    /// `now`, which can say closed but never final: only the consumer knows
    /// what it counted.
    pub fn of(stored: &HashMap<String, String>, window: &VotingWindow, now: DateTime<Utc>) -> Contest {
        let written = stored
            .get("status")
            .and_then(|name| STATUSES.into_iter().find(|s| s.as_str() == name));
        if let Some(status) = written {
            // The consumers write it every second; an `open` (or `not_open`) whose window has
            // since passed is stale (every consumer stopped, say): the window it names decides.
            let instant = |name: &str| stored.get(name).and_then(|t| crate::contest::parse_instant(t).ok());
            let theirs = VotingWindow {
                opens_at: instant("opens_at"),
                closes_at: instant("closes_at"),
            };
            let status = match (status, theirs.phase(now)) {
                (Status::NotOpen | Status::Open, Phase::NotOpen) => Status::NotOpen,
                (Status::NotOpen | Status::Open, Phase::Open) => Status::Open,
                (Status::NotOpen | Status::Open, Phase::Closed) => Status::Closed,
                (settled, _) => settled,
            };
            return Contest {
                status,
                opens_at: stored.get("opens_at").cloned(),
                closes_at: stored.get("closes_at").cloned(),
            };
        }
        Contest {
            status: match window.phase(now) {
                Phase::NotOpen => Status::NotOpen,
                Phase::Open => Status::Open,
                Phase::Closed => Status::Closed,
            },
            opens_at: window.opens_at.as_ref().map(format_instant),
            closes_at: window.closes_at.as_ref().map(format_instant),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contest::parse_instant;

    fn at(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap()
    }

    fn window() -> VotingWindow {
        VotingWindow::new(Some(at("2026-12-24T20:00:00Z")), Some(at("2026-12-24T22:00:00Z"))).unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_stale_open_from_the_consumers_turns_closed_once_their_window_closes() {
        let stored = map(&[
            ("status", "open"),
            ("opens_at", "2026-12-24T20:00:00.000Z"),
            ("closes_at", "2026-12-24T22:00:00.000Z"),
        ]);
        let status = |now: &str| Contest::of(&stored, &VotingWindow::default(), at(now)).status;
        assert_eq!(status("2026-12-24T21:00:00Z"), Status::Open);
        assert_eq!(status("2026-12-24T22:00:01Z"), Status::Closed);
        let final_ = map(&[("status", "final"), ("closes_at", "2026-12-24T22:00:00.000Z")]);
        assert_eq!(
            Contest::of(&final_, &window(), at("2026-12-24T23:00:00Z")).status,
            Status::Final
        );
    }

    #[test]
    fn without_a_status_from_the_consumer_the_window_of_this_app_decides_never_final() {
        let none = HashMap::new();
        let status = |now: &str| Contest::of(&none, &window(), at(now)).status;
        assert_eq!(status("2026-12-24T19:59:59Z"), Status::NotOpen);
        assert_eq!(status("2026-12-24T20:00:00Z"), Status::Open);
        assert_eq!(
            status("2027-01-30T00:00:00Z"),
            Status::Closed,
            "only the consumer says final"
        );
        let contest = Contest::of(&none, &window(), at("2026-12-24T21:00:00Z"));
        assert_eq!(contest.opens_at.as_deref(), Some("2026-12-24T20:00:00.000Z"));
        assert_eq!(contest.closes_at.as_deref(), Some("2026-12-24T22:00:00.000Z"));
        let open_ended = Contest::of(&none, &VotingWindow::default(), Utc::now());
        assert_eq!((open_ended.opens_at, open_ended.closes_at), (None, None));
    }

    #[test]
    fn the_status_the_consumer_wrote_wins_with_its_window() {
        let stored = map(&[("status", "final"), ("closes_at", "2026-12-24T22:00:00.000Z")]);
        let contest = Contest::of(&stored, &window(), at("2026-12-24T21:00:00Z"));
        assert_eq!(
            contest,
            Contest {
                status: Status::Final,
                opens_at: None,
                closes_at: Some("2026-12-24T22:00:00.000Z".into())
            }
        );
        let json = serde_json::to_value(&contest).unwrap();
        assert_eq!(json["status"], "final");
        let garbled = map(&[("status", "finished")]);
        assert_eq!(
            Contest::of(&garbled, &window(), at("2026-12-24T21:00:00Z")).status,
            Status::Open,
            "a status this app does not know is ignored"
        );
    }
}
