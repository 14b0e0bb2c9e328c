//! The pairing store: who may talk to the agent, per channel.
//!
//! Files under `~/.openclaw/credentials/`, as OpenClaw names them:
//! `<channel>-pairing.json` holds pending requests (code, sender, times) and
//! `<channel>-allowFrom.json` the approved senders and groups. Every change happens under the
//! channel's lock and replaces files atomically (see `atomic`), so the CLI and a running
//! gateway can both write at any moment without losing an approval, and the gateway sees a
//! CLI approval on the next message without a restart (it reads the files each time).
//!
//! Approval writes the allow-list *before* removing the request: a crash in between leaves a
//! stale request for an already-approved sender, which readers ignore and the next write
//! drops, and never an approved sender without a record.

pub(crate) mod atomic;
pub mod format;

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use atomic::ensure_private_dir;
use format::Format;

/// OpenClaw's pairing alphabet: no 0/O, 1/I to misread.
pub const CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
pub const CODE_LEN: usize = 8;
/// A code is valid for one hour.
pub const CODE_TTL_SECS: u64 = 3600;
/// At most this many pending requests per channel; further unknown senders get no code.
pub const MAX_PENDING: usize = 3;

/// Channel and account names become file names and session-key segments.
pub fn is_valid_channel_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A sender is a person (`direct`) or a group chat, approved separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    Direct,
    Group,
}

impl std::fmt::Display for PeerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            PeerKind::Direct => "direct",
            PeerKind::Group => "group",
        })
    }
}

/// A pending pairing request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingRequest {
    pub id: String,
    pub kind: PeerKind,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    pub last_seen_at: u64,
}

impl PairingRequest {
    fn expired(&self, now: u64) -> bool {
        now >= self.created_at.saturating_add(CODE_TTL_SECS)
    }
}

#[derive(Debug, Default, Serialize)]
struct PairingFile {
    version: u32,
    requests: Vec<PairingRequest>,
}

/// The approved senders of one channel.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowList {
    pub version: u32,
    /// Approved direct senders.
    pub allow_from: Vec<String>,
    /// Approved group chats.
    pub groups: Vec<String>,
}

impl AllowList {
    pub fn contains(&self, kind: PeerKind, id: &str) -> bool {
        self.list(kind).iter().any(|x| x == id)
    }

    fn list(&self, kind: PeerKind) -> &Vec<String> {
        match kind {
            PeerKind::Direct => &self.allow_from,
            PeerKind::Group => &self.groups,
        }
    }

    fn list_mut(&mut self, kind: PeerKind) -> &mut Vec<String> {
        match kind {
            PeerKind::Direct => &mut self.allow_from,
            PeerKind::Group => &mut self.groups,
        }
    }
}

/// What asking for pairing gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A new code.
    Created(String),
    /// The sender already has a pending code; it is kept.
    Pending(String),
    /// The channel already has `MAX_PENDING` requests: no code.
    Full,
    /// The sender was approved meanwhile (for example by the CLI).
    Approved,
}

/// Pending and approved counts over every readable channel.
#[derive(Debug, Default)]
pub struct Counts {
    pub pending: usize,
    pub approved: usize,
    /// Channels left out because a file could not be read.
    pub errors: Vec<StoreError>,
}

/// Remembers which unreadable files were reported, so a broken file is logged once per
/// change of the file (its identity, size and modification time) rather than on every
/// status refresh.
#[derive(Debug, Default)]
pub struct ErrorMemo {
    seen: std::sync::Mutex<std::collections::HashMap<PathBuf, FileStamp>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    meta: Option<(u64, u64, u64, i64, i64)>,
    message: String,
}

impl ErrorMemo {
    /// The errors of `errors` not reported before in this form; forgets files that are
    /// readable again, so a new breakage is reported again.
    pub fn fresh<'a>(&self, errors: &'a [StoreError]) -> Vec<&'a StoreError> {
        use std::os::unix::fs::MetadataExt;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|path, _| errors.iter().any(|e| &e.file == path));
        errors
            .iter()
            .filter(|e| {
                let stamp = FileStamp {
                    meta: std::fs::symlink_metadata(&e.file)
                        .ok()
                        .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec())),
                    message: e.message.clone(),
                };
                seen.insert(e.file.clone(), stamp.clone()) != Some(stamp)
            })
            .collect()
    }
}

/// A store file could not be read, parsed or written; names the file.
#[derive(Debug, thiserror::Error)]
#[error("pairing store {}: {message}", file.display())]
pub struct StoreError {
    pub file: PathBuf,
    pub message: String,
}

type Result<T> = std::result::Result<T, StoreError>;

/// The pairing store of one installation (`~/.openclaw/credentials`).
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn pairing_path(&self, channel: &str) -> PathBuf {
        self.dir.join(format!("{channel}-pairing.json"))
    }

    fn allow_path(&self, channel: &str) -> PathBuf {
        self.dir.join(format!("{channel}-allowFrom.json"))
    }

    fn lock(&self, channel: &str) -> Result<atomic::LockGuard> {
        let path = self.dir.join(format!("{channel}.lock"));
        ensure_private_dir(&self.dir)
            .and_then(|_| atomic::lock(&path))
            .map_err(|e| err(&path, format!("cannot take the lock: {e}")))
    }

    /// The approved senders of `channel` (an absent file means nobody).
    pub fn allow_list(&self, channel: &str) -> Result<AllowList> {
        Ok(self.read_allow(channel)?.0)
    }

    fn read_allow(&self, channel: &str) -> Result<(AllowList, Format)> {
        let path = self.allow_path(channel);
        match read_file(&path)? {
            Some(bytes) => format::parse_allow_list(&bytes).map_err(|e| unparsable(&path, e)),
            None => Ok((AllowList::default(), Format::Current)),
        }
    }

    fn read_requests(&self, channel: &str) -> Result<(Vec<PairingRequest>, Format)> {
        let path = self.pairing_path(channel);
        match read_file(&path)? {
            Some(bytes) => format::parse_requests(&bytes).map_err(|e| unparsable(&path, e)),
            None => Ok((Vec::new(), Format::Current)),
        }
    }

    /// The allow-list, under the channel's lock: a file in an older format is rewritten in
    /// the current one now, so it is converted exactly once and never behind a writer's back.
    fn locked_allow(&self, channel: &str) -> Result<AllowList> {
        let (allow, format) = self.read_allow(channel)?;
        if format == Format::Legacy {
            self.write_allow(channel, &allow)?;
            tracing::info!(
                "rewrote {} in the current format",
                self.allow_path(channel).display()
            );
        }
        Ok(allow)
    }

    /// Pending, unexpired requests of `channel` whose sender is not approved yet.
    pub fn pending(&self, channel: &str, now: u64) -> Result<Vec<PairingRequest>> {
        let allow = self.allow_list(channel)?;
        let (requests, _) = self.read_requests(channel)?;
        Ok(live_requests(requests, &allow, now))
    }

    /// Checks that both files of `channel` can be read (for the audit).
    pub fn check_channel(&self, channel: &str) -> Vec<StoreError> {
        let mut errors = Vec::new();
        if let Err(e) = self.read_allow(channel) {
            errors.push(e);
        }
        if let Err(e) = self.read_requests(channel) {
            errors.push(e);
        }
        errors
    }

    /// Asks for pairing of an unapproved sender (see `RequestOutcome`).
    pub fn request(
        &self,
        channel: &str,
        kind: PeerKind,
        id: &str,
        account_id: Option<&str>,
        now: u64,
    ) -> Result<RequestOutcome> {
        let _lock = self.lock(channel)?;
        let allow = self.locked_allow(channel)?;
        if allow.contains(kind, id) {
            return Ok(RequestOutcome::Approved);
        }
        let path = self.pairing_path(channel);
        let (requests, _) = self.read_requests(channel)?;
        let mut requests = live_requests(requests, &allow, now);
        let outcome =
            if let Some(existing) = requests.iter_mut().find(|r| r.kind == kind && r.id == id) {
                existing.last_seen_at = now;
                RequestOutcome::Pending(existing.code.clone())
            } else if requests.len() >= MAX_PENDING {
                return Ok(RequestOutcome::Full);
            } else {
                let code = loop {
                    let code = new_code().map_err(|e| err(&path, e))?;
                    if !requests.iter().any(|r| r.code == code) {
                        break code;
                    }
                };
                requests.push(PairingRequest {
                    id: id.to_string(),
                    kind,
                    code: code.clone(),
                    account_id: account_id.map(str::to_string),
                    created_at: now,
                    last_seen_at: now,
                });
                RequestOutcome::Created(code)
            };
        self.write_requests(channel, requests)?;
        Ok(outcome)
    }

    /// Approves the request holding `code` (case-insensitive); `None` if no live request
    /// has it.
    pub fn approve(&self, channel: &str, code: &str, now: u64) -> Result<Option<PairingRequest>> {
        self.take_request(channel, code, now, true)
    }

    /// Rejects (deletes) the request holding `code`.
    pub fn reject(&self, channel: &str, code: &str, now: u64) -> Result<Option<PairingRequest>> {
        self.take_request(channel, code, now, false)
    }

    fn take_request(
        &self,
        channel: &str,
        code: &str,
        now: u64,
        approve: bool,
    ) -> Result<Option<PairingRequest>> {
        let code = code.trim().to_ascii_uppercase();
        let _lock = self.lock(channel)?;
        let mut allow = self.locked_allow(channel)?;
        let (requests, format) = self.read_requests(channel)?;
        let mut requests = live_requests(requests, &allow, now);
        let Some(index) = requests.iter().position(|r| r.code == code) else {
            if format == Format::Legacy {
                self.write_requests(channel, requests)?;
            }
            return Ok(None);
        };
        let request = requests.remove(index);
        if approve {
            allow.list_mut(request.kind).push(request.id.clone());
            self.write_allow(channel, &allow)?;
        }
        self.write_requests(channel, requests)?;
        Ok(Some(request))
    }

    /// Adds a sender to the allow-list directly (`pairing.autoApprove`); false if it was
    /// already there.
    pub fn allow(&self, channel: &str, kind: PeerKind, id: &str) -> Result<bool> {
        let _lock = self.lock(channel)?;
        let mut allow = self.locked_allow(channel)?;
        if allow.contains(kind, id) {
            return Ok(false);
        }
        allow.list_mut(kind).push(id.to_string());
        self.write_allow(channel, &allow)?;
        Ok(true)
    }

    /// Removes an approved sender; false if it was not approved.
    pub fn revoke(&self, channel: &str, kind: PeerKind, id: &str) -> Result<bool> {
        let _lock = self.lock(channel)?;
        let mut allow = self.locked_allow(channel)?;
        let list = allow.list_mut(kind);
        let before = list.len();
        list.retain(|x| x != id);
        if list.len() == before {
            return Ok(false);
        }
        self.write_allow(channel, &allow)?;
        Ok(true)
    }

    /// Removes the temporary files that a crash between writing and renaming left behind:
    /// only names of our own pattern (`.<file>.<pid>.<n>.tmp` for a store file of a valid
    /// channel), only regular files (never through a link), each under its channel's lock
    /// so a writer in another process is never cut off mid-replace. Returns what it removed.
    pub fn remove_orphaned_temp_files(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return removed;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(channel) = name
                .to_str()
                .and_then(atomic::temp_target)
                .and_then(channel_of)
            else {
                continue;
            };
            let Ok(_lock) = self.lock(channel) else {
                continue;
            };
            let path = entry.path();
            let regular = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
            if regular && std::fs::remove_file(&path).is_ok() {
                removed.push(path);
            }
        }
        removed
    }

    /// Channels that have any pairing state, sorted.
    pub fn channels(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(err(&self.dir, format!("cannot list: {e}"))),
        };
        let mut channels: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|name| channel_of(&name).map(str::to_string))
            .collect();
        channels.sort();
        channels.dedup();
        Ok(channels)
    }

    /// Pending and approved over all channels, for `/api/status`. A channel whose files
    /// cannot be read is left out of the sums and listed in `errors`: one broken file must
    /// not blank the status of every other channel.
    pub fn counts(&self, now: u64) -> Result<Counts> {
        let mut counts = Counts::default();
        for channel in self.channels()? {
            let read = self.allow_list(&channel).and_then(|allow| {
                let (requests, _) = self.read_requests(&channel)?;
                Ok((live_requests(requests, &allow, now).len(), allow))
            });
            match read {
                Ok((pending, allow)) => {
                    counts.pending += pending;
                    counts.approved += allow.allow_from.len() + allow.groups.len();
                }
                Err(e) => counts.errors.push(e),
            }
        }
        Ok(counts)
    }

    fn write_requests(&self, channel: &str, requests: Vec<PairingRequest>) -> Result<()> {
        write_json(
            &self.pairing_path(channel),
            &PairingFile {
                version: 1,
                requests,
            },
        )
    }

    fn write_allow(&self, channel: &str, allow: &AllowList) -> Result<()> {
        let allow = AllowList {
            version: 1,
            ..allow.clone()
        };
        write_json(&self.allow_path(channel), &allow)
    }
}

/// The channel a store file name belongs to.
fn channel_of(name: &str) -> Option<&str> {
    let channel = name
        .strip_suffix("-pairing.json")
        .or_else(|| name.strip_suffix("-allowFrom.json"))?;
    is_valid_channel_name(channel).then_some(channel)
}

/// Drops expired requests and those whose sender is approved already.
fn live_requests(
    requests: Vec<PairingRequest>,
    allow: &AllowList,
    now: u64,
) -> Vec<PairingRequest> {
    requests
        .into_iter()
        .filter(|r| !r.expired(now) && !allow.contains(r.kind, &r.id))
        .collect()
}

/// A fresh code from the OS CSPRNG. The alphabet has 32 letters, so the low five bits of a
/// random byte pick one uniformly.
fn new_code() -> std::result::Result<String, String> {
    let mut bytes = [0u8; CODE_LEN];
    getrandom::fill(&mut bytes).map_err(|e| format!("random generator failed: {e}"))?;
    Ok(bytes
        .iter()
        .map(|b| CODE_ALPHABET[usize::from(b & 31)] as char)
        .collect())
}

fn err(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError {
        file: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads a store file, never through a symbolic link (the pairing state must be the
/// installation's own file); `None` when it does not exist.
fn read_file(path: &Path) -> Result<Option<Vec<u8>>> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(err(
                path,
                "is a symbolic link; the pairing store reads only its own files \
                 (replace the link with the file itself)",
            ))
        }
        Err(e) => return Err(err(path, format!("cannot read: {e}"))),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| err(path, format!("cannot read: {e}")))?;
    Ok(Some(bytes))
}

/// A file that does not parse is an error, never treated as empty, because rewriting it
/// would drop every approval it holds.
fn unparsable(path: &Path, problem: String) -> StoreError {
    err(path, format!("{problem}; fix it or move it aside"))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("store types always serialise");
    bytes.push(b'\n');
    atomic::write_atomic(path, &bytes).map_err(|e| err(path, format!("cannot write: {e}")))
}

/// Seconds since the Unix epoch (store timestamps).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "clawfort-store-{}-{}",
            std::process::id(),
            new_code().unwrap()
        ));
        (Store::new(&dir), dir)
    }

    #[test]
    fn codes_use_the_alphabet() {
        for _ in 0..100 {
            let code = new_code().unwrap();
            assert_eq!(code.len(), CODE_LEN);
            assert!(code.bytes().all(|b| CODE_ALPHABET.contains(&b)), "{code}");
        }
    }

    #[test]
    fn pending_limit_repeat_and_expiry() {
        let (s, dir) = store();
        let t = 1_000_000;
        let RequestOutcome::Created(a) = s.request("tg", PeerKind::Direct, "a", None, t).unwrap()
        else {
            panic!("first request must get a code")
        };
        assert_eq!(
            s.request("tg", PeerKind::Direct, "a", None, t + 5).unwrap(),
            RequestOutcome::Pending(a.clone())
        );
        for peer in ["b", "c"] {
            assert!(matches!(
                s.request("tg", PeerKind::Direct, peer, None, t).unwrap(),
                RequestOutcome::Created(_)
            ));
        }
        assert_eq!(
            s.request("tg", PeerKind::Direct, "d", None, t).unwrap(),
            RequestOutcome::Full
        );
        // Other channels have their own limit.
        assert!(matches!(
            s.request("wa", PeerKind::Direct, "d", None, t).unwrap(),
            RequestOutcome::Created(_)
        ));
        // After an hour the codes lapse and make room.
        let later = t + CODE_TTL_SECS;
        assert!(s.pending("tg", later).unwrap().is_empty());
        assert!(s.approve("tg", &a, later).unwrap().is_none());
        assert!(matches!(
            s.request("tg", PeerKind::Direct, "d", None, later).unwrap(),
            RequestOutcome::Created(_)
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn approve_reject_revoke() {
        let (s, dir) = store();
        let t = 1_000_000;
        let RequestOutcome::Created(a) = s.request("tg", PeerKind::Direct, "a", None, t).unwrap()
        else {
            panic!()
        };
        let RequestOutcome::Created(g) = s.request("tg", PeerKind::Group, "g1", None, t).unwrap()
        else {
            panic!()
        };
        let approved = s.approve("tg", &a.to_lowercase(), t).unwrap().unwrap();
        assert_eq!(approved.id, "a");
        assert!(s.reject("tg", &g, t).unwrap().is_some());
        let allow = s.allow_list("tg").unwrap();
        assert!(allow.contains(PeerKind::Direct, "a"));
        assert!(!allow.contains(PeerKind::Group, "g1"));
        assert!(s.pending("tg", t).unwrap().is_empty());
        assert_eq!(
            s.request("tg", PeerKind::Direct, "a", None, t).unwrap(),
            RequestOutcome::Approved
        );
        assert!(s.revoke("tg", PeerKind::Direct, "a").unwrap());
        assert!(!s.revoke("tg", PeerKind::Direct, "a").unwrap());
        assert_eq!(s.channels().unwrap(), vec!["tg".to_string()]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_an_error_not_an_empty_list() {
        let (s, dir) = store();
        ensure_private_dir(&dir).unwrap();
        std::fs::write(dir.join("tg-allowFrom.json"), "{ not json").unwrap();
        let e = s.allow("tg", PeerKind::Direct, "x").unwrap_err();
        assert!(e.to_string().contains("tg-allowFrom.json"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.join("tg-allowFrom.json")).unwrap(),
            "{ not json"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
