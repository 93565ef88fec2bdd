//! `--admin-addr`: `/healthz`, `/readyz` and `/metrics` on a port of their own,
//! in plain HTTP even when the public listener speaks TLS, and no longer on
//! the public listener, which keeps its API.

use serde_json::{Value, json};
use votestream::ops::{Health, Readiness, ReadyStatus};

use super::certs::Pki;
use super::{Running, get, ingress, logs_app};
use crate::common::TempTopic;

const OPS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The admin port answers the three, with the process's metric names.
async fn admin_serves_the_operational_endpoints(server: &Running, process: &str) -> String {
    let plain = reqwest::Client::new();
    let admin = format!("http://{}", server.admin());
    let health: Health = get(&plain, format!("{admin}/healthz"), "/healthz on the admin port")
        .await
        .json()
        .await
        .expect("a health body");
    assert_eq!(health, Health::ok());
    let readiness: Readiness = get(&plain, format!("{admin}/readyz"), "/readyz on the admin port")
        .await
        .json()
        .await
        .expect("a readiness body");
    assert_eq!(readiness.status, ReadyStatus::Ready, "{readiness:?}");
    let metrics = get(&plain, format!("{admin}/metrics"), "/metrics on the admin port").await;
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("metrics text");
    assert!(
        text.contains(&format!("votestream_{process}_connections_open{{listener=\"http\"}}")),
        "{text}"
    );
    text
}

#[tokio::test]
async fn the_ingress_serves_probes_and_metrics_on_its_admin_port_only() {
    let pki = Pki::new();
    let topic = TempTopic::create("admin", 1).await;
    let mut flags = pki.server_flags();
    flags.extend(["--admin-addr", "127.0.0.1:0"]);
    let ingress = ingress(&topic.name, &flags).await;

    let https = Pki::https_client(&pki.ca);
    let public = format!("https://{}", ingress.http);
    for path in OPS {
        let response = get(&https, format!("{public}{path}"), "the public listener").await;
        assert_eq!(response.status(), 404, "{path} on the public listener");
    }
    let response = https
        .post(format!("{public}/votes"))
        .json(&json!({"name": "Alux Nahual", "album": "Alux Nahual", "year": 1985, "rank": 9}))
        .send()
        .await
        .expect("a vote");
    assert_eq!(response.status(), 200);

    let metrics = admin_serves_the_operational_endpoints(&ingress, "ingress").await;
    assert!(
        metrics.contains("votestream_ingress_votes_accepted_total{route=\"http\"} 1"),
        "{metrics}"
    );
    ingress.stop().await;
}

#[tokio::test]
async fn the_logs_app_serves_probes_and_metrics_on_its_admin_port_only() {
    let logs = logs_app(&["--admin-addr", "127.0.0.1:0"]).await;
    let plain = reqwest::Client::new();
    for path in OPS {
        let response = get(&plain, format!("http://{}{path}", logs.http), "the public listener").await;
        assert_eq!(response.status(), 404, "{path} on the public listener");
        let body: Value = response.json().await.expect("a JSON 404");
        assert_eq!(body["error"], "not found");
    }
    let page = get(&plain, format!("http://{}/", logs.http), "the page").await;
    assert_eq!(page.status(), 200);
    admin_serves_the_operational_endpoints(&logs, "logs").await;
    logs.stop().await;
}
