//! The proxy against raw clients: what it tunnels, what it refuses and with which status,
//! and the bounds on handshakes, idle tunnels and connections.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{command, provider_config, read_head, read_to_close, run, status, Proxy};

/// A TCP server on 127.0.0.1 that echoes every byte upper-cased, and counts what it got.
struct Upstream {
    port: u16,
    received: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
}

impl Upstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let (counter, connections) = (received.clone(), accepted.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                connections.fetch_add(1, Ordering::SeqCst);
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        counter.fetch_add(n as u64, Ordering::SeqCst);
                        if stream.write_all(&buf[..n].to_ascii_uppercase()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            port,
            received,
            accepted,
        }
    }

    fn config(&self) -> String {
        provider_config(&format!("http://127.0.0.1:{}/v1", self.port))
    }
}

fn connect_request(target: &str) -> String {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")
}

/// Reads exactly `n` bytes from the tunnel.
fn read_n(stream: &mut UnixStream, n: usize) -> String {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

#[test]
fn an_allowed_connect_tunnels_bytes_both_ways_without_any_secret() {
    let upstream = Upstream::start();
    let target = format!("127.0.0.1:{}", upstream.port);
    // Provider key, bot token and gateway token are references to variables nobody set, and
    // there is no .env: the proxy reads only the destinations.
    let config = format!(
        r#"{{
          gateway: {{ auth: {{ token: "${{OPENCLAW_GATEWAY_TOKEN}}" }} }},
          models: {{ providers: {{ fake: {{ baseUrl: "http://{target}/v1", apiKey: "${{NO_KEY}}" }} }} }},
          channels: {{ telegram: {{ botToken: "${{NO_BOT_TOKEN}}" }} }},
        }}"#
    );
    let proxy = Proxy::start(&config);
    assert_eq!(
        proxy
            .log_lines(&format!("allowing {target}, api.telegram.org:443"))
            .len(),
        1,
        "{}",
        proxy.log()
    );

    let mut stream = proxy.connect();
    // Bytes sent with the request, before the 200 (a TLS ClientHello may come that early),
    // reach the destination first.
    let request = format!("{}early ", connect_request(&target));
    stream.write_all(request.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(read_n(&mut stream, 6), "EARLY ");
    stream.write_all(b"through the tunnel\n").unwrap();
    assert_eq!(read_n(&mut stream, 19), "THROUGH THE TUNNEL\n");
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        read_to_close(&mut stream),
        "",
        "the tunnel closes after both sides did"
    );
    assert_eq!(upstream.received.load(Ordering::SeqCst), 25);

    let opened = proxy.wait_log("opened", 1);
    assert!(
        opened[0].contains(&format!("tunnel 1 to {target}")),
        "{opened:?}"
    );
    let closed = proxy.wait_log("closed after", 1);
    assert!(
        closed[0].contains("25 bytes sent, 25 bytes received"),
        "{closed:?}"
    );
}

#[test]
fn destinations_outside_the_allow_list_get_403_and_no_connection() {
    let allowed = Upstream::start();
    let other = Upstream::start();
    let proxy = Proxy::start(&allowed.config());
    for target in [
        format!("127.0.0.1:{}", other.port),
        // The name as the config writes it, not another name for the same address.
        format!("localhost:{}", allowed.port),
        // The configured host on another port.
        "127.0.0.1:22".to_owned(),
        "example.com:443".to_owned(),
    ] {
        let answer = proxy.exchange(connect_request(&target).as_bytes());
        assert_eq!(status(&answer), 403, "{target}: {answer}");
        assert!(
            answer.contains(&format!("{target} is not in the allow list"))
                && answer.contains("restart the proxy"),
            "{answer}"
        );
    }
    assert_eq!(other.accepted.load(Ordering::SeqCst), 0);
    assert_eq!(allowed.accepted.load(Ordering::SeqCst), 0);
    assert_eq!(
        proxy.wait_log("refused (403)", 4).len(),
        4,
        "{}",
        proxy.log()
    );
}

#[test]
fn anything_but_a_well_formed_connect_is_refused_with_its_status() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream.config());
    let target = format!("127.0.0.1:{}", upstream.port);
    let cases: Vec<(String, u16, &str)> = vec![
        (
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            405,
            "Allow: CONNECT",
        ),
        (
            // A forwarding request, with a token in the path that must not reach the log.
            format!(
                "GET http://{target}/bot123:SECRETTOKEN/getMe HTTP/1.1\r\nHost: {target}\r\n\r\n"
            ),
            405,
            "absolute URL",
        ),
        (
            format!("POST http://{target}/v1 HTTP/1.1\r\n\r\n"),
            405,
            "only opens tunnels",
        ),
        (
            "CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n".into(),
            400,
            "has no port",
        ),
        (
            format!("CONNECT user:SECRETPASS@{target} HTTP/1.1\r\n\r\n"),
            400,
            "user info",
        ),
        (
            format!("CONNECT {target} HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
            400,
            "has no body",
        ),
        (
            format!("CONNECT {target} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400,
            "has no body",
        ),
        (
            format!("CONNECT http://{target}/bot1:SECRETTOKEN/ HTTP/1.1\r\n\r\n"),
            400,
            "not host:port",
        ),
        (
            "\x16\x03\x01\x02\x00\x01\r\n\r\n".into(),
            400,
            "not an HTTP/1.1 request",
        ),
    ];
    for (request, want, fragment) in &cases {
        let answer = proxy.exchange(request.as_bytes());
        assert_eq!(status(&answer), *want, "{request:?}: {answer}");
        assert!(answer.contains(fragment), "{request:?}: {answer}");
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 0);
    let log = proxy.log();
    assert_eq!(
        proxy.wait_log("egress: refused", cases.len()).len(),
        cases.len(),
        "{log}"
    );
    assert!(
        !log.contains("SECRETTOKEN") && !log.contains("SECRETPASS") && !log.contains("/bot"),
        "{log}"
    );
}

#[test]
fn an_oversized_request_head_is_431() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream.config());
    let target = format!("127.0.0.1:{}", upstream.port);
    let long_header = format!(
        "CONNECT {target} HTTP/1.1\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let many_headers = format!(
        "CONNECT {target} HTTP/1.1\r\n{}\r\n",
        (0..40).map(|i| format!("X-{i}: y\r\n")).collect::<String>()
    );
    let endless_line = format!("CONNECT {}", "a".repeat(20_000));
    for request in [long_header, many_headers, endless_line] {
        let answer = proxy.exchange(request.as_bytes());
        assert_eq!(status(&answer), 431, "{answer}");
        assert!(answer.contains("larger than 8192 bytes"), "{answer}");
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 0);
}

#[test]
fn a_slow_handshake_is_cut_at_the_deadline() {
    let upstream = Upstream::start();
    let proxy = Proxy::start_with_env(
        &upstream.config(),
        &[("CLAWFORT_TEST_EGRESS_HANDSHAKE_MS", "500")],
    );
    for start in ["", "CONNECT 127.0.0.1:"] {
        let mut stream = proxy.connect();
        let started = Instant::now();
        stream.write_all(start.as_bytes()).unwrap();
        let answer = read_to_close(&mut stream);
        let waited = started.elapsed();
        assert_eq!(status(&answer), 408, "{answer}");
        assert!(
            waited >= Duration::from_millis(450) && waited < Duration::from_secs(5),
            "closed after {waited:?}"
        );
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 0);
}

#[test]
fn an_idle_tunnel_is_closed_and_a_busy_one_is_not() {
    let upstream = Upstream::start();
    let proxy = Proxy::start_with_env(
        &upstream.config(),
        &[("CLAWFORT_TEST_EGRESS_IDLE_MS", "600")],
    );
    let mut stream = proxy.connect();
    let target = format!("127.0.0.1:{}", upstream.port);
    stream
        .write_all(connect_request(&target).as_bytes())
        .unwrap();
    assert_eq!(status(&read_head(&mut stream)), 200);
    // Busy for three times the idle limit: one byte each way every 150 ms.
    let busy = Instant::now();
    while busy.elapsed() < Duration::from_millis(1800) {
        stream.write_all(b"x").unwrap();
        assert_eq!(read_n(&mut stream, 1), "X");
        std::thread::sleep(Duration::from_millis(150));
    }
    // Then silent: cut once nothing moved for the limit.
    let silent = Instant::now();
    assert_eq!(read_to_close(&mut stream), "");
    let waited = silent.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "closed after {waited:?} of silence"
    );
    let closed = proxy.wait_log("idle after", 1);
    assert_eq!(closed.len(), 1, "{}", proxy.log());
}

#[test]
fn connections_beyond_the_limit_get_503_until_one_ends() {
    let upstream = Upstream::start();
    let proxy = Proxy::start_with_env(
        &upstream.config(),
        &[("CLAWFORT_TEST_EGRESS_MAX_CONNECTIONS", "2")],
    );
    let target = format!("127.0.0.1:{}", upstream.port);
    let first = proxy.connect();
    let _second = proxy.connect();
    // Give the proxy the time to take both (it accepts in order).
    std::thread::sleep(Duration::from_millis(300));
    let answer = proxy.exchange(connect_request(&target).as_bytes());
    assert_eq!(status(&answer), 503, "{answer}\n{}", proxy.log());
    assert!(
        answer.contains("2 connections are open already"),
        "{answer}"
    );

    // A client that leaves with half a request frees its slot.
    (&first).write_all(b"CONNECT ").unwrap();
    first.shutdown(Shutdown::Both).unwrap();
    drop(first);
    proxy.wait_log("closed the connection before a complete request", 1);
    let mut stream = proxy.connect();
    stream
        .write_all(connect_request(&target).as_bytes())
        .unwrap();
    assert_eq!(status(&read_head(&mut stream)), 200);
}

#[test]
fn an_unreachable_destination_is_502() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let proxy = Proxy::start(&provider_config(&format!("http://127.0.0.1:{port}")));
    let answer = proxy.exchange(connect_request(&format!("127.0.0.1:{port}")).as_bytes());
    assert_eq!(status(&answer), 502, "{answer}");
    assert!(
        answer.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{answer}"
    );
}

#[test]
fn the_listening_socket_comes_from_systemd() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("openclaw.json"), upstream.config()).unwrap();
    let socket = dir.path().join("activated.sock");
    // What systemd does for clawfort-egress.socket: the listening socket is inherited (not
    // close-on-exec) and named by LISTEN_FDS (LISTEN_FDS_FIRST_FD where it is not fd 3).
    let listener = UnixListener::bind(&socket).unwrap();
    rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::empty()).unwrap();
    let mut child = command(dir.path())
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDS_FIRST_FD", listener.as_raw_fd().to_string())
        .arg("egress")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(listener);
    let target = format!("127.0.0.1:{}", upstream.port);
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(connect_request(&target).as_bytes())
        .unwrap();
    let head = read_head(&mut stream);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status(&head), 200, "{head}");

    // Neither a socket from systemd nor --listen: a clear error.
    let out = run(&upstream.config(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("clawfort-egress.socket") && stderr.contains("--listen"),
        "{stderr}"
    );
}

#[test]
fn config_problems_stop_the_proxy_with_exit_2_naming_the_key() {
    let out = run(
        r#"{ models: { providers: { local: { baseUrl: "${EGRESS_TEST_UNSET_URL}" } } } }"#,
        &["--listen", "/nonexistent/never-bound.sock"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("models.providers.local.baseUrl") && stderr.contains("reads no .env"),
        "{stderr}"
    );

    let out = run(
        r#"{ channels: { telegram: { apiRoot: "telegram.example" } } }"#,
        &["--listen", "/nonexistent/never-bound.sock"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("channels.telegram.apiRoot"), "{stderr}");

    let out = run("{ models: ", &["--listen", "/nonexistent/never-bound.sock"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON5"));
}
