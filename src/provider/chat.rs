//! The provider-neutral conversation: what the agent loop builds and reads.
//!
//! It follows the Anthropic Messages shape (a system prompt beside the messages; tool calls
//! and tool results as content blocks), the richer of the two wire formats; the OpenAI adapter
//! maps it onto roles and `tool_calls`. The types serialize with `serde` so a transcript can
//! store them as they are.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One model call.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub system: String,
    pub messages: Vec<Message>,
    /// Shared with the tool registry, which builds the specs once, not per call.
    pub tools: Arc<Vec<ToolSpec>>,
    /// Upper bound on output tokens (both APIs require or honour it).
    pub max_tokens: u32,
}

/// A tool the model may call; `input_schema` is a JSON Schema object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Block>,
}

impl Message {
    /// A user message holding one text block.
    pub fn user_text(text: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: vec![Block::Text { text: text.into() }],
        }
    }
}

/// A content block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    /// The model asks for a tool to run; `input` is a JSON object.
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// The result of a `ToolUse` with the same id, sent back in a user message.
    ToolResult {
        tool_use_id: String,
        content: String,
        is_error: bool,
    },
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    /// Anything else the provider said (`stop_sequence`, `content_filter`, ...), as it said it.
    Other(String),
}

/// Tokens one call consumed. `input_tokens` excludes the cached ones on both APIs (OpenAI's
/// `prompt_tokens` includes them; the adapter subtracts), so the four add up to what was billed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub content: Vec<Block>,
    pub stop: StopReason,
    pub usage: Usage,
    /// The model id the provider reports having used.
    pub model: String,
}

impl ChatResponse {
    /// The text blocks joined, for channels that only show text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for block in &self.content {
            if let Block::Text { text } = block {
                out.push_str(text);
            }
        }
        out
    }
}
