//! Where each assigned partition stands: what was read and handed to the
//! sinks, which of its poison records an earlier reader dead-lettered, and
//! which offsets both sinks confirmed (to commit). One entry per partition,
//! so an assignment, a revoke and a rewind each change all of it at once.

use std::collections::BTreeMap;

use crate::consumer::batch::Batch;
use crate::consumer::commit::CommitTracker;
use crate::consumer::rebalance::PartitionStart;

/// The partitions this reader owns, and the batches in flight over them.
#[derive(Debug, Default)]
pub(super) struct Partitions {
    owned: BTreeMap<i32, Partition>,
    commits: CommitTracker,
}

#[derive(Debug)]
struct Partition {
    reading: Reading,
    /// The offset to commit (Kafka's convention: the next to read) once both
    /// sinks confirmed every batch before it; `None` until a batch is.
    committable: Option<i64>,
    /// `committable` moved since the last periodic commit.
    uncommitted: bool,
}

/// Where reading a partition stands; set anew wherever reading (re)starts.
#[derive(Debug, Clone, Copy)]
struct Reading {
    /// The last offset handed to the sinks (one before the start until a batch is).
    handed_out: i64,
    /// The lowest offset still to be read: a record below it (fetched before
    /// a seek) is not taken twice.
    next_to_read: i64,
    /// What Redis had applied at the start: poison records at or below it
    /// were dead-lettered before and are not sent again.
    redis_stored: i64,
}

impl From<&PartitionStart> for Reading {
    fn from(s: &PartitionStart) -> Reading {
        Reading {
            handed_out: s.start - 1,
            next_to_read: s.start,
            redis_stored: s.redis_stored,
        }
    }
}

impl Partitions {
    /// Starts reading each partition at its start. A partition already owned
    /// keeps what it may commit: that stays true wherever reading restarts.
    pub fn assign(&mut self, starts: &[PartitionStart]) {
        for s in starts {
            let reading = Reading::from(s);
            self.owned
                .entry(s.partition)
                .and_modify(|p| p.reading = reading)
                .or_insert(Partition {
                    reading,
                    committable: None,
                    uncommitted: false,
                });
        }
    }

    /// Forgets partitions the group took away, with their batches in flight:
    /// another reader owns them now, so nothing more is read or committed for them.
    pub fn revoke(&mut self, partitions: &[i32]) {
        self.commits.forget(partitions.iter().copied());
        for p in partitions {
            self.owned.remove(p);
        }
    }

    /// After a refused batch, once nothing is in flight: the batches handed
    /// out so far will never be confirmed, and reading starts again at `starts`.
    pub fn rewind(&mut self, starts: &[PartitionStart]) {
        self.commits.clear();
        self.assign(starts);
    }

    /// Whether a record just read is to be taken: its partition is ours and it
    /// was not taken before. If so, reading the partition continues after it.
    pub fn take(&mut self, partition: i32, offset: i64) -> bool {
        match self.owned.get_mut(&partition) {
            Some(p) if offset >= p.reading.next_to_read => {
                p.reading.next_to_read = offset + 1;
                true
            }
            _ => false,
        }
    }

    /// Whether a poison record was dead-lettered before (by whoever counted it in Redis).
    pub fn dead_lettered_before(&self, partition: i32, offset: i64) -> bool {
        self.owned
            .get(&partition)
            .is_some_and(|p| offset <= p.reading.redis_stored)
    }

    /// Records that a batch takes `partition` up to `last`; returns the last
    /// offset handed out before it (`None` for a partition not owned).
    pub fn hand_out(&mut self, partition: i32, last: i64) -> Option<i64> {
        let p = self.owned.get_mut(&partition)?;
        Some(std::mem::replace(&mut p.reading.handed_out, last))
    }

    /// A batch went to the sinks: its offsets become committable once both
    /// confirm it and every batch before it.
    pub fn dispatched(&mut self, batch: &Batch) {
        self.commits
            .dispatched(batch.seq, batch.ranges.iter().map(|r| (r.partition, r.last)));
    }

    /// Both sinks wrote batch `seq`; returns whether an offset became committable.
    pub fn confirmed(&mut self, seq: u64) -> bool {
        let advanced = self.commits.confirmed(seq);
        for (partition, next) in &advanced {
            if let Some(p) = self.owned.get_mut(partition) {
                p.committable = Some(*next);
                p.uncommitted = true;
            }
        }
        !advanced.is_empty()
    }

    /// The committable offsets that moved since the last call (empty when a
    /// revoke took every partition that had).
    pub fn take_uncommitted(&mut self) -> BTreeMap<i32, i64> {
        let mut offsets = BTreeMap::new();
        for (&partition, p) in &mut self.owned {
            if std::mem::take(&mut p.uncommitted)
                && let Some(next) = p.committable
            {
                offsets.insert(partition, next);
            }
        }
        offsets
    }

    /// After a rebalance, whose commits in flight the broker may have
    /// refused: every committable offset goes out again with the next commit
    /// (a commit is idempotent; the broker keeps the latest).
    pub fn recommit_all(&mut self) {
        for p in self.owned.values_mut() {
            p.uncommitted |= p.committable.is_some();
        }
    }

    /// Every committable offset, committed once more at shutdown.
    pub fn committable(&self) -> BTreeMap<i32, i64> {
        self.owned
            .iter()
            .filter_map(|(&partition, p)| Some((partition, p.committable?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::consumer::batch::{Batcher, Entry};

    fn start(partition: i32, start: i64, redis_stored: i64) -> PartitionStart {
        PartitionStart {
            partition,
            start,
            redis_stored,
        }
    }

    /// Hands out a batch of `(partition, offset)` records as the reader does
    /// (each partition's first and last offsets are enough for its range).
    fn dispatch(parts: &mut Partitions, seq: u64, records: &[(i32, i64)]) -> Batch {
        let mut batcher = Batcher::new(100, Duration::from_secs(1));
        for &(partition, offset) in records {
            let entry = Entry {
                partition,
                offset,
                vote: None,
            };
            batcher.push(entry, Instant::now());
        }
        let batch = batcher.take(seq, "votes", |p, last| parts.hand_out(p, last));
        parts.dispatched(&batch);
        batch
    }

    #[test]
    fn an_assigned_partition_is_read_from_its_start_each_record_once() {
        let mut parts = Partitions::default();
        parts.assign(&[start(0, 10, 9)]);
        assert!(!parts.take(0, 9), "before the start");
        assert!(parts.take(0, 10));
        assert!(!parts.take(0, 10), "already taken");
        assert!(parts.take(0, 12), "a gap (compaction, transactions) is fine");
        assert!(!parts.take(0, 11));
        assert!(!parts.take(1, 0), "not ours");
    }

    #[test]
    fn after_a_rebalance_every_committable_offset_goes_out_again() {
        let mut parts = Partitions::default();
        parts.assign(&[start(0, 0, -1), start(1, 0, -1), start(2, 0, -1)]);
        dispatch(&mut parts, 1, &[(0, 0), (0, 4), (1, 0), (1, 2)]);
        assert!(parts.confirmed(1));
        assert_eq!(parts.take_uncommitted(), BTreeMap::from([(0, 5), (1, 3)]));
        assert!(parts.take_uncommitted().is_empty(), "nothing moved since");
        // A rebalance may have refused that commit, and no batch may come
        // again for these partitions: the retry must not wait for one.
        parts.recommit_all();
        assert_eq!(parts.take_uncommitted(), BTreeMap::from([(0, 5), (1, 3)]));
    }

    #[test]
    fn poison_records_up_to_what_redis_had_applied_were_dead_lettered_before() {
        let mut parts = Partitions::default();
        parts.assign(&[start(0, 5, 9), start(1, 0, -1)]);
        assert!(parts.dead_lettered_before(0, 9));
        assert!(!parts.dead_lettered_before(0, 10));
        assert!(!parts.dead_lettered_before(1, 0));
    }

    #[test]
    fn each_batch_starts_where_the_previous_one_ended() {
        let mut parts = Partitions::default();
        parts.assign(&[start(0, 10, 9)]);
        assert_eq!(dispatch(&mut parts, 1, &[(0, 10), (0, 14)]).ranges[0].prev, 9);
        assert_eq!(dispatch(&mut parts, 2, &[(0, 15), (0, 19)]).ranges[0].prev, 14);
        assert_eq!(parts.hand_out(1, 5), None, "not ours");
    }

    #[test]
    fn confirmed_offsets_are_committed_once_periodically_and_all_at_shutdown() {
        let mut parts = Partitions::default();
        parts.assign(&[start(0, 0, -1), start(1, 0, -1)]);
        dispatch(&mut parts, 1, &[(0, 0), (0, 9)]);
        dispatch(&mut parts, 2, &[(0, 10), (0, 19), (1, 0), (1, 4)]);
        assert!(parts.confirmed(2), "partition 1 has nothing earlier in flight");
        assert_eq!(parts.take_uncommitted(), BTreeMap::from([(1, 5)]));
        assert_eq!(parts.take_uncommitted(), BTreeMap::new(), "committed already");
        assert!(parts.confirmed(1));
        assert_eq!(parts.take_uncommitted(), BTreeMap::from([(0, 20)]));
        assert_eq!(parts.committable(), BTreeMap::from([(0, 20), (1, 5)]));
    }

    #[test]
    fn a_revoked_partition_is_neither_read_nor_committed() {
        let mut parts = Partitions::default();
        parts.assign(&[start(0, 0, -1), start(1, 0, -1)]);
        dispatch(&mut parts, 1, &[(0, 0), (0, 9), (1, 0), (1, 9)]);
        assert!(parts.confirmed(1));
        dispatch(&mut parts, 2, &[(0, 10), (0, 19), (1, 10), (1, 19)]);
        parts.revoke(&[1]);
        assert!(!parts.take(1, 20));
        assert!(parts.confirmed(2));
        assert_eq!(parts.take_uncommitted(), BTreeMap::from([(0, 20)]));
        assert_eq!(parts.committable(), BTreeMap::from([(0, 20)]));
    }

    #[test]
    fn a_partition_assigned_again_reads_from_its_new_start_and_keeps_what_it_may_commit() {
        let mut parts = Partitions::default();
        parts.assign(&[start(0, 0, -1)]);
        dispatch(&mut parts, 1, &[(0, 0), (0, 9)]);
        assert!(parts.confirmed(1));
        parts.assign(&[start(0, 5, 9)]);
        assert!(parts.take(0, 5));
        assert_eq!(parts.committable(), BTreeMap::from([(0, 10)]));
        assert_eq!(parts.take_uncommitted(), BTreeMap::from([(0, 10)]));
    }

    #[test]
    fn a_rewind_reads_again_from_the_new_starts_and_never_commits_what_was_in_flight() {
        let mut parts = Partitions::default();
        parts.assign(&[start(0, 0, -1)]);
        dispatch(&mut parts, 1, &[(0, 0), (0, 9)]);
        assert!(parts.confirmed(1));
        dispatch(&mut parts, 2, &[(0, 10), (0, 19)]);
        assert!(parts.take(0, 20));
        // Redis refused batch 2: it had only counted up to offset 4.
        parts.rewind(&[start(0, 5, 4)]);
        assert!(parts.take(0, 5), "read again");
        assert!(!parts.dead_lettered_before(0, 5));
        assert!(!parts.confirmed(2), "the refused batch never commits");
        assert_eq!(dispatch(&mut parts, 3, &[(0, 5), (0, 9)]).ranges[0].prev, 4);
        assert_eq!(parts.committable(), BTreeMap::from([(0, 10)]), "confirmed before");
    }
}
