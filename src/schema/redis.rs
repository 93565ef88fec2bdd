//! Redis: the key names (with the configured prefix), the consumer's offsets
//! field, and the apply script (`apply.lua`) with its typed arguments
//! ([`Decide`]) and replies ([`ApplyReply`]). The order of the script's KEYS
//! lives in [`RedisKeys::script_keys`], next to the script that reads them.

use std::collections::BTreeMap;

use deadpool_redis::redis::aio::ConnectionLike;
use deadpool_redis::redis::{RedisError, Script};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    pub received: String,
    pub by_outcome: String,
    pub voters_total: String,
    pub voters_seen: String,
    pub ratings: String,
    pub votes_seen: String,
    pub seen_sweep: String,
    pub outcomes: String,
    pub contest_status: String,
    pub contest_end: String,
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
            received: key("votes:received"),
            by_outcome: key("votes:by_outcome"),
            voters_total: key("voters:total"),
            voters_seen: key("voters:seen"),
            ratings: key("voters:ratings"),
            votes_seen: key("votes:seen"),
            seen_sweep: key("votes:seen:sweep"),
            outcomes: key("votes:outcomes"),
            contest_status: key("contest:status"),
            contest_end: key("contest:end"),
        }
    }

    /// The keys `apply.lua` reads as `KEYS[1..17]`, in order.
    pub fn script_keys(&self) -> [&str; 17] {
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
            &self.received,
            &self.by_outcome,
            &self.voters_total,
            &self.voters_seen,
            &self.ratings,
            &self.votes_seen,
            &self.seen_sweep,
            &self.outcomes,
        ]
    }

    /// Every key the consumer's rules write, for a recount's scratch copy to
    /// delete, and for tests to clear.
    pub fn all(&self) -> Vec<&str> {
        let mut all = self.script_keys().to_vec();
        all.extend([self.contest_status.as_str(), self.contest_end.as_str()]);
        all
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

/// One record as the script decides it (short field names: a batch is
/// decoded by the script as one JSON document).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptRecord<'a> {
    /// The vote id.
    pub i: String,
    /// The voter, absent for an anonymous vote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v: Option<&'a str>,
    /// The band.
    pub b: &'a str,
    /// The album key, `"<band> / <album>"`.
    pub a: String,
    /// The route.
    pub r: &'static str,
    /// The rank in millionths of a point ([`rank_micros`]).
    pub k: i64,
    /// When the ingress received it, in ms since the epoch.
    pub t: i64,
    /// The 1-based index of the record's range in [`Decide::ranges`].
    pub p: usize,
    /// The record's offset.
    pub o: i64,
}

/// A rank in millionths of a point: the unit rank sums are kept in, so a
/// changed rating is retracted exactly and sums do not depend on the order
/// records are counted in.
pub fn rank_micros(rank: f64) -> i64 {
    // Ranks are validated finite and small: the product fits with room to spare.
    (rank * 1_000_000.0 + 0.5).floor() as i64
}

/// The average rank of an album as the script stores it: `"%.2f"` of the
/// sum over the count.
pub fn average_of(sum_micros: i64, count: i64) -> String {
    format!("{:.2}", sum_micros as f64 / count as f64 / 1_000_000.0)
}

/// The voting window and the dedup window, as the script applies them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Records received before this instant (ms) are late.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opens: Option<i64>,
    /// Records received at or after this instant (ms) are late.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closes: Option<i64>,
    /// A vote id counted at most this long (ms) before is a duplicate.
    pub dedup: i64,
}

/// The script's argument: the partitions' ranges, the records to decide and
/// the windows.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Decide<'a> {
    pub ranges: Vec<Range>,
    pub records: Vec<ScriptRecord<'a>>,
    #[serde(flatten)]
    pub window: Window,
    /// The records' log items, one JSON object each, in the order of
    /// `records`: passed to the script apart ([`Decide::tail_lines`]), so
    /// Redis stores them (with the outcome put in front) without decoding them.
    #[serde(skip)]
    pub tail: Vec<VoteItem<'a>>,
}

impl Decide<'_> {
    /// The log items, one per line (JSON text holds no raw newline).
    pub fn tail_lines(&self) -> String {
        let mut out = String::new();
        for item in &self.tail {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&serde_json::to_string(item).unwrap_or_else(|_| "{}".to_owned()));
        }
        out
    }
}

/// What the rules decided for one record (DESIGN.md, "Outcomes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A new rating, or an anonymous vote.
    Counted,
    /// Replaced the voter's earlier rating of that album.
    Changed,
    /// A vote id counted before, within the dedup window: counted nowhere.
    Duplicate,
    /// Received outside the voting window: counted nowhere.
    Late,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Outcome::Counted, Outcome::Changed, Outcome::Duplicate, Outcome::Late];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Counted => "counted",
            Outcome::Changed => "changed",
            Outcome::Duplicate => "duplicate",
            Outcome::Late => "late",
        }
    }

    /// The script's one-letter code.
    pub fn from_letter(letter: char) -> Option<Outcome> {
        match letter {
            'c' => Some(Outcome::Counted),
            'x' => Some(Outcome::Changed),
            'd' => Some(Outcome::Duplicate),
            'l' => Some(Outcome::Late),
            _ => None,
        }
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
    /// Decided (records decided before, in a replay, are told again, not
    /// applied again); `total` is the new `votes:total`, `decided` how many
    /// records were decided now, `outcomes` one per record of
    /// [`Decide::records`].
    Applied {
        total: i64,
        decided: usize,
        outcomes: Vec<Outcome>,
    },
    /// Nothing applied: Redis has not seen the records just before this
    /// batch in `field` (it lost data); `stored` is what it has.
    Gap { field: String, stored: i64 },
}

impl ApplyReply {
    /// Reads the script's reply; `Err` holds a reply of another shape.
    pub fn parse(reply: &[String]) -> Result<ApplyReply, String> {
        let unexpected = || format!("unexpected apply script reply {reply:?}");
        match reply.split_first() {
            Some((status, [total, decided, letters])) if status == "ok" => {
                let total = total.parse().map_err(|_| unexpected())?;
                let decided = decided.parse().map_err(|_| unexpected())?;
                let outcomes = letters
                    .chars()
                    .map(Outcome::from_letter)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(unexpected)?;
                Ok(ApplyReply::Applied {
                    total,
                    decided,
                    outcomes,
                })
            }
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

/// The standings as counted: what [`standings_digest`] certifies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standings {
    /// `votes:by_band`.
    pub by_band: BTreeMap<String, i64>,
    /// `votes:by_album`.
    pub by_album: BTreeMap<String, i64>,
    /// `rank:sum_by_album`, in millionths of a point.
    pub rank_sum: BTreeMap<String, i64>,
}

/// The digest of the final standings (`/results`, `votestream recount`):
/// SHA-256, in hex, of one line per band `band\t<band>\t<votes>\n` then one
/// per album `album\t<band> / <album>\t<votes>\t<rank sum in millionths>\n`,
/// each sorted by name (bytewise). Anyone holding the counters can compute
/// it again.
pub fn standings_digest(s: &Standings) -> String {
    let mut hash = Sha256::new();
    for (band, votes) in &s.by_band {
        hash.update(format!("band\t{band}\t{votes}\n"));
    }
    for (album, votes) in &s.by_album {
        let sum = s.rank_sum.get(album).copied().unwrap_or(0);
        hash.update(format!("album\t{album}\t{votes}\t{sum}\n"));
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why an apply call gave no reply to act on.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis: {0}")]
    Reply(String),
}

/// `apply.lua`, loaded once: decides and applies one batch ([`Decide`])
/// atomically, fenced by the stored offset of each partition.
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
        decide: &Decide<'_>,
    ) -> Result<ApplyReply, ApplyError> {
        let arg = serde_json::to_string(decide).map_err(|e| ApplyError::Reply(e.to_string()))?;
        let mut call = self.0.prepare_invoke();
        for key in keys.script_keys() {
            call.key(key);
        }
        let reply: Vec<String> = call
            .arg(arg)
            .arg(LOGS_TAIL_LEN)
            .arg(decide.tail_lines())
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
            k.all(),
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
                "t1:votes:received",
                "t1:votes:by_outcome",
                "t1:voters:total",
                "t1:voters:seen",
                "t1:voters:ratings",
                "t1:votes:seen",
                "t1:votes:seen:sweep",
                "t1:votes:outcomes",
                "t1:contest:status",
                "t1:contest:end",
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
        use Outcome::*;
        assert_eq!(
            ApplyReply::parse(&s(&["ok", "12", "3", "cxdl"])),
            Ok(ApplyReply::Applied {
                total: 12,
                decided: 3,
                outcomes: vec![Counted, Changed, Duplicate, Late]
            })
        );
        assert_eq!(
            ApplyReply::parse(&s(&["ok", "0", "0", ""])),
            Ok(ApplyReply::Applied {
                total: 0,
                decided: 0,
                outcomes: vec![]
            })
        );
        assert_eq!(
            ApplyReply::parse(&s(&["gap", "votes/2", "-1"])),
            Ok(ApplyReply::Gap {
                field: "votes/2".into(),
                stored: -1
            })
        );
        for odd in [
            &["ok", "1", "1", "cq"][..],
            &["ok", "1", "c"],
            &["adjust", "votes/0", "41"],
            &["ok"],
            &["ok", "x", "c"],
            &["gap", "votes/2", "x"],
            &[],
        ] {
            assert!(ApplyReply::parse(&s(odd)).is_err(), "{odd:?}");
        }
    }

    #[test]
    fn the_script_names_its_keys_in_the_order_they_are_passed() {
        let keys = RedisKeys::new("");
        let names = "total, by_band, by_album, by_route, rank_sum_by_album, rank_avg_by_album, timeline, \
                     offsets, logs_tail, received, by_outcome, voters_total, voters_seen, ratings, votes_seen, \
                     seen_sweep, outcomes";
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
            &keys.received,
            &keys.by_outcome,
            &keys.voters_total,
            &keys.voters_seen,
            &keys.ratings,
            &keys.votes_seen,
            &keys.seen_sweep,
            &keys.outcomes,
        ];
        assert_eq!(keys.script_keys().to_vec(), fields.map(String::as_str).to_vec());
        assert!(
            include_str!("apply.lua").contains(&format!("local {names} = unpack(KEYS)")),
            "apply.lua must name KEYS as: {names}"
        );
    }

    #[test]
    fn the_script_writes_the_tail_under_the_field_readers_look_for() {
        let xadd = format!("'*', '{LOGS_TAIL_FIELD}', '['");
        assert!(include_str!("apply.lua").contains(&xadd), "apply.lua must XADD {xadd}");
    }

    #[test]
    fn a_batch_reaches_the_script_by_name_without_absent_fields() {
        let decide = Decide {
            ranges: vec![Range {
                field: "votes/0".into(),
                prev: 9,
                first: 10,
                last: 12,
            }],
            records: vec![ScriptRecord {
                i: "id1".into(),
                v: None,
                b: "b",
                a: "b / a".into(),
                r: "http",
                k: rank_micros(7.3),
                t: 5,
                p: 1,
                o: 10,
            }],
            window: Window {
                opens: None,
                closes: Some(99),
                dedup: 1000,
            },
            tail: vec![],
        };
        let json: serde_json::Value = serde_json::to_value(&decide).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "ranges": [{"field": "votes/0", "prev": 9, "first": 10, "last": 12}],
                "records": [{"i": "id1", "b": "b", "a": "b / a", "r": "http", "k": 7_300_000, "t": 5, "p": 1, "o": 10}],
                "closes": 99, "dedup": 1000,
            })
        );
        assert_eq!(decide.tail_lines(), "");
    }

    #[test]
    fn ranks_are_kept_in_exact_millionths() {
        assert_eq!(rank_micros(7.3), 7_300_000);
        assert_eq!(rank_micros(0.1 + 0.2), 300_000);
        assert_eq!(rank_micros(10.0), 10_000_000);
        assert_eq!(average_of(7_300_000 + 8_000_000, 2), "7.65");
    }

    #[test]
    fn the_digest_covers_every_count_and_sum_in_a_fixed_order() {
        let mut s = Standings::default();
        s.by_band.insert("b".into(), 2);
        s.by_album.insert("b / a".into(), 2);
        s.rank_sum.insert("b / a".into(), 15_000_000);
        let d = standings_digest(&s);
        assert_eq!(d.len(), 64);
        assert_eq!(
            d,
            standings_digest(&s.clone()),
            "a digest is a function of the standings"
        );
        let mut changed = s.clone();
        changed.rank_sum.insert("b / a".into(), 15_000_001);
        assert_ne!(standings_digest(&changed), d);
        // Known value: sha256("band\tb\t2\nalbum\tb / a\t2\t15000000\n").
        let mut h = Sha256::new();
        h.update("band\tb\t2\nalbum\tb / a\t2\t15000000\n");
        let expected: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(d, expected);
    }
}
