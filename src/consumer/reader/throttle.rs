//! How the reader holds back while the open batch cannot be handed on (every
//! batch allowed in flight is, or a rewind waits for them to come back).
//!
//! A short wait takes no records and is the rhythm of a drain: the records
//! librdkafka prefetched wait for the reader. Only a long one (a sink is down)
//! pauses the partitions, and then the consumer is polled again, so it stays
//! in its group. Pausing drops the prefetched records and resuming fetches
//! them again, so pausing on every short wait would cost a drain most of
//! its speed (BENCHMARKS.md).

use std::time::Duration;

use tokio::time::Instant;

/// How long the reader may wait for room in flight before it pauses its partitions.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(super) struct Throttle {
    /// Since when the reader has been held back.
    blocked_since: Option<Instant>,
}

/// What the reader does about Kafka for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// Read records; the partitions are not paused.
    Read,
    /// Take no records; pause the partitions at `pause_at` if still held back then.
    Wait { pause_at: Instant },
    /// Pause the partitions and keep polling the consumer (no records come).
    Paused,
}

impl Throttle {
    /// `blocked`: the open batch cannot be handed on; `rewinding`: nothing
    /// is read until the rewind, so the partitions pause at once.
    pub fn check(&mut self, blocked: bool, rewinding: bool, now: Instant) -> Hold {
        if !blocked && !rewinding {
            self.blocked_since = None;
            return Hold::Read;
        }
        let pause_at = *self.blocked_since.get_or_insert(now) + PAUSE_AFTER;
        if rewinding || now >= pause_at {
            Hold::Paused
        } else {
            Hold::Wait { pause_at }
        }
    }
}

impl Hold {
    /// Whether to poll the consumer.
    pub fn polls(self) -> bool {
        !matches!(self, Hold::Wait { .. })
    }

    pub fn pauses(self) -> bool {
        self == Hold::Paused
    }

    /// When to check again if nothing else happens first.
    pub fn pause_at(self) -> Option<Instant> {
        match self {
            Hold::Wait { pause_at } => Some(pause_at),
            Hold::Read | Hold::Paused => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_with_room_reads() {
        let mut t = Throttle::default();
        assert_eq!(t.check(false, false, Instant::now()), Hold::Read);
    }

    #[test]
    fn a_short_wait_for_room_takes_no_records_and_does_not_pause() {
        let now = Instant::now();
        let mut t = Throttle::default();
        let pause_at = now + PAUSE_AFTER;
        assert_eq!(t.check(true, false, now), Hold::Wait { pause_at });
        let later = now + PAUSE_AFTER / 2;
        assert_eq!(
            t.check(true, false, later),
            Hold::Wait { pause_at },
            "counted from the start"
        );
        assert!(!Hold::Wait { pause_at }.polls());
    }

    #[test]
    fn a_wait_that_lasts_pauses_the_partitions_and_keeps_polling() {
        let now = Instant::now();
        let mut t = Throttle::default();
        t.check(true, false, now);
        let hold = t.check(true, false, now + PAUSE_AFTER);
        assert_eq!(hold, Hold::Paused);
        assert!(hold.polls() && hold.pauses());
    }

    #[test]
    fn room_again_ends_the_wait() {
        let now = Instant::now();
        let mut t = Throttle::default();
        t.check(true, false, now);
        assert_eq!(t.check(false, false, now + PAUSE_AFTER), Hold::Read);
        let again = now + PAUSE_AFTER * 2;
        assert_eq!(
            t.check(true, false, again),
            Hold::Wait {
                pause_at: again + PAUSE_AFTER
            }
        );
    }

    #[test]
    fn a_pending_rewind_pauses_at_once() {
        let mut t = Throttle::default();
        assert_eq!(t.check(false, true, Instant::now()), Hold::Paused);
    }
}
