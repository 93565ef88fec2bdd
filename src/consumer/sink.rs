//! The supervised sink actor shared by the Redis aggregator and the Mongo
//! logger. A sink has up to `concurrency` writes in flight, started in
//! mailbox order (each runs as its own task, holding one of `concurrency`
//! permits; the mailbox stays closed while none is free): the Redis aggregator one (its script is fenced by offsets,
//! so batches apply strictly in order), the Mongo logger several (log writes
//! are idempotent, so their order does not matter, and a database serves
//! several writers better than one). When a write fails on I/O, the actor
//! keeps the batch (and the reader's reply channel), lets the other writes in
//! flight finish, stops its context and is restarted by `actix::Supervisor`
//! with capped exponential backoff; on restart it reconnects and writes the
//! kept batches before it takes the next message, so nothing is dropped.
//! The reader's `Addr::send(..).await` resolves only when a batch is written,
//! and the reader commits offsets in batch order whatever order they finish in.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::batch::SharedBatch;
use super::metrics::{ConsumerMetrics, SinkLabel};

/// What a sink reports for a written batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Votes newly stored (a replay stores fewer, or none).
    pub votes: usize,
}

/// Why a batch was not written; the reader re-reads from what is stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SinkError {
    #[error("redis is behind the batch on {field} (stored offset {stored}); it lost data")]
    Gap { field: String, stored: i64 },
    #[error("the sink stopped before writing the batch")]
    Stopped,
}

/// A write that failed: `Io` restarts the actor and retries, `Refused` is answered.
#[derive(Debug)]
pub enum WriteFailure {
    Io(String),
    Refused(SinkError),
}

/// One external store behind a sink actor.
pub trait Sink: Unpin + 'static {
    /// The actor's name in logs and metrics.
    const NAME: &'static str;
    /// The readiness flag of this sink's store (`/readyz`).
    fn up_flag(metrics: &ConsumerMetrics) -> &Gauge;
    type Conn: Clone + Unpin + 'static;
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, String>> + 'static;
    fn write(
        &self,
        conn: Self::Conn,
        batch: SharedBatch,
    ) -> impl Future<Output = Result<Written, WriteFailure>> + 'static;
}

/// Doubles from `min` up to `max`; reset after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: Duration::ZERO,
        }
    }

    /// The delay before the next attempt (zero after a success).
    pub fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = if d.is_zero() { self.min } else { (d * 2).min(self.max) };
        d
    }

    pub fn reset(&mut self) {
        self.next = Duration::ZERO;
    }

    /// After an attempt that failed once it had run for `ran`: one that lasted
    /// longer than the longest delay was not a crash loop, so the next
    /// attempt starts the sequence again rather than waiting the longest delay.
    pub fn failed_after(&mut self, ran: Duration) {
        if ran > self.max {
            self.reset();
        }
    }
}

pub struct WriteBatch(pub SharedBatch);

impl Message for WriteBatch {
    type Result = Result<Written, SinkError>;
}

type Reply = oneshot::Sender<Result<Written, SinkError>>;

/// A write task ended. Tasks tell their actor through its own unbounded
/// stream, not the mailbox: a message there would take a slot the reader's
/// batches count on (at most one per write in flight is ever queued).
struct Finished {
    /// The batch and reply of a write that failed on I/O, and why.
    failed: Option<(SharedBatch, Reply, String)>,
}

/// Stop for a restart if the connection is gone and no write is in flight.
struct RestartIfIdle;

impl Message for RestartIfIdle {
    type Result = ();
}

pub struct SinkActor<S: Sink> {
    sink: S,
    conn: Option<S::Conn>,
    /// Batches whose write failed or found no connection, with the reader's
    /// reply channels: written first after a restart.
    kept: Vec<(SharedBatch, Reply)>,
    /// Write tasks started and not finished.
    in_flight: usize,
    /// One per write in flight at once (`concurrency`, at least 1).
    permits: Arc<Semaphore>,
    /// Set by a write task that failed on I/O, before it frees its permit, so
    /// no later write starts on the broken connection (for Redis that would
    /// apply a batch past the one that failed).
    broken: Arc<AtomicBool>,
    /// Where write tasks report; a new channel for each incarnation.
    finished: Option<mpsc::UnboundedSender<Finished>>,
    backoff: Backoff,
    capacity: usize,
    metrics: Arc<ConsumerMetrics>,
}

impl<S: Sink> SinkActor<S> {
    pub fn new(sink: S, capacity: usize, concurrency: usize, backoff: Backoff, metrics: Arc<ConsumerMetrics>) -> Self {
        metrics.supervised(S::NAME);
        SinkActor {
            sink,
            conn: None,
            kept: Vec::new(),
            in_flight: 0,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            broken: Arc::new(AtomicBool::new(false)),
            finished: None,
            backoff,
            capacity,
            metrics,
        }
    }

    /// Starts the actor under a supervisor.
    pub fn start_supervised(self) -> Addr<Self> {
        Supervisor::start(move |_| self)
    }

    fn set_up(&self, up: bool) {
        ConsumerMetrics::set_up(S::up_flag(&self.metrics), up);
    }

    fn connected(&self) -> bool {
        self.conn.is_some() && !self.broken.load(Ordering::SeqCst)
    }

    /// Starts writing one batch as its own task once a permit is free; the
    /// mailbox stays closed until then, so writes start in mailbox order.
    fn write(&mut self, batch: SharedBatch, reply: Reply, ctx: &mut Context<Self>) {
        if !self.connected() {
            self.keep(batch, reply, ctx);
            return;
        }
        let permits = self.permits.clone();
        let acquire = async move { permits.acquire_owned().await.ok() };
        ctx.wait(acquire.into_actor(self).map(move |permit, act, ctx| {
            let (Some(permit), Some(conn), Some(finished), true) =
                (permit, act.conn.clone(), act.finished.clone(), act.connected())
            else {
                act.keep(batch, reply, ctx);
                return;
            };
            act.in_flight += 1;
            let write = act.sink.write(conn, batch.clone());
            let (broken, metrics) = (act.broken.clone(), act.metrics.clone());
            actix::spawn(async move {
                let started = Instant::now();
                let failed = match write.await {
                    Ok(written) => {
                        metrics
                            .apply_seconds
                            .get_or_create(&SinkLabel { sink: S::NAME })
                            .observe(started.elapsed().as_secs_f64());
                        metrics
                            .batches_applied
                            .get_or_create(&SinkLabel { sink: S::NAME })
                            .inc();
                        let _ = reply.send(Ok(written));
                        None
                    }
                    Err(WriteFailure::Refused(e)) => {
                        let _ = reply.send(Err(e));
                        None
                    }
                    Err(WriteFailure::Io(error)) => {
                        broken.store(true, Ordering::SeqCst);
                        Some((batch, reply, error))
                    }
                };
                drop(permit);
                let _ = finished.send(Finished { failed });
            });
        }));
    }

    /// Keeps a batch for after the restart, which comes once no write is in
    /// flight (checked after the waits queued now, so none of them is dropped).
    fn keep(&mut self, batch: SharedBatch, reply: Reply, ctx: &mut Context<Self>) {
        self.kept.push((batch, reply));
        ctx.notify(RestartIfIdle);
    }

    fn restart_if_idle(&mut self, ctx: &mut Context<Self>) {
        if !self.connected() && self.in_flight == 0 {
            ctx.stop();
        }
    }
}

impl<S: Sink> StreamHandler<Finished> for SinkActor<S> {
    fn handle(&mut self, msg: Finished, ctx: &mut Context<Self>) {
        self.in_flight -= 1;
        match msg.failed {
            None => self.backoff.reset(),
            Some((batch, reply, error)) => {
                if self.conn.take().is_some() {
                    tracing::warn!(actor = S::NAME, %error, "write failed; restarting");
                    self.set_up(false);
                }
                self.kept.push((batch, reply));
            }
        }
        self.restart_if_idle(ctx);
    }

    /// The stream ends only when its sender is replaced at a restart.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl<S: Sink> Handler<RestartIfIdle> for SinkActor<S> {
    type Result = ();

    fn handle(&mut self, _: RestartIfIdle, ctx: &mut Context<Self>) {
        self.restart_if_idle(ctx);
    }
}

impl<S: Sink> Actor for SinkActor<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // One more than the reader keeps in flight: a full actix channel parks
        // the sender, and parked sends are delivered in no particular order.
        ctx.set_mailbox_capacity(self.capacity + 1);
        let (finished, reports) = mpsc::unbounded_channel();
        self.finished = Some(finished);
        ctx.add_stream(UnboundedReceiverStream::new(reports));
        let delay = self.backoff.delay();
        let connect = self.sink.connect();
        // `wait` keeps the mailbox closed until connected and the kept batch written.
        ctx.wait(
            async move {
                tokio::time::sleep(delay).await;
                connect.await
            }
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok(conn) => {
                    tracing::info!(actor = S::NAME, "connected");
                    act.conn = Some(conn);
                    act.broken.store(false, Ordering::SeqCst);
                    act.set_up(true);
                    let mut kept = std::mem::take(&mut act.kept);
                    kept.sort_by_key(|(batch, _)| batch.seq);
                    for (batch, reply) in kept {
                        act.write(batch, reply, ctx);
                    }
                }
                Err(error) => {
                    tracing::warn!(actor = S::NAME, %error, "cannot connect; restarting");
                    act.set_up(false);
                    ctx.stop();
                }
            }),
        );
    }
}

impl<S: Sink> Supervised for SinkActor<S> {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.metrics.restarted(S::NAME);
    }
}

impl<S: Sink> Handler<WriteBatch> for SinkActor<S> {
    type Result = ResponseFuture<Result<Written, SinkError>>;

    fn handle(&mut self, msg: WriteBatch, ctx: &mut Context<Self>) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        self.write(msg.0, reply, ctx);
        Box::pin(async move { answer.await.unwrap_or(Err(SinkError::Stopped)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_zero_then_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<u128> = (0..5).map(|_| b.delay().as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.delay(), Duration::ZERO);
    }

    #[test]
    fn backoff_starts_again_only_after_an_attempt_that_ran_longer_than_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let _ = (b.delay(), b.delay(), b.delay());
        b.failed_after(Duration::from_millis(350));
        assert_eq!(
            b.delay(),
            Duration::from_millis(350),
            "a quick failure keeps backing off"
        );
        b.failed_after(Duration::from_millis(351));
        assert_eq!(b.delay(), Duration::ZERO);
        assert_eq!(b.delay(), Duration::from_millis(100));
    }
}
