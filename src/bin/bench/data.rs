//! The benchmark's own data: votes shaped like the ingress's records (20
//! bands with 3 albums each, both routes, ranks 0..=10, UUIDv7 ids), and the
//! consumer's batches built from them the way the reader builds them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use votestream::consumer::{Batcher, Entry, SharedBatch};
use votestream::schema::redis::Outcome;
use votestream::vote::{Route, Rules, Vote, VoteRecord};

pub const BANDS: usize = 20;
pub const ALBUMS_PER_BAND: usize = 3;

/// The `i`-th vote: spread evenly over bands, albums and both routes.
pub fn vote(i: usize) -> VoteRecord {
    ballot(i, i % BANDS, (i / BANDS) % ALBUMS_PER_BAND).stamp(route(i), Utc::now())
}

/// The `i`-th vote's fields, for `band` and `album`: the year and rank spread over `i`.
fn ballot(i: usize, band: usize, album: usize) -> Vote {
    Vote::new(
        &format!("Banda {band:02}"),
        &format!("Álbum {band:02}-{album}"),
        1980 + (i % 40) as i64,
        (i % 21) as f64 / 2.0,
        &Rules::default(),
    )
    .expect("generated votes are valid")
}

fn route(i: usize) -> Route {
    if i.is_multiple_of(2) { Route::Grpc } else { Route::Http }
}

/// Albums a voter of the contest backlog may rate (20 bands x 3 albums).
const ALBUMS: usize = BANDS * ALBUMS_PER_BAND;

/// The `i`-th record of a contest from `voters` voters: voters take turns
/// (record `i` is voter `i % voters`'s vote of round `i / voters`); in 3
/// rounds of 10 a voter rates again the album of their previous round (a
/// change: 30 %), otherwise a new one; every 20th record resends the record
/// before it, same request id (a retry: 5 %). Every vote carries a request id.
pub fn contest_vote(i: usize, voters: usize) -> VoteRecord {
    if i % 20 == 19 {
        let earlier = contest_vote(i - 1, voters);
        return VoteRecord {
            received_at: Utc::now(),
            ..earlier
        };
    }
    let voter = i % voters;
    let round = i / voters;
    let changes = |r: usize| r > 0 && matches!((voter + r) % 10, 3 | 6 | 9);
    // The album of `round`: the previous round's when it changes, else the next new one.
    let new_ratings = (0..=round).filter(|&r| !changes(r)).count();
    let album = (voter + new_ratings.saturating_sub(1)) % ALBUMS;
    ballot(i, album % BANDS, album / BANDS)
        .with_ids(Some(&format!("voter-{voter:06}")), Some(&format!("r{round}")))
        .expect("generated ids are valid")
        .stamp(route(i), Utc::now())
}

pub fn votes(n: usize) -> Vec<VoteRecord> {
    (0..n).map(vote).collect()
}

/// `batches` batches of `batch_size` votes over `partitions` partitions, with
/// consecutive offsets per partition, as the reader hands them to the sinks.
pub fn batches(batches: usize, batch_size: usize, partitions: i32, topic: &str) -> Vec<SharedBatch> {
    batches_of(batches, batch_size, partitions, topic, vote)
}

/// [`batches`] of the records `record(0)`, `record(1)`, ...; every record is
/// marked counted (what Redis decides for anonymous votes), so a raw Mongo
/// write can log them without Redis.
pub fn batches_of(
    batches: usize,
    batch_size: usize,
    partitions: i32,
    topic: &str,
    record: impl Fn(usize) -> VoteRecord,
) -> Vec<SharedBatch> {
    let mut batcher = Batcher::new(batch_size, Duration::from_secs(3600));
    let mut prev = BTreeMap::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let now = Instant::now();
    let mut i = 0;
    (1..=batches as u64)
        .map(|seq| {
            while !batcher.is_full() {
                let partition = (i % partitions as usize) as i32;
                let offset = next.entry(partition).or_insert(0);
                batcher.push(
                    Entry {
                        partition,
                        offset: *offset,
                        vote: Some(record(i)),
                    },
                    now,
                );
                *offset += 1;
                i += 1;
            }
            let batch = batcher.take(seq, topic, |p, last| prev.insert(p, last));
            let _ = batch.outcomes.set(vec![Outcome::Counted; batch.vote_count()]);
            Arc::new(batch)
        })
        .collect()
}
