//! `web_fetch` on the appliance's path: through the real egress proxy, which decides by its
//! allow list; the tool still refuses a literal internal address before asking the proxy.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clawfort::config::WebFetchConfig;
use clawfort::tools::web_fetch::AddressPolicy;
use clawfort::tools::{Call, Tool, ToolOutput, WebFetchTool};
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::{provider_config, Proxy};

/// The tests' allowed address (the tool refuses the rest of loopback).
const ALLOWED: &str = "127.0.0.2";

/// A plain HTTP server on 127.0.0.2 answering every request with a short page.
async fn page_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((ALLOWED, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    let mut answer = Response::new(Full::new(Bytes::from_static(
                        b"<html><body><p>hello through the tunnel</p></body></html>",
                    )));
                    answer
                        .headers_mut()
                        .insert("content-type", "text/html".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(answer)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (port, task)
}

async fn fetch(tool: &WebFetchTool, url: &str) -> ToolOutput {
    let call = Call {
        tainted: false,
        session_key: clawfort::sessions::group_key("telegram", "-100"),
        deadline: Instant::now() + Duration::from_secs(20),
        cancel: CancellationToken::new(),
    };
    tool.run(json!({"url": url, "extractMode": "text"}), call)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_fetch_reaches_only_the_proxys_allowed_hosts() {
    let (port, server) = page_server().await;
    let (other, other_server) = page_server().await;
    let config = provider_config(&format!("http://{ALLOWED}:{port}/v1"));
    let proxy = tokio::task::block_in_place(|| Proxy::start(&config));
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let allowed: IpAddr = ALLOWED.parse().unwrap();
    let tool = WebFetchTool::with_policy(
        WebFetchConfig {
            timeout: Duration::from_secs(10),
            ..WebFetchConfig::default()
        },
        AddressPolicy::allowing(&[allowed]),
        tls,
        Some(proxy.socket()),
    );

    let out = fetch(&tool, &format!("http://{ALLOWED}:{port}/page")).await;
    assert!(
        !out.is_error && out.content.ends_with("hello through the tunnel"),
        "{}",
        out.content
    );
    let opened = proxy.wait_log("opened", 1);
    assert!(
        opened
            .iter()
            .any(|l| l.contains(&format!("{ALLOWED}:{port}"))),
        "{opened:?}"
    );

    // A server the allow list does not name: the proxy refuses, and the tool says how.
    let out = fetch(&tool, &format!("http://{ALLOWED}:{other}/")).await;
    assert!(
        out.is_error
            && out
                .content
                .contains(&format!("the egress proxy refused {ALLOWED}:{other}")),
        "{}",
        out.content
    );

    // The metadata address never reaches the proxy.
    let out = fetch(&tool, "http://169.254.169.254/latest/meta-data/").await;
    assert!(
        out.is_error && out.content.contains("link-local"),
        "{}",
        out.content
    );
    assert!(!proxy.log().contains("169.254"), "{}", proxy.log());
    server.abort();
    other_server.abort();
}
