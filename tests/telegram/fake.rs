//! A fake Telegram Bot API on 127.0.0.1, written from the public wire format.
//!
//! `POST /bot<token>/<method>` with a JSON body. A wrong token gets Telegram's 401.
//! `getUpdates` honours `offset` (updates below it are confirmed and dropped for good) and
//! long-polls up to `timeout` seconds for new ones. Every call is recorded; failures can be
//! queued per method (401, 409, 429 with `retry_after`, ...).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::Notify;

pub const BOT_ID: i64 = 4242;
pub const BOT_NAME: &str = "claw_bot";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    pub at: Instant,
    /// The HTTP status the fake answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    updates: Vec<Value>,
    next_update_id: i64,
    next_message_id: i64,
    calls: Vec<Call>,
    failures: HashMap<String, VecDeque<(u16, Value)>>,
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    token: String,
    state: Arc<Mutex<State>>,
    new_update: Arc<Notify>,
}

impl Fake {
    /// Starts the fake for the bot token `token` on an ephemeral loopback port.
    pub async fn start(token: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Fake {
            addr: listener.local_addr().unwrap(),
            token: token.to_string(),
            state: Arc::new(Mutex::new(State {
                next_update_id: 100,
                next_message_id: 1000,
                ..State::default()
            })),
            new_update: Arc::new(Notify::new()),
        };
        let server = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, hyper::Error>(server.serve(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        fake
    }

    pub fn api_root(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues an update (its `update_id` is assigned here) and returns its id.
    pub fn push(&self, mut update: Value) -> i64 {
        let id = {
            let mut state = self.state.lock().unwrap();
            let id = state.next_update_id;
            state.next_update_id += 1;
            update["update_id"] = json!(id);
            state.updates.push(update);
            id
        };
        self.new_update.notify_waiters();
        id
    }

    /// Queues `update` as it is, without an `update_id` of its own.
    pub fn push_raw(&self, update: Value) {
        self.state.lock().unwrap().updates.push(update);
        self.new_update.notify_waiters();
    }

    /// The next `count` calls of `method` fail with `status` and this Bot API body.
    pub fn fail(&self, method: &str, status: u16, count: usize, parameters: Option<Value>) {
        let description = match status {
            401 => "Unauthorized".to_string(),
            409 => "Conflict: can't use getUpdates method while webhook is active; use \
                    deleteWebhook to delete the webhook first"
                .to_string(),
            429 => "Too Many Requests: retry later".to_string(),
            _ => format!("Bad Request: something about bot{}", self.token),
        };
        let mut body = json!({"ok": false, "error_code": status, "description": description});
        if let Some(parameters) = parameters {
            body["parameters"] = parameters;
        }
        let mut state = self.state.lock().unwrap();
        let queue = state.failures.entry(method.to_string()).or_default();
        queue.extend(std::iter::repeat_n((status, body), count));
    }

    pub fn calls(&self, method: &str) -> Vec<Call> {
        let state = self.state.lock().unwrap();
        state
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// The texts delivered to `chat_id`, in order.
    pub fn sent_to(&self, chat_id: i64) -> Vec<String> {
        self.calls("sendMessage")
            .into_iter()
            .filter(|c| c.body["chat_id"] == chat_id && c.status == 200)
            .map(|c| c.body["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Waits (at most 10 s) until `done` holds.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&Fake) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn serve(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        let body: Value = body
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let Some((token, method)) = path
            .strip_prefix("/bot")
            .and_then(|rest| rest.split_once('/'))
        else {
            return reply(
                404,
                json!({"ok": false, "error_code": 404, "description": "Not Found"}),
            );
        };
        let method = method.to_string();
        let failure = {
            let mut state = self.state.lock().unwrap();
            let failure = if token != self.token {
                let body = json!({"ok": false, "error_code": 401, "description": "Unauthorized"});
                Some((401, body))
            } else {
                state
                    .failures
                    .get_mut(&method)
                    .and_then(VecDeque::pop_front)
            };
            state.calls.push(Call {
                method: method.clone(),
                body: body.clone(),
                at: Instant::now(),
                status: failure.as_ref().map_or(200, |(status, _)| *status),
            });
            failure
        };
        if let Some((status, body)) = failure {
            return reply(status, body);
        }
        match method.as_str() {
            "getMe" => ok(json!({
                "id": BOT_ID, "is_bot": true, "first_name": "Claw", "username": BOT_NAME,
            })),
            "getUpdates" => ok(self.get_updates(&body).await),
            "sendMessage" => {
                let id = {
                    let mut state = self.state.lock().unwrap();
                    state.next_message_id += 1;
                    state.next_message_id
                };
                ok(json!({
                    "message_id": id, "date": 0,
                    "chat": {"id": body["chat_id"], "type": "private"},
                    "text": body["text"],
                }))
            }
            "sendChatAction" => ok(json!(true)),
            _ => reply(
                404,
                json!({"ok": false, "error_code": 404, "description": "Not Found"}),
            ),
        }
    }

    async fn get_updates(&self, body: &Value) -> Value {
        let offset = body["offset"].as_i64();
        let timeout = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0).min(30));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.new_update.notified();
            {
                let mut state = self.state.lock().unwrap();
                if let Some(offset) = offset {
                    // Telegram forgets confirmed updates for good.
                    state
                        .updates
                        .retain(|u| u["update_id"].as_i64().is_none_or(|id| id >= offset));
                }
                if !state.updates.is_empty() {
                    return Value::Array(state.updates.iter().take(100).cloned().collect());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return json!([]);
            }
        }
    }
}

fn ok(result: Value) -> Response<Full<Bytes>> {
    reply(200, json!({"ok": true, "result": result}))
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A private text message from `user_id`.
pub fn private_text(user_id: i64, text: &str) -> Value {
    json!({"message": {
        "message_id": 1, "date": 0, "text": text,
        "from": {"id": user_id, "is_bot": false, "first_name": "U"},
        "chat": {"id": user_id, "type": "private"},
    }})
}

/// A text message from `user_id` in the supergroup `chat_id`, with `entities`.
pub fn group_text(chat_id: i64, user_id: i64, text: &str, entities: Value) -> Value {
    json!({"message": {
        "message_id": 77, "date": 0, "text": text, "entities": entities,
        "from": {"id": user_id, "is_bot": false, "first_name": "U"},
        "chat": {"id": chat_id, "type": "supergroup", "title": "G"},
    }})
}
