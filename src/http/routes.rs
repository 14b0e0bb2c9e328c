//! Request handling: guards, authentication, then the routes.
//!
//! | route                                   | auth | what                                 |
//! |-----------------------------------------|------|--------------------------------------|
//! | `GET /healthz`                          | no   | `{"ok":true}` and nothing else       |
//! | `GET /api/status`                       | yes  | version, uptime, bind, policies...   |
//! | `POST /api/messages`                    | yes  | the generic webhook channel          |
//! | `GET /api/pairing`                      | yes  | pending and approved, every channel  |
//! | `GET /api/pairing/<ch>`                 | yes  | pending and approved of one channel  |
//! | `POST /api/pairing/<ch>/approve`        | yes  | `{"code"}`                           |
//! | `POST /api/pairing/<ch>/reject`         | yes  | `{"code"}`                           |
//! | `POST /api/pairing/<ch>/revoke`         | yes  | `{"peer"}` or `{"group"}`            |
//! | `POST /api/agent/stop-all`              | yes  | cancel every running turn: `{"stopped"}` |
//! | `GET /api/approvals`                    | yes  | exec approvals waiting: `{"pending"}` |
//! | `POST /api/approvals/<id>/<answer>`     | yes  | `approve`, `always` or `deny`: `{"result"}` |
//!
//! Order matters: the framing, Host and Origin guards run first (a rebinding page learns
//! nothing), then the lockout check (a remote client locked out by its own failures has its
//! token not even looked at; see `ratelimit` for when a token is compared during a lockout),
//! then the token. Unknown `/api` paths answer 404 only after authentication, so they cannot be
//! probed anonymously.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, ORIGIN};
use hyper::{Method, Request, StatusCode};
use serde::{Deserialize, Serialize};

use super::ratelimit::Gate;
use super::reply::{self, Reply};
use super::{guard, Gateway};
use crate::messages::{self, MessageError};
use crate::pairing::{self, unix_now, PeerKind, StoreError};
use crate::sessions::Durability;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 64 * 1024;
/// A client must deliver its body within this time (408 otherwise); headers have the same
/// limit in the connection settings.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn handle(gw: Arc<Gateway>, ip: IpAddr, req: Request<Incoming>) -> Reply {
    if let Some(reason) = guard::framing_error(&req) {
        gw.log_refusal(ip, reason);
        return reply::bad_framing(reason);
    }
    let headers = req.headers();
    if !guard::host_allowed(
        headers.get(HOST),
        &gw.config.gateway.allowed_hosts,
        gw.bind_ip(),
    ) {
        gw.log_refusal(ip, "Host header not allowed");
        return reply::error(
            StatusCode::FORBIDDEN,
            "Host header is not a loopback name or in gateway.allowedHosts",
        );
    }
    if !guard::origin_allowed(headers.get(ORIGIN), &gw.config.gateway.allowed_origins) {
        gw.log_refusal(ip, "Origin not allowed");
        return reply::error(
            StatusCode::FORBIDDEN,
            "browser origin not allowed (gateway.allowedOrigins)",
        );
    }

    let path = req.uri().path();
    if path == "/healthz" {
        return match *req.method() {
            Method::GET | Method::HEAD => reply::bytes(StatusCode::OK, &b"{\"ok\":true}"[..]),
            _ => reply::error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
        };
    }
    if path != "/api" && !path.starts_with("/api/") {
        return reply::error(StatusCode::NOT_FOUND, "not found");
    }

    let gate = gw.limiter.gate(ip);
    if let Gate::Refuse { retry_after } = gate {
        return reply::too_many(retry_after);
    }
    if let Err(reason) = gw.authenticate(headers.get(AUTHORIZATION).map(|v| v.as_bytes())) {
        gw.auth_failed(ip, reason);
        return match gate {
            Gate::TokenFirst { retry_after } => reply::too_many(retry_after),
            _ => reply::unauthorized(reason),
        };
    }

    route(gw, req).await
}

async fn route(gw: Arc<Gateway>, req: Request<Incoming>) -> Reply {
    let segments: Vec<&str> = req.uri().path()[1..].split('/').collect();
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, ["api", "status"]) => reply::json(StatusCode::OK, &gw.status()),
        (Method::POST, ["api", "messages"]) => {
            let body = match read_body(req).await {
                Ok(body) => body,
                Err(rejected) => return rejected.reply(),
            };
            blocking(move || {
                let msg = messages::parse(&body)?;
                let outcome = messages::handle(
                    &gw.config,
                    &gw.store,
                    &gw.transcripts,
                    &msg,
                    unix_now(),
                    Durability::Synced,
                )?;
                if outcome.new_code {
                    gw.events.record(crate::events::Event::PairingRequest {
                        channel: msg.channel.clone(),
                        sender: msg.group.clone().unwrap_or_else(|| msg.peer.clone()),
                    });
                }
                Ok::<_, messages::MessageError>(outcome)
            })
            .await
        }
        (Method::GET, ["api", "pairing"]) => {
            blocking(move || {
                // A channel whose files are broken shows its error; the others still list.
                let list: Vec<serde_json::Value> = gw
                    .store
                    .channels()?
                    .iter()
                    .map(|c| match ChannelPairing::read(&gw.store, c) {
                        Ok(pairing) => serde_json::json!(pairing),
                        Err(e) => serde_json::json!({ "channel": c, "error": e.to_string() }),
                    })
                    .collect();
                Ok::<_, StoreError>(serde_json::json!({ "channels": list }))
            })
            .await
        }
        (Method::GET, ["api", "pairing", channel]) => {
            let channel = match checked_channel(channel) {
                Ok(c) => c,
                Err(rejected) => return rejected.reply(),
            };
            blocking(move || ChannelPairing::read(&gw.store, &channel)).await
        }
        (Method::POST, ["api", "pairing", channel, action @ ("approve" | "reject" | "revoke")]) => {
            let channel = match checked_channel(channel) {
                Ok(c) => c,
                Err(rejected) => return rejected.reply(),
            };
            let action = action.to_string();
            let body = match read_body(req).await {
                Ok(body) => body,
                Err(rejected) => return rejected.reply(),
            };
            pairing_action(gw, channel, action, body).await
        }
        (Method::POST, ["api", "agent", "stop-all"]) => stop_all(&gw),
        (Method::GET, ["api", "approvals"]) => match &gw.approvals {
            Some(a) => reply::json(
                StatusCode::OK,
                &serde_json::json!({ "pending": a.pending() }),
            ),
            None => no_approvals(),
        },
        (Method::POST, ["api", "approvals", id, answer @ ("approve" | "always" | "deny")]) => {
            answer_approval(&gw, id, answer)
        }
        (_, ["api", "status" | "messages"])
        | (_, ["api", "approvals", ..])
        | (_, ["api", "pairing", ..])
        | (_, ["api", "agent", "stop-all"]) => {
            reply::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        }
        _ => reply::error(StatusCode::NOT_FOUND, "no such API endpoint"),
    }
}

/// `clawfort stop-all`: cancels every running turn of the agent. 409 when there is no
/// agent to stop, so a script can tell "nothing was running" (`{"stopped":0}`) from "this
/// gateway runs no agent".
fn stop_all(gw: &Gateway) -> Reply {
    match gw.agent.as_ref().map(crate::agent::AgentHandle::stop_all) {
        None => reply::error(
            StatusCode::CONFLICT,
            "no agent is configured on this gateway (agents.defaults.model with its provider \
             in models.providers; `clawfort setup` writes them), so nothing runs",
        ),
        Some(None) => reply::error(
            StatusCode::CONFLICT,
            "the agent is not running (still starting, or it failed to start: see `clawfort \
             logs`)",
        ),
        Some(Some(stopped)) => {
            tracing::info!("stop-all over the API: {stopped} running turn(s) cancelled");
            reply::json(StatusCode::OK, &serde_json::json!({ "stopped": stopped }))
        }
    }
}

fn no_approvals() -> Reply {
    reply::error(
        StatusCode::CONFLICT,
        "this gateway's agent has no exec tool (tools.exec.security is \"deny\" or unset), \
         so nothing waits for an approval",
    )
}

/// `clawfort approvals approve|deny`: answers one question; 404 when it is not waiting
/// (answered, timed out, or its turn ended), 409 when "always" cannot apply.
fn answer_approval(gw: &Gateway, id: &str, answer: &str) -> Reply {
    use crate::approvals::{Answer, AnswerError};
    let Some(approvals) = &gw.approvals else {
        return no_approvals();
    };
    let answer = match answer {
        "always" => Answer::Always,
        "deny" => Answer::Deny,
        _ => Answer::Once,
    };
    match approvals.answer(id, answer, "cli") {
        Ok(result) => reply::json(StatusCode::OK, &serde_json::json!({ "result": result })),
        Err(e @ AnswerError::NotPending(_)) => reply::error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ AnswerError::NotSimple(_)) => reply::error(StatusCode::CONFLICT, &e.to_string()),
    }
}

/// Pending and approved senders of one channel.
#[derive(Serialize)]
struct ChannelPairing {
    channel: String,
    pending: Vec<pairing::PairingRequest>,
    approved: pairing::AllowList,
}

impl ChannelPairing {
    fn read(store: &pairing::Store, channel: &str) -> Result<Self, StoreError> {
        Ok(Self {
            channel: channel.to_string(),
            pending: store.pending(channel, unix_now())?,
            approved: store.allow_list(channel)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairingAction {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    peer: Option<String>,
    #[serde(default)]
    group: Option<String>,
}

async fn pairing_action(gw: Arc<Gateway>, channel: String, action: String, body: Bytes) -> Reply {
    let req: PairingAction = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => return reply::error(StatusCode::BAD_REQUEST, &format!("malformed JSON: {e}")),
    };
    let now = unix_now();
    match (action.as_str(), req) {
        (
            "approve" | "reject",
            PairingAction {
                code: Some(code),
                peer: None,
                group: None,
            },
        ) => {
            let approve = action == "approve";
            let channel_for_log = channel.clone();
            let result = tokio::task::spawn_blocking(move || {
                if approve {
                    gw.store.approve(&channel, &code, now)
                } else {
                    gw.store.reject(&channel, &code, now)
                }
            })
            .await;
            match result {
                Ok(Ok(Some(request))) => {
                    tracing::info!(
                        "pairing {action}d over the API: {} {} on channel {channel_for_log}",
                        request.kind,
                        request.id
                    );
                    reply::json(StatusCode::OK, &serde_json::json!({ action: request }))
                }
                Ok(Ok(None)) => reply::error(
                    StatusCode::NOT_FOUND,
                    "no pending request with this code on this channel (expired or unknown)",
                ),
                Ok(Err(e)) => store_failure(&e),
                Err(e) => internal(&e.to_string()),
            }
        }
        (
            "revoke",
            PairingAction {
                code: None,
                peer,
                group,
            },
        ) => {
            let (kind, id) = match (peer, group) {
                (Some(peer), None) => (PeerKind::Direct, peer),
                (None, Some(group)) => (PeerKind::Group, group),
                _ => {
                    return reply::error(
                        StatusCode::BAD_REQUEST,
                        "give exactly one of `peer` or `group`",
                    )
                }
            };
            blocking(move || {
                let revoked = gw.store.revoke(&channel, kind, &id)?;
                Ok::<_, StoreError>(serde_json::json!({ "revoked": revoked }))
            })
            .await
        }
        _ => reply::error(
            StatusCode::BAD_REQUEST,
            "approve and reject take {\"code\"}; revoke takes {\"peer\"} or {\"group\"}",
        ),
    }
}

/// A request refused before any work: the status and the message for the JSON error.
struct Rejected(StatusCode, String);

impl Rejected {
    fn reply(self) -> Reply {
        reply::error(self.0, &self.1)
    }
}

fn checked_channel(channel: &str) -> Result<String, Rejected> {
    if pairing::is_valid_channel_name(channel) {
        Ok(channel.to_string())
    } else {
        Err(Rejected(
            StatusCode::BAD_REQUEST,
            "channel names are 1 to 64 letters, digits, `-` or `_`".into(),
        ))
    }
}

/// Reads the body within `MAX_BODY` bytes and `BODY_TIMEOUT`.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Rejected> {
    let too_large = || {
        Rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(Rejected(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
        Err(_) => Err(Rejected(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time".into(),
        )),
    }
}

/// Runs file work off the async workers and turns the result into a reply.
async fn blocking<T, E>(work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Reply
where
    T: Serialize + Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => reply::json(StatusCode::OK, &value),
        Ok(Err(e)) => match e.into() {
            ApiError::Message(MessageError::Invalid(message)) => {
                reply::error(StatusCode::BAD_REQUEST, &message)
            }
            ApiError::Message(MessageError::Store(e)) | ApiError::Store(e) => store_failure(&e),
            ApiError::Message(e) => internal(&e.to_string()),
        },
        Err(e) => internal(&e.to_string()),
    }
}

pub enum ApiError {
    Message(MessageError),
    Store(StoreError),
}

impl From<MessageError> for ApiError {
    fn from(e: MessageError) -> Self {
        Self::Message(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// A channel's store file cannot be read or written: 503 naming the file and what to do, so
/// the owner can fix it; other channels are unaffected.
fn store_failure(e: &StoreError) -> Reply {
    tracing::warn!("request failed: {e}");
    reply::error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
}

fn internal(message: &str) -> Reply {
    tracing::error!("request failed: {message}");
    reply::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; see the gateway log (clawfort logs)",
    )
}
