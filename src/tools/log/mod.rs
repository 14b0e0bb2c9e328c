//! The execution log: one [`Entry`] per tool call the model makes, whatever became of it (ran,
//! failed, refused, unknown tool, stopped with the turn), written twice by the agent loop
//! before the result goes back to the model: as a `tracing` event (in the journal on the
//! appliance) and as a JSON line appended to `logs/tools.jsonl` in the state directory,
//! which `clawfort logs --tools` reads.
//!
//! - What is logged: time, session key, tool, its target (the command of `exec`, the `path`
//!   of the file tools, the `url` of `web_fetch`; redacted with the gateway's [`Redactor`]
//!   and cut to [`TARGET_CAP`] bytes), where the work happened ([`Place`]), the approval
//!   ([`Approval`]), how it ended ([`Status`]), the duration and the bytes returned to the
//!   model. Tools report the facts only they know through [`Execution`] on their output.
//! - Durability: each line is one `write(2)` on an `O_APPEND` file, done before the result
//!   returns to the model, so a crash of the gateway (panic, OOM kill, SIGKILL) cannot lose
//!   the entry of a call whose effects the model saw. It is not fsynced: only a power loss
//!   within the kernel's writeback delay could lose lines, and the journal holds the same
//!   event. The append takes about 2 µs (`cargo xtask bench exec`); an `fsync` would add a
//!   disk flush to every call, a host `exec` of `true` takes a few milliseconds in all.
//! - Bounded: when the file reaches [`ROTATE_AT`] bytes it is renamed to `tools.jsonl.1`
//!   (replacing the previous one), so the log never takes more than twice that.
//! - A write that fails is reported in the gateway's log and does not stop the call.
//! - Torn lines: a line cut short (a power cut within the writeback delay, a full disk
//!   mid-write) is never glued to the next entry: before its first append, and after a write
//!   that failed, the writer reopens the file and ends an unterminated last line with a
//!   newline. [`read`] skips such a line and names it ([`Damaged`]), keeping every complete
//!   entry around it.

pub mod cli;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::paths::Paths;
use crate::redact::Redactor;

/// A target longer than this many bytes is cut (a heredoc can be megabytes).
pub const TARGET_CAP: usize = 512;
/// The size at which `tools.jsonl` is rotated (about 30 000 entries).
pub const ROTATE_AT: u64 = 8 << 20;

/// Where a call's work happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// A process on the host (host `exec`, confined by Landlock).
    Host,
    /// A sandbox container.
    Sandbox,
    /// In the gateway's own process: the file tools, and a call refused before it ran.
    Gateway,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Host => "host",
            Self::Sandbox => "sandbox",
            Self::Gateway => "gateway",
        })
    }
}

/// What became of an exec approval for the call (`crate::approvals`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// None was needed (or the policy refused the call before asking anyone).
    #[default]
    None,
    /// An approver allowed it.
    Approved,
    /// An approver refused it.
    Denied,
    /// Nobody answered in time, and it was denied.
    TimedOut,
    /// Nobody answered in time, and it ran: the approvals file's `askFallback` (`allowlist`
    /// with a matching entry, or `full`) said so.
    Fallback,
}

impl std::fmt::Display for Approval {
    /// The JSON name; `-` when no approver was involved.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "-",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::TimedOut => "timed_out",
            Self::Fallback => "fallback",
        })
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Ok,
    Error,
    /// A command exited with `code`.
    Exited {
        code: i32,
    },
    /// A command was killed by `signal`.
    Signaled {
        signal: i32,
    },
    /// Stopped at the tool's timeout or the turn's deadline.
    TimedOut,
    /// Stopped by `/stop` or shutdown.
    Cancelled,
    /// The model called a tool that is not offered.
    UnknownTool,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::Error => f.write_str("error"),
            Self::Exited { code } => write!(f, "exit {code}"),
            Self::Signaled { signal } => write!(f, "signal {signal}"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::UnknownTool => f.write_str("unknown tool"),
        }
    }
}

/// What a tool reports of a run beyond its text (on [`super::ToolOutput::execution`]); a
/// tool that reports nothing ran in the gateway, ending `ok` or `error` by its `is_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execution {
    pub place: Place,
    pub status: Status,
    pub approval: Approval,
}

impl Execution {
    /// A call whose work happened in the gateway's process, ending as `is_error` says.
    pub fn in_gateway(is_error: bool) -> Self {
        Self {
            place: Place::Gateway,
            status: if is_error { Status::Error } else { Status::Ok },
            approval: Approval::None,
        }
    }
}

/// One line of `tools.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub session: String,
    pub tool: String,
    /// The command, path or URL the call named, redacted and cut; `None` when it named none.
    pub target: Option<String>,
    /// `None` for a tool that does not exist.
    pub place: Option<Place>,
    pub approval: Approval,
    #[serde(flatten)]
    pub status: Status,
    pub duration_ms: u64,
    /// Bytes of the result returned to the model.
    pub bytes_out: u64,
}

impl Entry {
    /// The entry of a call of `tool` naming `target` that ended with `status`, now; its
    /// duration and size are set by [`Entry::took`].
    pub fn new(
        session: &str,
        tool: &str,
        target: Option<String>,
        place: Option<Place>,
        status: Status,
        approval: Approval,
    ) -> Self {
        Self {
            time: jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string(),
            session: session.to_owned(),
            tool: tool.to_owned(),
            target,
            place,
            approval,
            status,
            duration_ms: 0,
            bytes_out: 0,
        }
    }

    /// The entry with the call's duration and the bytes it returned to the model.
    pub fn took(mut self, duration: Duration, bytes_out: usize) -> Self {
        self.duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.bytes_out = bytes_out as u64;
        self
    }
}

/// A call's target: the first of its `command` (`exec`), `path` (the file tools) and `url`
/// (`web_fetch`) that is a string.
pub fn target(input: &Value) -> Option<String> {
    ["command", "path", "url"]
        .iter()
        .find_map(|key| input[key].as_str())
        .map(str::to_owned)
}

/// `text` cut to at most `cap` bytes on a character boundary, with a note of the cut.
fn truncate(mut text: String, cap: usize) -> String {
    if text.len() > cap {
        let mut end = cap;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let total = text.len();
        text.truncate(end);
        text.push_str(&format!("… ({total} bytes)"));
    }
    text
}

/// `~/.openclaw/logs/tools.jsonl`.
pub fn path(paths: &Paths) -> PathBuf {
    paths.state_dir.join("logs").join("tools.jsonl")
}

/// The rotated file beside `path`: `tools.jsonl.1`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The writer of the execution log.
#[derive(Debug)]
pub struct ToolLog {
    path: PathBuf,
    redactor: Redactor,
    rotate_at: u64,
    /// The open file and its size; `None` until the first call, or after a rotation.
    file: Mutex<Option<(File, u64)>>,
}

impl ToolLog {
    pub fn new(path: PathBuf, redactor: Redactor) -> Self {
        Self::with_rotation(path, redactor, ROTATE_AT)
    }

    fn with_rotation(path: PathBuf, redactor: Redactor, rotate_at: u64) -> Self {
        Self {
            path,
            redactor,
            rotate_at,
            file: Mutex::new(None),
        }
    }

    /// Redacts and cuts the tool name and the target, then emits the event and appends the line.
    pub fn record(&self, mut entry: Entry) {
        // The model names the tool: it gets the same treatment as the target.
        entry.tool = truncate(self.redactor.redact(&entry.tool).into_owned(), TARGET_CAP);
        entry.target = entry
            .target
            .map(|t| truncate(self.redactor.redact(&t).into_owned(), TARGET_CAP));
        tracing::info!(
            session = %entry.session,
            tool = %entry.tool,
            place = entry.place.map_or("-".to_owned(), |p| p.to_string()),
            approval = ?entry.approval,
            status = %entry.status,
            duration_ms = entry.duration_ms,
            bytes_out = entry.bytes_out,
            subject = entry.target.as_deref().unwrap_or(""),
            "tool call"
        );
        let mut line = serde_json::to_vec(&entry).expect("log entries always serialise");
        line.push(b'\n');
        if let Err(e) = self.append(&line) {
            tracing::error!(
                "the execution log {} could not be written: {e}",
                self.path.display()
            );
        }
    }

    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut slot = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let (file, size) = match &mut *slot {
            Some(open) => open,
            None => slot.insert(self.open()?),
        };
        if let Err(e) = file.write_all(line) {
            // Part of the line may be in the file: reopen (and end it) before the next one.
            *slot = None;
            return Err(e);
        }
        *size += line.len() as u64;
        if *size >= self.rotate_at {
            *slot = None;
            std::fs::rename(&self.path, rotated(&self.path))?;
        }
        Ok(())
    }

    /// Opens the log for appending, with its size; a last line left without its newline
    /// (cut short by a crash) gets one, so the next entry starts on a line of its own.
    fn open(&self) -> std::io::Result<(File, u64)> {
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)?;
        let mut size = file.metadata()?.len();
        if size > 0 {
            let mut last = [0u8];
            file.read_exact_at(&mut last, size - 1)?;
            if last != *b"\n" {
                tracing::warn!(
                    "the execution log {} ends in a line cut short (a crash mid-write); it \
                     is ended here and `clawfort logs --tools` skips it",
                    self.path.display()
                );
                file.write_all(b"\n")?;
                size += 1;
            }
        }
        Ok((file, size))
    }
}

/// A line of the log that is not an entry (cut short by a crash or a full disk mid-write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    pub file: PathBuf,
    /// Counted from 1.
    pub line: usize,
    /// Why it is not an entry, as the JSON parser says it.
    pub reason: String,
}

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} of {}: not a complete entry ({})",
            self.line,
            self.file.display(),
            self.reason
        )
    }
}

/// The entries of the log at `path` (its rotated part first), oldest first, and the lines
/// that could not be read, each named. `None` when there is no log. A damaged line, even
/// one that is not UTF-8 (a character cut in two), costs only itself.
pub fn read(path: &Path) -> std::io::Result<Option<(Vec<Entry>, Vec<Damaged>)>> {
    let mut entries = Vec::new();
    let mut damaged = Vec::new();
    let mut found = false;
    for file in [rotated(path), path.to_path_buf()] {
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        found = true;
        for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.trim_ascii().is_empty() {
                continue;
            }
            match serde_json::from_slice(line) {
                Ok(entry) => entries.push(entry),
                Err(e) => damaged.push(Damaged {
                    file: file.clone(),
                    line: n + 1,
                    reason: e.to_string(),
                }),
            }
        }
    }
    Ok(found.then_some((entries, damaged)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use serde_json::json;

    use super::*;
    use crate::secret::Secret;

    #[test]
    fn an_entry_is_one_flat_json_line_that_reads_back() {
        let entry = Entry::new(
            "agent:main:main",
            "exec",
            target(&json!({"command": "true", "workdir": "x"})),
            Some(Place::Host),
            Status::Exited { code: 3 },
            Approval::None,
        )
        .took(Duration::from_millis(7), 12);
        let value = serde_json::to_value(&entry).unwrap();
        assert_eq!(value["status"], "exited");
        assert_eq!(value["code"], 3);
        assert_eq!(value["place"], "host");
        assert_eq!(value["approval"], "none");
        assert_eq!(value["target"], "true");
        assert_eq!(value["durationMs"], 7);
        assert_eq!(value["bytesOut"], 12);
        assert_eq!(serde_json::from_value::<Entry>(value).unwrap(), entry);

        let unknown = Entry::new(
            "s",
            "nope",
            target(&json!({"pattern": "x"})),
            None,
            Status::UnknownTool,
            Approval::None,
        );
        let value = serde_json::to_value(&unknown).unwrap();
        assert_eq!(value["status"], "unknown_tool");
        assert!(value["place"].is_null() && value["target"].is_null());
    }

    #[test]
    fn targets_are_redacted_and_cut_on_a_character_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let secret = Secret::new("a-configured-secret-value");
        let log = ToolLog::new(
            dir.path().join("logs/tools.jsonl"),
            Redactor::new([&secret]),
        );
        let long = format!("echo a-configured-secret-value {}", "é".repeat(600));
        log.record(Entry::new(
            "s",
            "exec",
            target(&json!({ "command": long })),
            Some(Place::Host),
            Status::Exited { code: 0 },
            Approval::None,
        ));
        let (entries, damaged) = read(&dir.path().join("logs/tools.jsonl")).unwrap().unwrap();
        assert!(damaged.is_empty(), "{damaged:?}");
        let target = entries[0].target.as_deref().unwrap();
        assert!(target.starts_with("echo [redacted] é"), "{target}");
        assert!(!target.contains("a-configured-secret-value"));
        let cut = target.find('…').unwrap();
        assert!(cut <= TARGET_CAP, "{cut}");
        let redacted_len = long.len() - "a-configured-secret-value".len() + "[redacted]".len();
        assert!(
            target.ends_with(&format!("… ({redacted_len} bytes)")),
            "{target}"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("logs/tools.jsonl")), 0o600);
        assert_eq!(mode(&dir.path().join("logs")), 0o700);
    }

    #[test]
    fn the_log_rotates_at_its_cap_and_reads_both_parts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tools.jsonl");
        let log = ToolLog::with_rotation(path.clone(), Redactor::new([]), 1000);
        for n in 0..30 {
            log.record(
                Entry::new(
                    &format!("s{n}"),
                    "read",
                    target(&json!({"path": "notes.md"})),
                    Some(Place::Gateway),
                    Status::Ok,
                    Approval::None,
                )
                .took(Duration::ZERO, n),
            );
        }
        let sizes = [path.clone(), rotated(&path)].map(|p| std::fs::metadata(p).unwrap().len());
        assert!(sizes.iter().all(|&s| s < 1000 + 300), "{sizes:?}");
        let (entries, _) = read(&path).unwrap().unwrap();
        // Oldest first, the latest kept, the oldest dropped by the second rotation.
        assert_eq!(entries.last().unwrap().session, "s29");
        assert!(entries.len() < 30 && entries.len() > 5, "{}", entries.len());
        let sessions: Vec<usize> = entries
            .iter()
            .map(|e| e.session[1..].parse().unwrap())
            .collect();
        assert!(
            sessions.windows(2).all(|w| w[1] == w[0] + 1),
            "{sessions:?}"
        );
    }

    #[test]
    fn a_torn_line_is_named_not_fatal_and_no_log_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tools.jsonl");
        assert!(read(&path).unwrap().is_none());
        let entry = |session: &str| {
            Entry::new(
                session,
                "read",
                Some("café.md".into()),
                Some(Place::Gateway),
                Status::Ok,
                Approval::None,
            )
        };
        let whole = serde_json::to_vec(&entry("s1")).unwrap();
        // A complete entry, then one cut inside the two bytes of `é`: not even UTF-8.
        let cut = whole.iter().position(|&b| b == 0xc3).unwrap() + 1;
        let mut text = whole.clone();
        text.push(b'\n');
        text.extend_from_slice(&whole[..cut]);
        std::fs::write(&path, &text).unwrap();
        let (entries, damaged) = read(&path).unwrap().unwrap();
        let sessions: Vec<&str> = entries.iter().map(|e| e.session.as_str()).collect();
        assert_eq!(sessions, ["s1"]);
        assert_eq!(damaged.len(), 1, "{damaged:?}");
        assert_eq!((damaged[0].line, &damaged[0].file), (2, &path));
        assert!(
            damaged[0].to_string().starts_with("line 2 of ") && damaged[0].reason.contains("EOF"),
            "{}",
            damaged[0]
        );

        // The writer ends the torn line before its first entry: nothing is glued to it.
        let log = ToolLog::new(path.clone(), Redactor::new([]));
        log.record(entry("s2"));
        log.record(entry("s3"));
        let (entries, damaged) = read(&path).unwrap().unwrap();
        let sessions: Vec<&str> = entries.iter().map(|e| e.session.as_str()).collect();
        assert_eq!(sessions, ["s1", "s2", "s3"]);
        assert_eq!(damaged.len(), 1);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            bytes.split(|&b| b == b'\n').count(),
            5,
            "four lines and the end"
        );
    }
}
