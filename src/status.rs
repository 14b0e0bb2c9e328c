//! `clawfort status`: asks the running gateway for `/api/status`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::{Bind, Config};

/// Fetches and prints the status of the gateway this config describes.
pub fn show(config: &Config, json: bool) -> anyhow::Result<()> {
    let ip = match config.gateway.bind {
        // A gateway on every interface is reachable on loopback too.
        Bind::Lan => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other.ip(),
    };
    let addr = SocketAddr::new(ip, config.gateway.port);
    let token = config.gateway.token.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "no gateway token configured: set {} (in ~/.openclaw/.env) or gateway.auth.token",
            crate::config::TOKEN_ENV
        )
    })?;
    let (code, body) = get(addr, "/api/status", &token.value).map_err(|e| {
        anyhow::anyhow!(
            "the gateway does not answer on {addr}: {e} (is `clawfort gateway` running?)"
        )
    })?;
    anyhow::ensure!(
        code == 200,
        "the gateway on {addr} answered {code}: {}",
        body.trim()
    );
    let status: serde_json::Value = serde_json::from_str(&body)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let field = |p: &str| status.pointer(p).map(|v| v.to_string()).unwrap_or_default();
    println!(
        "clawfort gateway {} on {}",
        field("/version"),
        field("/bind")
    );
    println!("  uptime        {} s", field("/uptimeSeconds"));
    println!(
        "  dm policy     {} (default), channels {}",
        field("/defaultDmPolicy"),
        field("/channels")
    );
    println!("  dm scope      {}", field("/dmScope"));
    println!("  sandbox       {}", field("/sandbox/mode"));
    println!(
        "  pairing       {} pending, {} approved, autoApprove {}",
        field("/pairing/pending"),
        field("/pairing/approved"),
        field("/pairing/autoApprove")
    );
    Ok(())
}

/// A minimal HTTP/1.1 GET with a bearer token; returns the status code and body.
fn get(addr: SocketAddr, path: &str, token: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
