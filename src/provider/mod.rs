//! Model providers: Anthropic Messages and OpenAI-compatible chat completions.
//!
//! The input is plain structs ([`ProviderSpec`], [`ModelSpec`]) that the config layer fills
//! from `models.providers.<id>`; the agent loop talks the neutral [`chat`] model and never
//! sees a wire format. A [`Provider`] owns one HTTP connection pool and sends one
//! [`ChatRequest`] with a whole-request timeout, bounded retries ([`RetryPolicy`]) and
//! cancellation; a [`ModelChain`] walks `agents.defaults.model.primary` then its `fallbacks`.
//!
//! `baseUrl` is used the way OpenClaw uses it: for `anthropic-messages` it is the API root
//! (`https://api.anthropic.com`, or a proxy's `https://host/anthropic`) and the adapter
//! appends `/v1/messages`; for `openai-completions` it already holds the version
//! (`https://api.openai.com/v1`, `https://openrouter.ai/api/v1`, `http://127.0.0.1:8000/v1`
//! for vLLM, `http://127.0.0.1:8080/v1` for llama.cpp) and the adapter appends
//! `/chat/completions`. A trailing `/` is ignored.

mod anthropic;
mod chain;
pub mod chat;
mod error;
mod openai;
mod retry;
mod transport;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use chain::{ChainAnswer, ChainError, Failure, ModelChain};
pub use chat::{Block, ChatRequest, ChatResponse, Message, Role, StopReason, ToolSpec, Usage};
pub use error::ProviderError;
pub use retry::RetryPolicy;

use crate::secret::Secret;

/// The wire protocol of a provider (`models.providers.<id>.api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `anthropic-messages`: `POST {baseUrl}/v1/messages`.
    AnthropicMessages,
    /// `openai-completions`: `POST {baseUrl}/chat/completions` (OpenAI, OpenRouter, vLLM,
    /// llama.cpp, LM Studio, Ollama's `/v1`).
    OpenAiCompletions,
}

impl Api {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::AnthropicMessages => "anthropic-messages",
            Api::OpenAiCompletions => "openai-completions",
        }
    }
}

impl FromStr for Api {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "anthropic-messages" => Ok(Api::AnthropicMessages),
            "openai-completions" => Ok(Api::OpenAiCompletions),
            other => Err(format!(
                "unsupported api `{other}`: use `anthropic-messages` or `openai-completions`"
            )),
        }
    }
}

/// One configured provider (`models.providers.<id>`).
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub id: String,
    pub api: Api,
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// Where the key comes from, for the "wrong key" error: e.g. `ANTHROPIC_API_KEY` when the
    /// config says `apiKey: "${ANTHROPIC_API_KEY}"`. Never the key itself.
    pub api_key_source: Option<String>,
    /// Limit for one HTTP request, from connecting to the last byte of the answer.
    pub timeout: Duration,
    pub models: Vec<ModelSpec>,
}

/// One model of a provider (`models.providers.<id>.models[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub id: String,
    pub context_window: Option<u32>,
    /// Caps [`ChatRequest::max_tokens`] for this model.
    pub max_tokens: Option<u32>,
    /// Prices; `None` means calls are recorded unpriced.
    pub cost: Option<Cost>,
    /// The chat-completions field for the output limit; `None` picks it from the base URL.
    pub max_tokens_field: Option<MaxTokensField>,
}

/// Which field of a chat-completions request carries the output limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    /// The original name, the only one many compatible servers (and Mistral) accept.
    MaxTokens,
    /// OpenAI's current name; its reasoning models refuse `max_tokens`.
    MaxCompletionTokens,
}

impl MaxTokensField {
    /// The default for a provider without `compat.maxTokensField`: OpenAI's own API gets the
    /// current name, every other endpoint the name that all of them accept.
    pub fn default_for(base_url: &str) -> Self {
        let host = base_url
            .split_once("://")
            .map_or(base_url, |(_, rest)| rest)
            .split(['/', ':'])
            .next()
            .unwrap_or_default();
        if host.eq_ignore_ascii_case("api.openai.com") {
            Self::MaxCompletionTokens
        } else {
            Self::MaxTokens
        }
    }
}

/// USD per million tokens (`cost: { input, output, cacheRead, cacheWrite }`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cost {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

impl Cost {
    /// The price of `usage` in USD.
    pub fn price(&self, usage: &Usage) -> f64 {
        (usage.input_tokens as f64 * self.input
            + usage.output_tokens as f64 * self.output
            + usage.cache_read_tokens as f64 * self.cache_read
            + usage.cache_write_tokens as f64 * self.cache_write)
            / 1_000_000.0
    }
}

/// `"<provider>/<model>"`, split at the first `/` so model ids may contain more
/// (`openrouter/anthropic/claude-sonnet-4.5`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    pub provider: String,
    pub model: String,
}

impl FromStr for ModelRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((provider, model)) if !provider.is_empty() && !model.is_empty() => Ok(Self {
                provider: provider.to_owned(),
                model: model.to_owned(),
            }),
            _ => Err(format!(
                "model `{s}` is not of the form `<provider>/<model>` (e.g. `anthropic/claude-sonnet-4-5`)"
            )),
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// Limits that are the same for every provider.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub retry: RetryPolicy,
    /// An answer larger than this is refused (a chat completion is kilobytes; a broken or
    /// hostile endpoint must not make the gateway buffer a gigabyte).
    pub max_response_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            max_response_bytes: 8 * 1024 * 1024,
        }
    }
}

/// A configured provider, ready to send requests (one connection pool each).
#[derive(Debug)]
pub struct Provider {
    spec: ProviderSpec,
    transport: transport::Transport,
    retry: RetryPolicy,
}

impl Provider {
    /// Checks the base URL and builds the HTTPS client (system CA store, rustls with ring).
    pub fn new(spec: ProviderSpec, options: &ClientOptions) -> Result<Self, ProviderError> {
        let path = match spec.api {
            Api::AnthropicMessages => "/v1/messages",
            Api::OpenAiCompletions => "/chat/completions",
        };
        let transport = transport::Transport::new(&spec, path, options.max_response_bytes)?;
        Ok(Self {
            spec,
            transport,
            retry: options.retry.clone(),
        })
    }

    pub fn spec(&self) -> &ProviderSpec {
        &self.spec
    }

    /// The spec of `model`, if the provider lists it.
    pub fn model(&self, model: &str) -> Option<&ModelSpec> {
        self.spec.models.iter().find(|m| m.id == model)
    }

    /// Sends `request` to `model`, retrying transient failures; returns at once with
    /// [`ProviderError::Cancelled`] when `cancel` fires (dropping the future works too).
    pub async fn chat(
        &self,
        model: &str,
        request: &ChatRequest,
        cancel: &CancellationToken,
    ) -> Result<ChatResponse, ProviderError> {
        let max_tokens = match self.model(model).and_then(|m| m.max_tokens) {
            Some(cap) => request.max_tokens.min(cap),
            None => request.max_tokens,
        };
        let body = match self.spec.api {
            Api::AnthropicMessages => anthropic::encode(model, max_tokens, request),
            Api::OpenAiCompletions => {
                let field = self
                    .model(model)
                    .and_then(|m| m.max_tokens_field)
                    .unwrap_or_else(|| MaxTokensField::default_for(&self.spec.base_url));
                openai::encode(model, max_tokens, field, request)
            }
        };
        let body = bytes::Bytes::from(body.map_err(|e| ProviderError::BadRequest {
            provider: self.spec.id.clone(),
            detail: e.to_string(),
        })?);
        let call = retry::run(&self.retry, &self.spec.id, || async {
            let raw = self.transport.post(body.clone()).await?;
            let decoded = match self.spec.api {
                Api::AnthropicMessages => anthropic::decode(&raw.body),
                Api::OpenAiCompletions => openai::decode(&raw.body),
            };
            decoded.map_err(|detail| ProviderError::BadResponse {
                provider: self.spec.id.clone(),
                detail,
            })
        });
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(ProviderError::Cancelled { provider: self.spec.id.clone() }),
            result = call => result,
        }
    }
}

/// Every configured provider by id.
#[derive(Debug, Default)]
pub struct Providers {
    by_id: HashMap<String, Arc<Provider>>,
}

impl Providers {
    pub fn new(specs: Vec<ProviderSpec>, options: &ClientOptions) -> Result<Self, ProviderError> {
        let mut by_id = HashMap::new();
        for spec in specs {
            let id = spec.id.clone();
            by_id.insert(id, Arc::new(Provider::new(spec, options)?));
        }
        Ok(Self { by_id })
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Provider>> {
        self.by_id.get(id)
    }

    /// The spec of a model, if its provider lists it.
    pub fn model(&self, model: &ModelRef) -> Option<&ModelSpec> {
        self.get(&model.provider)?.model(&model.model)
    }

    fn ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.by_id.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_refs_split_at_the_first_slash() {
        let r: ModelRef = "openrouter/anthropic/claude-sonnet-4.5".parse().unwrap();
        assert_eq!(r.provider, "openrouter");
        assert_eq!(r.model, "anthropic/claude-sonnet-4.5");
        assert_eq!(r.to_string(), "openrouter/anthropic/claude-sonnet-4.5");
        for bad in ["claude", "/claude", "anthropic/", ""] {
            let err = bad.parse::<ModelRef>().unwrap_err();
            assert!(err.contains("<provider>/<model>"), "{err}");
        }
    }

    #[test]
    fn cost_prices_per_million_tokens_including_cache() {
        let cost = Cost {
            input: 3.0,
            output: 15.0,
            cache_read: 0.3,
            cache_write: 3.75,
        };
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cache_read_tokens: 2_000_000,
            cache_write_tokens: 400_000,
        };
        let usd = cost.price(&usage);
        assert!((usd - (3.0 + 1.5 + 0.6 + 1.5)).abs() < 1e-9, "{usd}");
    }

    #[test]
    fn api_names_are_openclaws() {
        assert_eq!(
            "anthropic-messages".parse::<Api>(),
            Ok(Api::AnthropicMessages)
        );
        assert_eq!(
            "openai-completions".parse::<Api>(),
            Ok(Api::OpenAiCompletions)
        );
        assert!("openai-responses"
            .parse::<Api>()
            .unwrap_err()
            .contains("openai-completions"));
    }
}
