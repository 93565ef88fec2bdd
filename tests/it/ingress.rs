//! Integration tests of the ingress against the local stack's Kafka. Each test
//! runs its own ingress on free ports and produces to its own topic.

mod auth;
mod bad_grpc;
mod bad_http;
mod contest;
mod delivery;
mod failures;
mod limits;
mod operations;
mod shutdown;
pub(crate) mod support;
