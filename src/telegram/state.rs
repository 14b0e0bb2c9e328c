//! The polling journal: Telegram's update offset plus the updates taken but not yet done.
//!
//! `~/.openclaw/telegram/update-offset-<accountId>.json`, the file OpenClaw uses for the
//! restart offset (`version`, `lastUpdateId`, `botId`), extended by clawfort with `pending`:
//! the jobs received from Telegram and not finished yet.
//!
//! The guarantee, step by step:
//! 1. A batch from `getUpdates` is written here (jobs in `pending`, `lastUpdateId` moved
//!    past the batch) *before* the next `getUpdates` confirms it to Telegram. A crash
//!    before this write leaves the batch unconfirmed, so Telegram sends it again: nothing
//!    is lost. After it, the jobs are on disk: nothing is lost either.
//! 2. A job is marked `started` (durably) before any side effect: the policy decision, the
//!    model call, the reply.
//! 3. When its reply is sent, the job is removed.
//!
//! On start, a job still `started` was interrupted mid-way: it is *not* run again (that
//! could call the model twice); its sender gets a note to send it again. So each update is
//! handled at most once, and no update vanishes without its sender hearing about it.
//! Unstarted jobs simply run. Writes are atomic (temporary file, fsync, rename, fsync of
//! the directory) with mode 600 in a 700 directory.
//!
//! **One write per state change, not per step.** Changes are made in memory and written by
//! [`Journal::commit`], which the channel calls exactly where the guarantee needs the disk:
//! before the next `getUpdates` (step 1) and before it spawns the jobs it just marked
//! started (step 2). Everything that happened since the last write goes out in that one
//! write: a batch together with the jobs that start at once, or the jobs that finished
//! together with the queued ones that take their place. Each rule above still holds, since
//! each is about the order of a write and an outside effect, and the write still comes
//! first; an isolated turn costs two writes (batch + start, then finish) instead of three,
//! and under load many turns share one. Finishing is written at once as well (not left for
//! a later write), so an answered message is not later mistaken for an interrupted one.
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// OpenClaw's version 2 of this file (with `botId`).
const VERSION: u32 = 2;

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

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PollState {
    version: u32,
    last_update_id: Option<i64>,
    bot_id: Option<String>,
    #[serde(default)]
    pending: Vec<Job>,
}

#[derive(Debug, thiserror::Error)]
#[error("Telegram polling state {}: {message}", path.display())]
pub struct StateError {
    path: PathBuf,
    message: String,
}

/// The journal of one bot account, loaded in memory; changes reach the disk with
/// [`Journal::commit`].
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    state: PollState,
    /// Changed in memory since the last write.
    dirty: bool,
}

impl Journal {
    /// Loads `<state_dir>/telegram/update-offset-<account_id>.json` for the bot `bot_id`.
    /// A file of another bot (the token was changed) is started afresh, since the old
    /// offset means nothing to the new bot.
    pub fn open(state_dir: &Path, account_id: &str, bot_id: &str) -> Result<Self, StateError> {
        let path = state_dir
            .join("telegram")
            .join(format!("update-offset-{account_id}.json"));
        let fail = |message: String| StateError {
            path: path.clone(),
            message,
        };
        let fresh = PollState {
            version: VERSION,
            bot_id: Some(bot_id.to_string()),
            ..PollState::default()
        };
        let state = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh,
            Err(e) => return Err(fail(format!("cannot read it: {e}"))),
            Ok(bytes) => {
                let state: PollState = serde_json::from_slice(&bytes).map_err(|e| {
                    fail(format!(
                        "it is not valid ({e}); move it away to start polling afresh \
                         (Telegram then re-sends the updates of the last 24 hours it still holds)"
                    ))
                })?;
                if state.bot_id.as_deref() == Some(bot_id) {
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
            state,
            dirty: false,
        })
    }

    /// The `offset` for the next `getUpdates`: one past the last update taken.
    pub fn offset(&self) -> Option<i64> {
        self.state.last_update_id.map(|id| id.saturating_add(1))
    }

    /// Records a received batch (in memory; [`Journal::commit`] before the next
    /// `getUpdates`): `last_update_id` is the highest update id in it (also of the updates
    /// that made no job), `jobs` the updates that need handling.
    pub fn record_batch(&mut self, last_update_id: i64, jobs: Vec<Job>) {
        let seen = |id: i64| self.state.pending.iter().any(|j| j.update_id == id);
        let jobs: Vec<Job> = jobs.into_iter().filter(|j| !seen(j.update_id)).collect();
        self.state.pending.extend(jobs);
        self.state.last_update_id = Some(
            self.state
                .last_update_id
                .map_or(last_update_id, |old| old.max(last_update_id)),
        );
        self.dirty = true;
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

    /// Marks started (in memory; [`Journal::commit`] before running them) the jobs that may
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
            ready.push(job.clone());
        }
        self.dirty |= !ready.is_empty();
        ready
    }

    /// Removes a finished job (in memory; [`Journal::commit`] writes it).
    pub fn finish(&mut self, update_id: i64) {
        self.state.pending.retain(|j| j.update_id != update_id);
        self.dirty = true;
    }

    /// Writes the changes since the last write, if any, atomically and durably.
    pub fn commit(&mut self) -> Result<(), StateError> {
        if self.dirty {
            self.save()?;
            self.dirty = false;
        }
        Ok(())
    }

    fn save(&self) -> Result<(), StateError> {
        let fail = |message: String| StateError {
            path: self.path.clone(),
            message,
        };
        let bytes = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| fail(format!("cannot encode it: {e}")))?;
        write_atomic(&self.path, &bytes).map_err(|e| fail(format!("cannot write it: {e}")))
    }
}

/// Replaces `path` by `bytes` atomically and durably, mode 600, in a 700 directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::pairing::ensure_private_dir(dir)?;
    // tempfile creates the file with mode 600 in `dir`, so the rename stays on one
    // filesystem and is atomic.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
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
