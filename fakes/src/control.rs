//! The control API both fakes answer next to the real one, under [`PREFIX`], and the HTTP
//! plumbing they share.
//!
//! On the Telegram fake:
//! - `POST /_fake/updates` with one Bot API `Update` object, or an array of them, without
//!   `update_id` (the fake numbers them): queues them for `getUpdates`; answers
//!   `{"ok": true, "update_ids": [...]}`.
//! - `GET /_fake/calls[?method=sendMessage]`: every Bot API call so far, oldest first:
//!   `[{"method", "body", "status", "ms"}]`, `ms` counted from the fake's start.
//!
//! On the model fake:
//! - `GET /_fake/calls`: every request so far, oldest first:
//!   `[{"method", "path", "headers", "body", "ms"}]`, `body` parsed when it is JSON.
//!
//! Neither real API has a path starting with `/_fake/`, so a client under test that calls
//! one is visibly wrong (the answer is a 404 for any other path there).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The path prefix of the control API.
pub const PREFIX: &str = "/_fake/";

pub(crate) type Body = BoxBody<Bytes, io::Error>;

/// Accepts connections on `listener` until the task is aborted, serving each with
/// `handler` over HTTP/1.1. `open` counts the connections being served.
pub(crate) fn spawn_server<F, Fut>(
    listener: TcpListener,
    open: Arc<AtomicUsize>,
    handler: F,
) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let open = Arc::clone(&open);
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let response = handler(req);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    })
}

/// A complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// `status` with a JSON body.
pub(crate) fn json(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(body.to_string()))
        .expect("a valid status and header")
}

/// The value of `name` in the query string of `req`, if any (no percent-decoding: the
/// control API's values are method names and numbers).
pub(crate) fn query<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// The control API's answer to a path under [`PREFIX`] it does not know.
pub(crate) fn not_found(path: &str) -> Response<Body> {
    json(
        404,
        &serde_json::json!({"ok": false, "error": format!("no control endpoint {path}")}),
    )
}

/// A body parsed as JSON when it is, else kept as (lossy) text.
pub(crate) fn body_value(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}
