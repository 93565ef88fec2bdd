//! The ingress's Prometheus metrics, served at `/metrics`: votes accepted and
//! rejected (by route and reason), requests refused before any vote was read,
//! Kafka produce latency, and votes awaiting Kafka's acknowledgement. Counting
//! happens here, never as a log line per vote.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::auth::{AuthError, VoterMismatch};
use super::limits::Scope;
use crate::vote::Route;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    route: &'static str,
    reason: &'static str,
}

type HistogramFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rejected: Family<ReasonLabels, Counter>,
    requests_refused: Family<ReasonLabels, Counter>,
    produce_latency: HistogramFamily,
    /// The per-route series of `votes_accepted` and `votes_in_flight`, in
    /// [`Route::ALL`] order: created at start and looked up once, not per vote.
    by_route: [RouteSeries; 2],
    guards: GuardMetrics,
}

/// Requests refused by the voter tokens and the limits (auth.rs, limits.rs).
#[derive(Debug, Default)]
struct GuardMetrics {
    auth_refused: Family<ReasonLabels, Counter>,
    rate_limited: Family<ScopeLabels, Counter>,
    shed: Family<RouteLabel, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    route: &'static str,
    scope: &'static str,
}

#[derive(Debug)]
struct RouteSeries {
    accepted: Counter,
    in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        fn latency_histogram() -> Histogram {
            // 1 ms .. ~16 s: linger adds a few ms; a timeout shows as the top buckets.
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        }
        let accepted = Family::<RouteLabel, Counter>::default();
        let in_flight = Family::<RouteLabel, Gauge>::default();
        // Series that exist from the start, so dashboards and alerts see zeros rather than gaps.
        let by_route = Route::ALL.map(|route| {
            let label = RouteLabel { route: route.as_str() };
            RouteSeries {
                accepted: accepted.get_or_create(&label).clone(),
                in_flight: in_flight.get_or_create(&label).clone(),
            }
        });
        let mut metrics = Metrics {
            registry: crate::ops::registry("ingress"),
            rejected: Family::default(),
            requests_refused: Family::default(),
            produce_latency: Family::new_with_constructor(latency_histogram),
            by_route,
            guards: GuardMetrics::default(),
        };
        metrics.register_guards();
        let registry = &mut metrics.registry;
        registry.register(
            "votes_accepted",
            "Votes acknowledged by Kafka and reported accepted",
            accepted,
        );
        registry.register(
            "votes_rejected",
            "Votes reported not accepted: a validation problem code, or kafka_* when Kafka did not acknowledge",
            metrics.rejected.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests refused whole before any vote was produced (bad body, content type, size, batch length)",
            metrics.requests_refused.clone(),
        );
        registry.register(
            "produce_latency_seconds",
            "Time from handing a vote to the producer to Kafka's acknowledgement",
            metrics.produce_latency.clone(),
        );
        registry.register(
            "votes_in_flight",
            "Votes handed to the producer and not yet acknowledged or failed",
            in_flight,
        );
        metrics
    }

    fn series(&self, route: Route) -> &RouteSeries {
        match route {
            Route::Grpc => &self.by_route[0],
            Route::Http => &self.by_route[1],
        }
    }

    pub fn accepted(&self, route: Route, votes: u64) {
        self.series(route).accepted.inc_by(votes);
    }

    pub fn rejected(&self, route: Route, reason: &'static str) {
        self.rejected
            .get_or_create(&ReasonLabels {
                route: route.as_str(),
                reason,
            })
            .inc();
    }

    pub fn request_refused(&self, route: Route, reason: &'static str) {
        self.requests_refused
            .get_or_create(&ReasonLabels {
                route: route.as_str(),
                reason,
            })
            .inc();
    }

    pub fn produce_latency(&self, route: Route, latency: Duration) {
        self.produce_latency
            .get_or_create(&RouteLabel { route: route.as_str() })
            .observe(latency.as_secs_f64());
    }

    /// Counts `votes` as in flight until the returned guard drops, so a
    /// request cancelled mid-produce (client gone, shutdown) still decrements.
    pub fn in_flight(&self, route: Route, votes: usize) -> InFlight {
        let gauge = self.series(route).in_flight.clone();
        let votes = i64::try_from(votes).unwrap_or(i64::MAX);
        gauge.inc_by(votes);
        InFlight { gauge, votes }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// For metrics registered by other modules (the listeners' connections: [`crate::serving`]).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The series of the tokens and limits, each at 0 from the start.
    fn register_guards(&mut self) {
        let guards = &self.guards;
        for route in Route::ALL.map(Route::as_str) {
            for reason in AuthError::ALL
                .map(AuthError::reason)
                .into_iter()
                .chain([VoterMismatch::CODE])
            {
                let _ = guards.auth_refused.get_or_create(&ReasonLabels { route, reason });
            }
            for scope in Scope::ALL.map(Scope::as_str) {
                let _ = guards.rate_limited.get_or_create(&ScopeLabels { route, scope });
            }
            let _ = guards.shed.get_or_create(&RouteLabel { route });
        }
        self.registry.register(
            "auth_refused",
            "Vote requests refused for their voter token (401: missing, malformed, expired, not_yet_valid, \
             bad_signature, unknown_kid, wrong_audience, wrong_issuer) or for naming another voter \
             (403: voter_mismatch)",
            guards.auth_refused.clone(),
        );
        self.registry.register(
            "rate_limited",
            "Vote requests refused with 429 / RESOURCE_EXHAUSTED, by the limit passed (voter or ip)",
            guards.rate_limited.clone(),
        );
        self.registry.register(
            "shed",
            "Vote requests refused at once (503 / UNAVAILABLE) because the producer's queue was near full",
            guards.shed.clone(),
        );
    }

    pub fn auth_refused(&self, route: Route, reason: &'static str) {
        let labels = ReasonLabels {
            route: route.as_str(),
            reason,
        };
        self.guards.auth_refused.get_or_create(&labels).inc();
    }

    pub fn rate_limited(&self, route: Route, scope: Scope) {
        let labels = ScopeLabels {
            route: route.as_str(),
            scope: scope.as_str(),
        };
        self.guards.rate_limited.get_or_create(&labels).inc();
    }

    pub fn shed(&self, route: Route) {
        self.guards
            .shed
            .get_or_create(&RouteLabel { route: route.as_str() })
            .inc();
    }
}

#[must_use = "the votes stay counted in flight only while the guard lives"]
pub struct InFlight {
    gauge: Gauge,
    votes: i64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec_by(self.votes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::metrics_text;

    #[test]
    fn counts_and_in_flight_votes_appear_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.accepted(Route::Http, 3);
        metrics.rejected(Route::Grpc, "out_of_range");
        metrics.request_refused(Route::Http, "malformed_json");
        metrics.produce_latency(Route::Http, Duration::from_millis(4));
        let guard = metrics.in_flight(Route::Grpc, 5);
        let text = metrics_text(metrics.registry());
        assert!(
            text.contains(r#"votestream_ingress_votes_accepted_total{route="http"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"votestream_ingress_votes_accepted_total{route="grpc"} 0"#),
            "{text}"
        );
        assert!(text.contains(r#"votestream_ingress_votes_rejected_total{route="grpc",reason="out_of_range"} 1"#));
        assert!(text.contains(r#"votestream_ingress_requests_refused_total{route="http",reason="malformed_json"} 1"#));
        assert!(text.contains(r#"votestream_ingress_produce_latency_seconds_count{route="http"} 1"#));
        assert!(text.contains(r#"votestream_ingress_votes_in_flight{route="grpc"} 5"#));
        drop(guard);
        assert!(metrics_text(metrics.registry()).contains(r#"votestream_ingress_votes_in_flight{route="grpc"} 0"#));
    }
}
