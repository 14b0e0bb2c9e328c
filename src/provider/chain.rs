//! Model fallback: `agents.defaults.model.primary`, then each of `fallbacks` in order.
//!
//! A model is abandoned when its call fails for good: retries spent on 429/529/5xx, a
//! timeout, a refused key, a 4xx, an unusable answer. Only cancellation stops the walk, since
//! the owner asked to stop. The answer says which model replied and why the earlier ones did
//! not, so `/status` can show it; fallback is per call, never a new default (as in OpenClaw).

use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{ChatRequest, ChatResponse, ModelRef, ModelSpec, Provider, ProviderError, Providers};

/// The models to try, in order.
#[derive(Debug, Clone)]
pub struct ModelChain {
    entries: Vec<(ModelRef, Arc<Provider>)>,
}

/// A model that failed, and why.
#[derive(Debug)]
pub struct Failure {
    pub model: ModelRef,
    pub error: ProviderError,
}

/// A successful call through the chain.
#[derive(Debug)]
pub struct ChainAnswer {
    pub response: ChatResponse,
    /// The model that answered (the primary unless it failed).
    pub model: ModelRef,
    /// Its spec (for pricing), if its provider lists it.
    pub spec: Option<ModelSpec>,
    /// The models tried before it, in order.
    pub failures: Vec<Failure>,
}

/// Every model failed, or the call was cancelled.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("{}", summary(.0))]
    AllFailed(Vec<Failure>),
    #[error("cancelled")]
    Cancelled,
}

fn summary(failures: &[Failure]) -> String {
    let mut text = String::from("every model failed");
    for f in failures {
        text.push_str(&format!("; {}: {}", f.model, f.error));
    }
    text
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.model, self.error)
    }
}

impl ModelChain {
    /// Resolves each model's provider; an unknown provider is an error naming the known ones.
    pub fn new(
        providers: &Providers,
        primary: ModelRef,
        fallbacks: Vec<ModelRef>,
    ) -> Result<Self, String> {
        let mut entries = Vec::with_capacity(1 + fallbacks.len());
        for model in std::iter::once(primary).chain(fallbacks) {
            let Some(provider) = providers.get(&model.provider) else {
                return Err(format!(
                    "model `{model}` names provider `{}`, which models.providers does not define \
                     (defined: {})",
                    model.provider,
                    providers.ids().join(", ")
                ));
            };
            entries.push((model, Arc::clone(provider)));
        }
        Ok(Self { entries })
    }

    pub fn models(&self) -> impl Iterator<Item = &ModelRef> {
        self.entries.iter().map(|(m, _)| m)
    }

    /// Tries each model in turn until one answers.
    pub async fn chat(
        &self,
        request: &ChatRequest,
        cancel: &CancellationToken,
    ) -> Result<ChainAnswer, ChainError> {
        let mut failures = Vec::new();
        let last = self.entries.len().saturating_sub(1);
        for (index, (model, provider)) in self.entries.iter().enumerate() {
            match provider.chat(&model.model, request, cancel).await {
                Ok(response) => {
                    return Ok(ChainAnswer {
                        response,
                        model: model.clone(),
                        spec: provider.model(&model.model).cloned(),
                        failures,
                    })
                }
                Err(ProviderError::Cancelled { .. }) => return Err(ChainError::Cancelled),
                Err(error) => {
                    // The last failure is the caller's to report, in `AllFailed`.
                    if index < last {
                        tracing::warn!(model = %model, %error, "model failed; trying the next one");
                    }
                    failures.push(Failure {
                        model: model.clone(),
                        error,
                    });
                }
            }
        }
        Err(ChainError::AllFailed(failures))
    }
}
