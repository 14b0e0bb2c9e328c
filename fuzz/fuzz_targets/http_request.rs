//! Any bytes a client sends must get well-formed HTTP answers (or none), never a panic, and
//! no request may be served that the gateway's guards should have refused. Drives the real
//! connection handling (`clawfort::http::serve_connection`: hyper plus every guard, the
//! limiter and the routes) over an in-memory duplex stream, on a per-process scratch state
//! directory with a known token.
//!
//! The first byte picks the client address (even: loopback, odd: a documentation address),
//! so both sides of the limiter are reached; the rest is the byte stream of the connection.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use clawfort::config::{Config, EnvSource, TOKEN_ENV};
use clawfort::http::{serve_connection, Activity, Gateway};
use clawfort::paths::Paths;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "fuzz-token-0123456789abcdef0123456789abcdef";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    gateway: Arc<Gateway>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("clawfort-fuzz-http-{}", std::process::id()));
        let config = Config::parse(
            r#"{ channels: { open: { dmPolicy: "open" } } }"#,
            &EnvSource::fixed([(TOKEN_ENV.to_string(), TOKEN.to_string())]),
        )
        .expect("the fixture config is valid");
        let local: SocketAddr = "127.0.0.1:18789".parse().expect("a socket address");
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
            gateway: Arc::new(Gateway::new(config, &Paths::in_dir(&dir), local)),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let ip: IpAddr = if selector % 2 == 0 {
        [127, 0, 0, selector].into()
    } else {
        [198, 51, 100, selector].into()
    };
    let f = fixture();
    let output = f.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let served = serve_connection(
            f.gateway.clone(),
            server,
            ip,
            Activity::untracked(),
            std::future::pending::<()>(),
        );
        let talk = async {
            // Written and half-closed while the answers are read, so neither side blocks.
            let (mut reader, mut writer) = tokio::io::split(&mut client);
            let send = async {
                let _ = writer.write_all(input).await;
                let _ = writer.shutdown().await;
            };
            let mut output = Vec::new();
            let receive = reader.read_to_end(&mut output);
            let (_, _) = tokio::join!(send, receive);
            output
        };
        let (_, output) = tokio::join!(served, talk);
        output
    });
    if !output.is_empty() {
        // HTTP/1.0 requests are answered in HTTP/1.0.
        assert!(output.starts_with(b"HTTP/1."), "not HTTP: {output:?}");
    }
    // A connection whose only Host header names a foreign host gets no 200.
    let text = String::from_utf8_lossy(input).to_ascii_lowercase();
    if text.matches("\nhost:").count() == 1 && text.contains("\nhost: evil") {
        assert!(!output.windows(8).any(|w| w == b" 200 OK\r"), "served a foreign Host");
    }
});
