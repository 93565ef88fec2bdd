//! votestream: a real-time vote pipeline. Votes arrive over gRPC and HTTP
//! (`ingress`), go through Kafka, are counted in Redis and logged in MongoDB by
//! an actor-based `consumer`, and are shown by the `logs` web app.
//! `main.rs` only parses the command line; everything runs from here so tests
//! drive the same code as the binary.

pub mod config;
pub mod consumer;
pub mod contest;
pub mod credentials;
pub mod ingress;
pub mod kafka_options;
pub mod log_entry;
pub mod logs;
pub mod ops;
pub mod recount;
pub mod schema;
pub mod secrets;
pub mod serving;
pub mod shutdown;
pub mod stores;
pub mod telemetry;
pub mod tls;
pub mod vote;

#[cfg(test)]
mod proptests;

/// Types generated from `proto/votes.proto`.
pub mod proto {
    tonic::include_proto!("votes.v1");

    /// Encoded descriptors, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("votes_descriptor");
}
