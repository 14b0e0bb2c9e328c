//! Request guards that run before authentication: message framing, then the `Host` and
//! `Origin` checks.
//!
//! Framing: hyper accepts repeated headers (a `HeaderMap` keeps them all; `get` returns the
//! first), absolute-form targets whatever their authority, and a request with both
//! `Transfer-Encoding` and `Content-Length` (it drops the latter and reads chunked). Any of
//! these lets a proxy or a log in front of the gateway see a different request than the
//! gateway does, so `framing_error` refuses them with 400.
//!
//! DNS rebinding: a web page on `evil.example` can make its name resolve to 127.0.0.1 and
//! then talk to the gateway from the victim's browser. The browser still sends
//! `Host: evil.example`, so only loopback names (and names the owner allow-lists in
//! `gateway.allowedHosts`) are served. And no web page should drive the gateway at all:
//! browsers mark cross-site requests with `Origin`, so any request carrying an `Origin` not
//! in `gateway.allowedOrigins` is refused. Non-browser clients (curl, the CLI) send no
//! `Origin`.

use std::net::{IpAddr, Ipv6Addr};

use hyper::header::{HeaderValue, AUTHORIZATION, HOST, TRANSFER_ENCODING};
use hyper::Request;

/// Why a request's framing is refused, if it is.
pub fn framing_error<B>(req: &Request<B>) -> Option<&'static str> {
    let headers = req.headers();
    if headers.get_all(HOST).iter().nth(1).is_some() {
        return Some("more than one Host header");
    }
    if headers.get_all(AUTHORIZATION).iter().nth(1).is_some() {
        return Some("more than one Authorization header");
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        // hyper has already dropped a Content-Length sent alongside, so refuse every
        // Transfer-Encoding: no route needs a chunked body.
        return Some("Transfer-Encoding is not accepted; send the body with Content-Length");
    }
    if let Some(authority) = req.uri().authority() {
        let host = headers.get(HOST).map(HeaderValue::as_bytes);
        if !host.is_some_and(|h| h.eq_ignore_ascii_case(authority.as_str().as_bytes())) {
            return Some("the request target's authority differs from the Host header");
        }
    }
    None
}

/// Whether `host` (the `Host` header) names this gateway.
pub fn host_allowed(host: Option<&HeaderValue>, allowed: &[String], bind: IpAddr) -> bool {
    let Some(name) = host.and_then(|h| h.to_str().ok()).and_then(host_name) else {
        return false;
    };
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    let ip_text = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(&name);
    if let Ok(ip) = ip_text.parse::<IpAddr>() {
        if ip.is_loopback() || (!bind.is_unspecified() && ip == bind) {
            return true;
        }
    }
    allowed.iter().any(|a| a.eq_ignore_ascii_case(&name))
}

/// The lower-cased name of a `Host` value that is exactly `name`, `name:port`, `[v6]` or
/// `[v6]:port` (name: letters, digits, `-`, `.`; port: a number up to 65535), else None.
fn host_name(host: &str) -> Option<String> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        };
        (&host[..v6.len() + 2], port)
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    let name_ok = name.starts_with('[')
        || (!name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    (port_ok && name_ok).then(|| name.to_ascii_lowercase())
}

/// Whether the request's `Origin` (if any) is allowed.
pub fn origin_allowed(origin: Option<&HeaderValue>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str, allowed: &[&str]) -> bool {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        host_allowed(
            Some(&HeaderValue::from_str(h).unwrap()),
            &allowed,
            "127.0.0.1".parse().unwrap(),
        )
    }

    #[test]
    fn hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:18789",
            "127.0.0.1:18789",
            "127.1.2.3",
            "[::1]:18789",
            "[::1]",
            "app.localhost",
        ] {
            assert!(host(ok, &[]), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:18789",
            "10.0.0.5",
            "localhost.evil.example",
            "[::1]evil.example",
            "[::1]:18789evil",
            "[::1]:",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "127.0.0.1:80:80",
            "127.0.0.1 evil.example",
            "",
            "[::1",
            "[evil.example]",
        ] {
            assert!(!host(bad, &[]), "{bad}");
        }
        assert!(host("gw.lan:18789", &["gw.lan"]));
        assert!(!host_allowed(None, &[], "127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://ui.example".to_string()];
        assert!(origin_allowed(None, &allowed));
        let o = |s| HeaderValue::from_static(s);
        assert!(origin_allowed(Some(&o("https://ui.example")), &allowed));
        assert!(!origin_allowed(Some(&o("https://evil.example")), &allowed));
        assert!(!origin_allowed(Some(&o("null")), &allowed));
        assert!(!origin_allowed(Some(&o("http://localhost:18789")), &[]));
    }
}
