//! One provider's HTTP exchange: a POST of a JSON body through the shared
//! [`HttpClient`](crate::http_client::HttpClient), turning every failure into a
//! [`ProviderError`].

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Uri};

use crate::http_client::{HttpClient, SendError};

use super::{Api, ProviderError, ProviderSpec};

/// The longest provider error text kept in an error message.
const MAX_ERROR_TEXT: usize = 300;

pub(super) struct Transport {
    provider: String,
    url: Uri,
    client: HttpClient,
    headers: HeaderMap,
    timeout: Duration,
    max_response_bytes: usize,
    auth_hint: String,
    /// The key, only to scrub it out of error text a provider might echo back.
    key: Option<crate::secret::Secret>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("provider", &self.provider)
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A successful (2xx) answer's body.
pub(super) struct Raw {
    pub body: Bytes,
}

impl Transport {
    pub fn new(
        spec: &ProviderSpec,
        path: &str,
        max_response_bytes: usize,
    ) -> Result<Self, ProviderError> {
        let config_error = |detail: String| ProviderError::Config {
            provider: spec.id.clone(),
            detail,
        };
        let base = spec.base_url.trim_end_matches('/');
        let https = if base.starts_with("https://") {
            true
        } else if base.starts_with("http://") {
            false
        } else {
            return Err(config_error(format!(
                "baseUrl `{}` must start with https:// (or http:// for a local server)",
                spec.base_url
            )));
        };
        let url: Uri = format!("{base}{path}").parse().map_err(|e| {
            config_error(format!(
                "baseUrl `{}` is not a valid URL: {e}",
                spec.base_url
            ))
        })?;
        if url.host().is_none_or(str::is_empty) {
            return Err(config_error(format!(
                "baseUrl `{}` has no host",
                spec.base_url
            )));
        }

        // Plain http:// (a local Ollama or llama.cpp) never uses TLS, so needs no roots.
        let client = HttpClient::new(https, spec.timeout)
            .map_err(|e| config_error(format!("baseUrl `{}`: {e}", spec.base_url)))?;

        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            hyper::header::USER_AGENT,
            HeaderValue::from_static(concat!("clawfort/", env!("CARGO_PKG_VERSION"))),
        );
        let key_error = || {
            config_error(
                "the API key contains characters that cannot be sent in an HTTP header \
                 (a line break or a quote pasted with it?)"
                    .to_owned(),
            )
        };
        match spec.api {
            Api::AnthropicMessages => {
                headers.insert(
                    HeaderName::from_static("anthropic-version"),
                    HeaderValue::from_static("2023-06-01"),
                );
                if let Some(key) = &spec.api_key {
                    let mut value = HeaderValue::from_str(key.expose()).map_err(|_| key_error())?;
                    value.set_sensitive(true);
                    headers.insert(HeaderName::from_static("x-api-key"), value);
                }
            }
            Api::OpenAiCompletions => {
                if let Some(key) = &spec.api_key {
                    let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                        .map_err(|_| key_error())?;
                    value.set_sensitive(true);
                    headers.insert(AUTHORIZATION, value);
                }
            }
        }

        let auth_hint = match (&spec.api_key, &spec.api_key_source) {
            (None, _) => format!(
                "no API key is configured; set models.providers.{}.apiKey",
                spec.id
            ),
            (Some(_), Some(source)) => format!("check {source} in ~/.openclaw/.env"),
            (Some(_), None) => format!("check models.providers.{}.apiKey", spec.id),
        };

        Ok(Self {
            provider: spec.id.clone(),
            url,
            client,
            headers,
            timeout: spec.timeout,
            max_response_bytes,
            auth_hint,
            key: spec.api_key.clone(),
        })
    }

    /// One POST attempt; a non-2xx status is an error carrying the provider's message.
    pub async fn post(&self, body: Bytes) -> Result<Raw, ProviderError> {
        let mut request = Request::post(self.url.clone())
            .body(Full::new(body))
            .expect("a parsed URI and a byte body always make a request");
        *request.headers_mut() = self.headers.clone();

        let response = self
            .client
            .send(request, self.timeout, self.max_response_bytes)
            .await
            .map_err(|e| self.send_error(e))?;
        let status = response.status.as_u16();
        if response.status.is_success() {
            return Ok(Raw {
                body: response.body,
            });
        }
        if status == 401 || status == 403 {
            return Err(ProviderError::Auth {
                provider: self.provider.clone(),
                status,
                hint: self.auth_hint.clone(),
            });
        }
        Err(ProviderError::Http {
            provider: self.provider.clone(),
            status,
            message: self.error_text(&response.body),
            retry_after: retry_after(&response.headers, SystemTime::now()),
        })
    }

    fn send_error(&self, e: SendError) -> ProviderError {
        let provider = self.provider.clone();
        match e {
            SendError::Connect(detail) => ProviderError::Connect {
                provider,
                url: self.url.to_string(),
                detail,
            },
            SendError::Interrupted(detail) => ProviderError::Interrupted { provider, detail },
            // The egress proxy's allow list: fixed by the owner, not by a retry.
            SendError::Refused(detail) => ProviderError::Config { provider, detail },
            SendError::Timeout(timeout) => ProviderError::Timeout { provider, timeout },
            SendError::TooLarge(_) => ProviderError::BadResponse {
                provider,
                detail: e.to_string(),
            },
        }
    }

    /// The provider's error text: `error.type: error.message` from either API's error JSON,
    /// else the start of the body; printable characters only, and never the key.
    fn error_text(&self, body: &[u8]) -> String {
        let from_json = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                let err = v.get("error")?;
                let message = err.get("message").and_then(|m| m.as_str()).unwrap_or("");
                match err.get("type").and_then(|t| t.as_str()) {
                    Some(kind) if !message.is_empty() => Some(format!("{kind}: {message}")),
                    Some(kind) => Some(kind.to_owned()),
                    None => Some(message.to_owned()),
                }
            });
        let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        let mut text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_ERROR_TEXT)
            .collect();
        if let Some(key) = &self.key {
            if !key.expose().is_empty() {
                text = text.replace(key.expose(), crate::secret::REDACTED);
            }
        }
        if text.trim().is_empty() {
            "(no error text)".to_owned()
        } else {
            text
        }
    }
}

/// `retry-after-ms` (Anthropic's and OpenAI's SDK hint), else `retry-after` as seconds or
/// an HTTP-date.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms.min(1e12) / 1000.0));
        }
    }
    let value = text("retry-after")?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_milliseconds_or_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:30 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:00:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(1500)));
    }
}
