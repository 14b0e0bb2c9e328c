//! A small Telegram Bot API client: the four methods the channel needs.
//!
//! Every method is `POST <apiRoot>/bot<token>/<method>` with a JSON body; Telegram answers
//! `{"ok":true,"result":...}` or `{"ok":false,"error_code":N,"description":"...",
//! "parameters":{"retry_after":N}}`, with the HTTP status mirroring `error_code`.
//!
//! The token is part of every URL, so no error this module returns carries a URL (the shared
//! [`HttpClient`]'s errors never do) and text coming back from the server or the network
//! stack is scrubbed of the token before it is kept.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Request, Uri};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http_client::{HttpClient, SendError};
use crate::secret::Secret;

/// How long a request other than `getUpdates` may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace on top of the long-poll timeout before `getUpdates` counts as hung.
const POLL_GRACE: Duration = Duration::from_secs(15);
/// How long connecting to the Bot API may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read: a `getUpdates` batch of 100 long messages is far below this.
const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// A failed Bot API call. No variant holds the token or a URL.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "Telegram rejected the bot token (401 Unauthorized) on {method}: check \
         channels.telegram.botToken (or tokenFile), or get a new token from @BotFather"
    )]
    Unauthorized { method: &'static str },
    #[error(
        "Telegram refused {method} with 409 Conflict ({description}): another program is \
         polling with this bot token, or a webhook is set (remove it with deleteWebhook); \
         only one poller per bot can run"
    )]
    Conflict {
        method: &'static str,
        description: String,
    },
    #[error("Telegram is rate limiting {method} (429): retry after {retry_after} s")]
    RetryAfter {
        method: &'static str,
        retry_after: u64,
    },
    #[error("Telegram answered {method} with error {code}: {description}")]
    Api {
        method: &'static str,
        code: u16,
        description: String,
    },
    #[error("cannot reach the Telegram Bot API for {method}: {message}")]
    Network {
        method: &'static str,
        message: String,
    },
    #[error("the Telegram Bot API answered {method} with something unexpected: {message}")]
    Decode {
        method: &'static str,
        message: String,
    },
}

impl ApiError {
    /// Whether retrying the same call later can succeed (network trouble, Telegram's 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Network { .. } | ApiError::Decode { .. } => true,
            ApiError::Api { code, .. } => *code >= 500,
            _ => false,
        }
    }
}

/// A Telegram user (or bot).
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub username: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    pub id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// A special part of a message text; `offset` and `length` count UTF-16 code units.
#[derive(Debug, Clone, Deserialize)]
pub struct MessageEntity {
    #[serde(rename = "type")]
    pub kind: String,
    pub offset: usize,
    pub length: usize,
    #[serde(default)]
    pub user: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub message_id: i64,
    #[serde(default)]
    pub from: Option<User>,
    pub chat: Chat,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub entities: Vec<MessageEntity>,
    #[serde(default)]
    pub reply_to_message: Option<Box<Message>>,
}

/// One update as `getUpdates` returns it. Only `message` is read; an update of another
/// kind, or one whose message does not decode, still has its id (so the offset moves past
/// it) and is otherwise ignored.
#[derive(Debug, Clone)]
pub struct Update {
    pub update_id: i64,
    pub message: Option<Message>,
}

impl Update {
    fn from_value(value: serde_json::Value) -> Option<Self> {
        let update_id = value.get("update_id")?.as_i64()?;
        let message = value
            .get("message")
            .and_then(|m| Message::deserialize(m).ok());
        Some(Self { update_id, message })
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    ok: bool,
    result: Option<T>,
    error_code: Option<u16>,
    description: Option<String>,
    parameters: Option<ResponseParameters>,
}

#[derive(Deserialize)]
struct ResponseParameters {
    retry_after: Option<u64>,
}

/// The Bot API client of one bot.
#[derive(Clone)]
pub struct Client {
    http: HttpClient,
    /// `<apiRoot>/bot<token>/`: never logged.
    base: String,
    token: Secret,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `api_root` (e.g. `https://api.telegram.org`, without `/bot<token>`).
    /// HTTPS uses rustls with the ring provider and the system's CA store.
    pub fn new(api_root: &str, token: &Secret) -> Result<Self, String> {
        let root = api_root.trim_end_matches('/');
        if !(root.starts_with("https://") || root.starts_with("http://")) || root.contains('?') {
            return Err(format!(
                "channels.telegram.apiRoot must be an http:// or https:// URL without a query \
                 (got {root:?})"
            ));
        }
        let base = format!("{root}/bot{}/", token.expose());
        // Checked once here, so that every call's URL (base + a method name) parses too. The
        // parser's error is not shown: its text could quote the token.
        if format!("{base}getMe").parse::<Uri>().is_err() {
            return Err(format!(
                "channels.telegram.apiRoot {root:?} with the bot token does not make a valid \
                 URL: check both (a token is digits, a colon, then letters, digits, - and _)"
            ));
        }
        let http = HttpClient::new(root.starts_with("https://"), CONNECT_TIMEOUT)
            .map_err(|e| format!("cannot set up the Telegram client: {e}"))?;
        Ok(Self {
            http,
            base,
            token: token.clone(),
        })
    }

    /// `getMe`: the bot's own identity; also the cheapest way to check the token.
    pub async fn get_me(&self) -> Result<User, ApiError> {
        self.call("getMe", &json!({}), REQUEST_TIMEOUT).await
    }

    /// `getUpdates` with long polling. Passing `offset` confirms every update below it:
    /// Telegram never sends those again.
    pub async fn get_updates(
        &self,
        offset: Option<i64>,
        timeout_secs: u64,
    ) -> Result<Vec<Update>, ApiError> {
        let body = json!({
            "offset": offset,
            "timeout": timeout_secs,
            "allowed_updates": ["message"],
        });
        let timeout = Duration::from_secs(timeout_secs) + POLL_GRACE;
        let raw: Vec<serde_json::Value> = self.call("getUpdates", &body, timeout).await?;
        let count = raw.len();
        let updates: Vec<Update> = raw.into_iter().filter_map(Update::from_value).collect();
        // Without an id the offset cannot move past an update; polling again at once would
        // get it back in a tight loop. As an error it is retried with backoff instead.
        if updates.len() != count {
            return Err(ApiError::Decode {
                method: "getUpdates",
                message: "an update without an integer update_id".into(),
            });
        }
        Ok(updates)
    }

    /// `sendMessage` of one chunk (at most 4096 UTF-16 units), as plain text: model output
    /// is never parsed as Markdown or HTML.
    pub async fn send_message(
        &self,
        chat_id: i64,
        text: &str,
        reply_to: Option<i64>,
    ) -> Result<(), ApiError> {
        let mut body = json!({ "chat_id": chat_id, "text": text });
        if let Some(id) = reply_to {
            body["reply_parameters"] =
                json!({ "message_id": id, "allow_sending_without_reply": true });
        }
        self.call::<serde_json::Value>("sendMessage", &body, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// `sendChatAction`: shows e.g. "typing…" for about five seconds.
    pub async fn send_chat_action(&self, chat_id: i64, action: &str) -> Result<(), ApiError> {
        let body = json!({ "chat_id": chat_id, "action": action });
        self.call::<serde_json::Value>("sendChatAction", &body, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, ApiError> {
        let network = |message: String| ApiError::Network {
            method,
            message: self.scrub(message),
        };
        let body = serde_json::to_vec(body).map_err(|e| network(e.to_string()))?;
        let uri: Uri = format!("{}{method}", self.base)
            .parse()
            .map_err(|_| network("the request URL is invalid".into()))?;
        let request = Request::post(uri)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                USER_AGENT,
                HeaderValue::from_static(concat!("clawfort/", env!("CARGO_PKG_VERSION"))),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| network("the request is invalid".into()))?;
        let response = self
            .http
            .send(request, timeout, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| match e {
                SendError::TooLarge(_) => ApiError::Decode {
                    method,
                    message: e.to_string(),
                },
                e => network(e.to_string()),
            })?;
        let status = response.status.as_u16();
        let bytes = response.body;
        let envelope: Envelope<T> = serde_json::from_slice(&bytes).map_err(|e| match status {
            401 => ApiError::Unauthorized { method },
            200 => ApiError::Decode {
                method,
                message: e.to_string(),
            },
            code => ApiError::Api {
                method,
                code,
                description: format!("HTTP {code} without a Bot API answer"),
            },
        })?;
        if envelope.ok {
            return envelope.result.ok_or(ApiError::Decode {
                method,
                message: "`ok` without a `result`".into(),
            });
        }
        let code = envelope.error_code.unwrap_or(status);
        let description = self.scrub(envelope.description.unwrap_or_default());
        let retry_after = envelope.parameters.and_then(|p| p.retry_after);
        Err(match (code, retry_after) {
            (401, _) => ApiError::Unauthorized { method },
            (409, _) => ApiError::Conflict {
                method,
                description,
            },
            (429, retry_after) => ApiError::RetryAfter {
                method,
                retry_after: retry_after.unwrap_or(1),
            },
            (code, _) => ApiError::Api {
                method,
                code,
                description,
            },
        })
    }

    /// Removes the token from text that came back from the server.
    fn scrub(&self, text: String) -> String {
        let token = self.token.expose();
        if token.is_empty() || !text.contains(token) {
            return text;
        }
        text.replace(token, crate::secret::REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_for_https_and_http_roots_only() {
        let token = Secret::new("1:secret");
        // HTTPS: the ring provider and the system CA store must be usable.
        let client = Client::new("https://api.telegram.org/", &token).unwrap();
        assert_eq!(client.base, "https://api.telegram.org/bot1:secret/");
        assert!(!format!("{client:?}").contains("secret"));
        Client::new("http://127.0.0.1:8081", &token).unwrap();
        // A token that cannot be in a URL is refused without being quoted.
        let err = Client::new("https://api.telegram.org", &Secret::new("1:se cret")).unwrap_err();
        assert!(err.contains("apiRoot") && !err.contains("se cret"), "{err}");
        for bad in ["api.telegram.org", "ftp://x", "https://x/?a=b"] {
            let err = Client::new(bad, &token).unwrap_err();
            assert!(err.contains("apiRoot"), "{err}");
        }
    }

    #[test]
    fn server_descriptions_are_scrubbed_of_the_token() {
        let client = Client::new("http://127.0.0.1:1", &Secret::new("1:secret")).unwrap();
        assert_eq!(
            client.scrub("bad url /bot1:secret/x".into()),
            "bad url /bot[redacted]/x"
        );
    }

    /// A Bot API answer over the cap is an error after reading at most the cap, not a
    /// gateway holding (or trying to decode) whatever a broken or hostile server sends.
    #[tokio::test]
    async fn an_answer_over_the_size_cap_is_an_error() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request);
            let size = MAX_RESPONSE_BYTES + 1;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
            );
            let _ = socket.write_all(head.as_bytes());
            // `{"ok":true,"result":"aaaa…` : valid JSON up to the cap.
            let _ = socket.write_all(br#"{"ok":true,"result":""#);
            let chunk = vec![b'a'; 64 * 1024];
            let mut left = size - 20;
            while left > 0 {
                let n = left.min(chunk.len());
                if socket.write_all(&chunk[..n]).is_err() {
                    break; // the client hung up at the cap
                }
                left -= n;
            }
        });
        let client = Client::new(
            &format!("http://127.0.0.1:{port}"),
            &Secret::new("1:secret"),
        )
        .unwrap();
        let err = client.get_me().await.unwrap_err();
        assert!(
            matches!(err, ApiError::Decode { .. })
                && err.to_string().contains("larger than 8388608 bytes"),
            "{err}"
        );
        server.join().unwrap();
    }
}
