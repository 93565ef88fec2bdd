//! Bad input on the HTTP route: each class gets its precise error, nothing of
//! it reaches Kafka, and a valid vote sent right after succeeds (the process
//! keeps serving). Each test ends by checking that the topic holds exactly the
//! valid votes, so a leaked bad vote would show.

use serde_json::{Value, json};

use super::support::{TestIngress, assert_exactly, records, seed_vote, typed_vote};
use crate::common::{TempTopic, kafka_brokers};

/// A valid vote with `field` set to `value`; `"-field"` removes the field instead.
fn with(field: &str, value: Value) -> Value {
    let mut vote = typed_vote(0);
    let object = vote.as_object_mut().expect("an object");
    match field.strip_prefix('-') {
        Some(removed) => {
            object.remove(removed);
        }
        None => {
            object.insert(field.to_owned(), value);
        }
    }
    vote
}

/// Every field-level problem the HTTP route can meet: (vote, field, problem code).
fn bad_http_votes() -> Vec<(Value, &'static str, &'static str)> {
    vec![
        (with("-name", Value::Null), "name", "missing"),
        (with("-album", Value::Null), "album", "missing"),
        (with("-year", Value::Null), "year", "missing"),
        (with("-rank", Value::Null), "rank", "missing"),
        (with("name", Value::Null), "name", "null"),
        (with("rank", Value::Null), "rank", "null"),
        (with("name", json!(5)), "name", "wrong_type"),
        (with("album", json!(["Jamás"])), "album", "wrong_type"),
        (with("year", json!(true)), "year", "wrong_type"),
        (with("rank", json!({"value": 5})), "rank", "wrong_type"),
        (with("year", json!(1997.5)), "year", "not_an_integer"),
        (with("year", json!("19x7")), "year", "not_an_integer"),
        (with("rank", json!("nine")), "rank", "not_a_number"),
        (with("rank", json!("NaN")), "rank", "not_finite"),
        (with("rank", json!("inf")), "rank", "not_finite"),
        (with("rank", json!("-Infinity")), "rank", "not_finite"),
        (with("year", json!(1899)), "year", "out_of_range"),
        (with("year", json!("2101")), "year", "out_of_range"),
        (with("rank", json!(10.5)), "rank", "out_of_range"),
        (with("rank", json!(-0.1)), "rank", "out_of_range"),
        (with("name", json!("")), "name", "empty"),
        (with("album", json!(" \t ")), "album", "empty"),
        // 101 characters but 202 bytes: the limit counts characters.
        (with("name", json!("é".repeat(101))), "name", "too_long"),
        (with("album", json!("a\u{7}b")), "album", "forbidden_character"),
        (with("voter", json!("  ")), "voter", "empty"),
        (with("voter", json!(42)), "voter", "wrong_type"),
        (with("voter", json!("v".repeat(129))), "voter", "too_long"),
        (with("request_id", json!("a\nb")), "request_id", "forbidden_character"),
        (with("request_id", json!(["r1"])), "request_id", "wrong_type"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_vote_field_gets_a_precise_400_over_http_and_never_reaches_kafka() {
    let topic = TempTopic::create("ingress-http-bad", 3).await;
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &[]).await;
    let mut accepted = Vec::new();

    let cases = bad_http_votes();
    for (i, (vote, field, problem)) in cases.iter().enumerate() {
        let (status, reply) = ingress.post_json(vote).await;
        assert_eq!(status, 400, "{vote} -> {reply}");
        assert_eq!(reply["error"], "invalid_vote", "{reply}");
        assert_eq!(
            (reply["field"].as_str(), reply["problem"].as_str()),
            (Some(*field), Some(*problem)),
            "{vote}"
        );
        assert!(!reply["reason"].as_str().unwrap_or("").is_empty(), "{reply}");

        // The process keeps serving: a valid vote right after is accepted. One of them uses a
        // 100-character (200-byte) name, the longest allowed.
        let valid = match i {
            0 => with("name", json!("é".repeat(100))),
            _ => seed_vote(i),
        };
        let (status, reply) = ingress.post_json(&valid).await;
        assert_eq!(status, 200, "a valid vote after {vote}: {reply}");
        accepted.push(reply["id"].as_str().expect("an id").to_owned());
    }

    // The same votes as items of one array: each rejection names its index; nothing is accepted.
    let batch: Vec<Value> = cases.iter().map(|(vote, _, _)| vote.clone()).collect();
    let (status, reply) = ingress.post_json(&Value::Array(batch)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 0);
    let rejected = reply["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), cases.len());
    for (i, (rejection, (_, field, problem))) in rejected.iter().zip(&cases).enumerate() {
        assert_eq!(rejection["index"], i);
        assert_eq!(
            (rejection["field"].as_str(), rejection["problem"].as_str()),
            (Some(*field), Some(*problem))
        );
    }
    assert!(reply["ids"].as_array().expect("ids").iter().all(Value::is_null));
    ingress.stop().await;

    assert_exactly(&records(&kafka_brokers(), &topic.name).await, &accepted, "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_that_are_not_votes_are_refused_precisely_and_the_next_vote_succeeds() {
    let topic = TempTopic::create("ingress-http-body", 3).await;
    let ingress = TestIngress::start(
        &kafka_brokers(),
        &topic.name,
        &["--max-body-bytes", "4096", "--max-batch", "3"],
    )
    .await;
    let four: Vec<Value> = (0..4).map(seed_vote).collect();
    let (too_many, too_big) = (serde_json::to_vec(&four).unwrap(), over_4096_bytes());
    let vote = serde_json::to_vec(&seed_vote(0)).unwrap();
    let form = Some("application/x-www-form-urlencoded");
    let unsupported = "unsupported_content_type";
    let cases = [
        Refusal::json("malformed JSON", br#"{"name": "a", "#, 400, "malformed_json"),
        Refusal::json("trailing garbage", br#"{"name": "a"} x"#, 400, "malformed_json"),
        Refusal::json("an empty body", b"", 400, "malformed_json"),
        Refusal::json("a JSON string", br#""a vote""#, 400, "not_object_or_array"),
        Refusal::json("a JSON number", b"42", 400, "not_object_or_array"),
        Refusal::json("JSON null", b"null", 400, "not_object_or_array"),
        Refusal::json("an empty array", b"[]", 400, "empty_batch"),
        Refusal::json("a batch over --max-batch", &too_many, 400, "batch_too_long"),
        Refusal::json("a body over --max-body-bytes", &too_big, 413, "body_too_large"),
        Refusal::typed("text/plain", Some("text/plain"), &vote, 415, unsupported),
        Refusal::typed("a form", form, b"name=a", 415, unsupported),
        Refusal::typed("no Content-Type", None, &vote, 415, unsupported),
    ];
    let mut accepted = Vec::new();
    for case in cases {
        let (status, reply) = ingress.post_raw(case.content_type, case.body).await;
        let what = case.what;
        assert_eq!(
            (status, reply["error"].as_str()),
            (case.status, Some(case.error)),
            "{what}: {reply}"
        );
        assert!(!reply["reason"].as_str().unwrap_or("").is_empty(), "{what}: {reply}");

        let (status, reply) = ingress.post_json(&seed_vote(1)).await;
        assert_eq!(status, 200, "a valid vote after {what}: {reply}");
        accepted.push(reply["id"].as_str().expect("an id").to_owned());
    }
    // A content type with parameters is still JSON; a batch of exactly --max-batch is fine.
    let three: Vec<Value> = (0..3).map(seed_vote).collect();
    let (status, reply) = ingress
        .post_raw(
            Some("application/json; charset=utf-8"),
            serde_json::to_vec(&three).unwrap(),
        )
        .await;
    assert_eq!((status, reply["accepted"].as_u64()), (200, Some(3)), "{reply}");
    accepted.extend(
        reply["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_owned()),
    );
    // Only POST is allowed on /votes.
    let (status, _) = ingress.get("/votes").await;
    assert_eq!(status, 405);
    ingress.stop().await;

    assert_exactly(&records(&kafka_brokers(), &topic.name).await, &accepted, "http");
}

/// A body the HTTP route refuses whole, and how.
struct Refusal {
    what: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    error: &'static str,
}

impl Refusal {
    fn json(what: &'static str, body: &[u8], status: u16, error: &'static str) -> Refusal {
        Refusal::typed(what, Some("application/json"), body, status, error)
    }

    fn typed(
        what: &'static str,
        content_type: Option<&'static str>,
        body: &[u8],
        status: u16,
        error: &'static str,
    ) -> Refusal {
        Refusal {
            what,
            content_type,
            body: body.to_vec(),
            status,
            error,
        }
    }
}

/// A valid-looking array whose JSON passes 4096 bytes.
fn over_4096_bytes() -> Vec<u8> {
    let votes: Vec<Value> = (0..3).map(|_| with("album", json!("x".repeat(1500)))).collect();
    let body = serde_json::to_vec(&votes).unwrap();
    assert!(body.len() > 4096);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_size_limit_is_refused_with_413_while_it_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let topic = TempTopic::create("ingress-http-chunked", 1).await;
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &["--max-body-bytes", "4096"]).await;
    // No Content-Length: the limit can only be enforced while the chunks arrive.
    let body = over_4096_bytes();
    let mut request = b"POST /votes HTTP/1.1\r\nHost: ingress\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_vec();
    for chunk in body.chunks(1000) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(ingress.http.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("body_too_large"), "{response}");

    let (status, reply) = ingress.post_json(&seed_vote(1)).await;
    assert_eq!(status, 200, "{reply}");
    ingress.stop().await;
    let id = reply["id"].as_str().unwrap().to_owned();
    assert_exactly(&records(&kafka_brokers(), &topic.name).await, &[id], "http");
}
