//! Pre-aggregation of a batch for the Redis script: counts per band, album
//! and route and rank sums per album, summed in memory so one script call
//! applies a whole batch. Records at or below a partition's stored offset are
//! left out (they were counted before), which is how replays stay exact.

use std::collections::BTreeMap;

use super::batch::{Batch, Entry, PartitionRange};
use crate::log_entry::VoteItem;
use crate::schema::redis::{Deltas, Range, offsets_field};
use crate::vote::VoteRecord;

/// The votes of `batch` that Redis has not counted yet: those above
/// `applied[partition]` (all of them for a partition not in `applied`).
pub fn unapplied<'a, 'b>(
    batch: &'a Batch,
    applied: &'b BTreeMap<i32, i64>,
) -> impl Iterator<Item = (&'a Entry, &'a VoteRecord)> + use<'a, 'b> {
    batch
        .votes()
        .filter(|(entry, _)| applied.get(&entry.partition).is_none_or(|&done| entry.offset > done))
}

/// Aggregates `batch`, skipping records at or below `applied[partition]`
/// (what Redis already counted, learned from an earlier script answer).
/// Partitions entirely at or below it are left out.
pub fn aggregate<'a>(batch: &'a Batch, applied: &BTreeMap<i32, i64>) -> Deltas<'a> {
    let mut d = Deltas::default();
    for r in &batch.ranges {
        let range = match applied.get(&r.partition) {
            None => *r,
            Some(&done) if done >= r.last => continue,
            Some(&done) => PartitionRange {
                prev: r.prev.max(done),
                first: r.first.max(done + 1),
                ..*r
            },
        };
        d.ranges.push(Range {
            field: offsets_field(&batch.topic, r.partition),
            prev: range.prev,
            first: range.first,
            last: range.last,
        });
    }
    // One buffer for the album key: it is allocated anew only the first time
    // the batch sees an album.
    let mut album = String::new();
    for (_, vote) in unapplied(batch, applied) {
        album.clear();
        vote.write_album_key(&mut album);
        d.total += 1;
        d.tail.push(VoteItem(vote));
        *d.band.entry(vote.name.as_str()).or_default() += 1;
        *d.route.entry(vote.route.as_str()).or_default() += 1;
        match d.album.get_mut(album.as_str()) {
            Some(count) => *count += 1,
            None => {
                d.album.insert(album.clone(), 1);
            }
        }
        match d.rank.get_mut(album.as_str()) {
            Some(sum) => *sum += vote.rank,
            None => {
                d.rank.insert(album.clone(), vote.rank);
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::consumer::batch::Entry;
    use crate::vote::{Route, Rules, Vote};

    fn vote(name: &str, album: &str, rank: f64, route: Route) -> Option<crate::vote::VoteRecord> {
        Some(
            Vote::new(name, album, 2000, rank, &Rules::default())
                .unwrap()
                .stamp(route, Utc::now()),
        )
    }

    fn range(field: &str, prev: i64, first: i64, last: i64) -> Range {
        Range {
            field: field.into(),
            prev,
            first,
            last,
        }
    }

    fn batch() -> Batch {
        let entries = vec![
            Entry {
                partition: 0,
                offset: 10,
                vote: vote("Alux Nahual", "Alux Nahual", 8.0, Route::Grpc),
            },
            Entry {
                partition: 0,
                offset: 11,
                vote: None,
            },
            Entry {
                partition: 0,
                offset: 12,
                vote: vote("Alux Nahual", "Alux Nahual", 9.5, Route::Http),
            },
            Entry {
                partition: 1,
                offset: 3,
                vote: vote("Bohemia Suburbana", "Jamás", 7.0, Route::Http),
            },
        ];
        Batch {
            seq: 1,
            topic: "votes".into(),
            entries,
            ranges: vec![
                PartitionRange {
                    partition: 0,
                    prev: 9,
                    first: 10,
                    last: 12,
                },
                PartitionRange {
                    partition: 1,
                    prev: 2,
                    first: 3,
                    last: 3,
                },
            ],
        }
    }

    #[test]
    fn a_batch_is_summed_per_band_album_and_route() {
        let batch = batch();
        let d = aggregate(&batch, &BTreeMap::new());
        assert_eq!(d.total, 3);
        assert_eq!(d.band["Alux Nahual"], 2);
        assert_eq!(d.band["Bohemia Suburbana"], 1);
        assert_eq!(d.album["Alux Nahual / Alux Nahual"], 2);
        assert_eq!(d.rank["Alux Nahual / Alux Nahual"], 17.5);
        assert_eq!(d.route["http"], 2);
        assert_eq!(d.route["grpc"], 1);
        let tail: Vec<serde_json::Value> = serde_json::from_str(&d.tail_json()).unwrap();
        let ids: Vec<_> = batch.votes().map(|(_, v)| v.id.to_string()).collect();
        assert_eq!(tail.iter().map(|t| t["id"].as_str().unwrap()).collect::<Vec<_>>(), ids);
        assert_eq!(d.ranges, vec![range("votes/0", 9, 10, 12), range("votes/1", 2, 3, 3)]);
    }

    #[test]
    fn records_already_applied_are_left_out_and_the_range_narrowed() {
        let batch = batch();
        let d = aggregate(&batch, &BTreeMap::from([(0, 11), (1, 3)]));
        assert_eq!(d.total, 1);
        assert_eq!(d.tail.len(), 1, "only what is counted now goes to the live tail");
        assert_eq!(d.band["Alux Nahual"], 1);
        assert_eq!(d.rank["Alux Nahual / Alux Nahual"], 9.5);
        assert!(!d.band.contains_key("Bohemia Suburbana"));
        assert_eq!(d.ranges, vec![range("votes/0", 11, 12, 12)]);
    }
}
