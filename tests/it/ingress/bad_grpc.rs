//! Bad input on the gRPC route: each class gets its precise status, nothing
//! of it reaches Kafka, and a valid vote sent right after succeeds (the
//! process keeps serving). Each test ends by checking that the topic holds
//! exactly the valid votes, so a leaked bad vote would show.

use prost::bytes::{Buf, BufMut};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};
use votestream::proto::vote_service_client::VoteServiceClient;
use votestream::proto::{self, CastVotesRequest, item_result};

use super::support::{TestIngress, assert_exactly, grpc_vote, records};
use crate::common::{TempTopic, kafka_brokers};

/// Every field-level problem the gRPC route can meet (the proto types rule out wrong JSON types).
fn bad_grpc_votes() -> Vec<(proto::Vote, &'static str, &'static str)> {
    let vote = |f: &dyn Fn(&mut proto::Vote)| {
        let mut v = grpc_vote("Bohemia Suburbana");
        f(&mut v);
        v
    };
    vec![
        (vote(&|v| v.name = None), "name", "missing"),
        (vote(&|v| v.album = None), "album", "missing"),
        (vote(&|v| v.year = None), "year", "missing"),
        (vote(&|v| v.rank = None), "rank", "missing"),
        (vote(&|v| v.name = Some(String::new())), "name", "empty"),
        (vote(&|v| v.album = Some("   ".into())), "album", "empty"),
        (vote(&|v| v.name = Some("é".repeat(101))), "name", "too_long"),
        (
            vote(&|v| v.name = Some("a\u{0}b".into())),
            "name",
            "forbidden_character",
        ),
        (vote(&|v| v.year = Some(1899)), "year", "out_of_range"),
        (vote(&|v| v.year = Some(i32::MIN)), "year", "out_of_range"),
        (vote(&|v| v.rank = Some(f64::NAN)), "rank", "not_finite"),
        (vote(&|v| v.rank = Some(f64::INFINITY)), "rank", "not_finite"),
        (vote(&|v| v.rank = Some(f64::NEG_INFINITY)), "rank", "not_finite"),
        (vote(&|v| v.rank = Some(10.000001)), "rank", "out_of_range"),
        (vote(&|v| v.rank = Some(-0.5)), "rank", "out_of_range"),
        (vote(&|v| v.voter = Some(" ".into())), "voter", "empty"),
        (vote(&|v| v.voter = Some("é".repeat(129))), "voter", "too_long"),
        (
            vote(&|v| v.request_id = Some("r\u{1b}1".into())),
            "request_id",
            "forbidden_character",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_vote_field_gets_invalid_argument_over_grpc_and_never_reaches_kafka() {
    let topic = TempTopic::create("ingress-grpc-bad", 3).await;
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &[]).await;
    let mut grpc = ingress.grpc().await;
    let mut accepted = Vec::new();

    let cases = bad_grpc_votes();
    for (vote, field, problem) in &cases {
        let status = grpc.cast_vote(vote.clone()).await.expect_err("rejected");
        assert_eq!(status.code(), Code::InvalidArgument, "{vote:?}: {status:?}");
        assert!(status.message().starts_with(&format!("{field}: ")), "{status:?}");
        let metadata = |key| status.metadata().get(key).and_then(|v| v.to_str().ok());
        assert_eq!(
            (metadata("vote-field"), metadata("vote-problem")),
            (Some(*field), Some(*problem))
        );

        let mut valid = grpc_vote("Alux Nahual");
        valid.name = Some("é".repeat(100)); // 100 characters, 200 bytes: allowed
        let reply = grpc.cast_vote(valid).await.expect("a valid vote right after");
        accepted.push(reply.into_inner().id);
    }

    // The same votes in one batch: answered (not an error), every item rejected with its field.
    let votes = cases.iter().map(|(vote, _, _)| vote.clone()).collect();
    let reply = grpc
        .cast_votes(CastVotesRequest { votes })
        .await
        .expect("answered")
        .into_inner();
    assert_eq!((reply.accepted, reply.rejected), (0, cases.len() as u32));
    for (result, (_, field, problem)) in reply.results.iter().zip(&cases) {
        match &result.outcome {
            Some(item_result::Outcome::Rejected(r)) => {
                assert_eq!((r.field.as_str(), r.problem.as_str()), (*field, *problem))
            }
            other => panic!("item {}: {other:?}", result.index),
        }
    }
    ingress.stop().await;

    assert_exactly(&records(&kafka_brokers(), &topic.name).await, &accepted, "grpc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_protobuf_gets_invalid_argument_and_is_counted_as_refused_like_malformed_json() {
    let topic = TempTopic::create("ingress-grpc-malformed", 3).await;
    let ingress = TestIngress::start(&kafka_brokers(), &topic.name, &[]).await;
    let mut grpc = ingress.grpc().await;
    let mut accepted = Vec::new();

    // Bytes that are not a Vote: field 1 (name) sent as a number, then plain garbage.
    for (what, bytes) in [
        ("a number as name", vec![0x08, 0x05]),
        ("garbage", vec![0xff, 0xff, 0xff, 0xff]),
    ] {
        let status = cast_raw(&ingress, bytes).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().contains("malformed protobuf message"),
            "{what}: {status:?}"
        );
        still_serving(&mut grpc, &mut accepted).await;
    }
    // A vote that decodes but is invalid is rejected, not refused.
    let mut invalid = grpc_vote("Alux Nahual");
    invalid.year = Some(3000);
    assert_eq!(grpc.cast_vote(invalid).await.unwrap_err().code(), Code::InvalidArgument);
    let (status, _) = ingress.post_raw(Some("application/json"), "{").await;
    assert_eq!(status, 400);

    let (_, metrics) = ingress.get("/metrics").await;
    for line in [
        r#"votestream_ingress_requests_refused_total{route="grpc",reason="malformed_protobuf"} 2"#,
        r#"votestream_ingress_requests_refused_total{route="http",reason="malformed_json"} 1"#,
        r#"votestream_ingress_votes_rejected_total{route="grpc",reason="out_of_range"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    ingress.stop().await;

    assert_exactly(&records(&kafka_brokers(), &topic.name).await, &accepted, "grpc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_limits_get_precise_errors_and_the_next_vote_succeeds() {
    let topic = TempTopic::create("ingress-grpc-limits", 3).await;
    let ingress = TestIngress::start(
        &kafka_brokers(),
        &topic.name,
        &["--max-batch", "3", "--grpc-max-message-bytes", "1024"],
    )
    .await;
    let mut grpc = ingress.grpc().await;
    let mut accepted = Vec::new();

    let batch = |n: usize| CastVotesRequest {
        votes: (0..n).map(|i| grpc_vote(&format!("Banda {i}"))).collect(),
    };
    let status = grpc.cast_votes(batch(4)).await.expect_err("too long");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("at most 3"), "{status:?}");
    still_serving(&mut grpc, &mut accepted).await;

    let status = grpc.cast_votes(batch(0)).await.expect_err("empty");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("at least one"), "{status:?}");
    still_serving(&mut grpc, &mut accepted).await;

    // Three votes of ~420 bytes each pass the 1024-byte message limit.
    let mut big = batch(3);
    for vote in &mut big.votes {
        vote.name = Some("é".repeat(100));
        vote.album = Some("ü".repeat(100));
    }
    let status = grpc.cast_votes(big).await.expect_err("too large");
    assert_eq!(
        status.code(),
        Code::OutOfRange,
        "tonic's code for an oversized message: {status:?}"
    );
    still_serving(&mut grpc, &mut accepted).await;
    let (_, metrics) = ingress.get("/metrics").await;
    let refused = r#"votestream_ingress_requests_refused_total{route="grpc",reason="message_too_large"} 1"#;
    assert!(metrics.contains(refused), "missing {refused} in\n{metrics}");

    let reply = grpc.cast_votes(batch(3)).await.expect("a full batch").into_inner();
    assert_eq!(reply.accepted, 3);
    let ids: Vec<String> = reply
        .results
        .into_iter()
        .filter_map(|r| match r.outcome {
            Some(item_result::Outcome::Accepted(a)) => Some(a.id),
            _ => None,
        })
        .collect();
    accepted.extend(ids);
    ingress.stop().await;

    assert_exactly(&records(&kafka_brokers(), &topic.name).await, &accepted, "grpc");
}

/// Casts a valid vote, as proof that the server still serves after a refusal.
async fn still_serving(grpc: &mut VoteServiceClient<Channel>, accepted: &mut Vec<String>) {
    let reply = grpc
        .cast_vote(grpc_vote("Viernes Verde"))
        .await
        .expect("a valid vote right after");
    accepted.push(reply.into_inner().id);
}

/// Casts `bytes` as the message of a `CastVote` call; the error it gets.
async fn cast_raw(ingress: &TestIngress, bytes: Vec<u8>) -> Status {
    let addr = ingress.grpc_addr.expect("gRPC is on");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let path = PathAndQuery::from_static("/votes.v1.VoteService/CastVote");
    raw.unary::<_, Vec<u8>, _>(tonic::Request::new(bytes), path, RawCodec)
        .await
        .expect_err("refused")
}

/// Sends and receives raw bytes, to put what no generated client would send on the wire.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
