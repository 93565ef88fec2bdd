//! `/results` against the Redis keys the consumer writes (DESIGN.md, "Redis
//! keys"), under the test's own prefix.

use std::collections::HashMap;
use votestream::schema::redis::{RedisKeys, Standings, standings_digest};

use deadpool_redis::redis;
use reqwest::StatusCode;

use super::TestApp;

#[tokio::test]
async fn results_equal_the_redis_hashes() {
    let app = TestApp::spawn(&[]).await;
    let p = &app.prefix;
    let mut conn = app.redis().await;
    let _: () = redis::pipe()
        .set(RedisKeys::new(p).total, 10)
        .hset_multiple(
            RedisKeys::new(p).by_band,
            &[
                ("Alux Nahual", 4),
                ("Bohemia Suburbana", 5),
                ("<script>alert(1)</script>", 1),
            ],
        )
        .hset_multiple(
            RedisKeys::new(p).by_album,
            &[
                ("Alux Nahual / Fiebre", 4),
                ("Bohemia Suburbana / Bohemia Suburbana", 5),
                ("<script>alert(1)</script> / x", 1),
            ],
        )
        .hset_multiple(
            RedisKeys::new(p).rank_sum_by_album,
            &[
                ("Alux Nahual / Fiebre", 29_000_000),
                ("Bohemia Suburbana / Bohemia Suburbana", 40_500_000),
                ("<script>alert(1)</script> / x", 3_000_000),
            ],
        )
        .hset_multiple(
            RedisKeys::new(p).rank_avg_by_album,
            &[
                ("Alux Nahual / Fiebre", "7.25"),
                ("Bohemia Suburbana / Bohemia Suburbana", "8.10"),
                ("<script>alert(1)</script> / x", "3.00"),
            ],
        )
        .hset_multiple(RedisKeys::new(p).by_route, &[("grpc", 6), ("http", 4)])
        .set(RedisKeys::new(p).voters_total, 7)
        .set(RedisKeys::new(p).received, 14)
        .hset_multiple(
            RedisKeys::new(p).by_outcome,
            &[("counted", 9), ("changed", 1), ("late", 4)],
        )
        .query_async(&mut conn)
        .await
        .unwrap();

    let (status, results) = app.get("/results").await;
    assert_eq!(status, StatusCode::OK, "{results}");

    let total: i64 = redis::cmd("GET")
        .arg(RedisKeys::new(p).total)
        .query_async(&mut conn)
        .await
        .unwrap();
    let hash = |key: &str| {
        let mut command = redis::cmd("HGETALL");
        command.arg(format!("{p}{key}"));
        command
    };
    let by_band: HashMap<String, i64> = hash("votes:by_band").query_async(&mut conn).await.unwrap();
    let by_album: HashMap<String, i64> = hash("votes:by_album").query_async(&mut conn).await.unwrap();
    let avg_by_album: HashMap<String, f64> = hash("rank:avg_by_album").query_async(&mut conn).await.unwrap();
    let by_route: HashMap<String, i64> = hash("votes:by_route").query_async(&mut conn).await.unwrap();

    assert_eq!(results["total"].as_i64(), Some(total));
    let shown_route: HashMap<String, i64> = serde_json::from_value(results["by_route"].clone()).unwrap();
    assert_eq!(shown_route, by_route);
    let bands = results["bands"].as_array().unwrap();
    let shown_bands: HashMap<String, i64> = bands
        .iter()
        .map(|b| (b["band"].as_str().unwrap().to_owned(), b["votes"].as_i64().unwrap()))
        .collect();
    assert_eq!(shown_bands, by_band);
    assert_eq!(bands[0]["band"], "Bohemia Suburbana", "most votes first");
    let albums = results["albums"].as_array().unwrap();
    let shown_albums: HashMap<String, i64> = albums
        .iter()
        .map(|a| (a["album"].as_str().unwrap().to_owned(), a["votes"].as_i64().unwrap()))
        .collect();
    assert_eq!(shown_albums, by_album);
    let shown_avg: HashMap<String, f64> = albums
        .iter()
        .map(|a| (a["album"].as_str().unwrap().to_owned(), a["avg_rank"].as_f64().unwrap()))
        .collect();
    assert_eq!(shown_avg, avg_by_album);
    assert_eq!(
        (results["voters"].as_i64(), results["received"].as_i64()),
        (Some(7), Some(14))
    );
    assert_eq!(
        results["by_outcome"],
        serde_json::json!({"counted": 9, "changed": 1, "duplicate": 0, "late": 4}),
        "every outcome present"
    );
    assert_eq!(results["status"], "open", "no consumer status and no window: open");
    assert!(results["final"].is_null());
    app.finish().await;
}

#[tokio::test]
async fn results_are_zero_before_anything_is_counted() {
    let app = TestApp::spawn(&[]).await;
    let (status, results) = app.get("/results").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        results,
        serde_json::json!({
            "total": 0, "by_route": {}, "bands": [], "albums": [],
            "voters": 0, "received": 0,
            "by_outcome": {"counted": 0, "changed": 0, "duplicate": 0, "late": 0},
            "status": "open", "opens_at": null, "closes_at": null, "final": null,
        })
    );
    app.finish().await;
}

#[tokio::test]
async fn without_a_consumer_status_the_window_of_the_logs_app_gives_it() {
    let soon = ["--voting-opens-at", "2999-12-24T20:00:00-06:00"];
    let app = TestApp::spawn(&soon).await;
    let (_, results) = app.get("/results").await;
    assert_eq!(
        (&results["status"], &results["opens_at"], &results["closes_at"]),
        (
            &"not_open".into(),
            &"2999-12-25T02:00:00.000Z".into(),
            &serde_json::Value::Null
        )
    );
    app.finish().await;

    let over = [
        "--voting-opens-at",
        "2020-01-01T00:00:00Z",
        "--voting-closes-at",
        "2020-01-02T00:00:00Z",
    ];
    let app = TestApp::spawn(&over).await;
    let (_, results) = app.get("/results").await;
    assert_eq!(results["status"], "closed", "only the consumer may say final");
    assert_eq!(results["closes_at"], "2020-01-02T00:00:00.000Z");
    assert!(results["final"].is_null());
    app.finish().await;
}

#[tokio::test]
async fn the_status_the_consumer_wrote_wins_over_the_window_of_the_logs_app() {
    let app = TestApp::spawn(&["--voting-closes-at", "2020-01-02T00:00:00Z"]).await;
    let keys = RedisKeys::new(&app.prefix);
    let _: () = redis::pipe()
        .hset_multiple(
            &keys.contest_status,
            &[
                ("status", "open"),
                ("opens_at", "2026-01-01T02:00:00.000Z"),
                ("closes_at", "2099-12-25T04:00:00.000Z"),
                ("updated_at", "2026-12-25T03:00:00.000Z"),
            ],
        )
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    let (_, results) = app.get("/results").await;
    assert_eq!(
        (&results["status"], &results["opens_at"], &results["closes_at"]),
        (
            &"open".into(),
            &"2026-01-01T02:00:00.000Z".into(),
            &"2099-12-25T04:00:00.000Z".into()
        )
    );
    app.finish().await;
}

#[tokio::test]
async fn a_final_result_carries_the_digest_of_the_standings_and_the_offsets_counted_to() {
    let app = TestApp::spawn(&[]).await;
    let keys = RedisKeys::new(&app.prefix);
    let _: () = redis::pipe()
        .atomic()
        .set(&keys.total, 3)
        .hset_multiple(&keys.by_band, &[("Alux Nahual", 2), ("La Tona", 1)])
        .hset_multiple(&keys.by_album, &[("Alux Nahual / Fiebre", 2), ("La Tona / Tona", 1)])
        .hset_multiple(
            &keys.rank_sum_by_album,
            &[("Alux Nahual / Fiebre", 15_300_000_i64), ("La Tona / Tona", 6_500_000)],
        )
        .hset_multiple(
            &keys.rank_avg_by_album,
            &[("Alux Nahual / Fiebre", "7.65"), ("La Tona / Tona", "6.50")],
        )
        .hset_multiple(
            &keys.contest_status,
            &[("status", "final"), ("closes_at", "2026-12-25T04:00:00.000Z")],
        )
        .hset_multiple(&keys.contest_end, &[("votes/0", 12_i64), ("votes/1", 0)])
        .hset_multiple(&keys.offsets, &[("votes/0", 11_i64), ("votes.dlq/0", 3)])
        .query_async(&mut app.redis().await)
        .await
        .unwrap();

    let (status, results) = app.get("/results").await;
    assert_eq!(status, StatusCode::OK, "{results}");
    assert_eq!(results["status"], "final");
    assert_eq!(results["closes_at"], "2026-12-25T04:00:00.000Z");
    let standings = Standings {
        by_band: [("Alux Nahual", 2), ("La Tona", 1)]
            .map(|(k, v)| (k.to_owned(), v))
            .into(),
        by_album: [("Alux Nahual / Fiebre", 2), ("La Tona / Tona", 1)]
            .map(|(k, v)| (k.to_owned(), v))
            .into(),
        rank_sum: [("Alux Nahual / Fiebre", 15_300_000), ("La Tona / Tona", 6_500_000)]
            .map(|(k, v)| (k.to_owned(), v))
            .into(),
    };
    assert_eq!(
        results["final"],
        serde_json::json!({
            // Only the partitions of contest:end; nothing counted from the empty one.
            "offsets": {"votes/0": 11, "votes/1": null},
            "digest": standings_digest(&standings),
        })
    );
    app.finish().await;
}
