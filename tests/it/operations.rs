//! Every process shows the same operational surface (DESIGN.md, "Operational
//! endpoints"): `/healthz` and `/readyz` in one JSON shape, `/metrics` in
//! OpenMetrics text with every name under `votestream_<process>_`. One
//! `votestream all` serves the three, each on its own port.

use std::time::Duration;

use votestream::ops::{Dependency, Health, METRICS_CONTENT_TYPE, Readiness};

use crate::common::{eventually, free_port};
use crate::pipeline::{ConsumerProcess, World};

#[tokio::test]
async fn every_process_answers_healthz_readyz_and_metrics_in_the_same_shape() {
    let world = World::new("operations").await;
    let [grpc, ingress, consumer, logs] = [(); 4].map(|()| free_port());
    let mut all = world.command("all", "all.log");
    for (variable, port) in [
        ("GRPC_ADDR", grpc),
        ("HTTP_ADDR", ingress),
        ("CONSUMER_HTTP_ADDR", consumer),
        ("LOGS_ADDR", logs),
    ] {
        all.env(variable, format!("127.0.0.1:{port}"));
    }
    let mut all = ConsumerProcess {
        child: all.env_remove("PORT").spawn().expect("spawn votestream all"),
        port: consumer,
    };

    let client = reqwest::Client::new();
    let processes = [
        ("ingress", ingress, &[Dependency::Kafka][..]),
        (
            "consumer",
            consumer,
            &[Dependency::Kafka, Dependency::Redis, Dependency::Mongodb],
        ),
        ("logs", logs, &[Dependency::Mongodb, Dependency::Redis]),
    ];
    for (process, port, dependencies) in processes {
        let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
        let client = &client;
        let ready = eventually(
            &format!("the {process} ready"),
            Duration::from_secs(60),
            || async move {
                let response = client.get(url("/readyz")).send().await.ok()?;
                assert_eq!(response.headers()["content-type"], "application/json", "{process}");
                (response.status() == 200).then_some(response.json::<Readiness>().await.expect("a readiness"))
            },
        )
        .await;
        assert_eq!(
            ready,
            Readiness::of(dependencies.iter().map(|dependency| (*dependency, true))),
            "{process}"
        );

        let health = client.get(url("/healthz")).send().await.expect("/healthz");
        assert_eq!(health.status(), 200, "{process}");
        assert_eq!(health.headers()["content-type"], "application/json", "{process}");
        assert_eq!(
            health.json::<Health>().await.expect("a health"),
            Health::ok(),
            "{process}"
        );

        let metrics = client.get(url("/metrics")).send().await.expect("/metrics");
        assert_eq!(metrics.status(), 200, "{process}");
        assert_eq!(metrics.headers()["content-type"], METRICS_CONTENT_TYPE, "{process}");
        let text = metrics.text().await.expect("metrics text");
        assert_eq!(text.lines().last(), Some("# EOF"), "{process}");
        let prefix = format!("votestream_{process}_");
        for line in text.lines().filter(|line| *line != "# EOF") {
            let name = ["# HELP ", "# TYPE ", "# UNIT "]
                .iter()
                .find_map(|comment| line.strip_prefix(comment))
                .unwrap_or(line);
            assert!(name.starts_with(&prefix), "{process}: {line}");
        }
    }

    assert!(all.terminate().success(), "clean exit on SIGTERM");
    world.clean().await;
}
