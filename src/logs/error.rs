//! What can go wrong while answering a request of the logs app, and the HTTP
//! status each case gets. Every error body is `{"error": "<sentence>"}`; the
//! details of a backend failure go to the server log, not to the client
//! (they can name internal hosts).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// A query parameter the client can fix.
    #[error("{0}")]
    BadRequest(String),
    #[error("MongoDB is unavailable; try again shortly")]
    MongoUnavailable { detail: String },
    /// The server ran a page out of its time: pages pause ([`super::pause`]).
    #[error(
        "MongoDB could not answer a page of logs within {timeout:?}; pages with these filters pause for {}s to spare its writes",
        whole_secs(*retry_after)
    )]
    PagesPaused { timeout: Duration, retry_after: Duration },
    #[error("Redis is unavailable; try again shortly")]
    RedisUnavailable { detail: String },
    #[error("too many live streams (at most {0}); try again later")]
    TooManyStreams(usize),
    /// A backend answered with data not in the documented shape.
    #[error("{message}")]
    Internal { message: &'static str, detail: String },
}

impl LogsError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        LogsError::BadRequest(message.into())
    }

    /// A log document this app cannot read.
    pub fn bad_document(detail: String) -> Self {
        LogsError::Internal {
            message: "a log document is not in the documented shape",
            detail,
        }
    }

    /// Classifies a MongoDB error. Data this app cannot read is internal;
    /// anything else between the app and the data (selection, network, pool,
    /// authentication, a server-side refusal) means the database is
    /// unavailable from here, which is what the client needs to know.
    pub fn from_mongo(e: mongodb::error::Error) -> Self {
        use mongodb::error::ErrorKind;
        match *e.kind {
            ErrorKind::BsonDeserialization(_)
            | ErrorKind::InvalidArgument { .. }
            | ErrorKind::InvalidResponse { .. } => LogsError::bad_document(e.to_string()),
            _ => LogsError::MongoUnavailable { detail: e.to_string() },
        }
    }

    /// Classifies a Redis error: a connection problem is unavailability, a
    /// reply of the wrong type (a counter that is not a number) is internal.
    pub fn from_redis(e: deadpool_redis::redis::RedisError) -> Self {
        if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped() {
            LogsError::RedisUnavailable { detail: e.to_string() }
        } else {
            LogsError::Internal {
                message: "a Redis counter is not in the documented shape",
                detail: e.to_string(),
            }
        }
    }

    pub fn from_redis_pool(e: deadpool_redis::PoolError) -> Self {
        match e {
            deadpool_redis::PoolError::Backend(e) => Self::from_redis(e),
            other => LogsError::RedisUnavailable {
                detail: other.to_string(),
            },
        }
    }

    /// What the server log gets beyond the client's sentence.
    pub fn detail(&self) -> Option<&str> {
        match self {
            LogsError::MongoUnavailable { detail }
            | LogsError::RedisUnavailable { detail }
            | LogsError::Internal { detail, .. } => Some(detail),
            LogsError::BadRequest(_) | LogsError::TooManyStreams(_) | LogsError::PagesPaused { .. } => None,
        }
    }
}

/// Whole seconds, rounded up: asking before a pause ends gets 503 again.
fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl ResponseError for LogsError {
    fn status_code(&self) -> StatusCode {
        match self {
            LogsError::BadRequest(_) => StatusCode::BAD_REQUEST,
            LogsError::MongoUnavailable { .. }
            | LogsError::PagesPaused { .. }
            | LogsError::RedisUnavailable { .. }
            | LogsError::TooManyStreams(_) => StatusCode::SERVICE_UNAVAILABLE,
            LogsError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let Some(detail) = self.detail() {
            tracing::warn!(status = status.as_u16(), error = %self, detail, "request failed");
        }
        let mut response = HttpResponse::build(status);
        response.insert_header((CACHE_CONTROL, "no-store"));
        if let LogsError::PagesPaused { retry_after, .. } = self {
            response.insert_header((RETRY_AFTER, whole_secs(*retry_after).to_string()));
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((RETRY_AFTER, "2"));
        }
        response.json(serde_json::json!({ "error": self.to_string() }))
    }
}
