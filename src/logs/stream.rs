//! `GET /logs/stream`: new logs pushed as server-sent events.
//!
//! The consumer appends the votes of every batch it counts, once, to the
//! capped Redis stream `logs:tail` (one entry per batch, field `logs`: a JSON
//! array of log items), in the same script that applies the counters (so a
//! replay adds nothing twice). One reader here (the "tail") follows that
//! stream with a blocking XREAD while at least one client is connected, and
//! sends nothing to Redis or MongoDB while none is: the live page costs the
//! stores in proportion to the new logs, never to the size of the history.
//! Each log is published, already encoded, to a `broadcast` channel that
//! every stream reads. Memory stays bounded whatever the clients do:
//! - the channel holds at most `buffer` logs; a client further behind skips
//!   the oldest and gets a `skipped` event saying how many;
//! - actix polls a response body only while the socket's write buffer has
//!   room, so a slow reader holds one buffer, not a backlog;
//! - a semaphore caps the number of open streams.
//!
//! Events: `ready` once the tail is following the stream (logs counted after
//! it will be pushed), `log` (the same JSON item as `/logs`), `skipped`
//! (`{"skipped": n}`), and a comment every 5 s so dead connections are
//! noticed and idle proxies keep the connection open.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use deadpool_redis::{Pool, redis};
use serde_json::value::RawValue;

use super::error::LogsError;
use super::metrics::{Metrics, OutcomeLabels};
use super::query::Filter;
use crate::log_entry::ItemKey;
use crate::schema::redis::LOGS_TAIL_FIELD;

/// Most entries (batches) one read takes from the stream.
const READ_COUNT: usize = 16;
/// How long one XREAD waits for new logs, in milliseconds: under the Redis
/// client's 500 ms response timeout, and the longest a tail with no client
/// left keeps reading.
const READ_BLOCK_MS: u64 = 250;
/// Pause after a failed read before the next one.
const READ_RETRY: Duration = Duration::from_secs(1);
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
    /// The tail is not following the stream (yet).
    Starting,
    /// Logs written from now on will be pushed.
    Ready,
    /// The app is shutting down: streams end.
    Closed,
}

/// A log as every stream sends it: encoded once, shared by all.
struct Published {
    key: ItemKey,
    frame: Bytes,
}

/// Where the tail publishes and streams subscribe.
pub struct Hub {
    logs: broadcast::Sender<Arc<Published>>,
    status: watch::Sender<Status>,
    permits: Arc<Semaphore>,
    max_streams: usize,
    /// Open streams: the tail reads Redis only while this is above zero.
    watchers: Arc<watch::Sender<usize>>,
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
            watchers: Arc::new(watch::channel(0).0),
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
        self.watchers.send_modify(|n| *n += 1);
        let subscriber = Subscriber {
            logs: self.logs.subscribe(),
            status: self.status.subscribe(),
            filter,
            hello_sent: false,
            ready_sent: false,
            keepalive: keepalive(),
            _permit: permit,
            watchers: self.watchers.clone(),
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

    /// Sends one encoded log item to every stream. An item that is not one
    /// (written by something else than the consumer) is skipped.
    fn publish(&self, item: &str) {
        let Ok(key) = serde_json::from_str::<ItemKey>(item) else {
            tracing::warn!(item, "not a log item in the live tail; skipped");
            return;
        };
        let frame = Bytes::from(format!("event: log\ndata: {item}\n\n"));
        self.metrics.tail_published.inc();
        // No subscriber is not an error: nobody is watching.
        let _ = self.logs.send(Arc::new(Published { key, frame }));
    }

    fn mark_ready(&self) {
        self.set_status_from(Status::Starting, Status::Ready);
    }

    /// The tail stopped following the stream: streams that open now wait
    /// for `ready` again.
    fn mark_idle(&self) {
        self.set_status_from(Status::Ready, Status::Starting);
    }

    fn set_status_from(&self, from: Status, to: Status) {
        self.status.send_if_modified(|status| {
            let changed = *status == from;
            if changed {
                *status = to;
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
    watchers: Arc<watch::Sender<usize>>,
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
                    Ok(published) if self.filter.matches(&published.key) => return Some(published.frame.clone()),
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
        self.watchers.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Where the tail reads: the `logs:tail` Redis stream.
#[derive(Clone)]
pub struct TailSource {
    pool: Pool,
    key: String,
}

/// One stream entry: its id and the log item.
type StreamEntry = (String, Vec<(String, String)>);

impl TailSource {
    pub fn new(pool: Pool, key: String) -> TailSource {
        TailSource { pool, key }
    }

    /// The id of the newest entry, or "0-0" when the stream is empty.
    async fn end(&self) -> Result<String, String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        let newest: Vec<StreamEntry> = redis::cmd("XREVRANGE")
            .arg(&self.key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(newest.into_iter().next().map_or_else(|| "0-0".to_owned(), |(id, _)| id))
    }

    /// The entries after `after`, waiting up to [`READ_BLOCK_MS`] for one.
    async fn read_after(&self, after: &str) -> Result<Vec<StreamEntry>, String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        let reply: Option<Vec<(String, Vec<StreamEntry>)>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(READ_BLOCK_MS)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(after)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(reply.into_iter().flatten().flat_map(|(_, entries)| entries).collect())
    }
}

/// Follows the stream while at least one client is connected and publishes
/// each new log, until the task is aborted. With no client it waits, asking
/// nothing of Redis; when the first one connects it starts again from the
/// stream's newest entry, so clients get what is counted after they came.
pub async fn run_tail(hub: Arc<Hub>, source: TailSource) {
    let mut watchers = hub.watchers.subscribe();
    loop {
        if watchers.wait_for(|n| *n > 0).await.is_err() {
            return;
        }
        follow(&hub, &source, &watchers).await;
        hub.mark_idle();
    }
}

/// Publishes each item of one entry's JSON array, as it was encoded.
fn publish_all(hub: &Hub, logs: &str) {
    match serde_json::from_str::<Vec<&RawValue>>(logs) {
        Ok(items) => items.into_iter().for_each(|item| hub.publish(item.get())),
        Err(error) => tracing::warn!(%error, "a live-tail entry is not a JSON array of logs; skipped"),
    }
}

/// Reads the stream until no client is left.
async fn follow(hub: &Hub, source: &TailSource, watchers: &watch::Receiver<usize>) {
    let mut after: Option<String> = None;
    let mut failing = false;
    while *watchers.borrow() > 0 {
        let read = match &after {
            None => source.end().await.map(|end| {
                after = Some(end);
                Vec::new()
            }),
            Some(id) => source.read_after(id).await,
        };
        let outcome = match read {
            Ok(entries) => {
                if failing {
                    tracing::info!("live tail reads Redis again");
                    failing = false;
                }
                for (id, fields) in entries {
                    if let Some((_, logs)) = fields.iter().find(|(name, _)| name == LOGS_TAIL_FIELD) {
                        publish_all(hub, logs);
                    }
                    after = Some(id);
                }
                hub.mark_ready();
                "ok"
            }
            Err(error) => {
                // Once per outage, not once per read.
                if !failing {
                    tracing::warn!(%error, "live tail cannot read Redis; retrying");
                    failing = true;
                }
                tokio::time::sleep(READ_RETRY).await;
                "error"
            }
        };
        hub.metrics.tail_polls.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use futures_util::StreamExt;

    use super::*;
    use crate::log_entry::LogEntry;

    fn item(millis: i64, id: &str, band: &str) -> String {
        serde_json::to_string(&LogEntry {
            id: id.into(),
            received_at: DateTime::from_timestamp_millis(millis).unwrap(),
            band: band.into(),
            album: "a".into(),
            year: 2000,
            rank: 5.0,
            route: "http".into(),
            voter: None,
            outcome: crate::schema::redis::Outcome::Counted,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn the_tail_is_told_how_many_streams_are_open() {
        let hub = Hub::new(4, 10, Arc::new(Metrics::new()));
        let watchers = hub.watchers.subscribe();
        assert_eq!(*watchers.borrow(), 0);
        let first = hub.subscribe(Filter::default()).unwrap();
        let second = hub.subscribe(Filter::default()).unwrap();
        assert_eq!(*watchers.borrow(), 2);
        drop(first);
        drop(second);
        assert_eq!(*watchers.borrow(), 0, "no stream left: the tail stops reading");
    }

    #[tokio::test]
    async fn something_that_is_not_a_log_item_is_not_published() {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(4, 10, metrics.clone());
        publish_all(&hub, "not json");
        publish_all(&hub, r#"[{"band": 5}]"#);
        assert_eq!(metrics.tail_published.get(), 0);
    }

    #[tokio::test]
    async fn each_item_of_an_entry_is_published_as_it_was_encoded() {
        let hub = Hub::new(16, 10, Arc::new(Metrics::new()));
        let stream = hub.subscribe(Filter::default()).unwrap();
        hub.mark_ready();
        publish_all(&hub, &format!("[{},{}]", item(1, "a", "x"), item(2, "b", "y")));
        let got = frames(stream, 4).await;
        assert_eq!(got[2], format!("event: log\ndata: {}\n\n", item(1, "a", "x")));
        assert_eq!(got[3], format!("event: log\ndata: {}\n\n", item(2, "b", "y")));
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
        hub.publish(&item(1_000, "1", "drop"));
        hub.publish(&item(2_000, "2", "keep"));
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
            hub.publish(&item(i, &i.to_string(), "x"));
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
