//! A budget for refusal lines: whoever can reach the socket can make the proxy refuse as
//! fast as it can connect, and each refusal must not become a journal write. At most
//! `LINES` per `WINDOW` are logged; the rest are counted and summed up in one line once the
//! window is over.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Length of one accounting window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Refusal lines logged per window.
pub const LINES: u32 = 20;

struct State {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

pub struct RefusalLog {
    state: Mutex<State>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                window_start: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }
}

impl RefusalLog {
    /// Logs `line` as a warning if the window's budget allows, else counts it.
    pub fn refused(&self, line: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        roll(&mut state, Instant::now());
        if state.logged < LINES {
            state.logged += 1;
            tracing::warn!("{line}");
        } else {
            state.suppressed += 1;
        }
    }

    /// Writes the summary of a finished window; called every `WINDOW` so that the count of
    /// a burst is reported even when nothing follows it.
    pub fn flush(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        roll(&mut state, Instant::now());
    }
}

fn roll(state: &mut State, now: Instant) {
    let elapsed = now.duration_since(state.window_start);
    if elapsed < WINDOW {
        return;
    }
    if state.suppressed > 0 {
        tracing::warn!(
            "{} further refused requests not logged in the last {} s",
            state.suppressed,
            elapsed.as_secs()
        );
    }
    state.window_start = now;
    state.logged = 0;
    state.suppressed = 0;
}
