//! Bounded retries with exponential backoff and jitter (the `backon` crate), honouring the
//! provider's `retry-after`.
//!
//! Bounds: `max_attempts` requests in all, and no sleep that would end later than
//! `max_total` after the first attempt started. A `retry-after` is a floor for the next wait;
//! one longer than `max_retry_after` ends the retries at once (as OpenClaw does), so the
//! model chain moves on to a fallback instead of holding the turn for minutes.

use std::future::Future;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};

use super::ProviderError;

/// How one provider call retries transient failures ([`ProviderError::is_transient`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Requests in all, the first included (1 = no retry).
    pub max_attempts: usize,
    /// First backoff; it doubles per retry, with jitter.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// The longest `retry-after` that is waited out.
    pub max_retry_after: Duration,
    /// No retry starts later than this after the first attempt.
    pub max_total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            max_total: Duration::from_secs(120),
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the policy is spent.
pub(crate) async fn run<T, Fut, F>(
    policy: &RetryPolicy,
    provider: &str,
    attempt: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let backoff = ExponentialBuilder::new()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(policy.max_attempts.saturating_sub(1));
    let started = Instant::now();
    attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(ProviderError::is_transient)
        .adjust(|err, next| {
            let mut wait = next?;
            if let Some(asked) = err.retry_after() {
                if asked > policy.max_retry_after {
                    tracing::warn!(
                        provider,
                        "provider asks to wait {}s, longer than the {}s limit; giving up on this model",
                        asked.as_secs(),
                        policy.max_retry_after.as_secs()
                    );
                    return None;
                }
                wait = wait.max(asked);
            }
            (started.elapsed() + wait <= policy.max_total).then_some(wait)
        })
        .notify(|err, wait| {
            tracing::warn!(provider, error = %err, "retrying in {:.1}s", wait.as_secs_f64());
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn quick() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::default()
        }
    }

    /// How many attempts `run` makes when every attempt fails with `error`.
    async fn attempts(error: impl Fn() -> ProviderError) -> usize {
        let count = AtomicUsize::new(0);
        let result: Result<(), _> = run(&quick(), "p", || {
            count.fetch_add(1, Ordering::SeqCst);
            let e = error();
            async move { Err(e) }
        })
        .await;
        assert!(result.is_err());
        count.into_inner()
    }

    #[tokio::test]
    async fn a_rejected_key_is_never_retried_and_a_server_error_is() {
        for status in [401, 403] {
            let auth = || ProviderError::Auth {
                provider: "p".into(),
                status,
                hint: String::new(),
            };
            assert_eq!(attempts(auth).await, 1, "HTTP {status}");
        }
        let overloaded = || ProviderError::Http {
            provider: "p".into(),
            status: 529,
            message: String::new(),
            retry_after: None,
        };
        assert_eq!(attempts(overloaded).await, 4);
    }
}
