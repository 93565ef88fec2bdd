//! The consumer's small HTTP server: only the operational endpoints
//! ([`crate::ops`]), ready while Kafka, Redis and MongoDB are connected.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::web;
use prometheus_client::registry::Registry;

use super::metrics::ConsumerMetrics;
use crate::ops::{self, Probes, Readiness};

struct AppState {
    metrics: Arc<ConsumerMetrics>,
    registry: Registry,
}

impl Probes for AppState {
    async fn readiness(&self) -> Readiness {
        self.metrics.readiness()
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The consumer's admin server: it has no public listener, so this is its only one.
pub fn server(listener: TcpListener, metrics: Arc<ConsumerMetrics>, registry: Registry) -> std::io::Result<Server> {
    ops::admin_server(listener, web::Data::new(AppState { metrics, registry }))
}
