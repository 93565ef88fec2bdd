//! Which offsets may be committed. A batch is confirmed when both sinks have
//! written it; a partition's committed offset only moves past a prefix of
//! confirmed batches, so a later batch confirmed first never commits past an
//! earlier one still in flight.

use std::collections::{BTreeMap, VecDeque};

#[derive(Debug, Default)]
pub struct CommitTracker {
    /// Per partition, the batches covering it, in dispatch order.
    pending: BTreeMap<i32, VecDeque<Pending>>,
}

/// One dispatched batch's share of one partition.
#[derive(Debug)]
struct Pending {
    seq: u64,
    /// The last offset of the partition the batch covers.
    last: i64,
    /// Both sinks have written the batch.
    confirmed: bool,
}

impl CommitTracker {
    /// Records a dispatched batch: for each partition it covers, its last offset.
    pub fn dispatched(&mut self, seq: u64, last_offsets: impl IntoIterator<Item = (i32, i64)>) {
        for (partition, last) in last_offsets {
            self.pending.entry(partition).or_default().push_back(Pending {
                seq,
                last,
                confirmed: false,
            });
        }
    }

    /// Marks a batch confirmed by both sinks. Returns, for each partition whose
    /// committable position moved, the next offset to read (Kafka's commit convention).
    pub fn confirmed(&mut self, seq: u64) -> BTreeMap<i32, i64> {
        let mut advanced = BTreeMap::new();
        for (&partition, queue) in self.pending.iter_mut() {
            if let Some(batch) = queue.iter_mut().find(|b| b.seq == seq) {
                batch.confirmed = true;
            }
            while let Some(&Pending {
                last, confirmed: true, ..
            }) = queue.front()
            {
                queue.pop_front();
                advanced.insert(partition, last + 1);
            }
        }
        self.pending.retain(|_, q| !q.is_empty());
        advanced
    }

    /// Forgets partitions this reader no longer owns; what was confirmed has
    /// already been reported by [`confirmed`](Self::confirmed).
    pub fn forget(&mut self, partitions: impl IntoIterator<Item = i32>) {
        for p in partitions {
            self.pending.remove(&p);
        }
    }

    /// Forgets everything (after a rewind).
    pub fn clear(&mut self) {
        self.pending.clear();
    }

    #[cfg(test)]
    fn owns(&self, partition: i32) -> bool {
        self.pending.contains_key(&partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_confirmed_in_order_commits_past_its_last_offset() {
        let mut t = CommitTracker::default();
        t.dispatched(1, [(0, 9), (1, 4)]);
        assert_eq!(t.confirmed(1), BTreeMap::from([(0, 10), (1, 5)]));
        assert!(!t.owns(0));
    }

    #[test]
    fn a_later_batch_confirmed_first_does_not_commit_past_an_earlier_one() {
        let mut t = CommitTracker::default();
        t.dispatched(1, [(0, 9)]);
        t.dispatched(2, [(0, 19), (1, 5)]);
        t.dispatched(3, [(0, 29)]);
        // Batch 2 first: partition 1 has nothing earlier pending, partition 0 has batch 1.
        assert_eq!(t.confirmed(2), BTreeMap::from([(1, 6)]));
        assert_eq!(t.confirmed(3), BTreeMap::new());
        // Batch 1 releases 1, 2 and 3 on partition 0 at once.
        assert_eq!(t.confirmed(1), BTreeMap::from([(0, 30)]));
    }

    #[test]
    fn forgotten_partitions_are_never_committed() {
        let mut t = CommitTracker::default();
        t.dispatched(1, [(0, 9), (1, 9)]);
        t.forget([1]);
        assert_eq!(t.confirmed(1), BTreeMap::from([(0, 10)]));
        t.dispatched(2, [(0, 19)]);
        t.clear();
        assert_eq!(t.confirmed(2), BTreeMap::new());
    }
}
