//! `GET /logs/stream`: new logs pushed as server-sent events.
//!
//! MongoDB change streams do not exist on FerretDB, so one poller (the
//! "tail") asks MongoDB for new logs and publishes each one, already encoded,
//! to a `broadcast` channel that every stream reads. Memory stays bounded
//! whatever the clients do:
//! - the channel holds at most `buffer` logs; a client further behind skips
//!   the oldest and gets a `skipped` event saying how many;
//! - actix polls a response body only while the socket's write buffer has
//!   room, so a slow reader holds one buffer, not a backlog;
//! - a semaphore caps the number of open streams.
//!
//! Events: `ready` once the tail is following MongoDB (logs written after it
//! will be pushed), `log` (the same JSON item as `/logs`), `skipped`
//! (`{"skipped": n}`), and a comment every 5 s so dead connections are
//! noticed and idle proxies keep the connection open.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::error::LogsError;
use super::metrics::{Metrics, OutcomeLabels};
use super::query::Filter;
use super::store::{LogEntry, LogStore};

/// Most logs one poll reads. Past it the tail shows the newest and skips the
/// rest: it is a live view, and `/logs` has every log.
const POLL_LIMIT: usize = 500;
/// Also bounds how long a client that went away holds its slot: actix notices
/// a closed connection when it next writes to it.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// First bytes of every stream: the browser's reconnect delay, and a comment
/// so the response headers leave at once.
const HELLO: &[u8] = b"retry: 3000\n: votestream logs\n\n";
const READY: &[u8] = b"event: ready\ndata: {}\n\n";
const KEEPALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// The tail has not read MongoDB successfully yet.
    Starting,
    /// Logs written from now on will be pushed.
    Ready,
    /// The app is shutting down: streams end.
    Closed,
}

/// A log as every stream sends it: encoded once, shared by all.
struct Published {
    entry: LogEntry,
    frame: Bytes,
}

/// Where the tail publishes and streams subscribe.
pub struct Hub {
    logs: broadcast::Sender<Arc<Published>>,
    status: watch::Sender<Status>,
    permits: Arc<Semaphore>,
    max_streams: usize,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// `buffer` must be at least 1.
    pub fn new(buffer: usize, max_streams: usize, metrics: Arc<Metrics>) -> Hub {
        Hub {
            logs: broadcast::channel(buffer).0,
            status: watch::channel(Status::Starting).0,
            permits: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            metrics,
        }
    }

    /// A new stream of SSE frames for the logs that match `filter`, or
    /// `TooManyStreams` when the limit is reached.
    pub fn subscribe(
        &self,
        filter: Filter,
    ) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + use<>, LogsError> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics.streams_rejected.inc();
            return Err(LogsError::TooManyStreams(self.max_streams));
        };
        self.metrics.streams_active.inc();
        let subscriber = Subscriber {
            logs: self.logs.subscribe(),
            status: self.status.subscribe(),
            filter,
            hello_sent: false,
            ready_sent: false,
            keepalive: keepalive(),
            _permit: permit,
            metrics: self.metrics.clone(),
        };
        Ok(futures_util::stream::unfold(subscriber, |mut s| async move {
            s.next_frame().await.map(|frame| (Ok(frame), s))
        }))
    }

    /// Ends every stream (on shutdown, so the server can stop gracefully
    /// without waiting for clients that never hang up).
    pub fn close(&self) {
        self.status.send_replace(Status::Closed);
    }

    fn publish(&self, entry: LogEntry) {
        let data = serde_json::to_string(&entry).unwrap_or_default();
        let frame = Bytes::from(format!("event: log\ndata: {data}\n\n"));
        self.metrics.tail_published.inc();
        // No subscriber is not an error: nobody is watching.
        let _ = self.logs.send(Arc::new(Published { entry, frame }));
    }

    fn mark_ready(&self) {
        self.status.send_if_modified(|status| {
            let changed = *status == Status::Starting;
            if changed {
                *status = Status::Ready;
            }
            changed
        });
    }
}

fn keepalive() -> Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// One open stream. Dropping it (the client went away) frees its permit.
struct Subscriber {
    logs: broadcast::Receiver<Arc<Published>>,
    status: watch::Receiver<Status>,
    filter: Filter,
    hello_sent: bool,
    ready_sent: bool,
    keepalive: Interval,
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Subscriber {
    /// The next frame to send, or `None` to end the response.
    async fn next_frame(&mut self) -> Option<Bytes> {
        if !self.hello_sent {
            self.hello_sent = true;
            return Some(Bytes::from_static(HELLO));
        }
        loop {
            match *self.status.borrow_and_update() {
                Status::Closed => return None,
                Status::Ready if !self.ready_sent => {
                    self.ready_sent = true;
                    return Some(Bytes::from_static(READY));
                }
                _ => {}
            }
            tokio::select! {
                changed = self.status.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                received = self.logs.recv() => match received {
                    Ok(published) if self.filter.matches(&published.entry) => return Some(published.frame.clone()),
                    Ok(_) => {}
                    Err(RecvError::Lagged(skipped)) => {
                        self.metrics.stream_skipped.inc_by(skipped);
                        return Some(Bytes::from(format!("event: skipped\ndata: {{\"skipped\":{skipped}}}\n\n")));
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.keepalive.tick() => return Some(Bytes::from_static(KEEPALIVE_COMMENT)),
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.metrics.streams_active.dec();
    }
}

/// Polls MongoDB every `every` and publishes the logs not seen before, until
/// the task is aborted. See [`Tail`] for what "new" means.
pub async fn run_tail(hub: Arc<Hub>, store: LogStore, every: Duration, lookback: Duration) {
    let mut tail = Tail::new(lookback);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        match store.newest_since(tail.since(), POLL_LIMIT).await {
            Ok(batch) => {
                if failing {
                    tracing::info!("live tail reads MongoDB again");
                    failing = false;
                }
                for entry in tail.admit(batch) {
                    hub.publish(entry);
                }
                hub.mark_ready();
                hub.metrics
                    .tail_polls
                    .get_or_create(&OutcomeLabels { outcome: "ok" })
                    .inc();
            }
            Err(e) => {
                // Once per outage, not once per poll.
                if !failing {
                    tracing::warn!(error = %e, detail = e.detail().unwrap_or_default(), "live tail cannot read MongoDB; retrying");
                    failing = true;
                }
                hub.metrics
                    .tail_polls
                    .get_or_create(&OutcomeLabels { outcome: "error" })
                    .inc();
            }
        }
    }
}

/// Which logs the tail has already published.
///
/// Consumers write partitions in parallel, so a log can be written after a
/// newer one (by `received_at`) was already seen. Each poll therefore reads
/// again the last `lookback` of `received_at` before the newest log seen, and
/// publishes only the (received_at, id) positions not seen yet. Positions
/// older than the window are forgotten, so memory is bounded by what a
/// window's polls return. The first poll only records what exists: the
/// stream pushes logs written after it started.
struct Tail {
    lookback_ms: i64,
    primed: bool,
    seen: BTreeSet<(i64, String)>,
}

impl Tail {
    fn new(lookback: Duration) -> Tail {
        Tail {
            lookback_ms: i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX),
            primed: false,
            seen: BTreeSet::new(),
        }
    }

    /// The oldest `received_at` (ms) the next poll must read; `None` before
    /// any log was seen (read the newest logs, whatever their age).
    fn since(&self) -> Option<i64> {
        self.seen
            .last()
            .map(|(newest, _)| newest.saturating_sub(self.lookback_ms))
    }

    /// Records a poll's logs and returns those to publish, oldest first.
    fn admit(&mut self, batch: Vec<LogEntry>) -> Vec<LogEntry> {
        let publish = std::mem::replace(&mut self.primed, true);
        let mut fresh: Vec<LogEntry> = batch
            .into_iter()
            .filter(|entry| {
                let (millis, id) = entry.position();
                self.seen.insert((millis, id.to_owned())) && publish
            })
            .collect();
        if let Some(floor) = self.since() {
            self.seen = self.seen.split_off(&(floor, String::new()));
        }
        fresh.sort_by(|a, b| a.position().cmp(&b.position()));
        fresh
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use futures_util::StreamExt;

    use super::*;

    fn entry(millis: i64, id: &str, band: &str) -> LogEntry {
        LogEntry {
            id: id.into(),
            received_at: DateTime::from_timestamp_millis(millis).unwrap(),
            band: band.into(),
            album: "a".into(),
            year: 2000,
            rank: 5.0,
            route: "http".into(),
        }
    }

    fn ids(entries: &[LogEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn the_first_poll_only_records_what_already_exists() {
        let mut tail = Tail::new(Duration::from_millis(1_000));
        assert_eq!(tail.since(), None);
        assert!(
            tail.admit(vec![entry(10_000, "a", "x"), entry(9_000, "b", "x")])
                .is_empty()
        );
        assert_eq!(tail.since(), Some(9_000));
    }

    #[test]
    fn later_polls_publish_only_unseen_logs_oldest_first() {
        let mut tail = Tail::new(Duration::from_millis(1_000));
        tail.admit(vec![entry(10_000, "a", "x")]);
        let fresh = tail.admit(vec![
            entry(10_500, "c", "x"),
            entry(10_200, "b", "x"),
            entry(10_000, "a", "x"),
        ]);
        assert_eq!(ids(&fresh), ["b", "c"]);
        assert!(
            tail.admit(vec![entry(10_500, "c", "x"), entry(10_200, "b", "x")])
                .is_empty()
        );
    }

    #[test]
    fn a_log_written_late_within_the_lookback_is_still_published() {
        let mut tail = Tail::new(Duration::from_millis(1_000));
        tail.admit(vec![]);
        assert_eq!(ids(&tail.admit(vec![entry(10_000, "new", "x")])), ["new"]);
        // Written after "new" although received 600 ms before it.
        assert_eq!(
            ids(&tail.admit(vec![entry(10_000, "new", "x"), entry(9_400, "late", "x")])),
            ["late"]
        );
    }

    #[test]
    fn an_empty_collection_at_start_means_the_first_logs_are_all_new() {
        let mut tail = Tail::new(Duration::from_millis(1_000));
        assert!(tail.admit(vec![]).is_empty());
        assert_eq!(tail.since(), None);
        assert_eq!(ids(&tail.admit(vec![entry(5, "first", "x")])), ["first"]);
    }

    #[test]
    fn positions_older_than_the_window_are_forgotten() {
        let mut tail = Tail::new(Duration::from_millis(1_000));
        tail.admit((0..100).map(|i| entry(i * 100, &format!("{i:03}"), "x")).collect());
        // Newest is 9 900 ms; the window keeps 8 900..=9 900.
        assert_eq!(tail.seen.len(), 11);
        assert_eq!(tail.since(), Some(8_900));
    }

    async fn frames(stream: impl Stream<Item = Result<Bytes, Infallible>>, n: usize) -> Vec<String> {
        stream
            .take(n)
            .map(|frame| String::from_utf8(frame.unwrap().to_vec()).unwrap())
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_stream_says_ready_then_sends_matching_logs_as_events() {
        let hub = Hub::new(16, 10, Arc::new(Metrics::new()));
        let filter = Filter {
            band: Some("keep".into()),
            ..Filter::default()
        };
        let stream = hub.subscribe(filter).unwrap();
        hub.mark_ready();
        hub.publish(entry(1_000, "1", "drop"));
        hub.publish(entry(2_000, "2", "keep"));
        let got = frames(stream, 3).await;
        assert!(got[0].starts_with("retry: 3000\n"));
        assert_eq!(got[1], "event: ready\ndata: {}\n\n");
        assert!(got[2].starts_with("event: log\ndata: {\"id\":\"2\","), "{}", got[2]);
        assert!(got[2].ends_with("}\n\n"));
    }

    #[tokio::test]
    async fn closing_the_hub_ends_every_stream() {
        let hub = Hub::new(16, 10, Arc::new(Metrics::new()));
        let stream = hub.subscribe(Filter::default()).unwrap();
        hub.close();
        assert_eq!(frames(stream, 10).await.len(), 1, "only the greeting, then the end");
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_skips_the_oldest_and_is_told_how_many() {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(2, 10, metrics.clone());
        let stream = hub.subscribe(Filter::default()).unwrap();
        hub.mark_ready();
        for i in 0..5 {
            hub.publish(entry(i, &i.to_string(), "x"));
        }
        let got = frames(stream, 5).await;
        assert_eq!(got[2], "event: skipped\ndata: {\"skipped\":3}\n\n");
        assert!(got[3].contains("\"id\":\"3\"") && got[4].contains("\"id\":\"4\""));
        assert_eq!(metrics.stream_skipped.get(), 3);
    }

    #[tokio::test]
    async fn streams_beyond_the_limit_are_refused_until_one_ends() {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(4, 1, metrics.clone());
        let first = hub.subscribe(Filter::default()).unwrap();
        assert!(matches!(
            hub.subscribe(Filter::default()),
            Err(LogsError::TooManyStreams(1))
        ));
        assert_eq!(metrics.streams_active.get(), 1);
        drop(first);
        assert_eq!(metrics.streams_active.get(), 0);
        assert!(hub.subscribe(Filter::default()).is_ok());
    }
}
