//! The Anthropic Messages adapter against a fake `POST /v1/messages`.

use std::time::{Duration, Instant};

use clawfort::provider::{
    Api, Block, ChatRequest, Message, ProviderError, Role, StopReason, ToolSpec, Usage,
};
use clawfort_fakes::model::{assert_no_key, ok, Fake, Reply, KEY};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::client::{provider, provider_with};

const MODEL: &str = "claude-sonnet-4-5";

fn answer(text: &str) -> serde_json::Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 5,
                  "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000}
    })
}

fn hello() -> ChatRequest {
    ChatRequest {
        system: "You are terse.".into(),
        messages: vec![Message::user_text("hello")],
        tools: Default::default(),
        max_tokens: 256,
    }
}

#[tokio::test]
async fn plain_answer_with_headers_and_usage() {
    let fake = Fake::start(|_, _| ok(answer("Hi."))).await;
    let p = provider("anthropic", Api::AnthropicMessages, &fake.url(""), 3);
    let r = p
        .chat(MODEL, &hello(), &CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(r.content, vec![Block::Text { text: "Hi.".into() }]);
    assert_eq!(r.stop, StopReason::EndTurn);
    assert_eq!(r.model, "claude-sonnet-4-5-20250929");
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 12,
            output_tokens: 5,
            cache_read_tokens: 2000,
            cache_write_tokens: 100
        }
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.path, "/v1/messages");
    assert_eq!(s.header("x-api-key"), Some(KEY));
    assert_eq!(s.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(s.header("content-type"), Some("application/json"));
    assert_eq!(s.header("authorization"), None);
    assert_eq!(
        s.json(),
        json!({"model": MODEL, "max_tokens": 256, "system": "You are terse.",
               "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]})
    );
}

#[tokio::test]
async fn tool_use_round_trip_through_a_proxy_base_url() {
    let fake = Fake::start(|n, seen| {
        let body = seen.json();
        match n {
            0 => {
                assert_eq!(body["tools"][0]["name"], "get_time");
                assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
                ok(json!({
                    "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
                    "content": [
                        {"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "toolu_01", "name": "get_time", "input": {"tz": "UTC"}}
                    ],
                    "stop_reason": "tool_use",
                    "usage": {"input_tokens": 30, "output_tokens": 20}
                }))
            }
            _ => {
                let messages = &body["messages"];
                let shape_ok = messages[1]["role"] == "assistant"
                    && messages[1]["content"][1]
                        == json!({"type": "tool_use", "id": "toolu_01", "name": "get_time", "input": {"tz": "UTC"}})
                    && messages[2]["role"] == "user"
                    && messages[2]["content"][0]
                        == json!({"type": "tool_result", "tool_use_id": "toolu_01", "content": "12:00", "is_error": false})
                    && body["model"] == MODEL
                    && body["max_tokens"] == 64
                    && seen.header("x-api-key") == Some(KEY);
                if shape_ok {
                    ok(answer("It is noon."))
                } else {
                    Reply::Json(400, vec![], json!({"type": "error", "error": {"type": "invalid_request_error", "message": format!("bad shape: {body}")}}).to_string())
                }
            }
        }
    })
    .await;
    let p = provider("proxy", Api::AnthropicMessages, &fake.url("/anthropic/"), 1);
    let cancel = CancellationToken::new();
    let mut request = hello();
    request.max_tokens = 64;
    std::sync::Arc::make_mut(&mut request.tools).push(ToolSpec {
        name: "get_time".into(),
        description: "The current time".into(),
        input_schema: json!({"type": "object", "properties": {"tz": {"type": "string"}}}),
    });

    let first = p.chat(MODEL, &request, &cancel).await.unwrap();
    assert_eq!(first.stop, StopReason::ToolUse);
    let Block::ToolUse { id, name, input } = &first.content[1] else {
        panic!("{first:?}")
    };
    assert_eq!(
        (id.as_str(), name.as_str(), input),
        ("toolu_01", "get_time", &json!({"tz": "UTC"}))
    );

    request.messages.push(Message {
        role: Role::Assistant,
        content: first.content.clone(),
    });
    request.messages.push(Message {
        role: Role::User,
        content: vec![Block::ToolResult {
            tool_use_id: id.clone(),
            content: "12:00".into(),
            is_error: false,
        }],
    });
    let second = p.chat(MODEL, &request, &cancel).await.unwrap();
    assert_eq!(second.text(), "It is noon.");
    assert!(fake
        .seen()
        .iter()
        .all(|s| s.path == "/anthropic/v1/messages"));
}

#[tokio::test]
async fn overloaded_529_is_retried_after_retry_after() {
    let fake = Fake::start(|n, _| match n {
        0 => Reply::Json(
            529,
            vec![("retry-after", "1".into())],
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).to_string(),
        ),
        _ => ok(answer("Back.")),
    })
    .await;
    let p = provider("anthropic", Api::AnthropicMessages, &fake.url(""), 3);
    let started = Instant::now();
    let r = p
        .chat(MODEL, &hello(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(r.text(), "Back.");
    assert_eq!(fake.seen().len(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retry-after was not honoured"
    );
}

#[tokio::test]
async fn retry_after_beyond_the_cap_gives_up_at_once() {
    let fake = Fake::start(|_, _| {
        Reply::Json(
            429,
            vec![("retry-after", "3600".into())],
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#.into(),
        )
    })
    .await;
    let p = provider("anthropic", Api::AnthropicMessages, &fake.url(""), 5);
    let err = p
        .chat(MODEL, &hello(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(fake.seen().len(), 1);
    assert_eq!(
        err.to_string(),
        "provider `anthropic` answered HTTP 429: rate_limit_error: slow down"
    );
}

#[tokio::test]
async fn wrong_key_is_one_request_and_one_clear_error() {
    let fake = Fake::start(|_, _| {
        Reply::Json(401, vec![], json!({"type": "error", "error": {"type": "authentication_error", "message": format!("invalid x-api-key {KEY}")}}).to_string())
    })
    .await;
    let p = provider("anthropic", Api::AnthropicMessages, &fake.url(""), 4);
    let err = p
        .chat(MODEL, &hello(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(fake.seen().len(), 1, "an auth failure must not be retried");
    assert_eq!(
        err.to_string(),
        "provider `anthropic` rejected the API key (HTTP 401): check ANTHROPIC_API_KEY in ~/.openclaw/.env"
    );
    assert_no_key("error", &err.to_string());
    assert_no_key("error debug", &format!("{err:?}"));
    assert_no_key("provider debug", &format!("{p:?}"));
    assert_no_key("fake server log", &fake.seen_without_auth());
}

#[tokio::test]
async fn garbage_is_an_error_not_a_panic_and_not_retried() {
    for (body, want) in [
        ("<html>502 Bad Gateway</html>", "not a Messages API answer"),
        (r#"{"content": "nope"}"#, "not a Messages API answer"),
        ("", "not a Messages API answer"),
        (
            r#"{"model":"m","content":[{"type":"text"}],"usage":{}}"#,
            "missing field",
        ),
    ] {
        let fake = Fake::start(move |_, _| Reply::Json(200, vec![], body.into())).await;
        let p = provider("anthropic", Api::AnthropicMessages, &fake.url(""), 3);
        let err = p
            .chat(MODEL, &hello(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ProviderError::BadResponse { .. }), "{err:?}");
        assert!(err.to_string().contains(want), "{body}: {err}");
        assert_eq!(fake.seen().len(), 1);
    }
}

#[tokio::test]
async fn timeout_covers_the_whole_request_and_is_retried() {
    let fake = Fake::start(|_, _| Reply::Hang).await;
    let p = provider_with(
        "anthropic",
        Api::AnthropicMessages,
        &fake.url(""),
        2,
        Duration::from_millis(300),
    );
    let started = Instant::now();
    let err = p
        .chat(MODEL, &hello(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "provider `anthropic` did not answer within 0.3s (its `timeout`)"
    );
    assert_eq!(fake.seen().len(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connection_closed_mid_body_is_an_error() {
    let fake = Fake::start(|_, _| Reply::Truncated {
        declared: 500,
        sent: r#"{"id":"msg_1","type":"mess"#,
    })
    .await;
    let p = provider("anthropic", Api::AnthropicMessages, &fake.url(""), 2);
    let err = p
        .chat(MODEL, &hello(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Interrupted { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("closed the connection before the answer was complete"),
        "{err}"
    );
    assert_eq!(fake.seen().len(), 2, "a broken connection is transient");
}

#[tokio::test]
async fn a_gigabyte_answer_is_cut_at_the_limit() {
    let fake = Fake::start(|_, _| Reply::Endless).await;
    let p = provider("anthropic", Api::AnthropicMessages, &fake.url(""), 1);
    let started = Instant::now();
    let err = p
        .chat(MODEL, &hello(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "provider `anthropic` sent an unusable answer: the answer is larger than 8388608 bytes"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn cancellation_stops_a_hanging_call_at_once() {
    let fake = Fake::start(|_, _| Reply::Hang).await;
    let p = provider("anthropic", Api::AnthropicMessages, &fake.url(""), 3);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let err = p.chat(MODEL, &hello(), &cancel).await.unwrap_err();
    assert!(matches!(err, ProviderError::Cancelled { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn dropping_the_call_closes_its_connection() {
    let fake = Fake::start(|_, _| Reply::Hang).await;
    let p = std::sync::Arc::new(provider(
        "anthropic",
        Api::AnthropicMessages,
        &fake.url(""),
        3,
    ));
    let call = tokio::spawn({
        let p = std::sync::Arc::clone(&p);
        async move { p.chat(MODEL, &hello(), &CancellationToken::new()).await }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.seen().is_empty() {
        assert!(Instant::now() < deadline, "the request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.open_connections(), 1);
    call.abort();
    while fake.open_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "the dropped call left its connection open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn refused_connection_names_the_url_and_is_retried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let p = provider(
        "local",
        Api::AnthropicMessages,
        &format!("http://{addr}"),
        2,
    );
    let err = p
        .chat(MODEL, &hello(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "cannot connect to provider `local` at http://{addr}/v1/messages"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn https_to_a_plain_http_server_fails_the_handshake_cleanly() {
    // Uses the system CA store and rustls with ring; the fake speaks no TLS.
    let fake = Fake::start(|_, _| ok(answer("never"))).await;
    let p = provider(
        "anthropic",
        Api::AnthropicMessages,
        &format!("https://{}", fake.addr),
        1,
    );
    let err = p
        .chat(MODEL, &hello(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Connect { .. }), "{err:?}");
    assert!(fake.seen().is_empty());
    assert_no_key("TLS error", &format!("{err} {err:?}"));
}

#[test]
fn bad_base_urls_are_config_errors() {
    for (url, want) in [
        ("api.anthropic.com", "must start with https://"),
        ("ftp://x", "must start with https://"),
        ("http://exa mple", "not a valid URL"),
    ] {
        let spec = crate::client::spec("a", Api::AnthropicMessages, url, Duration::from_secs(1));
        let err = clawfort::provider::Provider::new(spec, &crate::client::options(1)).unwrap_err();
        assert!(err.to_string().contains(want), "{url}: {err}");
    }
    let mut spec = crate::client::spec(
        "a",
        Api::AnthropicMessages,
        "http://127.0.0.1:1",
        Duration::from_secs(1),
    );
    spec.api_key = Some(clawfort::secret::Secret::new(format!("{KEY}\n")));
    let err = clawfort::provider::Provider::new(spec, &crate::client::options(1)).unwrap_err();
    assert!(
        err.to_string().contains("cannot be sent in an HTTP header"),
        "{err}"
    );
    assert_no_key("config error", &format!("{err} {err:?}"));
}
