//! Standings read from the Redis counters the consumer keeps (DESIGN.md,
//! "Redis keys"), so `/results` shows the same numbers Grafana charts.
//! All keys are read in one MULTI/EXEC: the consumer updates them in one Lua
//! script, so the totals in one answer always agree with each other.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use deadpool_redis::{Pool, redis};
use serde::Serialize;

use super::error::LogsError;
use crate::schema::redis::RedisKeys;
use crate::stores::redis_pool;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standings {
    /// `votes:total`.
    pub total: i64,
    /// `votes:by_route`.
    pub by_route: BTreeMap<String, i64>,
    /// `votes:by_band`, most votes first.
    pub bands: Vec<BandVotes>,
    /// `votes:by_album` with `rank:avg_by_album`, most votes first.
    pub albums: Vec<AlbumStanding>,
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

impl Standings {
    fn assemble(
        total: Option<i64>,
        by_band: HashMap<String, i64>,
        by_album: HashMap<String, i64>,
        mut avg_by_album: HashMap<String, f64>,
        by_route: HashMap<String, i64>,
    ) -> Standings {
        let mut bands: Vec<BandVotes> = by_band
            .into_iter()
            .map(|(band, votes)| BandVotes { band, votes })
            .collect();
        bands.sort_by(|a, b| b.votes.cmp(&a.votes).then_with(|| a.band.cmp(&b.band)));
        let mut albums: Vec<AlbumStanding> = by_album
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
        Standings {
            total: total.unwrap_or(0),
            by_route: by_route.into_iter().collect(),
            bands,
            albums,
        }
    }
}

pub struct StandingsReader {
    pool: Pool,
    keys: RedisKeys,
    timeout: Duration,
}

impl StandingsReader {
    /// Prepares the pool; connections are made on first use, so the app
    /// starts while Redis is down.
    pub fn new(url: &str, keys: RedisKeys, timeout: Duration) -> anyhow::Result<StandingsReader> {
        Ok(StandingsReader {
            pool: redis_pool(url, timeout)?,
            keys,
            timeout,
        })
    }

    pub async fn read(&self) -> Result<Standings, LogsError> {
        type Reply = (
            Option<i64>,
            HashMap<String, i64>,
            HashMap<String, i64>,
            HashMap<String, f64>,
            HashMap<String, i64>,
        );
        let (total, by_band, by_album, avg_by_album, by_route): Reply = self
            .bounded(async {
                let mut conn = self.pool.get().await.map_err(LogsError::from_redis_pool)?;
                redis::pipe()
                    .atomic()
                    .get(&self.keys.total)
                    .hgetall(&self.keys.by_band)
                    .hgetall(&self.keys.by_album)
                    .hgetall(&self.keys.rank_avg_by_album)
                    .hgetall(&self.keys.by_route)
                    .query_async(&mut conn)
                    .await
                    .map_err(LogsError::from_redis)
            })
            .await?;
        Ok(Standings::assemble(total, by_band, by_album, avg_by_album, by_route))
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

    fn map<V: Copy>(pairs: &[(&str, V)]) -> HashMap<String, V> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn standings_put_most_votes_first_and_pair_counts_with_averages() {
        let standings = Standings::assemble(
            Some(6),
            map(&[("B", 2), ("A", 2), ("C", 2)]),
            map(&[("A / x", 1), ("B / y", 5)]),
            map(&[("A / x", 9.0), ("B / y", 7.25)]),
            map(&[("grpc", 4), ("http", 2)]),
        );
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
        let standings = Standings::assemble(None, map(&[]), map(&[]), map(&[]), map(&[]));
        assert_eq!(standings.total, 0);
        assert!(standings.bands.is_empty() && standings.albums.is_empty() && standings.by_route.is_empty());
    }
}
