//! Integration tests, one binary (faster to build on 2 cores). They run
//! against the real local stack (`scripts/stack up`): Kafka, Redis and a
//! MongoDB-protocol server on 127.0.0.1. Each test isolates itself with its
//! own topic, Redis key prefix and Mongo database, and cleans up after itself.

mod bench;
mod common;
mod consumer;
mod contest;
mod fencing;
mod ingress;
mod listeners;
mod logs;
mod operations;
mod pipeline;
mod secure_stores;
mod smoke;
