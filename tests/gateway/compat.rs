//! OpenClaw compatibility as a contract: configurations taken from OpenClaw's own
//! documentation (`tests/fixtures/openclaw/*.json5`, each naming its source page) load in
//! the real binary. `security audit` never refuses them (exit 0 or 1, not 2); the gateway
//! starts and names exactly the keys it does not implement in one warning, or refuses to
//! start with the same words the audit reports as critical.

use std::path::Path;

use serde_json::json;

use crate::support::{cli, state_dir, Gateway};

/// A documented config and what clawfort makes of it.
struct Case {
    fixture: &'static str,
    /// The keys named as not implemented; `None`: only checked to agree between the gateway
    /// and the audit (the expanded example has dozens).
    unimplemented: Option<&'static [&'static str]>,
    /// `Some(words)`: the gateway refuses to start, saying `words`.
    refused: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        fixture: "minimal",
        unimplemented: Some(&[]),
        refused: None,
    },
    Case {
        fixture: "starter",
        unimplemented: Some(&["agents.entries", "channels.whatsapp.groups", "messages"]),
        refused: None,
    },
    Case {
        fixture: "multi-platform",
        unimplemented: Some(&["channels.discord.token", "channels.whatsapp.responsePrefix"]),
        refused: None,
    },
    Case {
        fixture: "secure-dm",
        unimplemented: Some(&["channels.discord.token"]),
        refused: None,
    },
    Case {
        // `${MINIMAX_API_KEY}` comes from the state dir's `.env` (written below); without it
        // the gateway refuses to start (`an_unset_provider_key_stops_the_gateway`).
        fixture: "anthropic-minimax-fallback",
        unimplemented: Some(&["auth"]),
        refused: None,
    },
    Case {
        fixture: "work-bot",
        unimplemented: Some(&[
            "agents.defaults.elevatedDefault",
            "agents.entries",
            "channels.slack.botToken",
            "channels.slack.channels",
        ]),
        refused: None,
    },
    Case {
        fixture: "local-models",
        unimplemented: Some(&[
            "models.mode",
            "models.providers.lmstudio.models[0].input",
            "models.providers.lmstudio.models[0].reasoning",
        ]),
        refused: None,
    },
    Case {
        fixture: "telegram-setup",
        unimplemented: Some(&[]),
        refused: None,
    },
    Case {
        fixture: "telegram-group-members",
        unimplemented: Some(&[]),
        refused: None,
    },
    Case {
        fixture: "multi-agent-dm-split",
        unimplemented: Some(&["agents.entries", "bindings"]),
        refused: None,
    },
    Case {
        // The docs' placeholder token "your-token" is far too short.
        fixture: "expanded",
        unimplemented: None,
        refused: Some("config key `gateway.auth.token`: the gateway token is 13 characters"),
    },
    Case {
        fixture: "gateway-reference",
        unimplemented: Some(&[
            "gateway.allowRealIpFallback",
            "gateway.auth.allowTailscale",
            "gateway.auth.identityScopes",
            "gateway.auth.rateLimit.exemptLoopback",
            "gateway.cliAgents",
            "gateway.controlUi",
            "gateway.nodes",
            "gateway.publicOrigin",
            "gateway.push",
            "gateway.remote",
            "gateway.roles",
            "gateway.tailscale",
            "gateway.terminal",
            "gateway.tools",
            "gateway.trustedProxies",
        ]),
        refused: Some("config key `gateway.auth.token`: the gateway token is 10 characters"),
    },
    Case {
        fixture: "remote-mode",
        unimplemented: Some(&["gateway.remote"]),
        refused: Some("config key `gateway.mode`: \"remote\" means this machine only connects"),
    },
];

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openclaw")
        .join(format!("{name}.json5"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `security audit --json`; it must not refuse the config.
fn audit(dir: &Path, name: &str) -> serde_json::Value {
    let out = cli(dir, &["security", "audit", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{name}: audit exit {:?}: {stderr}",
        out.status.code()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn findings<'a>(report: &'a serde_json::Value, check_id: &str) -> Vec<&'a serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["checkId"] == check_id)
        .collect()
}

/// The key list of the audit's `config.unimplemented_keys` finding (empty without one).
fn audited_unimplemented(report: &serde_json::Value) -> Vec<String> {
    match findings(report, "config.unimplemented_keys").as_slice() {
        [] => Vec::new(),
        [f] => {
            assert_eq!(f["severity"], "info");
            split_list(f["detail"].as_str().unwrap())
        }
        more => panic!("one finding expected: {more:?}"),
    }
}

fn split_list(list: &str) -> Vec<String> {
    list.split(", ").map(str::to_string).collect()
}

#[test]
fn openclaw_documented_configs_load() {
    for case in CASES {
        let name = case.fixture;
        let dir = state_dir(Some(&fixture(name)));
        let report = audit(dir.path(), name);
        let unimplemented = audited_unimplemented(&report);
        if let Some(expected) = case.unimplemented {
            assert_eq!(unimplemented, *expected, "{name}");
        } else {
            assert!(unimplemented.len() > 20, "{name}: {unimplemented:?}");
        }
        let refused: Vec<&str> = findings(&report, "config.refused")
            .iter()
            .map(|f| {
                assert_eq!(f["severity"], "critical", "{name}");
                f["detail"].as_str().unwrap()
            })
            .collect();

        match case.refused {
            None => {
                assert!(refused.is_empty(), "{name}: {refused:?}");
                if name == "anthropic-minimax-fallback" {
                    write_env(dir.path(), "MINIMAX_API_KEY=test-minimax-key-0123456789\n");
                }
                let gw = Gateway::start_in(dir);
                assert_eq!(gw.get("/healthz", None).status, 200, "{name}");
                let warnings = gw.wait_log("does not implement yet", 1);
                if unimplemented.is_empty() {
                    assert!(warnings.is_empty(), "{name}: {warnings:?}");
                } else {
                    assert_eq!(warnings.len(), 1, "{name}: {warnings:?}");
                    let listed = warnings[0].rsplit("not acted on): ").next().unwrap();
                    assert_eq!(split_list(listed), unimplemented, "{name}");
                }
            }
            Some(words) => {
                let out = cli(dir.path(), &["gateway", "--port", "0"]);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
                assert!(stderr.contains(words), "{name}: {stderr}");
                assert!(!refused.is_empty(), "{name}: no config.refused finding");
                if !unimplemented.is_empty() {
                    let warning = format!("not acted on): {}", unimplemented.join(", "));
                    assert!(stderr.contains(&warning), "{name}: {stderr}");
                }
                for detail in refused {
                    assert!(
                        stderr.contains(detail),
                        "{name}: {detail:?} not in {stderr}"
                    );
                }
            }
        }
    }
}

fn write_env(dir: &std::path::Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(dir.join(".env"))
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The agent resolves provider keys at start: an unset variable is exit 2 naming the key
/// (and the audit still runs on such a config).
#[test]
fn an_unset_provider_key_stops_the_gateway() {
    let name = "anthropic-minimax-fallback";
    let dir = state_dir(Some(&fixture(name)));
    let out = cli(dir.path(), &["gateway", "--port", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("models.providers.minimax.apiKey") && stderr.contains("MINIMAX_API_KEY"),
        "{stderr}"
    );
    let report = audit(dir.path(), name);
    assert!(findings(&report, "config.refused").is_empty());
}

// Regression tests, one per finding of issue 10 (finding 5, and 7 for the nesting).

/// Runs `args` on `config` and expects exit 2; returns stderr.
fn refused(config: &str, args: &[&str]) -> String {
    let dir = state_dir(Some(config));
    let out = cli(dir.path(), args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let shown: String = config.chars().take(200).collect();
    assert_eq!(out.status.code(), Some(2), "{shown}: {stderr}");
    stderr
}

#[test]
fn gateway_mode_local_starts_and_remote_is_refused_in_the_same_words() {
    let gw = Gateway::start(Some(r#"{ gateway: { mode: "local", port: 18789 } }"#));
    assert_eq!(gw.get("/healthz", None).status, 200);

    let config = r#"{ gateway: { mode: "remote" } }"#;
    let stderr = refused(config, &["gateway", "--port", "0"]);
    assert!(stderr.contains("config key `gateway.mode`"), "{stderr}");
    let dir = state_dir(Some(config));
    let report = audit(dir.path(), "remote");
    let detail = findings(&report, "config.refused")[0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("\"remote\""), "{detail}");
    assert!(stderr.contains(&detail), "{detail} / {stderr}");
}

#[test]
fn rate_limit_takes_openclaws_millisecond_spellings() {
    let gw = Gateway::start(Some(
        "{ gateway: { auth: { rateLimit: \
         { maxAttempts: 2, windowMs: 60000, lockoutMs: 90000, exemptLoopback: false } } } }",
    ));
    for _ in 0..2 {
        assert_eq!(
            gw.get("/api/status", Some("wrong-wrong-wrong-wrong-wrong"))
                .status,
            401
        );
    }
    let r = gw.get("/api/status", Some("wrong-wrong-wrong-wrong-wrong"));
    assert_eq!(r.status, 429);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((89..=90).contains(&wait), "{wait}");

    // Both spellings of one setting at once is an error naming the one to keep.
    let stderr = refused(
        "{ gateway: { auth: { rateLimit: { windowMs: 1000, windowSeconds: 1 } } } }",
        &["gateway", "--port", "0"],
    );
    assert!(stderr.contains("keep `windowMs`"), "{stderr}");
}

#[test]
fn the_docs_minimal_config_with_a_workspace_starts() {
    let gw = Gateway::start(Some(&fixture("minimal")));
    assert_eq!(gw.get("/healthz", None).status, 200);
    // The workspace confines the file tools: no key of this config is unimplemented.
    assert!(gw.log_lines("does not implement yet").is_empty());
}

#[test]
fn star_in_allow_from_admits_everyone_and_the_audit_says_so() {
    let config = r#"{ channels: { webhook: { dmPolicy: "allowlist", allowFrom: ["*"] } } }"#;
    let gw = Gateway::start(Some(config));
    for peer in ["alice", "bob"] {
        let answer = gw.message(json!({ "channel": "webhook", "peer": peer, "text": "hi" }));
        assert_eq!(answer["status"], "accepted", "{peer}: {answer}");
    }
    let report = audit(gw.path(), "star");
    let wildcard = findings(&report, "channels.allow_from.wildcard");
    assert_eq!(wildcard.len(), 1, "{report}");
    assert_eq!(wildcard[0]["severity"], "critical");
}

#[test]
fn variables_are_resolved_only_where_used() {
    // Unset variables in keys clawfort does not act on yet do not stop the start.
    let gw = Gateway::start(Some(
        r#"{
          models: { providers: { minimax: { api: "anthropic-messages", apiKey: "${NOT_SET_KEY}" } } },
          channels: { telegram: { botToken: "${NOT_SET_BOT_TOKEN}" } },
          tools: { web: { search: { apiKey: "${NOT_SET_SEARCH}" } } },
        }"#,
    ));
    assert_eq!(gw.get("/healthz", None).status, 200);
    // In a key the gateway uses, it is an error naming the key and the variable.
    let stderr = refused(
        r#"{ gateway: { auth: { token: "${NOT_SET_GATEWAY_TOKEN}" } } }"#,
        &["gateway", "--port", "0"],
    );
    assert!(stderr.contains("`gateway.auth.token`"), "{stderr}");
    assert!(stderr.contains("NOT_SET_GATEWAY_TOKEN"), "{stderr}");
}

#[test]
fn every_error_is_reported_in_one_run() {
    let config = r#"{
      gateway: { prot: 1, bind: "everywhere", auth: { rateLimit: { windowMs: "soon" } } },
      channels: { telegram: { dmpolicy: "open" } },
      sesion: { dmScope: "main" },
    }"#;
    for args in [&["gateway", "--port", "0"][..], &["security", "audit"][..]] {
        let stderr = refused(config, args);
        for expected in [
            "`gateway.prot`: unknown key",
            "did you mean `gateway.port`?",
            "`channels.telegram.dmpolicy`: unknown key",
            "did you mean `channels.telegram.dmPolicy`?",
            "`sesion`: unknown key",
            "did you mean `session`?",
            "`gateway.bind`: \"everywhere\" is not allowed",
            "`gateway.auth.rateLimit.windowMs`: expected a number",
        ] {
            assert!(
                stderr.contains(expected),
                "{args:?}: {expected} not in {stderr}"
            );
        }
        assert!(stderr.contains("5 configuration problems"), "{stderr}");
    }
}

#[test]
fn a_config_nested_100k_deep_is_a_config_error_not_a_crash() {
    for deep in [
        "[".repeat(100_000),
        format!("{{ a: {}", "{ a: ".repeat(100_000)),
    ] {
        for args in [&["gateway", "--port", "0"][..], &["security", "audit"][..]] {
            let stderr = refused(&deep, args);
            assert!(
                stderr.contains("nested deeper than 64 levels"),
                "{args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn the_old_providers_key_says_where_providers_went() {
    let config =
        r#"{ providers: { anthropic: { type: "anthropic", apiKey: "${ANTHROPIC_API_KEY}" } } }"#;
    for args in [&["gateway", "--port", "0"][..], &["security", "audit"][..]] {
        let stderr = refused(config, args);
        assert!(stderr.contains("config key `providers`"), "{stderr}");
        assert!(stderr.contains("`models.providers.<id>`"), "{stderr}");
    }
}
