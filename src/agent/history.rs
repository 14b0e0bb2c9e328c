//! The conversation as the transcript holds it, and the agent's own transcript lines.
//!
//! A transcript (`sessions::Transcripts`) is JSON lines. Inbound messages are written by
//! `messages::handle` (`sessionKey, ts, channel, accountId, peer, group?, text`, no `role`).
//! The agent adds two kinds of line:
//! - `{"sessionKey", "ts", "role": "assistant", "text"}`: a final reply, redacted;
//! - `{"sessionKey", "ts", "role": "reset"}`: `/new`; history starts after the last one.
//!
//! Tool calls of a turn are not stored: the next turn sees the question and the answer.

use serde::Serialize;
use serde_json::Value;

use super::prompt::Boundary;
use crate::provider::{Block, Message, Role};

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
