//! The probe side of the fakes the harness runs in the namespace (`clawfort-fakes`): their
//! script (the secrets they expect, the model's answer) and their control API (push a
//! Telegram update, read what each server received), spoken over HTTP from a thread inside
//! the namespace.

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::Value;

use crate::exec;
use crate::testbed::{Fakes, Testbed};

/// Time limit of one control request.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// The fakes' script as the harness wrote it (see `xtask/src/e2e/fakes.rs`).
#[derive(Deserialize)]
pub struct Script {
    pub model: ModelScript,
    pub telegram: TelegramScript,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelScript {
    /// What the model answers.
    pub text: String,
    /// The model id it reports.
    pub model: String,
    /// The key it requires. Secret: never printed.
    pub api_key: String,
}

#[derive(Deserialize)]
pub struct TelegramScript {
    /// The bot token it serves. Secret: never printed.
    pub token: String,
}

impl Script {
    pub fn read(fakes: &Fakes) -> Result<Script> {
        let text = std::fs::read_to_string(&fakes.script)
            .with_context(|| format!("cannot read the fakes' script {}", fakes.script.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("unexpected fakes' script {}", fakes.script.display()))
    }
}

/// A client of both fakes' control API.
pub struct Control<'a> {
    netns: &'a str,
    fakes: &'a Fakes,
}

impl<'a> Control<'a> {
    pub fn new(testbed: &'a Testbed) -> Self {
        Control {
            netns: &testbed.netns,
            fakes: &testbed.fakes,
        }
    }

    /// Queues a Telegram update for the gateway's next `getUpdates`; returns its update id.
    pub fn push_update(&self, update: &Value) -> Result<i64> {
        let answer = self.request(self.fakes.telegram, "POST", "/_fake/updates", Some(update))?;
        answer["update_ids"][0]
            .as_i64()
            .with_context(|| format!("the Telegram fake did not queue the update: {answer}"))
    }

    /// Every Bot API call the Telegram fake received: `{method, body, status, ms}`.
    pub fn telegram_calls(&self) -> Result<Vec<Value>> {
        list(self.request(self.fakes.telegram, "GET", "/_fake/calls", None)?)
    }

    /// Makes the model's next answer call `calls` (`[{name, input}]`) instead of answering.
    pub fn queue_tool_calls(&self, calls: &Value) -> Result<()> {
        let body = serde_json::json!({ "calls": calls });
        self.request(self.fakes.model, "POST", "/_fake/tool-calls", Some(&body))?;
        Ok(())
    }

    /// Every request the model fake received: `{method, path, headers, body, ms}`.
    pub fn model_calls(&self) -> Result<Vec<Value>> {
        list(self.request(self.fakes.model, "GET", "/_fake/calls", None)?)
    }

    /// One HTTP/1.1 request to `server`, made from a thread inside the namespace.
    fn request(
        &self,
        server: SocketAddrV4,
        method: &'static str,
        path: &'static str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let body = body.map(Value::to_string).unwrap_or_default();
        exec::in_netns(self.netns, move || {
            exec::local_runtime().block_on(async move {
                tokio::time::timeout(REQUEST_LIMIT, send(server, method, path, body))
                    .await
                    .with_context(|| {
                        format!(
                            "{method} http://{server}{path}: no answer within {REQUEST_LIMIT:?}"
                        )
                    })?
            })
        })?
    }
}

async fn send(server: SocketAddrV4, method: &str, path: &str, body: String) -> Result<Value> {
    let what = format!("{method} http://{server}{path}");
    let stream = tokio::net::TcpStream::connect(server)
        .await
        .with_context(|| format!("{what}: cannot connect (are the fakes running?)"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("{what}: HTTP handshake failed"))?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, server.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("{what}: request failed"))?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{what}: {status}: {}", String::from_utf8_lossy(&bytes));
    }
    serde_json::from_slice(&bytes).with_context(|| format!("{what}: the answer is not JSON"))
}

fn list(value: Value) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        other => bail!("the control API answered {other} instead of a list"),
    }
}
