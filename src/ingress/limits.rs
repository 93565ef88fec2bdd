//! Abuse limits of the ingress (DESIGN.md, "Authentication and limits"):
//! votes per minute per voter and requests per second per client address,
//! each with a burst, and load shedding when the producer's queue is near
//! full. A request past a limit is refused whole before anything is produced.
//!
//! A limit is a GCRA token bucket: per key the table keeps only the instant
//! its bucket will be full again (the "theoretical arrival time"), 16 bytes
//! with the key's hash. The table is allocated once at its configured size
//! and never grows: a million distinct voters cost what the flag says. Keys
//! hash into sets of [`WAYS`] slots; a slot whose bucket is full again is
//! free, and when a set holds none, the newcomer takes the slot closest to
//! being full, so the voters held back the longest are the last forgotten.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Slots per set: a key can sit in any of them.
const WAYS: usize = 8;
/// Sets are spread over this many independently locked shards.
const SHARDS: usize = 64;

/// What a limit is counted on: the `scope` label of `rate_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Voter,
    Ip,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Voter, Scope::Ip];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Voter => "voter",
            Scope::Ip => "ip",
        }
    }
}

/// A refusal: the scope whose limit was passed, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub scope: Scope,
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds for `Retry-After`, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        (self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)).max(1)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u64,
    /// Nanoseconds since the limiter's epoch at which the bucket is full
    /// again; at or before now the slot is free (0: never used).
    full_at: u64,
}

/// A token bucket per key, in a table of fixed size.
pub struct RateLimiter {
    /// Time one unit (a vote, a request) takes to come back.
    interval: u64,
    /// How far ahead of now a bucket may run: burst x interval.
    tolerance: u64,
    shards: Box<[Mutex<Box<[Slot]>>]>,
    sets_per_shard: usize,
    hasher: RandomState,
    epoch: Instant,
}

impl RateLimiter {
    /// `rate` units per `per`, up to `burst` at once, for at least `entries`
    /// keys with a bucket not yet full again (rounded up to whole sets).
    pub fn new(rate: NonZeroU32, per: Duration, burst: NonZeroU32, entries: usize) -> RateLimiter {
        let interval = u64::try_from(per.as_nanos() / u128::from(rate.get())).unwrap_or(u64::MAX);
        let sets = entries.div_ceil(WAYS).max(1);
        let shards = sets.min(SHARDS);
        let sets_per_shard = sets.div_ceil(shards);
        RateLimiter {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.get())),
            shards: (0..shards)
                .map(|_| Mutex::new(vec![Slot::default(); sets_per_shard * WAYS].into_boxed_slice()))
                .collect(),
            sets_per_shard,
            hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// Keys the table holds at most.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.shards.len() * self.sets_per_shard * WAYS
    }

    /// Bytes the table takes; fixed at construction.
    #[cfg(test)]
    pub fn table_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| std::mem::size_of_val(&**lock(shard)))
            .sum()
    }

    /// Keys whose bucket is not full again: the ones the table must remember.
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        let now = self.now();
        self.shards
            .iter()
            .map(|shard| lock(shard).iter().filter(|s| s.full_at > now).count())
            .sum()
    }

    /// Takes `cost` units from `key`'s bucket, or says how long until they
    /// are there. A cost above the burst never fits.
    pub fn acquire<K: Hash + ?Sized>(&self, key: &K, cost: u32) -> Result<(), Duration> {
        self.acquire_at(self.hasher.hash_one(key), cost, self.now())
    }

    /// Gives back `cost` units taken by [`RateLimiter::acquire`] for a request
    /// that was refused by another limit after all.
    pub fn release<K: Hash + ?Sized>(&self, key: &K, cost: u32) {
        let hash = self.hasher.hash_one(key);
        let back = self.interval.saturating_mul(u64::from(cost));
        let mut shard = lock(&self.shards[self.shard_of(hash)]);
        if let Some(slot) = shard[self.set_of(hash)].iter_mut().find(|s| s.key == hash) {
            slot.full_at = slot.full_at.saturating_sub(back);
        }
    }

    fn now(&self) -> u64 {
        // +1: a slot never used (full_at 0) is free from the first instant.
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX) + 1
    }

    fn shard_of(&self, hash: u64) -> usize {
        (hash % self.shards.len() as u64) as usize
    }

    fn set_of(&self, hash: u64) -> std::ops::Range<usize> {
        let set = ((hash / self.shards.len() as u64) % self.sets_per_shard as u64) as usize;
        set * WAYS..(set + 1) * WAYS
    }

    fn acquire_at(&self, hash: u64, cost: u32, now: u64) -> Result<(), Duration> {
        let mut shard = lock(&self.shards[self.shard_of(hash)]);
        let set = &mut shard[self.set_of(hash)];
        // A key is in its set at most once: found, full again or not, it keeps its slot.
        let known = set.iter().position(|s| s.key == hash);
        let from = known.map_or(now, |i| set[i].full_at.max(now));
        let full_at = from.saturating_add(self.interval.saturating_mul(u64::from(cost)));
        if full_at - now > self.tolerance {
            return Err(Duration::from_nanos(full_at - now - self.tolerance));
        }
        // Free slots have full_at <= now, below every slot in use: the least full is taken first.
        let index = known.unwrap_or_else(|| (0..WAYS).min_by_key(|&i| set[i].full_at).unwrap_or(0));
        set[index] = Slot { key: hash, full_at };
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a slot half-written (two plain words).
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The limits of one ingress, each off unless configured.
#[derive(Default)]
pub struct Limits {
    voter: Option<RateLimiter>,
    ip: Option<RateLimiter>,
    /// Refuse at once what would bring the producer's queue past this many records.
    shed_at: Option<u64>,
}

impl Limits {
    pub fn from_args(args: &crate::config::LimitArgs, queue_messages: u64) -> anyhow::Result<Limits> {
        anyhow::ensure!(
            args.shed_queue_fill > 0.0 && args.shed_queue_fill <= 1.0,
            "--shed-queue-fill must be above 0 and at most 1, got {}",
            args.shed_queue_fill
        );
        let limiter = |rate: Option<NonZeroU32>, burst: Option<NonZeroU32>, per: Duration| {
            rate.map(|rate| RateLimiter::new(rate, per, burst.unwrap_or(rate), args.rate_limit_table_entries))
        };
        Ok(Limits {
            voter: limiter(
                args.rate_limit_voter,
                args.rate_limit_voter_burst,
                Duration::from_secs(60),
            ),
            ip: limiter(args.rate_limit_ip, args.rate_limit_ip_burst, Duration::from_secs(1)),
            // The floor: with a fill of 0.9 and a queue of 10, at most 9 records are queued.
            shed_at: Some(((args.shed_queue_fill * queue_messages as f64) as u64).max(1)),
        })
    }

    /// One request from `ip` (none known: not limited). An IPv6 client is
    /// counted by its /64, the block one host usually has to itself.
    pub fn check_ip(&self, ip: Option<IpAddr>) -> Result<(), Limited> {
        let network = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => IpAddr::V6((v6.to_bits() & !u128::from(u64::MAX)).into()),
        };
        match (&self.ip, ip.map(network)) {
            (Some(limiter), Some(ip)) => limiter.acquire(&ip, 1).map_err(|retry_after| Limited {
                scope: Scope::Ip,
                retry_after,
            }),
            _ => Ok(()),
        }
    }

    /// The votes of one request, by voter (anonymous votes are not limited
    /// here). Either every voter's votes fit, or none is taken.
    pub fn check_voters<'a>(&self, voters: impl Iterator<Item = &'a str>) -> Result<(), Limited> {
        let Some(limiter) = &self.voter else { return Ok(()) };
        let mut counts: Vec<(&str, u32)> = Vec::new();
        for voter in voters {
            match counts.iter_mut().find(|(v, _)| *v == voter) {
                Some((_, n)) => *n += 1,
                None => counts.push((voter, 1)),
            }
        }
        for (taken, &(voter, n)) in counts.iter().enumerate() {
            if let Err(retry_after) = limiter.acquire(voter, n) {
                for &(voter, n) in &counts[..taken] {
                    limiter.release(voter, n);
                }
                return Err(Limited {
                    scope: Scope::Voter,
                    retry_after,
                });
            }
        }
        Ok(())
    }

    /// Whether `votes` more would bring the producer's queue (`pending`
    /// records) past its shedding mark.
    pub fn should_shed(&self, pending: i32, votes: usize) -> bool {
        self.shed_at
            .is_some_and(|mark| u64::try_from(pending).unwrap_or(0) + votes as u64 > mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_minute(rate: u32, burst: u32, entries: usize) -> RateLimiter {
        RateLimiter::new(
            NonZeroU32::new(rate).unwrap(),
            Duration::from_secs(60),
            NonZeroU32::new(burst).unwrap(),
            entries,
        )
    }

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_burst_passes_then_one_vote_per_interval() {
        let limiter = per_minute(6, 3, 64); // one vote every 10 s, 3 at once
        let now = SECOND;
        for _ in 0..3 {
            limiter.acquire_at(7, 1, now).expect("within the burst");
        }
        let wait = limiter.acquire_at(7, 1, now).expect_err("past the burst");
        assert_eq!(wait, Duration::from_secs(10));
        limiter.acquire_at(7, 1, now + 10 * SECOND).expect("one came back");
        limiter.acquire_at(7, 1, now + 10 * SECOND).expect_err("only one");
        limiter.acquire_at(8, 3, now).expect("another key has its own bucket");
        limiter
            .acquire_at(9, 4, now)
            .expect_err("more than the burst never fits");
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let secs = |d| {
            Limited {
                scope: Scope::Ip,
                retry_after: d,
            }
            .retry_after_secs()
        };
        assert_eq!(secs(Duration::from_millis(1)), 1);
        assert_eq!(secs(Duration::ZERO), 1);
        assert_eq!(secs(Duration::from_secs(10)), 10);
        assert_eq!(secs(Duration::from_millis(10_001)), 11);
    }

    #[test]
    fn a_million_distinct_voters_stay_within_the_configured_table() {
        let entries = 65_536;
        let limiter = per_minute(1, 2, entries);
        let bytes = limiter.table_bytes();
        assert_eq!(limiter.capacity(), entries);
        assert_eq!(
            bytes,
            entries * std::mem::size_of::<Slot>(),
            "16 bytes a key, allocated once"
        );
        // A voter held back before the flood.
        limiter.acquire("stuffer", 2).expect("the burst");
        limiter.acquire("stuffer", 1).expect_err("held back");
        for i in 0..1_000_000 {
            limiter
                .acquire(&format!("voter-{i:07}"), 1)
                .expect("a new voter has a full bucket");
        }
        assert_eq!(limiter.table_bytes(), bytes, "the table did not grow");
        let remembered = limiter.remembered();
        assert!(remembered <= entries, "{remembered} keys in a table of {entries}");
        assert!(remembered > entries / 2, "the table is in use: {remembered}");
        limiter
            .acquire("stuffer", 1)
            .expect_err("the voter held back the longest is the last forgotten");
    }

    #[test]
    fn a_refused_voter_gives_back_what_the_others_of_the_request_took() {
        let args = crate::config::LimitArgs {
            rate_limit_voter: NonZeroU32::new(2),
            rate_limit_voter_burst: None,
            rate_limit_ip: None,
            rate_limit_ip_burst: None,
            rate_limit_table_entries: 1024,
            shed_queue_fill: 0.9,
        };
        let limits = Limits::from_args(&args, 10).unwrap();
        limits.check_voters(["b", "b"].into_iter()).expect("b's burst");
        let refused = limits.check_voters(["a", "b"].into_iter()).expect_err("b is out");
        assert_eq!(refused.scope, Scope::Voter);
        limits
            .check_voters(["a", "a"].into_iter())
            .expect("a's two are still there");
        limits
            .check_ip(Some(IpAddr::from([127, 0, 0, 1])))
            .expect("no address limit");
        assert!(!limits.should_shed(8, 1), "up to 9 of 10 queued: the 0.9 mark");
        assert!(limits.should_shed(9, 1), "past the mark");
        assert!(limits.should_shed(0, 10), "a batch that would pass the mark");
    }

    #[test]
    fn an_ipv6_client_is_limited_by_its_64() {
        let args = crate::config::LimitArgs {
            rate_limit_voter: None,
            rate_limit_voter_burst: None,
            rate_limit_ip: NonZeroU32::new(1),
            rate_limit_ip_burst: NonZeroU32::new(2),
            rate_limit_table_entries: 1024,
            shed_queue_fill: 1.0,
        };
        let limits = Limits::from_args(&args, 10).unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        limits.check_ip(ip("2001:db8:1:2::1")).expect("first");
        limits.check_ip(ip("2001:db8:1:2:ffff::9")).expect("second, same /64");
        let refused = limits.check_ip(ip("2001:db8:1:2::77")).expect_err("past the burst");
        assert_eq!(refused.scope, Scope::Ip);
        limits.check_ip(ip("2001:db8:1:3::1")).expect("another /64");
        limits.check_ip(ip("192.0.2.1")).expect("IPv4 by address");
        limits.check_ip(None).expect("no address known");
    }
}
