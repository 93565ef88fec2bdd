//! The consumer against the real stack: exact totals in Redis and Mongo, and
//! committed offsets at the end of every partition, through normal draining,
//! crashes, restarts of its stores, two consumers and poison records.

use std::time::Duration;

use crate::pipeline::{World, assert_exact, produce, votes, wait_for_total};

/// Heavy tests share 2 cores; one at a time keeps each well inside its limits.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_hundred_thousand_votes_are_counted_and_logged_exactly() {
    let _turn = HEAVY.lock().await;
    let world = World::new("drain").await;
    let (records, expected) = votes(100_000);
    produce(&world.topic.name, &records).await;
    let mut consumer = world.spawn_consumer(0, &[]);
    wait_for_total(&world, 100_000, Duration::from_secs(600)).await;
    assert_exact(&world, &expected, &records).await;
    assert!(consumer.terminate().success(), "clean exit on SIGTERM");
    world.clean().await;
}
