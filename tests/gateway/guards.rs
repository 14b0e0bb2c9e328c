//! Authentication, rate limiting, Host/Origin guards, bad input, fail-closed start.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{cli, state_dir, Gateway, TOKEN};

#[test]
fn healthz_is_open_and_says_nothing_else() {
    let gw = Gateway::start(None);
    let r = gw.get("/healthz", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, r#"{"ok":true}"#);
}

#[test]
fn status_needs_the_bearer_token() {
    let gw = Gateway::start(Some(
        r#"{ channels: { telegram: { dmPolicy: "allowlist" } }, agents: { defaults: { sandbox: { mode: "all" } } } }"#,
    ));
    assert_eq!(gw.get("/api/status", None).status, 401);
    assert_eq!(
        gw.get("/api/status", Some("wrong-token-wrong-token-123"))
            .status,
        401
    );
    // Never from the query string.
    assert_eq!(
        gw.get(&format!("/api/status?token={TOKEN}"), None).status,
        401
    );
    let basic = gw.raw(&format!(
        "GET /api/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {TOKEN}\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(basic.status, 401);
    let r = gw.get("/api/status", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    let s = r.json();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["uptimeSeconds"].is_u64());
    assert_eq!(s["bind"], gw.addr.to_string());
    assert_eq!(s["channels"]["telegram"], "allowlist");
    assert_eq!(s["defaultDmPolicy"], "pairing");
    assert_eq!(s["sandbox"]["mode"], "all");
    assert_eq!(s["pairing"]["pending"], 0);
    assert_eq!(s["pairing"]["approved"], 0);
    // Unknown API paths are only revealed after authentication.
    assert_eq!(gw.get("/api/nope", None).status, 401);
    assert_eq!(gw.get("/api/nope", Some(TOKEN)).status, 404);
}

/// The address in `auth failure from <ip>` is the socket's peer, whatever a client writes in
/// forwarding headers: on the appliance (loopback bind) it is always loopback, which is why it
/// ships no fail2ban jail for the gateway (see overlays/etc/fail2ban/jail.d/clawfort.local.tera).
#[test]
fn auth_failures_name_the_peer_not_a_forwarded_address() {
    let gw = Gateway::start(None);
    let response = gw.raw(
        "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer wrong\r\n\
         X-Forwarded-For: 203.0.113.7\r\nX-Real-IP: 203.0.113.7\r\n\
         Forwarded: for=203.0.113.7\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(response.status, 401);
    let lines = gw.wait_log("auth failure from 127.0.0.1", 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        gw.log_lines("203.0.113.7").is_empty(),
        "{:?}",
        gw.log_lines("auth failure")
    );
}

#[test]
fn every_auth_failure_logs_one_line() {
    let gw = Gateway::start(None);
    for token in [None, Some("bad-bad-bad-bad-bad-bad-bad"), Some("x")] {
        assert_eq!(gw.get("/api/status", token).status, 401);
    }
    assert_eq!(gw.get("/api/status", Some(TOKEN)).status, 200);
    let lines = gw.wait_log("auth failure from 127.0.0.1", 3);
    assert_eq!(lines.len(), 3, "{lines:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(gw.log_lines("auth failure from").len(), 3);
}

#[test]
fn repeated_failures_lock_the_client_out() {
    let gw = Gateway::start(Some(
        "{ gateway: { auth: { rateLimit: { maxAttempts: 3, windowSeconds: 60, lockoutSeconds: 120 } } } }",
    ));
    for _ in 0..3 {
        assert_eq!(
            gw.get("/api/status", Some("nope-nope-nope-nope-nope-nope"))
                .status,
            401
        );
    }
    let r = gw.get("/api/status", Some("nope-nope-nope-nope-nope-nope"));
    assert_eq!(r.status, 429);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((119..=120).contains(&wait), "{wait}");
    assert!(r.json()["error"].is_string());
    // On loopback the owner shares the address with whoever caused the lockout, so the right
    // token still gets in (hostile.rs has the remote-address side).
    assert_eq!(gw.get("/api/status", Some(TOKEN)).status, 200);
    // Health checks stay available.
    assert_eq!(gw.get("/healthz", None).status, 200);
    assert_eq!(gw.wait_log("auth lockout for 127.0.0.1", 1).len(), 1);
    // The three 401s and the wrong token answered 429.
    assert_eq!(gw.log_lines("auth failure from").len(), 4);
}

#[test]
fn foreign_host_and_origin_are_refused() {
    let gw = Gateway::start(Some(
        r#"{ gateway: { allowedOrigins: ["https://ui.example"], allowedHosts: ["gw.lan"] } }"#,
    ));
    let req = |host: &str, extra: &str| {
        gw.raw(&format!(
            "GET /api/status HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n{extra}Connection: close\r\n\r\n"
        ))
    };
    assert_eq!(req("evil.example", "").status, 403);
    assert_eq!(req("evil.example:18789", "").status, 403);
    assert_eq!(
        req(&format!("localhost:{}", gw.addr.port()), "").status,
        200
    );
    assert_eq!(req("gw.lan", "").status, 200);
    assert_eq!(
        req("localhost", "Origin: https://evil.example\r\n").status,
        403
    );
    assert_eq!(req("localhost", "Origin: null\r\n").status, 403);
    assert_eq!(
        req("localhost", "Origin: https://ui.example\r\n").status,
        200
    );
    let no_host = gw.raw("GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(no_host.status, 403);
}

#[test]
fn bad_input_gets_json_errors() {
    let gw = Gateway::start(None);
    let big = "x".repeat(70 * 1024);
    let r = gw.post("/api/messages", &big);
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].is_string());
    // Chunked bodies are refused outright (no route needs one, and hyper silently drops a
    // Content-Length sent alongside): see hostile.rs for the smuggling cases.
    let chunked = format!(
        "POST /api/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    assert_eq!(gw.raw(&chunked).status, 400);
    for body in [
        "{",
        "[]",
        r#"{"channel":"tg"}"#,
        r#"{"channel":"../x","peer":"a","text":""}"#,
        r#"{"channel":"tg","peer":"a","text":"","extra":1}"#,
    ] {
        let r = gw.post("/api/messages", body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.json()["error"].is_string());
    }
    // The gateway is still fine.
    assert_eq!(gw.get("/api/status", Some(TOKEN)).status, 200);
}

#[test]
fn slow_clients_time_out() {
    let gw = Gateway::start(None);
    let started = Instant::now();
    // Body promised, never sent: 408 after the body timeout.
    let body_thread = {
        let addr = gw.addr;
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(
                format!("POST /api/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{").as_bytes(),
            )
            .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            crate::support::parse(&buf).status
        })
    };
    // Headers never finished: the connection is closed.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: loc").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(body_thread.join().unwrap(), 408);
}

#[test]
fn refuses_to_start_insecurely() {
    let cases = [
        (r#"{ gateway: { bind: "lan" } }"#, false, "gateway.bind"),
        (
            r#"{ gateway: { auth: { token: "too-short" } } }"#,
            true,
            "gateway.auth.token",
        ),
        (
            r#"{ gateway: { prot: 1 } }"#,
            true,
            "did you mean `gateway.port`",
        ),
        (
            r#"{ providers: { anthropic: { apiKey: "${ANTHROPIC_API_KEY_MISSING}" } } }"#,
            true,
            "`models.providers.<id>`",
        ),
        (
            r#"{ channels: { tg: { dmPolicy: "opne" } } }"#,
            true,
            "channels.tg.dmPolicy",
        ),
        ("{ not json5", true, "JSON5"),
    ];
    for (config, with_token, expected) in cases {
        let dir = state_dir(Some(config));
        if !with_token {
            std::fs::remove_file(dir.path().join(".env")).unwrap();
        }
        let out = cli(dir.path(), &["gateway", "--port", "0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}: {stderr}");
        assert!(stderr.contains(expected), "{config}: {stderr}");
    }
}

#[test]
fn starts_with_secure_defaults_without_a_config_file() {
    let gw = Gateway::start(None);
    assert!(gw.addr.ip().is_loopback());
    let s = gw.get("/api/status", Some(TOKEN)).json();
    assert_eq!(s["bindMode"], "loopback");
    assert_eq!(s["pairing"]["autoApprove"], false);
    assert_eq!(gw.wait_log("no config file", 1).len(), 1);
}

#[test]
fn without_any_token_the_api_stays_closed() {
    let dir = state_dir(None);
    std::fs::remove_file(dir.path().join(".env")).unwrap();
    let gw = Gateway::start_in(dir);
    assert_eq!(gw.get("/healthz", None).status, 200);
    assert_eq!(gw.get("/api/status", None).status, 401);
    assert_eq!(gw.get("/api/status", Some("")).status, 401);
}
