//! Model fallback across providers.

use std::time::Duration;

use clawfort::provider::{
    Api, ChainError, ChatRequest, Message, ModelChain, ModelSpec, ProviderError, Providers,
};
use clawfort_fakes::model::{assert_no_key, ok, Fake, Reply};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::client::{options, spec};

fn hello() -> ChatRequest {
    ChatRequest {
        system: String::new(),
        messages: vec![Message::user_text("hi")],
        tools: Default::default(),
        max_tokens: 100,
    }
}

fn openai_answer() -> serde_json::Value {
    json!({"model": "llama", "choices": [{"message": {"role": "assistant", "content": "from fallback"}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
}

#[tokio::test]
async fn fallback_answers_when_the_primary_keeps_failing() {
    let primary = Fake::start(|_, _| {
        Reply::Json(
            500,
            vec![],
            r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#
                .into(),
        )
    })
    .await;
    let fallback = Fake::start(|_, _| ok(openai_answer())).await;
    let mut local = spec(
        "local",
        Api::OpenAiCompletions,
        &fallback.url("/v1"),
        Duration::from_secs(2),
    );
    local.models.push(ModelSpec {
        id: "llama".into(),
        context_window: Some(8192),
        max_tokens: Some(50),
        cost: None,
        max_tokens_field: None,
    });
    let providers = Providers::new(
        vec![
            spec(
                "anthropic",
                Api::AnthropicMessages,
                &primary.url(""),
                Duration::from_secs(2),
            ),
            local,
        ],
        &options(3),
    )
    .unwrap();
    let chain = ModelChain::new(
        &providers,
        "anthropic/claude-opus-4-1".parse().unwrap(),
        vec!["local/llama".parse().unwrap()],
    )
    .unwrap();

    let answer = chain
        .chat(&hello(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(answer.response.text(), "from fallback");
    assert_eq!(answer.model.to_string(), "local/llama");
    assert_eq!(answer.spec.as_ref().map(|s| s.id.as_str()), Some("llama"));
    assert_eq!(
        primary.seen().len(),
        3,
        "the primary gets its retries first"
    );
    assert_eq!(answer.failures.len(), 1);
    assert_eq!(
        answer.failures[0].to_string(),
        "anthropic/claude-opus-4-1: provider `anthropic` answered HTTP 500: api_error: Internal server error"
    );
    // The model's max_tokens caps the request's.
    assert_eq!(fallback.seen()[0].json()["max_tokens"], 50);
}

#[tokio::test]
async fn every_model_failing_reports_each_error() {
    let bad_key = Fake::start(|_, _| Reply::Json(401, vec![], "{}".into())).await;
    let garbage = Fake::start(|_, _| Reply::Json(200, vec![], "not json".into())).await;
    let providers = Providers::new(
        vec![
            spec(
                "anthropic",
                Api::AnthropicMessages,
                &bad_key.url(""),
                Duration::from_secs(2),
            ),
            spec(
                "openai",
                Api::OpenAiCompletions,
                &garbage.url("/v1"),
                Duration::from_secs(2),
            ),
        ],
        &options(3),
    )
    .unwrap();
    let chain = ModelChain::new(
        &providers,
        "anthropic/a".parse().unwrap(),
        vec!["openai/b".parse().unwrap()],
    )
    .unwrap();
    let err = chain
        .chat(&hello(), &CancellationToken::new())
        .await
        .unwrap_err();
    let ChainError::AllFailed(failures) = &err else {
        panic!("{err:?}")
    };
    assert!(matches!(
        failures[0].error,
        ProviderError::Auth { status: 401, .. }
    ));
    assert!(matches!(
        failures[1].error,
        ProviderError::BadResponse { .. }
    ));
    assert_eq!(bad_key.seen().len(), 1);
    let text = err.to_string();
    assert!(
        text.starts_with(
            "every model failed; anthropic/a: provider `anthropic` rejected the API key"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "; openai/b: provider `openai` sent an unusable answer: not a chat completion"
        ),
        "{text}"
    );
    assert_no_key("chain error", &format!("{text} {err:?}"));
}

#[tokio::test]
async fn cancellation_does_not_fall_back() {
    let hang = Fake::start(|_, _| Reply::Hang).await;
    let other = Fake::start(|_, _| ok(openai_answer())).await;
    let providers = Providers::new(
        vec![
            spec(
                "a",
                Api::AnthropicMessages,
                &hang.url(""),
                Duration::from_secs(10),
            ),
            spec(
                "b",
                Api::OpenAiCompletions,
                &other.url("/v1"),
                Duration::from_secs(2),
            ),
        ],
        &options(1),
    )
    .unwrap();
    let chain = ModelChain::new(
        &providers,
        "a/x".parse().unwrap(),
        vec!["b/y".parse().unwrap()],
    )
    .unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    assert!(matches!(
        chain.chat(&hello(), &cancel).await,
        Err(ChainError::Cancelled)
    ));
    assert!(other.seen().is_empty());
}

#[test]
fn unknown_provider_in_a_chain_is_named() {
    let providers = Providers::new(vec![], &options(1)).unwrap();
    let err = ModelChain::new(&providers, "anthropci/claude".parse().unwrap(), vec![]).unwrap_err();
    assert!(
        err.contains("provider `anthropci`, which models.providers does not define"),
        "{err}"
    );
}
