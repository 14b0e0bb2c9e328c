//! The other commands: token, security audit, logs, status, --help.

use std::os::unix::fs::PermissionsExt;

use crate::support::{cli, state_dir, Gateway, BIN, TOKEN};

#[test]
fn token_prints_64_hex() {
    let out = cli(tempfile::tempdir().unwrap().path(), &["token"]);
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 64);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
}

fn audit(dir: &std::path::Path, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["security", "audit", "--json"];
    all.extend_from_slice(args);
    let out = cli(dir, &all);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), report)
}

fn ids(report: &serde_json::Value, severity: &str) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == severity)
        .map(|f| f["checkId"].as_str().unwrap().to_string())
        .collect()
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn audit_of_a_hardened_installation_is_clean() {
    let dir = state_dir(Some(
        r#"{ gateway: { auth: { token: "${OPENCLAW_GATEWAY_TOKEN}" } } }"#,
    ));
    chmod(dir.path(), 0o700);
    chmod(&dir.path().join(".env"), 0o600);
    chmod(&dir.path().join("openclaw.json"), 0o600);
    let (code, report) = audit(dir.path(), &[]);
    assert_eq!(code, 0, "{report:#}");
    assert!(ids(&report, "critical").is_empty(), "{report:#}");
    // The build machine runs tests as root, which the audit rightly mentions.
    let warn: Vec<String> = ids(&report, "warn")
        .into_iter()
        .filter(|id| id != "process.root")
        .collect();
    assert!(warn.is_empty(), "{report:#}");
}

#[test]
fn audit_finds_and_fixes_problems() {
    let dir = state_dir(Some(
        r#"{
          gateway: { bind: "lan", auth: { token: "literal-token-0123456789abcdef" } },
          channels: { tg: { dmPolicy: "open" } },
          pairing: { autoApprove: true },
          agents: { defaults: { sandbox: { mode: "off" } } },
          security: { deniedPaths: ["/root"] },
        }"#,
    ));
    chmod(dir.path(), 0o755);
    chmod(&dir.path().join(".env"), 0o644);
    chmod(&dir.path().join("openclaw.json"), 0o644);
    let (code, report) = audit(dir.path(), &[]);
    assert_eq!(code, 1);
    let critical = ids(&report, "critical");
    for id in [
        "fs.state_dir.perms",
        "fs.env.perms",
        "fs.config.perms",
        "channels.dm_policy.open",
        "pairing.auto_approve",
        "sandbox.off",
    ] {
        assert!(
            critical.contains(&id.to_string()),
            "{id} missing: {report:#}"
        );
    }
    let warn = ids(&report, "warn");
    for id in [
        "gateway.bind.non_loopback",
        "config.literal_secret",
        "security.denied_paths",
    ] {
        assert!(warn.contains(&id.to_string()), "{id} missing: {report:#}");
    }
    for f in report["findings"].as_array().unwrap() {
        for key in ["title", "detail", "remediation"] {
            assert!(f[key].is_string(), "{f}");
        }
    }
    // --fix tightens the permissions and says so.
    let (_, fixed) = audit(dir.path(), &["--fix"]);
    assert_eq!(fixed["fixes"].as_array().unwrap().len(), 3, "{fixed:#}");
    assert_eq!(
        std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(dir.path().join(".env"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(!ids(&fixed, "critical").contains(&"fs.env.perms".to_string()));
    // Text output too.
    let text = cli(dir.path(), &["security", "audit"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("CRITICAL"));
}

#[test]
fn short_or_missing_token_is_reported() {
    let dir = state_dir(Some(r#"{ gateway: { auth: { token: "short" } } }"#));
    let (code, report) = audit(dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(ids(&report, "critical").contains(&"gateway.token.short".to_string()));
    let dir = state_dir(None);
    std::fs::remove_file(dir.path().join(".env")).unwrap();
    let (_, report) = audit(dir.path(), &[]);
    assert!(ids(&report, "warn").contains(&"gateway.token.missing".to_string()));
}

#[test]
fn audit_config_errors_exit_2() {
    let dir = state_dir(Some("{ gatway: {} }"));
    let out = cli(dir.path(), &["security", "audit"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `gateway`"));
}

#[test]
fn deep_audit_reports_every_host_check() {
    let gw = Gateway::start(None);
    let (code, report) = audit(gw.path(), &["--deep"]);
    let all: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["checkId"].as_str().unwrap().to_string())
        .collect();
    for id in [
        "host.gateway_sockets",
        "host.nftables",
        "host.sshd",
        "host.fail2ban",
        "host.unattended_upgrades",
        "host.docker_socket",
    ] {
        assert!(all.contains(&id.to_string()), "{id} missing: {report:#}");
    }
    assert!(code == 0 || code == 1, "{code}");
    // The test gateway is on loopback; its sockets must not be called exposed.
    let sockets = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["checkId"] == "host.gateway_sockets")
        .unwrap()
        .clone();
    assert_ne!(
        sockets["title"],
        "the gateway listens on a non-loopback address"
    );
}

#[test]
fn logs_shows_the_gateway_log() {
    let gw = Gateway::start(None);
    assert_eq!(gw.get("/api/status", None).status, 401);
    gw.wait_log("auth failure from", 1);
    let out = cli(gw.path(), &["logs", "--source", "file", "--tail", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("auth failure from 127.0.0.1"), "{text}");
    assert!(text.lines().count() <= 5);
}

#[test]
fn under_systemd_each_line_goes_to_the_journal_stream_with_its_priority() {
    use std::os::unix::fs::MetadataExt;
    let dir = state_dir(None);
    let stream_path = dir.path().join("journal-stream");
    let stream = std::fs::File::create(&stream_path).unwrap();
    let id = format!(
        "{}:{}",
        stream.metadata().unwrap().dev(),
        stream.metadata().unwrap().ino()
    );
    let mut child = crate::support::command(dir.path())
        .env("JOURNAL_STREAM", id)
        .args(["gateway", "--port", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(stream)
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&stream_path).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let addr = loop {
        let text = read();
        if let Some(rest) = text.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no start: {text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let response = crate::support::raw(
        addr.parse().unwrap(),
        b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer wrong\r\n\
          Connection: close\r\n\r\n",
    );
    assert_eq!(response.status, 401);
    while !read().contains("auth failure") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = read();
    // sd-daemon(3) priority prefixes, no timestamp or level of our own: journald has both.
    assert!(
        text.contains("\n<4>auth failure from 127.0.0.1: invalid token\n"),
        "{text}"
    );
    assert!(
        text.contains(concat!(
            "<6>clawfort ",
            env!("CARGO_PKG_VERSION"),
            " gateway listening on "
        )),
        "{text}"
    );
    for line in text.lines() {
        let priority = line.strip_prefix('<').and_then(|l| l.split_once('>'));
        assert!(
            matches!(priority, Some((p, _)) if ["3", "4", "6"].contains(&p)),
            "{line}"
        );
    }
    assert!(!dir.path().join("logs/gateway.log").exists());
}

#[test]
fn status_asks_the_running_gateway() {
    let gw = Gateway::start(None);
    let config = format!("{{ gateway: {{ port: {} }} }}", gw.addr.port());
    std::fs::write(gw.path().join("openclaw.json"), config).unwrap();
    let out = cli(gw.path(), &["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["bind"], gw.addr.to_string());
    let _ = TOKEN;
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["gateway", "--help"],
        vec!["pairing", "--help"],
        vec!["pairing", "list", "--help"],
        vec!["pairing", "approve", "--help"],
        vec!["pairing", "reject", "--help"],
        vec!["pairing", "approved", "--help"],
        vec!["pairing", "revoke", "--help"],
        vec!["token", "--help"],
        vec!["security", "audit", "--help"],
        vec!["logs", "--help"],
        vec!["status", "--help"],
    ] {
        let out = std::process::Command::new(BIN)
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn audit_names_the_agent_and_flags_keys_in_clear_and_unpriced_models() {
    let literal = "sk-literal-key-0123456789abcdefghij";
    let dir = state_dir(Some(&format!(
        r#"{{
          models: {{ providers: {{
            remote: {{ api: "openai-completions", baseUrl: "http://10.1.2.3:8000/v1",
                      apiKey: "{literal}", models: [{{ id: "m" }}] }},
            local: {{ api: "openai-completions", baseUrl: "http://127.0.0.1:11434/v1",
                     models: [{{ id: "l", cost: {{ input: 0, output: 0 }} }}] }},
          }} }},
          agents: {{ defaults: {{ model: {{ primary: "remote/m", fallbacks: ["local/l"] }} }} }},
          channels: {{ telegram: {{ botToken: "${{TG}}", apiRoot: "http://tg-proxy.lan" }} }},
          budget: {{ dailyUsd: 5 }},
        }}"#
    )));
    let (code, report) = audit(dir.path(), &[]);
    assert_eq!(code, 1, "{report:#}");
    let finding = |id: &str| -> Vec<serde_json::Value> {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["checkId"] == id)
            .cloned()
            .collect()
    };
    let plain = finding("models.provider.plain_http");
    assert_eq!(plain.len(), 1, "only the remote provider: {report:#}");
    assert_eq!(plain[0]["severity"], "critical");
    assert!(
        plain[0]["detail"]
            .as_str()
            .unwrap()
            .contains("models.providers.remote.baseUrl is http:// to 10.1.2.3"),
        "{plain:?}"
    );
    assert_eq!(
        finding("channels.telegram.plain_http")[0]["severity"],
        "critical"
    );
    let literal_keys = finding("config.literal_secret");
    assert!(
        literal_keys.iter().any(|f| f["severity"] == "warn"
            && f["detail"]
                .as_str()
                .unwrap()
                .contains("`models.providers.remote.apiKey` holds a literal value")),
        "{literal_keys:?}"
    );
    let unpriced = finding("budget.unpriced_model");
    assert_eq!(unpriced[0]["severity"], "warn");
    assert!(
        unpriced[0]["detail"]
            .as_str()
            .unwrap()
            .contains("remote/m has no `cost`"),
        "{unpriced:?}"
    );
    assert_eq!(finding("agent.owner.missing")[0]["severity"], "warn");
    let info = ids(&report, "info");
    for id in ["agent.provider", "agent.model", "agent.channel"] {
        assert!(info.contains(&id.to_string()), "{id} missing: {report:#}");
    }
    let providers: Vec<String> = finding("agent.provider")
        .iter()
        .map(|f| format!("{}: {}", f["title"], f["detail"]))
        .collect();
    assert_eq!(
        providers,
        [
            r#""model provider local": "api openai-completions, http://127.0.0.1:11434, models: l""#,
            r#""model provider remote": "api openai-completions, http://10.1.2.3:8000, models: m""#,
        ]
    );
    assert_eq!(
        finding("agent.model")[0]["detail"],
        "agents.defaults.model: remote/m, then local/l"
    );
    let text = cli(dir.path(), &["security", "audit"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("INFO     agent.channel: channel telegram"),
        "{text}"
    );
    assert!(!text.contains(literal) && !report.to_string().contains(literal));

    // The same agent set up well: https, keys as ${VAR}, prices, an owner.
    let dir = state_dir(Some(
        r#"{
          models: { providers: { remote: { api: "openai-completions",
            baseUrl: "https://llm.example.com/v1", apiKey: "${REMOTE_KEY}",
            models: [{ id: "m", cost: { input: 1, output: 2 } }] } } },
          agents: { defaults: { model: "remote/m" } },
          commands: { ownerAllowFrom: ["telegram:42"] },
          channels: { telegram: { botToken: "${TG}" } },
          budget: { dailyUsd: 5 },
        }"#,
    ));
    let (_, report) = audit(dir.path(), &[]);
    for id in [
        "models.provider.plain_http",
        "channels.telegram.plain_http",
        "config.literal_secret",
        "budget.unpriced_model",
        "agent.owner.missing",
    ] {
        assert!(
            !report.to_string().contains(id),
            "{id} on a good config: {report:#}"
        );
    }
    let channel = &report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["checkId"] == "agent.channel")
        .unwrap()["detail"];
    assert_eq!(
        channel,
        "enabled, dmPolicy pairing, owner 42 (from commands.ownerAllowFrom)"
    );
}

/// `clawfort events --json`, parsed.
fn events_json(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let out = cli(dir, &["events", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_restart_after_a_kill_is_a_security_event_and_a_first_start_is_not() {
    let gw = Gateway::start(None);
    assert!(
        !gw.path().join("events.jsonl").exists(),
        "nothing to report"
    );
    let gw = gw.restart();
    let mut found = Vec::new();
    for _ in 0..100 {
        found = events_json(gw.path());
        if !found.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["kind"], "gateway-crash-restart");
    assert_eq!(found[0]["source"], "gateway");
}

#[test]
fn events_emit_is_root_only_and_its_event_is_shown() {
    let dir = state_dir(None);
    let ban = [
        "events",
        "emit",
        "fail2ban-ban",
        "--jail",
        "sshd",
        "--ip",
        "192.0.2.1",
    ];
    let out = cli(dir.path(), &ban);
    if !rustix::process::geteuid().is_root() {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("run it as root"), "{err}");
        return;
    }
    assert!(out.status.success(), "{out:?}");
    // Made by the first emit under the appliance's umask, the feed and its directory are
    // still readable by the gateway's user.
    let fresh = dir.path().join("var-lib-clawfort");
    let out = std::process::Command::new("sh")
        .args(["-c", "umask 027; exec \"$0\" \"$@\"", BIN])
        .args(ban)
        .env(clawfort::events::HOST_FEED_ENV, fresh.join("events.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for (path, want) in [(&fresh, 0o755), (&fresh.join("events.jsonl"), 0o644)] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, want, "{}", path.display());
    }
    let out = cli(dir.path(), &["events"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("TIME (UTC)"), "{text}");
    assert!(
        text.contains("host    fail2ban-ban  fail2ban banned 192.0.2.1 (jail sshd)"),
        "{text}"
    );
    let shown = events_json(dir.path());
    assert_eq!(
        (shown.len(), &shown[0]["ip"]),
        (1, &serde_json::json!("192.0.2.1"))
    );
    let bad = cli(
        dir.path(),
        &[
            "events",
            "emit",
            "fail2ban-ban",
            "--jail",
            "a b",
            "--ip",
            "192.0.2.1",
        ],
    );
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a jail name"));
}
