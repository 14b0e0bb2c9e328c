//! `web_fetch` against real HTTP servers on loopback.
//!
//! The tool refuses loopback by design, so the servers the tool may reach listen on
//! `127.0.0.2`, the one address these tests allow ([`AddressPolicy::allowing`]); a
//! "victim" server on `127.0.0.1` stands for the machine's own services and must never see
//! a request. The last test drives the real gateway, which allows nothing extra.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawfort::config::WebFetchConfig;
use clawfort::tools::web_fetch::AddressPolicy;
use clawfort::tools::{Call, Tool, ToolOutput, WebFetchTool};
use clawfort_fakes::model::ok;
use clawfort_fakes::telegram::private_text;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::files::{answer, start, tool_result, SENDER};

const ALLOWED: &str = "127.0.0.2";

/// What a test server answers to one request.
#[derive(Clone)]
enum Reply {
    /// These bytes, then close.
    Whole(Vec<u8>),
    /// This head, then `chunks` single bytes `every` apart (bounded), then close.
    Trickle { every: Duration, chunks: usize },
}

fn http(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    Reply::Whole(bytes)
}

/// An HTTP/1.1 server on `ip`, answering each request with `route(path)`, and recording
/// each request's path and `Host`.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(ip: &str, route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let route = Arc::new(route);
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (route, log) = (Arc::clone(&route), Arc::clone(&log));
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 16_384 {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let path = text.split(' ').nth(1).unwrap_or("").to_owned();
                    let host = text
                        .lines()
                        .find_map(|l| l.strip_prefix("host: ").or(l.strip_prefix("Host: ")))
                        .unwrap_or("")
                        .to_owned();
                    log.lock().unwrap().push((path.clone(), host));
                    match route(&path) {
                        Reply::Whole(bytes) => {
                            let _ = stream.write_all(&bytes).await;
                        }
                        Reply::Trickle { every, chunks } => {
                            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
                                        Content-Length: 1000000\r\n\r\n";
                            let _ = stream.write_all(head.as_bytes()).await;
                            for _ in 0..chunks {
                                tokio::time::sleep(every).await;
                                if stream.write_all(b"x").await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { addr, seen, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

fn config() -> WebFetchConfig {
    WebFetchConfig {
        timeout: Duration::from_secs(5),
        ..WebFetchConfig::default()
    }
}

fn tool(config: WebFetchConfig) -> WebFetchTool {
    let allowed: IpAddr = ALLOWED.parse().unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    WebFetchTool::with_policy(config, AddressPolicy::allowing(&[allowed]), tls, None)
}

fn call(cancel: CancellationToken) -> Call {
    Call {
        tainted: false,
        session_key: clawfort::sessions::group_key("telegram", "-100"),
        deadline: Instant::now() + Duration::from_secs(30),
        cancel,
    }
}

async fn fetch(tool: &WebFetchTool, input: Value) -> ToolOutput {
    tool.run(input, call(CancellationToken::new())).await
}

const PAGE: &str = "<!DOCTYPE html><html><head><title>T</title><script>steal()</script></head>\
    <body><h1>Release notes</h1><p>Version <b>2</b> fixes &amp; improves.</p></body></html>";

#[tokio::test]
async fn a_page_comes_back_as_text_with_the_host_of_the_url() {
    let server = Server::start(ALLOWED, |_| {
        http(
            "200 OK",
            &[("Content-Type", "text/html; charset=utf-8")],
            PAGE.as_bytes(),
        )
    })
    .await;
    let tool = tool(config());
    let out = fetch(
        &tool,
        json!({"url": server.url("/notes?v=2"), "extractMode": "text"}),
    )
    .await;
    assert!(!out.is_error, "{}", out.content);
    assert!(
        out.content.contains("Release notes")
            && out.content.contains("Version 2 fixes & improves."),
        "{}",
        out.content
    );
    assert!(
        !out.content.contains("<h1>") && !out.content.contains("steal()"),
        "{}",
        out.content
    );
    assert!(out.content.contains("Status: 200 OK"), "{}", out.content);
    assert_eq!(
        server.requests(),
        [("/notes?v=2".to_owned(), server.addr.to_string())]
    );
    let markdown = fetch(&tool, json!({"url": server.url("/")})).await;
    assert!(
        markdown.content.contains("# Release notes"),
        "{}",
        markdown.content
    );
}

#[tokio::test]
async fn json_passes_as_it_is_and_binary_is_refused_by_type() {
    let server = Server::start(ALLOWED, |path| match path {
        "/data" => http(
            "200 OK",
            &[("Content-Type", "application/json")],
            br#"{"ok": true}"#,
        ),
        _ => http("200 OK", &[("Content-Type", "image/png")], b"\x89PNG\r\n"),
    })
    .await;
    let tool = tool(config());
    let out = fetch(&tool, json!({"url": server.url("/data")})).await;
    assert!(
        !out.is_error && out.content.ends_with(r#"{"ok": true}"#),
        "{}",
        out.content
    );
    let out = fetch(&tool, json!({"url": server.url("/logo.png")})).await;
    assert!(
        out.is_error && out.content.contains("image/png"),
        "{}",
        out.content
    );
}

#[tokio::test]
async fn redirects_into_the_machines_own_network_are_refused() {
    // The victim: a service on this machine's loopback that must never be reached.
    let victim = Server::start("127.0.0.1", |_| http("200 OK", &[], b"the admin page")).await;
    let port = victim.addr.port();
    let targets = [
        format!("http://127.0.0.1:{port}/admin"),
        format!("http://localhost:{port}/admin"),
        format!("http://2130706433:{port}/admin"),
        format!("http://0x7f.1:{port}/admin"),
        format!("http://0177.0.0.1:{port}/admin"),
        format!("http://[::ffff:127.0.0.1]:{port}/admin"),
        format!("http://[::1]:{port}/admin"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/".to_owned(),
        "http://metadata.google.internal/computeMetadata/v1/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://192.168.1.1/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://[fd00::1]/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        "file:///etc/passwd".to_owned(),
    ];
    let to = targets.clone();
    let server = Server::start(ALLOWED, move |path| {
        let n: usize = path.trim_start_matches("/r/").parse().unwrap();
        http("302 Found", &[("Location", &to[n])], b"")
    })
    .await;
    let tool = tool(config());
    for (n, target) in targets.iter().enumerate() {
        let out = fetch(&tool, json!({"url": server.url(&format!("/r/{n}"))})).await;
        assert!(out.is_error, "{target}: {}", out.content);
        let why = if target.starts_with("file:") {
            "scheme file:"
        } else {
            "refused"
        };
        assert!(out.content.contains(why), "{target}: {}", out.content);
        // The first URL itself is refused the same way.
        let direct = fetch(&tool, json!({"url": target})).await;
        assert!(
            direct.is_error && direct.content.contains(why),
            "{target}: {}",
            direct.content
        );
    }
    assert_eq!(server.requests().len(), targets.len());
    assert!(victim.requests().is_empty(), "{:?}", victim.requests());
}

#[tokio::test]
async fn redirects_are_bounded_and_followed_within_the_bound() {
    let server = Server::start(ALLOWED, |path| match path {
        "/loop" => http("301 Moved", &[("Location", "/loop")], b""),
        "/start" => http("307 Temporary", &[("Location", "/end")], b""),
        _ => http("200 OK", &[("Content-Type", "text/plain")], b"arrived"),
    })
    .await;
    let tool = tool(WebFetchConfig {
        max_redirects: 3,
        ..config()
    });
    let out = fetch(&tool, json!({"url": server.url("/start")})).await;
    assert!(
        !out.is_error && out.content.ends_with("arrived"),
        "{}",
        out.content
    );
    assert!(
        out.content
            .contains(&format!("URL: {}", server.url("/end"))),
        "{}",
        out.content
    );
    let out = fetch(&tool, json!({"url": server.url("/loop")})).await;
    assert!(
        out.is_error && out.content.contains("maxRedirects (3)"),
        "{}",
        out.content
    );
    assert_eq!(
        server.requests().len(),
        2 + 4,
        "the first request and 3 redirects"
    );
}

#[tokio::test]
async fn bytes_and_characters_are_capped_with_a_note() {
    let big = "word ".repeat(20_000);
    let body = big.clone();
    let server = Server::start(ALLOWED, move |_| {
        http("200 OK", &[("Content-Type", "text/plain")], body.as_bytes())
    })
    .await;
    let tool = tool(WebFetchConfig {
        max_response_bytes: 40_000,
        max_chars: 50_000,
        max_chars_cap: 50_000,
        ..config()
    });
    let out = fetch(&tool, json!({"url": server.url("/")})).await;
    assert!(!out.is_error, "{}", out.content);
    assert!(
        out.content.contains("maxResponseBytes (40000 bytes)"),
        "{}",
        &out.content[..300]
    );
    let text = out.content.split_once("\n\n").unwrap().1;
    assert!(
        text.len() <= 40_000 && text.len() > 39_000,
        "{}",
        text.len()
    );

    let out = fetch(&tool, json!({"url": server.url("/"), "maxChars": 100})).await;
    let text = out.content.split_once("\n\n").unwrap().1;
    assert!(
        text.starts_with("word word") && text.contains("[truncated: 100 of 40000 characters"),
        "{text}"
    );
    let shown = text.split("\n\n[truncated").next().unwrap();
    assert!(shown.chars().count() <= 100, "{shown}");
}

#[tokio::test]
async fn a_trickling_server_times_out_and_a_stop_ends_the_fetch() {
    let server = Server::start(ALLOWED, |_| Reply::Trickle {
        every: Duration::from_millis(100),
        chunks: 300,
    })
    .await;
    let tool = tool(WebFetchConfig {
        timeout: Duration::from_secs(1),
        ..config()
    });
    let started = Instant::now();
    let out = fetch(&tool, json!({"url": server.url("/slow")})).await;
    let took = started.elapsed();
    assert!(
        out.is_error && out.content.contains("no complete answer within 1.0 s"),
        "{}",
        out.content
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );

    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
    });
    let started = Instant::now();
    let out = tool
        .run(json!({"url": server.url("/slow")}), call(cancel))
        .await;
    assert!(
        out.is_error && out.content.contains("cancelled"),
        "{}",
        out.content
    );
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn other_schemes_and_bad_input_are_refused_with_the_reason() {
    let tool = tool(config());
    for url in [
        "ftp://example.com/f",
        "gopher://example.com/",
        "data:text/plain,hi",
        "javascript:alert(1)",
    ] {
        let out = fetch(&tool, json!({"url": url})).await;
        assert!(
            out.is_error && out.content.contains("http:// and https:// URLs only"),
            "{url}: {}",
            out.content
        );
    }
    let out = fetch(&tool, json!({"url": "example.com/page"})).await;
    assert!(
        out.is_error && out.content.contains("not a URL"),
        "{}",
        out.content
    );
    let out = fetch(&tool, json!({"url": "http://user:pw@example.com/"})).await;
    assert!(
        out.is_error && out.content.contains("user name or password"),
        "{}",
        out.content
    );
    let out = fetch(
        &tool,
        json!({"url": "https://example.com", "extractMode": "html"}),
    )
    .await;
    assert!(
        out.is_error && out.content.contains("\"markdown\" or \"text\""),
        "{}",
        out.content
    );
    let out = fetch(&tool, json!({"link": "https://example.com"})).await;
    assert!(
        out.is_error && out.content.contains("invalid input for web_fetch"),
        "{}",
        out.content
    );
}

/// Through the real gateway: the model is offered `web_fetch`, asks for the machine's own
/// loopback service, and gets a refusal; the service sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_web_fetch_refuses_loopback() {
    let victim = Server::start("127.0.0.1", |_| http("200 OK", &[], b"the admin page")).await;
    let url = victim.url("/admin");
    let (model, telegram, _gw) = start(
        move |n, _| {
            ok(match n {
                0 => answer(
                    json!([{"type": "tool_use", "id": "call_0", "name": "web_fetch",
                            "input": {"url": url}}]),
                    "tool_use",
                ),
                _ => answer(json!([{"type": "text", "text": "done"}]), "end_turn"),
            })
        },
        "",
    )
    .await;
    telegram.push(private_text(SENDER, "fetch the admin page"));
    telegram
        .wait_until("the final answer", |t| !t.sent_to(SENDER).is_empty())
        .await;
    let seen = model.seen();
    let offered = seen[0].json()["tools"].to_string();
    assert!(offered.contains("\"web_fetch\""), "{offered}");
    let (error, content) = tool_result(&seen[1]);
    assert!(
        error && content.contains("is a loopback address"),
        "{content}"
    );
    assert!(victim.requests().is_empty(), "{:?}", victim.requests());
}

/// An HTTPS server on `127.0.0.2` whose self-signed certificate names `san`; returns its
/// port, its certificate and the task.
async fn tls_server(san: &str) -> (u16, rustls::pki_types::CertificateDer<'static>, Server) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![san.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((ALLOWED, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, log) = (acceptor.clone(), Arc::clone(&log));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = vec![0u8; 4096];
                let n = tls.read(&mut head).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&head[..n]).into_owned();
                log.lock().unwrap().push((
                    text.split(' ').nth(1).unwrap_or("").to_owned(),
                    String::new(),
                ));
                let body = "hello over TLS";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr.port(), cert.der().clone(), Server { addr, seen, task })
}

fn tls_tool(trusted: rustls::pki_types::CertificateDer<'static>) -> WebFetchTool {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let allowed: IpAddr = ALLOWED.parse().unwrap();
    WebFetchTool::with_policy(config(), AddressPolicy::allowing(&[allowed]), tls, None)
}

#[tokio::test]
async fn https_is_verified_against_the_urls_host() {
    let (port, cert, server) = tls_server(ALLOWED).await;
    let out = fetch(
        &tls_tool(cert),
        json!({"url": format!("https://{ALLOWED}:{port}/tls")}),
    )
    .await;
    assert!(
        !out.is_error && out.content.ends_with("hello over TLS"),
        "{}",
        out.content
    );
    assert_eq!(server.requests()[0].0, "/tls");

    // A certificate for another name is refused, even from an allowed address.
    let (port, cert, server) = tls_server("example.com").await;
    let out = fetch(
        &tls_tool(cert),
        json!({"url": format!("https://{ALLOWED}:{port}/")}),
    )
    .await;
    assert!(
        out.is_error && out.content.contains("TLS with 127.0.0.2 failed"),
        "{}",
        out.content
    );
    assert!(server.requests().is_empty());
}
