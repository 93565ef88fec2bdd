//! Batches: the unit the reader hands to both sinks. A batch holds decoded
//! votes and the offsets of records that were dead-lettered (they carry no
//! vote but their offsets must advance), plus, per partition, the offset range
//! it covers and the offset just before it, so the Redis script can tell a
//! replay (skip) from a gap (Redis lost data).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::schema::redis::Outcome;
use crate::vote::VoteRecord;

/// One Kafka record as the sinks see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub partition: i32,
    pub offset: i64,
    /// `None` for a record that went to the dead-letter topic.
    pub vote: Option<VoteRecord>,
}

/// The offsets of one partition covered by a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    pub partition: i32,
    /// The offset the reader handed out just before this batch (-1 at the start of the log).
    pub prev: i64,
    pub first: i64,
    pub last: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Dispatch order within one reader incarnation.
    pub seq: u64,
    pub topic: String,
    pub entries: Vec<Entry>,
    pub ranges: Vec<PartitionRange>,
    /// What the Redis script decided for each vote, in the order of
    /// [`Batch::votes`]: set once it applied the batch, read by the Mongo
    /// logger, which writes the batch only after that.
    pub outcomes: OnceLock<Vec<Outcome>>,
}

pub type SharedBatch = Arc<Batch>;

impl Batch {
    pub fn votes(&self) -> impl Iterator<Item = (&Entry, &VoteRecord)> {
        self.entries.iter().filter_map(|e| e.vote.as_ref().map(|v| (e, v)))
    }

    pub fn vote_count(&self) -> usize {
        self.votes().count()
    }

    /// One write for the Mongo logger of several batches Redis has decided
    /// (small ones, formed while the load is light): their votes and
    /// outcomes in order, under the first one's `seq`. Dead letters and
    /// ranges, which only the reader and Redis use, are left out. A single
    /// batch is handed back as it is.
    pub fn merged(batches: &[SharedBatch]) -> SharedBatch {
        if let [one] = batches {
            return one.clone();
        }
        let first = batches.first().expect("at least one batch to merge");
        let entries = batches
            .iter()
            .flat_map(|b| b.entries.iter().filter(|e| e.vote.is_some()).cloned())
            .collect();
        // Unset unless every batch was decided, so the logger refuses it rather than misalign.
        let outcomes = batches
            .iter()
            .map(|b| b.outcomes.get())
            .collect::<Option<Vec<_>>>()
            .map(|all| all.into_iter().flatten().copied().collect::<Vec<_>>());
        Arc::new(Batch {
            seq: first.seq,
            topic: first.topic.clone(),
            entries,
            ranges: Vec::new(),
            outcomes: outcomes.map_or_else(OnceLock::new, OnceLock::from),
        })
    }
}

/// Whether the writes in flight leave room for an eager batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sinks {
    /// Redis has no batch left to decide.
    Idle,
    Busy,
}

/// Collects entries until a batch is due: full by count, old enough by time,
/// or, adaptively, as soon as the reader has nothing more ready while Redis
/// is idle. A trickle of votes then leaves at once instead of waiting out the
/// age limit; under a steady load the batch fills while Redis decides the one
/// before (its size follows Redis's pace, as with Nagle's algorithm); a
/// backlog (records always ready) forms full batches.
#[derive(Debug)]
pub struct Batcher {
    max_records: usize,
    max_wait: Duration,
    entries: Vec<Entry>,
    opened_at: Option<Instant>,
}

impl Batcher {
    pub fn new(max_records: usize, max_wait: Duration) -> Batcher {
        Batcher {
            max_records: max_records.max(1),
            max_wait,
            entries: Vec::new(),
            opened_at: None,
        }
    }

    pub fn push(&mut self, entry: Entry, now: Instant) {
        if self.entries.is_empty() {
            self.opened_at = Some(now);
        }
        self.entries.push(entry);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.max_records
    }

    /// When the open batch is due, whether full or not.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.max_wait)
    }

    pub fn is_due(&self, now: Instant) -> bool {
        self.is_full() || self.deadline().is_some_and(|d| now >= d)
    }

    /// Asked when no further record is ready to read: whether the batch
    /// leaves now. It does when due, or when it holds something and the
    /// sinks are idle (few enough writes in flight); while records are ready
    /// the reader takes them first, so a backlog fills batches to the brim.
    pub fn should_leave(&self, now: Instant, sinks: Sinks) -> bool {
        self.is_due(now) || (sinks == Sinks::Idle && !self.is_empty())
    }

    /// Keeps only the entries `keep` accepts (after a partition was revoked).
    pub fn retain(&mut self, keep: impl FnMut(&Entry) -> bool) {
        self.entries.retain(keep);
        if self.entries.is_empty() {
            self.opened_at = None;
        }
    }

    /// Drops everything collected (after a rewind the records are read again).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.opened_at = None;
    }

    /// Closes the open batch. `hand_out(partition, last)` is told, per
    /// partition, the last offset the batch hands out, and returns the last
    /// one handed out before it (`None` at first: the batch's first offset - 1).
    pub fn take(&mut self, seq: u64, topic: &str, mut hand_out: impl FnMut(i32, i64) -> Option<i64>) -> Batch {
        let entries = std::mem::take(&mut self.entries);
        self.opened_at = None;
        let mut spans: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for e in &entries {
            let span = spans.entry(e.partition).or_insert((e.offset, e.offset));
            span.0 = span.0.min(e.offset);
            span.1 = span.1.max(e.offset);
        }
        let ranges = spans
            .into_iter()
            .map(|(partition, (first, last))| {
                let before = hand_out(partition, last).unwrap_or(first - 1);
                PartitionRange {
                    partition,
                    prev: before,
                    first,
                    last,
                }
            })
            .collect();
        Batch {
            seq,
            topic: topic.to_owned(),
            entries,
            ranges,
            outcomes: OnceLock::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(partition: i32, offset: i64) -> Entry {
        Entry {
            partition,
            offset,
            vote: None,
        }
    }

    fn voted(partition: i32, offset: i64) -> Entry {
        let vote = crate::vote::Vote::new("Banda", "Álbum", 1999, 5.0, &crate::vote::Rules::default())
            .expect("a valid vote")
            .stamp(crate::vote::Route::Grpc, chrono::Utc::now());
        Entry {
            partition,
            offset,
            vote: Some(vote),
        }
    }

    fn decided(seq: u64, entries: Vec<Entry>, outcomes: Option<Vec<Outcome>>) -> SharedBatch {
        let mut b = Batcher::new(100, Duration::from_secs(60));
        let now = Instant::now();
        for e in entries {
            b.push(e, now);
        }
        let batch = b.take(seq, "votes", |_, _| None);
        if let Some(outcomes) = outcomes {
            batch.outcomes.set(outcomes).expect("unset");
        }
        Arc::new(batch)
    }

    #[test]
    fn merged_batches_keep_each_vote_beside_its_outcome_and_leave_dead_letters_out() {
        use Outcome::*;
        let one = decided(
            3,
            vec![voted(0, 10), entry(0, 11), voted(0, 12)],
            Some(vec![Counted, Changed]),
        );
        let two = decided(4, vec![voted(1, 5)], Some(vec![Duplicate]));
        let merged = Batch::merged(&[one.clone(), two]);
        assert_eq!(merged.seq, 3, "the first batch's seq");
        let positions: Vec<_> = merged.votes().map(|(e, _)| (e.partition, e.offset)).collect();
        assert_eq!(positions, [(0, 10), (0, 12), (1, 5)]);
        assert_eq!(merged.entries.len(), 3, "the dead letter is not carried");
        assert_eq!(merged.outcomes.get(), Some(&vec![Counted, Changed, Duplicate]));
        assert!(
            Arc::ptr_eq(&Batch::merged(std::slice::from_ref(&one)), &one),
            "one batch as it is"
        );
        let undecided = decided(5, vec![voted(2, 0)], None);
        assert_eq!(
            Batch::merged(&[one, undecided]).outcomes.get(),
            None,
            "not all decided: no outcomes"
        );
    }

    #[test]
    fn a_batch_is_due_when_it_holds_the_maximum_count() {
        let now = Instant::now();
        let mut b = Batcher::new(3, Duration::from_secs(60));
        b.push(entry(0, 0), now);
        b.push(entry(0, 1), now);
        assert!(!b.is_due(now));
        b.push(entry(0, 2), now);
        assert!(b.is_due(now));
    }

    #[test]
    fn a_batch_is_due_when_its_first_record_is_old_enough() {
        let now = Instant::now();
        let mut b = Batcher::new(100, Duration::from_millis(50));
        assert_eq!(b.deadline(), None);
        b.push(entry(0, 0), now);
        b.push(entry(0, 1), now + Duration::from_millis(40));
        assert_eq!(b.deadline(), Some(now + Duration::from_millis(50)));
        assert!(!b.is_due(now + Duration::from_millis(49)));
        assert!(b.is_due(now + Duration::from_millis(50)));
    }

    #[test]
    fn a_trickle_leaves_at_once_when_nothing_more_is_ready() {
        let now = Instant::now();
        let mut b = Batcher::new(1_000, Duration::from_millis(50));
        assert!(!b.should_leave(now, Sinks::Idle), "an empty batch never leaves");
        b.push(entry(0, 0), now);
        assert!(!b.is_due(now));
        assert!(
            b.should_leave(now, Sinks::Idle),
            "one vote and nothing behind it: it leaves now"
        );
    }

    #[test]
    fn under_load_a_batch_fills_while_the_sinks_are_busy() {
        let now = Instant::now();
        let mut b = Batcher::new(1_000, Duration::from_millis(50));
        b.push(entry(0, 0), now);
        b.push(entry(0, 1), now);
        assert!(!b.should_leave(now, Sinks::Busy), "writes in flight: keep collecting");
        assert!(b.should_leave(now, Sinks::Idle), "the sinks caught up: it leaves");
        assert!(
            b.should_leave(now + Duration::from_millis(50), Sinks::Busy),
            "the age limit holds whatever the sinks do"
        );
    }

    #[test]
    fn a_backlog_forms_full_batches() {
        let now = Instant::now();
        let mut b = Batcher::new(1_000, Duration::from_millis(50));
        // While records are ready the reader takes them without asking: the
        // batch is not due until it is full, whatever the sinks do.
        for offset in 0..999 {
            b.push(entry(0, offset), now);
            assert!(!b.is_due(now), "more records are ready: keep filling");
        }
        b.push(entry(0, 999), now);
        assert!(b.is_due(now) && b.should_leave(now, Sinks::Busy));
        assert_eq!(b.take(1, "votes", |_, _| None).entries.len(), 1_000);
    }

    #[test]
    fn taking_a_batch_records_each_partitions_range_and_previous_offset() {
        let now = Instant::now();
        let mut b = Batcher::new(100, Duration::from_millis(50));
        let mut prev = BTreeMap::from([(1, 9)]);
        for (p, o) in [(0, 0), (1, 10), (0, 1), (1, 11), (1, 12)] {
            b.push(entry(p, o), now);
        }
        let batch = b.take(7, "votes", |p, last| prev.insert(p, last));
        assert_eq!(batch.seq, 7);
        assert_eq!(
            batch.ranges,
            vec![
                PartitionRange {
                    partition: 0,
                    prev: -1,
                    first: 0,
                    last: 1
                },
                PartitionRange {
                    partition: 1,
                    prev: 9,
                    first: 10,
                    last: 12
                },
            ]
        );
        assert_eq!(prev, BTreeMap::from([(0, 1), (1, 12)]));
        assert!(b.is_empty());
        assert_eq!(b.deadline(), None);

        b.push(entry(0, 2), now);
        let next = b.take(8, "votes", |p, last| prev.insert(p, last));
        assert_eq!(
            next.ranges,
            vec![PartitionRange {
                partition: 0,
                prev: 1,
                first: 2,
                last: 2
            }]
        );
    }
}
