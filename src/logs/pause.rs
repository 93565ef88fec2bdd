//! When MongoDB runs a page of `/logs` out of its time (the server itself
//! gave the query up at `maxTimeMS`), asking again at once only spends the
//! database's time on work it will give up again, beside the consumer's
//! writes. So pages pause: for a cool-down the app answers 503 without
//! asking (Retry-After says how long), then one page goes through as a probe
//! while the others keep waiting. A probe answered in time ends the pause; a
//! probe out of time pauses again, twice as long. The first pause is
//! [`FIRST_PAUSE_TIMEOUTS`] backend timeouts: a page out of time held the
//! database for about one, so pages take at most a fifth of its time, and
//! less as the pauses double (up to [`MAX_PAUSE`]). Only a server that ran
//! out of time pauses pages: a database that is down or unreachable costs it
//! nothing, and the app keeps asking as before.
//!
//! Pure state; the caller passes the clock, so the tests step through it.

use std::time::Duration;

use tokio::time::Instant;

/// The first pause, in backend timeouts.
pub const FIRST_PAUSE_TIMEOUTS: u32 = 4;

/// The longest pause between two probes.
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

/// What the pause lets a page do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// No pause: ask the database.
    Ask,
    /// The pause is over: this page asks, as the only probe.
    Probe,
    /// Paused: answer 503 without asking, for this long yet (at least 1 s).
    Wait(Duration),
}

/// How a page that asked ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The database answered (rows or none).
    InTime,
    /// The server gave the query up at its `maxTimeMS`.
    OutOfTime,
    /// Anything else (unreachable, refused, our own deadline): says nothing
    /// about the cost of a page; a probe that ends so ends the pause.
    Failed,
}

#[derive(Debug)]
pub struct PagePause {
    timeout: Duration,
    /// Consecutive probes (or pages) out of time.
    strikes: u32,
    until: Option<Instant>,
    probing: bool,
}

impl PagePause {
    /// `timeout`: the backend timeout, about how long a page out of time held the database.
    pub fn new(timeout: Duration) -> PagePause {
        PagePause {
            timeout,
            strikes: 0,
            until: None,
            probing: false,
        }
    }

    pub fn admit(&mut self, now: Instant) -> Admission {
        let Some(until) = self.until else {
            return Admission::Ask;
        };
        if now < until {
            return Admission::Wait((until - now).max(Duration::from_secs(1)));
        }
        if self.probing {
            // The probe is out; it takes at most the backend timeout.
            return Admission::Wait(self.timeout.max(Duration::from_secs(1)));
        }
        self.probing = true;
        Admission::Probe
    }

    /// Records how a page ended; gives the pause now in force, if any.
    pub fn record(&mut self, now: Instant, admitted: Admission, answer: Answer) -> Option<Duration> {
        let probe = admitted == Admission::Probe;
        if probe {
            self.probing = false;
        }
        // A page asked before the pause began says no more than the one that began it:
        // only a probe, or a page while no pause is in force, ends or starts one.
        if probe || self.until.is_none() {
            self.decide(now, answer);
        }
        self.until
            .map(|until| until.saturating_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    fn decide(&mut self, now: Instant, answer: Answer) {
        match answer {
            Answer::InTime => {
                self.strikes = 0;
                self.until = None;
            }
            Answer::OutOfTime => {
                self.strikes = self.strikes.saturating_add(1);
                let first = self.timeout.saturating_mul(FIRST_PAUSE_TIMEOUTS);
                let pause = first.saturating_mul(1_u32 << (self.strikes - 1).min(16));
                self.until = Some(now + pause.min(MAX_PAUSE));
            }
            // Unreachable, refused: nothing said about the cost of a page. A probe that ended
            // so ends the pause (a database that is down does not pause pages); the strikes
            // stay, so a page out of time next pauses pages for longer.
            Answer::Failed => self.until = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(2);

    /// A pause for timeouts of `timeout`, its first page out of time at `now`.
    fn paused_at(now: Instant, timeout: Duration) -> PagePause {
        let mut pause = PagePause::new(timeout);
        pause.record(now, Admission::Ask, Answer::OutOfTime);
        pause
    }

    #[test]
    fn pages_ask_until_one_runs_out_of_time() {
        let now = Instant::now();
        let mut pause = PagePause::new(T);
        assert_eq!(pause.admit(now), Admission::Ask);
        pause.record(now, Admission::Ask, Answer::InTime);
        pause.record(now, Admission::Ask, Answer::Failed);
        assert_eq!(pause.admit(now), Admission::Ask);
    }

    #[test]
    fn a_page_out_of_time_pauses_pages_then_one_probe_goes_through() {
        let now = Instant::now();
        let mut pause = PagePause::new(T);
        assert_eq!(pause.record(now, Admission::Ask, Answer::OutOfTime), Some(4 * T));
        assert_eq!(pause.admit(now), Admission::Wait(4 * T));
        assert_eq!(
            pause.admit(now + Duration::from_millis(7_500)),
            Admission::Wait(Duration::from_secs(1))
        );
        let later = now + 4 * T;
        assert_eq!(pause.admit(later), Admission::Probe);
        // One probe at a time: the others wait for it.
        assert_eq!(pause.admit(later), Admission::Wait(T));
        assert_eq!(
            pause.record(later + Duration::from_millis(300), Admission::Probe, Answer::InTime),
            None
        );
        assert_eq!(pause.admit(later), Admission::Ask);
    }

    #[test]
    fn each_probe_out_of_time_doubles_the_pause_up_to_the_most() {
        let mut now = Instant::now();
        let mut pause = paused_at(now, T);
        let mut pauses = Vec::new();
        for _ in 0..6 {
            let Admission::Wait(left) = pause.admit(now) else {
                panic!("paused");
            };
            pauses.push(left.as_secs());
            now += left;
            assert_eq!(pause.admit(now), Admission::Probe);
            pause.record(now, Admission::Probe, Answer::OutOfTime);
        }
        assert_eq!(pauses, [8, 16, 32, 60, 60, 60]);
        // An answer in time starts over from the first pause.
        now += MAX_PAUSE;
        assert_eq!(pause.admit(now), Admission::Probe);
        pause.record(now, Admission::Probe, Answer::InTime);
        pause.record(now, Admission::Ask, Answer::OutOfTime);
        assert_eq!(pause.admit(now), Admission::Wait(4 * T));
    }

    #[test]
    fn a_probe_that_fails_otherwise_ends_the_pause_but_not_the_strikes() {
        let now = Instant::now();
        let mut pause = paused_at(now, T);
        let later = now + 4 * T;
        assert_eq!(pause.admit(later), Admission::Probe);
        pause.record(later, Admission::Probe, Answer::Failed);
        // Pages ask again, all of them; the next page out of time pauses them for longer.
        assert_eq!(pause.admit(later), Admission::Ask);
        assert_eq!(pause.admit(later), Admission::Ask);
        pause.record(later, Admission::Ask, Answer::OutOfTime);
        assert_eq!(pause.admit(later), Admission::Wait(8 * T));
    }

    #[test]
    fn pages_asked_before_the_pause_neither_end_it_nor_stretch_it() {
        let now = Instant::now();
        let mut pause = paused_at(now, T);
        // Pages asked beside it end later, one in time, one out of time.
        pause.record(now, Admission::Ask, Answer::InTime);
        assert_eq!(pause.admit(now), Admission::Wait(4 * T));
        pause.record(now + T, Admission::Ask, Answer::OutOfTime);
        assert_eq!(pause.admit(now + T), Admission::Wait(3 * T));
        assert_eq!(pause.admit(now + 4 * T), Admission::Probe);
    }

    #[test]
    fn a_short_timeout_still_says_to_wait_a_second_at_least() {
        let now = Instant::now();
        let mut pause = paused_at(now, Duration::from_millis(50));
        assert_eq!(pause.admit(now), Admission::Wait(Duration::from_secs(1)));
        assert_eq!(pause.admit(now + Duration::from_millis(200)), Admission::Probe);
        // The others wait for the probe, a second at least.
        assert_eq!(
            pause.admit(now + Duration::from_millis(200)),
            Admission::Wait(Duration::from_secs(1))
        );
    }
}
