//! The logs app's Prometheus metrics, served at `/metrics` in the
//! OpenMetrics text format. Label values are bounded: routes are the matched
//! patterns, never raw paths.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub path: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub streams_active: Gauge,
    pub streams_rejected: Counter,
    pub stream_skipped: Counter,
    pub tail_polls: Family<OutcomeLabels, Counter>,
    pub tail_published: Counter,
    pub queries_active: Gauge,
    pub queries_refused: Counter,
    pub queries_out_of_time: Counter,
    pub queries_paused: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = crate::ops::registry("logs");
        let requests = Family::<RequestLabels, Counter>::default();
        let streams_active = Gauge::default();
        let streams_rejected = Counter::default();
        let stream_skipped = Counter::default();
        let tail_polls = Family::<OutcomeLabels, Counter>::default();
        let tail_published = Counter::default();
        let queries_active = Gauge::default();
        let queries_refused = Counter::default();
        let queries_out_of_time = Counter::default();
        let queries_paused = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern and status",
            requests.clone(),
        );
        registry.register(
            "streams_active",
            "Open /logs/stream connections",
            streams_active.clone(),
        );
        registry.register(
            "streams_rejected",
            "/logs/stream connections refused because the limit was reached",
            streams_rejected.clone(),
        );
        registry.register(
            "stream_skipped",
            "Logs a slow /logs/stream client missed because it fell behind the buffer",
            stream_skipped.clone(),
        );
        registry.register(
            "tail_polls",
            "Reads of the logs:tail Redis stream for the live page, by outcome (none while no client is connected)",
            tail_polls.clone(),
        );
        registry.register(
            "tail_published",
            "New logs pushed to /logs/stream clients",
            tail_published.clone(),
        );
        registry.register(
            "queries_active",
            "MongoDB queries (pages of /logs) outstanding",
            queries_active.clone(),
        );
        registry.register(
            "queries_refused",
            "Pages of /logs answered 503 because every query slot stayed taken for the backend timeout",
            queries_refused.clone(),
        );
        registry.register(
            "queries_out_of_time",
            "Pages of /logs MongoDB gave up at their maxTimeMS (they pause the pages with the same filters)",
            queries_out_of_time.clone(),
        );
        registry.register(
            "queries_paused",
            "Pages of /logs answered 503 without a query, during a pause after one ran out of time",
            queries_paused.clone(),
        );
        Metrics {
            registry,
            requests,
            streams_active,
            streams_rejected,
            stream_skipped,
            tail_polls,
            tail_published,
            queries_active,
            queries_refused,
            queries_out_of_time,
            queries_paused,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// For metrics registered by other modules (the listeners' connections: [`crate::serving`]).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }
}
