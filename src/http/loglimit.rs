//! Rate limits for the log lines an unauthenticated client can cause.
//!
//! Every refused request used to be one log line, so a flood of bad requests was a flood of
//! disk writes. Now each kind of line is written at most `PER_CLIENT` times per client key
//! (see `client`) and `TOTAL` times over all clients in each `WINDOW`; what is held back is
//! counted and, once the window is over, summed up in one line per client and kind:
//! `N further auth failures from <key> suppressed in the last S s`. A reader counting
//! `auth failure from <ip>` lines (as `xtask bench` does) never counts the summary (plural)
//! as one failure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::ClientKey;

/// Length of one accounting window.
pub const WINDOW: Duration = Duration::from_secs(2);
/// Lines of one kind per client key and window.
pub const PER_CLIENT: u32 = 10;
/// Lines of all kinds and clients per window.
pub const TOTAL: u32 = 50;
/// Client keys counted individually per window; the rest are summed up together.
const MAX_TRACKED: usize = 4096;

/// The kinds of line limited, by what the summary calls them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    AuthFailure,
    Refusal,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Self::AuthFailure => "auth failures",
            Self::Refusal => "refused requests",
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Count {
    logged: u32,
    suppressed: u64,
}

struct State {
    window_start: Instant,
    total: u32,
    counts: HashMap<(Kind, Option<ClientKey>), Count>,
}

pub struct LogLimiter {
    state: Mutex<State>,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                window_start: Instant::now(),
                total: 0,
                counts: HashMap::new(),
            }),
        }
    }
}

impl LogLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a line of `kind` about `ip` may be written now; if not, it is counted for the
    /// summary.
    pub fn allow(&self, kind: Kind, ip: IpAddr) -> bool {
        let mut state = self.lock();
        state.roll(Instant::now());
        let key = ClientKey::of(ip);
        let tracked =
            state.counts.len() < MAX_TRACKED || state.counts.contains_key(&(kind, Some(key)));
        let slot = (kind, tracked.then_some(key));
        let under_total = state.total < TOTAL;
        let count = state.counts.entry(slot).or_default();
        if tracked && under_total && count.logged < PER_CLIENT {
            count.logged += 1;
            state.total += 1;
            true
        } else {
            count.suppressed += 1;
            false
        }
    }

    /// Writes the summaries of a finished window; called periodically.
    pub fn flush(&self) {
        self.lock().roll(Instant::now());
    }
}

impl State {
    fn roll(&mut self, now: Instant) {
        let elapsed = now.duration_since(self.window_start);
        if elapsed < WINDOW {
            return;
        }
        for ((kind, key), count) in self.counts.drain() {
            if count.suppressed == 0 {
                continue;
            }
            let from = key.map_or_else(|| "other clients".to_string(), |k| k.to_string());
            tracing::warn!(
                "{} further {} from {from} suppressed in the last {} s",
                count.suppressed,
                kind.plural(),
                elapsed.as_secs().max(1)
            );
        }
        self.window_start = now;
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_and_total_budgets() {
        let limiter = LogLimiter::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let allowed = (0..100)
            .filter(|n| limiter.allow(Kind::AuthFailure, format!("127.0.0.{n}").parse().unwrap()))
            .count();
        assert_eq!(allowed, PER_CLIENT as usize);
        assert!(limiter.allow(Kind::Refusal, a));
        let allowed = (0..1000)
            .filter(|n| {
                let ip = format!("10.0.{}.{}", n / 250, n % 250).parse().unwrap();
                limiter.allow(Kind::AuthFailure, ip)
            })
            .count();
        assert_eq!(allowed, (TOTAL - PER_CLIENT - 1) as usize);
    }
}
