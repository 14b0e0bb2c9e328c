//! The CLI's client of the gateway running on this machine (`clawfort status`, `stop-all`, and
//! `clawfort setup` waiting for `/healthz` after a restart).
//!
//! Where the gateway listens and its token come from the same config the gateway reads
//! (`gateway.bind`, `gateway.port`, `OPENCLAW_GATEWAY_TOKEN`). Each request is one fresh
//! connection through hyper's HTTP/1.1 client connection, not the shared outgoing
//! `http_client`: the gateway is on loopback and must never be reached through the egress
//! proxy that client may be configured with.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::config::{Bind, Config, TOKEN_ENV};

/// Limit of one exchange with the gateway.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The gateway's answers are small JSON objects.
const MAX_ANSWER: usize = 1 << 20;

/// Why a request to the gateway failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "no gateway token is configured: set {TOKEN_ENV} in the state directory's .env (or \
         gateway.auth.token), the one the running gateway uses"
    )]
    NoToken,
    #[error("the gateway does not answer on {addr}: {detail} (is `clawfort gateway` running?)")]
    Unreachable { addr: SocketAddr, detail: String },
    #[error("the gateway on {addr} did not answer within {} s", TIMEOUT.as_secs())]
    Timeout { addr: SocketAddr },
}

/// The gateway an installation's config describes.
#[derive(Clone)]
pub struct GatewayClient {
    addr: SocketAddr,
    token: Option<String>,
}

impl std::fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl GatewayClient {
    pub fn new(config: &Config) -> Self {
        let ip = match config.gateway.bind {
            // A gateway on every interface is reachable on loopback too.
            Bind::Lan => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Bind::Custom(IpAddr::V4(ip)) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Bind::Custom(IpAddr::V6(ip)) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            other => other.ip(),
        };
        Self {
            addr: SocketAddr::new(ip, config.gateway.port),
            token: config.gateway.token.as_ref().map(|t| t.value.clone()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One request; with `auth` it carries the bearer token. Returns the status and body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        auth: bool,
    ) -> Result<(StatusCode, Bytes), GatewayError> {
        let addr = self.addr;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, addr.to_string());
        if auth {
            let token = self.token.as_ref().ok_or(GatewayError::NoToken)?;
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request =
            request
                .body(Empty::<Bytes>::new())
                .map_err(|e| GatewayError::Unreachable {
                    addr,
                    detail: format!("cannot build the request: {e}"),
                })?;
        let unreachable = |detail: String| GatewayError::Unreachable { addr, detail };
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
            let connection = tokio::spawn(connection);
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            connection.abort();
            Ok((status, body))
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| GatewayError::Timeout { addr })?
    }

    /// Polls `GET /healthz` until it answers 200, for at most `within`.
    pub async fn wait_healthy(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let attempt =
                tokio::time::timeout_at(deadline, self.request(Method::GET, "/healthz", false));
            if let Ok(Ok((StatusCode::OK, _))) = attempt.await {
                return true;
            }
            if tokio::time::Instant::now() + Duration::from_millis(250) >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The `error` text of a gateway's JSON error answer, else the body as text.
pub fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}
