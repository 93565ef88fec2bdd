//! Signed voter tokens (DESIGN.md, "Authentication and limits"): keys of
//! each type generated here, tokens minted with jsonwebtoken's encoder, a
//! JWKS file the ingress reads. Every refusal class on both routes, with
//! nothing produced; the token's subject as the voter; a body naming another
//! voter; keys rotated by rewriting the file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::Generate;
use serde_json::{Value, json};
use tonic::Code;
use tonic::metadata::MetadataValue;
use votestream::proto::{self, CastVotesRequest};

use super::support::{TestIngress, assert_nothing_produced, grpc_vote, records, typed_vote};
use crate::common::{TempTopic, eventually, kafka_brokers, scratch_dir};

pub const ISSUER: &str = "https://front.example";
pub const AUDIENCE: &str = "votestream";

/// A private key the tests sign with, and its public JWK.
pub struct SigningKey {
    pub kid: String,
    algorithm: Algorithm,
    key: EncodingKey,
    jwk: Jwk,
}

impl SigningKey {
    fn new(kid: &str, algorithm: Algorithm, key: EncodingKey) -> SigningKey {
        let mut jwk = Jwk::from_encoding_key(&key, algorithm).expect("the public JWK");
        jwk.common.key_id = Some(kid.to_owned());
        SigningKey {
            kid: kid.to_owned(),
            algorithm,
            key,
            jwk,
        }
    }

    pub fn ed25519(kid: &str) -> SigningKey {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes};
        let key = <ed25519_dalek::SigningKey as Generate>::generate();
        // PKCS#8 v1 (the private key alone), the form jsonwebtoken reads.
        let bytes = KeypairBytes {
            secret_key: key.to_bytes(),
            public_key: None,
        };
        let der = bytes.to_pkcs8_der().expect("PKCS#8");
        SigningKey::new(kid, Algorithm::EdDSA, EncodingKey::from_ed_der(der.as_bytes()))
    }

    pub fn es256(kid: &str) -> SigningKey {
        use p256::pkcs8::EncodePrivateKey;
        let der = p256::SecretKey::generate().to_pkcs8_der().expect("PKCS#8");
        SigningKey::new(kid, Algorithm::ES256, EncodingKey::from_ec_der(der.as_bytes()))
    }

    pub fn rs256(kid: &str) -> SigningKey {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let der = rsa::PrivateKey::generate().to_pkcs1_der().expect("PKCS#1");
        SigningKey::new(kid, Algorithm::RS256, EncodingKey::from_rsa_der(der.as_bytes()))
    }

    /// A token of `claims`, signed by this key, naming `kid` in its header.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).expect("a signed token")
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// A valid token for `voter`: the test issuer and audience, an hour to live.
    pub fn token(&self, voter: &str) -> String {
        self.sign(&claims(voter))
    }
}

/// The three key types, generated once per test run (RSA takes a while).
pub fn keys() -> &'static [SigningKey; 3] {
    static KEYS: OnceLock<[SigningKey; 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            SigningKey::ed25519("ed-1"),
            SigningKey::es256("ec-1"),
            SigningKey::rs256("rsa-1"),
        ]
    })
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

pub fn claims(voter: &str) -> Value {
    json!({"sub": voter, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 3600})
}

/// Writes the JWKS of `keys` to `path`, replacing it at once (as a
/// Kubernetes Secret update does), so the ingress never reads half a file.
pub fn write_jwks(path: &Path, keys: &[&SigningKey]) {
    let set = JwkSet {
        keys: keys.iter().map(|k| k.jwk.clone()).collect(),
    };
    let next = path.with_extension("next");
    std::fs::write(&next, serde_json::to_vec(&set).expect("JSON")).expect("write the JWKS");
    std::fs::rename(&next, path).expect("replace the JWKS");
}

/// A JWKS file with the three keys, in a scratch folder of its own.
pub fn jwks_file(name: &str) -> PathBuf {
    let path = scratch_dir(name).join("jwks.json");
    let [ed, ec, rsa] = keys();
    write_jwks(&path, &[ed, ec, rsa]);
    path
}

/// An ingress that requires tokens from the test issuer for the test audience.
pub async fn start_with_auth(topic: &str, jwks: &Path, extra: &[&str]) -> TestIngress {
    let mut flags = vec![
        "--auth-jwt-keys",
        jwks.to_str().expect("a UTF-8 path"),
        "--auth-jwt-issuer",
        ISSUER,
        "--auth-jwt-audience",
        AUDIENCE,
    ];
    flags.extend_from_slice(extra);
    TestIngress::start(&kafka_brokers(), topic, &flags).await
}

/// POSTs `body` to /votes with `token` (none: no Authorization header).
pub async fn post(
    ingress: &TestIngress,
    token: Option<&str>,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = ingress.client.post(ingress.url("/votes")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.expect("a JSON reply"))
}

/// A gRPC request carrying `authorization: Bearer <token>` when given.
pub fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ASCII");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn voted(voter: Option<&str>) -> proto::Vote {
    proto::Vote {
        voter: voter.map(Into::into),
        ..grpc_vote("Alux Nahual")
    }
}

/// The status of a vote sent with a token of `key`.
async fn status_with(ingress: &TestIngress, key: &SigningKey) -> u16 {
    post(ingress, Some(&key.token("ana")), &typed_vote(1)).await.0
}

async fn metrics(ingress: &TestIngress) -> String {
    ingress.get("/metrics").await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_token_gets_401_on_both_routes_and_nothing_reaches_kafka() {
    let topic = TempTopic::create("ingress-auth-refused", 3).await;
    let jwks = jwks_file("auth-refused");
    let ingress = start_with_auth(&topic.name, &jwks, &[]).await;
    let [ed, ec, rsa] = keys();
    let forger = SigningKey::es256("forger");
    let with = |changes: Value| {
        let mut claims = claims("ana");
        for (k, v) in changes.as_object().expect("an object") {
            claims[k] = v.clone();
        }
        claims
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("malformed", Some("not-a-jwt".into())),
        (
            "malformed",
            Some(ed.sign(&json!({"sub": "ana", "iss": ISSUER, "aud": AUDIENCE}))),
        ),
        ("expired", Some(ec.sign(&with(json!({"exp": now() - 120}))))),
        ("not_yet_valid", Some(rsa.sign(&with(json!({"nbf": now() + 120}))))),
        ("bad_signature", Some(forger.sign_as(&ec.kid, &claims("ana")))),
        ("unknown_kid", Some(forger.token("ana"))),
        (
            "wrong_audience",
            Some(ed.sign(&with(json!({"aud": "another-service"})))),
        ),
        (
            "wrong_issuer",
            Some(rsa.sign(&with(json!({"iss": "https://elsewhere.example"})))),
        ),
    ];
    let mut grpc = ingress.grpc().await;
    for (reason, token) in &cases {
        let token = token.as_deref();
        let (status, headers, reply) = post(&ingress, token, &typed_vote(1)).await;
        assert_eq!(status, 401, "{reason}: {reply}");
        assert_eq!(reply, json!({"error": "unauthorized", "reason": reason}));
        let challenge = headers.get("www-authenticate").expect("a challenge").to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        let (status, _, _) = post(&ingress, token, &json!([typed_vote(2), typed_vote(3)])).await;
        assert_eq!(status, 401, "{reason}: a batch too");

        let status = grpc
            .cast_vote(with_token(voted(None), token))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{reason}: {status:?}");
        assert_eq!(status.metadata().get("auth-reason").unwrap(), reason);
        let batch = CastVotesRequest {
            votes: vec![voted(None)],
        };
        let status = grpc.cast_votes(with_token(batch, token)).await.expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{reason}: {status:?}");
    }
    let text = metrics(&ingress).await;
    for reason in ["missing", "expired", "not_yet_valid", "bad_signature", "unknown_kid"] {
        for route in ["http", "grpc"] {
            let series = format!(r#"votestream_ingress_auth_refused_total{{route="{route}",reason="{reason}"}} 2"#);
            assert!(text.contains(&series), "{series} in\n{text}");
        }
    }
    assert!(text.contains(r#"votestream_ingress_auth_refused_total{route="http",reason="malformed"} 4"#));
    ingress.stop().await;
    assert_nothing_produced(&topic.name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_each_key_type_votes_as_its_subject_on_both_routes() {
    let topic = TempTopic::create("ingress-auth-voter", 3).await;
    let jwks = jwks_file("auth-voter");
    // With tokens, --require-voter holds by itself: the voter comes from the token.
    let ingress = start_with_auth(&topic.name, &jwks, &["--require-voter"]).await;
    let mut grpc = ingress.grpc().await;
    let mut expected = Vec::new();
    for (n, key) in keys().iter().enumerate() {
        let voter = format!("voter-{}", key.kid);
        let token = key.token(&voter);
        let (status, _, reply) = post(&ingress, Some(&token), &typed_vote(n)).await;
        assert_eq!(status, 200, "{}: {reply}", key.kid);
        let mut own = typed_vote(n);
        own["voter"] = json!(voter);
        own["request_id"] = json!("r-1");
        let (status, _, reply) = post(&ingress, Some(&token), &own).await;
        assert_eq!(status, 200, "{}: {reply}", key.kid);
        assert_eq!(
            reply["id"],
            votestream::vote::vote_id_of(Some(&voter), "r-1").to_string(),
            "the vote id is derived from the token's voter"
        );
        grpc.cast_vote(with_token(voted(None), Some(&token)))
            .await
            .expect("accepted over gRPC");
        let batch = CastVotesRequest {
            votes: vec![voted(None), voted(Some(&voter))],
        };
        let reply = grpc.cast_votes(with_token(batch, Some(&token))).await.expect("a batch");
        assert_eq!(reply.get_ref().accepted, 2);
        expected.extend(std::iter::repeat_n(voter, 5));
    }
    // Within the 30 s leeway: expired 10 s ago, valid from 10 s ahead.
    let [ed, ..] = keys();
    let mut late = claims("voter-skewed");
    late["exp"] = json!(now() - 10);
    late["nbf"] = json!(now() + 10);
    let (status, _, reply) = post(&ingress, Some(&ed.sign(&late)), &typed_vote(9)).await;
    assert_eq!(status, 200, "within the leeway: {reply}");
    expected.push("voter-skewed".into());
    ingress.stop().await;

    let records = records(&kafka_brokers(), &topic.name).await;
    let mut voters: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
    for record in &records {
        assert_eq!(record.value["voter"], record.key.as_str(), "keyed by the voter");
    }
    voters.sort();
    expected.sort();
    assert_eq!(voters, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_voter_other_than_the_tokens_subject_gets_403_on_both_routes() {
    let topic = TempTopic::create("ingress-auth-mismatch", 3).await;
    let jwks = jwks_file("auth-mismatch");
    let ingress = start_with_auth(&topic.name, &jwks, &[]).await;
    let token = keys()[0].token("ana");
    let mut other = typed_vote(1);
    other["voter"] = json!("bea");
    let (status, _, reply) = post(&ingress, Some(&token), &other).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (403, Some("voter_mismatch")),
        "{reply}"
    );
    let mut own = typed_vote(2);
    own["voter"] = json!("ana");
    let (status, _, reply) = post(&ingress, Some(&token), &json!([own, other])).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (403, Some("voter_mismatch")),
        "one item of another voter refuses the batch: {reply}"
    );
    let mut grpc = ingress.grpc().await;
    let status = grpc
        .cast_vote(with_token(voted(Some("bea")), Some(&token)))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let batch = CastVotesRequest {
        votes: vec![voted(Some("ana")), voted(Some("bea"))],
    };
    let status = grpc
        .cast_votes(with_token(batch, Some(&token)))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let text = metrics(&ingress).await;
    for route in ["http", "grpc"] {
        let series = format!(r#"votestream_ingress_auth_refused_total{{route="{route}",reason="voter_mismatch"}} 2"#);
        assert!(text.contains(&series), "{series}");
    }
    ingress.stop().await;
    assert_nothing_produced(&topic.name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_by_rewriting_the_jwks_file_without_a_restart() {
    let topic = TempTopic::create("ingress-auth-rotation", 1).await;
    let path = scratch_dir("auth-rotation").join("jwks.json");
    let old = SigningKey::ed25519("2026-old");
    let new = SigningKey::es256("2026-new");
    write_jwks(&path, &[&old]);
    let ingress = start_with_auth(&topic.name, &path, &[]).await;
    assert_eq!(status_with(&ingress, &old).await, 200);
    assert_eq!(status_with(&ingress, &new).await, 401, "not yet in the file");

    write_jwks(&path, &[&new]);
    let (ingress_ref, new_ref) = (&ingress, &new);
    eventually("the new key is used", Duration::from_secs(20), || async move {
        (status_with(ingress_ref, new_ref).await == 200).then_some(())
    })
    .await;
    let (status, _, reply) = post(&ingress, Some(&old.token("ana")), &typed_vote(2)).await;
    assert_eq!(
        (status, reply["reason"].as_str()),
        (401, Some("unknown_kid")),
        "{reply}"
    );

    // A file that no longer parses keeps the keys loaded before.
    std::fs::write(&path, "{\"keys\": [").expect("write");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status_with(&ingress, &new).await, 200, "the last good keys stay");
    ingress.stop().await;
    assert_eq!(records(&kafka_brokers(), &topic.name).await.len(), 3);
}
