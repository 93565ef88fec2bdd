//! How a public listener serves: TLS or plain text ([`crate::tls`]), and the
//! cut-offs that keep slow or crowding clients from wearing the process down.
//!
//! - Too many connections: each public listener admits at most
//!   `--max-connections`. HTTP (actix-web) counts a connection from the
//!   moment it is accepted (after the TLS handshake) until it is dropped; one
//!   past the cap has its request answered 503 `too_many_connections` and is
//!   closed. gRPC (tonic) closes such a connection at once, before TLS and
//!   HTTP/2 (answering it would cost what the cap saves): the client's call
//!   fails with a transport error (tonic reports UNAVAILABLE or CANCELLED),
//!   and a new connection is tried when one frees up.
//! - Slow clients: the TLS handshake and an HTTP request's headers must come
//!   within `--header-timeout-ms` (actix answers 408 and closes); a gRPC
//!   connection that has sent nothing by then is closed. A request's body has
//!   its own deadline ([`crate::config::IngressServingArgs`]).
//! - Oversized requests: actix answers 431 to a request head over 128 KiB or
//!   with over 96 headers; on gRPC a header list over
//!   [`GRPC_MAX_HEADER_LIST_BYTES`] gets 431 and its stream refused.
//!
//! The admin port ([`crate::ops::admin_server`]) is none of this: plain HTTP,
//! never counted, for probes and scraping from inside the cluster.

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::http::header::RETRY_AFTER;
use actix_web::middleware::Next;
use futures_util::{Stream, StreamExt, stream};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::config::ConnectionArgs;
use crate::tls::ServerTls;

/// Largest gRPC header list (metadata) accepted, in bytes: room for any token
/// a front-end sends, far below what would cost memory.
pub const GRPC_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// HTTP/2 pings on an idle gRPC connection, so a peer that vanished without
/// closing is noticed and its connection freed.
const GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

/// `connections_open{listener}` and `connections_refused_total{listener}`,
/// in the registry of the process that owns the listeners.
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    open: Family<ListenerLabel, Gauge>,
    refused: Family<ListenerLabel, Counter>,
}

impl ConnectionMetrics {
    pub fn register(registry: &mut Registry) -> ConnectionMetrics {
        let metrics = ConnectionMetrics {
            open: Family::default(),
            refused: Family::default(),
        };
        registry.register(
            "connections_open",
            "Client connections open on a public listener (http, grpc)",
            metrics.open.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections refused because the listener had --max-connections open",
            metrics.refused.clone(),
        );
        metrics
    }

    /// The cap of one listener (`http` or `grpc`), its series created at 0.
    pub fn cap(&self, listener: &'static str, max: usize) -> ConnectionCap {
        let label = ListenerLabel { listener };
        ConnectionCap {
            max,
            open: self.open.get_or_create(&label).clone(),
            refused: self.refused.get_or_create(&label).clone(),
        }
    }
}

/// At most `max` connections at once on one listener.
#[derive(Debug, Clone)]
pub struct ConnectionCap {
    max: usize,
    open: Gauge,
    refused: Counter,
}

impl ConnectionCap {
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for a new connection, held until the connection is dropped;
    /// over the cap the slot is empty and the refusal counted.
    pub fn admit(&self) -> Slot {
        let before = self.open.inc();
        if usize::try_from(before).is_ok_and(|open| open < self.max) {
            Slot {
                open: Some(self.open.clone()),
            }
        } else {
            self.open.dec();
            self.refused.inc();
            Slot { open: None }
        }
    }

    /// actix-web's per-connection hook: the slot lives in the connection's
    /// data, so it is given back when actix drops the connection.
    pub fn on_connect(&self) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
        let cap = self.clone();
        move |_, data| {
            data.insert(cap.admit());
        }
    }
}

/// One admitted connection (or a refused one: [`Slot::is_refused`]).
#[derive(Debug)]
pub struct Slot {
    open: Option<Gauge>,
}

impl Slot {
    pub fn is_refused(&self) -> bool {
        self.open.is_none()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(open) = &self.open {
            open.dec();
        }
    }
}

/// Middleware (`middleware::from_fn`) of a public actix app: a request on a
/// connection admitted past the cap gets 503 and the connection is closed.
pub async fn refuse_over_cap(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if request.conn_data::<Slot>().is_some_and(Slot::is_refused) {
        let response = HttpResponse::ServiceUnavailable()
            .force_close()
            .insert_header((RETRY_AFTER, "1"))
            .json(serde_json::json!({
                "error": "too_many_connections",
                "reason": "the server has as many connections open as it takes; retry shortly",
            }));
        return Ok(request.into_response(response).map_into_right_body());
    }
    next.call(request).await.map(ServiceResponse::map_into_left_body)
}

/// A public listener's TLS, connection cap and header deadline.
#[derive(Clone)]
pub struct PublicListener {
    pub tls: Option<ServerTls>,
    pub cap: ConnectionCap,
    pub header_timeout: Duration,
}

impl PublicListener {
    pub fn new(tls: Option<ServerTls>, cap: ConnectionCap, args: &ConnectionArgs) -> PublicListener {
        PublicListener {
            tls,
            cap,
            header_timeout: args.header_timeout(),
        }
    }

    /// `https` or `http`, for the log line that says where it listens.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// The gRPC server's settings beyond the listener: a bound on a whole call,
/// and on the calls in progress on one connection.
pub struct GrpcServing {
    pub listener: PublicListener,
    pub request_timeout: Duration,
    pub max_streams: u32,
}

impl GrpcServing {
    /// tonic's server builder with TLS and the cut-offs set.
    pub fn builder(&self) -> anyhow::Result<tonic::transport::Server> {
        let builder = tonic::transport::Server::builder()
            // Reading the message, validating it and Kafka's acknowledgement; tonic answers CANCELLED past it.
            .timeout(self.request_timeout)
            .max_concurrent_streams(self.max_streams)
            .http2_max_header_list_size(GRPC_MAX_HEADER_LIST_BYTES)
            .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT));
        Ok(match &self.listener.tls {
            Some(tls) => builder.tls_config(tls.grpc(self.listener.header_timeout))?,
            None => builder,
        })
    }

    /// The accepted connections tonic serves: past the cap one is closed at
    /// once; one that sends nothing within the header timeout is closed then.
    pub fn incoming(&self, listener: TcpListener) -> impl Stream<Item = io::Result<CappedStream>> + Send + 'static {
        let cap = self.listener.cap.clone();
        let silence = self.listener.header_timeout;
        // Every connection waiting for its first bytes holds a slot, so at most `max` wait at once.
        let waiting = cap.max().saturating_add(1);
        stream::unfold((listener, cap), |(listener, cap)| async move {
            loop {
                let accepted = match listener.accept().await {
                    Ok((io, _)) => io,
                    Err(e) => return Some((Err(e), (listener, cap))),
                };
                let slot = cap.admit();
                if slot.is_refused() {
                    continue;
                }
                // Without TCP_NODELAY a reply larger than one segment waits for the client's
                // delayed ACK (Nagle): batch replies took ~40 ms more.
                let _ = accepted.set_nodelay(true);
                let stream = CappedStream {
                    io: accepted,
                    _slot: slot,
                };
                return Some((Ok(stream), (listener, cap)));
            }
        })
        .map(move |accepted| async move {
            let stream = match accepted {
                Ok(stream) => stream,
                Err(e) => return Some(Err(e)),
            };
            // `readable()` may report a new socket ready before any byte came; peek waits for one.
            let mut first = [0u8; 1];
            match tokio::time::timeout(silence, stream.io.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => Some(Ok(stream)),
                // Silent past the deadline, gone, or failed: dropping it closes it.
                _ => None,
            }
        })
        .buffer_unordered(waiting)
        .filter_map(std::future::ready)
    }
}

/// A gRPC connection holding its slot of the cap until tonic drops it.
pub struct CappedStream {
    io: TcpStream,
    _slot: Slot,
}

impl Connected for CappedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(max: usize) -> (ConnectionCap, Registry) {
        let mut registry = crate::ops::registry("test");
        let metrics = ConnectionMetrics::register(&mut registry);
        (metrics.cap("http", max), registry)
    }

    #[test]
    fn the_cap_admits_up_to_its_size_and_frees_a_slot_when_a_connection_ends() {
        let (cap, registry) = cap(2);
        let first = cap.admit();
        let second = cap.admit();
        assert!(!first.is_refused() && !second.is_refused());
        let third = cap.admit();
        assert!(third.is_refused());
        drop(third);
        drop(first);
        assert!(!cap.admit().is_refused(), "a slot is free again");
        let text = crate::ops::metrics_text(&registry);
        assert!(
            text.contains("votestream_test_connections_refused_total{listener=\"http\"} 1"),
            "{text}"
        );
        // `second` is still open (the admitted one above was dropped at once).
        assert!(
            text.contains("votestream_test_connections_open{listener=\"http\"} 1"),
            "{text}"
        );
    }
}
