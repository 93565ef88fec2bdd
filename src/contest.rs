//! The contest's voting window (`--voting-opens-at`, `--voting-closes-at`)
//! and its status (DESIGN.md, "The voting window"). The ingress refuses votes
//! outside it, the consumer's script marks records received outside it
//! `late`, and the consumer publishes the status the logs app and Grafana
//! show (`contest:status`).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::kafka_options::{KafkaOptions, PassThrough};
use crate::schema::redis::Window;

/// When votes count: from `opens_at` (inclusive) to `closes_at` (exclusive);
/// either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VotingWindow {
    pub opens_at: Option<DateTime<Utc>>,
    pub closes_at: Option<DateTime<Utc>>,
}

/// Where an instant falls relative to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    NotOpen,
    Open,
    Closed,
}

/// The contest's status, as `contest:status` and `/results` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Before the opening.
    NotOpen,
    /// Votes count.
    Open,
    /// Closed; records received before the close may still be counting.
    Closed,
    /// Closed, and every partition counted up to the end of what was
    /// produced before the close.
    Final,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NotOpen => "not_open",
            Status::Open => "open",
            Status::Closed => "closed",
            Status::Final => "final",
        }
    }
}

impl VotingWindow {
    /// A window; refused when it closes before it opens.
    pub fn new(opens_at: Option<DateTime<Utc>>, closes_at: Option<DateTime<Utc>>) -> Result<VotingWindow, String> {
        if let (Some(opens), Some(closes)) = (opens_at, closes_at)
            && closes <= opens
        {
            return Err(format!(
                "--voting-closes-at ({}) must be after --voting-opens-at ({})",
                crate::vote::format_instant(&closes),
                crate::vote::format_instant(&opens)
            ));
        }
        Ok(VotingWindow { opens_at, closes_at })
    }

    pub fn phase(&self, at: DateTime<Utc>) -> Phase {
        if self.opens_at.is_some_and(|opens| at < opens) {
            Phase::NotOpen
        } else if self.closes_at.is_some_and(|closes| at >= closes) {
            Phase::Closed
        } else {
            Phase::Open
        }
    }

    /// The window as the consumer's script applies it to `received_at`.
    pub fn script_window(&self, dedup_window_ms: i64) -> Window {
        Window {
            opens: self.opens_at.map(|t| t.timestamp_millis()),
            closes: self.closes_at.map(|t| t.timestamp_millis()),
            dedup: dedup_window_ms,
        }
    }
}

/// Parses an RFC 3339 instant (a flag's value).
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 instant such as 2026-12-24T20:00:00-06:00: {e}"))
}

/// Whether the counted offsets (`consumer:offsets`) reach every end offset
/// taken after the close (`contest:end`, high watermarks: one past the last
/// record). `false` while no end was taken.
pub fn is_final(end: &BTreeMap<String, i64>, counted: &BTreeMap<String, i64>) -> bool {
    !end.is_empty()
        && end
            .iter()
            .all(|(field, &end)| end <= 0 || counted.get(field).is_some_and(|&last| last >= end - 1))
}

/// Each partition's high watermark (the offset the next record will get) of
/// `topic`: what a partition holds, read by a plain client outside any group.
/// Blocks its thread for up to about `timeout` per request.
pub fn end_offsets(
    brokers: &str,
    options: &KafkaOptions,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, i64>, String> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.auto.commit", "false")
        .pass_through(options)
        .create()
        .map_err(|e| format!("kafka: {e}"))?;
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| format!("kafka: metadata of {topic}: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!("kafka: topic {topic} has no partitions (does it exist?)"));
    }
    partitions
        .into_iter()
        .map(|p| {
            client
                .fetch_watermarks(topic, p, timeout)
                .map(|(_, high)| (p, high))
                .map_err(|e| format!("kafka: watermarks of {topic}/{p}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap()
    }

    #[test]
    fn the_window_opens_inclusive_and_closes_exclusive() {
        let w = VotingWindow::new(Some(at("2026-12-24T20:00:00Z")), Some(at("2026-12-24T22:00:00-00:00"))).unwrap();
        assert_eq!(w.phase(at("2026-12-24T19:59:59.999Z")), Phase::NotOpen);
        assert_eq!(w.phase(at("2026-12-24T20:00:00Z")), Phase::Open);
        assert_eq!(w.phase(at("2026-12-24T21:59:59.999Z")), Phase::Open);
        assert_eq!(w.phase(at("2026-12-24T22:00:00Z")), Phase::Closed);
        assert_eq!(VotingWindow::default().phase(Utc::now()), Phase::Open);
        let w = w.script_window(5);
        assert_eq!(w.closes.unwrap() - w.opens.unwrap(), 7_200_000);
    }

    #[test]
    fn a_window_that_closes_before_it_opens_is_refused_and_bad_instants_named() {
        let e = VotingWindow::new(Some(at("2026-12-24T20:00:00Z")), Some(at("2026-12-24T13:00:00-06:00"))).unwrap_err();
        assert!(e.contains("--voting-closes-at"), "{e}");
        assert_eq!(at("2026-12-24T14:00:00-06:00"), at("2026-12-24T20:00:00Z"));
        assert!(parse_instant("tomorrow").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn final_means_every_partition_counted_to_its_end() {
        let map = |v: &[(&str, i64)]| v.iter().map(|(f, o)| (f.to_string(), *o)).collect::<BTreeMap<_, _>>();
        let end = map(&[("votes/0", 10), ("votes/1", 0)]);
        assert!(
            !is_final(&BTreeMap::new(), &map(&[("votes/0", 99)])),
            "no end taken yet"
        );
        assert!(!is_final(&end, &map(&[("votes/0", 8)])));
        assert!(
            is_final(&end, &map(&[("votes/0", 9)])),
            "an empty partition has nothing to count"
        );
        assert!(is_final(&end, &map(&[("votes/0", 12), ("votes/1", 3)])));
        assert!(!is_final(&map(&[("votes/2", 1)]), &map(&[("votes/0", 12)])));
    }
}
