//! Hostile input, as property tests: whatever bytes or values arrive (a JSON
//! vote on HTTP, a protobuf vote on gRPC, a Kafka record for the consumer),
//! each decoder gives a value or a clear error and never panics, and what it
//! accepts is within the rules. The logs app's parameters and cursors have
//! theirs beside their parser (`logs/query.rs`).

use proptest::prelude::*;
use prost::Message;
use serde_json::Value;

use crate::proto;
use crate::vote::{MAX_NAME_CHARS, Route, Rules, Vote, VoteRecord, YEARS};

/// Any JSON value, nested a few levels, with the vote's field names likely.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        "[0-9]{1,6}(\\.[0-9]{0,3})?".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("album".to_owned()),
                    Just("year".to_owned()),
                    Just("rank".to_owned()),
                    ".{0,10}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What every accepted vote satisfies, whatever route it came by.
fn within_rules(vote: &Vote, rules: &Rules) {
    for text in [&vote.name, &vote.album] {
        assert!(!text.trim().is_empty() && text.trim() == text.as_str(), "{vote:?}");
        assert!(text.chars().count() <= MAX_NAME_CHARS, "{vote:?}");
        assert!(!text.chars().any(char::is_control), "{vote:?}");
    }
    assert!(YEARS.contains(&i64::from(vote.year)), "{vote:?}");
    assert!(
        vote.rank.is_finite() && (0.0..=rules.rank_max).contains(&vote.rank),
        "{vote:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_json_value_is_a_vote_within_the_rules_or_a_field_error(value in json()) {
        let rules = Rules::default();
        if let Ok(vote) = Vote::from_json(&value, &rules) {
            within_rules(&vote, &rules);
        }
    }

    #[test]
    fn any_http_body_is_parsed_or_refused(body in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(value) = serde_json::from_slice::<Value>(&body) {
            let _ = Vote::from_json(&value, &Rules::default());
        }
    }

    #[test]
    fn any_protobuf_bytes_decode_to_a_vote_within_the_rules_or_an_error(
        bytes in prop::collection::vec(any::<u8>(), 0..256)
    ) {
        let rules = Rules::default();
        for decoded in [proto::Vote::decode(bytes.as_slice()).map(|v| vec![v]),
                        proto::CastVotesRequest::decode(bytes.as_slice()).map(|r| r.votes)] {
            for v in decoded.unwrap_or_default() {
                let year = v.year.map(i64::from);
                let ids = (v.voter.as_deref(), v.request_id.as_deref());
                if let Ok(vote) = Vote::from_fields(v.name.as_deref(), v.album.as_deref(), year, v.rank, ids.0, ids.1, &rules) {
                    within_rules(&vote, &rules);
                }
            }
        }
    }

    #[test]
    fn any_protobuf_vote_fields_give_a_vote_within_the_rules_or_a_field_error(
        name in proptest::option::of(".{0,120}"),
        album in proptest::option::of(".{0,120}"),
        year in proptest::option::of(any::<i32>()),
        rank in proptest::option::of(any::<f64>()),
        voter in proptest::option::of(".{0,140}"),
    ) {
        let rules = Rules::default();
        let year = year.map(i64::from);
        if let Ok(vote) = Vote::from_fields(name.as_deref(), album.as_deref(), year, rank, voter.as_deref(), None, &rules) {
            within_rules(&vote, &rules);
        }
    }

    #[test]
    fn any_kafka_record_decodes_to_a_vote_within_the_rules_or_a_reason(
        bytes in prop::collection::vec(any::<u8>(), 0..512)
    ) {
        let rules = Rules::default();
        match VoteRecord::decode(&bytes, &rules) {
            Ok(record) => {
                let vote = Vote::new(&record.name, &record.album, i64::from(record.year), record.rank, &rules);
                prop_assert!(vote.is_ok(), "a decoded record passes the rules: {record:?}");
            }
            Err(reason) => prop_assert!(!reason.is_empty()),
        }
    }

    #[test]
    fn a_record_the_ingress_writes_is_read_back_unchanged(
        name in "[A-Za-zÁÉÍÓÚáéíóúñ ]{1,40}",
        album in "[A-Za-z0-9 ]{1,40}",
        year in 1900_i64..=2100,
        tenths in 0_u32..=100,
        http in any::<bool>(),
        // The record keeps milliseconds, as every record does.
        received_ms in 0_i64..4_102_444_800_000,
    ) {
        let rules = Rules::default();
        let Ok(vote) = Vote::new(&name, &album, year, f64::from(tenths) / 10.0, &rules) else {
            return Ok(());
        };
        let route = if http { Route::Http } else { Route::Grpc };
        let received_at = chrono::DateTime::from_timestamp_millis(received_ms).expect("in range");
        let record = vote.stamp(route, received_at);
        let back = VoteRecord::decode(&record.to_json(), &rules).expect("its own record decodes");
        prop_assert_eq!(back, record);
    }
}
