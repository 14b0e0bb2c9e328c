//! One cheap call per secret, through the gateway's own clients, before anything is written:
//! - the bot token: Telegram's `getMe` (free, and it names the bot);
//! - the API key: the provider's model list (`GET {baseUrl}/v1/models` for Anthropic with
//!   `x-api-key` and `anthropic-version`, `GET {baseUrl}/models` with a Bearer key for
//!   OpenAI-compatible servers), which costs nothing; a server without that list (404) gets
//!   one request for a single output token instead.
//!
//! A refused secret is named ("the API key was refused by OpenAI"), an unreachable server
//! by its host and port. No message ever holds a secret: the clients' errors hold no URL
//! (the bot token is in Telegram's) and provider text is scrubbed of the key.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, USER_AGENT};
use hyper::Request;
use tokio_util::sync::CancellationToken;

use super::plan::{host_port, Plan};
use crate::http_client::{HttpClient, SendError};
use crate::provider::{
    Api, ChatRequest, ClientOptions, Message, Provider, ProviderError, ProviderSpec, RetryPolicy,
};
use crate::secret::{Secret, REDACTED};
use crate::telegram::{ApiError, Client};

/// How long one check may take in all.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// OpenRouter's model list is a few megabytes of JSON.
const MAX_LIST_BYTES: usize = 16 << 20;

/// A check that failed: exit 1, nothing written.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CheckFailed {
    pub message: String,
    /// Which secret the service refused, when that is the failure (on a terminal, setup
    /// then asks for it again).
    pub refused: Option<Refused>,
}

/// A secret a service refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    BotToken,
    ApiKey,
}

fn failed(message: impl Into<String>) -> CheckFailed {
    CheckFailed {
        message: message.into(),
        refused: None,
    }
}

/// `getMe` with the bot token; returns the bot's `@username`.
pub async fn telegram(api_root: &str, token: &Secret) -> Result<String, CheckFailed> {
    let client = Client::new(api_root, token).map_err(failed)?;
    let host = host_port(api_root).unwrap_or_else(|| api_root.to_owned());
    let me = tokio::time::timeout(CHECK_TIMEOUT, client.get_me())
        .await
        .map_err(|_| {
            failed(format!(
                "Telegram's Bot API at {host} did not answer getMe within {} s",
                CHECK_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| match e {
            ApiError::Unauthorized { .. } => CheckFailed {
                refused: Some(Refused::BotToken),
                ..failed(
                    "the bot token was refused by Telegram (401 Unauthorized): copy it again \
                     from @BotFather (/token), or make a new one there",
                )
            },
            ApiError::Network { message, .. } => failed(format!(
                "cannot reach Telegram's Bot API at {host} to check the bot token: {message}"
            )),
            other => failed(format!("checking the bot token failed: {other}")),
        })?;
    Ok(match me.username {
        Some(name) => format!("@{name}"),
        None => format!("bot {}", me.id),
    })
}

/// What the provider check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderCheck {
    /// The model list answered; `listed` says whether it names the model (`None`: the list
    /// did not parse).
    ModelList { listed: Option<bool> },
    /// No model list (404): a one-token request answered.
    OneToken,
}

/// Checks the API key (and that the server speaks the api) with one cheap call.
pub async fn provider(plan: &Plan) -> Result<ProviderCheck, CheckFailed> {
    let label = plan.provider_label();
    let host = host_port(&plan.base_url).unwrap_or_else(|| plan.base_url.clone());
    let (path, url) = match plan.api {
        // The list is paginated (20 by default); 1000 is the most one page holds.
        Api::AnthropicMessages => (
            "/v1/models",
            format!("{}/v1/models?limit=1000", plan.base_url),
        ),
        Api::OpenAiCompletions => ("/models", format!("{}/models", plan.base_url)),
    };
    let client = HttpClient::new(plan.base_url.starts_with("https://"), CONNECT_TIMEOUT)
        .map_err(|e| failed(format!("cannot check {label}: {e}")))?;
    let mut request = Request::get(url.as_str())
        .body(Full::new(Bytes::new()))
        .map_err(|_| failed(format!("--base-url {}: not a valid URL", plan.base_url)))?;
    let headers = request.headers_mut();
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("clawfort/", env!("CARGO_PKG_VERSION"))),
    );
    if let Some(key) = &plan.api_key {
        let (name, value) = match plan.api {
            Api::AnthropicMessages => ("x-api-key", key.expose().to_owned()),
            Api::OpenAiCompletions => ("authorization", format!("Bearer {}", key.expose())),
        };
        // The plan allows only visible ASCII in a key, which is always a valid header.
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| failed("the API key cannot be sent in an HTTP header"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    if plan.api == Api::AnthropicMessages {
        headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    }
    let response = client
        .send(request, CHECK_TIMEOUT, MAX_LIST_BYTES)
        .await
        .map_err(|e| match e {
            SendError::Connect(detail) => failed(format!(
                "cannot connect to {host} ({label}) to check the API key: {detail}"
            )),
            SendError::Timeout(_) => failed(format!(
                "{label} at {host} did not answer GET {path} within {} s",
                CHECK_TIMEOUT.as_secs()
            )),
            other => failed(format!(
                "checking the API key with {label} at {host} failed: {other}"
            )),
        })?;
    let status = response.status.as_u16();
    match status {
        200..=299 => Ok(ProviderCheck::ModelList {
            listed: lists_model(&response.body, plan),
        }),
        401 | 403 => Err(refused(plan, &label, status)),
        404 => one_token(plan, &label, &host).await,
        _ => Err(failed(format!(
            "{label} at {host} answered HTTP {status} to GET {path}: {} (pass --skip-checks \
             to write the settings anyway)",
            error_text(&response.body, plan.api_key.as_ref())
        ))),
    }
}

fn refused(plan: &Plan, label: &str, status: u16) -> CheckFailed {
    let what = if plan.api_key.is_some() {
        "the API key was refused"
    } else {
        "no API key was given, and one is needed"
    };
    CheckFailed {
        refused: Some(Refused::ApiKey),
        ..failed(format!(
            "{what} by {label} (HTTP {status}): check the key in the provider's console and \
             give it again (it is stored as {} in .env)",
            plan.key_var()
        ))
    }
}

/// Whether the list (`{"data":[{"id":...}]}`, both APIs) names the model; Anthropic lists
/// dated ids (`claude-sonnet-4-5-20250929`) for which the undated alias also counts.
fn lists_model(body: &[u8], plan: &Plan) -> Option<bool> {
    let list: serde_json::Value = serde_json::from_slice(body).ok()?;
    let ids: Vec<&str> = list
        .get("data")?
        .as_array()?
        .iter()
        .filter_map(|m| m.get("id")?.as_str())
        .collect();
    let alias = format!("{}-", plan.model);
    Some(ids.iter().any(|id| {
        *id == plan.model || (plan.api == Api::AnthropicMessages && id.starts_with(&alias))
    }))
}

/// A request for one output token: for servers without a model list.
async fn one_token(plan: &Plan, label: &str, host: &str) -> Result<ProviderCheck, CheckFailed> {
    let spec = ProviderSpec {
        id: plan.provider_id.clone(),
        api: plan.api,
        base_url: plan.base_url.clone(),
        api_key: plan.api_key.clone(),
        api_key_source: Some(plan.key_var()),
        timeout: CHECK_TIMEOUT,
        models: Vec::new(),
    };
    let options = ClientOptions {
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        ..ClientOptions::default()
    };
    let provider = Provider::new(spec, &options).map_err(|e| failed(e.to_string()))?;
    let request = ChatRequest {
        system: String::new(),
        messages: vec![Message::user_text("Say OK.")],
        tools: Default::default(),
        max_tokens: 1,
    };
    match provider
        .chat(&plan.model, &request, &CancellationToken::new())
        .await
    {
        Ok(_) => Ok(ProviderCheck::OneToken),
        Err(ProviderError::Auth { status, .. }) => Err(refused(plan, label, status)),
        Err(ProviderError::Connect { detail, .. }) => Err(failed(format!(
            "cannot connect to {host} ({label}) to check the API key: {detail}"
        ))),
        Err(ProviderError::Http {
            status: 404,
            message,
            ..
        }) => Err(failed(format!(
            "{label} at {host} has no model `{}` or no {} endpoint under --base-url {} \
             (HTTP 404: {message})",
            plan.model,
            match plan.api {
                Api::AnthropicMessages => "/v1/messages",
                Api::OpenAiCompletions => "/chat/completions",
            },
            plan.base_url
        ))),
        Err(e) => Err(failed(format!("checking the API key failed: {e}"))),
    }
}

/// The start of a provider's error body, printable, without the key.
fn error_text(body: &[u8], key: Option<&Secret>) -> String {
    let mut text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if let Some(key) = key {
        text = text.replace(key.expose(), REDACTED);
    }
    match text.trim() {
        "" => "(no error text)".to_owned(),
        t => t.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::plan::DEFAULT_API_ROOT;

    fn plan(api: Api, model: &str) -> Plan {
        Plan {
            api,
            provider_id: "p".into(),
            base_url: "http://127.0.0.1:9".into(),
            model: model.into(),
            api_key: Some(Secret::new("sk-secret-value")),
            bot_token: Secret::new("1:x"),
            api_root: DEFAULT_API_ROOT.into(),
            owners: Vec::new(),
            daily_usd: None,
            monthly_usd: None,
        }
    }

    #[test]
    fn the_model_list_is_searched_with_anthropic_aliases() {
        let list = br#"{"data":[{"id":"claude-sonnet-4-5-20250929"},{"id":"gpt-4.1"}]}"#;
        let anthropic = plan(Api::AnthropicMessages, "claude-sonnet-4-5");
        assert_eq!(lists_model(list, &anthropic), Some(true));
        let openai = plan(Api::OpenAiCompletions, "claude-sonnet-4-5");
        assert_eq!(lists_model(list, &openai), Some(false));
        assert_eq!(
            lists_model(list, &plan(Api::OpenAiCompletions, "gpt-4.1")),
            Some(true)
        );
        assert_eq!(lists_model(b"<html>", &openai), None);
    }

    #[test]
    fn error_text_never_holds_the_key() {
        let key = Secret::new("sk-secret-value");
        let text = error_text(b"bad key sk-secret-value\n", Some(&key));
        assert_eq!(text, "bad key [redacted]");
    }
}
