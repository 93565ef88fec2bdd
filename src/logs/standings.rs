//! Standings read from the Redis counters the consumer keeps (DESIGN.md,
//! "Redis keys"), so `/results` shows the same numbers Grafana charts, with
//! the contest's status (`contest:status`) and, once final, the digest of the
//! standings and the offsets they were counted to. All keys are read in one
//! MULTI/EXEC: the consumer updates the counters in one Lua script, so the
//! numbers in one answer always agree with each other and with its status.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_redis::{Pool, redis};
use serde::Serialize;

use super::error::LogsError;
use super::status::Contest;
use crate::contest::{Status, VotingWindow};
use crate::schema::redis::{self as schema, Outcome, RedisKeys, standings_digest};
use crate::stores::redis_pool;

/// The answer of `/results`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standings {
    /// `votes:total`: the current ratings.
    pub total: i64,
    /// `votes:by_route`.
    pub by_route: BTreeMap<String, i64>,
    /// `votes:by_band`, most votes first.
    pub bands: Vec<BandVotes>,
    /// `votes:by_album` with `rank:avg_by_album`, most votes first.
    pub albums: Vec<AlbumStanding>,
    /// `voters:total`.
    pub voters: i64,
    /// `votes:received`: records decided, whatever the outcome.
    pub received: i64,
    /// `votes:by_outcome`, every outcome present.
    pub by_outcome: ByOutcome,
    #[serde(flatten)]
    pub contest: Contest,
    /// Null until the consumer declares the result final.
    #[serde(rename = "final")]
    pub final_result: Option<FinalResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BandVotes {
    pub band: String,
    pub votes: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlbumStanding {
    /// `"<band> / <album>"`, the hash field as Grafana shows it.
    pub album: String,
    pub votes: i64,
    /// Absent when the average has not been written (yet) for this album.
    pub avg_rank: Option<f64>,
}

/// Records decided per outcome (DESIGN.md, "Outcomes").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ByOutcome {
    pub counted: i64,
    pub changed: i64,
    pub duplicate: i64,
    pub late: i64,
}

impl ByOutcome {
    /// From the `votes:by_outcome` hash: an absent field is 0, an unknown one ignored.
    fn of(hash: &HashMap<String, i64>) -> ByOutcome {
        let count = |outcome: Outcome| hash.get(outcome.as_str()).copied().unwrap_or(0);
        ByOutcome {
            counted: count(Outcome::Counted),
            changed: count(Outcome::Changed),
            duplicate: count(Outcome::Duplicate),
            late: count(Outcome::Late),
        }
    }
}

/// The final result: how far each partition was counted (`consumer:offsets`
/// for each field of `contest:end`; null for a partition nothing was
/// counted from) and the digest of the standings
/// ([`schema::standings_digest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FinalResult {
    pub offsets: BTreeMap<String, Option<i64>>,
    pub digest: String,
}

/// The keys of one answer, as Redis holds them, read in one MULTI/EXEC.
#[derive(Debug, Default)]
struct Stored {
    total: Option<i64>,
    by_band: BTreeMap<String, i64>,
    by_album: BTreeMap<String, i64>,
    avg_by_album: HashMap<String, f64>,
    by_route: BTreeMap<String, i64>,
    voters: Option<i64>,
    received: Option<i64>,
    by_outcome: HashMap<String, i64>,
    contest: HashMap<String, String>,
    end: BTreeMap<String, i64>,
    offsets: BTreeMap<String, i64>,
    /// Text: parsed (as integer millionths) only for a final digest, so an
    /// older float sum does not break the rest of the answer.
    rank_sum: BTreeMap<String, String>,
}

impl Standings {
    fn assemble(stored: Stored, window: &VotingWindow, now: DateTime<Utc>) -> Result<Standings, LogsError> {
        let contest = Contest::of(&stored.contest, window, now);
        let final_result = if contest.status == Status::Final {
            Some(final_result(&stored)?)
        } else {
            None
        };
        let mut bands: Vec<BandVotes> = stored
            .by_band
            .into_iter()
            .map(|(band, votes)| BandVotes { band, votes })
            .collect();
        bands.sort_by(|a, b| b.votes.cmp(&a.votes).then_with(|| a.band.cmp(&b.band)));
        let mut avg_by_album = stored.avg_by_album;
        let mut albums: Vec<AlbumStanding> = stored
            .by_album
            .into_iter()
            .map(|(album, votes)| AlbumStanding {
                avg_rank: avg_by_album.remove(&album),
                album,
                votes,
            })
            .collect();
        // An average without a count would be a consumer bug, but it is still
        // what Redis holds, so it is shown rather than hidden.
        albums.extend(avg_by_album.into_iter().map(|(album, avg)| AlbumStanding {
            album,
            votes: 0,
            avg_rank: Some(avg),
        }));
        albums.sort_by(|a, b| b.votes.cmp(&a.votes).then_with(|| a.album.cmp(&b.album)));
        Ok(Standings {
            total: stored.total.unwrap_or(0),
            by_route: stored.by_route,
            bands,
            albums,
            voters: stored.voters.unwrap_or(0),
            received: stored.received.unwrap_or(0),
            by_outcome: ByOutcome::of(&stored.by_outcome),
            contest,
            final_result,
        })
    }
}

fn final_result(stored: &Stored) -> Result<FinalResult, LogsError> {
    let rank_sum = stored
        .rank_sum
        .iter()
        .map(|(album, sum)| match sum.parse::<i64>() {
            Ok(sum) => Ok((album.clone(), sum)),
            Err(_) => Err(LogsError::Internal {
                message: "a Redis counter is not in the documented shape",
                detail: format!("rank:sum_by_album {album:?} is {sum:?}, not integer millionths"),
            }),
        })
        .collect::<Result<_, _>>()?;
    let counted = schema::Standings {
        by_band: stored.by_band.clone(),
        by_album: stored.by_album.clone(),
        rank_sum,
    };
    Ok(FinalResult {
        offsets: stored
            .end
            .keys()
            .map(|field| (field.clone(), stored.offsets.get(field).copied()))
            .collect(),
        digest: standings_digest(&counted),
    })
}

pub struct StandingsReader {
    pool: Pool,
    keys: RedisKeys,
    timeout: Duration,
    /// This app's `--voting-opens-at/--voting-closes-at`: the status while
    /// no consumer has written one.
    window: VotingWindow,
}

impl StandingsReader {
    /// Prepares the pool; connections are made on first use, so the app
    /// starts while Redis is down.
    pub fn new(url: &str, keys: RedisKeys, timeout: Duration, window: VotingWindow) -> anyhow::Result<StandingsReader> {
        Ok(StandingsReader {
            pool: redis_pool(url, timeout)?,
            keys,
            timeout,
            window,
        })
    }

    pub async fn read(&self) -> Result<Standings, LogsError> {
        type Reply = (
            Option<i64>,
            BTreeMap<String, i64>,
            BTreeMap<String, i64>,
            HashMap<String, f64>,
            BTreeMap<String, i64>,
            Option<i64>,
            Option<i64>,
            HashMap<String, i64>,
            HashMap<String, String>,
            BTreeMap<String, i64>,
            BTreeMap<String, i64>,
            BTreeMap<String, String>,
        );
        let k = &self.keys;
        let reply: Reply = self
            .bounded(async {
                let mut conn = self.pool.get().await.map_err(LogsError::from_redis_pool)?;
                redis::pipe()
                    .atomic()
                    .get(&k.total)
                    .hgetall(&k.by_band)
                    .hgetall(&k.by_album)
                    .hgetall(&k.rank_avg_by_album)
                    .hgetall(&k.by_route)
                    .get(&k.voters_total)
                    .get(&k.received)
                    .hgetall(&k.by_outcome)
                    .hgetall(&k.contest_status)
                    .hgetall(&k.contest_end)
                    .hgetall(&k.offsets)
                    .hgetall(&k.rank_sum_by_album)
                    .query_async(&mut conn)
                    .await
                    .map_err(LogsError::from_redis)
            })
            .await?;
        let (
            total,
            by_band,
            by_album,
            avg_by_album,
            by_route,
            voters,
            received,
            by_outcome,
            contest,
            end,
            offsets,
            rank_sum,
        ) = reply;
        let stored = Stored {
            total,
            by_band,
            by_album,
            avg_by_album,
            by_route,
            voters,
            received,
            by_outcome,
            contest,
            end,
            offsets,
            rank_sum,
        };
        Standings::assemble(stored, &self.window, Utc::now())
    }

    pub async fn ping(&self) -> Result<(), LogsError> {
        self.bounded(async {
            let mut conn = self.pool.get().await.map_err(LogsError::from_redis_pool)?;
            redis::cmd("PING")
                .query_async::<()>(&mut conn)
                .await
                .map_err(LogsError::from_redis)
        })
        .await
    }

    async fn bounded<T>(&self, call: impl Future<Output = Result<T, LogsError>>) -> Result<T, LogsError> {
        tokio::time::timeout(self.timeout, call).await.unwrap_or_else(|_| {
            Err(LogsError::RedisUnavailable {
                detail: format!("no answer within {:?}", self.timeout),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map<C: FromIterator<(String, V)>, V: Clone>(pairs: &[(&str, V)]) -> C {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn assemble(stored: Stored) -> Standings {
        Standings::assemble(stored, &VotingWindow::default(), Utc::now()).unwrap()
    }

    #[test]
    fn standings_put_most_votes_first_and_pair_counts_with_averages() {
        let standings = assemble(Stored {
            total: Some(6),
            by_band: map(&[("B", 2), ("A", 2), ("C", 2)]),
            by_album: map(&[("A / x", 1), ("B / y", 5)]),
            avg_by_album: map(&[("A / x", 9.0), ("B / y", 7.25)]),
            by_route: map(&[("grpc", 4), ("http", 2)]),
            ..Stored::default()
        });
        let bands: Vec<&str> = standings.bands.iter().map(|b| b.band.as_str()).collect();
        assert_eq!(bands, ["A", "B", "C"], "ties broken by name");
        assert_eq!(
            standings.albums,
            [
                AlbumStanding {
                    album: "B / y".into(),
                    votes: 5,
                    avg_rank: Some(7.25)
                },
                AlbumStanding {
                    album: "A / x".into(),
                    votes: 1,
                    avg_rank: Some(9.0)
                },
            ]
        );
        assert_eq!(standings.total, 6);
        assert_eq!(standings.by_route["grpc"], 4);
    }

    #[test]
    fn nothing_counted_yet_is_zero_and_empty_lists() {
        let standings = assemble(Stored::default());
        assert_eq!((standings.total, standings.voters, standings.received), (0, 0, 0));
        assert_eq!(standings.by_outcome, ByOutcome::default());
        assert!(standings.bands.is_empty() && standings.albums.is_empty() && standings.by_route.is_empty());
        assert_eq!(standings.contest.status, Status::Open, "no window: open from the start");
        assert_eq!(standings.final_result, None);
    }

    #[test]
    fn every_outcome_is_counted_absent_ones_as_zero() {
        let by_outcome = map(&[("counted", 7), ("late", 2), ("unknown", 9)]);
        assert_eq!(
            ByOutcome::of(&by_outcome),
            ByOutcome {
                counted: 7,
                changed: 0,
                duplicate: 0,
                late: 2
            }
        );
        let json = serde_json::to_value(ByOutcome::default()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"counted": 0, "changed": 0, "duplicate": 0, "late": 0})
        );
    }

    fn final_stored() -> Stored {
        Stored {
            by_band: map(&[("b", 2)]),
            by_album: map(&[("b / a", 2)]),
            rank_sum: map(&[("b / a", "15000000".to_owned())]),
            contest: map(&[("status", "final".to_owned())]),
            end: map(&[("votes/0", 10), ("votes/1", 0)]),
            offsets: map(&[("votes/0", 9), ("votes.dlq/0", 4)]),
            ..Stored::default()
        }
    }

    #[test]
    fn a_final_result_carries_the_digest_and_the_offsets_of_the_ended_partitions() {
        let standings = assemble(final_stored());
        let counted = schema::Standings {
            by_band: map(&[("b", 2)]),
            by_album: map(&[("b / a", 2)]),
            rank_sum: map(&[("b / a", 15_000_000)]),
        };
        assert_eq!(
            standings.final_result,
            Some(FinalResult {
                offsets: map(&[("votes/0", Some(9)), ("votes/1", None)]),
                digest: standings_digest(&counted),
            })
        );
        let json = serde_json::to_value(&standings).unwrap();
        assert_eq!(
            json["final"]["offsets"],
            serde_json::json!({"votes/0": 9, "votes/1": null})
        );
        let open = serde_json::to_value(assemble(Stored::default())).unwrap();
        assert_eq!(open["final"], serde_json::Value::Null);
    }

    #[test]
    fn a_rank_sum_that_is_not_integer_millionths_breaks_only_a_final_answer() {
        let mut stored = final_stored();
        stored.rank_sum.insert("b / a".into(), "15.5".into());
        let error = Standings::assemble(stored, &VotingWindow::default(), Utc::now()).unwrap_err();
        assert!(matches!(error, LogsError::Internal { .. }), "{error:?}");
        let mut stored = final_stored();
        stored.contest.clear();
        stored.rank_sum.insert("b / a".into(), "15.5".into());
        assert!(Standings::assemble(stored, &VotingWindow::default(), Utc::now()).is_ok());
    }
}
