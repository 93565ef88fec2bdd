//! What both routes do once a request is decoded into votes (each already
//! validated by [`crate::vote`]): check the batch length, stamp the valid
//! votes, produce them concurrently, wait for Kafka, and count every outcome.
//! The routes only translate requests in and outcomes out, so gRPC and HTTP
//! cannot drift apart. Before the body, [`Intake::admit`] applies the
//! address limit and the voter token; before producing, the token's voter is
//! bound to the votes and the voter limit and load shedding apply.

use chrono::Utc;

use crate::contest::{Phase, VotingWindow};

use super::auth::{AuthError, Authenticator, Voter, VoterMismatch};
use super::limits::{Limited, Limits};
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
    /// No valid voter token (auth.rs).
    #[error("{0}")]
    Unauthenticated(AuthError),
    /// A vote names another voter than its token.
    #[error("a vote's voter is not the token's subject")]
    VoterMismatch,
    /// Past a rate limit (limits.rs).
    #[error("too many requests for this {}: retry in {} s", .0.scope.as_str(), .0.retry_after_secs())]
    RateLimited(Limited),
    /// The producer's queue is near full: refused before queueing.
    #[error("the ingress is overloaded: Kafka is not keeping up; retry shortly")]
    Overloaded,
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
            CastError::Unauthenticated(_) => "unauthorized",
            CastError::VoterMismatch => VoterMismatch::CODE,
            CastError::RateLimited(_) => "rate_limited",
            CastError::Overloaded => "overloaded",
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
    auth: Option<Authenticator>,
    limits: Limits,
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
            auth: None,
            limits: Limits::default(),
        }
    }

    /// The same intake behind voter tokens (when `auth` is set) and limits.
    pub fn guarded(self, auth: Option<Authenticator>, limits: Limits) -> Intake {
        Intake { auth, limits, ..self }
    }

    /// Admits a request before its body is looked at: the client address
    /// within its rate limit, then, with authentication on, the voter of its
    /// token (`authorization`: the header's or metadata's value).
    pub fn admit(
        &self,
        route: Route,
        peer: Option<std::net::IpAddr>,
        authorization: Option<&[u8]>,
    ) -> Result<Option<Voter>, CastError> {
        self.limits
            .check_ip(peer)
            .map_err(|limited| self.limited(route, limited))?;
        let Some(auth) = &self.auth else { return Ok(None) };
        auth.verify(authorization).map(Some).map_err(|e| {
            self.metrics.auth_refused(route, e.reason());
            CastError::Unauthenticated(e)
        })
    }

    fn limited(&self, route: Route, limited: Limited) -> CastError {
        self.metrics.rate_limited(route, limited.scope);
        CastError::RateLimited(limited)
    }

    /// The votes as cast by the token's voter (none: as sent). Refuses the
    /// request whole when a vote names another voter, while the producer's
    /// queue is near full, or past a voter's rate.
    fn guard_votes(
        &self,
        route: Route,
        voter: Option<&Voter>,
        votes: Vec<Result<Vote, FieldError>>,
    ) -> Result<Vec<Result<Vote, FieldError>>, CastError> {
        let votes = match voter {
            None => votes,
            Some(voter) => votes
                .into_iter()
                .map(|vote| voter.bind(vote))
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    self.metrics.auth_refused(route, VoterMismatch::CODE);
                    CastError::VoterMismatch
                })?,
        };
        let valid = || votes.iter().filter_map(|vote| vote.as_ref().ok());
        if self.limits.should_shed(self.producer.pending(), valid().count()) {
            self.metrics.shed(route);
            return Err(CastError::Overloaded);
        }
        self.limits
            .check_voters(valid().filter_map(|vote| vote.voter.as_deref()))
            .map_err(|limited| self.limited(route, limited))?;
        Ok(votes)
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
    pub async fn cast_one(
        &self,
        route: Route,
        voter: Option<&Voter>,
        vote: Result<Vote, FieldError>,
    ) -> Result<VoteRecord, CastError> {
        let now = Utc::now();
        self.check_window(route, now)?;
        let vote = self
            .guard_votes(route, voter, vec![vote])?
            .pop()
            .expect("one vote in, one out");
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
    pub async fn cast_batch<I>(&self, route: Route, voter: Option<&Voter>, votes: I) -> Result<Vec<Outcome>, CastError>
    where
        I: ExactSizeIterator<Item = Result<Vote, FieldError>>,
    {
        self.check_batch_len(route, votes.len())?;
        let received_at = Utc::now();
        self.check_window(route, received_at)?;
        let votes = self.guard_votes(route, voter, votes.collect())?;
        let items: Vec<Result<VoteRecord, FieldError>> = votes
            .into_iter()
            .map(|vote| vote.map(|v| v.stamp(route, received_at)))
            .collect();
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
