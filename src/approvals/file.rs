//! `~/.openclaw/exec-approvals.json`: OpenClaw's approvals document (its legacy file form),
//! with OpenClaw's field names. clawfort reads the `defaults` and `agents.main` policy
//! (`security`, `ask`, which can only tighten `tools.exec`, and `askFallback`, which has no
//! key in `openclaw.json`) and `agents.main.allowlist`; it appends an entry when an approver
//! answers "always", and stamps `lastUsedAt`, `lastUsedCommand` and `lastResolvedPath` on the
//! entry that let a command run ([`record_use`]). Fields it does not use are kept as they are
//! when it rewrites the file; a legacy `null` in a usage field reads as absent.
//!
//! The file is read at every decision, so an edit (by hand, or by `/approve ... always` in
//! another session) applies to the next command without a restart. A file that cannot be
//! parsed denies every command that would need it, with the parse error, until it is fixed.
//! Writes run under `flock` on `exec-approvals.lock` and replace the file atomically; the
//! temporary file a crash between writing and renaming leaves is removed at the next start
//! ([`remove_orphaned_temp_files`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{ExecAsk, ExecSecurity};
use crate::pairing::atomic;

/// The agent clawfort runs (OpenClaw's default agent id).
pub const AGENT: &str = "main";
/// The lock every writer of the file holds, beside it.
const LOCK_FILE: &str = "exec-approvals.lock";

/// The most an approvals document may hold. It is read at every command; OpenClaw's files are
/// a few KiB, and this leaves room for thousands of entries.
pub const MAX_BYTES: u64 = 1 << 20;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Document {
    #[serde(default = "version")]
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<Policy>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub agents: Map<String, Value>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

fn version() -> u64 {
    1
}

/// `defaults` or `agents.<id>`: the policy fields clawfort reads.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<ExecSecurity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask: Option<ExecAsk>,
    /// What a question nobody answered comes to (OpenClaw: `deny` when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask_fallback: Option<ExecSecurity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlist: Vec<Entry>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One allowlist entry.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub pattern: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Unix milliseconds of the last command this entry let run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<u64>,
    /// That command's text (redacted); not kept for an entry binding a hash of the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_command: Option<String>,
    /// Where its executable was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resolved_path: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl Entry {
    /// Whether `other` is this entry as the file holds it now: the same `id`, or without
    /// ids the same `pattern` and `argPattern`.
    fn is(&self, other: &Entry) -> bool {
        match (&self.id, &other.id) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.pattern == other.pattern && self.arg_pattern == other.arg_pattern,
            _ => false,
        }
    }
}

/// One use of an allowlist entry, for [`record_use`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// Unix milliseconds.
    pub at: u64,
    /// The command text, or `None` to leave `lastUsedCommand` out.
    pub command: Option<String>,
    pub resolved_path: Option<String>,
}

/// What the file says for clawfort's agent.
#[derive(Debug, Default, Clone)]
pub struct Effective {
    pub security: Option<ExecSecurity>,
    pub ask: Option<ExecAsk>,
    pub ask_fallback: Option<ExecSecurity>,
    pub allowlist: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid exec approvals document: {message}; fix or remove it")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The document at `path`; an empty one when the file does not exist.
pub fn load(path: &Path) -> Result<Document, FileError> {
    let invalid = |message: String| FileError::Invalid {
        path: path.to_owned(),
        message,
    };
    let text = match read(path) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(Document::default()),
        Err(Refused(message)) => return Err(invalid(message)),
        Err(Io(source)) => {
            return Err(FileError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let doc: Document =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text))
            .map_err(|e| invalid(located(&e)))?;
    // Check the agent's section now, so a bad entry is reported, not skipped.
    agent_policy(&doc).map_err(|e| invalid(format!("agents.{AGENT}.{}", located(&e))))?;
    Ok(doc)
}

enum ReadError {
    Io(std::io::Error),
    /// Not something to parse: why.
    Refused(String),
}
use ReadError::{Io, Refused};

/// The file's text; `None` when it does not exist. Only a regular file of at most
/// [`MAX_BYTES`]: opened without blocking (a FIFO put there would hang every decision) and
/// read no further than the cap (a link to `/dev/zero` would fill the memory).
fn read(path: &Path) -> Result<Option<String>, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Io(e)),
    };
    if !file.metadata().map_err(Io)?.is_file() {
        return Err(Refused("it is not a regular file".to_owned()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(Io)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(Refused(format!(
            "it is larger than {} KiB, more than an approvals document holds",
            MAX_BYTES / 1024
        )));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| Refused("it is not UTF-8 text".to_owned()))
}

/// A parse error with the field it is about: `defaults.askFallback: unknown variant ...`
/// (serde names the values a field allows).
fn located(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    match e.path().to_string().as_str() {
        "." | "" => e.inner().to_string(),
        path => format!("{path}: {}", e.inner()),
    }
}

fn agent_policy(doc: &Document) -> Result<Policy, serde_path_to_error::Error<serde_json::Error>> {
    match doc.agents.get(AGENT) {
        None => Ok(Policy::default()),
        Some(v) => serde_path_to_error::deserialize(v),
    }
}

impl Document {
    /// The policy and allowlist for clawfort's agent: `agents.main` over `defaults`.
    pub fn effective(&self) -> Effective {
        let agent = agent_policy(self).unwrap_or_default();
        let defaults = self.defaults.clone().unwrap_or_default();
        Effective {
            security: agent.security.or(defaults.security),
            ask: agent.ask.or(defaults.ask),
            ask_fallback: agent.ask_fallback.or(defaults.ask_fallback),
            allowlist: agent.allowlist,
        }
    }
}

/// Appends `entry` to `agents.main.allowlist` (unless an equal pattern and argPattern is
/// there), under the lock, atomically.
pub fn add_entry(path: &Path, entry: Entry) -> Result<(), FileError> {
    update_agent(path, |agent| {
        let known = agent
            .allowlist
            .iter()
            .any(|e| e.pattern == entry.pattern && e.arg_pattern == entry.arg_pattern);
        if !known {
            agent.allowlist.push(entry);
        }
        !known
    })
}

/// Stamps `used` on the allowlist entry `entry` (found again by [`Entry::is`]) under the
/// lock, atomically. An entry gone since (edited away) is left gone; an older use never
/// overwrites a newer one (two commands' writes may finish in either order).
pub fn record_use(path: &Path, entry: &Entry, used: Use) -> Result<(), FileError> {
    update_agent(path, |agent| {
        let Some(current) = agent.allowlist.iter_mut().find(|e| e.is(entry)) else {
            return false;
        };
        if current.last_used_at.is_some_and(|at| at > used.at) {
            return false;
        }
        current.last_used_at = Some(used.at);
        current.last_used_command = used.command;
        if used.resolved_path.is_some() {
            current.last_resolved_path = used.resolved_path;
        }
        true
    })
}

/// Reads the document under the lock, lets `change` edit `agents.main`, and replaces the
/// file when it says it changed something. Everything else is written back as read. A
/// replace cut short by a crash left the old file whole and a temporary file beside it,
/// which the next replace removes.
fn update_agent(path: &Path, change: impl FnOnce(&mut Policy) -> bool) -> Result<(), FileError> {
    let write_error = |source| FileError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    atomic::ensure_private_dir(dir).map_err(write_error)?;
    let _lock = atomic::lock(&dir.join(LOCK_FILE)).map_err(write_error)?;
    let mut doc = load(path)?;
    let mut agent = agent_policy(&doc).unwrap_or_default();
    if !change(&mut agent) {
        return Ok(());
    }
    let value = serde_json::to_value(agent).expect("a policy serialises");
    doc.agents.insert(AGENT.to_owned(), value);
    let mut text = serde_json::to_string_pretty(&doc).expect("a document serialises");
    text.push('\n');
    remove_orphans(path);
    atomic::write_atomic(path, text.as_bytes()).map_err(write_error)
}

/// Removes the temporary files a crash between writing and renaming left beside `path`
/// (`.exec-approvals.json.<pid>.<n>.tmp`; regular files only, never through a link), under
/// the writers' lock, so a writer in another process is never cut off mid-replace. The
/// gateway calls it at start. Returns what it removed.
pub fn remove_orphaned_temp_files(path: &Path) -> Vec<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if orphans(path).is_empty() {
        return Vec::new();
    }
    let Ok(_lock) = atomic::lock(&dir.join(LOCK_FILE)) else {
        return Vec::new();
    };
    remove_orphans(path)
}

/// The temporary files of `path` in its directory, whatever their type.
fn orphans(path: &Path) -> Vec<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (Some(name), Ok(entries)) = (
        path.file_name().and_then(|n| n.to_str()),
        std::fs::read_dir(dir),
    ) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().and_then(atomic::temp_target) == Some(name))
        .map(|e| e.path())
        .collect()
}

/// Removes the regular ones of [`orphans`]. Call it under the lock, when no writer is
/// mid-replace (every writer of the file takes it).
fn remove_orphans(path: &Path) -> Vec<PathBuf> {
    orphans(path)
        .into_iter()
        .filter(|p| {
            std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file())
                && std::fs::remove_file(p).is_ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openclaw_fields_and_keeps_the_rest_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec-approvals.json");
        std::fs::write(
            &path,
            r#"{"version": 1, "socket": {"path": "/x.sock"},
                "defaults": {"security": "allowlist", "ask": "on-miss", "askFallback": "deny"},
                "agents": {"main": {"ask": "always", "autoAllowSkills": false,
                    "allowlist": [{"pattern": "rg", "lastUsedAt": 1737150000000}]},
                  "other": {"allowlist": [{"pattern": "*"}]}}}"#,
        )
        .unwrap();
        let e = load(&path).unwrap().effective();
        assert_eq!(e.security, Some(ExecSecurity::Allowlist));
        assert_eq!(e.ask, Some(ExecAsk::Always));
        assert_eq!(e.allowlist.len(), 1);
        assert_eq!(e.allowlist[0].pattern, "rg");

        let entry = Entry {
            id: Some("x".into()),
            pattern: "/usr/bin/ls".into(),
            arg_pattern: Some("^-l$".into()),
            source: Some("allow-always".into()),
            ..Entry::default()
        };
        add_entry(&path, entry.clone()).unwrap();
        add_entry(&path, entry).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["socket"]["path"], "/x.sock");
        assert_eq!(v["defaults"]["askFallback"], "deny");
        assert_eq!(v["agents"]["main"]["autoAllowSkills"], false);
        assert_eq!(
            v["agents"]["main"]["allowlist"][0]["lastUsedAt"],
            1737150000000u64
        );
        assert_eq!(v["agents"]["main"]["allowlist"][1]["argPattern"], "^-l$");
        assert_eq!(
            v["agents"]["main"]["allowlist"].as_array().unwrap().len(),
            2
        );
        assert_eq!(v["agents"]["other"]["allowlist"][0]["pattern"], "*");
    }

    #[test]
    fn only_our_own_orphaned_temp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec-approvals.json");
        let names = [
            ".exec-approvals.json.77.0.tmp",
            ".telegram-pairing.json.77.0.tmp",
            ".exec-approvals.json.tmp",
            "exec-approvals.json",
        ];
        for name in names {
            std::fs::write(dir.path().join(name), "{").unwrap();
        }
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("kept");
        std::fs::write(&target, "x").unwrap();
        let link = dir.path().join(".exec-approvals.json.78.0.tmp");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let removed = remove_orphaned_temp_files(&path);
        assert_eq!(removed, [dir.path().join(names[0])]);
        for name in &names[1..] {
            assert!(dir.path().join(name).exists(), "{name}");
        }
        assert!(link.symlink_metadata().is_ok() && target.exists());
    }

    #[test]
    fn a_missing_file_is_empty_and_a_bad_one_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec-approvals.json");
        assert!(load(&path).unwrap().effective().allowlist.is_empty());
        std::fs::write(&path, r#"{"agents": {"main": {"allowlist": [{"id": 3}]}}}"#).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.contains("exec-approvals.json") && e.contains("agents.main"),
            "{e}"
        );
        std::fs::write(&path, r#"{"defaults": {"security": "yolo"}}"#).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("yolo"), "{e}");
    }

    #[test]
    fn a_bad_value_names_its_field_and_what_it_allows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec-approvals.json");
        for (text, field, allowed) in [
            (
                r#"{"defaults": {"askFallback": "yes"}}"#,
                "defaults.askFallback",
                "`deny`, `allowlist`, `full`",
            ),
            (
                r#"{"agents": {"main": {"askFallback": true}}}"#,
                "agents.main.askFallback",
                "invalid type: boolean `true`",
            ),
            (
                r#"{"agents": {"main": {"allowlist": [{"pattern": "ls"},
                    {"pattern": "rg", "lastUsedAt": "x"}]}}}"#,
                "agents.main.allowlist[1].lastUsedAt",
                "expected u64",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = load(&path).unwrap_err().to_string();
            assert!(e.contains(&format!("{field}: ")), "{e}");
            assert!(e.contains(allowed), "{e}");
            assert!(e.contains("exec-approvals.json"), "{e}");
        }
        // OpenClaw's legacy `null` usage fields read as absent; other agents are not judged.
        std::fs::write(
            &path,
            r#"{"defaults": {"askFallback": "full"}, "agents": {"main": {"allowlist": [
                {"pattern": "ls", "lastUsedAt": null, "lastUsedCommand": null}]},
                "other": {"askFallback": "whatever"}}}"#,
        )
        .unwrap();
        let e = load(&path).unwrap().effective();
        assert_eq!(e.ask_fallback, Some(ExecSecurity::Full));
        assert_eq!(e.allowlist[0].last_used_at, None);
    }

    #[test]
    fn a_huge_a_deep_or_a_special_file_is_refused_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec-approvals.json");
        let started = std::time::Instant::now();
        let refused = |want: &str| {
            let e = load(&path).unwrap_err().to_string();
            assert!(e.contains("exec-approvals.json") && e.contains(want), "{e}");
        };
        std::fs::write(&path, " ".repeat(MAX_BYTES as usize + 1)).unwrap();
        refused("larger than 1024 KiB");
        std::fs::write(&path, r#"{"x":"#.repeat(100_000)).unwrap();
        refused("recursion limit");
        std::fs::write(&path, b"{\"version\": 1, \"x\": \"\xff\"}").unwrap();
        refused("not UTF-8");
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        refused("not a regular file");
        std::fs::remove_file(&path).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        refused("not a regular file");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    fn entry(pattern: &str) -> Entry {
        Entry {
            id: Some(format!("id-{pattern}")),
            pattern: pattern.to_owned(),
            ..Entry::default()
        }
    }

    #[test]
    fn a_use_is_stamped_on_its_entry_and_keeps_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec-approvals.json");
        std::fs::write(
            &path,
            r#"{"version": 1, "socket": {"path": "/x.sock"},
                "agents": {"main": {"autoAllowSkills": true, "allowlist": [
                    {"pattern": "ls", "lastUsedAt": null, "note": "kept"},
                    {"id": "b", "pattern": "ls", "argPattern": "^-l$"}]}}}"#,
        )
        .unwrap();
        let used = |at, command: &str| Use {
            at,
            command: Some(command.to_owned()),
            resolved_path: Some("/usr/bin/ls".to_owned()),
        };
        let first = Entry {
            pattern: "ls".into(),
            ..Entry::default()
        };
        record_use(&path, &first, used(2000, "ls")).unwrap();
        // An older use (a write that finished late) does not go back in time.
        record_use(&path, &first, used(1000, "ls old")).unwrap();
        let second = Entry {
            id: Some("b".into()),
            ..Entry::default()
        };
        record_use(&path, &second, used(3000, "ls -l")).unwrap();
        // An entry edited away stays away.
        record_use(&path, &entry("gone"), used(4000, "gone")).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let list = &v["agents"]["main"]["allowlist"];
        assert_eq!(list.as_array().unwrap().len(), 2, "{v}");
        assert_eq!(list[0]["lastUsedAt"], 2000);
        assert_eq!(list[0]["lastUsedCommand"], "ls");
        assert_eq!(list[0]["lastResolvedPath"], "/usr/bin/ls");
        assert_eq!(list[0]["note"], "kept");
        assert_eq!(list[1]["lastUsedAt"], 3000);
        assert_eq!(list[1]["argPattern"], "^-l$");
        assert_eq!(v["agents"]["main"]["autoAllowSkills"], true);
        assert_eq!(v["socket"]["path"], "/x.sock");
    }

    /// Writers in parallel (separate opens, as two gateways or the CLI would): each takes the
    /// lock and re-reads, so no entry and no stamp is lost.
    #[test]
    fn parallel_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec-approvals.json");
        add_entry(&path, entry("hot")).unwrap();
        let started = std::time::Instant::now();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let path = &path;
                scope.spawn(move || {
                    for n in 0..10 {
                        add_entry(path, entry(&format!("t{t}-{n}"))).unwrap();
                        let at = 1_000 + t * 100 + n;
                        let used = Use {
                            at,
                            command: None,
                            resolved_path: None,
                        };
                        record_use(path, &entry("hot"), used).unwrap();
                    }
                });
            }
        });
        // 80 locked read-modify-replace cycles, each with two fsyncs.
        eprintln!(
            "80 approvals file updates: {:?} each",
            started.elapsed() / 80
        );
        let e = load(&path).unwrap().effective();
        assert_eq!(e.allowlist.len(), 41);
        assert_eq!(e.allowlist[0].last_used_at, Some(1_309));
        for t in 0..4 {
            for n in 0..10 {
                let pattern = format!("t{t}-{n}");
                assert!(
                    e.allowlist.iter().any(|x| x.pattern == pattern),
                    "{pattern}"
                );
            }
        }
    }

    /// A writer killed at any moment of a replace (often between writing the new file and
    /// renaming it: the fsyncs take most of the time) leaves the old document or the new one,
    /// never a torn one; the next replace removes the temporary file it left.
    #[test]
    fn a_writer_killed_mid_replace_leaves_a_whole_file() {
        const CHILD: &str = "CLAWFORT_TEST_APPROVALS_WRITER";
        let used = |at| Use {
            at,
            command: Some("x".repeat(4096)),
            resolved_path: None,
        };
        if let Some(path) = std::env::var_os(CHILD) {
            // The child: stamps as fast as it can until it is killed (or 10 s pass).
            let started = std::time::Instant::now();
            let base = crate::approvals::unix_ms() * 1000;
            let mut n = 0;
            while started.elapsed() < std::time::Duration::from_secs(10) {
                n += 1;
                record_use(Path::new(&path), &entry("e0"), used(base + n)).unwrap();
            }
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec-approvals.json");
        for n in 0..50 {
            add_entry(&path, entry(&format!("e{n}"))).unwrap();
        }
        let temporary = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".tmp")
                })
                .count()
        };
        let (mut last, mut left) = (0, 0);
        for round in 0..20 {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "approvals::file::tests::a_writer_killed_mid_replace_leaves_a_whole_file",
                    "--exact",
                    "--test-threads=1",
                ])
                .env(CHILD, &path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20 + round * 7));
            child.kill().unwrap();
            child.wait().unwrap();
            let doc = load(&path).unwrap().effective();
            assert_eq!(doc.allowlist.len(), 50, "round {round}");
            let at = doc.allowlist[0].last_used_at.unwrap_or(0);
            assert!(at >= last, "round {round}: went back from {last} to {at}");
            last = at;
            left += temporary();
        }
        assert!(last > 0, "no child ever wrote: the test proves nothing");
        eprintln!("20 writers killed; {left} temporary files seen left behind");
        record_use(&path, &entry("e1"), used(1)).unwrap();
        assert_eq!(temporary(), 0, "the next replace removes what a crash left");
    }
}
