//! Votes that should be accepted: over each route they reach Kafka exactly
//! once, keyed by the id the reply announced, with the documented JSON.

use serde_json::{Value, json};
use votestream::proto::{CastVotesRequest, item_result};

use super::support::{TestIngress, assert_exactly, grpc_vote, records, seed_vote, typed_vote};
use crate::common::{TempTopic, kafka_brokers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_cast_over_grpc_is_in_kafka_once_under_the_id_in_its_reply() {
    let topic = TempTopic::create("ingress-grpc-one", 3).await;
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &[]).await;
    let mut grpc = ingress.grpc().await;

    let mut vote = grpc_vote("  Bohemia Suburbana ");
    vote.rank = Some(10.0);
    let reply = grpc.cast_vote(vote).await.expect("accepted").into_inner();
    ingress.stop().await;

    let records = records(&kafka_brokers(), &topic.name).await;
    assert_exactly(&records, std::slice::from_ref(&reply.id), "grpc");
    let value = &records[0].value;
    assert_eq!(value["name"], "Bohemia Suburbana", "the name is stored trimmed");
    assert_eq!(value["album"], "Jamás");
    assert_eq!(value["year"], 1997);
    assert_eq!(value["rank"], 10.0);
    assert_eq!(value["received_at"], reply.received_at.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_batch_produces_its_valid_votes_and_reports_each_rejected_item() {
    let topic = TempTopic::create("ingress-grpc-batch", 3).await;
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &[]).await;
    let mut grpc = ingress.grpc().await;

    let mut no_year = grpc_vote("Alux Nahual");
    no_year.year = None;
    let mut infinite_rank = grpc_vote("Viernes Verde");
    infinite_rank.rank = Some(f64::INFINITY);
    let votes = vec![
        grpc_vote("Bohemia Suburbana"),
        no_year,
        grpc_vote("Ricardo Arjona"),
        infinite_rank,
        grpc_vote("Malacates Trébol Shop"),
    ];
    let reply = grpc
        .cast_votes(CastVotesRequest { votes })
        .await
        .expect("the batch is answered")
        .into_inner();
    ingress.stop().await;

    assert_eq!((reply.accepted, reply.rejected, reply.unavailable), (3, 2, 0));
    assert_eq!(reply.results.len(), 5);
    let mut ids = Vec::new();
    for (i, result) in reply.results.iter().enumerate() {
        assert_eq!(result.index as usize, i);
        match (i, result.outcome.as_ref().expect("an outcome")) {
            (0 | 2 | 4, item_result::Outcome::Accepted(accepted)) => ids.push(accepted.id.clone()),
            (1, item_result::Outcome::Rejected(r)) => {
                assert_eq!((r.field.as_str(), r.problem.as_str()), ("year", "missing"))
            }
            (3, item_result::Outcome::Rejected(r)) => {
                assert_eq!((r.field.as_str(), r.problem.as_str()), ("rank", "not_finite"))
            }
            (i, other) => panic!("item {i}: unexpected {other:?}"),
        }
    }
    assert_exactly(&records(&kafka_brokers(), &topic.name).await, &ids, "grpc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_object_posted_over_http_is_in_kafka_once_under_the_id_in_its_reply() {
    let topic = TempTopic::create("ingress-http-one", 3).await;
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &[]).await;

    let (status, reply) = ingress.post_json(&typed_vote(1)).await;
    assert_eq!(status, 200, "{reply}");
    let (status, seed_reply) = ingress.post_json(&seed_vote(2)).await;
    assert_eq!(status, 200, "{seed_reply}");
    ingress.stop().await;

    let ids = [id_of(&reply), id_of(&seed_reply)];
    let records = records(&kafka_brokers(), &topic.name).await;
    assert_exactly(&records, &ids, "http");
    let seed = records.iter().find(|r| r.key == ids[1]).expect("the seed-format vote");
    // Strings holding numbers are stored as numbers.
    assert_eq!(seed.value["year"], 1997);
    assert_eq!(seed.value["rank"], 9.5);
    assert_eq!(seed.value["received_at"], seed_reply["received_at"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_all_string_array_is_accepted_over_http_and_each_vote_reaches_kafka_once() {
    let topic = TempTopic::create("ingress-http-seed", 6).await;
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &[]).await;

    let batch: Vec<Value> = (0..50).map(seed_vote).collect();
    let (status, reply) = ingress.post_json(&Value::Array(batch)).await;
    ingress.stop().await;

    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 50);
    assert_eq!(reply["rejected"], json!([]));
    assert_eq!(reply["unavailable"], json!([]));
    let ids: Vec<String> = reply["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().expect("every item has an id").to_owned())
        .collect();
    assert_eq!(ids.len(), 50);
    assert_exactly(&records(&kafka_brokers(), &topic.name).await, &ids, "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_array_produces_its_valid_items_and_reports_the_rejected_ones_by_index() {
    let topic = TempTopic::create("ingress-http-mixed", 3).await;
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &[]).await;

    let batch = json!([
        typed_vote(0),
        {"name": "Alux Nahual", "album": "Alux Nahual", "year": "1899", "rank": "5"},
        seed_vote(2),
        "not a vote",
        {"name": "Viernes Verde", "album": null, "year": 2005, "rank": 5},
    ]);
    let (status, reply) = ingress.post_json(&batch).await;
    ingress.stop().await;

    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 2);
    assert_eq!(
        reply["rejected"],
        json!([
            {"index": 1, "field": "year", "problem": "out_of_range", "reason": "must be between 1900 and 2100, got 1899"},
            {"index": 3, "field": "vote", "problem": "wrong_type", "reason": "expected a JSON object, got a string"},
            {"index": 4, "field": "album", "problem": "null", "reason": "must not be null"},
        ])
    );
    let ids = reply["ids"].as_array().expect("ids");
    assert_eq!(ids.len(), 5, "one id slot per item");
    assert!(ids[1].is_null() && ids[3].is_null() && ids[4].is_null());
    let accepted = [id_str(&ids[0]), id_str(&ids[2])];
    assert_exactly(&records(&kafka_brokers(), &topic.name).await, &accepted, "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_over_both_routes_share_one_topic_with_their_routes_recorded() {
    let topic = TempTopic::create("ingress-both", 6).await;
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &[]).await;
    let mut grpc = ingress.grpc().await;

    let grpc_reply = grpc.cast_vote(grpc_vote("Tijuana Love")).await.expect("accepted");
    let (status, http_reply) = ingress.post_json(&seed_vote(7)).await;
    assert_eq!(status, 200);
    ingress.stop().await;

    let records = records(&kafka_brokers(), &topic.name).await;
    assert_eq!(records.len(), 2);
    let route_of = |id: &str| records.iter().find(|r| r.key == id).map(|r| r.value["route"].clone());
    assert_eq!(route_of(&grpc_reply.get_ref().id), Some(json!("grpc")));
    assert_eq!(route_of(&id_of(&http_reply)), Some(json!("http")));
}

fn id_of(reply: &Value) -> String {
    id_str(&reply["id"])
}

fn id_str(id: &Value) -> String {
    id.as_str().unwrap_or_else(|| panic!("an id, got {id}")).to_owned()
}
