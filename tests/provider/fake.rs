//! A scripted fake model server: hyper on an ephemeral loopback port, recording every
//! request it receives and answering as the test's script says.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clawfort::provider::{Api, ClientOptions, Provider, ProviderSpec, RetryPolicy};
use clawfort::secret::Secret;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

/// The key every test provider is configured with; it must never show up anywhere but in
/// the auth header the fake receives.
pub const KEY: &str = "sk-ant-api03-TESTKEY-0123456789abcdefghijklmnop";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

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
}

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

impl Fake {
    /// Serves `script(n, request)` for the n-th request (0-based).
    pub async fn start(script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let log = Arc::clone(&seen);
        let open = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&open);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, script) = (Arc::clone(&log), Arc::clone(&script));
                let counter = Arc::clone(&counter);
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, Arc::clone(&log), Arc::clone(&script))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    counter.fetch_sub(1, Ordering::SeqCst);
                });
            }
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

async fn handle(
    req: Request<Incoming>,
    log: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Script>,
) -> Result<Response<BoxBody<Bytes, io::Error>>, Infallible> {
    let path = req.uri().path().to_owned();
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
        path,
        headers,
        body,
    };
    let n = {
        let mut log = log.lock().unwrap();
        log.push(seen.clone());
        log.len() - 1
    };
    let reply = script(n, &seen);
    let mut response = Response::builder();
    let body = match reply {
        Reply::Json(status, extra, body) => {
            response = response
                .status(status)
                .header("content-type", "application/json");
            for (name, value) in extra {
                response = response.header(name, value);
            }
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed()
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            unreachable!("the test ends first")
        }
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
    };
    Ok(response.body(body).unwrap())
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

/// Asserts that the key is nowhere in `text`.
pub fn assert_no_key(what: &str, text: &str) {
    assert!(!text.contains(KEY), "{what} contains the API key: {text}");
    assert!(
        !text.contains("TESTKEY"),
        "{what} contains part of the API key: {text}"
    );
}
