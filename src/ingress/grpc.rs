//! The gRPC route: `votes.v1.VoteService` (tonic), beside the standard health
//! service and server reflection, so grpcurl and other generic clients work
//! without the proto file.
//!
//! For many votes the service takes one batch message (`CastVotes`) rather
//! than a client stream: the reply pairs every item with its outcome, the
//! batch-length and message-size limits apply to one message, a failure
//! cannot leave a half-consumed stream, and it mirrors the HTTP array (same
//! limits, same per-item report), so load tools call it like any unary RPC.
//! The proto file says the same to client authors.
//!
//! A request whose message does not decode never reaches the handlers (tonic
//! answers it from the codec), so the service is wrapped in
//! [`CountMalformed`], which counts it as refused, as the HTTP route counts
//! malformed JSON.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::auth::Voter;
use super::codec;
use super::intake::{CastError, Intake, Outcome};
use crate::proto::vote_service_server::{VoteService, VoteServiceServer};
use crate::proto::{self, CastVoteReply, CastVotesReply, CastVotesRequest, ItemResult, Rejection, item_result};
use crate::serving::GrpcServing;
use crate::vote::{FieldError, Route, Vote, VoteRecord, format_instant};

impl From<CastError> for Status {
    fn from(e: CastError) -> Status {
        match &e {
            CastError::Invalid(field_error) => {
                // The field and the problem code also travel as metadata, so clients need not parse the message.
                let mut metadata = MetadataMap::new();
                metadata.insert("vote-field", MetadataValue::from_static(field_error.field));
                metadata.insert("vote-problem", MetadataValue::from_static(field_error.problem.code()));
                Status::with_metadata(tonic::Code::InvalidArgument, e.to_string(), metadata)
            }
            CastError::BatchTooLong { .. } | CastError::EmptyBatch => Status::invalid_argument(e.to_string()),
            CastError::Unavailable(_) => Status::unavailable(e.to_string()),
            CastError::NotOpen(_) | CastError::Closed(_) => Status::failed_precondition(e.to_string()),
            CastError::Unauthenticated(reason) => {
                // The reason travels as metadata, as the HTTP body's `reason`.
                let mut metadata = MetadataMap::new();
                metadata.insert("auth-reason", MetadataValue::from_static(reason.reason()));
                Status::with_metadata(tonic::Code::Unauthenticated, e.to_string(), metadata)
            }
            CastError::VoterMismatch => Status::permission_denied(e.to_string()),
            CastError::RateLimited(limited) => {
                let mut metadata = MetadataMap::new();
                metadata.insert("retry-after", MetadataValue::from(limited.retry_after_secs()));
                Status::with_metadata(tonic::Code::ResourceExhausted, e.to_string(), metadata)
            }
            CastError::Overloaded => Status::unavailable(e.to_string()),
        }
    }
}

/// The `votes.v1.VoteService` implementation.
pub struct VoteApi {
    intake: Arc<Intake>,
}

impl VoteApi {
    /// The address limit and the voter token of a call (intake.rs).
    fn admit<T>(&self, request: &Request<T>) -> Result<Option<Voter>, Status> {
        let authorization = request.metadata().get("authorization").map(|v| v.as_bytes());
        let peer = request.remote_addr().map(|a| a.ip());
        Ok(self.intake.admit(Route::Grpc, peer, authorization)?)
    }

    fn validate(&self, vote: &proto::Vote) -> Result<Vote, FieldError> {
        Vote::from_fields(
            vote.name.as_deref(),
            vote.album.as_deref(),
            vote.year.map(i64::from),
            vote.rank,
            vote.voter.as_deref(),
            vote.request_id.as_deref(),
            self.intake.rules(),
        )
    }
}

fn accepted(record: &VoteRecord) -> CastVoteReply {
    CastVoteReply {
        id: record.id.to_string(),
        received_at: format_instant(&record.received_at),
    }
}

#[tonic::async_trait]
impl VoteService for VoteApi {
    async fn cast_vote(&self, request: Request<proto::Vote>) -> Result<Response<CastVoteReply>, Status> {
        let voter = self.admit(&request)?;
        let vote = self.validate(request.get_ref());
        let record = self.intake.cast_one(Route::Grpc, voter.as_ref(), vote).await?;
        Ok(Response::new(accepted(&record)))
    }

    async fn cast_votes(&self, request: Request<CastVotesRequest>) -> Result<Response<CastVotesReply>, Status> {
        let voter = self.admit(&request)?;
        let votes = request.get_ref().votes.iter().map(|v| self.validate(v));
        let outcomes = self.intake.cast_batch(Route::Grpc, voter.as_ref(), votes).await?;
        let mut reply = CastVotesReply::default();
        for (index, outcome) in outcomes.into_iter().enumerate() {
            let outcome = match outcome {
                Outcome::Accepted(record) => {
                    reply.accepted += 1;
                    item_result::Outcome::Accepted(accepted(&record))
                }
                Outcome::Rejected(e) => {
                    reply.rejected += 1;
                    item_result::Outcome::Rejected(Rejection {
                        field: e.field.to_owned(),
                        reason: e.reason,
                        problem: e.problem.code().to_owned(),
                    })
                }
                Outcome::Unavailable(e) => {
                    reply.unavailable += 1;
                    item_result::Outcome::Unavailable(proto::Unavailable { reason: e.to_string() })
                }
            };
            reply.results.push(ItemResult {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                outcome: Some(outcome),
            });
        }
        Ok(Response::new(reply))
    }
}

/// The vote service, counting the requests refused before any handler ran:
/// a message the codec could not decode, or one over the size limit.
#[derive(Clone)]
struct CountMalformed {
    votes: VoteServiceServer<VoteApi>,
    intake: Arc<Intake>,
}

impl NamedService for CountMalformed {
    const NAME: &'static str = <VoteServiceServer<VoteApi> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for CountMalformed {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.votes, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let reply = self.votes.call(request);
        let intake = self.intake.clone();
        Box::pin(async move {
            let response = reply.await?;
            // tonic keeps the status it answered with in the response's extensions.
            if let Some(status) = response.extensions().get::<Status>() {
                if codec::is_malformed(status) {
                    intake.metrics().request_refused(Route::Grpc, "malformed_protobuf");
                } else if status.code() == tonic::Code::OutOfRange {
                    // tonic's answer to a message over --grpc-max-message-bytes
                    // (the handlers never answer OUT_OF_RANGE).
                    intake.metrics().request_refused(Route::Grpc, "message_too_large");
                }
            }
            Ok(response)
        })
    }
}

/// Serves the vote service, health and reflection on `listener`, with TLS
/// and the cut-offs of `serving`, until `shutdown` resolves; in-flight calls
/// then finish (tonic drains).
pub async fn serve(
    listener: TcpListener,
    intake: Arc<Intake>,
    max_message_bytes: usize,
    serving: GrpcServing,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<VoteServiceServer<VoteApi>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let votes = CountMalformed {
        votes: VoteServiceServer::new(VoteApi { intake: intake.clone() })
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
        intake,
    };
    let shutdown = async {
        shutdown.await;
        // Tell health-checking clients first, while the drain completes.
        health.set_not_serving::<VoteServiceServer<VoteApi>>().await;
    };
    // Sets TCP_NODELAY, as tonic does only on listeners it binds itself.
    let incoming = serving.incoming(listener);
    serving
        .builder()?
        .add_service(health_service)
        // v1 for current clients, v1alpha for older ones that only speak it.
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(votes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
