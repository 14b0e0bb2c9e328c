//! The one request a client sends before its tunnel: `CONNECT host:port HTTP/1.1`, parsed
//! with httparse from at most `max_head` bytes. Anything else is a [`Refusal`] with the HTTP
//! status it is answered with.

use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::allow::Target;

/// Header lines accepted in the request (a CONNECT needs one or two).
const MAX_HEADERS: usize = 32;

/// A well-formed CONNECT request.
#[derive(Debug)]
pub struct Connect {
    pub target: Target,
    /// Bytes the client sent after the request head without waiting for the `200` (a TLS
    /// ClientHello, say); they go to the destination first.
    pub early: Vec<u8>,
}

/// Why a client gets no tunnel: the status it is answered with, and the reason for the
/// answer's body and the log. `why` never holds a forwarding request's URL (the Telegram Bot
/// API carries its token in the path).
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub why: String,
}

impl Refusal {
    pub fn new(status: StatusCode, why: impl Into<String>) -> Self {
        Self {
            status,
            why: why.into(),
        }
    }

    /// The whole answer: status line, headers, and `why` as a one-line text body.
    pub fn response(&self) -> Vec<u8> {
        let body = format!("clawfort-egress: {}\n", self.why);
        let allow = if self.status == StatusCode::METHOD_NOT_ALLOWED {
            "Allow: CONNECT\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 {}\r\n{allow}Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.status,
            body.len()
        )
        .into_bytes()
    }
}

/// Reads the request head from `stream` (the caller bounds the time) and checks its form.
/// `None`: the client closed without sending a byte (nothing to answer).
pub async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_head: usize,
) -> Result<Option<Connect>, Refusal> {
    let mut buf = vec![0u8; max_head];
    let mut filled = 0;
    loop {
        let n = stream
            .read(&mut buf[filled..])
            .await
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("read error: {e}")))?;
        if n == 0 && filled == 0 {
            return Ok(None);
        }
        if n == 0 {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "the client closed the connection before a complete request",
            ));
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(head)) => {
                let target = check(&request)?;
                return Ok(Some(Connect {
                    target,
                    early: buf[head..filled].to_vec(),
                }));
            }
            Ok(httparse::Status::Partial) if filled == max_head => return Err(too_large(max_head)),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(too_large(max_head)),
            Err(e) => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("not an HTTP/1.1 request ({e})"),
                ))
            }
        }
    }
}

fn too_large(max_head: usize) -> Refusal {
    Refusal::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        format!(
            "the request head is larger than {max_head} bytes or has more than {MAX_HEADERS} \
             header lines"
        ),
    )
}

/// Only `CONNECT host:port` without a body; any other method (also a forwarding request
/// with an absolute URL) is 405, bad framing 400.
fn check(request: &httparse::Request<'_, '_>) -> Result<Target, Refusal> {
    let method = request.method.unwrap_or_default();
    let path = request.path.unwrap_or_default();
    if method != "CONNECT" {
        let form = if path.starts_with('/') || path == "*" {
            ""
        } else {
            " with an absolute URL (a forwarding request)"
        };
        // The method is a token (httparse checked it); the target is not logged.
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{method}{form} is not served; this proxy only opens tunnels: CONNECT host:port"
            ),
        ));
    }
    for header in request.headers.iter() {
        let name = header.name;
        let body = name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && header.value.trim_ascii() != b"0");
        if body {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("a CONNECT request has no body, but it sent {name}"),
            ));
        }
    }
    Target::of_authority(path).map_err(|why| Refusal::new(StatusCode::BAD_REQUEST, why))
}
