//! The gateway's side: `HttpClient` tunnelling through the real proxy (plain HTTP and TLS end
//! to end), its errors, and the whole gateway with `CLAWFORT_EGRESS_PROXY` answering a
//! Telegram message through the proxy, or failing clearly when the proxy refuses.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clawfort::http_client::{HttpClient, SendError, PROXY_ENV};
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::gateway_support::{append_env, state_dir, Gateway};
use crate::support::{allow_file, provider_config, Proxy, ALLOW_FILE};
use clawfort_fakes::model::{ok, Fake, KEY};
use clawfort_fakes::telegram::{private_text, Fake as Telegram};

const TIMEOUT: Duration = Duration::from_secs(10);

fn client(proxy: &Proxy) -> HttpClient {
    HttpClient::with_roots(
        rustls::RootCertStore::empty(),
        TIMEOUT,
        Some(proxy.socket()),
    )
    .unwrap()
}

fn post(url: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

/// Proxy start and stop are blocking (a child process): off the async workers.
fn start_proxy(config: &str) -> Proxy {
    tokio::task::block_in_place(|| Proxy::start(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_an_allowed_provider_through_the_tunnel() {
    let model = Fake::start(|n, _| ok(json!({ "answer": n }))).await;
    let proxy = start_proxy(&provider_config(&model.url("/v1")));
    let client = client(&proxy);
    for n in 0..2 {
        let response = client
            .send(
                post(&model.url("/v1/chat/completions"), r#"{"q":1}"#),
                TIMEOUT,
                1 << 20,
            )
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(
            serde_json::from_slice::<Value>(&response.body).unwrap(),
            json!({ "answer": n })
        );
    }
    let seen = model.seen();
    assert_eq!(seen.len(), 2);
    // Origin-form inside the tunnel, as to the server itself.
    assert_eq!(seen[0].path, "/v1/chat/completions");
    let target = format!("127.0.0.1:{}", model.addr.port());
    // Through tunnels only (hyper's pool usually keeps one for both requests).
    let opened = proxy.wait_log("opened", 1);
    assert!(
        !opened.is_empty() && opened.iter().all(|line| line.contains(&target)),
        "{opened:?}"
    );
}

/// A TLS server for `localhost` with a fresh self-signed certificate; records the server
/// name each client asked for.
struct TlsServer {
    port: u16,
    root: rustls::RootCertStore,
    names: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsServer {
    async fn start() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut root = rustls::RootCertStore::empty();
        root.add(cert.der().clone()).unwrap();
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let names = Arc::new(Mutex::new(Vec::new()));
        let seen = names.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let name = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                    seen.lock().unwrap().push(name);
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"hello over TLS"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            port,
            root,
            names,
            task,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_runs_end_to_end_inside_the_tunnel() {
    let server = TlsServer::start().await;
    let url = format!("https://localhost:{}/hello", server.port);
    let proxy = start_proxy(&provider_config(&format!(
        "https://localhost:{}",
        server.port
    )));
    let trusting =
        HttpClient::with_roots(server.root.clone(), TIMEOUT, Some(proxy.socket())).unwrap();
    let response = trusting.send(get(&url), TIMEOUT, 1 << 20).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(&response.body[..], b"hello over TLS");
    // The client spoke TLS to the server itself, naming it: the proxy only moved bytes.
    assert_eq!(*server.names.lock().unwrap(), ["localhost"]);

    // The proxy does not vouch for the server: a client that does not trust its
    // certificate refuses it, though the tunnel opened.
    let err = client(&proxy)
        .send(get(&url), TIMEOUT, 1 << 20)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SendError::Connect(text) if text.contains("certificate")),
        "{err}"
    );
    assert_eq!(proxy.wait_log("opened", 2).len(), 2, "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_destination_is_a_clear_error_without_the_url() {
    let model = Fake::start(|_, _| ok(json!({}))).await;
    let proxy = start_proxy(&provider_config("https://api.example.com"));
    let url = model.url("/bot123456:SECRETTOKEN/getMe");
    let err = client(&proxy)
        .send(get(&url), TIMEOUT, 1 << 20)
        .await
        .unwrap_err();
    let SendError::Refused(text) = &err else {
        panic!("not a refusal: {err:?}");
    };
    let target = format!("127.0.0.1:{}", model.addr.port());
    assert!(
        text.contains(&format!("the egress proxy refused {target}"))
            && text.contains("allow list")
            && text.contains("sudo clawfort egress sync"),
        "{text}"
    );
    assert!(
        !text.contains("SECRETTOKEN") && !text.contains("/bot"),
        "{text}"
    );
    assert!(model.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_proxy_is_a_connect_error_naming_the_socket() {
    let client = HttpClient::with_roots(
        rustls::RootCertStore::empty(),
        TIMEOUT,
        Some("/nonexistent/clawfort-egress.sock".into()),
    )
    .unwrap();
    let err = client
        .send(get("http://127.0.0.1:9/"), TIMEOUT, 1024)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SendError::Connect(text)
            if text.contains("cannot reach the egress proxy at /nonexistent/clawfort-egress.sock")),
        "{err}"
    );
}

const BOT_TOKEN: &str = "123456789:AAHtestTOKENtestTOKENtestTOKENtest12";
const OWNER: i64 = 4242;

fn answer(text: &str) -> Value {
    json!({
        "id": "msg", "type": "message", "role": "assistant", "model": "m1",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 5}
    })
}

fn agent_config(model_url: &str, telegram_root: &str) -> String {
    format!(
        r#"{{
          models: {{ providers: {{ fake: {{
            api: "anthropic-messages", baseUrl: "{model_url}", apiKey: "${{FAKE_API_KEY}}",
            models: [{{ id: "m1", contextWindow: 100000 }}],
          }} }} }},
          agents: {{ defaults: {{ model: "fake/m1" }} }},
          channels: {{ telegram: {{
            botToken: "${{TELEGRAM_BOT_TOKEN}}", apiRoot: "{telegram_root}",
            dmPolicy: "allowlist", allowFrom: ["{OWNER}"],
          }} }},
        }}"#
    )
}

/// The gateway with `config`, its secrets in `.env`, tunnelling through `proxy`.
fn start_gateway(config: &str, proxy: &Proxy) -> Gateway {
    let dir = state_dir(Some(config));
    append_env(
        dir.path(),
        &format!(
            "FAKE_API_KEY={KEY}
TELEGRAM_BOT_TOKEN={BOT_TOKEN}
"
        ),
    );
    let proxy_env = format!("unix:{}", proxy.socket().display());
    tokio::task::block_in_place(|| Gateway::start_with_env(dir, &[(PROXY_ENV, &proxy_env)]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_on_telegram_through_the_proxy() {
    let model = Fake::start(|_, _| ok(answer("Hello through the proxy."))).await;
    let telegram = Telegram::start(BOT_TOKEN).await;
    let config = agent_config(&model.url(""), &telegram.api_root());
    let model_target = format!("127.0.0.1:{}", model.addr.port());
    let telegram_target = telegram.api_root().trim_start_matches("http://").to_owned();
    // As on the appliance: root's allow file names both, and the proxy sees no secret.
    let proxy = tokio::task::block_in_place(|| {
        Proxy::start_with_allow_file(&[(
            ALLOW_FILE,
            &allow_file(&[&model_target, &telegram_target]),
        )])
    });
    let gw = start_gateway(&config, &proxy);

    telegram.push(private_text(OWNER, "hi"));
    telegram
        .wait_until("the model's answer", |t| !t.sent_to(OWNER).is_empty())
        .await;
    assert_eq!(telegram.sent_to(OWNER), ["Hello through the proxy."]);
    assert_eq!(model.seen().len(), 1);
    assert_eq!(model.seen()[0].header("x-api-key"), Some(KEY));

    // Both destinations were reached through tunnels, and the proxy saw no secret.
    for target in [model_target, telegram_target] {
        let opened = proxy.log_lines(&format!("to {target} "));
        assert!(
            !opened.is_empty(),
            "no tunnel to {target}:\n{}",
            proxy.log()
        );
    }
    let log = proxy.log();
    assert!(!log.contains(KEY) && !log.contains(BOT_TOKEN), "{log}");
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_the_proxy_does_not_allow_fails_once_with_the_fix_named() {
    let model = Fake::start(|_, _| ok(answer("never sent"))).await;
    let telegram = Telegram::start(BOT_TOKEN).await;
    let config = agent_config(&model.url(""), &telegram.api_root());
    // openclaw.json names the provider, root's allow list (not synced since) only Telegram.
    let telegram_target = telegram.api_root().trim_start_matches("http://").to_owned();
    let proxy = tokio::task::block_in_place(|| {
        Proxy::start_with_allow_file(&[
            (ALLOW_FILE, &allow_file(&[&telegram_target])),
            ("openclaw.json", &config),
        ])
    });
    let gw = start_gateway(&config, &proxy);

    telegram.push(private_text(OWNER, "hi"));
    telegram
        .wait_until("the failure reply", |t| !t.sent_to(OWNER).is_empty())
        .await;
    assert!(model.seen().is_empty());
    let target = format!("127.0.0.1:{}", model.addr.port());
    let failures = tokio::task::block_in_place(|| gw.wait_log("the agent failed", 1));
    assert!(
        failures.len() == 1
            && failures[0].contains(&format!("the egress proxy refused {target}"))
            && failures[0].contains("sudo clawfort egress sync"),
        "{failures:?}"
    );
    // A configuration matter: one attempt, no retries.
    let refused = proxy.log_lines("refused (403)");
    assert_eq!(refused.len(), 1, "{}", proxy.log());
    assert!(!gw.log_lines("").join("\n").contains(BOT_TOKEN));
}
