//! The client side of the egress proxy (`clawfort egress`): a hyper connector that opens the
//! proxy's Unix socket, asks for `CONNECT host:port`, checks the `200`, and hands the stream
//! on. Wrapped by hyper-rustls like a TCP connector, so TLS runs end to end inside the
//! tunnel with the URL's host as the server name, and an `http://` URL speaks plain HTTP
//! inside it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::egress::Target;

/// The variable naming the proxy: `unix:/run/clawfort-egress/egress.sock`.
pub const PROXY_ENV: &str = "CLAWFORT_EGRESS_PROXY";

/// Longest answer head accepted from the proxy, and longest error text read after it.
const MAX_ANSWER_HEAD: usize = 4096;
const MAX_ERROR_TEXT: usize = 1024;

/// The proxy's socket from `CLAWFORT_EGRESS_PROXY`; `None` when unset or empty. Anything but
/// `unix:` and an absolute path is an error, not a silent direct connection.
pub fn proxy_from_env() -> Result<Option<PathBuf>, String> {
    let Some(value) = std::env::var_os(PROXY_ENV).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    match text.strip_prefix("unix:").map(Path::new) {
        Some(path) if path.is_absolute() => Ok(Some(path.to_path_buf())),
        _ => Err(format!(
            "{PROXY_ENV} must be unix: and the absolute path of the egress proxy's socket \
             (unix:/run/clawfort-egress/egress.sock), not {text:?}"
        )),
    }
}

/// Why no tunnel was opened. Names the destination as `host:port`, never the URL (the
/// Telegram Bot API carries the token in its path).
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("no tunnel for this URL: {0}")]
    BadUrl(String),
    #[error("cannot reach the egress proxy at {}: {source}", .socket.display())]
    Socket {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the egress proxy refused {0}: it is not in the proxy's allow list, which root writes \
         from the config (models.providers.<id>.baseUrl, channels.telegram.apiRoot): run \
         `sudo clawfort egress sync`"
    )]
    Refused(String),
    #[error("the egress proxy could not open a tunnel to {target}: {status} {text}")]
    Failed {
        target: String,
        status: u16,
        text: String,
    },
    #[error("the egress proxy did not answer within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("the egress proxy's answer is not HTTP/1.1 ({0})")]
    BadAnswer(String),
}

/// Opens a tunnel per new connection; hyper's pool keeps them like TCP connections.
#[derive(Debug, Clone)]
pub struct TunnelConnector {
    socket: Arc<PathBuf>,
    timeout: Duration,
}

impl TunnelConnector {
    /// Tunnels through the proxy listening at `socket`; `timeout` bounds reaching the
    /// socket and the proxy's answer together.
    pub fn new(socket: PathBuf, timeout: Duration) -> Self {
        Self {
            socket: Arc::new(socket),
            timeout,
        }
    }
}

impl tower_service::Service<Uri> for TunnelConnector {
    type Response = TokioIo<UnixStream>;
    type Error = TunnelError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, TunnelError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), TunnelError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let socket = self.socket.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let target = Target::of_uri(&uri).map_err(TunnelError::BadUrl)?;
            tokio::time::timeout(timeout, open(&socket, &target))
                .await
                .map_err(|_| TunnelError::Timeout(timeout))?
                .map(TokioIo::new)
        })
    }
}

async fn open(socket: &Path, target: &Target) -> Result<UnixStream, TunnelError> {
    let socket_error = |source| TunnelError::Socket {
        socket: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).await.map_err(socket_error)?;
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(socket_error)?;
    let head = read_head(&mut stream).await?;
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut answer = httparse::Response::new(&mut headers);
    answer
        .parse(&head)
        .map_err(|e| TunnelError::BadAnswer(e.to_string()))?;
    let status = answer.code.unwrap_or(0);
    match status {
        200 => Ok(stream),
        403 => Err(TunnelError::Refused(target.to_string())),
        _ => {
            let length = answer
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0usize)
                .min(MAX_ERROR_TEXT);
            let mut text = vec![0u8; length];
            let text = match stream.read_exact(&mut text).await {
                Ok(_) => String::from_utf8_lossy(&text).trim().to_owned(),
                Err(_) => String::new(),
            };
            Err(TunnelError::Failed {
                target: target.to_string(),
                status,
                text,
            })
        }
    }
}

/// Reads the answer's head one byte at a time: after the `200` the stream belongs to the
/// tunnel, so not one byte past the blank line may be consumed here. (It is a few dozen
/// bytes, once per connection.)
async fn read_head(stream: &mut UnixStream) -> Result<Vec<u8>, TunnelError> {
    let mut head = Vec::with_capacity(64);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() == MAX_ANSWER_HEAD {
            return Err(TunnelError::BadAnswer(format!(
                "its head is longer than {MAX_ANSWER_HEAD} bytes"
            )));
        }
        let byte = stream
            .read_u8()
            .await
            .map_err(|e| TunnelError::BadAnswer(format!("closed before a complete answer: {e}")))?;
        head.push(byte);
    }
    Ok(head)
}
