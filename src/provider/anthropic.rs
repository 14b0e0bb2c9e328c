//! The Anthropic Messages API (`POST /v1/messages`, `anthropic-version: 2023-06-01`).
//!
//! The neutral [`Block`] serializes exactly as Messages content blocks (`text`, `tool_use`,
//! `tool_result`), so the request borrows the conversation as it is, with no copy.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat::{Block, ChatRequest, ChatResponse, Message, StopReason, ToolSpec, Usage};

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    system: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tools: &'a [ToolSpec],
}

pub(super) fn encode(
    model: &str,
    max_tokens: u32,
    request: &ChatRequest,
) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&WireRequest {
        model,
        max_tokens,
        system: &request.system,
        messages: &request.messages,
        tools: &request.tools,
    })
}

#[derive(Deserialize)]
struct WireResponse {
    model: String,
    content: Vec<WireBlock>,
    stop_reason: Option<String>,
    usage: WireUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// Thinking and server-tool blocks: not requested, not kept.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireUsage {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

pub(super) fn decode(body: &[u8]) -> Result<ChatResponse, String> {
    let wire: WireResponse =
        serde_json::from_slice(body).map_err(|e| format!("not a Messages API answer ({e})"))?;
    let content = wire
        .content
        .into_iter()
        .filter_map(|block| match block {
            WireBlock::Text { text } => Some(Block::Text { text }),
            WireBlock::ToolUse { id, name, input } => Some(Block::ToolUse { id, name, input }),
            WireBlock::Other => None,
        })
        .collect();
    let stop = match wire.stop_reason.as_deref() {
        Some("end_turn") => StopReason::EndTurn,
        Some("tool_use") => StopReason::ToolUse,
        Some("max_tokens") => StopReason::MaxTokens,
        Some(other) => StopReason::Other(other.to_owned()),
        None => StopReason::Other("none".to_owned()),
    };
    Ok(ChatResponse {
        content,
        stop,
        usage: Usage {
            input_tokens: wire.usage.input_tokens,
            output_tokens: wire.usage.output_tokens,
            cache_read_tokens: wire.usage.cache_read_input_tokens.unwrap_or(0),
            cache_write_tokens: wire.usage.cache_creation_input_tokens.unwrap_or(0),
        },
        model: wire.model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::chat::Role;
    use serde_json::json;

    #[test]
    fn request_uses_messages_api_blocks() {
        let request = ChatRequest {
            system: "be brief".into(),
            messages: vec![
                Message::user_text("hi"),
                Message {
                    role: Role::Assistant,
                    content: vec![Block::ToolUse {
                        id: "t1".into(),
                        name: "clock".into(),
                        input: json!({}),
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![Block::ToolResult {
                        tool_use_id: "t1".into(),
                        content: "12:00".into(),
                        is_error: false,
                    }],
                },
            ],
            tools: Default::default(),
            max_tokens: 100,
        };
        let v: Value = serde_json::from_slice(&encode("m", 50, &request).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({
                "model": "m", "max_tokens": 50, "system": "be brief",
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "clock", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "12:00", "is_error": false}]}
                ]
            })
        );
    }

    #[test]
    fn unknown_blocks_and_stop_reasons_are_tolerated() {
        let body = br#"{"model":"m","content":[{"type":"thinking","thinking":"x"},{"type":"text","text":"ok"}],
            "stop_reason":"refusal","usage":{"input_tokens":1,"output_tokens":2,"cache_read_input_tokens":null}}"#;
        let r = decode(body).unwrap();
        assert_eq!(r.content, vec![Block::Text { text: "ok".into() }]);
        assert_eq!(r.stop, StopReason::Other("refusal".into()));
        assert_eq!(r.usage.cache_read_tokens, 0);
    }
}
