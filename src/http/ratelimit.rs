//! The failed-authentication limiter.
//!
//! Failures are counted per client key (see `client`: all of loopback is one key, IPv6 by
//! /64) and over all clients together. After `maxAttempts` failures of one key inside
//! `windowSeconds`, that key is locked out for `lockoutSeconds`; after
//! `GLOBAL_FACTOR * maxAttempts` failures of all keys together, every client is. Rotating
//! source addresses inside a key gains nothing, and rotating keys (many /64s) is capped by
//! the global budget. A success never resets a count: a guesser cannot hide behind the
//! owner's traffic.
//!
//! What a lockout does to a request depends on whether the request can have caused it:
//! - a remote key locked out by its own failures gets 429 with `Retry-After` *without its
//!   token being compared*;
//! - during a global lockout, a remote key that has not failed itself has its token compared:
//!   the right token is served, a wrong one gets 429 and counts as the key's failure, so each
//!   fresh key gets one guess instead of `maxAttempts`;
//! - on loopback the address says nothing (the owner's SSH tunnel and any local process both
//!   arrive from 127.0.0.1), so a loopback request always has its token compared: the owner's
//!   correct token is never refused for a lockout somebody else caused. A local guesser still
//!   gets 429 for every wrong token, and against guessing itself the token's 256 random bits
//!   are the defence, not the limiter (the comparison is a constant-time SHA-256 digest
//!   comparison, so comparing leaks nothing).
//!
//! The check runs on every request, so its fast path is one atomic load: the latest lockout
//! end of any client. Only while some lockout is live does a request touch the map.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::client::ClientKey;
use crate::config::RateLimit;

/// Clients remembered at most; beyond that, entries without a live lockout are dropped.
const MAX_TRACKED: usize = 10_000;
/// The failures of all clients together that lock everyone out, as a multiple of
/// `maxAttempts`.
pub const GLOBAL_FACTOR: u32 = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    window_start_ms: u64,
    failures: u32,
    locked_until_ms: u64,
}

impl Entry {
    /// Counts a failure; returns the failure count if it starts a lockout.
    fn fail(&mut self, now: u64, limits: &RateLimit, max: u32) -> Option<u32> {
        if now.saturating_sub(self.window_start_ms) >= limits.window_secs * 1000 {
            self.window_start_ms = now;
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures < max || self.locked_until_ms > now {
            return None;
        }
        let failures = self.failures;
        self.locked_until_ms = now + limits.lockout_secs * 1000;
        self.window_start_ms = self.locked_until_ms;
        self.failures = 0;
        Some(failures)
    }

    fn failed_recently(&self, now: u64, limits: &RateLimit) -> bool {
        self.failures > 0 && now.saturating_sub(self.window_start_ms) < limits.window_secs * 1000
    }
}

#[derive(Default)]
struct State {
    clients: HashMap<ClientKey, Entry>,
    global: Entry,
}

pub struct FailureLimiter {
    limits: RateLimit,
    epoch: Instant,
    state: Mutex<State>,
    /// Milliseconds since `epoch` at which the last lockout (any client, or global) ends.
    lockouts_end_ms: AtomicU64,
}

/// What the limiter says about a request, before its token is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// No lockout concerns it.
    Open,
    /// Its own key is locked out: 429 without comparing the token.
    Refuse { retry_after: u64 },
    /// A lockout it may not have caused is live: compare the token; serve the right one,
    /// answer a wrong one with 429.
    TokenFirst { retry_after: u64 },
}

/// Who a new lockout locks out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Client(ClientKey),
    Everyone,
}

/// A failure that started a lockout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    pub scope: Scope,
    pub failures: u32,
    pub secs: u64,
}

impl FailureLimiter {
    pub fn new(limits: RateLimit) -> Self {
        Self {
            limits,
            epoch: Instant::now(),
            state: Mutex::new(State::default()),
            lockouts_end_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How a request from `ip` is to be treated (see the module docs).
    pub fn gate(&self, ip: IpAddr) -> Gate {
        if self.limits.max_attempts == 0 {
            return Gate::Open;
        }
        let now = self.now_ms();
        if now >= self.lockouts_end_ms.load(Ordering::Relaxed) {
            return Gate::Open;
        }
        let key = ClientKey::of(ip);
        let state = self.lock();
        let own = state.clients.get(&key).copied().unwrap_or_default();
        let secs = |until: u64| (until - now).div_ceil(1000);
        if own.locked_until_ms > now {
            let retry_after = secs(own.locked_until_ms);
            return if key.is_loopback() {
                Gate::TokenFirst { retry_after }
            } else {
                Gate::Refuse { retry_after }
            };
        }
        if state.global.locked_until_ms > now {
            let retry_after = secs(state.global.locked_until_ms);
            return if !key.is_loopback() && own.failed_recently(now, &self.limits) {
                Gate::Refuse { retry_after }
            } else {
                Gate::TokenFirst { retry_after }
            };
        }
        Gate::Open
    }

    /// Counts a failure of `ip`; returns the lockout if this failure started one.
    pub fn record_failure(&self, ip: IpAddr) -> Option<Lockout> {
        let max = self.limits.max_attempts;
        if max == 0 {
            return None;
        }
        let now = self.now_ms();
        let key = ClientKey::of(ip);
        let mut state = self.lock();
        if state.clients.len() >= MAX_TRACKED && !state.clients.contains_key(&key) {
            state.clients.retain(|_, e| e.locked_until_ms > now);
        }
        let own = state
            .clients
            .entry(key)
            .or_default()
            .fail(now, &self.limits, max)
            .map(|failures| Lockout {
                scope: Scope::Client(key),
                failures,
                secs: self.limits.lockout_secs,
            });
        let global = state
            .global
            .fail(now, &self.limits, max.saturating_mul(GLOBAL_FACTOR))
            .map(|failures| Lockout {
                scope: Scope::Everyone,
                failures,
                secs: self.limits.lockout_secs,
            });
        if own.is_some() || global.is_some() {
            self.lockouts_end_ms
                .fetch_max(now + self.limits.lockout_secs * 1000, Ordering::Relaxed);
        }
        global.or(own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_attempts: u32) -> FailureLimiter {
        // The defaults: a 60 s window, a 300 s lockout.
        FailureLimiter::new(RateLimit {
            max_attempts,
            ..RateLimit::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn locks_out_after_the_limit_and_only_that_client() {
        let limiter = limiter(3);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        assert_eq!(limiter.record_failure(a), None);
        assert_eq!(limiter.record_failure(a), None);
        assert_eq!(limiter.gate(a), Gate::Open);
        let lockout = limiter.record_failure(a).unwrap();
        assert_eq!(lockout.scope, Scope::Client(ClientKey::of(a)));
        assert_eq!(lockout.failures, 3);
        let Gate::Refuse { retry_after } = limiter.gate(a) else {
            panic!("{:?}", limiter.gate(a))
        };
        assert!((299..=300).contains(&retry_after), "{retry_after}");
        assert_eq!(limiter.gate(b), Gate::Open);
    }

    #[test]
    fn rotating_inside_a_key_gains_nothing() {
        let limiter = limiter(3);
        for n in 1..=3 {
            limiter.record_failure(ip(&format!("2001:db8:0:1::{n}")));
        }
        assert!(matches!(
            limiter.gate(ip("2001:db8:0:1::99")),
            Gate::Refuse { .. }
        ));
        for n in 1..=3 {
            limiter.record_failure(ip(&format!("127.0.0.{n}")));
        }
        // Loopback: locked, but the token decides.
        assert!(matches!(
            limiter.gate(ip("127.9.9.9")),
            Gate::TokenFirst { .. }
        ));
    }

    #[test]
    fn the_global_budget_leaves_one_guess_per_fresh_key() {
        let limiter = limiter(2);
        let mut last = None;
        for n in 0..GLOBAL_FACTOR * 2 {
            // Each key fails once: never a lockout of its own.
            last = limiter.record_failure(ip(&format!("10.1.0.{n}")));
        }
        assert_eq!(last.map(|l| l.scope), Some(Scope::Everyone));
        assert!(matches!(limiter.gate(ip("10.1.0.1")), Gate::Refuse { .. }));
        assert!(matches!(
            limiter.gate(ip("10.2.0.1")),
            Gate::TokenFirst { .. }
        ));
    }

    #[test]
    fn zero_attempts_disables() {
        let limiter = limiter(0);
        let a = ip("10.0.0.1");
        for _ in 0..100 {
            assert_eq!(limiter.record_failure(a), None);
        }
        assert_eq!(limiter.gate(a), Gate::Open);
    }
}
