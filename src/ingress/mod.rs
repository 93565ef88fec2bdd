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

use crate::config::{IngressArgs, IngressServingArgs, IngressSettings};
use crate::ops;
use crate::serving::{ConnectionMetrics, GrpcServing, PublicListener};
use crate::shutdown::{stop_all_after, stopped};
use crate::tls::ServerTls;
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
    /// TLS, cut-offs and the admin port (issue 15).
    serving: IngressServingArgs,
    tls: Option<ServerTls>,
    connections: ConnectionMetrics,
    admin: Option<(TcpListener, SocketAddr)>,
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
        let serving = &settings.serving;
        serving.common.connections.check()?;
        anyhow::ensure!(serving.grpc_max_streams >= 1, "--grpc-max-streams must be at least 1");
        let tls = ServerTls::from_args(&serving.common.tls, serving.tls_client_ca.as_deref())?;
        let mut metrics = Metrics::new();
        let connections = ConnectionMetrics::register(metrics.registry_mut());
        let auth = Authenticator::from_args(&args.auth)?;
        let limits = Limits::from_args(&args.limits, args.producer.producer_queue_messages)?;
        // With tokens every vote gets its voter from the token, so --require-voter holds by itself.
        let rules = Rules {
            require_voter: settings.rules().require_voter && auth.is_none(),
            ..settings.rules()
        };
        let intake = Intake::new(producer, metrics, rules, window, args.max_batch).guarded(auth, limits);
        let http = TcpListener::bind(args.http_addr).context("binding the HTTP listener")?;
        let http_addr = http.local_addr()?;
        let grpc = if args.no_grpc {
            None
        } else {
            let listener = TcpListener::bind(args.grpc_addr).context("binding the gRPC listener")?;
            let addr = listener.local_addr()?;
            Some((listener, addr))
        };
        let admin = match settings.admin.admin_addr {
            None => None,
            Some(wanted) => {
                let listener = TcpListener::bind(wanted).context("binding the admin listener (--admin-addr)")?;
                let addr = listener.local_addr()?;
                Some((listener, addr))
            }
        };
        Ok(Ingress {
            args: args.clone(),
            intake: Arc::new(intake),
            http,
            http_addr,
            grpc,
            serving: serving.clone(),
            tls,
            connections,
            admin,
        })
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are, when apart from the HTTP listener.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, addr)| *addr)
    }

    fn public_listener(&self, name: &'static str) -> PublicListener {
        let connections = &self.serving.common.connections;
        let cap = self.connections.cap(name, connections.max_connections);
        PublicListener::new(self.tls.clone(), cap, connections)
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
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let http_votes = if self.args.no_http_votes {
            " (no POST /votes)"
        } else {
            ""
        };
        tracing::info!(
            "ingress listening: HTTP on {}{http_votes}, gRPC {}; {}; probes and metrics {}; topic {:?}",
            self.http_addr(),
            self.grpc_addr().map_or("off".to_owned(), |a| format!("on {a}")),
            match (&self.tls, &self.serving.tls_client_ca) {
                (None, _) => "plain text",
                (Some(_), None) => "TLS",
                (Some(_), Some(_)) => "TLS, client certificates required on gRPC",
            },
            self.admin_addr()
                .map_or("on the HTTP listener".to_owned(), |a| format!("on the admin port {a}")),
            self.intake.producer().topic(),
        );
        let http_listener = self.public_listener("http");
        let grpc = self
            .grpc
            .take()
            .map(|(listener, _)| (listener, self.public_listener("grpc")));
        let (stop, stopping) = watch::channel(false);
        let state = http::state(self.intake.clone(), &self.args, self.serving.body_timeout());
        let admin = match self.admin {
            None => None,
            Some((listener, _)) => {
                let server = ops::admin_server(listener, state.clone()).context("starting the admin server")?;
                Some((server.handle(), tokio::spawn(server)))
            }
        };
        let http = http::server(
            self.http,
            state,
            &self.args,
            &http_listener,
            admin.is_some(),
            stopped(stopping.clone()),
        )
        .context("starting the HTTP server")?;
        let http = tokio::spawn(stop_all_after(stop.clone(), async move {
            http.await.context("HTTP server")
        }));
        let grpc = match grpc {
            None => None,
            Some((listener, public)) => {
                listener.set_nonblocking(true)?;
                let serving = GrpcServing {
                    listener: public,
                    request_timeout: self.serving.body_timeout() + self.args.producer.produce_timeout(),
                    max_streams: self.serving.grpc_max_streams,
                };
                let serve = grpc::serve(
                    tokio::net::TcpListener::from_std(listener)?,
                    self.intake.clone(),
                    self.args.grpc_max_message_bytes,
                    serving,
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
        // Probes and scrapes are answered until the public servers are done.
        if let Some((handle, task)) = admin {
            handle.stop(true).await;
            task.await.context("admin server task")?.context("admin server")?;
        }

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
