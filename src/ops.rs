//! The operational endpoints, served alike by every process on its HTTP
//! server: `/healthz` (the process works; when it does not, a restart is the
//! cure), `/readyz` (each dependency answers; send it traffic) and `/metrics`
//! (OpenMetrics text, every name `votestream_<process>_...`). A process
//! supplies only its [`Probes`]; the paths, bodies and statuses are decided
//! here, so the three cannot drift apart.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// The media type of `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry of one process (`ingress`, `consumer`, `logs`): what it
/// registers as `name` is exposed as `votestream_<process>_<name>`.
pub fn registry(process: &str) -> Registry {
    Registry::with_prefix(format!("votestream_{process}"))
}

/// The OpenMetrics text exposition of `registry`.
pub fn metrics_text(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// What a process tells the operational endpoints.
pub trait Probes: 'static {
    /// Why the process cannot go on without a restart; `None` while it can.
    fn failure(&self) -> Option<String> {
        None
    }

    /// The state of each dependency, checked now.
    fn readiness(&self) -> impl Future<Output = Readiness>;

    fn registry(&self) -> &Registry;
}

/// The `/healthz` body: 200 `{"status": "ok"}`, or 500 `{"status": "failed", "reason": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Failed,
}

impl Health {
    pub fn ok() -> Health {
        Health {
            status: HealthStatus::Ok,
            reason: None,
        }
    }

    pub fn failed(reason: String) -> Health {
        Health {
            status: HealthStatus::Failed,
            reason: Some(reason),
        }
    }
}

/// The `/readyz` body, 200 when every dependency is ok, else 503:
/// `{"status": "ready", "checks": {"kafka": "ok"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub status: ReadyStatus,
    pub checks: BTreeMap<Dependency, Check>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dependency {
    Kafka,
    Redis,
    Mongodb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Ok,
    Unavailable,
}

impl Readiness {
    /// Ready when every dependency answers (`true`).
    pub fn of(checks: impl IntoIterator<Item = (Dependency, bool)>) -> Readiness {
        let checks: BTreeMap<Dependency, Check> = checks
            .into_iter()
            .map(|(dependency, up)| (dependency, if up { Check::Ok } else { Check::Unavailable }))
            .collect();
        let status = if checks.values().all(|check| *check == Check::Ok) {
            ReadyStatus::Ready
        } else {
            ReadyStatus::NotReady
        };
        Readiness { status, checks }
    }
}

/// Registers `/healthz`, `/readyz` and `/metrics`, answered from `probes`.
pub fn routes<P: Probes>(probes: web::Data<P>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config| {
        config
            .app_data(probes)
            .route("/healthz", web::get().to(healthz::<P>))
            .route("/readyz", web::get().to(readyz::<P>))
            .route("/metrics", web::get().to(metrics::<P>));
    }
}

/// The admin server: only these three endpoints, in plain HTTP, on their own
/// listener (the consumer's HTTP address, `--admin-addr` of the ingress and
/// the logs app), so probes and scraping stay apart from the public traffic.
/// One worker: probes and scrapes are few.
pub fn admin_server<P: Probes + Send + Sync>(listener: TcpListener, probes: web::Data<P>) -> std::io::Result<Server> {
    let server = HttpServer::new(move || App::new().configure(routes(probes.clone())))
        .workers(1)
        .disable_signals()
        .shutdown_timeout(ADMIN_SHUTDOWN_SECS)
        .listen(listener)?;
    Ok(server.run())
}

/// Probes and scrapes answer at once; nothing to wait for at shutdown.
const ADMIN_SHUTDOWN_SECS: u64 = 1;

async fn healthz<P: Probes>(probes: web::Data<P>) -> HttpResponse {
    match probes.failure() {
        None => HttpResponse::Ok().json(Health::ok()),
        Some(reason) => HttpResponse::InternalServerError().json(Health::failed(reason)),
    }
}

async fn readyz<P: Probes>(probes: web::Data<P>) -> HttpResponse {
    let readiness = probes.readiness().await;
    match readiness.status {
        ReadyStatus::Ready => HttpResponse::Ok().json(readiness),
        ReadyStatus::NotReady => HttpResponse::ServiceUnavailable().json(readiness),
    }
}

async fn metrics<P: Probes>(probes: web::Data<P>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(METRICS_CONTENT_TYPE)
        .body(metrics_text(probes.registry()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_ok_or_failed_with_a_reason() {
        assert_eq!(
            serde_json::to_value(Health::ok()).unwrap(),
            serde_json::json!({"status": "ok"})
        );
        assert_eq!(
            serde_json::to_value(Health::failed("fenced".into())).unwrap(),
            serde_json::json!({"status": "failed", "reason": "fenced"})
        );
    }

    #[test]
    fn readiness_lists_every_dependency_and_is_ready_only_when_all_answer() {
        let ready = Readiness::of([(Dependency::Kafka, true), (Dependency::Mongodb, true)]);
        assert_eq!(
            serde_json::to_value(&ready).unwrap(),
            serde_json::json!({"status": "ready", "checks": {"kafka": "ok", "mongodb": "ok"}})
        );
        let not_ready = Readiness::of([(Dependency::Redis, false), (Dependency::Mongodb, true)]);
        assert_eq!(
            serde_json::to_value(&not_ready).unwrap(),
            serde_json::json!({"status": "not_ready", "checks": {"redis": "unavailable", "mongodb": "ok"}})
        );
    }

    #[test]
    fn a_registry_names_its_metrics_after_the_process() {
        let mut registry = registry("logs");
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        registry.register("queries_refused", "help", counter.clone());
        counter.inc();
        assert!(metrics_text(&registry).contains("votestream_logs_queries_refused_total 1"));
    }
}
