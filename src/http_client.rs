//! The gateway's one outgoing HTTP client, shared by the model providers and the Telegram
//! channel: hyper-util's pooled client over hyper-rustls, with a whole-exchange timeout and a
//! cap on the answer's size.
//!
//! Why this rather than reqwest: hyper 1 already serves the gateway's API, so the client adds
//! only the connection pool, rustls (with the `ring` provider, which cross-builds for aarch64
//! with a plain C cross compiler, unlike aws-lc-sys) and the system CA store
//! (rustls-native-certs); reqwest would add its own layers (redirects, proxies, cookies, url)
//! that neither caller may use anyway.
//!
//! On the appliance the gateway's unit may reach loopback only; `CLAWFORT_EGRESS_PROXY`
//! (read once, when a client is built) then names the egress proxy's Unix socket, and every
//! connection becomes a CONNECT tunnel through it (`tunnel`), TLS still end to end.
//!
//! No error of this module holds the request's URL: the Telegram Bot API carries the bot
//! token in the URL path, so a caller that wants the URL in a message adds it itself.

mod tunnel;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use tunnel::{proxy_from_env, TunnelConnector, TunnelError, PROXY_ENV};

/// Why the client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "no usable CA certificates in the system store for an https:// URL ({0}); install \
         the ca-certificates package"
    )]
    NoRoots(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("{0}")]
    Proxy(String),
}

/// Why one exchange failed. No variant holds the URL.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection (refused, DNS, TLS handshake): the request was never sent.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The egress proxy does not allow this destination: a configuration matter, not worth a
    /// retry. The text names the `host:port` and what to change.
    #[error("{0}")]
    Refused(String),
    /// The connection broke after the request may have been sent.
    #[error("the exchange was interrupted: {0}")]
    Interrupted(String),
    #[error("no complete answer within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// A whole answer, whatever its status.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A pooled HTTP/1.1 client for `http://` and `https://` URLs.
#[derive(Clone)]
pub struct HttpClient {
    client: Connections,
}

/// Direct TCP connections, or tunnels through the egress proxy.
#[derive(Clone)]
enum Connections {
    Direct(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
    Tunnel(Client<HttpsConnector<TunnelConnector>, Full<Bytes>>),
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

/// Which certificate authorities HTTPS trusts.
enum Roots {
    /// The system's CA store (must not be empty).
    System,
    /// None: only plain `http://` can be reached.
    None,
    Exactly(rustls::RootCertStore),
}

impl HttpClient {
    /// A client; with `tls`, HTTPS trusts the system's CA store (which must not be empty),
    /// without it only plain `http://` (a local server) can be reached. Connections go
    /// through the egress proxy when `CLAWFORT_EGRESS_PROXY` names one.
    pub fn new(tls: bool, connect_timeout: Duration) -> Result<Self, BuildError> {
        let proxy = tunnel::proxy_from_env().map_err(BuildError::Proxy)?;
        let roots = if tls { Roots::System } else { Roots::None };
        Self::build(roots, connect_timeout, proxy)
    }

    /// A client whose HTTPS trusts exactly `roots` (a private CA, or a test's self-signed
    /// server), tunnelling through the proxy socket `proxy` when given.
    pub fn with_roots(
        roots: rustls::RootCertStore,
        connect_timeout: Duration,
        proxy: Option<PathBuf>,
    ) -> Result<Self, BuildError> {
        Self::build(Roots::Exactly(roots), connect_timeout, proxy)
    }

    fn build(
        roots: Roots,
        connect_timeout: Duration,
        proxy: Option<PathBuf>,
    ) -> Result<Self, BuildError> {
        // The provider is named, not picked from rustls' crate features: should another
        // dependency ever enable aws-lc-rs too, the implicit choice would panic at run time.
        let crypto = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match roots {
            Roots::System => builder
                .with_provider_and_native_roots(crypto)
                .map_err(|e| BuildError::NoRoots(e.to_string()))?,
            Roots::None => {
                builder.with_tls_config(tls_config(crypto, rustls::RootCertStore::empty())?)
            }
            Roots::Exactly(roots) => builder.with_tls_config(tls_config(crypto, roots)?),
        };
        let builder = builder.https_or_http().enable_http1();
        let mut pool = Client::builder(TokioExecutor::new());
        pool.pool_idle_timeout(Duration::from_secs(60));
        let client = match proxy {
            Some(socket) => Connections::Tunnel(
                pool.build(builder.wrap_connector(TunnelConnector::new(socket, connect_timeout))),
            ),
            None => {
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_nodelay(true);
                http.set_connect_timeout(Some(connect_timeout));
                Connections::Direct(pool.build(builder.wrap_connector(http)))
            }
        };
        Ok(Self { client })
    }

    /// Sends `request` and reads the whole answer, within `timeout` for the entire exchange
    /// and at most `max_body` bytes of body.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response, SendError> {
        let exchange = async {
            let pending = match &self.client {
                Connections::Direct(client) => client.request(request),
                Connections::Tunnel(client) => client.request(request),
            };
            let response = pending.await.map_err(|e| {
                if let Some(refused @ TunnelError::Refused(_)) = find_cause::<TunnelError>(&e) {
                    SendError::Refused(refused.to_string())
                } else if e.is_connect() {
                    SendError::Connect(causes(&e))
                } else {
                    SendError::Interrupted(causes(&e))
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        SendError::TooLarge(max_body)
                    } else {
                        SendError::Interrupted(causes(&*e))
                    }
                })?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| SendError::Timeout(timeout))?
    }
}

fn tls_config(
    crypto: Arc<rustls::crypto::CryptoProvider>,
    roots: rustls::RootCertStore,
) -> Result<rustls::ClientConfig, BuildError> {
    Ok(rustls::ClientConfig::builder_with_provider(crypto)
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The first error of type `T` in the chain of `e`.
fn find_cause<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        next = error.source();
    }
    None
}

/// An error and its causes on one line, `outer: inner: innermost`.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
