//! `/results` against the Redis keys the consumer writes (DESIGN.md, "Redis
//! keys"), under the test's own prefix.

use std::collections::HashMap;
use votestream::schema::redis::RedisKeys;

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
                ("Alux Nahual / Fiebre", "29"),
                ("Bohemia Suburbana / Bohemia Suburbana", "40.5"),
                ("<script>alert(1)</script> / x", "3"),
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
    app.finish().await;
}

#[tokio::test]
async fn results_are_zero_before_anything_is_counted() {
    let app = TestApp::spawn(&[]).await;
    let (status, results) = app.get("/results").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        results,
        serde_json::json!({"total": 0, "by_route": {}, "bands": [], "albums": []})
    );
    app.finish().await;
}
