//! The page in a real browser: headless Chromium driven over WebDriver
//! (`chromedriver`, started here on a free port). Needs Debian's `chromium`
//! and `chromium-driver` packages; the test installs nothing, and fails with
//! that hint when they are missing. Paths can be overridden with `CHROMIUM`
//! and `CHROMEDRIVER`.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use votestream::schema::redis::RedisKeys;

use chrono::Utc;
use deadpool_redis::redis;
use fantoccini::{Client, ClientBuilder};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use votestream::schema::mongo::LogDocument;
use votestream::schema::redis::Outcome;

use super::{TestApp, date_time, eventually, free_port, log};
use crate::common::unique;

const HINT: &str = "the browser test needs `apt-get install chromium chromium-driver`";

/// `chromedriver` on a free port, killed when dropped.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    async fn start() -> ChromeDriver {
        let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = free_port();
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {binary}: {e}; {HINT}"));
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = &format!("{}/status", driver.url);
        eventually("chromedriver to answer", || async move {
            let body: Value = reqwest::get(status).await.ok()?.json().await.ok()?;
            (body["value"]["ready"] == true).then_some(())
        })
        .await;
        driver
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn open_browser(driver: &ChromeDriver, profile: &std::path::Path) -> Client {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(PathBuf::from(&chromium).exists(), "{chromium} is missing; {HINT}");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            // As root on a closed network: no sandbox, nothing phoning home.
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,800",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("no browser session: {e}; {HINT}"))
}

/// The vote lines on the page as (id, text), top to bottom, and the status.
async fn screen(browser: &Client) -> (Vec<(String, String)>, String) {
    let state = browser
        .execute(
            "return {
                lines: [...document.querySelectorAll('#log .vote')].map(e => [e.dataset.id, e.textContent]),
                status: document.getElementById('status').textContent,
            };",
            vec![],
        )
        .await
        .expect("page state");
    let lines = serde_json::from_value(state["lines"].clone()).expect("lines");
    (lines, state["status"].as_str().unwrap_or_default().to_owned())
}

async fn text_of(browser: &Client, selector: &str) -> String {
    let value = browser
        .execute(
            "return document.querySelector(arguments[0]).textContent;",
            vec![json!(selector)],
        )
        .await
        .expect("element text");
    value.as_str().unwrap_or_default().to_owned()
}

/// The rows of a standings table, cell by cell.
async fn rows(browser: &Client, selector: &str) -> Vec<Vec<String>> {
    let value = browser
        .execute(
            "return [...document.querySelectorAll(arguments[0] + ' tr')].map(tr => [...tr.cells].map(td => td.textContent));",
            vec![json!(selector)],
        )
        .await
        .expect("table rows");
    serde_json::from_value(value).expect("rows of text")
}

/// `YYYY-MM-DD HH:MM:SS  <outcome>  <voter>  {record}` as the page prints a
/// log from `log()` (anonymous, counted).
fn line(received_at_ms: i64, band: &str, album: &str, route: &str) -> String {
    voter_line(received_at_ms, "counted", "-", band, album, route)
}

fn voter_line(received_at_ms: i64, outcome: &str, voter: &str, band: &str, album: &str, route: &str) -> String {
    let record = json!({"band": band, "album": album, "year": 1990, "rank": 7.5, "route": route});
    format!("{}  {outcome:<9}  {voter:<12}  {record}", date_time(received_at_ms))
}

const BANDS: [(&str, &str); 5] = [
    ("Alux Nahual", "Alux Nahual"),
    ("Bohemia Suburbana", "Eres mi Dios"),
    ("Malacates Trébol Shop", "Niño de la calle"),
    ("Viernes Verde", "Ruido"),
    ("La Tona", "Tona"),
];
const SCRIPT_BAND: &str = "<script>alert(1)</script>";
const BOLD_ALBUM: &str = "<b>not bold</b>";
const VOTER: &str = "<i>fan</i> 7";

#[tokio::test]
async fn the_page_shows_the_last_20_logs_then_a_new_vote_live_with_a_script_band_name_as_text() {
    let start = Utc::now().timestamp_millis() - 60_000;
    let seeded: Vec<(String, i64, &str, &str, &str)> = (0..25)
        .map(|i| {
            let (band, album) = BANDS[i % BANDS.len()];
            let route = ["grpc", "http"][i % 2];
            (format!("seed-{i:02}"), start + i as i64 * 1_000, band, album, route)
        })
        .collect();
    let docs: Vec<LogDocument> = seeded
        .iter()
        .map(|(id, at, band, album, route)| log(id, *at, band, album, route))
        .collect();
    let app = TestApp::spawn_with_logs(&[], &docs).await;
    let p = app.prefix.clone();
    let mut conn = app.redis().await;
    let _: () = redis::pipe()
        .set(RedisKeys::new(&p).total, 26)
        .hset_multiple(
            RedisKeys::new(&p).by_band,
            &[
                (BANDS[0].0, 5),
                (BANDS[1].0, 5),
                (BANDS[2].0, 5),
                (BANDS[3].0, 5),
                (BANDS[4].0, 5),
                (SCRIPT_BAND, 1),
            ],
        )
        .hset_multiple(RedisKeys::new(&p).by_album, &[("Alux Nahual / Alux Nahual", 5)])
        .hset(
            RedisKeys::new(&p).rank_avg_by_album,
            "Alux Nahual / Alux Nahual",
            "7.50",
        )
        .hset_multiple(RedisKeys::new(&p).by_route, &[("grpc", 13), ("http", 13)])
        .hset_multiple(
            RedisKeys::new(&p).contest_status,
            &[("status", "final"), ("closes_at", "2026-12-25T04:00:00.000Z")],
        )
        .hset(RedisKeys::new(&p).contest_end, "votes/0", 26)
        .hset(RedisKeys::new(&p).offsets, "votes/0", 25)
        .query_async(&mut conn)
        .await
        .expect("standings written");

    let driver = ChromeDriver::start().await;
    let profile = std::env::temp_dir().join(unique("votestream-chromium"));
    let browser = open_browser(&driver, &profile).await;
    // Steps run under catch_unwind so the browser always quits (a killed
    // chromedriver would leave Chromium running).
    let outcome = AssertUnwindSafe(async {
        let browser = &browser;
        browser.goto(&app.base).await.expect("page opens");
        let (lines, _) = eventually("the last 20 logs and the live stream", || async move {
            let (lines, status) = screen(browser).await;
            (lines.len() == 20 && status == "live").then_some((lines, status))
        })
        .await;
        let newest_20: Vec<(String, String)> = seeded[5..]
            .iter()
            .map(|(id, at, band, album, route)| (id.clone(), line(*at, band, album, route)))
            .collect();
        assert_eq!(lines, newest_20, "oldest at the top, like a terminal");

        eventually("the standings panel", || async move {
            (text_of(browser, "#total").await == "26").then_some(())
        })
        .await;
        // Bars of block characters, to an eighth: 1 vote of 5 is 2.4 cells of 12.
        let bands = rows(browser, "#bands").await;
        assert_eq!(bands[0], ["1.", "Alux Nahual", "████████████", "5"]);
        assert_eq!(bands[5], ["6.", SCRIPT_BAND, "██▍", "1"]);
        assert_eq!(
            rows(browser, "#albums").await,
            [["Alux Nahual / Alux Nahual", "████████████", "7.50", "5"]]
        );
        assert_eq!(
            text_of(browser, "#contest").await,
            "final · closed 2026-12-25 04:00:00 UTC"
        );
        let (_, results) = app.get("/results").await;
        let digest = results["final"]["digest"].as_str().expect("a final digest").to_owned();
        assert_eq!(text_of(browser, "#digest-value").await, digest);

        browser
            .execute("window.sameDocument = true;", vec![])
            .await
            .expect("mark the document");
        let now = Utc::now().timestamp_millis();
        let live = LogDocument {
            voter: Some(VOTER.into()),
            outcome: Outcome::Changed,
            ..log("live-1", now, SCRIPT_BAND, BOLD_ALBUM, "http")
        };
        app.count(&[live]).await;
        let (lines, _) = eventually("the new vote to appear", || async move {
            let (lines, status) = screen(browser).await;
            (lines.len() == 21 && status == "live").then_some((lines, status))
        })
        .await;
        // The voter as sent, quoted since it is not a plain word; the outcome styled.
        let quoted = serde_json::to_string(VOTER).unwrap();
        assert_eq!(
            lines[20],
            (
                "live-1".to_owned(),
                voter_line(now, "changed", &quoted, SCRIPT_BAND, BOLD_ALBUM, "http")
            )
        );
        let styled = browser
            .execute(
                "const line = document.querySelector('#log .vote:last-child'); \
                 return [line.querySelector('.outcome').className, line.querySelector('.voter').textContent];",
                vec![],
            )
            .await
            .expect("the live line's spans");
        assert_eq!(styled, json!(["outcome changed", quoted]));
        assert_eq!(lines[..20], newest_20[..]);

        let same = browser.execute("return window.sameDocument === true;", vec![]).await;
        assert_eq!(same.expect("read the mark"), json!(true), "the page was not reloaded");
        let markup = browser
            .execute(
                "return document.querySelectorAll('#log script, #log b, #log i, #standings script').length;",
                vec![],
            )
            .await
            .expect("count elements");
        assert_eq!(markup, json!(0), "names were inserted as text, not HTML");
        let alert = browser.get_alert_text().await;
        assert!(
            matches!(&alert, Err(e) if e.is_no_such_alert()),
            "no alert opened: {alert:?}"
        );

        let png = browser.screenshot().await.expect("screenshot");
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("logs-page.png");
        std::fs::write(&path, png).expect("screenshot saved");
        eprintln!("screenshot: {}", path.display());

        // Filter by band: the select reloads the last logs of that band only.
        browser
            .execute(
                "const s = document.getElementById('band'); s.value = arguments[0]; \
                 s.dispatchEvent(new Event('change'));",
                vec![json!(BANDS[1].0)],
            )
            .await
            .expect("choose a band");
        let filtered: &Vec<String> = &seeded
            .iter()
            .filter(|(_, _, band, _, _)| *band == BANDS[1].0)
            .map(|(id, ..)| id.clone())
            .collect();
        eventually("only that band's logs", || async move {
            let (lines, status) = screen(browser).await;
            let ids: Vec<String> = lines.into_iter().map(|(id, _)| id).collect();
            (ids == *filtered && status == "live").then_some(())
        })
        .await;
    })
    .catch_unwind()
    .await;

    let _ = browser.close().await;
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile);
    app.finish().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
