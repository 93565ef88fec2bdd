//! The contest's rules at the ingress (DESIGN.md, "Voters" and "The voting
//! window"): refusals outside the window and without a required voter on
//! both routes, with nothing produced; voters and request ids carried to
//! Kafka, a retried request given back the same vote id on either route,
//! and the `Idempotency-Key` header.

use serde_json::{Value, json};
use tonic::Code;
use votestream::proto::{self, CastVotesRequest};

use super::support::{TestIngress, assert_nothing_produced, grpc_vote, records, typed_vote};
use crate::common::{TempTopic, kafka_brokers};

fn with_ids(mut vote: Value, voter: Option<&str>, request_id: Option<&str>) -> Value {
    let object = vote.as_object_mut().expect("an object");
    if let Some(voter) = voter {
        object.insert("voter".into(), json!(voter));
    }
    if let Some(request_id) = request_id {
        object.insert("request_id".into(), json!(request_id));
    }
    vote
}

fn grpc_with(voter: Option<&str>, request_id: Option<&str>) -> proto::Vote {
    proto::Vote {
        voter: voter.map(Into::into),
        request_id: request_id.map(Into::into),
        ..grpc_vote("Alux Nahual")
    }
}

/// Every call of both routes is refused with `error` / FAILED_PRECONDITION.
async fn assert_every_route_refused(ingress: &TestIngress, error: &str) {
    let (status, reply) = ingress.post_json(&typed_vote(1)).await;
    assert_eq!((status, reply["error"].as_str()), (403, Some(error)), "{reply}");
    assert!(!reply["reason"].as_str().unwrap_or("").is_empty(), "{reply}");
    let (status, reply) = ingress.post_json(&json!([typed_vote(2), typed_vote(3)])).await;
    assert_eq!((status, reply["error"].as_str()), (403, Some(error)), "{reply}");
    let mut grpc = ingress.grpc().await;
    let status = grpc.cast_vote(grpc_with(Some("u1"), None)).await.expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let status = grpc
        .cast_votes(CastVotesRequest {
            votes: vec![grpc_with(None, None)],
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let (_, metrics) = ingress.get("/metrics").await;
    assert!(
        metrics.contains(&format!("reason=\"{error}\"")),
        "refusals counted by reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_voting_window_both_routes_refuse_and_nothing_reaches_kafka() {
    let topic = TempTopic::create("ingress-window", 3).await;
    let closed = TestIngress::start(
        &kafka_brokers(),
        &topic.name,
        &["--voting-closes-at", "2026-01-01T00:00:00-06:00"],
    )
    .await;
    assert_every_route_refused(&closed, "voting_closed").await;
    closed.stop().await;
    let not_open = TestIngress::start(
        &kafka_brokers(),
        &topic.name,
        &["--voting-opens-at", "2999-12-24T20:00:00Z"],
    )
    .await;
    assert_every_route_refused(&not_open, "voting_not_open").await;
    not_open.stop().await;
    assert_nothing_produced(&topic.name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_voter_refuses_anonymous_votes_on_both_routes() {
    let topic = TempTopic::create("ingress-require-voter", 3).await;
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &["--require-voter"]).await;
    let (status, reply) = ingress.post_json(&typed_vote(1)).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(
        (
            reply["error"].as_str(),
            reply["field"].as_str(),
            reply["problem"].as_str()
        ),
        (Some("invalid_vote"), Some("voter"), Some("missing"))
    );
    let (status, reply) = ingress
        .post_json(&json!([typed_vote(2), with_ids(typed_vote(3), Some("u3"), None)]))
        .await;
    assert_eq!((status, reply["accepted"].as_i64()), (200, Some(1)), "{reply}");
    assert_eq!(reply["rejected"][0]["index"], 0);
    assert_eq!(reply["rejected"][0]["field"], "voter");
    let mut grpc = ingress.grpc().await;
    let status = grpc.cast_vote(grpc_with(None, None)).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.metadata().get("vote-field").unwrap(), "voter");
    assert_eq!(status.metadata().get("vote-problem").unwrap(), "missing");
    grpc.cast_vote(grpc_with(Some("u4"), None))
        .await
        .expect("a vote with a voter");
    ingress.stop().await;
    let keys: Vec<String> = records(&kafka_brokers(), &topic.name)
        .await
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys.len(), 2, "only the two votes with a voter: {keys:?}");
    assert!(
        keys.contains(&"u3".to_owned()) && keys.contains(&"u4".to_owned()),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_gets_the_same_vote_id_on_either_route_and_the_voter_keys_the_record() {
    let topic = TempTopic::create("ingress-retries", 3).await;
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &[]).await;
    let vote = with_ids(typed_vote(1), Some(" fan-7 "), Some("req-1"));
    let (status, first) = ingress.post_json(&vote).await;
    assert_eq!(status, 200, "{first}");
    let (_, again) = ingress.post_json(&vote).await;
    assert_eq!(first["id"], again["id"], "a retry gets the same id");
    let mut grpc = ingress.grpc().await;
    let by_grpc = grpc
        .cast_vote(grpc_with(Some("fan-7"), Some("req-1")))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(
        first["id"].as_str(),
        Some(by_grpc.id.as_str()),
        "the same request over gRPC"
    );

    // The Idempotency-Key header names the request of a single vote.
    let keyed = |key: &str, body: &Value| {
        ingress
            .client
            .post(ingress.url("/votes"))
            .header("idempotency-key", key)
            .json(body)
            .send()
    };
    let reply: Value = keyed("req-1", &with_ids(typed_vote(1), Some("fan-7"), None))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["id"], first["id"], "the header is the request id");
    let response = keyed("req-2", &vote).await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(
        (reply["field"].as_str(), reply["problem"].as_str()),
        (Some("request_id"), Some("conflict"))
    );
    let response = keyed("req-3", &json!([typed_vote(1)])).await.unwrap();
    assert_eq!(
        response.status().as_u16(),
        400,
        "no header on an array: each item names its own"
    );
    let (_, anonymous) = ingress.post_json(&with_ids(typed_vote(2), None, Some("req-1"))).await;
    assert_ne!(anonymous["id"], first["id"], "another voter's request");
    let (_, fresh) = ingress.post_json(&typed_vote(3)).await;
    ingress.stop().await;

    let records = records(&kafka_brokers(), &topic.name).await;
    assert_eq!(records.len(), 6, "every accepted request is a record (retries too)");
    let id = first["id"].as_str().unwrap();
    let by_voter: Vec<_> = records.iter().filter(|r| r.key == "fan-7").collect();
    assert_eq!(by_voter.len(), 4, "keyed by the (trimmed) voter");
    for r in by_voter {
        assert_eq!(
            (r.value["id"].as_str(), r.value["voter"].as_str()),
            (Some(id), Some("fan-7"))
        );
        assert_eq!(r.value["request_id"], "req-1");
    }
    let plain = records
        .iter()
        .find(|r| r.value["id"] == fresh["id"])
        .expect("the plain vote");
    assert_eq!(
        plain.key,
        fresh["id"].as_str().unwrap(),
        "an anonymous vote is keyed by its id"
    );
    assert!(plain.value.get("voter").is_none() && plain.value.get("request_id").is_none());
    let anon = records
        .iter()
        .find(|r| r.value["id"] == anonymous["id"])
        .expect("the anonymous retry-able vote");
    assert_eq!(anon.key, anonymous["id"].as_str().unwrap());
}
