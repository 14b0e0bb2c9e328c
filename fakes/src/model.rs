//! A scripted fake model server: hyper on a TCP listener, recording every request it
//! receives (with the times it arrived and was answered) and answering as the script says.
//!
//! The same server stands in for both APIs: the script sees the path
//! (`/v1/messages` for Anthropic Messages, `.../chat/completions` for OpenAI) and answers
//! in that API's format; [`canned`] does so for a fixed text.
//!
//! A controller can also play a model gone rogue: `POST /_fake/tool-calls` with
//! `{"calls": [{"name": "read", "input": {"path": "../.env"}}, ...]}` queues one answer that
//! calls those tools. The next chat request the script answers with success gets it instead
//! of the script's answer, in that API's tool-call format; later ones get the script's again.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::control::{self, Body, PREFIX};
use crate::record::Recorder;

/// The key test providers are configured with; it must never show up anywhere but in the
/// auth header the fake receives.
pub const KEY: &str = "sk-ant-api03-TESTKEY-0123456789abcdefghijklmnop";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the whole request (body included) had arrived.
    pub at: Instant,
    /// When the fake's handler gave its answer to hyper, which writes it at once (None while
    /// the script's reply is pending, and for one that never comes).
    pub answered: Option<Instant>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics when it is not (every client of these APIs sends JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the client sends JSON")
    }
}

/// What the fake answers.
pub enum Reply {
    /// Status, extra headers, body.
    Json(u16, Vec<(&'static str, String)>, String),
    /// Never answers.
    Hang,
    /// Declares `declared` bytes, sends `sent`, then drops the connection.
    Truncated { declared: usize, sent: &'static str },
    /// 64 KiB chunks up to a gigabyte.
    Endless,
    /// The inner reply after a delay (a model's thinking time).
    After(Duration, Box<Reply>),
}

/// `200` with `body`.
pub fn ok(body: Value) -> Reply {
    Reply::Json(200, vec![], body.to_string())
}

type Script = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

pub struct Fake {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections being served right now.
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A tool call a controller queued for the next chat answer.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedCall {
    pub name: String,
    pub input: Value,
}

/// The body of `POST /_fake/tool-calls`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Plan {
    calls: Vec<PlannedCall>,
}

/// What one server shares with its connections.
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Queued tool-call answers, first in first out.
    plans: Mutex<VecDeque<Vec<PlannedCall>>>,
    script: Box<Script>,
    recorder: Option<Recorder>,
    started: Instant,
}

impl Fake {
    /// Serves `script(n, request)` for the n-th request (0-based) on an ephemeral loopback
    /// port.
    pub async fn start(script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, script, None)
    }

    /// Serves `script` on `listener`, appending each request to `recorder` if given.
    pub fn serve(
        listener: TcpListener,
        script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static,
        recorder: Option<Recorder>,
    ) -> Fake {
        let addr = listener.local_addr().expect("a bound listener");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            seen: Arc::clone(&seen),
            plans: Mutex::new(VecDeque::new()),
            script: Box::new(script),
            recorder,
            started: Instant::now(),
        });
        let open = Arc::new(AtomicUsize::new(0));
        let task = control::spawn_server(listener, Arc::clone(&open), move |req| {
            handle(req, Arc::clone(&shared))
        });
        Fake {
            addr,
            seen,
            open,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The `n`th request (from 0), without cloning the others.
    pub fn seen_nth(&self, n: usize) -> Option<Seen> {
        self.seen.lock().unwrap().get(n).cloned()
    }

    /// How many requests arrived, without cloning them.
    pub fn seen_count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Everything the fake received except the auth headers, as text.
    pub fn seen_without_auth(&self) -> String {
        let mut all = String::new();
        for s in self.seen() {
            all.push_str(&s.path);
            for (name, value) in &s.headers {
                if name != "x-api-key" && name != "authorization" {
                    all.push_str(&format!("{name}: {value}\n"));
                }
            }
            all.push_str(&String::from_utf8_lossy(&s.body));
        }
        all
    }
}

/// One request as the control API and the record show it.
fn seen_json(seen: &Seen, started: Instant) -> Value {
    let headers: serde_json::Map<String, Value> = seen
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), Value::from(v.as_str())))
        .collect();
    json!({
        "method": seen.method,
        "path": seen.path,
        "headers": headers,
        "body": control::body_value(&seen.body),
        "ms": seen.at.duration_since(started).as_secs_f64() * 1000.0,
    })
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path.starts_with(PREFIX) {
        return if path == "/_fake/calls" {
            let seen = shared.seen.lock().unwrap();
            let calls: Vec<Value> = seen.iter().map(|s| seen_json(s, shared.started)).collect();
            control::json(200, &Value::Array(calls))
        } else if path == "/_fake/tool-calls" && req.method() == hyper::Method::POST {
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            match body.map(|b| serde_json::from_slice::<Plan>(&b)) {
                Ok(Ok(plan)) if !plan.calls.is_empty() => {
                    let mut plans = shared.plans.lock().unwrap();
                    plans.push_back(plan.calls);
                    control::json(200, &json!({"queued": plans.len()}))
                }
                _ => control::json(
                    400,
                    &json!({"error": "expected {\"calls\": [{\"name\": ..., \"input\": {...}}, ...]} with at least one call"}),
                ),
            }
        } else {
            control::not_found(&path)
        };
    }
    let method = req.method().as_str().to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let seen = Seen {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
        answered: None,
    };
    if let Some(recorder) = &shared.recorder {
        recorder.write("model", seen_json(&seen, shared.started));
    }
    let n = {
        let mut log = shared.seen.lock().unwrap();
        log.push(seen.clone());
        log.len() - 1
    };
    let mut reply = (shared.script)(n, &seen);
    while let Reply::After(delay, inner) = reply {
        // tokio's timer has a 1 ms tick: even a zero sleep would wait for it.
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        reply = *inner;
    }
    if let Reply::Json(200, _, _) = reply {
        let chat = seen.method == "POST"
            && (seen.path.ends_with("/v1/messages") || seen.path.ends_with("/chat/completions"));
        let plan = chat
            .then(|| shared.plans.lock().unwrap().pop_front())
            .flatten();
        if let Some(calls) = plan {
            let model = seen.json()["model"]
                .as_str()
                .unwrap_or("fake-model")
                .to_owned();
            reply = ok(if seen.path.ends_with("/v1/messages") {
                anthropic_tool_use(&model, n, &calls)
            } else {
                openai_tool_calls(&model, n, &calls)
            });
        }
    }
    let response = respond(reply).await;
    shared.seen.lock().unwrap()[n].answered = Some(Instant::now());
    response
}

async fn respond(reply: Reply) -> Response<Body> {
    let mut response = Response::builder();
    let body = match reply {
        Reply::Json(status, extra, body) => {
            response = response
                .status(status)
                .header("content-type", "application/json");
            for (name, value) in extra {
                response = response.header(name, value);
            }
            control::full(body)
        }
        Reply::Hang => std::future::pending().await,
        Reply::Truncated { declared, sent } => {
            response = response.header("content-length", declared);
            Chunks {
                left: 1,
                chunk: Bytes::from_static(sent.as_bytes()),
                fail: true,
            }
            .boxed()
        }
        Reply::Endless => {
            response = response.header("content-length", 1usize << 30);
            Chunks {
                left: (1 << 30) / 65536,
                chunk: Bytes::from(vec![b'x'; 65536]),
                fail: false,
            }
            .boxed()
        }
        Reply::After(..) => unreachable!("unwrapped by the caller"),
    };
    response.body(body).expect("a valid status and headers")
}

/// `left` copies of `chunk`, then the end, or an error that makes hyper drop the connection.
struct Chunks {
    left: usize,
    chunk: Bytes,
    fail: bool,
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.left > 0 {
            self.left -= 1;
            return Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))));
        }
        if self.fail {
            return Poll::Ready(Some(Err(io::Error::other("cut off"))));
        }
        Poll::Ready(None)
    }
}

/// Asserts that the key is nowhere in `text`.
pub fn assert_no_key(what: &str, text: &str) {
    assert!(!text.contains(KEY), "{what} contains the API key: {text}");
    assert!(
        !text.contains("TESTKEY"),
        "{what} contains part of the API key: {text}"
    );
}

/// A fixed answer for [`canned`].
#[derive(Debug, Clone)]
pub struct Canned {
    /// The assistant's text.
    pub text: String,
    /// The model id reported in answers and in the models list.
    pub model: String,
    /// The key the client must send (`x-api-key` for Anthropic, `Authorization: Bearer`
    /// for OpenAI); None accepts any.
    pub api_key: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// How long the "model" thinks before answering.
    pub latency: Duration,
}

impl Canned {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            model: "fake-model".to_owned(),
            api_key: None,
            input_tokens: 10,
            output_tokens: 5,
            latency: Duration::ZERO,
        }
    }
}

/// A script answering every request with `canned`, in the format of the API the path
/// names:
/// - `POST .../v1/messages`: an Anthropic Messages `message` (`stop_reason: end_turn`);
/// - `POST .../chat/completions`: an OpenAI `chat.completion` (`finish_reason: stop`);
/// - `GET .../models`: the API's model list with the one model (Anthropic's shape when the
///   request carries `x-api-key`, OpenAI's otherwise), the cheap call a key check uses;
///
/// anything else gets a 404 in the matching error format. A wrong or missing key gets the
/// API's 401 `authentication_error` / `invalid_api_key` and nothing else.
pub fn canned(canned: Canned) -> impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static {
    move |n, seen| {
        let anthropic = seen.path.ends_with("/v1/messages") || seen.header("x-api-key").is_some();
        let key = if anthropic {
            seen.header("x-api-key")
        } else {
            seen.header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
        };
        let reply = if canned.api_key.as_deref().is_some_and(|k| Some(k) != key) {
            if anthropic {
                anthropic_error(401, "authentication_error", "invalid x-api-key")
            } else {
                openai_error(401, "invalid_api_key", "Incorrect API key provided.")
            }
        } else if seen.method == "POST" && seen.path.ends_with("/v1/messages") {
            ok(anthropic_text(&canned, n))
        } else if seen.method == "POST" && seen.path.ends_with("/chat/completions") {
            ok(openai_text(&canned, n))
        } else if seen.method == "GET" && seen.path.ends_with("/models") {
            ok(if anthropic {
                json!({
                    "data": [{"type": "model", "id": canned.model, "display_name": canned.model,
                              "created_at": "2026-01-01T00:00:00Z"}],
                    "has_more": false, "first_id": canned.model, "last_id": canned.model,
                })
            } else {
                json!({"object": "list", "data": [
                    {"id": canned.model, "object": "model", "created": 1767225600, "owned_by": "fake"}
                ]})
            })
        } else if anthropic {
            anthropic_error(404, "not_found_error", "Not found")
        } else {
            openai_error(404, "unknown_url", "Unknown request URL")
        };
        Reply::After(canned.latency, Box::new(reply))
    }
}

/// An Anthropic Messages answer with `canned.text`.
pub fn anthropic_text(canned: &Canned, n: usize) -> Value {
    json!({
        "id": format!("msg_fake{n:06}"), "type": "message", "role": "assistant",
        "model": canned.model,
        "content": [{"type": "text", "text": canned.text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": canned.input_tokens, "output_tokens": canned.output_tokens}
    })
}

/// An OpenAI chat completion with `canned.text`.
pub fn openai_text(canned: &Canned, n: usize) -> Value {
    json!({
        "id": format!("chatcmpl-fake{n:06}"), "object": "chat.completion", "created": 1767225600,
        "model": canned.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": canned.text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": canned.input_tokens, "completion_tokens": canned.output_tokens,
                  "total_tokens": canned.input_tokens + canned.output_tokens}
    })
}

/// An Anthropic Messages answer that calls `calls` (`stop_reason: tool_use`).
pub fn anthropic_tool_use(model: &str, n: usize, calls: &[PlannedCall]) -> Value {
    let content: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"type": "tool_use", "id": format!("toolu_fake{n:06}_{i}"),
                   "name": c.name, "input": c.input})
        })
        .collect();
    json!({
        "id": format!("msg_fake{n:06}"), "type": "message", "role": "assistant",
        "model": model, "content": content,
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5}
    })
}

/// An OpenAI chat completion that calls `calls` (`finish_reason: tool_calls`; the arguments
/// are a JSON string, as the API sends them).
pub fn openai_tool_calls(model: &str, n: usize, calls: &[PlannedCall]) -> Value {
    let tool_calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"id": format!("call_fake{n:06}_{i}"), "type": "function",
                   "function": {"name": c.name, "arguments": c.input.to_string()}})
        })
        .collect();
    json!({
        "id": format!("chatcmpl-fake{n:06}"), "object": "chat.completion", "created": 1767225600,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                                             "tool_calls": tool_calls},
                     "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    })
}

/// Anthropic's error envelope.
pub fn anthropic_error(status: u16, kind: &str, message: &str) -> Reply {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    Reply::Json(status, vec![], body.to_string())
}

/// OpenAI's error envelope.
pub fn openai_error(status: u16, code: &str, message: &str) -> Reply {
    let body = json!({"error": {"message": message, "type": "invalid_request_error",
                                "param": null, "code": code}});
    Reply::Json(status, vec![], body.to_string())
}
