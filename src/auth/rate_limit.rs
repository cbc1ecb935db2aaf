//! Sign-in attempt limits: token buckets per client address and per email.
//!
//! `login`, `signup` and `joinCompany` each cost a password hash (19 MiB and tens of
//! milliseconds of CPU) and tell the caller something worth guessing at: whether a
//! password is right, or whether an email already has an account. Each attempt takes a
//! token from its client address's bucket and from its email's bucket; a bucket holds a
//! minute's worth of attempts and refills evenly, and an empty one answers RATE_LIMITED
//! with the time until its next token.
//!
//! A successful `login` gives its tokens back ([`SignInLimits::refund`]): only failures
//! use up an account's (and an address's) attempts, so a member signing in on many devices,
//! or an office behind one address, is not throttled by its own successes. A refund needs
//! the right password, so it gives a guesser nothing. `changePassword` checks the current
//! password and counts as an attempt too. Every attempt is counted before anything is
//! looked up, so a known and an unknown email are answered alike, limits included.
//!
//! Hand-written rather than `governor`: governor's keyed limiter keeps a state per key ever
//! seen until `retain_recent` runs, with no cap, and a flood of distinct emails or
//! addresses (IPv6 hands anyone billions) would grow it without bound. Here each table is
//! an LRU of at most [`MAX_TRACKED_KEYS`] buckets, so memory is bounded whatever arrives.
//! Eviction drops the least recently used bucket, almost always one that has refilled and
//! so carries no information; resetting a particular bucket by eviction costs an attacker
//! that many attempts with fresh keys, more than the reset gives back. Keys are stored as
//! 64-bit SipHash values under a per-process random key (std's `RandomState`): entries are
//! small, and no one can aim collisions at someone else's bucket.

use std::hash::{BuildHasher as _, Hash, RandomState};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::error::{AppError, AppResult};

/// Buckets kept per table (addresses, emails): about 100 bytes each, so a few MB at most.
const MAX_TRACKED_KEYS: usize = 100_000;

/// The limits of `login`, `signup` and `joinCompany`; one per process.
pub struct SignInLimits {
    by_address: KeyedBuckets,
    by_email: KeyedBuckets,
}

impl SignInLimits {
    /// Attempts per minute allowed per client address and per email; 0 turns a limit off.
    pub fn new(per_address_per_minute: u32, per_email_per_minute: u32) -> Self {
        Self {
            by_address: KeyedBuckets::new(per_address_per_minute),
            by_email: KeyedBuckets::new(per_email_per_minute),
        }
    }

    /// Counts one attempt for `email` from `address` (unknown: only the email counts), or
    /// RATE_LIMITED when either has used up its attempts.
    pub fn check(&self, address: Option<IpAddr>, email: &str) -> AppResult<()> {
        let now = Instant::now();
        let limited = |retry_after| AppError::RateLimited { retry_after };
        if let Some(address) = address {
            self.by_address
                .take(address_group(address), now)
                .map_err(limited)?;
        }
        // Keyed like stored emails (trimmed, lower-cased), so case games do not multiply
        // the attempts one account gets.
        self.by_email
            .take(email.trim().to_lowercase(), now)
            .map_err(limited)
    }

    /// Gives back the attempt [`SignInLimits::check`] counted for a sign-in that succeeded.
    pub fn refund(&self, address: Option<IpAddr>, email: &str) {
        if let Some(address) = address {
            self.by_address.give_back(address_group(address));
        }
        self.by_email.give_back(email.trim().to_lowercase());
    }
}

/// The address a client is counted under: itself for IPv4, its /64 network for IPv6
/// (what one subscriber is usually given; counting single IPv6 addresses would let anyone
/// with a normal allocation bypass every per-address limit).
pub fn address_group(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(network.into())
        }
        v4 => v4,
    }
}

/// Token buckets by key, at most [`MAX_TRACKED_KEYS`] of them (also the per-webhook
/// request limit).
pub(crate) struct KeyedBuckets {
    per_minute: u32,
    keys: RandomState,
    buckets: Mutex<LruCache<u64, Bucket>>,
}

struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

impl KeyedBuckets {
    pub(crate) fn new(per_minute: u32) -> Self {
        let capacity = NonZeroUsize::new(MAX_TRACKED_KEYS).unwrap_or(NonZeroUsize::MIN);
        Self {
            per_minute,
            keys: RandomState::new(),
            buckets: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// Takes one token from `key`'s bucket, or says how long until it has one.
    pub(crate) fn take(&self, key: impl Hash, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let hash = self.keys.hash_one(key);
        // Each change is a few assignments; a panicking holder leaves nothing half-done.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = buckets.get_or_insert_mut(hash, || Bucket {
            tokens: capacity,
            refilled_at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled_at);
        bucket.tokens = (bucket.tokens + elapsed.as_secs_f64() * per_second).min(capacity);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }

    /// Returns one token to `key`'s bucket (never above its capacity).
    fn give_back(&self, key: impl Hash) {
        if self.per_minute == 0 {
            return;
        }
        let capacity = f64::from(self.per_minute);
        let hash = self.keys.hash_one(key);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(bucket) = buckets.peek_mut(&hash) {
            bucket.tokens = (bucket.tokens + 1.0).min(capacity);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_a_minute_of_attempts_and_refills_evenly() {
        let buckets = KeyedBuckets::new(6);
        let start = Instant::now();
        for _ in 0..6 {
            assert_eq!(buckets.take("a@x.test", start), Ok(()));
        }
        let wait = buckets.take("a@x.test", start).err().unwrap_or_default();
        assert!(
            (9.9..=10.1).contains(&wait.as_secs_f64()),
            "one token per 10 s: {wait:?}"
        );
        // Other keys are unaffected; once the wait is over, one more attempt is allowed.
        assert_eq!(buckets.take("b@x.test", start), Ok(()));
        let later = start + Duration::from_secs(11);
        assert_eq!(buckets.take("a@x.test", later), Ok(()));
        assert!(buckets.take("a@x.test", later).is_err());
        // Never more than the capacity, however long the pause.
        let much_later = start + Duration::from_secs(3_600);
        for _ in 0..6 {
            assert_eq!(buckets.take("a@x.test", much_later), Ok(()));
        }
        assert!(buckets.take("a@x.test", much_later).is_err());
    }

    #[test]
    fn zero_means_no_limit() {
        let buckets = KeyedBuckets::new(0);
        let now = Instant::now();
        assert!((0..1_000).all(|_| buckets.take("a", now).is_ok()));
        assert_eq!(buckets.len(), 0);
    }

    #[test]
    fn a_flood_of_distinct_keys_keeps_the_table_bounded() {
        let buckets = KeyedBuckets::new(5);
        let now = Instant::now();
        for i in 0..(MAX_TRACKED_KEYS + 5_000) {
            assert!(buckets.take(format!("user{i}@x.test"), now).is_ok());
        }
        assert_eq!(buckets.len(), MAX_TRACKED_KEYS);
    }

    #[test]
    fn addresses_and_emails_are_both_limited() {
        let limits = SignInLimits::new(3, 2);
        let here: IpAddr = [192, 0, 2, 1].into();
        let there: IpAddr = [192, 0, 2, 2].into();
        assert!(limits.check(Some(here), "a@x.test").is_ok());
        // Case and spaces do not make another account.
        assert!(limits.check(Some(there), " A@X.test ").is_ok());
        let refused = limits.check(Some(there), "a@x.test");
        assert!(matches!(refused, Err(AppError::RateLimited { .. })));
        assert!(limits.check(Some(here), "b@x.test").is_ok());
        assert!(limits.check(Some(here), "c@x.test").is_ok());
        // `here` has made three attempts: a fourth is refused whatever the email.
        let refused = limits.check(Some(here), "d@x.test");
        assert!(matches!(refused, Err(AppError::RateLimited { .. })));
    }

    #[test]
    fn successes_give_their_attempts_back() {
        let limits = SignInLimits::new(2, 2);
        let here: IpAddr = [192, 0, 2, 1].into();
        for _ in 0..10 {
            assert!(limits.check(Some(here), "a@x.test").is_ok());
            limits.refund(Some(here), "a@x.test");
        }
        assert!(limits.check(Some(here), "a@x.test").is_ok());
        assert!(limits.check(Some(here), "a@x.test").is_ok());
        assert!(limits.check(Some(here), "a@x.test").is_err());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_network() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let same_network: IpAddr = "2001:db8:1:2:ffff::9"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(address_group(one), address_group(same_network));
        assert_ne!(address_group(one), address_group(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(address_group(mapped), IpAddr::from([192, 0, 2, 7]));
    }
}
