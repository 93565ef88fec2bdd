//! A store too slow for a page (FerretDB, which sorts the whole collection
//! for one): once the server runs a page out of its `maxTimeMS`, pages with
//! the same filters pause and are answered 503 without a query, with a
//! Retry-After, until a probe answers in time.

use reqwest::StatusCode;

use super::{T0, TestApp, eventually, log, new_id};

/// Logs enough that FerretDB cannot sort them for a page within the timeout below.
const SLOW_PAGE_LOGS: i64 = 50_000;

#[tokio::test]
async fn a_page_the_server_runs_out_of_time_pauses_pages_until_one_answers_in_time() {
    // The server's limit is 750 ms: a quarter-second for FerretDB to say it
    // gave up before the app's own deadline.
    let app = TestApp::spawn(&["--logs-backend-timeout-ms", "1000"]).await;
    let docs: Vec<_> = (0..SLOW_PAGE_LOGS)
        .map(|i| log(&new_id(), T0 + i, "Alux Nahual", "Alux Nahual", "grpc"))
        .collect();
    for chunk in docs.chunks(5_000) {
        app.insert(chunk).await;
    }

    let (status, body) = app.get("/logs?limit=20").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["error"],
        // Four timeouts.
        "MongoDB could not answer a page of logs within 1s; pages with these filters pause for 4s to spare its writes"
    );
    assert_eq!(app.metric("votestream_logs_queries_out_of_time_total").await, 1.0);

    // Paused: answered at once, nothing asked of the database.
    let response = app
        .http
        .get(format!("{}/logs?limit=20", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after = response.headers()["retry-after"].to_str().unwrap().to_owned();
    assert!(["3", "4"].contains(&retry_after.as_str()), "Retry-After {retry_after}");
    assert_eq!(app.metric("votestream_logs_queries_paused_total").await, 1.0);
    assert_eq!(app.metric("votestream_logs_queries_out_of_time_total").await, 1.0);

    // A page with other filters has a pause of its own: it is asked (and runs
    // out of time too); the plain page stays paused.
    let (status, body) = app.get("/logs?limit=20&route=grpc").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(app.metric("votestream_logs_queries_out_of_time_total").await, 2.0);
    let (status, _) = app.get("/logs?limit=20").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.metric("votestream_logs_queries_paused_total").await, 2.0);

    // The store gets quick again (three logs left); after the pause a probe
    // answers in time and pages are served again.
    votestream::schema::mongo::logs(&app.db)
        .drop()
        .await
        .expect("logs dropped");
    app.insert(&docs[docs.len() - 3..]).await;
    let waiting = &app;
    let page = eventually("a page answered after the pause", || async move {
        let (status, page) = waiting.get("/logs?limit=20").await;
        (status == StatusCode::OK).then_some(page)
    })
    .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(3), "{page}");
    let (status, _) = app.get("/logs?limit=20").await;
    assert_eq!(status, StatusCode::OK);
    app.finish().await;
}
