//! The logs web app against the real local stack: logs inserted in the
//! documented shape (DESIGN.md, "MongoDB") and counters written under the
//! documented Redis keys, each test with its own database and key prefix.

mod browser;
mod outages;
mod pause;
mod results;
mod stream;

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use deadpool_redis::redis;
use mongodb::bson;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use votestream::config::{Cli, Command, LogsSettings};
use votestream::logs::LogsApp;
use votestream::ops::{Dependency, Health, Readiness};
use votestream::schema;
use votestream::schema::mongo::LogDocument;
use votestream::schema::redis::{Outcome, RedisKeys};

use crate::common::{delete_prefix, mongodb_uri, redis_url, unique};

/// Generous bound on anything that happens "soon" (a poll, a reconnect).
const PATIENCE: Duration = Duration::from_secs(60);

/// The logs app's settings as the binary parses them, with test overrides.
fn settings(overrides: &[&str]) -> LogsSettings {
    let args = ["votestream", "logs"].iter().chain(overrides);
    match Cli::try_parse_from(args).expect("valid test settings").command {
        Command::Logs(settings) => settings,
        other => panic!("expected logs settings, got {other:?}"),
    }
}

/// A running logs app with its own Mongo database and Redis key prefix.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db: mongodb::Database,
    pub prefix: String,
    redis: redis::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts the app on port 0; `extra` flags override the test defaults.
    pub async fn spawn(extra: &[&str]) -> TestApp {
        TestApp::spawn_with_logs(extra, &[]).await
    }

    /// Starts the app on a database that already holds `logs`.
    pub async fn spawn_with_logs(extra: &[&str], logs: &[LogDocument]) -> TestApp {
        let database = unique("logs");
        let prefix = format!("{}:", unique("logs"));
        let (mongo_uri, redis) = (mongodb_uri(), redis_url());
        let defaults = [
            ("--logs-addr", "127.0.0.1:0"),
            ("--mongodb-uri", &mongo_uri),
            ("--mongodb-database", &database),
            ("--redis-url", &redis),
            ("--redis-key-prefix", &prefix),
        ];
        // A flag may be given once: `extra` replaces the default.
        let mut args: Vec<&str> = defaults
            .iter()
            .filter(|(flag, _)| !extra.contains(flag))
            .flat_map(|(flag, value)| [*flag, *value])
            .collect();
        args.extend_from_slice(extra);
        let mongo = mongodb::Client::with_uri_str(mongodb_uri())
            .await
            .expect("mongo client");
        if !logs.is_empty() {
            let collection = schema::mongo::logs(&mongo.database(&database));
            collection.insert_many(logs).await.expect("logs inserted");
        }
        let app = LogsApp::build(&settings(&args)).await.expect("logs app builds");
        let base = format!("http://{}", app.addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run(async {
            let _ = stopped.await;
        }));
        TestApp {
            base,
            http: reqwest::Client::new(),
            db: mongo.database(&database),
            prefix,
            redis: redis::Client::open(redis_url()).expect("redis client"),
            stop: Some(stop),
            server: Some(server),
        }
    }

    pub async fn insert(&self, logs: &[LogDocument]) {
        schema::mongo::logs(&self.db)
            .insert_many(logs)
            .await
            .expect("logs inserted");
    }

    /// What the consumer does for a batch of newly counted votes: logs them in
    /// MongoDB and appends them, in order, as one entry of the `logs:tail`
    /// stream the live page reads.
    pub async fn count(&self, logs: &[LogDocument]) {
        self.insert(logs).await;
        let items: Vec<String> = logs
            .iter()
            .map(|log| serde_json::to_string(&log.clone().entry().expect("a valid log")).expect("an item"))
            .collect();
        self.tail(&items).await;
    }

    /// Appends one entry of encoded log items to the `logs:tail` stream.
    pub async fn tail(&self, items: &[String]) {
        let _: String = redis::cmd("XADD")
            .arg(RedisKeys::new(&self.prefix).logs_tail)
            .arg("*")
            .arg(schema::redis::LOGS_TAIL_FIELD)
            .arg(format!("[{}]", items.join(",")))
            .query_async(&mut self.redis().await)
            .await
            .expect("XADD to the live tail");
    }

    /// A counter of the app's `/metrics` (0 when the series is absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request sent");
        let status = response.status();
        let body = response.json::<Value>().await.expect("JSON body");
        (status, body)
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.redis
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    /// Stops the server (proving the shutdown future works) and drops what the test wrote.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let stopped = tokio::time::timeout(PATIENCE, server).await;
            stopped
                .expect("server stops")
                .expect("server task")
                .expect("server ends cleanly");
        }
        let _ = self.db.drop().await;
        let _ = delete_prefix(&mut self.redis().await, &self.prefix).await;
    }
}

/// A log document as the consumer writes it, for the vote `id`: its `_id`
/// (the record's position) differs from the vote id, as in production, and
/// orders the same way.
pub fn log(id: &str, received_at_ms: i64, band: &str, album: &str, route: &str) -> LogDocument {
    LogDocument {
        id: format!("votes/0/{id}"),
        vote_id: Some(id.to_owned()),
        voter: None,
        outcome: Outcome::Counted,
        received_at: bson::DateTime::from_millis(received_at_ms),
        logged_at: bson::DateTime::now(),
        name: band.to_owned(),
        album: album.to_owned(),
        year: 1990,
        rank: 7.5,
        route: route.to_owned(),
        partition: 0,
        offset: 0,
    }
}

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// 2025-11-26T18:00:00Z, a fixed instant so expected dates are literal.
const T0: i64 = 1_764_180_000_000;

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Polls `check` until it returns `Some`, up to `PATIENCE`.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    crate::common::eventually(what, PATIENCE, check).await
}

pub use crate::common::free_port;

#[tokio::test]
async fn logs_come_back_newest_first_with_utc_date_time_and_instant() {
    let app = TestApp::spawn(&[]).await;
    let docs: Vec<LogDocument> = (0..30)
        .map(|i| {
            log(
                &format!("vote-{i:02}"),
                T0 + i * 1_000,
                "Alux Nahual",
                "Alux Nahual",
                "grpc",
            )
        })
        .rev()
        .collect();
    app.insert(&docs).await;

    let (status, page) = app.get("/logs").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let expected: Vec<String> = (10..30).rev().map(|i| format!("vote-{i:02}")).collect();
    assert_eq!(ids(&page), expected, "the newest 20, newest first");
    assert_eq!(
        page["items"][0],
        serde_json::json!({
            "id": "vote-29",
            "date": "2025-11-26",
            "time": "18:00:29",
            "received_at": "2025-11-26T18:00:29.000Z",
            "band": "Alux Nahual",
            "album": "Alux Nahual",
            "year": 1990,
            "rank": 7.5,
            "route": "grpc",
            "voter": null,
            "outcome": "counted",
        })
    );
    assert!(page["next"].is_string(), "more logs remain: {page}");
    app.finish().await;
}

#[tokio::test]
async fn band_album_and_route_filters_and_the_limit_narrow_the_page() {
    let app = TestApp::spawn(&[]).await;
    let mut docs = Vec::new();
    for i in 0..24_i64 {
        let band = ["Alux Nahual", "Bohemia Suburbana"][(i % 2) as usize];
        let album = ["Fiebre", "Hijos del Trueno", "Vida"][(i % 3) as usize];
        let route = ["grpc", "http"][((i / 2) % 2) as usize];
        docs.push(log(&format!("v{i:02}"), T0 + i, band, album, route));
    }
    app.insert(&docs).await;
    let expect = |keep: &dyn Fn(i64) -> bool| -> Vec<String> {
        (0..24).rev().filter(|&i| keep(i)).map(|i| format!("v{i:02}")).collect()
    };

    let (_, page) = app.get("/logs?band=Bohemia%20Suburbana&limit=500").await;
    assert_eq!(ids(&page), expect(&|i| i % 2 == 1));
    let (_, page) = app.get("/logs?band=Alux+Nahual&album=Vida&limit=500").await;
    assert_eq!(ids(&page), expect(&|i| i % 2 == 0 && i % 3 == 2));
    let (_, page) = app.get("/logs?route=http&limit=500").await;
    assert_eq!(ids(&page), expect(&|i| (i / 2) % 2 == 1));
    let (_, page) = app.get("/logs?album=Fiebre&route=grpc&limit=2").await;
    assert_eq!(ids(&page), expect(&|i| i % 3 == 0 && (i / 2) % 2 == 0)[..2]);
    assert!(page["next"].is_string());
    // Filters hold across pages.
    let mut paged = Vec::new();
    let mut path = "/logs?band=Alux+Nahual&limit=5".to_owned();
    loop {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        paged.extend(ids(&page));
        let Some(cursor) = page["next"].as_str() else { break };
        path = format!("/logs?band=Alux+Nahual&limit=5&before={cursor}");
    }
    assert_eq!(paged, expect(&|i| i % 2 == 0));
    let (_, page) = app.get("/logs?limit=3").await;
    assert_eq!(ids(&page), ["v23", "v22", "v21"]);
    let (status, page) = app.get("/logs?band=Nobody").await;
    assert_eq!(
        (status, page),
        (StatusCode::OK, serde_json::json!({"items": [], "next": null}))
    );
    app.finish().await;
}

#[tokio::test]
async fn paging_with_the_cursor_through_1000_logs_while_new_ones_arrive_returns_each_old_log_once() {
    let app = TestApp::spawn(&[]).await;
    // Four votes per millisecond, so pages also split ties, which only the
    // id orders.
    let old: Vec<(i64, String)> = (0..1_000).map(|i| (T0 + i / 4, new_id())).collect();
    let docs: Vec<LogDocument> = old
        .iter()
        .map(|(at, id)| log(id, *at, "Viernes Verde", "Rock", "http"))
        .collect();
    app.insert(&docs).await;
    let mut expected = old.clone();
    expected.sort_by(|a, b| b.cmp(a));
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    let mut seen = Vec::new();
    let mut path = "/logs?limit=37".to_owned();
    let mut arrivals = 0_i64;
    for _page in 0..100 {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(ids(&page));
        // New votes keep arriving between pages, newer than every old one.
        let fresh: Vec<LogDocument> = (0..5)
            .map(|_| {
                arrivals += 1;
                log(&new_id(), T0 + 10_000 + arrivals, "Viernes Verde", "Rock", "grpc")
            })
            .collect();
        app.insert(&fresh).await;
        match page["next"].as_str() {
            Some(cursor) => path = format!("/logs?limit=37&before={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1_000, "every old log once, nothing new");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 1_000, "no log twice");
    assert_eq!(seen, expected, "(received_at, id) descending across pages");
    app.finish().await;
}

#[tokio::test]
async fn a_duplicate_shares_its_vote_id_yet_is_its_own_log_and_paging_keeps_both() {
    let app = TestApp::spawn(&[]).await;
    // Three records in the same millisecond: the vote, its retry (a
    // duplicate, same vote id) and another voter's vote; the positions
    // order them.
    let position = |offset: i64, vote: &str, voter: &str, outcome: Outcome| LogDocument {
        id: LogDocument::position("votes", 2, offset),
        voter: Some(voter.to_owned()),
        outcome,
        offset,
        partition: 2,
        ..log(vote, T0, "La Tona", "Tona", "http")
    };
    app.insert(&[
        position(7, "vote-a", "u1", Outcome::Counted),
        position(8, "vote-a", "u1", Outcome::Duplicate),
        position(9, "vote-b", "u \"2\"", Outcome::Changed),
    ])
    .await;

    let mut seen = Vec::new();
    let mut path = "/logs?limit=1".to_owned();
    for _ in 0..5 {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let item = &page["items"][0];
        seen.push((
            item["id"].as_str().unwrap().to_owned(),
            item["voter"].as_str().unwrap().to_owned(),
            item["outcome"].as_str().unwrap().to_owned(),
        ));
        match page["next"].as_str() {
            Some(cursor) => path = format!("/logs?limit=1&before={cursor}"),
            None => break,
        }
    }
    let expected = [
        ("vote-b", "u \"2\"", "changed"),
        ("vote-a", "u1", "duplicate"),
        ("vote-a", "u1", "counted"),
    ]
    .map(|(id, voter, outcome)| (id.to_owned(), voter.to_owned(), outcome.to_owned()));
    assert_eq!(seen, expected, "newest position first, each log once");
    app.finish().await;
}

#[tokio::test]
async fn the_consumer_and_the_logs_app_both_create_the_index_that_serves_the_page_order() {
    let database = unique("logs-index");
    let logs = votestream::consumer::logs_collection(&mongodb_uri(), &database)
        .await
        .expect("logs collection");
    let names = logs.list_index_names().await.expect("index names");
    logs.drop().await.expect("drop");
    assert!(
        names.iter().any(|name| name == schema::mongo::PAGE_ORDER_INDEX),
        "{names:?}"
    );

    // The logs app, on a database nobody has written to yet.
    let app = TestApp::spawn(&[]).await;
    let logs = schema::mongo::logs(&app.db);
    let waiting = &logs;
    eventually("the logs app to create the page-order index", || async move {
        let names = waiting.list_index_names().await.unwrap_or_default();
        names
            .iter()
            .any(|name| name == schema::mongo::PAGE_ORDER_INDEX)
            .then_some(())
    })
    .await;
    app.finish().await;
}

#[tokio::test]
async fn bad_parameters_get_400_with_a_clear_message() {
    let app = TestApp::spawn(&[]).await;
    let cases = [
        (
            "/logs?limit=0",
            "limit: must be a whole number from 1 to 500, got \"0\"",
        ),
        (
            "/logs?limit=10000",
            "limit: must be a whole number from 1 to 500, got \"10000\"",
        ),
        (
            "/logs?limit=twenty",
            "limit: must be a whole number from 1 to 500, got \"twenty\"",
        ),
        ("/logs?before=%%%", "before: not a cursor from this API"),
        ("/logs?before=not*a*cursor", "before: not a cursor from this API"),
        // Valid base64, of "not-a-cursor".
        ("/logs?before=bm90LWEtY3Vyc29y", "before: not a cursor from this API"),
        ("/logs?route=ftp", "route: must be grpc or http, got \"ftp\""),
        (
            "/logs?bnd=x",
            "unknown parameter \"bnd\"; /logs accepts limit, band, album, route, before",
        ),
        ("/logs?limit=5&limit=6", "parameter \"limit\" is given more than once"),
        (
            "/logs/stream?limit=5",
            "unknown parameter \"limit\"; /logs/stream accepts band, album, route",
        ),
    ];
    for (path, message) in cases {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with(message),
            "{path}: {error:?} should start with {message:?}"
        );
    }
    app.finish().await;
}

#[tokio::test]
async fn health_metrics_and_the_page_are_served_from_the_app_itself() {
    let app = TestApp::spawn(&[]).await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.base)).send();

    let (status, health) = app.get("/healthz").await;
    assert_eq!(
        (status, serde_json::from_value(health).unwrap()),
        (StatusCode::OK, Health::ok())
    );
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(
        (status, serde_json::from_value(ready).unwrap()),
        (
            StatusCode::OK,
            Readiness::of([(Dependency::Mongodb, true), (Dependency::Redis, true)])
        )
    );

    let page = get("/").await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="/page.js"></script>"#));
    for asset in ["/page.js", "/page.css"] {
        let response = get(asset).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let text = response.text().await.unwrap();
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"] {
            assert!(!text.contains(sink), "{asset} must not parse data as HTML ({sink})");
        }
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{asset} loads nothing from elsewhere"
        );
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );

    let (status, body) = app.get("/nowhere").await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, serde_json::json!({"error": "not found"}))
    );

    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"votestream_logs_http_requests_total{path="/healthz",status="200"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("votestream_logs_streams_active 0"), "{metrics}");
    app.finish().await;
}

/// `received_at` of a document as the page prints it.
pub fn date_time(received_at_ms: i64) -> String {
    let at: DateTime<Utc> = DateTime::from_timestamp_millis(received_at_ms).expect("valid instant");
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}
