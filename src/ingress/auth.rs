//! Signed voter tokens (DESIGN.md, "Authentication and limits"): with
//! `--auth-jwt-keys`, a vote request must carry a JWT signed by one of the
//! keys of a JWKS file, and the token's `sub` is the voter. The front-end
//! that knows the voter (an account, a verified phone) signs; the ingress
//! only verifies, so it holds public keys alone.
//!
//! The key is chosen by the token's `kid`, and its algorithm by the key, never
//! by the token (a token cannot ask for HS256 against an RSA public key).
//! The file is looked at again at most once a second, on the request path
//! (one `stat`), and reread when its modification time or size changed, so
//! keys rotate without a restart; a file that no longer parses keeps the keys
//! loaded before, and says so in the log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AuthArgs;
use crate::vote::{FieldError, Vote, ident};

/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// Least time between two looks at the key file.
const RECHECK: Duration = Duration::from_secs(1);

/// Why a request was not authenticated: the `reason` of the 401 body and
/// of `auth_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send Authorization: Bearer <token>")]
    Missing,
    #[error("the token is not a well-formed JWT with exp and a valid sub")]
    Malformed,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("no key with the token's kid")]
    UnknownKid,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token is from another issuer")]
    WrongIssuer,
}

impl AuthError {
    pub const ALL: [AuthError; 8] = [
        AuthError::Missing,
        AuthError::Malformed,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::BadSignature,
        AuthError::UnknownKid,
        AuthError::WrongAudience,
        AuthError::WrongIssuer,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadSignature => "bad_signature",
            AuthError::UnknownKid => "unknown_kid",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::WrongIssuer => "wrong_issuer",
        }
    }

    fn of(kind: &ErrorKind) -> AuthError {
        match kind {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
            // A signature that does not verify, is not of the key's algorithm, or does not decode.
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::Provider(_) => AuthError::BadSignature,
            _ => AuthError::Malformed,
        }
    }
}

/// A body naming another voter than the token.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the vote's voter is not the token's subject")]
pub struct VoterMismatch;

impl VoterMismatch {
    /// The error code of the 403 body and the `reason` of `auth_refused_total`.
    pub const CODE: &str = "voter_mismatch";
}

/// The voter a request was authenticated as: the token's `sub`, valid as a
/// vote's `voter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter(String);

impl Voter {
    /// The vote as cast by this voter: one without a voter gets it (and its
    /// vote id is derived from it); one naming another voter is refused. A
    /// vote that failed validation stays as it is.
    pub fn bind(&self, vote: Result<Vote, FieldError>) -> Result<Result<Vote, FieldError>, VoterMismatch> {
        match vote {
            Ok(vote) => match vote.voter.as_deref() {
                Some(voter) if voter != self.0 => Err(VoterMismatch),
                _ => {
                    let request_id = vote.request_id.clone();
                    Ok(vote.with_ids(Some(&self.0), request_id.as_deref()))
                }
            },
            invalid => Ok(invalid),
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// The keys of one version of the file, by `kid`.
struct KeySet {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    /// What the file looked like when read: its modification time and size.
    stamp: (Option<SystemTime>, u64),
}

/// Verifies voter tokens against the JWKS file.
pub struct Authenticator {
    path: PathBuf,
    issuer: Option<String>,
    audience: Option<String>,
    keys: RwLock<Arc<KeySet>>,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last look at the file.
    checked_ms: AtomicU64,
}

impl Authenticator {
    /// `None` when authentication is off; an error naming the file when its
    /// keys cannot be read.
    pub fn from_args(args: &AuthArgs) -> anyhow::Result<Option<Authenticator>> {
        let Some(path) = &args.auth_jwt_keys else {
            return Ok(None);
        };
        let keys = read_keys(path).with_context(|| format!("reading the JWT keys of {}", path.display()))?;
        tracing::info!(keys = keys.keys.len(), file = %path.display(), "voter tokens required");
        Ok(Some(Authenticator {
            path: path.clone(),
            issuer: args.auth_jwt_issuer.clone(),
            audience: args.auth_jwt_audience.clone(),
            keys: RwLock::new(Arc::new(keys)),
            epoch: Instant::now(),
            checked_ms: AtomicU64::new(0),
        }))
    }

    /// The voter of a request, from the value of its `Authorization` header
    /// (HTTP) or `authorization` metadata (gRPC).
    pub fn verify(&self, authorization: Option<&[u8]>) -> Result<Voter, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| AuthError::Malformed)?;
        let token = match value.trim().split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(AuthError::Malformed),
        };
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        self.refresh();
        let keys = self.current();
        let (key, algorithm) = header
            .kid
            .as_deref()
            .and_then(|kid| keys.keys.get(kid))
            .ok_or(AuthError::UnknownKid)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation(*algorithm))
            .map_err(|e| AuthError::of(e.kind()))?;
        ident("voter", &data.claims.sub)
            .map(Voter)
            .map_err(|_| AuthError::Malformed)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Rereads the file when it changed, at most once every [`RECHECK`].
    fn refresh(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.checked_ms.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= RECHECK.as_millis() as u64 || last == 0;
        // One request looks; the others go on with the keys they have.
        if !due
            || self
                .checked_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let stamp = match stamp_of(&self.path) {
            Ok(stamp) => stamp,
            Err(e) => {
                tracing::warn!(error = %e, file = %self.path.display(), "JWT keys file unreadable; keeping the loaded keys");
                return;
            }
        };
        if stamp == self.current().stamp {
            return;
        }
        match read_keys(&self.path) {
            Ok(keys) => {
                tracing::info!(keys = keys.keys.len(), file = %self.path.display(), "JWT keys reloaded");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), file = %self.path.display(), "JWT keys file invalid; keeping the loaded keys");
                // Not read again until it changes once more.
                let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
                *keys = Arc::new(KeySet {
                    keys: keys.keys.clone(),
                    stamp,
                });
            }
        }
    }
}

fn stamp_of(path: &Path) -> std::io::Result<(Option<SystemTime>, u64)> {
    let metadata = std::fs::metadata(path)?;
    Ok((metadata.modified().ok(), metadata.len()))
}

fn read_keys(path: &Path) -> anyhow::Result<KeySet> {
    // Stamped before reading: a write in between is seen as a change next time.
    let stamp = stamp_of(path)?;
    let text = std::fs::read(path)?;
    let set: JwkSet = serde_json::from_slice(&text).context("not a JWKS (a JSON {\"keys\": [...]})")?;
    let mut keys = HashMap::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let kid = jwk
            .common
            .key_id
            .clone()
            .with_context(|| format!("key {index} has no kid"))?;
        let key = decoding_key(jwk).with_context(|| format!("key {kid:?}"))?;
        anyhow::ensure!(keys.insert(kid.clone(), key).is_none(), "two keys have the kid {kid:?}");
    }
    if keys.is_empty() {
        // A placeholder (the manifests ship one): the ingress runs, and every token is refused
        // (unknown_kid) until the front-end's keys are in the file, which is reread when it changes.
        tracing::warn!(path = %path.display(), "the JWKS holds no key: every vote is refused until keys are added");
    }
    Ok(KeySet { keys, stamp })
}

/// The key and the one algorithm it verifies: Ed25519 (EdDSA), EC P-256
/// (ES256) or RSA (RS256). A JWK that names another `alg` is refused.
fn decoding_key(jwk: &Jwk) -> anyhow::Result<(DecodingKey, Algorithm)> {
    let (algorithm, named) = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            (Algorithm::EdDSA, KeyAlgorithm::EdDSA)
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        _ => anyhow::bail!("unsupported key type: use Ed25519 (OKP), EC P-256 or RSA"),
    };
    if let Some(alg) = jwk.common.key_algorithm {
        anyhow::ensure!(
            alg == named,
            "its alg {alg:?} is not {named:?}, the one its type allows here"
        );
    }
    Ok((DecodingKey::from_jwk(jwk)?, algorithm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_voter_fills_in_an_anonymous_vote_and_refuses_another_voter() {
        let rules = crate::vote::Rules::default();
        let voter = Voter("ana".into());
        let anonymous = Vote::new("Alux Nahual", "Conquista", 1982, 9.0, &rules);
        let bound = voter.bind(anonymous.clone()).unwrap().unwrap();
        assert_eq!(bound.voter.as_deref(), Some("ana"));
        let own = anonymous.clone().unwrap().with_ids(Some("ana"), Some("r1"));
        let bound = voter.bind(own).unwrap().unwrap();
        assert_eq!(
            (bound.voter.as_deref(), bound.request_id.as_deref()),
            (Some("ana"), Some("r1"))
        );
        let other = anonymous.unwrap().with_ids(Some("bea"), None);
        assert!(voter.bind(other).is_err(), "another voter");
        let invalid = Vote::new("", "Conquista", 1982, 9.0, &rules);
        assert!(voter.bind(invalid).unwrap().is_err(), "an invalid vote stays invalid");
    }

    #[test]
    fn a_header_that_is_not_a_bearer_jwt_is_malformed_and_none_is_missing() {
        let dir = std::env::temp_dir().join(format!("votestream-auth-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwks.json");
        // An Ed25519 public key (RFC 8037, appendix A.2).
        std::fs::write(
            &path,
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
        )
        .unwrap();
        let args = AuthArgs {
            auth_jwt_keys: Some(path),
            auth_jwt_issuer: None,
            auth_jwt_audience: None,
        };
        let auth = Authenticator::from_args(&args).unwrap().expect("on");
        assert_eq!(auth.verify(None), Err(AuthError::Missing));
        for header in ["Basic dXNlcjpwdw==", "Bearer", "Bearer not.a.jwt", "Bearer a.b"] {
            assert_eq!(
                auth.verify(Some(header.as_bytes())),
                Err(AuthError::Malformed),
                "{header}"
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_empty_key_set_starts_and_refuses_every_token_as_unknown() {
        let dir = std::env::temp_dir().join(format!("votestream-auth-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwks.json");
        std::fs::write(&path, r#"{"keys": []}"#).unwrap();
        let args = AuthArgs {
            auth_jwt_keys: Some(path),
            auth_jwt_issuer: None,
            auth_jwt_audience: None,
        };
        let auth = Authenticator::from_args(&args).unwrap().expect("on");
        // A well-formed token header naming a kid the set does not have.
        let token = "Bearer eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.e30.c2ln";
        assert_eq!(auth.verify(Some(token.as_bytes())), Err(AuthError::UnknownKid));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn only_ed25519_p256_and_rsa_keys_load_each_with_its_own_algorithm() {
        let parse = |jwk: &str| decoding_key(&serde_json::from_str::<Jwk>(jwk).unwrap());
        assert!(
            parse(r#"{"kty":"oct","k":"c2VjcmV0","kid":"h"}"#).is_err(),
            "HMAC secrets"
        );
        assert!(
            parse(r#"{"kty":"OKP","crv":"Ed25519","kid":"e","alg":"RS256","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#)
                .is_err(),
            "an alg other than the key type's"
        );
        assert!(
            parse(r#"{"kty":"OKP","crv":"Ed25519","kid":"e","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#)
                .is_ok()
        );
    }
}
