//! Rate limits and load shedding (DESIGN.md, "Authentication and limits"):
//! past a voter's or an address's rate both routes answer 429 with
//! Retry-After / RESOURCE_EXHAUSTED and nothing more is produced; with the
//! producer's queue near full a vote is refused at once with 503 /
//! UNAVAILABLE instead of waiting for room.

use std::time::Duration;

use serde_json::{Value, json};
use tonic::Code;
use votestream::proto::{self, CastVotesRequest};

use super::auth::{jwks_file, keys, post, start_with_auth, with_token};
use super::support::{TestIngress, free_port, grpc_vote, records, typed_vote};
use crate::common::{TempTopic, eventually, kafka_brokers};

fn by(voter: &str, n: usize) -> Value {
    let mut vote = typed_vote(n);
    vote["voter"] = json!(voter);
    vote
}

fn grpc_by(voter: &str) -> proto::Vote {
    proto::Vote {
        voter: Some(voter.into()),
        ..grpc_vote("Bohemia Suburbana")
    }
}

/// Whole seconds of a 429's Retry-After.
fn retry_after(headers: &reqwest::header::HeaderMap) -> u64 {
    let value = headers.get("retry-after").expect("a Retry-After header");
    value.to_str().unwrap().parse().expect("whole seconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_a_voters_rate_both_routes_answer_429_and_produce_nothing_more() {
    let topic = TempTopic::create("ingress-limit-voter", 3).await;
    // One vote a minute, two at once: the third within the minute is refused.
    let limits = ["--rate-limit-voter", "1", "--rate-limit-voter-burst", "2"];
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &limits).await;
    for n in 0..2 {
        let (status, reply) = ingress.post_json(&by("ana", n)).await;
        assert_eq!(status, 200, "{reply}");
    }
    let (status, headers, reply) = post(&ingress, None, &by("ana", 3)).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (429, Some("rate_limited")),
        "{reply}"
    );
    let wait = retry_after(&headers);
    assert!((1..=60).contains(&wait), "about a minute for the next vote: {wait}");
    let mut grpc = ingress.grpc().await;
    let status = grpc.cast_vote(grpc_by("ana")).await.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.metadata().get("retry-after").is_some());
    // Another voter has a bucket of its own; a batch over the burst never fits.
    grpc.cast_vote(grpc_by("bea")).await.expect("bea's first vote");
    let batch = CastVotesRequest {
        votes: vec![grpc_by("caro"), grpc_by("caro"), grpc_by("caro")],
    };
    let status = grpc.cast_votes(batch).await.expect_err("refused whole");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let (status, reply) = ingress.post_json(&json!([by("caro", 1), by("bea", 2)])).await;
    assert_eq!(status, 200, "caro's bucket was given back: {reply}");
    let (_, text) = ingress.get("/metrics").await;
    assert!(text.contains(r#"votestream_ingress_rate_limited_total{route="http",scope="voter"} 1"#));
    assert!(text.contains(r#"votestream_ingress_rate_limited_total{route="grpc",scope="voter"} 2"#));
    ingress.stop().await;
    let mut voters: Vec<String> = records(&kafka_brokers(), &topic.name)
        .await
        .into_iter()
        .map(|r| r.key)
        .collect();
    voters.sort();
    assert_eq!(voters, ["ana", "ana", "bea", "bea", "caro"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_voter_limit_counts_the_tokens_subject() {
    let topic = TempTopic::create("ingress-limit-token", 1).await;
    let jwks = jwks_file("limit-token");
    let ingress = start_with_auth(&topic.name, &jwks, &["--rate-limit-voter", "1"]).await;
    let token = keys()[1].token("ana");
    let (status, _, reply) = post(&ingress, Some(&token), &typed_vote(1)).await;
    assert_eq!(status, 200, "{reply}");
    let mut grpc = ingress.grpc().await;
    let anonymous = proto::Vote {
        voter: None,
        ..grpc_vote("Alux Nahual")
    };
    let status = grpc
        .cast_vote(with_token(anonymous, Some(&token)))
        .await
        .expect_err("ana's second vote within the minute");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    ingress.stop().await;
    assert_eq!(records(&kafka_brokers(), &topic.name).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_an_addresss_rate_both_routes_answer_429_and_produce_nothing_more() {
    let topic = TempTopic::create("ingress-limit-ip", 1).await;
    let limits = ["--rate-limit-ip", "1", "--rate-limit-ip-burst", "3"];
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &limits).await;
    // Requests until one is refused: three at once, then one a second.
    let mut accepted = 0;
    let refused = loop {
        let (status, headers, reply) = post(&ingress, None, &typed_vote(accepted)).await;
        match status {
            200 => accepted += 1,
            429 => break (headers, reply),
            other => panic!("{other}: {reply}"),
        }
        assert!(accepted < 30, "never limited");
    };
    let (headers, reply) = refused;
    assert_eq!(reply["error"], "rate_limited", "{reply}");
    assert_eq!(retry_after(&headers), 1, "a request comes back each second");
    assert!(accepted >= 3, "the burst passes: {accepted}");
    // The address's bucket is shared by both routes.
    let mut grpc = ingress.grpc().await;
    let mut grpc_accepted = 0;
    let status = loop {
        match grpc.cast_vote(grpc_vote("Alux Nahual")).await {
            Ok(_) => grpc_accepted += 1,
            Err(status) => break status,
        }
        assert!(grpc_accepted < 30, "never limited");
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let (_, text) = ingress.get("/metrics").await;
    assert!(text.contains(r#"votestream_ingress_rate_limited_total{route="http",scope="ip"} 1"#));
    assert!(text.contains(r#"votestream_ingress_rate_limited_total{route="grpc",scope="ip"} 1"#));
    ingress.stop().await;
    let produced = records(&kafka_brokers(), &topic.name).await.len();
    assert_eq!(produced, accepted + grpc_accepted, "only the accepted votes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_producers_queue_near_full_votes_are_refused_at_once_with_503() {
    // No broker: what is produced stays queued until the produce timeout.
    let broker = format!("127.0.0.1:{}", free_port());
    let flags = [
        "--producer-queue-messages",
        "4",
        "--shed-queue-fill",
        "0.5",
        "--produce-timeout-ms",
        "30000",
    ];
    let ingress = TestIngress::start(&broker, "votes-shed", &flags).await;
    // Two votes wait in the queue: half of it, the shedding mark.
    let mut grpc = ingress.grpc().await;
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let mut grpc = grpc.clone();
            tokio::spawn(async move { grpc.cast_vote(grpc_vote("Alux Nahual")).await })
        })
        .collect();
    eventually("two votes in flight", Duration::from_secs(20), || async {
        let (_, text) = ingress.get("/metrics").await;
        text.contains(r#"votestream_ingress_votes_in_flight{route="grpc"} 2"#)
            .then_some(())
    })
    .await;
    // Refused at once: a vote that queued would wait the 30 s produce timeout.
    let at_once = Duration::from_secs(10);
    let (status, headers, reply) = tokio::time::timeout(at_once, post(&ingress, None, &typed_vote(1)))
        .await
        .expect("an answer before the produce timeout");
    assert_eq!((status, reply["error"].as_str()), (503, Some("overloaded")), "{reply}");
    assert_eq!(retry_after(&headers), 1);
    let status = tokio::time::timeout(at_once, grpc.cast_vote(grpc_vote("Bohemia Suburbana")))
        .await
        .expect("an answer before the produce timeout")
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("overloaded"), "{status:?}");
    let (_, text) = ingress.get("/metrics").await;
    assert!(
        text.contains(r#"votestream_ingress_shed_total{route="http"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"votestream_ingress_shed_total{route="grpc"} 1"#));
    for task in waiting {
        task.abort();
    }
}
