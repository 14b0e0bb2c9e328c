//! The OpenAI chat-completions adapter against a fake `POST {baseUrl}/chat/completions`.

use std::time::{Duration, Instant};

use clawfort::provider::{Api, Block, ChatRequest, Message, Role, StopReason, ToolSpec, Usage};
use clawfort_fakes::model::{assert_no_key, ok, Fake, Reply, KEY};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::client::provider;

const MODEL: &str = "gpt-4.1-mini";

fn completion(message: serde_json::Value, finish: &str) -> serde_json::Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1-mini-2025-04-14",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107,
                  "prompt_tokens_details": {"cached_tokens": 40}}
    })
}

fn hello() -> ChatRequest {
    ChatRequest {
        system: "You are terse.".into(),
        messages: vec![Message::user_text("hello")],
        tools: Default::default(),
        max_tokens: 128,
    }
}

#[tokio::test]
async fn plain_answer_and_usage_mapping() {
    let fake = Fake::start(|_, _| {
        ok(completion(
            json!({"role": "assistant", "content": "Hi."}),
            "stop",
        ))
    })
    .await;
    let p = provider("openai", Api::OpenAiCompletions, &fake.url("/v1"), 3);
    let r = p
        .chat(MODEL, &hello(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(r.text(), "Hi.");
    assert_eq!(r.stop, StopReason::EndTurn);
    assert_eq!(r.model, "gpt-4.1-mini-2025-04-14");
    // prompt_tokens includes the cached ones: 100 = 60 fresh + 40 cached.
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 60,
            output_tokens: 7,
            cache_read_tokens: 40,
            cache_write_tokens: 0
        }
    );
    let s = &fake.seen()[0];
    assert_eq!(s.path, "/v1/chat/completions");
    assert_eq!(
        s.header("authorization").map(String::from),
        Some(format!("Bearer {KEY}"))
    );
    assert_eq!(s.header("x-api-key"), None);
    assert_eq!(
        s.json(),
        json!({"model": MODEL, "max_tokens": 128, "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello"}]})
    );
}

#[tokio::test]
async fn tool_calls_round_trip() {
    let fake = Fake::start(|n, seen| {
        let body = seen.json();
        if n == 0 {
            assert_eq!(
                body["tools"],
                json!([{"type": "function", "function": {"name": "add", "description": "Adds",
                        "parameters": {"type": "object"}}}])
            );
            return ok(completion(
                json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_9", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2,\"b\":3}"}}]}),
                "tool_calls",
            ));
        }
        let m = &body["messages"];
        let shape_ok = m[2] == json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2,\"b\":3}"}}]})
            && m[3] == json!({"role": "tool", "tool_call_id": "call_9", "content": "5"});
        if shape_ok {
            ok(completion(json!({"role": "assistant", "content": "2 + 3 = 5"}), "stop"))
        } else {
            Reply::Json(400, vec![], json!({"error": {"message": format!("bad shape: {m}"), "type": "invalid_request_error"}}).to_string())
        }
    })
    .await;
    let p = provider("vllm", Api::OpenAiCompletions, &fake.url("/v1/"), 1);
    let cancel = CancellationToken::new();
    let mut request = hello();
    std::sync::Arc::make_mut(&mut request.tools).push(ToolSpec {
        name: "add".into(),
        description: "Adds".into(),
        input_schema: json!({"type": "object"}),
    });

    let first = p.chat(MODEL, &request, &cancel).await.unwrap();
    assert_eq!(first.stop, StopReason::ToolUse);
    assert_eq!(
        first.content,
        vec![Block::ToolUse {
            id: "call_9".into(),
            name: "add".into(),
            input: json!({"a": 2, "b": 3})
        }]
    );
    request.messages.push(Message {
        role: Role::Assistant,
        content: first.content,
    });
    request.messages.push(Message {
        role: Role::User,
        content: vec![Block::ToolResult {
            tool_use_id: "call_9".into(),
            content: "5".into(),
            is_error: false,
        }],
    });
    let second = p.chat(MODEL, &request, &cancel).await.unwrap();
    assert_eq!(second.text(), "2 + 3 = 5");
}

#[tokio::test]
async fn rate_limit_429_is_retried_after_retry_after() {
    let fake = Fake::start(|n, _| match n {
        0 => Reply::Json(
            429,
            vec![("retry-after", "1".into())],
            json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}).to_string(),
        ),
        _ => ok(completion(json!({"role": "assistant", "content": "ok"}), "stop")),
    })
    .await;
    let p = provider("openai", Api::OpenAiCompletions, &fake.url("/v1"), 3);
    let started = Instant::now();
    assert_eq!(
        p.chat(MODEL, &hello(), &CancellationToken::new())
            .await
            .unwrap()
            .text(),
        "ok"
    );
    assert_eq!(fake.seen().len(), 2);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_key_echoed_in_an_error_body_is_scrubbed() {
    let fake = Fake::start(|_, _| {
        Reply::Json(400, vec![], json!({"error": {"message": format!("Incorrect API key provided: {KEY}."), "type": "invalid_request_error"}}).to_string())
    })
    .await;
    let p = provider(
        "openrouter",
        Api::OpenAiCompletions,
        &fake.url("/api/v1"),
        3,
    );
    let err = p
        .chat(
            "anthropic/claude-sonnet-4.5",
            &hello(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(fake.seen().len(), 1, "400 is not retried");
    assert_eq!(
        err.to_string(),
        "provider `openrouter` answered HTTP 400: invalid_request_error: Incorrect API key provided: [redacted]."
    );
    assert_no_key("error debug", &format!("{err:?}"));
    assert_eq!(
        fake.seen()[0].json()["model"],
        "anthropic/claude-sonnet-4.5"
    );
}

#[tokio::test]
async fn a_rejected_key_401_or_403_is_one_request_however_many_attempts_are_allowed() {
    for status in [401, 403] {
        let fake = Fake::start(move |_, _| {
            Reply::Json(
                status,
                vec![("retry-after", "0".into())],
                json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}).to_string(),
            )
        })
        .await;
        let p = provider("openai", Api::OpenAiCompletions, &fake.url("/v1"), 4);
        let err = p
            .chat(MODEL, &hello(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(fake.seen().len(), 1, "HTTP {status} was retried");
        assert_eq!(
            err.to_string(),
            format!(
                "provider `openai` rejected the API key (HTTP {status}): check OPENAI_API_KEY \
                 in ~/.openclaw/.env"
            )
        );
    }
}

#[tokio::test]
async fn local_server_without_usage_or_key() {
    let fake = Fake::start(|_, _| {
        ok(json!({"choices": [{"message": {"role": "assistant", "content": "local"}, "finish_reason": "stop"}]}))
    })
    .await;
    let mut spec = crate::client::spec(
        "llamacpp",
        Api::OpenAiCompletions,
        &fake.url("/v1"),
        Duration::from_secs(2),
    );
    spec.api_key = None;
    let p = clawfort::provider::Provider::new(spec, &crate::client::options(1)).unwrap();
    let r = p
        .chat("qwen", &hello(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((r.text().as_str(), r.usage), ("local", Usage::default()));
    assert_eq!(fake.seen()[0].header("authorization"), None);
}
