//! Providers configured for the fake model server (`clawfort_fakes::model`): the test key
//! and quick retries.

use std::time::Duration;

use clawfort::provider::{Api, ClientOptions, Provider, ProviderSpec, RetryPolicy};
use clawfort::secret::Secret;
use clawfort_fakes::model::KEY;

/// A provider of `api` at `base_url` with the test key and quick retries.
pub fn provider(id: &str, api: Api, base_url: &str, attempts: usize) -> Provider {
    provider_with(id, api, base_url, attempts, Duration::from_secs(5))
}

pub fn provider_with(
    id: &str,
    api: Api,
    base_url: &str,
    attempts: usize,
    timeout: Duration,
) -> Provider {
    Provider::new(spec(id, api, base_url, timeout), &options(attempts)).unwrap()
}

pub fn spec(id: &str, api: Api, base_url: &str, timeout: Duration) -> ProviderSpec {
    ProviderSpec {
        id: id.to_owned(),
        api,
        base_url: base_url.to_owned(),
        api_key: Some(Secret::new(KEY)),
        api_key_source: Some(format!("{}_API_KEY", id.to_uppercase())),
        timeout,
        models: vec![],
    }
}

pub fn options(attempts: usize) -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_attempts: attempts,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(5),
            max_total: Duration::from_secs(20),
        },
        ..ClientOptions::default()
    }
}
