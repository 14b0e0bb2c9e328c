//! `clawfort status [--json]`: asks the running gateway for `/api/status` and shows it: the
//! gateway, and the agent's providers, models, owner, Telegram channel and budget.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

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
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

/// The text form of `/api/status`.
pub fn render(status: &Value) -> String {
    let field = |p: &str| status.pointer(p).map(plain).unwrap_or_default();
    let mut out = format!(
        "clawfort gateway {} on {}\n",
        field("/version"),
        field("/bind")
    );
    let mut line = |label: &str, text: String| out.push_str(&format!("  {label:<13} {text}\n"));
    line("uptime", format!("{} s", field("/uptimeSeconds")));
    line(
        "dm policy",
        format!(
            "{} (default), channels {}",
            field("/defaultDmPolicy"),
            field("/channels")
        ),
    );
    line("dm scope", field("/dmScope"));
    line("sandbox", field("/sandbox/mode"));
    line(
        "pairing",
        format!(
            "{} pending, {} approved, autoApprove {}",
            field("/pairing/pending"),
            field("/pairing/approved"),
            field("/pairing/autoApprove")
        ),
    );
    let Some(agent) = status.get("agent").filter(|a| !a.is_null()) else {
        line(
            "agent",
            "not configured (set agents.defaults.model and models.providers)".into(),
        );
        return out;
    };
    let field = |p: &str| agent.pointer(p).map(plain).unwrap_or_default();
    let list = |p: &str| -> Vec<String> {
        agent
            .pointer(p)
            .and_then(Value::as_array)
            .map(|items| items.iter().map(plain).collect())
            .unwrap_or_default()
    };
    let fallbacks = list("/model/fallbacks");
    line(
        "model",
        if fallbacks.is_empty() {
            field("/model/primary")
        } else {
            format!("{}, then {}", field("/model/primary"), fallbacks.join(", "))
        },
    );
    for p in agent["providers"].as_array().into_iter().flatten() {
        line(
            "provider",
            format!(
                "{} ({}, {})",
                plain(&p["id"]),
                plain(&p["api"]),
                plain(&p["baseUrl"])
            ),
        );
    }
    let owners = list("/owners");
    line(
        "owner",
        if owners.is_empty() {
            "none (set commands.ownerAllowFrom)".into()
        } else {
            owners.join(", ")
        },
    );
    match agent.pointer("/channels/telegram") {
        Some(t) => {
            let mut text = plain(&t["state"]);
            if let Some(bot) = t["bot"].as_str() {
                text.push_str(&format!(" as @{bot}"));
            }
            if let Some(at) = t["lastOk"].as_str() {
                text.push_str(&format!(", last poll {at}"));
            }
            if let Some(error) = t["lastError"].as_str() {
                text.push_str(&format!(
                    "; last error {}: {error}",
                    t["lastErrorAt"].as_str().unwrap_or("?")
                ));
            }
            line("telegram", text);
        }
        None => line(
            "telegram",
            "not configured (channels.telegram.botToken)".into(),
        ),
    }
    let spent = |period: &str, limit: &str| -> String {
        let spend = &agent["budget"][period];
        let Some(usd) = spend["usd"].as_f64() else {
            return "not known yet (the ledger is not open)".into();
        };
        let limit = match agent["budget"][limit].as_f64() {
            Some(limit) => format!(" of ${limit:.2}"),
            None => " (no limit)".into(),
        };
        let unpriced = match spend["unpricedCalls"].as_u64() {
            Some(0) | None => String::new(),
            Some(n) => format!(", {n} unpriced call(s)"),
        };
        format!("${usd:.2}{limit}, {} call(s){unpriced}", spend["calls"])
    };
    line("today (UTC)", spent("today", "dailyUsd"));
    line("this month", spent("month", "monthlyUsd"));
    out
}

/// A JSON value as text: strings without their quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
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
