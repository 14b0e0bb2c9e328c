//! Session keys and transcripts.
//!
//! Keys are formed exactly as OpenClaw forms them, so transcripts and tooling line up:
//!
//! | `session.dmScope`          | direct message key                              |
//! |----------------------------|-------------------------------------------------|
//! | `main`                     | `agent:main:main`                               |
//! | `per-peer`                 | `agent:main:direct:<peer>`                      |
//! | `per-channel-peer`         | `agent:main:<channel>:direct:<peer>`            |
//! | `per-account-channel-peer` | `agent:main:<channel>:<account>:direct:<peer>`  |
//!
//! and a group chat is always `agent:main:<channel>:group:<group>`. Channel and account
//! names cannot contain `:` and the channel names `direct` and `group` are reserved, so two
//! different senders never get the same key. Each key maps to its own file through an
//! injective encoding, so one peer can never read or append to another's history.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::DmScope;
use crate::pairing::ensure_private_dir;

/// Channel names that would make session keys ambiguous.
pub const RESERVED_CHANNELS: [&str; 2] = ["direct", "group"];

/// The account used when a message names none.
pub const DEFAULT_ACCOUNT: &str = "default";

/// The session key of a direct message.
pub fn direct_key(scope: DmScope, channel: &str, account: &str, peer: &str) -> String {
    match scope {
        DmScope::Main => "agent:main:main".to_string(),
        DmScope::PerPeer => format!("agent:main:direct:{peer}"),
        DmScope::PerChannelPeer => format!("agent:main:{channel}:direct:{peer}"),
        DmScope::PerAccountChannelPeer => {
            format!("agent:main:{channel}:{account}:direct:{peer}")
        }
    }
}

/// The session key of a group chat (groups never share a session with anyone).
pub fn group_key(channel: &str, group: &str) -> String {
    format!("agent:main:{channel}:group:{group}")
}

/// One line of a transcript.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptEntry<'a> {
    /// Unix milliseconds.
    pub ts: u128,
    pub channel: &'a str,
    pub account_id: &'a str,
    pub peer: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'a str>,
    pub text: &'a str,
}

/// The transcripts of one installation (`~/.openclaw/agents/main/sessions`).
#[derive(Debug, Clone)]
pub struct Transcripts {
    dir: PathBuf,
}

impl Transcripts {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The transcript file of `key`: every byte outside `[A-Za-z0-9_-]` is percent-encoded,
    /// so distinct keys always give distinct names and none can climb out of the directory.
    pub fn path(&self, key: &str) -> PathBuf {
        let mut name = String::with_capacity(key.len() + 6);
        for b in key.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                name.push(b as char);
            } else {
                name.push_str(&format!("%{b:02X}"));
            }
        }
        name.push_str(".jsonl");
        self.dir.join(name)
    }

    /// Appends one entry as a single `write` on an `O_APPEND` file and syncs it, so an
    /// accepted message is on disk before the sender hears "accepted".
    pub fn append(&self, key: &str, entry: &TranscriptEntry) -> std::io::Result<()> {
        ensure_private_dir(&self.dir)?;
        let mut line = serde_json::to_vec(entry).expect("transcript entries always serialise");
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.path(key))?;
        file.write_all(&line)?;
        file.sync_data()
    }

    /// The entries of `key`, one JSON value per line (used by tests and future tooling).
    pub fn read(&self, key: &str) -> std::io::Result<Vec<serde_json::Value>> {
        read_lines(&self.path(key))
    }
}

fn read_lines(path: &Path) -> std::io::Result<Vec<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_openclaw() {
        let k = |s| direct_key(s, "telegram", "bot2", "12345");
        assert_eq!(k(DmScope::Main), "agent:main:main");
        assert_eq!(k(DmScope::PerPeer), "agent:main:direct:12345");
        assert_eq!(
            k(DmScope::PerChannelPeer),
            "agent:main:telegram:direct:12345"
        );
        assert_eq!(
            k(DmScope::PerAccountChannelPeer),
            "agent:main:telegram:bot2:direct:12345"
        );
        assert_eq!(group_key("discord", "g1"), "agent:main:discord:group:g1");
    }

    #[test]
    fn file_names_are_injective_and_contained() {
        let t = Transcripts::new("/s");
        let a = t.path("agent:main:x:direct:../../etc/passwd");
        assert_eq!(a.parent(), Some(Path::new("/s")));
        assert_ne!(t.path("a:b"), t.path("a%3Ab"));
        assert_ne!(t.path("a/b"), t.path("a%2Fb"));
    }
}
