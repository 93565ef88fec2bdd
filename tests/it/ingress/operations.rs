//! What operators and generic clients rely on: health, readiness, metrics,
//! the standard gRPC health service, server reflection, and switching a
//! protocol off.

use serde_json::Value;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use votestream::ingress::Ingress;
use votestream::ops::{Dependency, Health, Readiness};

use super::support::{TestIngress, assert_record_shape, grpc_vote, records, seed_vote, settings};
use crate::common::{TempTopic, kafka_brokers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_report_the_ingress_state() {
    let topic = TempTopic::create("ingress-ops", 1).await;
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &[]).await;

    let (status, body) = ingress.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Health>(&body).unwrap(), Health::ok());
    let (status, body) = ingress.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let readiness: Readiness = serde_json::from_str(&body).unwrap();
    assert_eq!(readiness, Readiness::of([(Dependency::Kafka, true)]));

    let (status, _) = ingress.post_json(&seed_vote(1)).await;
    assert_eq!(status, 200);
    let mut bad = seed_vote(2);
    bad["rank"] = Value::from("11");
    let (status, _) = ingress.post_json(&bad).await;
    assert_eq!(status, 400);
    let (status, _) = ingress.post_raw(Some("application/json"), "{").await;
    assert_eq!(status, 400);
    let mut grpc = ingress.grpc().await;
    grpc.cast_vote(grpc_vote("Alux Nahual")).await.expect("accepted");

    let response = ingress.client.get(ingress.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let metrics = response.text().await.unwrap();
    for line in [
        r#"votestream_ingress_votes_accepted_total{route="http"} 1"#,
        r#"votestream_ingress_votes_accepted_total{route="grpc"} 1"#,
        r#"votestream_ingress_votes_rejected_total{route="http",reason="out_of_range"} 1"#,
        r#"votestream_ingress_requests_refused_total{route="http",reason="malformed_json"} 1"#,
        r#"votestream_ingress_produce_latency_seconds_count{route="http"} 1"#,
        r#"votestream_ingress_produce_latency_seconds_count{route="grpc"} 1"#,
        r#"votestream_ingress_votes_in_flight{route="http"} 0"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_and_reflection_serve_generic_clients() {
    let topic = TempTopic::create("ingress-reflection", 1).await;
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &[]).await;
    let url = format!("http://{}", ingress.grpc_addr.unwrap());

    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "votes.v1.VoteService"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health of {service:?}: {s:?}"));
        assert_eq!(reply.into_inner().status(), ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let requests = tokio_stream::iter([
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol("votes.v1.VoteService".into())),
    ]);
    let mut replies = reflection.server_reflection_info(requests).await.unwrap().into_inner();
    match replies.next().await.expect("a reply").unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            for expected in ["votes.v1.VoteService", "grpc.health.v1.Health"] {
                assert!(names.iter().any(|n| n == expected), "{expected} not in {names:?}");
            }
        }
        other => panic!("expected a service list, got {other:?}"),
    }
    match replies.next().await.expect("a reply").unwrap().message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            // The serialized descriptor names the service and its two methods.
            let bytes = files.file_descriptor_proto.concat();
            let text = String::from_utf8_lossy(&bytes);
            for name in ["votes.proto", "VoteService", "CastVote", "CastVotes"] {
                assert!(text.contains(name), "{name} not in the descriptor");
            }
        }
        other => panic!("expected a file descriptor, got {other:?}"),
    }
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_protocol_can_be_switched_off_for_separate_deployments() {
    let topic = TempTopic::create("ingress-switches", 1).await;

    let http_only = TestIngress::start(&kafka_brokers(), &topic.name, &["--no-grpc"]).await;
    assert_eq!(http_only.grpc_addr, None);
    let (status, reply) = http_only.post_json(&seed_vote(1)).await;
    assert_eq!(status, 200, "{reply}");
    let http_id = reply["id"].as_str().unwrap().to_owned();
    http_only.stop().await;

    let grpc_only = TestIngress::start(&kafka_brokers(), &topic.name, &["--no-http-votes"]).await;
    let response = grpc_only
        .client
        .post(grpc_only.url("/votes"))
        .json(&seed_vote(2))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "POST /votes is off");
    for probe in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(grpc_only.get(probe).await.0, 200, "{probe} still answers");
    }
    let grpc_id = grpc_only
        .grpc()
        .await
        .cast_vote(grpc_vote("Alux Nahual"))
        .await
        .expect("accepted")
        .into_inner()
        .id;
    grpc_only.stop().await;

    let neither = Ingress::build(&settings(
        &kafka_brokers(),
        &topic.name,
        &["--no-grpc", "--no-http-votes"],
    ));
    assert!(neither.is_err(), "an ingress that takes no votes is refused");

    let records = records(&kafka_brokers(), &topic.name).await;
    assert_eq!(records.len(), 2);
    for (id, route) in [(&http_id, "http"), (&grpc_id, "grpc")] {
        let record = records.iter().find(|r| &r.key == id).expect("the vote is in Kafka");
        assert_record_shape(record, route);
    }
}
