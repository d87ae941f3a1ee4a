//! Per-source rate limiting of new requests, sans-IO: a token bucket per
//! source IP address, with `now` as input.
//!
//! Scanners and floods (many INVITEs or REGISTERs from one address) must not
//! starve everybody else. Each source address gets `burst` tokens refilled
//! at `requests_per_second`; a new request takes one. Over the limit the
//! source gets `503 Service Unavailable` with `Retry-After` (RFC 3261
//! §21.5.4), at most `refusals_per_second` times a second: beyond that its
//! requests are dropped without an answer, so a flood cannot make us
//! amplify it. `refusals_per_second = 0` drops from the first excess
//! request.
//!
//! Exempt addresses (the carriers' trunks, [`RateLimiter::exempting`]) may
//! send call requests past their bucket ([`RateLimiter::is_exempt`], which
//! the endpoint asks for INVITE, ACK, BYE, CANCEL and the other in-call
//! methods only): a trunk brings hundreds of calls a second from one
//! address, and its calls are admitted or refused by the call layer
//! instead (`voice.max_calls`, `voice.max_calls_per_second`). Its REGISTER,
//! OPTIONS and garbage stay limited, and so does a trunk block wider than
//! a /16 (IPv4) or a /48 (IPv6): a source address can be forged over UDP.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ccu_channels::sip::rate::{RateDecision, RateLimitConfig, RateLimiter};
//!
//! let config = RateLimitConfig { requests_per_second: 1, burst: 2, refusals_per_second: 1, ..RateLimitConfig::default() };
//! let mut limiter = RateLimiter::new(config);
//! let ip = "192.0.2.7".parse().unwrap();
//! let t0 = Instant::now();
//! assert_eq!(limiter.check(ip, t0), RateDecision::Allow);
//! assert_eq!(limiter.check(ip, t0), RateDecision::Allow);
//! assert_eq!(limiter.check(ip, t0), RateDecision::Refuse { retry_after_secs: 1 });
//! assert_eq!(limiter.check(ip, t0), RateDecision::Drop);
//! assert_eq!(limiter.check(ip, t0 + Duration::from_secs(1)), RateDecision::Allow);
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::sip::trunk::SourceNet;

/// Limits for new requests per source address. Lives in the server's
/// configuration (`[sip.rate_limit]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Whether to limit at all.
    pub enabled: bool,
    /// Sustained new requests per second from one address.
    pub requests_per_second: u32,
    /// Requests one address may send at once (bucket size). A phone
    /// registering several lines, or a trunk's burst of calls, needs some.
    pub burst: u32,
    /// `503` answers per second to an address over its limit; the rest of
    /// its excess requests are dropped. 0: always drop.
    pub refusals_per_second: u32,
    /// Addresses tracked at once; when full, buckets that are full again
    /// (idle sources) are forgotten first, and a new source beyond that is
    /// refused, which bounds memory under a spoofed-source flood.
    pub max_sources: usize,
}

impl Default for RateLimitConfig {
    fn default() -> RateLimitConfig {
        RateLimitConfig {
            enabled: true,
            requests_per_second: 50,
            burst: 100,
            refusals_per_second: 1,
            max_sources: 100_000,
        }
    }
}

/// What to do with a new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allow,
    /// Answer `503` with `Retry-After: retry_after_secs`.
    Refuse {
        retry_after_secs: u32,
    },
    /// Say nothing.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    /// The last time this source got a 503, to ration them.
    refused_at: Option<Instant>,
    refusals: u32,
}

/// The token buckets, one per source address.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: HashMap<IpAddr, Bucket>,
    exempt: Vec<SourceNet>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> RateLimiter {
        RateLimiter {
            config,
            buckets: HashMap::new(),
            exempt: Vec::new(),
        }
    }

    /// The same limiter, with `nets` exempt (those no wider than a /16 or
    /// an IPv6 /48; wider ones are left limited).
    pub fn exempting(mut self, nets: impl IntoIterator<Item = SourceNet>) -> RateLimiter {
        self.exempt.extend(
            nets.into_iter()
                .filter(|net| net.prefix() >= if net.is_ipv4() { 16 } else { 48 }),
        );
        self
    }

    /// Whether `source` is in an exempt block.
    pub fn is_exempt(&self, source: IpAddr) -> bool {
        self.exempt.iter().any(|net| net.contains(source))
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * f64::from(self.config.requests_per_second))
            .min(f64::from(self.config.burst));
        bucket.updated = now;
    }

    /// Takes a token for a new request from `source` at `now`.
    pub fn check(&mut self, source: IpAddr, now: Instant) -> RateDecision {
        if !self.config.enabled {
            return RateDecision::Allow;
        }
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.config.max_sources {
            self.forget_idle(now);
            if self.buckets.len() >= self.config.max_sources {
                return self.refusal_without_bucket();
            }
        }
        let fresh = Bucket {
            tokens: f64::from(self.config.burst),
            updated: now,
            refused_at: None,
            refusals: 0,
        };
        let mut bucket = self.buckets.get(&source).copied().unwrap_or(fresh);
        self.refill(&mut bucket, now);
        let decision = if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            RateDecision::Allow
        } else {
            // Ration 503s: at most `refusals_per_second` in each second.
            let new_second = bucket
                .refused_at
                .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
            if new_second {
                bucket.refused_at = Some(now);
                bucket.refusals = 0;
            }
            if bucket.refusals < self.config.refusals_per_second {
                bucket.refusals += 1;
                RateDecision::Refuse {
                    retry_after_secs: self.retry_after(bucket.tokens),
                }
            } else {
                RateDecision::Drop
            }
        };
        self.buckets.insert(source, bucket);
        decision
    }

    /// Seconds until one token is back, at least 1.
    fn retry_after(&self, tokens: f64) -> u32 {
        let rate = f64::from(self.config.requests_per_second.max(1));
        let secs = ((1.0 - tokens) / rate).ceil();
        // `as` saturates for floats; the value is small and positive.
        (secs as u32).max(1)
    }

    fn refusal_without_bucket(&self) -> RateDecision {
        if self.config.refusals_per_second == 0 {
            RateDecision::Drop
        } else {
            RateDecision::Refuse {
                retry_after_secs: 1,
            }
        }
    }

    /// Forgets sources whose bucket has filled up again: they are
    /// indistinguishable from new ones.
    pub fn forget_idle(&mut self, now: Instant) {
        let rate = f64::from(self.config.requests_per_second);
        let burst = f64::from(self.config.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
    }

    /// Sources tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exempt_blocks_are_narrow_ones_and_their_buckets_still_count() {
        let nets = [
            "192.0.2.0/24",
            "10.0.0.0/8",
            "2001:db8:1::/48",
            "2001:db8::/32",
        ]
        .into_iter()
        .filter_map(SourceNet::parse);
        let mut limiter = RateLimiter::new(config()).exempting(nets);
        let t0 = Instant::now();
        let trunk: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(limiter.is_exempt(trunk));
        assert!(limiter.is_exempt("2001:db8:1::7".parse().unwrap()));
        assert!(
            !limiter.is_exempt("10.1.2.3".parse().unwrap()),
            "a /8 is too wide"
        );
        assert!(
            !limiter.is_exempt("2001:db8:2::7".parse().unwrap()),
            "a /32 is too wide"
        );
        // What the endpoint does not exempt (REGISTER, OPTIONS) is limited
        // for a trunk address like for anybody.
        let allowed = (0..10).filter(|_| limiter.check(trunk, t0) == RateDecision::Allow);
        assert_eq!(allowed.count(), 5);
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let decisions: Vec<_> = (0..10).map(|_| limiter.check(other, t0)).collect();
        assert_eq!(
            decisions
                .iter()
                .filter(|d| **d == RateDecision::Allow)
                .count(),
            5,
            "{decisions:?}"
        );
    }

    fn config() -> RateLimitConfig {
        RateLimitConfig {
            enabled: true,
            requests_per_second: 10,
            burst: 5,
            refusals_per_second: 2,
            max_sources: 2,
        }
    }

    #[test]
    fn a_burst_passes_then_two_refusals_a_second_then_silence() {
        let mut limiter = RateLimiter::new(config());
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let t0 = Instant::now();
        let decisions: Vec<_> = (0..10).map(|_| limiter.check(ip, t0)).collect();
        assert_eq!(
            decisions
                .iter()
                .filter(|d| **d == RateDecision::Allow)
                .count(),
            5
        );
        assert_eq!(
            decisions
                .iter()
                .filter(|d| matches!(d, RateDecision::Refuse { .. }))
                .count(),
            2
        );
        assert_eq!(
            decisions
                .iter()
                .filter(|d| **d == RateDecision::Drop)
                .count(),
            3
        );
        // 100 ms later one token is back.
        let later = t0 + Duration::from_millis(100);
        assert_eq!(limiter.check(ip, later), RateDecision::Allow);
        // And another address was never affected.
        let other: IpAddr = "198.51.100.2".parse().unwrap();
        assert_eq!(limiter.check(other, t0), RateDecision::Allow);
    }

    #[test]
    fn the_source_table_is_bounded_and_idle_sources_make_room() {
        let mut limiter = RateLimiter::new(config());
        let t0 = Instant::now();
        let ips: Vec<IpAddr> = (1..=3)
            .map(|i| format!("203.0.113.{i}").parse().unwrap())
            .collect();
        assert_eq!(limiter.check(ips[0], t0), RateDecision::Allow);
        assert_eq!(limiter.check(ips[1], t0), RateDecision::Allow);
        assert!(matches!(
            limiter.check(ips[2], t0),
            RateDecision::Refuse { .. }
        ));
        assert_eq!(limiter.tracked(), 2);
        // After the buckets refill, the old sources are forgotten.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(limiter.check(ips[2], later), RateDecision::Allow);
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn disabled_allows_everything() {
        let mut limiter = RateLimiter::new(RateLimitConfig {
            enabled: false,
            ..config()
        });
        let ip: IpAddr = "::1".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..100).all(|_| limiter.check(ip, t0) == RateDecision::Allow));
    }
}
