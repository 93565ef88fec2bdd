//! Backends down: clear 503s, and recovery without restarting the app. The
//! shared MongoDB and Redis are never stopped; the app is pointed at ports
//! where nothing listens, and MongoDB "comes back" as a private FerretDB.

use reqwest::StatusCode;
use votestream::ops::{Dependency, Readiness};

use super::{T0, TestApp, eventually, free_port, ids, log};
use crate::common::scratch_dir;
use harness::servers::PrivateMongo;

#[tokio::test]
async fn redis_down_gives_503_with_a_clear_message() {
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let app = TestApp::spawn(&["--redis-url", &nowhere, "--logs-backend-timeout-ms", "500"]).await;
    let (status, body) = app.get("/results").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "Redis is unavailable; try again shortly");
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        serde_json::from_value::<Readiness>(body).unwrap(),
        Readiness::of([(Dependency::Mongodb, true), (Dependency::Redis, false)])
    );
    app.finish().await;
}

#[tokio::test]
async fn mongo_down_gives_503_with_a_clear_message_and_recovers_by_itself() {
    let port = free_port();
    let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    let app = TestApp::spawn(&["--mongodb-uri", &uri, "--logs-backend-timeout-ms", "500"]).await;
    let (status, body) = app.get("/logs").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "MongoDB is unavailable; try again shortly");
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        serde_json::from_value::<Readiness>(body).unwrap(),
        Readiness::of([(Dependency::Mongodb, false), (Dependency::Redis, true)])
    );

    // MongoDB comes up on that port; the app is not restarted.
    let mongo = PrivateMongo::start_on(&scratch_dir("logs-outage"), port).expect("a private FerretDB");
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let logs = votestream::schema::mongo::logs(&client.database(app.db.name()));
    logs.insert_one(log("after-recovery", T0, "La Tona", "Tona", "http"))
        .await
        .expect("insert into the private FerretDB");
    let waiting = &app;
    let page = eventually("/logs to answer again", || async move {
        let (status, page) = waiting.get("/logs").await;
        (status == StatusCode::OK).then_some(page)
    })
    .await;
    assert_eq!(ids(&page), ["after-recovery"]);
    let (status, _) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    app.finish().await;
    drop(mongo);
}
