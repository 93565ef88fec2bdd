//! The `logs` collection in MongoDB, read side: one page of logs newest first.
//!
//! The order is (received_at desc, _id desc): the `_id` (the record's
//! position in Kafka, unique where the vote id is not: a duplicate shares it)
//! breaks ties between logs received in the same millisecond, so a cursor
//! names one exact position. Every call is bounded by the backend timeout
//! (server selection included), so an unreachable database is a quick 503,
//! not a hung request; the same bound goes to the server as `maxTimeMS`, so
//! a query the app gives up on stops in the database too. At most
//! `max_queries` pages are asked of MongoDB at once: whatever the load on the
//! page, the database holds a bounded number of queries and the consumer's
//! writes go on. And when the server itself runs a page out of its time,
//! pages with the same filters pause for a while ([`super::pause`]) instead
//! of asking it again at once: a store that scans the collection for a page
//! (FerretDB) is not kept busy with work it will give up again. Each shape of
//! filter (band, album, route: each given or not) has a pause of its own, so
//! a costly filtered page never pauses the plain page everyone opens.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{self, Document, doc};
use mongodb::{Collection, Database};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::error::LogsError;
use super::metrics::Metrics;
use super::pause::{Admission, Answer, PagePause};
use super::query::{Cursor, Filter, LogQuery};
use crate::log_entry::LogEntry;
use crate::schema::mongo::{LogDocument, ensure_indexes, logs, page_order};
use crate::stores::mongo_client;

/// How long index creation may take (on a large collection it builds the
/// index), and how long to wait before trying again.
const INDEX_TIMEOUT: Duration = Duration::from_secs(60);
const INDEX_RETRY: Duration = Duration::from_secs(5);

/// Least time left for a query to be worth sending (and a non-zero maxTimeMS).
const MIN_QUERY_TIME: Duration = Duration::from_millis(10);

/// The server's time limit ends this much before the app's own deadline (a
/// quarter of the time left at most), so a query out of time comes back as
/// the server's MaxTimeMSExpired, which is what pauses pages.
const SERVER_LIMIT_MARGIN: Duration = Duration::from_millis(250);

/// MongoDB's error code for a query stopped at its maxTimeMS.
const MAX_TIME_MS_EXPIRED: i32 = 50;

/// One page of `GET /logs`; `next` is absent on the last page.
#[derive(Debug, Serialize)]
pub struct Page {
    pub items: Vec<LogEntry>,
    pub next: Option<Cursor>,
}

#[derive(Clone)]
pub struct LogStore {
    db: Database,
    logs: Collection<LogDocument>,
    timeout: Duration,
    slots: Arc<Semaphore>,
    max_queries: usize,
    /// One pause per shape of filter ([`shape`]).
    pauses: Arc<Mutex<[PagePause; SHAPES]>>,
    metrics: Arc<Metrics>,
}

impl LogStore {
    /// Prepares the client; it connects lazily, so the app starts (and
    /// answers 503) while MongoDB is down, and recovers when it comes back.
    pub async fn new(
        uri: &str,
        database: &str,
        timeout: Duration,
        max_queries: usize,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<LogStore> {
        let db = mongo_client(uri, "votestream-logs", timeout).await?.database(database);
        Ok(LogStore {
            logs: logs(&db),
            db,
            timeout,
            slots: Arc::new(Semaphore::new(max_queries)),
            max_queries,
            pauses: Arc::new(Mutex::new(std::array::from_fn(|_| PagePause::new(timeout)))),
            metrics,
        })
    }

    /// Newest first, `query.limit` logs at most, strictly after `query.before`.
    pub async fn page(&self, query: &LogQuery) -> Result<Page, LogsError> {
        let mut filter = filter_document(&query.filter);
        if let Some(before) = &query.before {
            let at = bson::DateTime::from_millis(before.received_at_ms);
            filter.insert(
                "$or",
                vec![
                    doc! { "received_at": { "$lt": at } },
                    doc! { "received_at": at, "_id": { "$lt": &before.id } },
                ],
            );
        }
        // One more than asked tells whether another page exists, so the last
        // page carries no cursor to an empty page.
        let mut documents = self.newest(shape(&query.filter), filter, query.limit + 1).await?;
        let next = if documents.len() > query.limit {
            documents.truncate(query.limit);
            documents.last().map(Cursor::of)
        } else {
            None
        };
        let items = documents
            .into_iter()
            .map(|d| d.entry().map_err(LogsError::bad_document))
            .collect::<Result<_, _>>()?;
        Ok(Page { items, next })
    }

    async fn newest(&self, shape: usize, filter: Document, limit: usize) -> Result<Vec<LogDocument>, LogsError> {
        let admitted = self.pauses.lock().expect("page pauses")[shape].admit(Instant::now());
        if let Admission::Wait(left) = admitted {
            self.metrics.queries_paused.inc();
            return Err(self.paused(left));
        }
        // Tells the pause how this page ended, however it ends (a client that
        // goes away drops this future: a probe must not stay out for ever).
        let asking = Asking {
            store: self,
            shape,
            admitted,
            recorded: false,
        };
        let deadline = Instant::now() + self.timeout;
        let Ok(_slot) = tokio::time::timeout_at(deadline, self.slots.acquire()).await else {
            return Err(self.busy());
        };
        self.metrics.queries_active.inc();
        let _active = scopeguard(|| {
            self.metrics.queries_active.dec();
        });
        let left = deadline.saturating_duration_since(Instant::now());
        // MongoDB reads maxTimeMS 0 as "no limit": a query that would leave with
        // (almost) no time is not sent at all.
        if left < MIN_QUERY_TIME {
            return Err(self.busy());
        }
        let server_limit = left - SERVER_LIMIT_MARGIN.min(left / 4);
        let query = async {
            self.logs
                .find(filter)
                .sort(page_order())
                .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                // The server gives the query up before this app does.
                .max_time(server_limit)
                .await?
                .try_collect::<Vec<_>>()
                .await
        };
        match tokio::time::timeout(left, query).await {
            Ok(Ok(documents)) => {
                asking.record(Answer::InTime);
                Ok(documents)
            }
            Ok(Err(e)) if out_of_time(&e) => {
                self.metrics.queries_out_of_time.inc();
                tracing::warn!(error = %e, "MongoDB ran a page of logs out of its time; pages pause");
                match asking.record(Answer::OutOfTime) {
                    Some(pause) => Err(self.paused(pause)),
                    None => Err(LogsError::from_mongo(e)),
                }
            }
            Ok(Err(e)) => Err(LogsError::from_mongo(e)),
            Err(_) => Err(self.no_answer()),
        }
    }

    /// Every query slot stayed taken for (nearly) the whole timeout.
    fn busy(&self) -> LogsError {
        self.metrics.queries_refused.inc();
        LogsError::MongoUnavailable {
            detail: format!("{} queries outstanding for {:?}", self.max_queries, self.timeout),
        }
    }

    /// Creates the logs' indexes (the same call as the consumer's), retrying
    /// until MongoDB answers: the app starts while MongoDB is down.
    pub async fn ensure_indexes(self) {
        let mut warned = false;
        loop {
            match tokio::time::timeout(INDEX_TIMEOUT, ensure_indexes(&self.db)).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) if !warned => tracing::warn!(error = %e, "cannot create the logs' indexes yet; retrying"),
                Err(_) if !warned => tracing::warn!("creating the logs' indexes took over {INDEX_TIMEOUT:?}; retrying"),
                _ => {}
            }
            warned = true;
            tokio::time::sleep(INDEX_RETRY).await;
        }
    }

    pub async fn ping(&self) -> Result<(), LogsError> {
        self.bounded(self.db.run_command(doc! { "ping": 1 })).await.map(drop)
    }

    async fn bounded<T>(&self, call: impl IntoFuture<Output = mongodb::error::Result<T>>) -> Result<T, LogsError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(LogsError::from_mongo),
            Err(_) => Err(self.no_answer()),
        }
    }

    /// Pages of this shape pause for `retry_after` yet.
    fn paused(&self, retry_after: Duration) -> LogsError {
        LogsError::PagesPaused {
            timeout: self.timeout,
            retry_after,
        }
    }

    fn no_answer(&self) -> LogsError {
        LogsError::MongoUnavailable {
            detail: format!("no answer within {:?}", self.timeout),
        }
    }
}

/// A page on its way: records how it ended in the pause, as `Failed` if it
/// ended any other way than through [`Asking::record`].
struct Asking<'a> {
    store: &'a LogStore,
    shape: usize,
    admitted: Admission,
    recorded: bool,
}

impl Asking<'_> {
    /// Records the answer; gives the pause now in force for this shape, if any.
    fn record(mut self, answer: Answer) -> Option<Duration> {
        self.recorded = true;
        self.note(answer)
    }

    fn note(&self, answer: Answer) -> Option<Duration> {
        self.store.pauses.lock().ok()?[self.shape].record(Instant::now(), self.admitted, answer)
    }
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.note(Answer::Failed);
        }
    }
}

/// Shapes of filter: band, album and route, each given or not.
const SHAPES: usize = 8;

/// Which fields a page filters on, as an index below [`SHAPES`]: pages of
/// one shape cost MongoDB about the same (the same index walk or scan).
fn shape(filter: &Filter) -> usize {
    usize::from(filter.band.is_some())
        | usize::from(filter.album.is_some()) << 1
        | usize::from(filter.route.is_some()) << 2
}

/// Runs `f` when dropped: undoes a gauge increment on every way out.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// The server stopped the query at its maxTimeMS.
fn out_of_time(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, mongodb::error::ErrorKind::Command(c) if c.code == MAX_TIME_MS_EXPIRED)
}

fn filter_document(filter: &Filter) -> Document {
    let mut document = Document::new();
    if let Some(band) = &filter.band {
        document.insert("name", band);
    }
    if let Some(album) = &filter.album {
        document.insert("album", album);
    }
    if let Some(route) = filter.route {
        document.insert("route", route.as_str());
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vote::Route;

    #[test]
    fn filters_become_exact_matches_on_the_stored_field_names() {
        let filter = Filter {
            band: Some("Alux Nahual".into()),
            album: None,
            route: Some(Route::Http),
        };
        assert_eq!(
            filter_document(&filter),
            doc! { "name": "Alux Nahual", "route": "http" }
        );
        assert_eq!(filter_document(&Filter::default()), doc! {});
    }

    #[test]
    fn each_shape_of_filter_has_a_pause_of_its_own() {
        let band = |b: &str| Filter {
            band: Some(b.into()),
            ..Filter::default()
        };
        assert_eq!(shape(&Filter::default()), 0);
        assert_eq!(shape(&band("Alux Nahual")), shape(&band("Bohemia Suburbana")));
        let all = Filter {
            band: Some("Alux Nahual".into()),
            album: Some("Alux Nahual".into()),
            route: Some(Route::Grpc),
        };
        let mut shapes: Vec<usize> = [
            Filter::default(),
            band("x"),
            Filter {
                album: Some("x".into()),
                ..Filter::default()
            },
            Filter {
                route: Some(Route::Http),
                ..Filter::default()
            },
            all,
        ]
        .iter()
        .map(shape)
        .collect();
        assert!(shapes.iter().all(|&s| s < SHAPES));
        shapes.dedup();
        assert_eq!(shapes.len(), 5);
    }
}
