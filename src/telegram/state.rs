//! The polling journal: Telegram's update offset plus the updates taken but not yet done.
//!
//! Two files under `<state_dir>/telegram/`:
//! - `update-offset-<accountId>.json`, the file OpenClaw uses for the restart offset
//!   (`version`, `lastUpdateId`, `botId`), extended by clawfort with `pending` (the jobs
//!   received from Telegram and not finished yet) and `logSeq`. It is a snapshot, replaced
//!   atomically (temporary file, fsync, rename, fsync of the directory).
//! - `update-offset-<accountId>.log`: the changes since that snapshot, one JSON line per
//!   write (`seq`, the new `lastUpdateId`, the jobs `added`, `started` and `finished`),
//!   appended with a single `write` and made durable with one `fdatasync`.
//!
//! The guarantee, step by step:
//! 1. A batch from `getUpdates` is written here (jobs in `pending`, `lastUpdateId` moved
//!    past the batch) *before* the next `getUpdates` confirms it to Telegram. A crash
//!    before this write leaves the batch unconfirmed, so Telegram sends it again: nothing
//!    is lost. After it, the jobs are on disk: nothing is lost either.
//! 2. A job is marked `started` before its task starts. The line is written at once and
//!    `fdatasync`ed while the policy decision and the model call proceed; a tool call and
//!    every message sent wait for the sync (`channel::Recorded`). A kill after the write
//!    cannot lose the line (it is in the page cache); a power cut before the sync ends can,
//!    and then Telegram sends the update again and its model call is made a second time,
//!    never its tool calls or its reply.
//! 3. When its reply is sent, the job is removed.
//!
//! On start, a job still `started` was interrupted mid-way: it is *not* run again (that
//! could call the model twice); its sender gets a note to send it again. So each update is
//! handled at most once, and no update vanishes without its sender hearing about it.
//! Unstarted jobs simply run. Both files are mode 600 in a 700 directory.
//!
//! **One small write per state change.** Changes are made in memory and written by
//! [`Journal::write`], which the channel calls exactly where the guarantee needs the disk:
//! before the next `getUpdates` (step 1, which waits for the sync) and before it spawns
//! the jobs it just marked started (step 2). Everything that happened since the last write goes out in that one
//! log line: a batch together with the jobs that start at once, or the jobs that finished
//! together with the queued ones that take their place. An isolated turn costs two appends
//! (batch + start, then finish), each one `write` and one `fdatasync` of a file kept open,
//! instead of rewriting and renaming the whole state; under load many turns share one.
//!
//! **Replay.** Opening reads the snapshot and applies the log lines whose `seq` is above
//! the snapshot's `logSeq`, so a crash between writing a new snapshot and emptying the log
//! applies nothing twice. A last line that does not parse is a write the crash cut short:
//! its `fdatasync` never returned, so nothing depended on it, and it is dropped. A bad line
//! before the last is damage: an error naming the file. The first commit of a run folds
//! the log into a new snapshot (so the log only ever holds lines of this run), and so does
//! the commit after [`COMPACT_AFTER`] lines and [`Journal::compact`] on a clean stop.
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// OpenClaw's version 2 of this file (with `botId`).
const VERSION: u32 = 2;
/// Log lines after which the next commit writes a snapshot instead.
pub const COMPACT_AFTER: u64 = 1024;

/// What a job does when it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum JobKind {
    /// A text message for the policy and, if accepted, the agent.
    #[serde(rename_all = "camelCase")]
    Text {
        text: String,
        /// The original was longer than the inbound cap and was cut.
        truncated: bool,
    },
    /// A message without text (photo, sticker, ...) in a private chat.
    NotText,
}

/// One received update still to be handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub update_id: i64,
    pub chat_id: i64,
    pub message_id: i64,
    /// The sender's user id.
    pub peer: String,
    /// The group chat id, for a message in a group.
    #[serde(default)]
    pub group: Option<String>,
    pub kind: JobKind,
    /// Set (durably) before the job's first side effect.
    #[serde(default)]
    pub started: bool,
}

/// The snapshot file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PollState {
    version: u32,
    last_update_id: Option<i64>,
    bot_id: Option<String>,
    #[serde(default)]
    pending: Vec<Job>,
    /// The last log line folded into this snapshot.
    #[serde(default)]
    log_seq: u64,
}

/// One log line: the changes of one commit, applied in this order.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Change {
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_update_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    added: Vec<Job>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    started: Vec<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    finished: Vec<i64>,
}

impl Change {
    fn is_empty(&self) -> bool {
        self.last_update_id.is_none()
            && self.added.is_empty()
            && self.started.is_empty()
            && self.finished.is_empty()
    }
}

impl PollState {
    /// Replays one log line.
    fn apply(&mut self, change: &Change) {
        if let Some(id) = change.last_update_id {
            self.raise_last(id);
        }
        for job in &change.added {
            if !self.has(job.update_id) {
                self.pending.push(job.clone());
            }
        }
        for job in &mut self.pending {
            if change.started.contains(&job.update_id) {
                job.started = true;
            }
        }
        self.pending
            .retain(|j| !change.finished.contains(&j.update_id));
        self.log_seq = change.seq;
    }

    fn raise_last(&mut self, id: i64) {
        self.last_update_id = Some(self.last_update_id.map_or(id, |old| old.max(id)));
    }

    fn has(&self, update_id: i64) -> bool {
        self.pending.iter().any(|j| j.update_id == update_id)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("Telegram polling state {}: {message}", path.display())]
pub struct StateError {
    path: PathBuf,
    message: String,
}

fn error(path: &Path, message: String) -> StateError {
    StateError {
        path: path.to_path_buf(),
        message,
    }
}

/// The journal of one bot account, loaded in memory; changes reach the disk with
/// [`Journal::write`].
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    log_path: PathBuf,
    /// The state with every change made, written or not.
    state: PollState,
    /// The changes made since the last write (its `seq` is set when written).
    change: Change,
    /// The log, open for appending, once this run wrote the snapshot it extends (shared
    /// with the [`Unsynced`] line being made durable on another thread).
    log: Option<Arc<File>>,
    /// The `logSeq` of that snapshot.
    snapshot_seq: u64,
}

impl Journal {
    /// Loads the journal of `account_id` under `<state_dir>/telegram/` for the bot
    /// `bot_id`. A journal of another bot (the token was changed) is started afresh, since
    /// the old offset means nothing to the new bot.
    pub fn open(state_dir: &Path, account_id: &str, bot_id: &str) -> Result<Self, StateError> {
        let dir = state_dir.join("telegram");
        let path = dir.join(format!("update-offset-{account_id}.json"));
        let log_path = dir.join(format!("update-offset-{account_id}.log"));
        let fresh = PollState {
            version: VERSION,
            bot_id: Some(bot_id.to_string()),
            ..PollState::default()
        };
        let state = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh,
            Err(e) => return Err(error(&path, format!("cannot read it: {e}"))),
            Ok(bytes) => {
                let mut state: PollState = serde_json::from_slice(&bytes).map_err(|e| {
                    error(
                        &path,
                        format!(
                            "it is not valid ({e}); move it and {} away to start polling \
                             afresh (Telegram then re-sends the updates of the last 24 hours \
                             it still holds)",
                            log_path.display()
                        ),
                    )
                })?;
                if state.bot_id.as_deref() == Some(bot_id) {
                    for change in read_log(&log_path)? {
                        if change.seq > state.log_seq {
                            state.apply(&change);
                        }
                    }
                    state
                } else {
                    tracing::warn!(
                        "Telegram polling state {} belongs to another bot; starting afresh \
                         for bot {bot_id} ({} unfinished update(s) of the old bot dropped)",
                        path.display(),
                        state.pending.len()
                    );
                    fresh
                }
            }
        };
        Ok(Self {
            path,
            log_path,
            state,
            change: Change::default(),
            log: None,
            snapshot_seq: 0,
        })
    }

    /// The `offset` for the next `getUpdates`: one past the last update taken.
    pub fn offset(&self) -> Option<i64> {
        self.state.last_update_id.map(|id| id.saturating_add(1))
    }

    /// Records a received batch (in memory; [`Journal::write`] before the next
    /// `getUpdates`): `last_update_id` is the highest update id in it (also of the updates
    /// that made no job), `jobs` the updates that need handling.
    pub fn record_batch(&mut self, last_update_id: i64, jobs: Vec<Job>) {
        for job in jobs {
            if !self.state.has(job.update_id) {
                self.state.pending.push(job.clone());
                self.change.added.push(job);
            }
        }
        self.state.raise_last(last_update_id);
        self.change.last_update_id = self.state.last_update_id;
    }

    /// Jobs interrupted mid-way by a crash (only right after `open`).
    pub fn interrupted(&self) -> Vec<Job> {
        self.state
            .pending
            .iter()
            .filter(|j| j.started)
            .cloned()
            .collect()
    }

    /// Marks started (in memory; [`Journal::write`] before running them) the jobs that may
    /// run now, oldest first, at most `limit`: a job runs only when no job of its chat is
    /// running (`busy`) or waiting before it, so a chat's messages are answered in order.
    /// The chats of the returned jobs are added to `busy`.
    pub fn start_ready(&mut self, limit: usize, busy: &mut HashSet<i64>) -> Vec<Job> {
        let mut blocked = HashSet::new();
        let mut ready = Vec::new();
        for job in &mut self.state.pending {
            if ready.len() >= limit {
                break;
            }
            if job.started || blocked.contains(&job.chat_id) {
                continue;
            }
            if busy.contains(&job.chat_id) {
                blocked.insert(job.chat_id);
                continue;
            }
            job.started = true;
            busy.insert(job.chat_id);
            self.change.started.push(job.update_id);
            ready.push(job.clone());
        }
        ready
    }

    /// Removes a finished job (in memory; [`Journal::write`] writes it).
    pub fn finish(&mut self, update_id: i64) {
        self.state.pending.retain(|j| j.update_id != update_id);
        self.change.finished.push(update_id);
    }

    /// [`Journal::write`] and its sync in one call (for the tests).
    #[cfg(test)]
    pub fn commit(&mut self) -> Result<(), StateError> {
        match self.write()? {
            Some(line) => line.sync(),
            None => Ok(()),
        }
    }

    /// Writes the changes since the last write, if any: one appended log line, returned
    /// before its `fdatasync` for the caller to run on a blocking thread while work that may
    /// precede durability goes on, or a new snapshot (durable at once) when this run has not
    /// written one yet or the log is long. The caller must sync the line before the next
    /// write (a compaction empties the log) and before any effect that depends on it.
    pub fn write(&mut self) -> Result<Option<Unsynced>, StateError> {
        if self.change.is_empty() {
            return Ok(None);
        }
        let seq = self.state.log_seq + 1;
        let unsynced = match &self.log {
            Some(log) if seq - self.snapshot_seq <= COMPACT_AFTER => {
                self.change.seq = seq;
                let mut line = serde_json::to_vec(&self.change)
                    .map_err(|e| error(&self.log_path, format!("cannot encode a change: {e}")))?;
                line.push(b'\n');
                (&**log)
                    .write_all(&line)
                    .map_err(|e| error(&self.log_path, format!("cannot append to it: {e}")))?;
                self.state.log_seq = seq;
                Some(Unsynced {
                    log: Arc::clone(log),
                    path: self.log_path.clone(),
                })
            }
            _ => {
                self.compact()?;
                None
            }
        };
        self.change = Change::default();
        Ok(unsynced)
    }

    /// Writes the whole state as a new snapshot and empties the log (called by `commit`,
    /// and by the channel on a clean stop so the snapshot alone is current).
    pub fn compact(&mut self) -> Result<(), StateError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::pairing::ensure_private_dir(dir)
            .map_err(|e| error(dir, format!("cannot create it: {e}")))?;
        // Opened (and created, the first time) before the snapshot is written, so the
        // directory sync that ends `write_atomic` makes the log's name durable too: an
        // `fdatasync` of a new file does not persist its directory entry.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&self.log_path)
            .map_err(|e| error(&self.log_path, format!("cannot open it: {e}")))?;
        let bytes = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| error(&self.path, format!("cannot encode it: {e}")))?;
        write_atomic(&self.path, &bytes)
            .map_err(|e| error(&self.path, format!("cannot write it: {e}")))?;
        // Every line of the log is in the snapshot now (and skipped by `seq` if the crash
        // comes before the log is emptied).
        log.set_len(0)
            .and_then(|()| log.sync_all())
            .map_err(|e| error(&self.log_path, format!("cannot empty it: {e}")))?;
        self.log = Some(Arc::new(log));
        self.snapshot_seq = self.state.log_seq;
        self.change = Change::default();
        Ok(())
    }
}

/// A log line written but not yet durable (see [`Journal::write`]).
#[must_use = "the line is not durable until it is synced"]
#[derive(Debug)]
pub struct Unsynced {
    log: Arc<File>,
    path: PathBuf,
}

impl Unsynced {
    /// `fdatasync`s the log: this line and every line before it are on disk afterwards.
    pub fn sync(self) -> Result<(), StateError> {
        self.log
            .sync_data()
            .map_err(|e| error(&self.path, format!("cannot sync it: {e}")))
    }
}

/// The log's lines, in order. A last line that does not parse is dropped (see the module
/// doc); a bad line before it is an error.
fn read_log(path: &Path) -> Result<Vec<Change>, StateError> {
    let bytes = match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(error(path, format!("cannot read it: {e}"))),
        Ok(bytes) => bytes,
    };
    let lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut changes = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_slice::<Change>(line) {
            Ok(change) => changes.push(change),
            Err(_) if i + 1 == lines.len() => {
                tracing::warn!(
                    "Telegram polling log {}: dropped its last line, cut short by a crash",
                    path.display()
                );
            }
            Err(e) => {
                return Err(error(
                    path,
                    format!(
                        "line {} is not valid ({e}); move it away to continue from the \
                         snapshot next to it (updates handled since may be handled again)",
                        i + 1
                    ),
                ))
            }
        }
    }
    Ok(changes)
}

/// Replaces `path` by `bytes` atomically and durably, mode 600.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // tempfile creates the file with mode 600 in `dir`, so the rename stays on one
    // filesystem and is atomic.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn job(id: i64) -> Job {
        Job {
            update_id: id,
            chat_id: 7,
            message_id: id,
            peer: "7".into(),
            group: None,
            kind: JobKind::Text {
                text: format!("m{id}"),
                truncated: false,
            },
            started: false,
        }
    }

    #[test]
    fn survives_a_reopen_and_reports_interrupted_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), "default", "42").unwrap();
        assert_eq!(journal.offset(), None);
        journal.record_batch(11, vec![job(10), job(11)]);
        let started = journal.start_ready(8, &mut HashSet::new());
        assert_eq!(started.len(), 1, "11 waits for 10 of the same chat");
        journal.commit().unwrap();

        let journal = Journal::open(dir.path(), "default", "42").unwrap();
        assert_eq!(journal.offset(), Some(12));
        assert_eq!(
            journal.interrupted(),
            vec![Job {
                started: true,
                ..job(10)
            }]
        );
        let mut journal = journal;
        journal.finish(10);
        let started = journal.start_ready(8, &mut HashSet::new());
        assert_eq!(
            started,
            vec![Job {
                started: true,
                ..job(11)
            }]
        );

        let file = dir.path().join("telegram/update-offset-default.json");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(json["lastUpdateId"], 11);
        assert_eq!(json["botId"], "42");
    }

    #[test]
    fn jobs_start_in_order_per_chat_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), "default", "42").unwrap();
        let in_chat = |id, chat_id| Job { chat_id, ..job(id) };
        let batch = vec![in_chat(1, 7), in_chat(2, 7), in_chat(3, 8), in_chat(4, 9)];
        journal.record_batch(4, batch);
        let mut busy = HashSet::from([9]);
        let ids = |jobs: Vec<Job>| jobs.iter().map(|j| j.update_id).collect::<Vec<_>>();
        assert_eq!(ids(journal.start_ready(1, &mut busy)), [1]);
        assert_eq!(
            ids(journal.start_ready(8, &mut busy)),
            [3],
            "2 waits for 1, 4 for 9"
        );
        assert_eq!(busy, HashSet::from([7, 8, 9]));
        journal.finish(1);
        busy.remove(&7);
        assert_eq!(ids(journal.start_ready(8, &mut busy)), [2]);
        // Nothing reached the disk without a commit.
        assert!(!dir
            .path()
            .join("telegram/update-offset-default.json")
            .exists());
        journal.commit().unwrap();
        let reopened = Journal::open(dir.path(), "default", "42").unwrap();
        assert_eq!(ids(reopened.interrupted()), [2, 3]);
    }

    fn ids(jobs: &[Job]) -> Vec<i64> {
        jobs.iter().map(|j| j.update_id).collect()
    }

    fn snapshot(dir: &Path) -> serde_json::Value {
        let file = dir.join("telegram/update-offset-default.json");
        serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
    }

    fn log_lines(dir: &Path) -> Vec<String> {
        let log = std::fs::read_to_string(dir.join("telegram/update-offset-default.log"));
        log.unwrap_or_default().lines().map(str::to_owned).collect()
    }

    #[test]
    fn commits_after_the_first_append_one_line_and_replay_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), "default", "42").unwrap();
        journal.record_batch(1, vec![job(1)]);
        journal.start_ready(8, &mut HashSet::new());
        journal.commit().unwrap();
        let first = snapshot(dir.path());
        assert_eq!(
            first["pending"][0]["started"], true,
            "the first commit is a snapshot"
        );
        assert!(log_lines(dir.path()).is_empty());

        journal.finish(1);
        journal.record_batch(3, vec![job(2), job(3)]);
        journal.start_ready(8, &mut HashSet::new());
        journal.commit().unwrap();
        journal.commit().unwrap(); // nothing changed: no write
        assert_eq!(
            snapshot(dir.path()),
            first,
            "later commits leave the snapshot alone"
        );
        let lines = log_lines(dir.path());
        assert_eq!(lines.len(), 1, "{lines:?}");
        let mode = std::fs::metadata(dir.path().join("telegram/update-offset-default.log"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut reopened = Journal::open(dir.path(), "default", "42").unwrap();
        assert_eq!(reopened.offset(), Some(4));
        assert_eq!(ids(&reopened.interrupted()), [2], "3 waits for 2 in chat 7");
        // The reopened journal's first commit folds the log into a new snapshot.
        reopened.finish(2);
        reopened.commit().unwrap();
        assert!(log_lines(dir.path()).is_empty());
        assert_eq!(
            ids(&Journal::open(dir.path(), "default", "42")
                .unwrap()
                .state
                .pending),
            [3]
        );
    }

    #[test]
    fn a_line_cut_short_by_a_crash_is_dropped_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), "default", "42").unwrap();
        journal.record_batch(1, vec![job(1)]);
        journal.commit().unwrap();
        journal.record_batch(2, vec![job(2)]);
        journal.commit().unwrap();
        let log = dir.path().join("telegram/update-offset-default.log");
        let good = std::fs::read_to_string(&log).unwrap();
        std::fs::write(&log, format!("{good}{{\"seq\":3,\"added\":[{{\"upd")).unwrap();
        let reopened = Journal::open(dir.path(), "default", "42").unwrap();
        assert_eq!(reopened.offset(), Some(3));
        assert_eq!(ids(&reopened.state.pending), [1, 2]);

        std::fs::write(&log, format!("garbage\n{good}")).unwrap();
        let err = Journal::open(dir.path(), "default", "42")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("update-offset-default.log") && err.contains("line 1 is not valid"),
            "{err}"
        );
    }

    #[test]
    fn lines_already_in_the_snapshot_are_not_applied_again() {
        // A crash after the new snapshot and before the log was emptied.
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), "default", "42").unwrap();
        journal.record_batch(1, vec![job(1)]);
        journal.commit().unwrap();
        journal.finish(1);
        journal.record_batch(2, vec![job(2)]);
        journal.commit().unwrap();
        let log = dir.path().join("telegram/update-offset-default.log");
        let old_log = std::fs::read(&log).unwrap();
        journal.compact().unwrap();
        std::fs::write(&log, old_log).unwrap();
        journal.finish(2);
        let reopened = Journal::open(dir.path(), "default", "42").unwrap();
        assert_eq!(ids(&reopened.state.pending), [2], "1 stays finished");
    }

    #[test]
    fn a_long_log_is_folded_into_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), "default", "42").unwrap();
        for id in 0..=COMPACT_AFTER as i64 + 1 {
            journal.record_batch(id, vec![job(id)]);
            journal.finish(id);
            journal.commit().unwrap();
        }
        assert!(log_lines(dir.path()).len() < 2);
        let reopened = Journal::open(dir.path(), "default", "42").unwrap();
        assert_eq!(reopened.offset(), Some(COMPACT_AFTER as i64 + 2));
        assert!(reopened.state.pending.is_empty());
    }

    #[test]
    fn another_bot_starts_afresh_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), "default", "42").unwrap();
        journal.record_batch(5, vec![job(5)]);
        journal.commit().unwrap();
        let mut other = Journal::open(dir.path(), "default", "43").unwrap();
        assert_eq!(other.offset(), None);
        assert_eq!(other.start_ready(8, &mut HashSet::new()), vec![]);

        std::fs::write(dir.path().join("telegram/update-offset-default.json"), "{").unwrap();
        let err = Journal::open(dir.path(), "default", "42").unwrap_err();
        assert!(err.to_string().contains("not valid"), "{err}");
    }
}
