//! What can go wrong talking to a provider, worded for the person who has to fix it.
//!
//! No variant ever holds the API key: the transport never formats headers, and text taken
//! from a provider's error body has the key replaced before it is stored.

use std::time::Duration;

/// One failed provider call (after retries, when the failure was transient).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// 401/403: never retried; one request, one error.
    #[error("provider `{provider}` rejected the API key (HTTP {status}): {hint}")]
    Auth {
        provider: String,
        status: u16,
        hint: String,
    },
    /// Any other non-2xx answer; `message` is the provider's own error text, shortened.
    #[error("provider `{provider}` answered HTTP {status}: {message}")]
    Http {
        provider: String,
        status: u16,
        message: String,
        /// What `retry-after`/`retry-after-ms` asked for, if anything.
        retry_after: Option<Duration>,
    },
    #[error("provider `{provider}` did not answer within {}s (its `timeout`)", .timeout.as_secs_f64())]
    Timeout { provider: String, timeout: Duration },
    #[error("cannot connect to provider `{provider}` at {url}: {detail}")]
    Connect {
        provider: String,
        url: String,
        detail: String,
    },
    /// The connection broke after the request was sent (closed mid-answer, reset).
    #[error(
        "provider `{provider}` closed the connection before the answer was complete: {detail}"
    )]
    Interrupted { provider: String, detail: String },
    /// A 2xx answer that is not the expected JSON, or larger than the limit.
    #[error("provider `{provider}` sent an unusable answer: {detail}")]
    BadResponse { provider: String, detail: String },
    /// The request could not be built (e.g. a tool schema that does not serialize).
    #[error("cannot build the request for provider `{provider}`: {detail}")]
    BadRequest { provider: String, detail: String },
    /// The provider's configuration cannot work (bad `baseUrl`, key not usable in a header).
    #[error("provider `{provider}` is misconfigured: {detail}")]
    Config { provider: String, detail: String },
    #[error("the request to provider `{provider}` was cancelled")]
    Cancelled { provider: String },
}

impl ProviderError {
    /// Worth another attempt on the same model: rate limits, overload, server errors,
    /// timeouts and broken connections.
    pub fn is_transient(&self) -> bool {
        match self {
            ProviderError::Http { status, .. } => {
                matches!(*status, 408 | 409 | 429 | 529) || *status >= 500
            }
            ProviderError::Timeout { .. }
            | ProviderError::Connect { .. }
            | ProviderError::Interrupted { .. } => true,
            _ => false,
        }
    }

    /// The server's requested wait, for the retry loop.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
