//! `/logs/stream` over real HTTP: newly counted logs pushed once, in order,
//! the band filter, no reads while nobody watches, the stream limit, and
//! streams ending on shutdown.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::Value;

use votestream::log_entry::VoteItem;
use votestream::vote::{Route, Rules, Vote, VoteRecord};

use super::{PATIENCE, TestApp, eventually, log};

/// Reads server-sent events from a streaming response.
pub struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    pub async fn open(app: &TestApp, path: &str) -> Events {
        let response = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("stream request");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next event as (name, data); comments are skipped. `None` when the
    /// server ended the stream.
    pub async fn next(&mut self) -> Option<(String, String)> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (None, String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        name = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    }
                }
                if let Some(name) = name {
                    return Some((name, data));
                }
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("an event within the patience bound")
                .expect("stream read")?;
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }

    pub async fn expect(&mut self, name: &str) -> String {
        let (got, data) = self.next().await.expect("stream still open");
        assert_eq!(got, name, "data: {data}");
        data
    }
}

#[tokio::test]
async fn the_stream_pushes_newly_counted_logs_once_in_order_and_honours_the_band_filter() {
    let now = Utc::now().timestamp_millis();
    let app = TestApp::spawn(&[]).await;
    // Counted before the client came: not pushed.
    app.count(&[log("existing", now - 60_000, "Malacates Trébol Shop", "Niño", "http")])
        .await;
    let mut events = Events::open(&app, "/logs/stream?band=Malacates+Tr%C3%A9bol+Shop").await;
    events.expect("ready").await;

    app.count(&[
        log("other-band", now, "Alux Nahual", "Fiebre", "grpc"),
        log("new", now + 1, "Malacates Trébol Shop", "Niño", "grpc"),
        // Counted after "new" although received two seconds before it (another
        // partition lagged): pushed in the order it was counted.
        log("late", now - 2_000, "Malacates Trébol Shop", "Niño", "http"),
    ])
    .await;
    let first: Value = serde_json::from_str(&events.expect("log").await).unwrap();
    assert_eq!(first["id"], "new", "neither the existing log nor another band's");
    assert_eq!(first["band"], "Malacates Trébol Shop");
    assert!(first["date"].is_string() && first["time"].is_string());
    let late: Value = serde_json::from_str(&events.expect("log").await).unwrap();
    assert_eq!(late["id"], "late");

    // An item exactly as the consumer's script writes it: the outcome put in
    // front of the vote's item. Passed on unchanged, voter and outcome included.
    let vote = Vote::new("Malacates Trébol Shop", "Niño", 1995, 8.0, &Rules::default())
        .unwrap()
        .stamp(Route::Http, Utc::now());
    let vote = VoteRecord {
        voter: Some("<b>u7</b>".into()),
        ..vote
    };
    let item = serde_json::to_string(&VoteItem(&vote)).unwrap();
    let written = format!("{{\"outcome\":\"duplicate\",{}", &item[1..]);
    app.tail(std::slice::from_ref(&written)).await;
    let data = events.expect("log").await;
    assert_eq!(data, written, "as written, byte for byte");
    let pushed: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(
        (&pushed["voter"], &pushed["outcome"]),
        (&"<b>u7</b>".into(), &"duplicate".into())
    );
    app.finish().await;
}

#[tokio::test]
async fn with_no_client_connected_the_tail_reads_nothing() {
    const READS: &str = "votestream_logs_tail_polls_total{outcome=\"ok\"}";
    let app = TestApp::spawn(&[]).await;
    let now = Utc::now().timestamp_millis();
    app.count(&[log("before", now, "La Tona", "Tona", "http")]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.metric(READS).await, 0.0, "no read while nobody watches");

    let mut events = Events::open(&app, "/logs/stream").await;
    events.expect("ready").await;
    app.count(&[log("watched", now, "La Tona", "Tona", "http")]).await;
    let item: Value = serde_json::from_str(&events.expect("log").await).unwrap();
    assert_eq!(item["id"], "watched");
    assert!(app.metric(READS).await > 0.0);

    // The client leaves: the tail notices at its next read, then stops.
    drop(events);
    let app_ref = &app;
    let settled = eventually("the tail to stop reading", || async move {
        let before = app_ref.metric(READS).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        (app_ref.metric(READS).await == before).then_some(before)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.metric(READS).await, settled, "no read after the last client left");
    app.finish().await;
}

#[tokio::test]
async fn streams_beyond_the_limit_get_503_until_one_closes() {
    let app = TestApp::spawn(&["--logs-max-streams", "1"]).await;
    let first = Events::open(&app, "/logs/stream").await;
    let (status, body) = app.get("/logs/stream").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "too many live streams (at most 1); try again later");

    drop(first);
    let url = &format!("{}/logs/stream", app.base);
    let http = &app.http;
    eventually("a stream slot to free up after the client left", || async move {
        let response = http.get(url).send().await.ok()?;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;
    app.finish().await;
}

#[tokio::test]
async fn shutting_down_ends_open_streams_and_stops_the_server() {
    let app = TestApp::spawn(&[]).await;
    let mut events = Events::open(&app, "/logs/stream").await;
    events.expect("ready").await;
    let base = app.base.clone();
    // `finish` fails the test unless the server stops within the bound.
    app.finish().await;
    assert_eq!(events.next().await, None, "the stream ended");
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "nothing listens any more"
    );
}
