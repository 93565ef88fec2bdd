//! The consumer's small HTTP server: `/healthz` (process up), `/readyz`
//! (Kafka, Redis and Mongo connections up) and `/metrics` (Prometheus text).

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use prometheus_client::registry::Registry;

use super::metrics::ConsumerMetrics;
use crate::telemetry;

struct AppState {
    metrics: Arc<ConsumerMetrics>,
    registry: Registry,
}

pub fn server(listener: TcpListener, metrics: Arc<ConsumerMetrics>, registry: Registry) -> std::io::Result<Server> {
    let state = web::Data::new(AppState { metrics, registry });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_text))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (kafka, redis, mongo) = state.metrics.ready();
    let body = serde_json::json!({"kafka": kafka, "redis": redis, "mongo": mongo});
    if kafka && redis && mongo {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(telemetry::METRICS_CONTENT_TYPE)
        .body(telemetry::metrics_text(&state.registry))
}
