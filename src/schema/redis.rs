//! Redis: the key names (with the configured prefix), the consumer's offsets
//! field, and the apply script (`apply.lua`) with its typed arguments
//! ([`Deltas`]) and replies ([`ApplyReply`]). The order of the script's KEYS
//! lives in [`RedisKeys::script_keys`], next to the script that reads them.

use std::collections::HashMap;

use deadpool_redis::redis::aio::ConnectionLike;
use deadpool_redis::redis::{RedisError, Script};
use serde::Serialize;

use crate::log_entry::VoteItem;

/// About how many entries the `logs:tail` stream keeps (XADD MAXLEN ~), one
/// per applied batch (a JSON array of its newly counted votes, at most a
/// batch's worth): the live page's buffer of a few seconds at full speed, not
/// a history (MongoDB has every log).
pub const LOGS_TAIL_LEN: usize = 64;

/// The field of a `logs:tail` entry that holds the batch's JSON array of log items.
pub const LOGS_TAIL_FIELD: &str = "logs";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    pub total: String,
    pub by_band: String,
    pub by_album: String,
    pub by_route: String,
    pub rank_sum_by_album: String,
    pub rank_avg_by_album: String,
    pub timeline: String,
    pub offsets: String,
    pub logs_tail: String,
}

impl RedisKeys {
    pub fn new(prefix: &str) -> RedisKeys {
        let key = |name: &str| format!("{prefix}{name}");
        RedisKeys {
            total: key("votes:total"),
            by_band: key("votes:by_band"),
            by_album: key("votes:by_album"),
            by_route: key("votes:by_route"),
            rank_sum_by_album: key("rank:sum_by_album"),
            rank_avg_by_album: key("rank:avg_by_album"),
            timeline: key("votes:timeline"),
            offsets: key("consumer:offsets"),
            logs_tail: key("logs:tail"),
        }
    }

    /// Every key, in the order `apply.lua` reads them as `KEYS[1..9]`.
    pub fn script_keys(&self) -> [&str; 9] {
        [
            &self.total,
            &self.by_band,
            &self.by_album,
            &self.by_route,
            &self.rank_sum_by_album,
            &self.rank_avg_by_album,
            &self.timeline,
            &self.offsets,
            &self.logs_tail,
        ]
    }
}

/// The `consumer:offsets` field of a partition.
pub fn offsets_field(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// The partition of a `consumer:offsets` field of `topic`: the inverse of
/// [`offsets_field`] (`None` for another topic's field).
pub fn offsets_partition(topic: &str, field: &str) -> Option<i32> {
    field.strip_prefix(topic)?.strip_prefix('/')?.parse().ok()
}

/// One partition's share of a batch, as the script fences it: the records
/// after `prev` (the offset read just before this batch), from `first` to
/// `last`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Range {
    /// The partition's `consumer:offsets` field.
    pub field: String,
    pub prev: i64,
    pub first: i64,
    pub last: i64,
}

/// The script's argument: the partitions' ranges and the batch's deltas.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Deltas<'a> {
    pub ranges: Vec<Range>,
    pub total: i64,
    /// Borrowed from the batch: no allocation per vote for the band.
    pub band: HashMap<&'a str, i64>,
    pub album: HashMap<String, i64>,
    pub route: HashMap<&'static str, i64>,
    pub rank: HashMap<String, f64>,
    /// The newly counted votes as log items, in batch order, for the
    /// `logs:tail` stream the live page reads: passed to the script apart
    /// (see [`Deltas::tail_json`]), so Redis stores it without decoding it.
    #[serde(skip)]
    pub tail: Vec<VoteItem<'a>>,
}

impl Deltas<'_> {
    /// The tail as one JSON array: a single `logs:tail` entry per batch.
    pub fn tail_json(&self) -> String {
        serde_json::to_string(&self.tail).unwrap_or_else(|_| "[]".to_owned())
    }
}

/// A partition's offset as Redis has it stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    pub field: String,
    pub offset: i64,
}

/// What the script did with a batch.
#[derive(Debug, PartialEq)]
pub enum ApplyReply {
    /// Counted; `total` is the new `votes:total`.
    Applied { total: i64 },
    /// Nothing applied: some records were counted before (a replay). Drop
    /// those at or below each stored offset and apply again.
    Adjust(Vec<StoredOffset>),
    /// Nothing applied: Redis has not seen the records just before this
    /// batch in `field` (it lost data); `stored` is what it has.
    Gap { field: String, stored: i64 },
}

impl ApplyReply {
    /// Reads the script's reply; `Err` holds a reply of another shape.
    pub fn parse(reply: &[String]) -> Result<ApplyReply, String> {
        let unexpected = || format!("unexpected apply script reply {reply:?}");
        match reply.split_first() {
            Some((status, [total])) if status == "ok" => total
                .parse()
                .map(|total| ApplyReply::Applied { total })
                .map_err(|_| unexpected()),
            Some((status, rest)) if status == "adjust" && !rest.is_empty() => rest
                .chunks(2)
                .map(|c| match c {
                    [field, stored] => stored.parse().ok().map(|offset| StoredOffset {
                        field: field.clone(),
                        offset,
                    }),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(ApplyReply::Adjust)
                .ok_or_else(unexpected),
            Some((status, [field, stored])) if status == "gap" => stored
                .parse()
                .map(|stored| ApplyReply::Gap {
                    field: field.clone(),
                    stored,
                })
                .map_err(|_| unexpected()),
            _ => Err(unexpected()),
        }
    }
}

/// Why an apply call gave no reply to act on.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis: {0}")]
    Reply(String),
}

/// `apply.lua`, loaded once: applies one batch's [`Deltas`] atomically,
/// fenced by the stored offset of each partition.
pub struct ApplyScript(Script);

impl Default for ApplyScript {
    fn default() -> Self {
        ApplyScript(Script::new(include_str!("apply.lua")))
    }
}

impl ApplyScript {
    pub async fn apply(
        &self,
        conn: &mut impl ConnectionLike,
        keys: &RedisKeys,
        deltas: &Deltas<'_>,
    ) -> Result<ApplyReply, ApplyError> {
        let arg = serde_json::to_string(deltas).map_err(|e| ApplyError::Reply(e.to_string()))?;
        let mut call = self.0.prepare_invoke();
        for key in keys.script_keys() {
            call.key(key);
        }
        let reply: Vec<String> = call
            .arg(arg)
            .arg(LOGS_TAIL_LEN)
            .arg(deltas.tail_json())
            .invoke_async(conn)
            .await?;
        ApplyReply::parse(&reply).map_err(ApplyError::Reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_design_with_the_prefix_in_front() {
        let k = RedisKeys::new("t1:");
        assert_eq!(
            k.script_keys(),
            [
                "t1:votes:total",
                "t1:votes:by_band",
                "t1:votes:by_album",
                "t1:votes:by_route",
                "t1:rank:sum_by_album",
                "t1:rank:avg_by_album",
                "t1:votes:timeline",
                "t1:consumer:offsets",
                "t1:logs:tail",
            ]
        );
        assert_eq!(RedisKeys::new("").rank_avg_by_album, "rank:avg_by_album");
    }

    #[test]
    fn an_offsets_field_gives_back_its_partition_for_its_topic_only() {
        assert_eq!(offsets_partition("votes", &offsets_field("votes", 4)), Some(4));
        assert_eq!(offsets_partition("votes", "votes.dlq/4"), None);
        assert_eq!(offsets_partition("votes", "other/4"), None);
        assert_eq!(offsets_partition("votes", "votes/x"), None);
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn script_replies_are_understood() {
        assert_eq!(
            ApplyReply::parse(&s(&["ok", "12"])),
            Ok(ApplyReply::Applied { total: 12 })
        );
        assert_eq!(
            ApplyReply::parse(&s(&["adjust", "votes/0", "41", "votes/3", "7"])),
            Ok(ApplyReply::Adjust(vec![
                StoredOffset {
                    field: "votes/0".into(),
                    offset: 41
                },
                StoredOffset {
                    field: "votes/3".into(),
                    offset: 7
                },
            ]))
        );
        assert_eq!(
            ApplyReply::parse(&s(&["gap", "votes/2", "-1"])),
            Ok(ApplyReply::Gap {
                field: "votes/2".into(),
                stored: -1
            })
        );
        for odd in [
            &["adjust", "votes/0"][..],
            &["adjust"],
            &["ok"],
            &["gap", "votes/2", "x"],
            &[],
        ] {
            assert!(ApplyReply::parse(&s(odd)).is_err(), "{odd:?}");
        }
    }

    #[test]
    fn the_script_names_its_keys_in_the_order_they_are_passed() {
        let keys = RedisKeys::new("");
        let names =
            "total, by_band, by_album, by_route, rank_sum_by_album, rank_avg_by_album, timeline, offsets, logs_tail";
        let fields = [
            &keys.total,
            &keys.by_band,
            &keys.by_album,
            &keys.by_route,
            &keys.rank_sum_by_album,
            &keys.rank_avg_by_album,
            &keys.timeline,
            &keys.offsets,
            &keys.logs_tail,
        ];
        assert_eq!(keys.script_keys().to_vec(), fields.map(String::as_str).to_vec());
        assert!(
            include_str!("apply.lua").contains(&format!("local {names} = unpack(KEYS)")),
            "apply.lua must name KEYS as: {names}"
        );
    }

    #[test]
    fn the_script_writes_the_tail_under_the_field_readers_look_for() {
        let xadd = format!("'*', '{LOGS_TAIL_FIELD}', ARGV[3])");
        assert!(include_str!("apply.lua").contains(&xadd), "apply.lua must XADD {xadd}");
    }

    #[test]
    fn a_range_reaches_the_script_by_name() {
        let deltas = Deltas {
            ranges: vec![Range {
                field: "votes/0".into(),
                prev: 9,
                first: 10,
                last: 12,
            }],
            total: 3,
            ..Deltas::default()
        };
        let json: serde_json::Value = serde_json::to_value(&deltas).unwrap();
        assert_eq!(
            json["ranges"],
            serde_json::json!([{"field": "votes/0", "prev": 9, "first": 10, "last": 12}])
        );
        assert_eq!(deltas.tail_json(), "[]");
    }
}
