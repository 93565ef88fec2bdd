//! What votestream keeps in its stores, written down once: the MongoDB log
//! document and its indexes ([`mongo`]); the Redis key names, the consumer's
//! offsets field and the apply script with its typed arguments and replies
//! ([`redis`]). The consumer writes through these types, the logs app reads
//! through them and the tests build their fixtures with them, so a change to
//! the layout is one change here (DESIGN.md, "Redis keys" and "MongoDB").

pub mod mongo;
pub mod redis;
