//! How the Telegram channel is doing, for `clawfort status`: polling or not, the bot's name,
//! the last good poll and the last error. Never the token (the channel's errors never hold
//! it).

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde::Serialize;

/// What the channel is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not yet past `getMe`.
    #[default]
    Starting,
    /// Long polling; the last `getUpdates` answered.
    Polling,
    /// The last call failed; the channel retries with backoff.
    Retrying,
    /// Given up (a rejected token, another poller) or shut down.
    Stopped,
}

/// A snapshot of the channel's health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub state: State,
    /// The bot's `@username`, once `getMe` answered.
    pub bot: Option<String>,
    /// When a `getUpdates` last answered (RFC 3339, UTC).
    pub last_ok: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

/// The channel's health, shared between the channel (which writes it) and the status route.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<Snapshot>>);

impl Health {
    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    pub(super) fn started(&self, bot: Option<&str>) {
        let mut s = self.lock();
        s.state = State::Polling;
        s.bot = bot.map(str::to_owned);
    }

    pub(super) fn polled(&self) {
        let mut s = self.lock();
        s.state = State::Polling;
        s.last_ok = Some(Timestamp::now().to_string());
    }

    /// A failed call; `fatal` when the channel gives up.
    pub(super) fn failed(&self, error: &impl std::fmt::Display, fatal: bool) {
        let mut s = self.lock();
        s.state = if fatal {
            State::Stopped
        } else {
            State::Retrying
        };
        s.last_error = Some(error.to_string());
        s.last_error_at = Some(Timestamp::now().to_string());
    }

    pub(super) fn stopped(&self) {
        self.lock().state = State::Stopped;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
