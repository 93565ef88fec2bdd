//! The offset-fenced Redis apply script, driven directly (no actors): a
//! replayed batch is never counted twice, a partly replayed one counts only
//! its new records, and a batch Redis is behind on is refused as a gap.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use deadpool_redis::redis;
use votestream::consumer::ConsumerMetrics;
use votestream::consumer::RedisWriter;
use votestream::consumer::{Batch, Entry, PartitionRange, SharedBatch};
use votestream::consumer::{Sink, SinkError, WriteFailure};
use votestream::schema::redis::{LOGS_TAIL_FIELD, Outcome, RedisKeys, Window, offsets_field};
use votestream::stores::STORE_TIMEOUT;
use votestream::stores::redis_pool;
use votestream::vote::{Route, Rules, Vote, VoteRecord};

use crate::common::{redis_url, unique};

/// Votes at `offsets` of partition 0, each for "Alux Nahual / Hijos del Maíz" with rank 8.
fn batch(prev: i64, offsets: std::ops::RangeInclusive<i64>) -> SharedBatch {
    let entries: Vec<Entry> = offsets
        .clone()
        .map(|offset| Entry {
            partition: 0,
            offset,
            vote: Some(
                Vote::new("Alux Nahual", "Hijos del Maíz", 1985, 8.0, &Rules::default())
                    .unwrap()
                    .stamp(Route::Grpc, Utc::now()),
            ),
        })
        .collect();
    let range = PartitionRange {
        partition: 0,
        prev,
        first: *offsets.start(),
        last: *offsets.end(),
    };
    Arc::new(Batch {
        seq: 1,
        topic: "votes".into(),
        entries,
        ranges: vec![range],
        outcomes: Default::default(),
    })
}

struct Fixture {
    writer: RedisWriter,
    pool: deadpool_redis::Pool,
    keys: RedisKeys,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_window(Window {
            dedup: 86_400_000,
            ..Window::default()
        })
    }

    fn with_window(window: Window) -> Fixture {
        let keys = RedisKeys::new(&format!("{}:", unique("fencing")));
        Fixture {
            writer: RedisWriter::new(&redis_url(), keys.clone(), window, Arc::new(ConsumerMetrics::new())),
            pool: redis_pool(&redis_url(), STORE_TIMEOUT).unwrap(),
            keys,
        }
    }

    async fn apply(&self, b: SharedBatch) -> Result<usize, WriteFailure> {
        self.writer.write(self.pool.clone(), b).await.map(|w| w.votes)
    }

    async fn state(&self) -> (i64, String, HashMap<String, String>) {
        let mut conn = self.pool.get().await.unwrap();
        let total: i64 = redis::cmd("GET")
            .arg(&self.keys.total)
            .query_async(&mut conn)
            .await
            .unwrap();
        let offset: String = redis::cmd("HGET")
            .arg(&self.keys.offsets)
            .arg(offsets_field("votes", 0))
            .query_async(&mut conn)
            .await
            .unwrap();
        let avg: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&self.keys.rank_avg_by_album)
            .query_async(&mut conn)
            .await
            .unwrap();
        (total, offset, avg)
    }

    /// The vote ids in the live-tail stream (one JSON array per batch), oldest first.
    async fn tail_ids(&self) -> Vec<String> {
        let mut conn = self.pool.get().await.unwrap();
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&self.keys.logs_tail)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        entries
            .into_iter()
            .flat_map(|(_, fields)| {
                let (_, logs) = fields.iter().find(|(name, _)| name == LOGS_TAIL_FIELD).unwrap();
                let items: Vec<serde_json::Value> = serde_json::from_str(logs).unwrap();
                items.into_iter().map(|item| item["id"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    async fn clean(&self) {
        let mut conn = self.pool.get().await.unwrap();
        let _: i64 = redis::cmd("DEL")
            .arg(&self.keys.all()[..])
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_replayed_batch_is_counted_once() {
    let f = Fixture::new();
    let first = f.apply(batch(-1, 0..=9)).await;
    assert!(matches!(first, Ok(10)), "{first:?}");
    assert_eq!(f.apply(batch(-1, 0..=9)).await.ok(), Some(0), "the replay adds nothing");
    let (total, offset, avg) = f.state().await;
    f.clean().await;
    assert_eq!(total, 10);
    assert_eq!(offset, "9");
    assert_eq!(avg["Alux Nahual / Hijos del Maíz"], "8.00");
}

#[tokio::test]
async fn a_partly_replayed_batch_counts_only_its_new_records() {
    let f = Fixture::new();
    assert_eq!(f.apply(batch(-1, 0..=9)).await.ok(), Some(10));
    // Read again after a crash, with other batch boundaries: 5..=14 overlaps 5..=9.
    let replay = batch(4, 5..=14);
    assert_eq!(f.apply(replay.clone()).await.ok(), Some(5));
    let (total, offset, _) = f.state().await;
    let tail = f.tail_ids().await;
    f.clean().await;
    assert_eq!((total, offset.as_str()), (15, "14"));
    // The live tail got each vote once: 0..=9 from the first batch, then only 10..=14.
    assert_eq!(tail.len(), 15);
    let new_ids: Vec<String> = replay.votes().skip(5).map(|(_, v)| v.id.to_string()).collect();
    assert_eq!(tail[10..], new_ids[..]);
}

#[tokio::test]
async fn a_batch_that_redis_is_behind_on_is_refused_as_a_gap() {
    let f = Fixture::new();
    // Redis never saw offsets 0..=9 (it lost them): nothing of 10..=19 may be counted.
    let refused = f.apply(batch(9, 10..=19)).await;
    let mut conn = f.pool.get().await.unwrap();
    let total: Option<i64> = redis::cmd("GET")
        .arg(&f.keys.total)
        .query_async(&mut conn)
        .await
        .unwrap();
    f.clean().await;
    match refused {
        Err(WriteFailure::Refused(SinkError::Gap { field, stored })) => {
            assert_eq!((field, stored), (offsets_field("votes", 0), -1))
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(total, None, "nothing applied");
}

/// A vote of `voter` (or anonymous) for `album` of Alux Nahual, received `ms` after T.
fn rating(voter: Option<&str>, request: Option<&str>, album: &str, rank: f64, ms: i64) -> VoteRecord {
    Vote::new("Alux Nahual", album, 1985, rank, &Rules::default())
        .unwrap()
        .with_ids(voter, request)
        .unwrap()
        .stamp(Route::Http, chrono::DateTime::from_timestamp_millis(T + ms).unwrap())
}

const T: i64 = 1_767_225_600_000;

fn batch_of(prev: i64, first: i64, votes: Vec<VoteRecord>) -> SharedBatch {
    let last = first + votes.len() as i64 - 1;
    let entries = votes
        .into_iter()
        .enumerate()
        .map(|(i, vote)| Entry {
            partition: 0,
            offset: first + i as i64,
            vote: Some(vote),
        })
        .collect();
    Arc::new(Batch {
        seq: 1,
        topic: "votes".into(),
        entries,
        ranges: vec![PartitionRange {
            partition: 0,
            prev,
            first,
            last,
        }],
        outcomes: Default::default(),
    })
}

impl Fixture {
    async fn ints(&self, key: &str) -> HashMap<String, i64> {
        let mut conn = self.pool.get().await.unwrap();
        redis::cmd("HGETALL").arg(key).query_async(&mut conn).await.unwrap()
    }

    async fn int(&self, key: &str) -> i64 {
        let mut conn = self.pool.get().await.unwrap();
        let v: Option<i64> = redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap();
        v.unwrap_or(0)
    }
}

#[tokio::test]
async fn the_script_decides_each_outcome_in_order_and_tells_the_same_again_on_a_replay() {
    use Outcome::*;
    // Closes 5 s after T; a vote id is remembered 3 s (and kept twice as long).
    let f = Fixture::with_window(Window {
        opens: Some(T),
        closes: Some(T + 5_000),
        dedup: 3_000,
    });
    let first = rating(Some("u1"), Some("r1"), "Hijos del Maíz", 5.0, 0);
    let anonymous = rating(None, Some("r9"), "Hijos del Maíz", 9.0, 20);
    let votes = vec![
        first.clone(),
        rating(Some("u1"), None, "Hijos del Maíz", 7.5, 10),
        anonymous.clone(),
        VoteRecord {
            received_at: anonymous.received_at + chrono::Duration::milliseconds(3_000),
            ..anonymous.clone()
        },
        rating(Some("u2"), None, "Hijos del Maíz", 1.0, 5_000),
        rating(Some("u2"), None, "Hijos del Maíz", 1.0, -1),
        VoteRecord {
            received_at: first.received_at + chrono::Duration::milliseconds(3_001),
            ..first.clone()
        },
        rating(Some("u2"), None, "Alux Nahual", 3.25, 30),
    ];
    let batch = batch_of(-1, 0, votes.clone());
    assert_eq!(f.apply(batch.clone()).await.ok(), Some(8), "every record decided");
    let expected = vec![Counted, Changed, Counted, Duplicate, Late, Late, Changed, Counted];
    assert_eq!(batch.outcomes.get(), Some(&expected));
    let album = "Alux Nahual / Hijos del Maíz";
    let counters = || async {
        (
            f.int(&f.keys.total).await,
            f.int(&f.keys.received).await,
            f.int(&f.keys.voters_total).await,
            f.ints(&f.keys.by_outcome).await,
            f.ints(&f.keys.rank_sum_by_album).await,
            f.ints(&f.keys.by_route).await,
        )
    };
    let before = counters().await;
    assert_eq!((before.0, before.1, before.2), (3, 8, 2), "ratings, received, voters");
    assert_eq!(before.3["changed"], 2);
    assert_eq!(before.3["duplicate"], 1);
    assert_eq!(before.3["late"], 2);
    // u1's latest rank (the retry outside the dedup window changed it back to 5) plus the anonymous 9.
    assert_eq!(before.4[album], 14_000_000);
    assert_eq!(before.5["http"], 8, "every decided record, by route");
    let avg: HashMap<String, String> = {
        let mut conn = f.pool.get().await.unwrap();
        redis::cmd("HGETALL")
            .arg(&f.keys.rank_avg_by_album)
            .query_async(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(avg[album], "7.00");

    // The same records again (a replay after a crash), partly with two new ones.
    let replay = batch_of(-1, 0, votes.clone());
    assert_eq!(f.apply(replay.clone()).await.ok(), Some(0), "nothing decided twice");
    assert_eq!(replay.outcomes.get(), Some(&expected), "the same outcomes told again");
    assert_eq!(counters().await, before, "nothing counted twice");
    let mut more = votes[5..].to_vec();
    more.push(rating(Some("u3"), None, "Hijos del Maíz", 2.0, 40));
    more.push(votes[2].clone());
    let partly = batch_of(4, 5, more);
    assert_eq!(f.apply(partly.clone()).await.ok(), Some(2));
    assert_eq!(
        partly.outcomes.get(),
        Some(&vec![Late, Changed, Counted, Counted, Duplicate])
    );
    assert_eq!(f.int(&f.keys.voters_total).await, 3);
    // The live tail holds each record once, with its outcome in front.
    let mut conn = f.pool.get().await.unwrap();
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&f.keys.logs_tail)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let items: Vec<serde_json::Value> = entries
        .iter()
        .flat_map(|(_, fields)| serde_json::from_str::<Vec<serde_json::Value>>(&fields[0].1).unwrap())
        .collect();
    let outcomes: Vec<&str> = items.iter().map(|i| i["outcome"].as_str().unwrap()).collect();
    assert_eq!(
        outcomes,
        [
            "counted",
            "changed",
            "counted",
            "duplicate",
            "late",
            "late",
            "changed",
            "counted",
            "counted",
            "duplicate"
        ]
    );
    assert_eq!(items[0]["voter"], "u1");
    assert_eq!(items[2]["voter"], serde_json::Value::Null);
    f.clean().await;
}
