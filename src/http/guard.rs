//! Request guards that run before authentication: the `Host` and `Origin` checks.
//!
//! DNS rebinding: a web page on `evil.example` can make its name resolve to 127.0.0.1 and
//! then talk to the gateway from the victim's browser. The browser still sends
//! `Host: evil.example`, so only loopback names (and names the owner allow-lists in
//! `gateway.allowedHosts`) are served. And no web page should drive the gateway at all:
//! browsers mark cross-site requests with `Origin`, so any request carrying an `Origin` not
//! in `gateway.allowedOrigins` is refused. Non-browser clients (curl, the CLI) send no
//! `Origin`.

use std::net::IpAddr;

use hyper::header::HeaderValue;

/// Whether `host` (the `Host` header) names this gateway.
pub fn host_allowed(host: Option<&HeaderValue>, allowed: &[String], bind: IpAddr) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = strip_port(host).to_ascii_lowercase();
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

/// `host:port` -> `host`, `[v6]:port` -> `[v6]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
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
            "app.localhost",
        ] {
            assert!(host(ok, &[]), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:18789",
            "10.0.0.5",
            "localhost.evil.example",
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
