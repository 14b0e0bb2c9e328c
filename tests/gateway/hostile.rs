//! Hostile clients on loopback (issue 10, findings 2, 3 and 7): connections that hold slots,
//! a lockout turned against the owner or dodged by rotating addresses, log floods, and
//! requests that mean different things to different parsers.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::{parse, state_dir, Gateway, Response, TOKEN};

const BAD: &str = "bad-token-bad-token-bad-token-bad";

fn get_with(token: &str) -> String {
    format!(
        "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
}

/// A connection from the loopback address `src` (any of 127.0.0.0/8 can be bound).
fn connect_from(src: IpAddr, addr: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(src, 0)).unwrap();
        socket.connect(addr).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

fn exchange(mut stream: TcpStream, request: &str) -> Response {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    parse(&bytes)
}

/// Raises this process's open-files limit (the gateway inherits it) so that a thousand
/// connections fit on machines whose soft limit is 1024.
fn enough_files() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum.map(|max| max.min(8192)),
            maximum: limit.maximum,
        },
    );
}

// ---- Finding 2: connections held forever ----

#[test]
fn a_client_that_never_reads_its_answers_is_cut_off() {
    let gw = Gateway::start_with_env(
        state_dir(None),
        &[("CLAWFORT_TEST_WRITE_TIMEOUT_MS", "500")],
    );
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let batch = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(1000);
    let started = Instant::now();
    // Pipelined requests, answers never read: once the socket buffers are full the gateway's
    // write stalls, and half a second later it must drop the connection.
    let cut = (0..20_000).find_map(|_| stream.write_all(batch.as_bytes()).err());
    let cut = cut.expect("the gateway still reads after 20 million pipelined requests");
    assert!(
        !matches!(cut.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "the gateway kept the connection but stopped reading: {cut}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(gw.get("/healthz", None).status, 200);
}

#[test]
fn a_connection_is_closed_at_the_end_of_its_lifetime() {
    let gw = Gateway::start_with_env(state_dir(None), &[("CLAWFORT_TEST_LIFETIME_MS", "1000")]);
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    // A busy keep-alive connection never idles, so only the lifetime ends it.
    let closed = (0..50).any(|_| {
        if stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
        match stream.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    });
    assert!(closed, "still open after {:?}", started.elapsed());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn healthz_and_the_owner_are_served_past_a_thousand_hostile_connections() {
    enough_files();
    let gw = Gateway::start(None);
    let slowloris = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    let pipelined = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(50);
    let hostile: Vec<TcpStream> = (0..1030)
        .filter_map(|n| {
            let mut s = TcpStream::connect(gw.addr).ok()?;
            let _ = if n % 2 == 0 {
                s.write_all(slowloris)
            } else {
                s.write_all(pipelined.as_bytes())
            };
            Some(s)
        })
        .collect();
    assert_eq!(hostile.len(), 1030);
    let started = Instant::now();
    for _ in 0..20 {
        let r = gw.get("/healthz", None);
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(gw.get("/api/status", Some(TOKEN)).status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(hostile);
}

#[test]
fn a_table_of_busy_connections_answers_503_with_retry_after() {
    enough_files();
    let gw = Gateway::start(None);
    // Authenticated uploads whose body never comes stay inside the handler (up to the body
    // timeout): nothing to evict. Only a token holder can do this. hyper answers
    // `100 Continue` once the handler reads the body, so each is known to be inside.
    let upload = format!(
        "POST /api/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n"
    );
    let busy: Vec<TcpStream> = (0..clawfort::http::MAX_PER_CLIENT)
        .map(|_| {
            let mut s = TcpStream::connect(gw.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(upload.as_bytes()).unwrap();
            let mut head = [0u8; 25];
            s.read_exact(&mut head).unwrap();
            assert!(head.starts_with(b"HTTP/1.1 100 Continue"), "{head:?}");
            s
        })
        .collect();
    let refused = gw.get("/healthz", None);
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert!(refused.json()["error"].is_string());
    // The 503 is written before the line is logged: wait for it (bounded).
    assert!(!gw.wait_log("every connection slot is busy", 1).is_empty());
    drop(busy);
}

// ---- Finding 3: the lockout ----

#[test]
fn the_owners_token_is_served_during_a_lockout_it_did_not_cause() {
    let gw = Gateway::start(None);
    for _ in 0..10 {
        assert_eq!(gw.raw(&get_with(BAD)).status, 401);
    }
    let r = gw.raw(&get_with(BAD));
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    for _ in 0..3 {
        assert_eq!(gw.raw(&get_with(TOKEN)).status, 200);
        assert_eq!(gw.raw(&get_with(BAD)).status, 429);
    }
}

#[test]
fn rotating_loopback_source_addresses_does_not_dodge_the_lockout() {
    let gw = Gateway::start(None);
    let statuses: Vec<u16> = (0..30)
        .map(|n| {
            let src: IpAddr = format!("127.0.{}.{}", n / 200, 2 + n % 200)
                .parse()
                .unwrap();
            exchange(connect_from(src, gw.addr), &get_with(BAD)).status
        })
        .collect();
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
}

/// Sends `request` `n` times pipelined on one connection; returns the answers' status codes.
fn pipelined(gw: &Gateway, request: &str, n: usize) -> Vec<u16> {
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut all = request.repeat(n - 1);
    all.push_str(&request.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"));
    let sender = std::thread::spawn(move || writer.write_all(all.as_bytes()));
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    sender.join().unwrap().unwrap();
    String::from_utf8_lossy(&bytes)
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| {
            bytes[i + 9..i + 12]
                .iter()
                .fold(0, |a, d| a * 10 + u16::from(d - b'0'))
        })
        .collect()
}

#[test]
fn a_flood_of_refused_requests_logs_a_bounded_number_of_lines() {
    let gw = Gateway::start(None);
    let bad_host = "GET /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n";
    let statuses = pipelined(&gw, bad_host, 2000);
    assert_eq!(statuses.len(), 2000);
    assert!(statuses.iter().all(|s| *s == 403));
    let bad_token = format!(
        "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {BAD}\r\n\r\n"
    );
    let statuses = pipelined(&gw, &bad_token, 500);
    assert_eq!(statuses.len(), 500);
    // The summaries come once the 2 s window is over.
    let summary = gw.wait_log("further refused requests from", 1);
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert!(
        summary[0].contains("1990 further refused requests from loopback"),
        "{summary:?}"
    );
    let summary = gw.wait_log("further auth failures from", 1);
    assert!(
        summary[0].contains("490 further auth failures from loopback"),
        "{summary:?}"
    );
    assert_eq!(gw.log_lines("refused request from 127.0.0.1").len(), 10);
    assert_eq!(gw.log_lines("auth failure from 127.0.0.1").len(), 10);
}

#[test]
fn the_log_file_is_capped_while_running() {
    let gw = Gateway::start_with_env(state_dir(None), &[("CLAWFORT_TEST_LOG_MAX_BYTES", "1500")]);
    pipelined(
        &gw,
        "GET /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        50,
    );
    let bad_token = format!(
        "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {BAD}\r\n\r\n"
    );
    pipelined(&gw, &bad_token, 50);
    gw.wait_log("further auth failures from", 1);
    let log = gw.path().join("logs/gateway.log");
    let len = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let rotated = log.with_extension("log.1");
    assert!(len(&rotated) > 0, "never rotated");
    assert!(len(&rotated) <= 1500, "{}", len(&rotated));
    assert!(len(&log) <= 1500, "{}", len(&log));
}

// ---- Finding 7: ambiguous requests ----

/// Sends `request` on its own connection; asserts a JSON refusal with `status`.
fn refused(request: &str, status: u16) {
    let gw = Gateway::start(None);
    let r = gw.raw(request);
    assert_eq!(r.status, status, "{r:?}");
    assert!(r.json()["error"].is_string());
    // The gateway still serves the unambiguous form.
    assert_eq!(gw.get("/healthz", None).status, 200);
}

#[test]
fn two_host_headers_are_refused() {
    refused(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        400,
    );
}

#[test]
fn two_authorization_headers_are_refused() {
    refused(
        &format!(
            "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
             Authorization: Bearer {BAD}\r\nConnection: close\r\n\r\n"
        ),
        400,
    );
}

#[test]
fn an_absolute_target_naming_another_host_is_refused() {
    refused(
        "GET http://evil.example/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        400,
    );
    let gw = Gateway::start(None);
    let same = gw.raw(
        "GET http://127.0.0.1/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(same.status, 200, "{same:?}");
}

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    refused(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        400,
    );
    refused(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\
         Content-Length: 5\r\nConnection: close\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn a_bracketed_ipv6_host_followed_by_a_name_is_refused() {
    refused(
        "GET /healthz HTTP/1.1\r\nHost: [::1]evil.example\r\nConnection: close\r\n\r\n",
        403,
    );
    let gw = Gateway::start(None);
    let v6 = gw.raw("GET /healthz HTTP/1.1\r\nHost: [::1]:18789\r\nConnection: close\r\n\r\n");
    assert_eq!(v6.status, 200);
}
