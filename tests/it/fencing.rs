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
use votestream::schema::redis::{LOGS_TAIL_FIELD, RedisKeys, Window, offsets_field};
use votestream::stores::STORE_TIMEOUT;
use votestream::stores::redis_pool;
use votestream::vote::{Route, Rules, Vote};

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
        let keys = RedisKeys::new(&format!("{}:", unique("fencing")));
        Fixture {
            writer: RedisWriter::new(
                &redis_url(),
                keys.clone(),
                Window {
                    dedup: 86_400_000,
                    ..Window::default()
                },
                Arc::new(ConsumerMetrics::new()),
            ),
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
            .arg(&self.keys.script_keys()[..])
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
