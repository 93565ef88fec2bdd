//! What both routes do once a request is decoded into votes (each already
//! validated by [`crate::vote`]): check the batch length, stamp the valid
//! votes, produce them concurrently, wait for Kafka, and count every outcome.
//! The routes only translate requests in and outcomes out, so gRPC and HTTP
//! cannot drift apart.

use chrono::Utc;

use crate::contest::{Phase, VotingWindow};

use super::metrics::Metrics;
use super::producer::{ProduceError, VoteProducer};
use crate::vote::{FieldError, Route, Rules, Vote, VoteRecord};

/// Why a request was not (wholly) accepted; each route maps it to its status.
#[derive(Debug, thiserror::Error)]
pub enum CastError {
    #[error("{0}")]
    Invalid(FieldError),
    #[error("a batch holds at most {max} votes; this one holds {len}")]
    BatchTooLong { len: usize, max: usize },
    #[error("a batch must hold at least one vote")]
    EmptyBatch,
    /// Outside the voting window: before it opens.
    #[error("voting has not opened yet: it opens at {0}")]
    NotOpen(String),
    /// Outside the voting window: after it closed.
    #[error("voting closed at {0}")]
    Closed(String),
    /// Kafka acknowledged none of the request's valid votes.
    #[error("{0}")]
    Unavailable(ProduceError),
}

impl CastError {
    /// The stable code of a window refusal (the HTTP error, the metrics reason).
    pub fn code(&self) -> &'static str {
        match self {
            CastError::Invalid(_) => "invalid_vote",
            CastError::BatchTooLong { .. } => "batch_too_long",
            CastError::EmptyBatch => "empty_batch",
            CastError::NotOpen(_) => "voting_not_open",
            CastError::Closed(_) => "voting_closed",
            CastError::Unavailable(e) => e.code(),
        }
    }
}

/// The fate of one item of a batch.
#[derive(Debug)]
pub enum Outcome {
    Accepted(VoteRecord),
    Rejected(FieldError),
    /// Valid, but Kafka did not acknowledge it while it acknowledged others.
    Unavailable(ProduceError),
}

pub struct Intake {
    producer: VoteProducer,
    metrics: Metrics,
    rules: Rules,
    window: VotingWindow,
    max_batch: usize,
}

impl Intake {
    pub fn new(
        producer: VoteProducer,
        metrics: Metrics,
        rules: Rules,
        window: VotingWindow,
        max_batch: usize,
    ) -> Intake {
        Intake {
            producer,
            metrics,
            rules,
            window,
            max_batch,
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn producer(&self) -> &VoteProducer {
        &self.producer
    }

    /// Refuses (and counts as refused) an empty or over-long batch.
    fn check_batch_len(&self, route: Route, len: usize) -> Result<(), CastError> {
        let (refused, reason) = match len {
            0 => (CastError::EmptyBatch, "empty_batch"),
            len if len > self.max_batch => (
                CastError::BatchTooLong {
                    len,
                    max: self.max_batch,
                },
                "batch_too_long",
            ),
            _ => return Ok(()),
        };
        self.metrics.request_refused(route, reason);
        Err(refused)
    }

    /// Refuses (and counts as refused) a request outside the voting window.
    fn check_window(&self, route: Route, now: chrono::DateTime<Utc>) -> Result<(), CastError> {
        let instant = |t: Option<chrono::DateTime<Utc>>| t.map(|t| crate::vote::format_instant(&t)).unwrap_or_default();
        let refused = match self.window.phase(now) {
            Phase::Open => return Ok(()),
            Phase::NotOpen => CastError::NotOpen(instant(self.window.opens_at)),
            Phase::Closed => CastError::Closed(instant(self.window.closes_at)),
        };
        self.metrics.request_refused(route, refused.code());
        Err(refused)
    }

    /// One vote: produced if valid; the record once Kafka has it.
    pub async fn cast_one(&self, route: Route, vote: Result<Vote, FieldError>) -> Result<VoteRecord, CastError> {
        let now = Utc::now();
        self.check_window(route, now)?;
        let vote = vote.map_err(|e| {
            self.metrics.rejected(route, e.problem.code());
            CastError::Invalid(e)
        })?;
        let record = vote.stamp(route, now);
        let _in_flight = self.metrics.in_flight(route, 1);
        match self.producer.send(&record).await {
            Ok(latency) => {
                self.metrics.produce_latency(route, latency);
                self.metrics.accepted(route, 1);
                Ok(record)
            }
            Err(e) => {
                self.metrics.rejected(route, e.code());
                Err(CastError::Unavailable(e))
            }
        }
    }

    /// A batch: every valid vote is produced, all at once, and the outcome of
    /// each item is reported in order. Fails whole (`Unavailable`) only when
    /// there were valid votes and Kafka acknowledged none of them.
    ///
    /// `votes` validates lazily, so an over-long batch is refused before any
    /// of its items is looked at.
    pub async fn cast_batch<I>(&self, route: Route, votes: I) -> Result<Vec<Outcome>, CastError>
    where
        I: ExactSizeIterator<Item = Result<Vote, FieldError>>,
    {
        self.check_batch_len(route, votes.len())?;
        let received_at = Utc::now();
        self.check_window(route, received_at)?;
        let items: Vec<Result<VoteRecord, FieldError>> =
            votes.map(|vote| vote.map(|v| v.stamp(route, received_at))).collect();
        let records: Vec<&VoteRecord> = items.iter().filter_map(|item| item.as_ref().ok()).collect();
        let results = {
            let _in_flight = self.metrics.in_flight(route, records.len());
            self.producer.send_all(&records).await
        };
        let mut outcomes: Vec<Outcome> = items
            .into_iter()
            .map(|item| match item {
                Ok(record) => Outcome::Accepted(record),
                Err(e) => {
                    self.metrics.rejected(route, e.problem.code());
                    Outcome::Rejected(e)
                }
            })
            .collect();
        // `results` follows the valid items in order, so it pairs with the slots holding a record.
        let produced = outcomes.iter_mut().filter(|o| matches!(o, Outcome::Accepted(_)));
        let mut accepted = 0;
        let mut first_failure = None;
        for (slot, result) in produced.zip(results) {
            match result {
                Ok(latency) => {
                    self.metrics.produce_latency(route, latency);
                    accepted += 1;
                }
                Err(e) => {
                    self.metrics.rejected(route, e.code());
                    first_failure.get_or_insert_with(|| e.clone());
                    *slot = Outcome::Unavailable(e);
                }
            }
        }
        self.metrics.accepted(route, accepted);
        match first_failure {
            Some(e) if accepted == 0 => Err(CastError::Unavailable(e)),
            _ => Ok(outcomes),
        }
    }
}
