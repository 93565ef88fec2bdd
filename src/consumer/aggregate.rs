//! A batch as the Redis script takes it ([`Decide`]): the partitions'
//! ranges, and each vote with its album key, rank in millionths and receive
//! time. The script decides every outcome itself (DESIGN.md, "Outcomes"),
//! in batch order, against what Redis holds; records at or below a
//! partition's stored offset were decided before (a replay) and are only
//! told again, which is how replays stay exact.

use std::collections::BTreeMap;

use super::batch::Batch;
use crate::log_entry::VoteItem;
use crate::schema::redis::{Decide, Range, ScriptRecord, Window, offsets_field, rank_micros};

/// The script's argument for `batch` under `window`.
pub fn decide(batch: &Batch, window: Window) -> Decide<'_> {
    let mut index = BTreeMap::new();
    let ranges = batch
        .ranges
        .iter()
        .enumerate()
        .map(|(n, r)| {
            index.insert(r.partition, n + 1);
            Range {
                field: offsets_field(&batch.topic, r.partition),
                prev: r.prev,
                first: r.first,
                last: r.last,
            }
        })
        .collect();
    let mut d = Decide {
        ranges,
        window,
        ..Decide::default()
    };
    for (entry, vote) in batch.votes() {
        let Some(&p) = index.get(&entry.partition) else {
            // The batcher gives every entry's partition a range.
            continue;
        };
        d.records.push(ScriptRecord {
            i: vote.id.to_string(),
            v: vote.voter.as_deref(),
            b: &vote.name,
            a: vote.album_key(),
            r: vote.route.as_str(),
            k: rank_micros(vote.rank),
            t: vote.received_at.timestamp_millis(),
            p,
            o: entry.offset,
        });
        d.tail.push(VoteItem(vote));
    }
    d
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::consumer::batch::{Entry, PartitionRange};
    use crate::vote::{Route, Rules, Vote};

    fn vote(name: &str, album: &str, rank: f64, voter: Option<&str>) -> Option<crate::vote::VoteRecord> {
        Some(
            Vote::new(name, album, 2000, rank, &Rules::default())
                .unwrap()
                .with_ids(voter, None)
                .unwrap()
                .stamp(Route::Http, Utc::now()),
        )
    }

    #[test]
    fn every_vote_goes_to_the_script_with_its_range_and_dead_letters_only_move_offsets() {
        let entries = vec![
            Entry {
                partition: 0,
                offset: 10,
                vote: vote("Alux Nahual", "Alux Nahual", 8.25, Some("u1")),
            },
            Entry {
                partition: 0,
                offset: 11,
                vote: None,
            },
            Entry {
                partition: 1,
                offset: 3,
                vote: vote("Bohemia Suburbana", "Jamás", 7.0, None),
            },
        ];
        let batch = Batch {
            seq: 1,
            topic: "votes".into(),
            entries,
            ranges: vec![
                PartitionRange {
                    partition: 0,
                    prev: 9,
                    first: 10,
                    last: 11,
                },
                PartitionRange {
                    partition: 1,
                    prev: 2,
                    first: 3,
                    last: 3,
                },
            ],
            outcomes: Default::default(),
        };
        let d = decide(&batch, Window::default());
        assert_eq!(
            d.ranges.iter().map(|r| r.field.as_str()).collect::<Vec<_>>(),
            ["votes/0", "votes/1"]
        );
        assert_eq!(d.records.len(), 2);
        let (a, b) = (&d.records[0], &d.records[1]);
        assert_eq!(
            (a.p, a.o, a.v, a.k, a.a.as_str()),
            (1, 10, Some("u1"), 8_250_000, "Alux Nahual / Alux Nahual")
        );
        assert_eq!((b.p, b.o, b.v, b.b), (2, 3, None, "Bohemia Suburbana"));
        let lines: Vec<serde_json::Value> = d
            .tail_lines()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "one log item per record, one per line");
        assert_eq!(lines[0]["voter"], "u1");
        assert_eq!(lines[1]["voter"], serde_json::Value::Null);
    }
}
