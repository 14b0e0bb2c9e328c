//! Security events: what the owner must hear about without reading a journal.
//!
//! An [`Event`] is one of a closed set of kinds, its fields short, typed and built by our
//! code (never free text from a message, never a pairing code or a secret). Each becomes
//! one line of a feed ([`feed`], JSON lines) and, batched, a message in the owner's chat.
//!
//! Two feeds, because the gateway runs confined and writes only its state directory:
//! - the gateway's own, `events.jsonl` in the state directory ([`gateway_feed`]): pairing
//!   requests, exec denials and approvals asked, budget warnings, a restart after a crash;
//!   written by the pipeline's writer task ([`pipeline`]) from what [`Events::record`] sends;
//! - the host's, [`HOST_FEED`], root's (dir 755, file 644): fail2ban bans and integrity
//!   changes, appended by `clawfort events emit` run as root from fail2ban's action and the
//!   integrity check; the gateway only reads it ([`follow`]).
//!
//! `clawfort events` ([`cli`]) shows both merged by time. The owner's messages come from
//! [`notify`]: events arriving within one window become one message, at most one a window.

pub mod aide;
pub mod cli;
pub mod feed;
pub mod follow;
pub mod marker;
pub mod notify;
pub mod pipeline;

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::paths::Paths;

pub use pipeline::{Events, Pipeline};

/// Root's feed of host events (fail2ban, the integrity check).
pub const HOST_FEED: &str = "/var/lib/clawfort/events.jsonl";
/// Names another host feed, for tests (the gateway and `events emit` read it).
pub const HOST_FEED_ENV: &str = "CLAWFORT_HOST_EVENTS";

/// The host feed: [`HOST_FEED`], or what [`HOST_FEED_ENV`] names.
pub fn host_feed() -> PathBuf {
    std::env::var_os(HOST_FEED_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(HOST_FEED), PathBuf::from)
}

/// `~/.openclaw/events.jsonl`: the gateway's own events.
pub fn gateway_feed(paths: &Paths) -> PathBuf {
    paths.state_dir.join("events.jsonl")
}

/// The longest command summary kept (the command's first word, see [`command_summary`]).
pub const SUMMARY_CAP: usize = 40;

/// One security event. The kinds are closed: a line of another kind in a feed is skipped
/// as damaged, never shown as text it carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Event {
    /// fail2ban banned an address in a jail.
    Fail2banBan { jail: String, ip: IpAddr },
    /// Someone unknown asked to talk to the agent (the code stays in `clawfort pairing
    /// list`: whoever reads the chat must not be able to approve with it).
    PairingRequest { channel: String, sender: String },
    /// The approvals policy or an approver refused a command of the agent.
    ExecDenied { command: String, session: String },
    /// A command of the agent waits for an approver.
    ExecWaiting { command: String, session: String },
    /// The daily integrity check found files added, removed or changed.
    Integrity {
        added: u64,
        removed: u64,
        changed: u64,
    },
    /// Spending crossed 80 % of a budget.
    Budget {
        period: String,
        spent_usd: f64,
        limit_usd: f64,
    },
    /// The gateway started and found its previous run had not stopped cleanly.
    GatewayCrashRestart,
    /// A kernel's boot entry used up its tries without a good boot, so the machine booted the
    /// entry before it (systemd-boot's boot counting; the UEFI images).
    BootFallback { failed: String, booted: String },
}

impl Event {
    /// The words for the table and for the owner: built from typed fields only.
    pub fn describe(&self) -> String {
        match self {
            Self::Fail2banBan { jail, ip } => format!("fail2ban banned {ip} (jail {jail})"),
            Self::PairingRequest { channel, sender } => format!(
                "pairing request from {sender} on {channel} (clawfort pairing list shows it)"
            ),
            Self::ExecDenied { command, session } => {
                format!("exec denied: `{command}` (session {session})")
            }
            Self::ExecWaiting { command, session } => {
                format!("exec waits for approval: `{command}` (session {session})")
            }
            Self::Integrity {
                added,
                removed,
                changed,
            } => format!(
                "integrity check: {added} added, {removed} removed, {changed} changed files \
                 (see the clawfort-integrity-check unit's journal)"
            ),
            Self::Budget {
                period,
                spent_usd,
                limit_usd,
            } => format!("{period} budget: ${spent_usd:.2} of ${limit_usd:.2} spent"),
            Self::GatewayCrashRestart => {
                "the gateway restarted after a crash (its last run did not stop cleanly)".to_owned()
            }
            Self::BootFallback { failed, booted } => format!(
                "boot entry {failed} failed all its tries; the machine fell back to {booted} \
                 (bootctl list shows both)"
            ),
        }
    }

    /// The kind's name, as in the feed (`fail2ban-ban`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fail2banBan { .. } => "fail2ban-ban",
            Self::PairingRequest { .. } => "pairing-request",
            Self::ExecDenied { .. } => "exec-denied",
            Self::ExecWaiting { .. } => "exec-waiting",
            Self::Integrity { .. } => "integrity",
            Self::Budget { .. } => "budget",
            Self::GatewayCrashRestart => "gateway-crash-restart",
            Self::BootFallback { .. } => "boot-fallback",
        }
    }

    /// Whether the owner gets a message from [`notify`] for it. A budget warning has its
    /// own notice (sent once, its delivery recorded by the ledger), and an approval that
    /// waits its own prompt to the approvers: a second message would say the same.
    pub fn notifies(&self) -> bool {
        !matches!(self, Self::Budget { .. } | Self::ExecWaiting { .. })
    }
}

/// Where a feed line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Gateway,
    Host,
}

/// One line of a feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC.
    pub ts: jiff::Timestamp,
    pub source: Source,
    #[serde(flatten)]
    pub event: Event,
}

impl Record {
    pub fn now(source: Source, event: Event) -> Self {
        Self {
            ts: jiff::Timestamp::now(),
            source,
            event,
        }
    }
}

/// What an exec event says of a command: its first word when that is a plain program
/// name or path, cut to [`SUMMARY_CAP`] characters; anything else is `(a command)`. The
/// rest of a command line can hold anything, a secret included, so it never leaves.
pub fn command_summary(command: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._/+-".contains(c);
    match command.split_whitespace().next() {
        Some(word) if word.chars().all(plain) => word.chars().take(SUMMARY_CAP).collect(),
        _ => "(a command)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_flat_json_object_tagged_by_kind() {
        let record = Record {
            ts: "2026-11-30T09:00:00Z".parse().unwrap(),
            source: Source::Host,
            event: Event::Fail2banBan {
                jail: "sshd".into(),
                ip: "192.0.2.7".parse().unwrap(),
            },
        };
        let line = serde_json::to_string(&record).unwrap();
        assert_eq!(
            line,
            r#"{"ts":"2026-11-30T09:00:00Z","source":"host","kind":"fail2ban-ban","jail":"sshd","ip":"192.0.2.7"}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), record);
        let crash = Record {
            event: Event::GatewayCrashRestart,
            ..record
        };
        let line = serde_json::to_string(&crash).unwrap();
        assert!(
            line.ends_with(r#""kind":"gateway-crash-restart"}"#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), crash);
    }

    #[test]
    fn a_command_summary_keeps_the_first_plain_word_only() {
        assert_eq!(command_summary("ls -la /tmp"), "ls");
        assert_eq!(
            command_summary("  /usr/bin/curl -H 'Authorization: x'"),
            "/usr/bin/curl"
        );
        assert_eq!(command_summary("FOO=sk-secret make"), "(a command)");
        assert_eq!(command_summary("$(cat key)"), "(a command)");
        assert_eq!(command_summary(""), "(a command)");
        assert_eq!(command_summary(&"a".repeat(100)).len(), SUMMARY_CAP);
    }
}
