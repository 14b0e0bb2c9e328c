//! OpenAI-compatible chat completions (`POST {baseUrl}/chat/completions`).
//!
//! Mapping from the neutral model: the system prompt is the first `system` message; an
//! assistant message's `tool_use` blocks become `tool_calls` (arguments as a JSON string);
//! each `tool_result` becomes a `tool` message with its `tool_call_id`, placed before any
//! text of the same user turn so it directly follows the assistant's calls, as the API
//! requires. Chat completions has no error flag on tool output, so a failed tool's content is
//! prefixed with `Error: `. The output limit goes in `max_completion_tokens` for OpenAI's own
//! API (its reasoning models refuse the older name) and in `max_tokens` elsewhere (vLLM,
//! llama.cpp, Ollama, OpenRouter, Mistral); `compat.maxTokensField` overrides the choice.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat::{Block, ChatRequest, ChatResponse, Role, StopReason, ToolSpec, Usage};
use super::MaxTokensField;

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
enum WireMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: String,
    },
    Assistant {
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireCallOut<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: String,
    },
}

#[derive(Serialize)]
struct WireCallOut<'a> {
    id: &'a str,
    r#type: &'static str,
    function: WireFunctionOut<'a>,
}

#[derive(Serialize)]
struct WireFunctionOut<'a> {
    name: &'a str,
    arguments: String,
}

#[derive(Serialize)]
struct WireTool<'a> {
    r#type: &'static str,
    function: WireToolFunction<'a>,
}

#[derive(Serialize)]
struct WireToolFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

pub(super) fn encode(
    model: &str,
    max_tokens: u32,
    field: MaxTokensField,
    request: &ChatRequest,
) -> serde_json::Result<Vec<u8>> {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if !request.system.is_empty() {
        messages.push(WireMessage::System {
            content: &request.system,
        });
    }
    for message in &request.messages {
        let mut text = String::new();
        let mut calls = Vec::new();
        for block in &message.content {
            match block {
                Block::Text { text: t } => text.push_str(t),
                Block::ToolUse { id, name, input } => calls.push(WireCallOut {
                    id,
                    r#type: "function",
                    function: WireFunctionOut {
                        name,
                        arguments: serde_json::to_string(input)?,
                    },
                }),
                Block::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                } => messages.push(WireMessage::Tool {
                    tool_call_id: tool_use_id,
                    content: if *is_error {
                        format!("Error: {content}")
                    } else {
                        content.clone()
                    },
                }),
            }
        }
        match message.role {
            Role::User if !text.is_empty() => messages.push(WireMessage::User { content: text }),
            Role::User => {}
            Role::Assistant => messages.push(WireMessage::Assistant {
                content: (!text.is_empty()).then_some(text),
                tool_calls: calls,
            }),
        }
    }
    let tools = request.tools.iter().map(wire_tool).collect();
    let (max_tokens, max_completion_tokens) = match field {
        MaxTokensField::MaxTokens => (Some(max_tokens), None),
        MaxTokensField::MaxCompletionTokens => (None, Some(max_tokens)),
    };
    serde_json::to_vec(&WireRequest {
        model,
        max_tokens,
        max_completion_tokens,
        messages,
        tools,
    })
}

fn wire_tool(tool: &ToolSpec) -> WireTool<'_> {
    WireTool {
        r#type: "function",
        function: WireToolFunction {
            name: &tool.name,
            description: &tool.description,
            parameters: &tool.input_schema,
        },
    }
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: String,
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireAnswer,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireAnswer {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireCallIn>,
}

#[derive(Deserialize)]
struct WireCallIn {
    id: String,
    function: WireFunctionIn,
}

#[derive(Deserialize)]
struct WireFunctionIn {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<WireDetails>,
}

#[derive(Deserialize)]
struct WireDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

pub(super) fn decode(body: &[u8]) -> Result<ChatResponse, String> {
    let wire: WireResponse =
        serde_json::from_slice(body).map_err(|e| format!("not a chat completion ({e})"))?;
    let Some(choice) = wire.choices.into_iter().next() else {
        return Err("the chat completion has no choices".to_owned());
    };
    let mut content = Vec::with_capacity(1 + choice.message.tool_calls.len());
    if let Some(text) = choice.message.content.filter(|t| !t.is_empty()) {
        content.push(Block::Text { text });
    }
    let has_calls = !choice.message.tool_calls.is_empty();
    for call in choice.message.tool_calls {
        let input = if call.function.arguments.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_str(&call.function.arguments).map_err(|e| {
                format!(
                    "the arguments of tool call `{}` are not JSON ({e})",
                    call.function.name
                )
            })?
        };
        content.push(Block::ToolUse {
            id: call.id,
            name: call.function.name,
            input,
        });
    }
    let stop = match choice.finish_reason.as_deref() {
        Some("length") => StopReason::MaxTokens,
        _ if has_calls => StopReason::ToolUse,
        Some("stop") | None => StopReason::EndTurn,
        Some(other) => StopReason::Other(other.to_owned()),
    };
    let usage = wire.usage.map_or(Usage::default(), |u| {
        let cached = u
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0);
        Usage {
            input_tokens: u.prompt_tokens.saturating_sub(cached),
            output_tokens: u.completion_tokens,
            cache_read_tokens: cached,
            cache_write_tokens: 0,
        }
    });
    Ok(ChatResponse {
        content,
        stop,
        usage,
        model: wire.model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::chat::Message;
    use serde_json::json;

    #[test]
    fn tool_results_follow_the_calls_and_errors_are_marked() {
        let request = ChatRequest {
            system: String::new(),
            messages: vec![
                Message {
                    role: Role::Assistant,
                    content: vec![
                        Block::Text {
                            text: "checking".into(),
                        },
                        Block::ToolUse {
                            id: "c1".into(),
                            name: "f".into(),
                            input: json!({"a": 1}),
                        },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![
                        Block::ToolResult {
                            tool_use_id: "c1".into(),
                            content: "boom".into(),
                            is_error: true,
                        },
                        Block::Text {
                            text: "and?".into(),
                        },
                    ],
                },
            ],
            tools: Default::default(),
            max_tokens: 9,
        };
        let body = encode("m", 9, MaxTokensField::MaxTokens, &request).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["max_tokens"], 9);
        assert!(v.get("max_completion_tokens").is_none());
        assert_eq!(
            v["messages"],
            json!([
                {"role": "assistant", "content": "checking", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "Error: boom"},
                {"role": "user", "content": "and?"}
            ])
        );
    }

    #[test]
    fn the_output_limit_field_follows_the_endpoint() {
        let request = ChatRequest {
            system: String::new(),
            messages: vec![],
            tools: Default::default(),
            max_tokens: 7,
        };
        let field = MaxTokensField::default_for("https://api.openai.com/v1");
        let v: Value = serde_json::from_slice(&encode("m", 7, field, &request).unwrap()).unwrap();
        assert_eq!(v["max_completion_tokens"], 7);
        assert!(v.get("max_tokens").is_none());
        for other in [
            "https://openrouter.ai/api/v1",
            "http://127.0.0.1:11434/v1",
            "https://api.openai.com.example.net/v1",
        ] {
            assert_eq!(
                MaxTokensField::default_for(other),
                MaxTokensField::MaxTokens,
                "{other}"
            );
        }
    }

    #[test]
    fn bad_arguments_and_empty_choices_are_errors() {
        let bad = br#"{"choices":[{"message":{"tool_calls":[{"id":"x","type":"function","function":{"name":"f","arguments":"{oops"}}]},"finish_reason":"tool_calls"}]}"#;
        assert!(decode(bad).unwrap_err().contains("tool call `f`"));
        assert!(decode(br#"{"choices":[]}"#)
            .unwrap_err()
            .contains("no choices"));
    }
}
