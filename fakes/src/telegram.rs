//! A fake Telegram Bot API, written from the public wire format.
//!
//! `POST /bot<token>/<method>` with a JSON body. A wrong token gets Telegram's 401.
//! `getUpdates` honours `offset` (updates below it are confirmed and dropped for good) and
//! `limit` (1-100, default 100), and long-polls up to `timeout` seconds for new ones. Every
//! call is recorded with the time it arrived and, for `getUpdates`, the update ids it
//! delivered and when; failures can be queued per method (401, 409, 429 with
//! `retry_after`, ...). The control API (`/_fake/updates`, `/_fake/calls`) is described in
//! [`crate::control`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::control::{self, Body, PREFIX};
use crate::record::Recorder;

pub const BOT_ID: i64 = 4242;
pub const BOT_NAME: &str = "claw_bot";

/// The most updates one `getUpdates` returns (Telegram's limit).
const MAX_LIMIT: usize = 100;
/// The longest long poll the fake holds (Telegram allows up to 50 s; 30 keeps tests short).
const MAX_POLL: Duration = Duration::from_secs(30);

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    /// When the whole request had arrived.
    pub at: Instant,
    /// The HTTP status the fake answered.
    pub status: u16,
    /// When the fake's handler gave its answer to hyper (None while a long poll waits).
    pub answered: Option<Instant>,
    /// The `update_id`s a `getUpdates` answer carried.
    pub delivered: Vec<i64>,
}

#[derive(Default)]
struct State {
    updates: Vec<Value>,
    next_update_id: i64,
    next_message_id: i64,
    calls: Vec<Call>,
    failures: HashMap<String, VecDeque<(u16, Value)>>,
    /// `getUpdates` calls waiting for an update right now.
    waiting: usize,
    /// Per chat, the indexes in `calls` of the `sendMessage` calls answered with 200: what a
    /// waiting test or bench polls and reads, without cloning every call under the lock the
    /// server needs.
    sent_index: HashMap<i64, Vec<usize>>,
    /// Per `update_id`, the index in `calls` of the `getUpdates` that delivered it.
    delivered_by: HashMap<i64, usize>,
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    token: String,
    state: Arc<Mutex<State>>,
    new_update: Arc<Notify>,
    recorder: Option<Recorder>,
    started: Instant,
}

impl Fake {
    /// Starts the fake for the bot token `token` on an ephemeral loopback port.
    pub async fn start(token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, token, None)
    }

    /// Serves the fake for `token` on `listener`, appending each call to `recorder` if
    /// given. The server runs until the runtime ends.
    pub fn serve(listener: TcpListener, token: &str, recorder: Option<Recorder>) -> Self {
        let fake = Fake {
            addr: listener.local_addr().expect("a bound listener"),
            token: token.to_string(),
            state: Arc::new(Mutex::new(State {
                next_update_id: 100,
                next_message_id: 1000,
                ..State::default()
            })),
            new_update: Arc::new(Notify::new()),
            recorder,
            started: Instant::now(),
        };
        let server = fake.clone();
        control::spawn_server(listener, Arc::default(), move |req| {
            let server = server.clone();
            async move { server.serve_request(req).await }
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

    /// Every call so far, oldest first.
    pub fn all_calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
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

    /// How many messages were sent to `chat_id` (answered with 200), in constant time.
    pub fn sent_count(&self, chat_id: i64) -> usize {
        let state = self.state.lock().unwrap();
        state.sent_index.get(&chat_id).map_or(0, Vec::len)
    }

    /// The `k`th `sendMessage` to `chat_id` answered with 200 (from 0), found through an
    /// index: a bench reads each reply without copying every call.
    pub fn sent_call(&self, chat_id: i64, k: usize) -> Option<Call> {
        let state = self.state.lock().unwrap();
        let index = *state.sent_index.get(&chat_id)?.get(k)?;
        Some(state.calls[index].clone())
    }

    /// How many messages were sent (answered with 200) to any chat.
    pub fn sent_total(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .sent_index
            .values()
            .map(Vec::len)
            .sum()
    }

    /// The texts delivered to `chat_id` (answered with 200), in order, read through the index.
    pub fn sent_to(&self, chat_id: i64) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let sent = state
            .sent_index
            .get(&chat_id)
            .map_or(&[][..], Vec::as_slice);
        sent.iter()
            .map(|&i| {
                let text = state.calls[i].body["text"].as_str();
                text.unwrap_or_default().to_string()
            })
            .collect()
    }

    /// When the update `update_id` was first handed out by a `getUpdates` answer.
    pub fn delivered_at(&self, update_id: i64) -> Option<Instant> {
        let state = self.state.lock().unwrap();
        let index = *state.delivered_by.get(&update_id)?;
        state.calls[index].answered
    }

    /// How many `getUpdates` calls are waiting for an update right now.
    pub fn waiting_polls(&self) -> usize {
        self.state.lock().unwrap().waiting
    }

    /// Waits (at most 10 s) until `done` holds.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&Fake) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn serve_request(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        if path.starts_with(PREFIX) {
            return self.control(req, &path).await;
        }
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        let body: Value = body
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let Some((token, method)) = path
            .strip_prefix("/bot")
            .and_then(|rest| rest.split_once('/'))
        else {
            return control::json(
                404,
                &json!({"ok": false, "error_code": 404, "description": "Not Found"}),
            );
        };
        let method = method.to_string();
        let (index, failure) = {
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
                answered: None,
                delivered: Vec::new(),
            });
            (state.calls.len() - 1, failure)
        };
        let (status, answer, delivered) = match failure {
            Some((status, body)) => (status, body, Vec::new()),
            None => match self.answer(&method, &body).await {
                Some((result, delivered)) => {
                    (200, json!({"ok": true, "result": result}), delivered)
                }
                None => (
                    404,
                    json!({"ok": false, "error_code": 404, "description": "Not Found"}),
                    Vec::new(),
                ),
            },
        };
        let call = {
            let mut state = self.state.lock().unwrap();
            let call = &mut state.calls[index];
            call.status = status;
            call.answered = Some(Instant::now());
            let chat = (method == "sendMessage" && status == 200)
                .then(|| call.body["chat_id"].as_i64())
                .flatten();
            for &update in &delivered {
                state.delivered_by.entry(update).or_insert(index);
            }
            state.calls[index].delivered = delivered;
            if let Some(chat) = chat {
                state.sent_index.entry(chat).or_default().push(index);
            }
            self.recorder.is_some().then(|| state.calls[index].clone())
        };
        if let (Some(recorder), Some(call)) = (&self.recorder, call) {
            recorder.write("telegram", self.call_json(&call));
        }
        control::json(status, &answer)
    }

    /// The `result` of a successful `method` and the update ids it carries; None for a
    /// method the fake does not know (Telegram answers those with 404).
    async fn answer(&self, method: &str, body: &Value) -> Option<(Value, Vec<i64>)> {
        let result = match method {
            "getMe" => json!({
                "id": BOT_ID, "is_bot": true, "first_name": "Claw", "username": BOT_NAME,
                "can_join_groups": true, "can_read_all_group_messages": false,
                "supports_inline_queries": false,
            }),
            "getUpdates" => {
                let updates = self.get_updates(body).await;
                let ids = updates
                    .iter()
                    .filter_map(|u| u["update_id"].as_i64())
                    .collect();
                return Some((Value::Array(updates), ids));
            }
            "sendMessage" => {
                let id = {
                    let mut state = self.state.lock().unwrap();
                    state.next_message_id += 1;
                    state.next_message_id
                };
                json!({
                    "message_id": id, "date": 0,
                    "chat": {"id": body["chat_id"], "type": "private"},
                    "text": body["text"],
                })
            }
            "sendChatAction" => json!(true),
            _ => return None,
        };
        Some((result, Vec::new()))
    }

    async fn get_updates(&self, body: &Value) -> Vec<Value> {
        let offset = body["offset"].as_i64();
        let limit = body["limit"]
            .as_u64()
            .map_or(MAX_LIMIT, |l| (l as usize).clamp(1, MAX_LIMIT));
        let timeout = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0)).min(MAX_POLL);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut waiting: Option<Waiting> = None;
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
                if !state.updates.is_empty() || tokio::time::Instant::now() >= deadline {
                    return state.updates.iter().take(limit).cloned().collect();
                }
            }
            waiting.get_or_insert_with(|| Waiting::new(&self.state));
            // On the deadline the loop runs once more and answers what is there (nothing).
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// `POST /_fake/updates`, `GET /_fake/calls`.
    async fn control(&self, req: Request<Incoming>, path: &str) -> Response<Body> {
        match (req.method().as_str(), path) {
            ("POST", "/_fake/updates") => {
                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                let updates = match body.map(|b| serde_json::from_slice::<Value>(&b)) {
                    Ok(Ok(Value::Array(updates))) => updates,
                    Ok(Ok(update @ Value::Object(_))) => vec![update],
                    _ => {
                        return control::json(
                            400,
                            &json!({"ok": false, "error": "the body must be an Update object \
                                     or an array of them (JSON), without update_id"}),
                        )
                    }
                };
                let ids: Vec<i64> = updates.into_iter().map(|u| self.push(u)).collect();
                control::json(200, &json!({"ok": true, "update_ids": ids}))
            }
            ("GET", "/_fake/calls") => {
                let method = control::query(&req, "method");
                let state = self.state.lock().unwrap();
                let calls: Vec<Value> = state
                    .calls
                    .iter()
                    .filter(|c| method.is_none_or(|m| c.method == m))
                    .map(|c| self.call_json(c))
                    .collect();
                control::json(200, &Value::Array(calls))
            }
            _ => control::not_found(path),
        }
    }

    /// One call as the control API and the record show it.
    fn call_json(&self, call: &Call) -> Value {
        let ms = |at: Instant| at.duration_since(self.started).as_secs_f64() * 1000.0;
        json!({
            "method": call.method,
            "body": call.body,
            "status": call.status,
            "ms": ms(call.at),
            "answeredMs": call.answered.map(ms),
            "delivered": call.delivered,
        })
    }
}

/// Counts one waiting `getUpdates` while it lives, also when the client hangs up.
struct Waiting<'a>(&'a Mutex<State>);

impl<'a> Waiting<'a> {
    fn new(state: &'a Mutex<State>) -> Self {
        state.lock().unwrap().waiting += 1;
        Self(state)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).waiting -= 1;
    }
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
