//! The conversation as the transcript holds it, and the agent's own transcript lines.
//!
//! A transcript (`sessions::Transcripts`) is JSON lines. Inbound messages are written by
//! `messages::handle` (`sessionKey, ts, channel, accountId, peer, group?, text`, no `role`).
//! The agent adds two kinds of line:
//! - `{"sessionKey", "ts", "role": "assistant", "text"}`: a final reply, redacted;
//! - `{"sessionKey", "ts", "role": "reset"}`: `/new`; history starts after the last one.
//!
//! Tool calls of a turn are not stored: the next turn sees the question and the answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use super::prompt::Boundary;
use crate::provider::{Block, Message, Role};
use crate::sessions::{Cursor, SessionKey, Transcripts};

/// Sessions whose history stays in memory; the least recently used beyond it is dropped
/// (and read from its file again when it talks next).
const CACHED_SESSIONS: usize = 256;

/// The transcript entries since the last reset of recent sessions, redacted, kept between
/// turns: a turn reads only the lines appended since the last one instead of reading and
/// parsing the whole transcript again (which grows with the conversation).
///
/// The file stays the truth: each turn asks it for what was appended after the kept cursor
/// (by anyone: the inbound policy, the agent, `/new`), and starts over when it is another
/// file or shorter than the cursor.
#[derive(Debug, Default)]
pub struct Cache {
    sessions: Mutex<HashMap<SessionKey, Arc<Mutex<Cached>>>>,
    clock: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct Cached {
    cursor: Option<Cursor>,
    /// Entries after the last reset only: earlier ones never reach the model.
    entries: Vec<Value>,
    last_used: u64,
}

impl Cache {
    /// Whether `key`'s entries are cached, so bringing them up to date reads only the lines
    /// appended since (one small read of a file the page cache holds).
    pub fn is_warm(&self, key: &SessionKey) -> bool {
        let sessions = self.sessions.lock().expect("not poisoned");
        sessions
            .get(key)
            .is_some_and(|c| c.lock().is_ok_and(|c| c.cursor.is_some()))
    }

    /// Brings `key`'s entries up to date from `transcripts` (blocking file I/O: call off
    /// the async threads), redacting new ones with `redact`, and runs `f` on them.
    pub fn with_entries<R>(
        &self,
        transcripts: &Transcripts,
        key: &SessionKey,
        redact: impl Fn(&mut Value),
        f: impl FnOnce(&[Value]) -> R,
    ) -> std::io::Result<R> {
        let tick = self
            .clock
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = {
            let mut sessions = self.sessions.lock().expect("not poisoned");
            if !sessions.contains_key(key) && sessions.len() >= CACHED_SESSIONS {
                let oldest = sessions
                    .iter()
                    .min_by_key(|(_, c)| c.lock().map_or(0, |c| c.last_used))
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    sessions.remove(&oldest);
                }
            }
            Arc::clone(sessions.entry(key.clone()).or_default())
        };
        let mut cached = session.lock().expect("not poisoned");
        cached.last_used = tick;
        let mut appended = transcripts.read_after(key, cached.cursor)?;
        if appended.from_start {
            cached.entries.clear();
        }
        if let Some(reset) = appended.entries.iter().rposition(|e| e["role"] == "reset") {
            cached.entries.clear();
            appended.entries.drain(..=reset);
        }
        appended.entries.iter_mut().for_each(&redact);
        cached.entries.append(&mut appended.entries);
        cached.cursor = appended.cursor;
        Ok(f(&cached.entries))
    }
}

/// An agent line of the transcript.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentEntry<'a> {
    pub session_key: &'a str,
    pub ts: u128,
    pub role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
}

pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The messages since the last reset, the newest that fit in `budget_bytes` (tokens are
/// estimated as bytes / 4 by the caller). The last entry (the message of this turn) is
/// always kept. Messages from anyone but an owner are wrapped as untrusted. Consecutive
/// messages of one role are merged, and the history starts with a user message, as both
/// APIs require.
///
/// `current` is the turn's own message (peer, text). When messages to one session queue,
/// the transcript holds the later message before the reply to the earlier one: replies
/// found after `current` are moved before it, and later queued messages are left to their
/// own turns, so the turn's message is always the last one the model sees.
pub fn build(
    entries: &[Value],
    current: (&str, &str),
    is_owner: impl Fn(&str, &str) -> bool,
    boundary: &Boundary,
    budget_bytes: usize,
) -> Vec<Message> {
    let start = entries
        .iter()
        .rposition(|e| e["role"] == "reset")
        .map_or(0, |i| i + 1);
    let entries = &entries[start..];
    let is_current =
        |e: &Value| e.get("role").is_none() && e["peer"] == current.0 && e["text"] == current.1;
    let ordered: Vec<&Value> = match entries.iter().rposition(is_current) {
        Some(cur) => entries[..cur]
            .iter()
            .chain(
                entries[cur + 1..]
                    .iter()
                    .filter(|e| e["role"] == "assistant"),
            )
            .chain(std::iter::once(&entries[cur]))
            .collect(),
        None => entries.iter().collect(),
    };
    let mut picked: Vec<(Role, String)> = Vec::new();
    let mut used = 0usize;
    for entry in ordered.into_iter().rev() {
        let Some(text) = entry["text"].as_str() else {
            continue;
        };
        let (role, text) = if entry["role"] == "assistant" {
            (Role::Assistant, text.to_owned())
        } else {
            let peer = entry["peer"].as_str().unwrap_or("");
            let channel = entry["channel"].as_str().unwrap_or("?");
            if is_owner(channel, peer) {
                (Role::User, text.to_owned())
            } else {
                (
                    Role::User,
                    boundary.wrap(&format!("message from {channel} user {peer}"), text),
                )
            }
        };
        if !picked.is_empty() && used + text.len() > budget_bytes {
            break;
        }
        used += text.len();
        picked.push((role, text));
    }
    picked.reverse();
    while picked.first().is_some_and(|(r, _)| *r == Role::Assistant) {
        picked.remove(0);
    }
    let mut messages: Vec<Message> = Vec::new();
    for (role, text) in picked {
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.push(Block::Text { text }),
            _ => messages.push(Message {
                role,
                content: vec![Block::Text { text }],
            }),
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(peer: &str, text: &str) -> Value {
        json!({"channel": "telegram", "peer": peer, "text": text})
    }

    fn assistant(text: &str) -> Value {
        json!({"role": "assistant", "text": text})
    }

    #[test]
    fn reset_trim_wrap_and_merge() {
        let b = Boundary::random();
        let entries = vec![
            user("1", "before reset"),
            json!({"role": "reset"}),
            assistant("orphan answer"),
            user("1", "old question"),
            assistant("old answer"),
            user("2", "stranger says hi"),
            user("1", &"x".repeat(100)),
        ];
        let all = build(&entries, ("9", "none"), |_, p| p == "1", &b, usize::MAX);
        let text = serde_json::to_string(&all).unwrap();
        assert!(!text.contains("before reset") && !text.contains("orphan"));
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].role, Role::User);
        assert_eq!(all[2].content.len(), 2, "the two user messages are merged");
        assert!(text.contains("untrusted-") && text.contains("stranger says hi"));

        let trimmed = build(&entries, ("9", "none"), |_, p| p == "1", &b, 10);
        assert_eq!(trimmed.len(), 1, "only the current message fits");
        assert_eq!(
            trimmed[0].content,
            vec![Block::Text {
                text: "x".repeat(100)
            }]
        );
    }

    #[test]
    fn the_cache_follows_appends_and_resets() {
        let dir = tempfile::tempdir().unwrap();
        let t = Transcripts::new(dir.path());
        let key = crate::sessions::group_key("c", "g");
        let cache = Cache::default();
        let texts = |cache: &Cache| {
            cache
                .with_entries(&t, &key, |e| e["seen"] = true.into(), |e| e.to_vec())
                .unwrap()
        };
        assert!(texts(&cache).is_empty());
        t.append(&key, &user("1", "a")).unwrap();
        t.append(&key, &assistant("b")).unwrap();
        let got = texts(&cache);
        assert_eq!(got.len(), 2);
        assert!(
            got.iter().all(|e| e["seen"] == true),
            "new entries are redacted"
        );
        t.append(&key, &json!({"role": "reset"})).unwrap();
        t.append(&key, &user("1", "c")).unwrap();
        assert_eq!(
            texts(&cache),
            [json!({"channel": "telegram", "peer": "1", "text": "c", "seen": true})]
        );
        t.append(&key, &user("1", "d")).unwrap();
        assert_eq!(texts(&cache).len(), 2);
        // A fresh cache reads the file whole and gets the same.
        assert_eq!(texts(&Cache::default()), texts(&cache));
    }

    #[test]
    fn a_queued_message_comes_after_the_reply_to_the_one_before() {
        let b = Boundary::random();
        let entries = vec![
            user("1", "a1"),
            user("1", "a2"),
            assistant("reply to a1"),
            user("1", "a3"),
        ];
        let texts = |m: &[Message]| serde_json::to_value(m).unwrap().to_string();
        let turn2 = build(&entries, ("1", "a2"), |_, _| true, &b, usize::MAX);
        assert_eq!(turn2.len(), 3, "{}", texts(&turn2));
        assert_eq!(turn2[1].role, Role::Assistant);
        assert_eq!(turn2[2].content, vec![Block::Text { text: "a2".into() }]);
        assert!(!texts(&turn2).contains("a3"));
    }
}
