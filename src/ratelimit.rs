//! Keyed token buckets for login attempts and, later, the public endpoints.
//!
//! Each key (a username, a client address) has a bucket of `burst` tokens
//! refilled evenly over `window`. Checking is O(1); buckets that have
//! refilled completely carry no information and are dropped by
//! [`RateLimiter::prune`], so memory stays bounded by the keys active in the
//! last window. The limiter is per node: on a cluster the effective limit is
//! per node, which still stops a brute force (argon2 makes each guess cost).
//!
//! `now` is passed in, so tests move time by hand.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    // A std mutex: the critical section is a hash lookup and never awaits.
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The answer of a check: allowed, or refused with the time until a token is back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Limited { retry_after: Duration },
}

impl RateLimiter {
    pub fn new(burst: u32, window: Duration) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            burst,
            per_second: burst / window.as_secs_f64().max(0.001),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }

    fn retry_after(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - tokens) / self.per_second).max(0.0))
    }

    /// Takes a token for `key` if one is left.
    pub fn check(&self, key: &str, now: Instant) -> Verdict {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let tokens = self.refilled(*bucket, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                updated: now,
            };
            Verdict::Allowed
        } else {
            *bucket = Bucket {
                tokens,
                updated: now,
            };
            Verdict::Limited {
                retry_after: self.retry_after(tokens),
            }
        }
    }

    /// Gives back a token taken by [`check`](Self::check) (a login that
    /// succeeded does not count against the failure budget).
    pub fn refund(&self, key: &str, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            let tokens = self.refilled(*bucket, now);
            *bucket = Bucket {
                tokens: (tokens + 1.0).min(self.burst),
                updated: now,
            };
        }
    }

    /// Whether `key` has a token left, without taking it.
    pub fn peek(&self, key: &str, now: Instant) -> Verdict {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match buckets.get(key) {
            Some(bucket) => {
                let tokens = self.refilled(*bucket, now);
                if tokens >= 1.0 {
                    Verdict::Allowed
                } else {
                    Verdict::Limited {
                        retry_after: self.retry_after(tokens),
                    }
                }
            }
            None => Verdict::Allowed,
        }
    }

    /// Forgets keys whose buckets are full again.
    pub fn prune(&self, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.retain(|_, bucket| self.refilled(*bucket, now) < self.burst);
    }

    pub fn len(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_until_the_window_refills() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("mario", t0), Verdict::Allowed);
        }
        let Verdict::Limited { retry_after } = limiter.check("mario", t0) else {
            panic!("the fourth attempt must be limited");
        };
        assert!(retry_after > Duration::from_secs(19) && retry_after <= Duration::from_secs(20));
        // Other keys are independent.
        assert_eq!(limiter.check("luigi", t0), Verdict::Allowed);
        // One token comes back every 20 s.
        assert_eq!(
            limiter.check("mario", t0 + Duration::from_secs(20)),
            Verdict::Allowed
        );
        assert!(matches!(
            limiter.check("mario", t0 + Duration::from_secs(21)),
            Verdict::Limited { .. }
        ));
    }

    #[test]
    fn peek_does_not_consume_and_prune_forgets_full_buckets() {
        let limiter = RateLimiter::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.peek("a", t0), Verdict::Allowed);
        assert_eq!(limiter.check("a", t0), Verdict::Allowed);
        assert!(matches!(limiter.peek("a", t0), Verdict::Limited { .. }));
        limiter.prune(t0 + Duration::from_secs(5));
        assert_eq!(limiter.len(), 1);
        limiter.prune(t0 + Duration::from_secs(10));
        assert!(limiter.is_empty());
    }
}
