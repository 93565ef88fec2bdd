//! Consumer drain: the real `votestream consumer` binary (so its memory is
//! its own, read from /proc/<pid>/status) drains a pre-produced backlog with a
//! fresh group, Redis prefix and Mongo database. Drained means every offset
//! committed up to the high watermarks; then Redis and Mongo are checked to
//! hold every vote.
//!
//! With an outage, the consumer writes to a private FerretDB, which is
//! killed once a third of the backlog is counted and started again (same
//! port, same data) after the outage.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use harness::free_port;
use harness::servers::PrivateMongo;

use crate::stack::{Stack, unique};

pub struct Drained {
    /// From the first batch counted in Redis to the last offset committed.
    pub votes_per_s: f64,
    /// From the process start to the first batch counted (group join, connections).
    pub startup_s: f64,
    pub peak_rss_mib: f64,
    /// The process's whole CPU time (start included) over the votes, µs.
    pub cpu_us_per_vote: f64,
    /// With a logs page open: what its clients saw.
    pub page: Option<PageSeen>,
    /// The Redis key prefix the consumer counted under: still there when
    /// the drain was asked to keep the counters ([`Drain::keep_counters`]).
    pub prefix: String,
}

/// How a drain runs, beyond its topic.
#[derive(Default)]
pub struct Drain {
    pub outage: Option<Outage>,
    /// `votestream all` with a logs page open, instead of the consumer alone.
    pub page: bool,
    /// Leave the Redis counters for the caller to look at (and delete).
    pub keep_counters: bool,
}

/// What the logs page's clients saw during a drain by `votestream all`.
#[derive(Debug, Default)]
pub struct PageSeen {
    /// `GET /logs?limit=20`, ms per answered page (200).
    pub first_ms: Vec<f64>,
    /// `GET /logs?limit=20&before=...`, one page deeper each second, ms.
    pub before_ms: Vec<f64>,
    /// Pages not answered 200 (503 when the database is too slow).
    pub failed: usize,
    /// `log` events the live stream pushed.
    pub streamed: usize,
}

pub struct Outage {
    pub down_for: Duration,
}

/// Largest backlog whose logs are counted after the drain.
const COUNT_LOGS_UP_TO: i64 = 100_000;
/// How often progress is looked at.
const POLL: Duration = Duration::from_millis(50);
/// Committed offsets are asked of the group coordinator less often.
const COMMITTED_POLL: Duration = Duration::from_millis(250);

/// Drains `topic` with `votestream consumer`, or with `page`, with `votestream
/// all` while a logs page is open: one client on `/logs/stream` and one
/// `GET /logs?limit=20` (plus one page deeper) each second.
pub async fn drain(stack: &Stack, topic: &str, how: Drain, log: &str) -> anyhow::Result<Drained> {
    let Drain {
        outage,
        page,
        keep_counters,
    } = how;
    let ends = stack.high_watermarks(topic)?;
    let expected: i64 = ends.values().sum();
    let group = unique("drain-group");
    let prefix = stack.prefix("drain");
    let mut private = match outage {
        // Its files go to <scratch>/ferretdb, removed by discard(); one drain at a time.
        Some(_) => Some(PrivateMongo::start(&stack.scratch)?),
        None => None,
    };
    let (uri, database) = match &private {
        Some(db) => (db.uri(), unique("drain")),
        None => (stack.mongodb_uri.clone(), stack.database("drain")),
    };
    let committed = stack.committed_reader(&group, topic, ends.keys().copied().collect())?;
    let mut env = stack.consumer_env(topic, &group, &prefix, &uri, &database)?;
    let logs_addr = format!("127.0.0.1:{}", free_port()?);
    if page {
        env.push(("LOGS_ADDR", logs_addr.clone()));
        env.push(("GRPC_ADDR", format!("127.0.0.1:{}", free_port()?)));
        env.push(("HTTP_ADDR", format!("127.0.0.1:{}", free_port()?)));
    }
    let mut redis = stack.redis().await?;

    let started = Instant::now();
    let mut consumer = stack.spawn_votestream(&[if page { "all" } else { "consumer" }], &env, log)?;
    let (stop_page, page_stopped) = tokio::sync::watch::channel(false);
    let page_task = page.then(|| tokio::spawn(open_page(format!("http://{logs_addr}"), page_stopped)));
    let mut first_counted = None;
    let mut outage_pending = outage;
    let mut last_committed_check = Instant::now();
    let done = loop {
        tokio::time::sleep(POLL).await;
        consumer.ensure_running("the consumer")?;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "the backlog was not drained within an hour"
        );
        let total = stack.redis_received(&mut redis, &prefix).await;
        if first_counted.is_none() && total > 0 {
            first_counted = Some(Instant::now());
        }
        if let (Some(o), Some(db)) = (&outage_pending, private.as_mut())
            && total >= expected / 3
        {
            eprintln!(
                "  Mongo (private FerretDB) stopped at {total} votes counted, for {:?}",
                o.down_for
            );
            db.crash();
            tokio::time::sleep(o.down_for).await;
            db.start_again()?;
            outage_pending = None;
        }
        if last_committed_check.elapsed() >= COMMITTED_POLL {
            last_committed_check = Instant::now();
            if committed.read()? == ends {
                break Instant::now();
            }
        }
    };
    let _ = stop_page.send(true);
    let page = match page_task {
        Some(task) => Some(task.await?),
        None => None,
    };
    let peak_rss_mib = consumer.peak_rss_mib().context("reading the consumer's VmHWM")?;
    let cpu_s = consumer.cpu_seconds().context("reading the consumer's CPU time")?;
    let status = consumer.terminate()?;
    anyhow::ensure!(status.success(), "the consumer exited with {status} on SIGTERM");

    let counted = stack.redis_received(&mut redis, &prefix).await;
    anyhow::ensure!(counted == expected, "Redis decided {counted} of {expected} records");
    // Committed offsets already mean Mongo confirmed every batch; counting is a
    // second look, skipped for big backlogs: FerretDB counts by scanning (~1 min per million).
    if expected <= COUNT_LOGS_UP_TO {
        let logs = votestream::stores::mongo_client(&uri, "votestream-bench", votestream::stores::STORE_TIMEOUT)
            .await?
            .database(&database);
        let logged = votestream::schema::mongo::logs(&logs)
            .estimated_document_count()
            .await? as i64;
        anyhow::ensure!(logged == expected, "Mongo holds {logged} of {expected} logs");
    }
    if !keep_counters {
        stack.delete_prefix(&prefix).await;
    }
    if private.is_none() {
        stack.drop_database(&database).await;
    }
    if let Some(db) = private {
        db.discard();
    }

    let first = first_counted.context("nothing was counted")?;
    Ok(Drained {
        votes_per_s: expected as f64 / (done - first).as_secs_f64(),
        startup_s: (first - started).as_secs_f64(),
        peak_rss_mib,
        cpu_us_per_vote: cpu_s * 1e6 / expected as f64,
        page,
        prefix,
    })
}

/// A logs page open until `stop`: the live stream read as it comes (its own
/// task, so slow page loads never hold it up), and each second the newest page
/// and one page deeper than the last.
async fn open_page(base: String, stop: tokio::sync::watch::Receiver<bool>) -> PageSeen {
    let http = reqwest::Client::new();
    let streamed = tokio::spawn(read_stream(http.clone(), format!("{base}/logs/stream"), stop.clone()));
    let mut seen = PageSeen::default();
    let mut deeper: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !*stop.borrow() {
        tick.tick().await;
        let (first, next) = page_ms(&http, &format!("{base}/logs?limit=20")).await;
        match first {
            Some(ms) => seen.first_ms.push(ms),
            None => seen.failed += 1,
        }
        if let Some(cursor) = deeper.take().or(next) {
            let (ms, next) = page_ms(&http, &format!("{base}/logs?limit=20&before={cursor}")).await;
            match ms {
                Some(ms) => seen.before_ms.push(ms),
                None => seen.failed += 1,
            }
            deeper = next;
        }
    }
    seen.streamed = streamed.await.unwrap_or(0);
    seen
}

/// Reads `/logs/stream` until `stop` (reconnecting after an error); returns the `log` events seen.
async fn read_stream(http: reqwest::Client, url: String, mut stop: tokio::sync::watch::Receiver<bool>) -> usize {
    let mut logs = 0;
    while !*stop.borrow() {
        let Ok(mut response) = http.get(&url).send().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        loop {
            tokio::select! {
                _ = stop.changed() => return logs,
                chunk = response.chunk() => match chunk {
                    Ok(Some(bytes)) => logs += bytes.windows(10).filter(|w| w == b"event: log").count(),
                    _ => break,
                },
            }
        }
    }
    logs
}

/// One page: the time it took (`None` unless 200) and its `next` cursor.
async fn page_ms(http: &reqwest::Client, url: &str) -> (Option<f64>, Option<String>) {
    let started = Instant::now();
    let Ok(response) = http.get(url).send().await else {
        return (None, None);
    };
    if !response.status().is_success() {
        return (None, None);
    }
    let Ok(body) = response.json::<serde_json::Value>().await else {
        return (None, None);
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    (Some(ms), body["next"].as_str().map(str::to_owned))
}
