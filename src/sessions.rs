//! Session keys and transcripts.
//!
//! Keys have OpenClaw's shapes, so transcripts and tooling line up:
//!
//! | `session.dmScope`          | direct message key                              |
//! |----------------------------|-------------------------------------------------|
//! | `main`                     | `agent:main:main`                               |
//! | `per-peer`                 | `agent:main:direct:<peer>`                      |
//! | `per-channel-peer`         | `agent:main:<channel>:direct:<peer>`            |
//! | `per-account-channel-peer` | `agent:main:<channel>:<account>:direct:<peer>`  |
//!
//! and a group chat is always `agent:main:<channel>:group:<group>`.
//!
//! **Injective.** Channel and account names are `[A-Za-z0-9_-]`, but sender and group ids are
//! free text and may hold `:`. Raw, `{account:"group", peer:"alice"}` and
//! `{group:"direct:alice"}` would both give `agent:main:c:group:direct:alice`. So ids are
//! escaped: `%` becomes `%25` and `:` becomes `%3A` (nothing else changes, so an ordinary id
//! such as `12345` keeps OpenClaw's exact key). No segment of a key then holds a `:`, the
//! number of segments tells the scope apart (3, 4, 5 or 6; the 5-segment forms differ in
//! `direct`/`group`), and each segment decodes uniquely: distinct inputs, distinct keys, in
//! every scope at once.
//!
//! **File names.** A transcript is `<sha256(key) as hex>.jsonl`: 70 bytes whatever the id (a
//! 256-byte id percent-encoded would pass the 255-byte `NAME_MAX`), injective for all
//! practical purposes, and never a path. Every entry carries its `sessionKey`, so a file says
//! whose it is. Transcripts written by earlier versions under the percent-encoded key
//! (`agent%3Amain%3A...jsonl`) are still read, and moved to the new name by the first append
//! (an atomic `rename` that never replaces). Only a key whose ids hold no `:` adopts its old
//! file: an old name with `:` inside an id is exactly the ambiguous case above, and could
//! belong to another sender.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::DmScope;
use crate::pairing::ensure_private_dir;
use crate::redact::Redactor;

/// Channel names that would make session keys ambiguous.
pub const RESERVED_CHANNELS: [&str; 2] = ["direct", "group"];

/// The account used when a message names none.
pub const DEFAULT_ACCOUNT: &str = "default";

/// A session key and how earlier versions spelled it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    key: String,
    /// The key as versions before the escaping built it, when this key may adopt that
    /// transcript (its ids hold no `:`); `None` otherwise.
    legacy: Option<String>,
}

impl SessionKey {
    pub fn as_str(&self) -> &str {
        &self.key
    }

    fn new(key: String, legacy: String, ids: &[&str]) -> Self {
        let adoptable = ids.iter().all(|id| !id.contains(':'));
        Self {
            key,
            legacy: adoptable.then_some(legacy),
        }
    }
}

/// Serialized as the key itself (`POST /api/messages` answers with it).
impl serde::Serialize for SessionKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.key)
    }
}

impl std::fmt::Display for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)
    }
}

/// `%` -> `%25`, `:` -> `%3A`; every other character is kept.
fn escape(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    out
}

/// The session key of a direct message.
pub fn direct_key(scope: DmScope, channel: &str, account: &str, peer: &str) -> SessionKey {
    let shape = |peer: &str| match scope {
        DmScope::Main => "agent:main:main".to_string(),
        DmScope::PerPeer => format!("agent:main:direct:{peer}"),
        DmScope::PerChannelPeer => format!("agent:main:{channel}:direct:{peer}"),
        DmScope::PerAccountChannelPeer => {
            format!("agent:main:{channel}:{account}:direct:{peer}")
        }
    };
    SessionKey::new(shape(&escape(peer)), shape(peer), &[peer])
}

/// The session key of a group chat (groups never share a session with anyone).
pub fn group_key(channel: &str, group: &str) -> SessionKey {
    let shape = |group: &str| format!("agent:main:{channel}:group:{group}");
    SessionKey::new(shape(&escape(group)), shape(group), &[group])
}

/// One line of a transcript.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptEntry<'a> {
    /// The session this entry belongs to (the file name is only its hash).
    pub session_key: &'a str,
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
///
/// Every line passes through the redactor before it is written, whoever writes it (the
/// inbound policy, the agent), so a secret someone pastes or a model echoes never lands on
/// disk.
/// When an appended transcript line must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the append returns: the caller acknowledges the line next (the webhook's
    /// `202 accepted`).
    Synced,
    /// By the caller, later: for a message already held durably elsewhere (the Telegram
    /// journal keeps it until its reply is sent and synced), and for the agent's reply,
    /// synced once it is sent. Syncing a file writes all of its data, so the reply's sync
    /// covers the message's line too: one `fdatasync` per turn instead of two.
    Deferred,
}

#[derive(Debug, Clone)]
pub struct Transcripts {
    dir: PathBuf,
    redactor: Redactor,
}

impl Transcripts {
    /// Transcripts under `dir`, redacting the well-known key shapes only; the gateway adds
    /// its configured secrets with [`Transcripts::with_redactor`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            redactor: Redactor::default(),
        }
    }

    /// The same transcripts, redacted with `redactor`.
    pub fn with_redactor(self, redactor: Redactor) -> Self {
        Self { redactor, ..self }
    }

    /// What every line is redacted with (the gateway's one redactor).
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The transcript file of `key`: the SHA-256 of the key, hex, `.jsonl`.
    pub fn path(&self, key: &SessionKey) -> PathBuf {
        let digest = Sha256::digest(key.as_str().as_bytes());
        self.dir.join(format!("{}.jsonl", hex::encode(digest)))
    }

    /// Where versions before 0.2 kept the transcript of `key`, if `key` may adopt it: every
    /// byte outside `[A-Za-z0-9_-]` of the old key percent-encoded. Such a name can exceed
    /// `NAME_MAX`; then there never was a file.
    fn legacy_path(&self, key: &SessionKey) -> Option<PathBuf> {
        let legacy = key.legacy.as_deref()?;
        let mut name = String::with_capacity(legacy.len() + 6);
        for b in legacy.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                name.push(b as char);
            } else {
                name.push_str(&format!("%{b:02X}"));
            }
        }
        name.push_str(".jsonl");
        (name.len() <= 255).then(|| self.dir.join(name))
    }

    /// Appends one entry as a single `write` on an `O_APPEND` file and syncs it, so an
    /// accepted message is on disk before the sender hears "accepted". The first append to a
    /// key whose transcript still has its old name moves it first (see the module doc).
    /// Any serialisable entry may be appended: the inbound [`TranscriptEntry`], or the
    /// agent's own lines (see `agent::history`).
    pub fn append<E: Serialize>(&self, key: &SessionKey, entry: &E) -> std::io::Result<()> {
        self.append_with(key, entry, Durability::Synced).map(drop)
    }

    /// [`Transcripts::append`], synced now or later: the transcript is returned open, for a
    /// caller that syncs it itself (`File::sync_data` writes every line appended so far).
    pub fn append_with<E: Serialize>(
        &self,
        key: &SessionKey,
        entry: &E,
        durability: Durability,
    ) -> std::io::Result<File> {
        let mut line = self.line(entry);
        line.push(b'\n');
        let path = self.path(key);
        let mut file = match open_append(&path, false) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ensure_private_dir(&self.dir)?;
                self.adopt_legacy(key, &path)?;
                open_append(&path, true)?
            }
            Err(e) => return Err(e),
        };
        file.write_all(&line)?;
        if durability == Durability::Synced {
            file.sync_data()?;
        }
        Ok(file)
    }

    /// `entry` as redacted JSON. A clean line is written as serialized; one with a secret is
    /// redacted value by value, so the replacement cannot break the JSON.
    fn line<E: Serialize>(&self, entry: &E) -> Vec<u8> {
        let line = serde_json::to_string(entry).expect("transcript entries always serialise");
        if matches!(self.redactor.redact(&line), Cow::Borrowed(_)) {
            return line.into_bytes();
        }
        let mut value = serde_json::to_value(entry).expect("transcript entries always serialise");
        self.redactor.redact_json(&mut value);
        serde_json::to_vec(&value).expect("a JSON value always serialises")
    }

    /// Renames the old-named transcript of `key` to `path` without ever replacing a file,
    /// then syncs the directory. Every appender runs this before it creates `path`, so a
    /// concurrent appender either moved the old file already or finds none.
    fn adopt_legacy(&self, key: &SessionKey, path: &Path) -> std::io::Result<()> {
        let Some(legacy) = self.legacy_path(key) else {
            return Ok(());
        };
        let dir = File::open(&self.dir)?;
        let (Some(from), Some(to)) = (legacy.file_name(), path.file_name()) else {
            return Ok(());
        };
        match rustix::fs::renameat_with(&dir, from, &dir, to, rustix::fs::RenameFlags::NOREPLACE) {
            Ok(()) => {
                tracing::info!(
                    "moved the transcript of {key} from {} to {}",
                    legacy.display(),
                    path.display()
                );
                dir.sync_all()
            }
            // No old file, or another appender moved it meanwhile.
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The entries of `key`, one JSON value per line (used by tests and future tooling):
    /// from its file, or from its old-named file while no message moved it yet.
    pub fn read(&self, key: &SessionKey) -> std::io::Result<Vec<serde_json::Value>> {
        match read_lines(&self.path(key))? {
            Some(lines) => Ok(lines),
            None => match self.legacy_path(key) {
                Some(legacy) => Ok(read_lines(&legacy)?.unwrap_or_default()),
                None => Ok(Vec::new()),
            },
        }
    }
}

/// Where a reader of a transcript stopped: the file (device and inode, which an adopting
/// rename keeps) and the offset just past its last complete line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    dev: u64,
    ino: u64,
    offset: u64,
}

/// What [`Transcripts::read_after`] found.
#[derive(Debug)]
pub struct Appended {
    /// The entries after the cursor, or of the whole file when `from_start`.
    pub entries: Vec<serde_json::Value>,
    /// The cursor was `None`, or names another file, or the file shrank: `entries` start
    /// at the beginning and replace whatever the caller kept.
    pub from_start: bool,
    /// Where to continue next time; `None` while the session has no transcript.
    pub cursor: Option<Cursor>,
}

impl Transcripts {
    /// The entries appended to `key`'s transcript since `cursor`, so a caller that keeps the
    /// earlier ones parses each line once instead of the whole file every turn. A line
    /// still being written (no newline yet) is left for the next call.
    pub fn read_after(
        &self,
        key: &SessionKey,
        cursor: Option<Cursor>,
    ) -> std::io::Result<Appended> {
        use std::io::{Read, Seek, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        let open = |path: &Path| match File::open(path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        let file = match open(&self.path(key))? {
            Some(file) => Some(file),
            None => match self.legacy_path(key) {
                Some(legacy) => open(&legacy)?,
                None => None,
            },
        };
        let Some(mut file) = file else {
            return Ok(Appended {
                entries: Vec::new(),
                from_start: true,
                cursor: None,
            });
        };
        let meta = file.metadata()?;
        let (dev, ino) = (meta.dev(), meta.ino());
        let start = match cursor {
            Some(c) if c.dev == dev && c.ino == ino && c.offset <= meta.len() => c.offset,
            _ => 0,
        };
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let entries = bytes[..complete]
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect();
        Ok(Appended {
            entries,
            from_start: start == 0,
            cursor: Some(Cursor {
                dev,
                ino,
                offset: start + complete as u64,
            }),
        })
    }
}

/// Opens a transcript for appending, never through a symbolic link.
fn open_append(path: &Path, create: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .create(create)
        .append(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

fn read_lines(path: &Path) -> std::io::Result<Option<Vec<serde_json::Value>>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_keys_match_openclaw() {
        let k = |s| direct_key(s, "telegram", "bot2", "12345").to_string();
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
        assert_eq!(
            group_key("discord", "g1").to_string(),
            "agent:main:discord:group:g1"
        );
    }

    #[test]
    fn keys_are_injective_across_scopes_and_groups() {
        use DmScope::*;
        let ids = [
            "alice",
            "direct:alice",
            "group",
            "a%3Ab",
            "a:b",
            "%",
            ":",
            "x:direct:y",
        ];
        let accounts = ["default", "group", "direct", "a"];
        let mut seen = std::collections::HashMap::new();
        let mut add = |key: SessionKey, input: String| {
            if let Some(other) = seen.insert(key.to_string(), input.clone()) {
                panic!("{key} from both {other} and {input}");
            }
        };
        for id in ids {
            for channel in ["c", "d"] {
                add(group_key(channel, id), format!("group {channel}/{id}"));
                add(
                    direct_key(PerChannelPeer, channel, "default", id),
                    format!("pcp {channel}/{id}"),
                );
                for account in accounts {
                    add(
                        direct_key(PerAccountChannelPeer, channel, account, id),
                        format!("pacp {channel}/{account}/{id}"),
                    );
                }
            }
            add(direct_key(PerPeer, "c", "default", id), format!("pp {id}"));
        }
        add(direct_key(Main, "c", "default", "x"), "main".into());
    }

    #[test]
    fn file_names_are_short_and_contained() {
        let t = Transcripts::new("/s");
        let long = "x".repeat(256);
        let emoji = "\u{1F600}".repeat(64);
        for id in [long.as_str(), emoji.as_str(), "../../etc/passwd"] {
            let path = t.path(&group_key("c", id));
            assert_eq!(path.parent(), Some(Path::new("/s")));
            assert_eq!(path.file_name().unwrap().len(), 70);
        }
        assert!(t
            .legacy_path(&direct_key(DmScope::PerPeer, "c", "d", "a:b"))
            .is_none());
    }

    #[test]
    fn lines_are_redacted_before_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let secret = crate::secret::Secret::new("configured-secret-value");
        let t = Transcripts::new(dir.path()).with_redactor(Redactor::new([&secret]));
        let key = direct_key(DmScope::PerChannelPeer, "c", "default", "7");
        let text = "my keys: configured-secret-value and sk-proj-abcdefghijklmnopqrstuvwx";
        let entry = TranscriptEntry {
            session_key: key.as_str(),
            ts: 1,
            channel: "c",
            account_id: "default",
            peer: "7",
            group: None,
            text,
        };
        t.append(&key, &entry).unwrap();
        t.append(
            &key,
            &serde_json::json!({"sessionKey": key.as_str(), "text": "clean"}),
        )
        .unwrap();
        let raw = std::fs::read_to_string(t.path(&key)).unwrap();
        assert!(
            !raw.contains("configured-secret") && !raw.contains("sk-proj"),
            "{raw}"
        );
        let lines = t.read(&key).unwrap();
        assert_eq!(lines[0]["text"], "my keys: [redacted] and [redacted]");
        assert_eq!(lines[0]["peer"], "7");
        assert_eq!(lines[1]["text"], "clean");
    }

    #[test]
    fn read_after_returns_only_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let t = Transcripts::new(dir.path());
        let key = group_key("c", "g");
        let first = t.read_after(&key, None).unwrap();
        assert!(first.entries.is_empty() && first.cursor.is_none());
        t.append(&key, &serde_json::json!({"text": "one"})).unwrap();
        let a = t.read_after(&key, None).unwrap();
        assert_eq!((a.entries.len(), a.from_start), (1, true));
        t.append(&key, &serde_json::json!({"text": "two"})).unwrap();
        // A line still being written is left for later.
        let mut file = OpenOptions::new().append(true).open(t.path(&key)).unwrap();
        file.write_all(b"{\"text\": \"thr").unwrap();
        let b = t.read_after(&key, a.cursor).unwrap();
        assert!(!b.from_start);
        assert_eq!(b.entries, [serde_json::json!({"text": "two"})]);
        file.write_all(b"ee\"}\n").unwrap();
        let c = t.read_after(&key, b.cursor).unwrap();
        assert_eq!(c.entries, [serde_json::json!({"text": "three"})]);
        // Another file under the name (replaced, or truncated): read from the start.
        std::fs::remove_file(t.path(&key)).unwrap();
        t.append(&key, &serde_json::json!({"text": "new"})).unwrap();
        let d = t.read_after(&key, c.cursor).unwrap();
        assert!(d.from_start);
        assert_eq!(d.entries, [serde_json::json!({"text": "new"})]);
    }
}
