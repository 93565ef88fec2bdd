//! The ingress: accepts votes over gRPC ([`grpc`]) and HTTP ([`http`]),
//! validates them ([`crate::vote`]), produces them to Kafka ([`producer`])
//! and answers only once Kafka has acknowledged them ([`intake`]).
//!
//! [`Ingress::build`] binds the listeners (port 0 picks a free one, which is
//! how tests run it) and exposes the bound addresses; [`Ingress::run`] serves
//! until its shutdown future resolves, lets in-flight requests finish and
//! flushes the producer.

mod auth;
pub(crate) mod codec;
mod grpc;
mod http;
mod intake;
mod limits;
mod metrics;
mod producer;

/// The ingress's Kafka producer, which the benchmark's raw-produce run drives directly.
pub use producer::VoteProducer;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::config::{IngressArgs, IngressSettings};
use crate::shutdown::{stop_all_after, stopped};
use crate::vote::Rules;
use auth::Authenticator;
use intake::Intake;
use limits::Limits;
use metrics::Metrics;

pub struct Ingress {
    args: IngressArgs,
    intake: Arc<Intake>,
    http: TcpListener,
    http_addr: SocketAddr,
    grpc: Option<(TcpListener, SocketAddr)>,
}

impl Ingress {
    /// Creates the producer and binds the listeners; serves nothing yet.
    pub fn build(settings: &IngressSettings) -> anyhow::Result<Ingress> {
        let args = &settings.ingress;
        anyhow::ensure!(
            !(args.no_grpc && args.no_http_votes),
            "--no-grpc and --no-http-votes together leave no way to send a vote"
        );
        let producer = VoteProducer::new(&settings.kafka, &args.producer).context("creating the Kafka producer")?;
        let window = settings.contest.window()?;
        let auth = Authenticator::from_args(&args.auth)?;
        let limits = Limits::from_args(&args.limits, args.producer.producer_queue_messages)?;
        // With tokens every vote gets its voter from the token, so --require-voter holds by itself.
        let rules = Rules {
            require_voter: settings.rules().require_voter && auth.is_none(),
            ..settings.rules()
        };
        let intake = Intake::new(producer, Metrics::new(), rules, window, args.max_batch).guarded(auth, limits);
        let http = TcpListener::bind(args.http_addr).context("binding the HTTP listener")?;
        let http_addr = http.local_addr()?;
        let grpc = if args.no_grpc {
            None
        } else {
            let listener = TcpListener::bind(args.grpc_addr).context("binding the gRPC listener")?;
            let addr = listener.local_addr()?;
            Some((listener, addr))
        };
        Ok(Ingress {
            args: args.clone(),
            intake: Arc::new(intake),
            http,
            http_addr,
            grpc,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `None` when gRPC is switched off.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves until `shutdown` resolves (or a server fails), then stops
    /// accepting, lets in-flight requests finish (at most the shutdown
    /// timeout) and flushes the producer. Every vote a client was told is
    /// accepted was acknowledged by Kafka before the reply, so the flush only
    /// concerns votes whose clients went away.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let http_votes = if self.args.no_http_votes {
            " (no POST /votes)"
        } else {
            ""
        };
        tracing::info!(
            "ingress listening: HTTP on {}{http_votes}, gRPC {}; topic {:?}",
            self.http_addr(),
            self.grpc_addr().map_or("off".to_owned(), |a| format!("on {a}")),
            self.intake.producer().topic(),
        );
        let (stop, stopping) = watch::channel(false);
        let http = http::server(self.http, self.intake.clone(), &self.args, stopped(stopping.clone()))
            .context("starting the HTTP server")?;
        let http = tokio::spawn(stop_all_after(stop.clone(), async move {
            http.await.context("HTTP server")
        }));
        let grpc = match self.grpc {
            None => None,
            Some((listener, _)) => {
                listener.set_nonblocking(true)?;
                let serve = grpc::serve(
                    tokio::net::TcpListener::from_std(listener)?,
                    self.intake.clone(),
                    self.args.grpc_max_message_bytes,
                    stopped(stopping.clone()),
                );
                let drain = bounded_drain(serve, stopping.clone(), self.args.shutdown_timeout());
                Some(tokio::spawn(stop_all_after(stop.clone(), drain)))
            }
        };

        tokio::select! {
            _ = shutdown => tracing::info!("shutting down: finishing in-flight requests"),
            _ = stopped(stopping.clone()) => tracing::warn!("a server stopped by itself; shutting down"),
        }
        stop.send_replace(true);
        let http_result = http.await.context("HTTP server task")?;
        let grpc_result = match grpc {
            Some(task) => task.await.context("gRPC server task")?,
            None => Ok(()),
        };

        let producer = self.intake.producer().clone();
        let flush_timeout = self.args.producer.produce_timeout();
        let flushed = tokio::task::spawn_blocking(move || {
            let result = producer.flush(flush_timeout);
            (result, producer.pending())
        })
        .await
        .context("flushing the producer")?;
        match flushed {
            (Ok(()), _) => tracing::info!("producer flushed; ingress stopped"),
            (Err(e), pending) => {
                tracing::error!(error = %e, pending, "producer flush incomplete; unacknowledged votes may be lost");
            }
        }
        http_result.and(grpc_result)
    }
}

/// tonic's graceful shutdown waits for every connection to close; a client
/// that keeps one open must not hold the process past the grace period.
async fn bounded_drain(
    serve: impl Future<Output = anyhow::Result<()>>,
    stopping: watch::Receiver<bool>,
    grace: Duration,
) -> anyhow::Result<()> {
    tokio::select! {
        result = serve => result.context("gRPC server"),
        _ = async { stopped(stopping).await; tokio::time::sleep(grace).await } => {
            tracing::warn!("gRPC connections still open after the shutdown timeout; closing them");
            Ok(())
        }
    }
}
