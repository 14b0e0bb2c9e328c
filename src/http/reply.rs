//! JSON responses. Every answer, errors included, is JSON with `Cache-Control: no-store`.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Response, StatusCode};
use serde::Serialize;

pub type Reply = Response<Full<Bytes>>;

pub fn bytes(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

pub fn json(status: StatusCode, value: &impl Serialize) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => bytes(status, body),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the response: {e}"),
        ),
    }
}

pub fn error(status: StatusCode, message: &str) -> Reply {
    #[derive(Serialize)]
    struct Error<'a> {
        error: &'a str,
    }
    json(status, &Error { error: message })
}

pub fn too_many(retry_after_secs: u64) -> Reply {
    let mut reply = error(
        StatusCode::TOO_MANY_REQUESTS,
        "too many failed authentications; wait before retrying",
    );
    reply
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    reply
}

/// 400 for a request whose framing is ambiguous; the connection is closed after it, since
/// what follows on it cannot be trusted to be where the next request starts.
pub fn bad_framing(message: &str) -> Reply {
    let mut reply = error(StatusCode::BAD_REQUEST, message);
    reply
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    reply
}

pub fn unauthorized(message: &str) -> Reply {
    let mut reply = error(StatusCode::UNAUTHORIZED, message);
    reply
        .headers_mut()
        .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    reply
}
