//! Per-client limit on failed authentications.
//!
//! After `maxAttempts` failures inside `windowSeconds`, a client address is locked out for
//! `lockoutSeconds`: every request from it gets 429 with `Retry-After`, *without* looking at
//! the token, so guessing stops paying off. A success does not reset the count: on the
//! appliance every client arrives from 127.0.0.1 (SSH tunnel), and a reset would let a
//! guesser hide behind the owner's traffic.
//!
//! The check runs on every request, so its fast path is one atomic load: the latest lockout
//! end of any client. Only while some lockout is live does a request touch the map.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimit;

/// Clients remembered at most; beyond that, entries without a live lockout are dropped.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start_ms: u64,
    failures: u32,
    locked_until_ms: u64,
}

pub struct FailureLimiter {
    limits: RateLimit,
    epoch: Instant,
    clients: Mutex<HashMap<IpAddr, Entry>>,
    /// Milliseconds since `epoch` at which the last lockout of any client ends.
    lockouts_end_ms: AtomicU64,
}

/// A failure that started a lockout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    pub failures: u32,
    pub secs: u64,
}

impl FailureLimiter {
    pub fn new(limits: RateLimit) -> Self {
        Self {
            limits,
            epoch: Instant::now(),
            clients: Mutex::new(HashMap::new()),
            lockouts_end_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Seconds until `ip` may try again, if it is locked out.
    pub fn retry_after(&self, ip: IpAddr) -> Option<u64> {
        if self.limits.max_attempts == 0 {
            return None;
        }
        let now = self.now_ms();
        if now >= self.lockouts_end_ms.load(Ordering::Relaxed) {
            return None;
        }
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let until = clients.get(&ip)?.locked_until_ms;
        (until > now).then(|| (until - now).div_ceil(1000))
    }

    /// Counts a failure of `ip`; returns the lockout if this failure started one.
    pub fn record_failure(&self, ip: IpAddr) -> Option<Lockout> {
        if self.limits.max_attempts == 0 {
            return None;
        }
        let now = self.now_ms();
        let window_ms = self.limits.window_secs * 1000;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_TRACKED && !clients.contains_key(&ip) {
            clients.retain(|_, e| e.locked_until_ms > now);
        }
        let entry = clients.entry(ip).or_insert(Entry {
            window_start_ms: now,
            failures: 0,
            locked_until_ms: 0,
        });
        if now.saturating_sub(entry.window_start_ms) >= window_ms {
            entry.window_start_ms = now;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures < self.limits.max_attempts || entry.locked_until_ms > now {
            return None;
        }
        let failures = entry.failures;
        entry.locked_until_ms = now + self.limits.lockout_secs * 1000;
        entry.window_start_ms = entry.locked_until_ms;
        entry.failures = 0;
        self.lockouts_end_ms
            .fetch_max(entry.locked_until_ms, Ordering::Relaxed);
        Some(Lockout {
            failures,
            secs: self.limits.lockout_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_the_limit_and_only_that_client() {
        let limiter = FailureLimiter::new(RateLimit {
            max_attempts: 3,
            window_secs: 60,
            lockout_secs: 300,
            ..RateLimit::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(limiter.record_failure(a), None);
        assert_eq!(limiter.record_failure(a), None);
        assert_eq!(limiter.retry_after(a), None);
        assert_eq!(
            limiter.record_failure(a),
            Some(Lockout {
                failures: 3,
                secs: 300
            })
        );
        let wait = limiter.retry_after(a).unwrap();
        assert!((299..=300).contains(&wait), "{wait}");
        assert_eq!(limiter.retry_after(b), None);
    }

    #[test]
    fn zero_attempts_disables() {
        let limiter = FailureLimiter::new(RateLimit {
            max_attempts: 0,
            ..RateLimit::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..100 {
            assert_eq!(limiter.record_failure(a), None);
        }
        assert_eq!(limiter.retry_after(a), None);
    }
}
