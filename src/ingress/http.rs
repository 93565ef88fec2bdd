//! The HTTP route (actix-web): `POST /votes` takes one JSON vote object or an
//! array of them, beside the operational endpoints ([`crate::ops`]): healthy
//! unless the producer hit an error only a restart fixes, ready when Kafka
//! answers. Body checks happen in the order a client would fix them: content
//! type, size, JSON syntax, shape; then each vote is validated by
//! [`crate::vote`] and cast through the shared [`Intake`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, middleware, web};
use futures_util::StreamExt;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::auth::AuthError;
use super::intake::{CastError, Intake, Outcome};
use crate::config::IngressArgs;
use crate::ops::{self, Dependency, Probes, Readiness};
use crate::serving::{self, PublicListener};
use crate::vote::{FieldError, Problem, Route, Vote, format_instant, ident, kind_of};

/// Why `POST /votes` was not (wholly) accepted, with its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("Content-Type must be application/json, got {0}")]
    UnsupportedContentType(String),
    #[error("the body is over the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the body could not be read: {0}")]
    UnreadableBody(#[from] PayloadError),
    #[error("the body did not arrive within {limit_ms} ms")]
    BodyTimeout { limit_ms: u128 },
    #[error("malformed JSON: {0}")]
    MalformedJson(serde_json::Error),
    #[error("the body must be a vote object or an array of vote objects, got {0}")]
    NotObjectOrArray(&'static str),
    #[error(transparent)]
    Cast(#[from] CastError),
}

impl HttpError {
    /// A stable code for the error body and for metrics.
    fn code(&self) -> &'static str {
        match self {
            HttpError::UnsupportedContentType(_) => "unsupported_content_type",
            HttpError::BodyTooLarge { .. } => "body_too_large",
            HttpError::UnreadableBody(_) => "unreadable_body",
            HttpError::BodyTimeout { .. } => "body_timeout",
            HttpError::MalformedJson(_) => "malformed_json",
            HttpError::NotObjectOrArray(_) => "not_object_or_array",
            HttpError::Cast(e) => e.code(),
        }
    }

    /// The metrics label when the request is refused before any vote was
    /// counted; `None` for what the intake counted itself (votes, batch length).
    fn refusal_reason(&self) -> Option<&'static str> {
        match self {
            HttpError::Cast(_) => None,
            other => Some(other.code()),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<&'static str>,
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        match self {
            HttpError::UnsupportedContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            HttpError::Cast(CastError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Cast(CastError::NotOpen(_) | CastError::Closed(_)) => StatusCode::FORBIDDEN,
            HttpError::Cast(CastError::Unauthenticated(_)) => StatusCode::UNAUTHORIZED,
            HttpError::Cast(CastError::VoterMismatch) => StatusCode::FORBIDDEN,
            HttpError::Cast(CastError::RateLimited(_)) => StatusCode::TOO_MANY_REQUESTS,
            HttpError::Cast(CastError::Overloaded) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (field, problem, reason) = match self {
            HttpError::Cast(CastError::Invalid(e)) => (Some(e.field), Some(e.problem.code()), e.reason.clone()),
            HttpError::Cast(CastError::Unauthenticated(e)) => (None, None, e.reason().to_owned()),
            other => (None, None, other.to_string()),
        };
        let mut response = HttpResponse::build(self.status_code());
        if let HttpError::Cast(CastError::Unavailable(_) | CastError::Overloaded) = self {
            // Kafka outages are usually short; well-behaved clients back off at least this long.
            response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        if let HttpError::BodyTimeout { .. } = self {
            // What is left of a slow body is not worth reading: the connection goes.
            response.force_close();
        }
        if let HttpError::Cast(e) = self {
            guard_headers(e, &mut response);
        }
        response.json(ErrorBody {
            error: self.code(),
            reason,
            field,
            problem,
        })
    }
}

/// The headers of the refusals of voter tokens and limits (auth.rs, limits.rs).
fn guard_headers(e: &CastError, response: &mut actix_web::HttpResponseBuilder) {
    match e {
        // RFC 6750: a challenge, with error="invalid_token" when a token was sent.
        CastError::Unauthenticated(AuthError::Missing) => {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        CastError::Unauthenticated(_) => {
            response.insert_header((header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#));
        }
        CastError::RateLimited(limited) => {
            response.insert_header((header::RETRY_AFTER, limited.retry_after_secs()));
        }
        _ => {}
    }
}

#[derive(Serialize)]
struct AcceptedReply {
    id: Uuid,
    received_at: String,
}

#[derive(Serialize)]
struct BatchReply {
    accepted: usize,
    rejected: Vec<ItemRejection>,
    /// Valid items Kafka did not acknowledge while it acknowledged others: send them again.
    unavailable: Vec<ItemUnavailable>,
    /// One entry per item, in order: the vote id, or null when not accepted.
    ids: Vec<Option<Uuid>>,
}

#[derive(Serialize)]
struct ItemRejection {
    index: usize,
    field: &'static str,
    problem: &'static str,
    reason: String,
}

#[derive(Serialize)]
struct ItemUnavailable {
    index: usize,
    error: &'static str,
    reason: String,
}

impl BatchReply {
    fn new(outcomes: Vec<Outcome>) -> BatchReply {
        let mut reply = BatchReply {
            accepted: 0,
            rejected: Vec::new(),
            unavailable: Vec::new(),
            ids: Vec::with_capacity(outcomes.len()),
        };
        for (index, outcome) in outcomes.into_iter().enumerate() {
            let id = match outcome {
                Outcome::Accepted(record) => {
                    reply.accepted += 1;
                    Some(record.id)
                }
                Outcome::Rejected(e) => {
                    reply.rejected.push(ItemRejection {
                        index,
                        field: e.field,
                        problem: e.problem.code(),
                        reason: e.reason,
                    });
                    None
                }
                Outcome::Unavailable(e) => {
                    reply.unavailable.push(ItemUnavailable {
                        index,
                        error: e.code(),
                        reason: e.to_string(),
                    });
                    None
                }
            };
            reply.ids.push(id);
        }
        reply
    }
}

pub struct HttpState {
    intake: Arc<Intake>,
    max_body_bytes: usize,
    body_timeout: Duration,
    readiness_timeout: Duration,
}

/// What the handlers and the operational endpoints share (the admin server too).
pub fn state(intake: Arc<Intake>, args: &IngressArgs, body_timeout: Duration) -> web::Data<HttpState> {
    web::Data::new(HttpState {
        intake,
        max_body_bytes: args.max_body_bytes,
        body_timeout,
        readiness_timeout: args.readiness_timeout(),
    })
}

/// Builds the HTTP server on an already-bound listener, with TLS and the
/// cut-offs of `public`; `/healthz`, `/readyz` and `/metrics` are served here
/// unless `ops_elsewhere` (the admin port has them). It stops accepting when
/// `shutdown` resolves and gives in-flight requests the configured shutdown
/// timeout to finish.
pub fn server(
    listener: std::net::TcpListener,
    state: web::Data<HttpState>,
    args: &IngressArgs,
    public: &PublicListener,
    ops_elsewhere: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Server> {
    let votes_enabled = !args.no_http_votes;
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(middleware::from_fn(serving::refuse_over_cap))
            // Registers the state for every handler, not only the operational ones.
            .app_data(state.clone())
            .configure(|cfg| {
                if !ops_elsewhere {
                    ops::routes(state.clone())(cfg);
                }
                if votes_enabled {
                    // A resource, so other methods on /votes get 405 rather than 404.
                    cfg.service(web::resource("/votes").route(web::post().to(post_votes)));
                }
            })
    })
    .shutdown_signal(shutdown)
    .shutdown_timeout(args.shutdown_timeout_secs)
    .client_request_timeout(public.header_timeout)
    .tls_handshake_timeout(public.header_timeout)
    // Per worker: a hard bound under the process-wide cap that refuse_over_cap answers.
    .max_connections(public.cap.max())
    .on_connect(public.cap.on_connect());
    if let Some(workers) = args.http_workers {
        server = server.workers(workers);
    }
    let server = match &public.tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls.http())?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

async fn post_votes(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, HttpError> {
    cast(&request, payload, &state).await.inspect_err(|e| {
        if let Some(reason) = e.refusal_reason() {
            state.intake.metrics().request_refused(Route::Http, reason);
        }
    })
}

async fn cast(request: &HttpRequest, payload: web::Payload, state: &HttpState) -> Result<HttpResponse, HttpError> {
    let authorization = request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    let voter = state
        .intake
        .admit(Route::Http, request.peer_addr().map(|a| a.ip()), authorization)?;
    let voter = voter.as_ref();
    check_content_type(request)?;
    let body = tokio::time::timeout(state.body_timeout, read_body(request, payload, state.max_body_bytes))
        .await
        .map_err(|_| HttpError::BodyTimeout {
            limit_ms: state.body_timeout.as_millis(),
        })??;
    let value: Value = serde_json::from_slice(&body).map_err(HttpError::MalformedJson)?;
    let rules = state.intake.rules();
    let key = request.headers().get(IDEMPOTENCY_KEY);
    match &value {
        Value::Object(_) => {
            let vote = Vote::from_json(&value, rules).and_then(|vote| with_idempotency_key(vote, key));
            let record = state.intake.cast_one(Route::Http, voter, vote).await?;
            Ok(HttpResponse::Ok().json(AcceptedReply {
                id: record.id,
                received_at: format_instant(&record.received_at),
            }))
        }
        Value::Array(_) if key.is_some() => {
            state.intake.metrics().rejected(Route::Http, Problem::Conflict.code());
            Err(HttpError::Cast(CastError::Invalid(FieldError::new(
                "request_id",
                Problem::Conflict,
                "the Idempotency-Key header applies to a single vote; give each item of an array its own request_id",
            ))))
        }
        Value::Array(items) => {
            let votes = items.iter().map(|item| Vote::from_json(item, rules));
            let outcomes = state.intake.cast_batch(Route::Http, voter, votes).await?;
            Ok(HttpResponse::Ok().json(BatchReply::new(outcomes)))
        }
        other => Err(HttpError::NotObjectOrArray(kind_of(other))),
    }
}

/// The header a client names its request by, for a single vote: the vote's
/// `request_id` when the body has none (RFC draft "The Idempotency-Key HTTP
/// Header Field").
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `vote` with the `Idempotency-Key` header as its request id: refused when
/// the header is not valid text or the body names another request id.
fn with_idempotency_key(vote: Vote, key: Option<&HeaderValue>) -> Result<Vote, FieldError> {
    let Some(key) = key else { return Ok(vote) };
    let key = key.to_str().map_err(|_| {
        FieldError::new(
            "request_id",
            Problem::ForbiddenCharacter,
            "the Idempotency-Key header must be visible ASCII",
        )
    })?;
    let key = ident("request_id", key)?;
    match &vote.request_id {
        Some(body) if *body != key => Err(FieldError::new(
            "request_id",
            Problem::Conflict,
            "the body's request_id and the Idempotency-Key header differ",
        )),
        _ => Ok(Vote {
            request_id: Some(key),
            ..vote
        }),
    }
}

/// Accepts `application/json` with any parameters (JSON is UTF-8 by definition).
fn check_content_type(request: &HttpRequest) -> Result<(), HttpError> {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return Err(HttpError::UnsupportedContentType("no Content-Type".into()));
    };
    let essence = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    // Echo a bounded amount of what the client sent.
    Err(HttpError::UnsupportedContentType(format!(
        "{:?}",
        essence.chars().take(100).collect::<String>()
    )))
}

/// Reads the body, refusing it as soon as it is known to pass `limit`: from
/// Content-Length before reading anything, or while reading a chunked body.
async fn read_body(request: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, HttpError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(HttpError::BodyTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Err(HttpError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Probes for HttpState {
    /// A producer error librdkafka cannot recover from; a restart fixes it.
    fn failure(&self) -> Option<String> {
        self.intake.producer().fatal_error()
    }

    /// Kafka answers a metadata request for the votes topic in time.
    async fn readiness(&self) -> Readiness {
        let producer = self.intake.producer().clone();
        let timeout = self.readiness_timeout;
        // librdkafka's metadata call blocks its thread.
        let kafka = match web::block(move || producer.check_ready(timeout)).await {
            Ok(Ok(())) => true,
            Ok(Err(reason)) => {
                tracing::warn!(reason, "not ready: Kafka does not answer");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "not ready: the Kafka check did not run");
                false
            }
        };
        Readiness::of([(Dependency::Kafka, kafka)])
    }

    fn registry(&self) -> &Registry {
        self.intake.metrics().registry()
    }
}
