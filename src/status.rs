//! `clawfort status [--json]`: asks the running gateway for `/api/status` and shows it: the
//! gateway, and the agent's providers, models, owner, Telegram channel and budget. The host's
//! own state (a pending reboot) is read here, by the command, and added as `host`: it is the
//! machine's, not the gateway's, and the gateway's sandboxed unit need not see it.

use serde_json::Value;

use crate::config::Config;
use crate::gateway_client::{error_text, GatewayClient};

/// Fetches and prints the status of the gateway this config describes.
pub fn show(config: &Config, json: bool) -> anyhow::Result<()> {
    let client = GatewayClient::new(config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (code, body) = runtime.block_on(client.request(hyper::Method::GET, "/api/status", true))?;
    anyhow::ensure!(
        code == hyper::StatusCode::OK,
        "the gateway on {} answered {}: {}",
        client.addr(),
        code.as_u16(),
        error_text(&body)
    );
    let mut status: Value = serde_json::from_slice(&body)?;
    if let Value::Object(fields) = &mut status {
        let reboot = crate::audit::reboot::state();
        fields.insert(
            "host".into(),
            serde_json::json!({ "reboot": reboot, "rebootPending": reboot.pending.is_some() }),
        );
    }
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
    if let Some(reboot) = status.pointer("/host/reboot") {
        if let Ok(state) =
            serde_json::from_value::<crate::audit::reboot::RebootState>(reboot.clone())
        {
            line("reboot", state.describe());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_reboot_state_is_a_line() {
        let status = serde_json::json!({
            "version": "0.1.0",
            "bind": "127.0.0.1:18789",
            "host": {
                "reboot": {
                    "pending": {"since": "2026-12-01T06:12:00Z", "packages": ["linux-image-6.12.57+deb13-amd64"]},
                    "automatic": {"enabled": true, "time": "04:00"}
                },
                "rebootPending": true
            }
        });
        let text = render(&status);
        assert!(
            text.contains(
                "  reboot        pending since 2026-12-01T06:12:00Z for \
                 linux-image-6.12.57+deb13-amd64; automatic reboots at 04:00\n"
            ),
            "{text}"
        );
    }
}
