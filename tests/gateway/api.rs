//! The message webhook, DM policies, groups, sessions and the pairing endpoints.

use serde_json::json;

use crate::support::{cli, Gateway, TOKEN};

fn msg(channel: &str, peer: &str, text: &str) -> serde_json::Value {
    json!({ "channel": channel, "peer": peer, "text": text })
}

const ALPHABET: &str = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

#[test]
fn pairing_policy_codes_limits_and_approval() {
    let gw = Gateway::start(None);
    let first = gw.message(msg("telegram", "alice", "hi"));
    assert_eq!(first["status"], "pairing_required");
    let code = first["pairingCode"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 8);
    assert!(code.chars().all(|c| ALPHABET.contains(c)), "{code}");
    assert!(first.get("sessionKey").is_none());
    // A repeat keeps its code.
    assert_eq!(
        gw.message(msg("telegram", "alice", "hello?"))["pairingCode"],
        code.as_str()
    );
    // Three pending at most; the fourth unknown sender gets no code.
    for peer in ["bob", "carol"] {
        assert!(gw.message(msg("telegram", peer, "hi"))["pairingCode"].is_string());
    }
    let fourth = gw.message(msg("telegram", "dave", "hi"));
    assert_eq!(fourth["status"], "pairing_required");
    assert!(fourth.get("pairingCode").is_none(), "{fourth}");
    // Each new request (not a repeat, not one refused a code) is a security event, without
    // its code.
    let mut senders = Vec::new();
    for _ in 0..100 {
        let out = cli(gw.path(), &["events", "--json"]);
        let events: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        senders = events
            .iter()
            .filter(|e| e["kind"] == "pairing-request")
            .map(|e| e["sender"].as_str().unwrap().to_owned())
            .collect();
        if senders.len() >= 3 {
            assert!(!String::from_utf8_lossy(&out.stdout).contains(&code));
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(senders, ["alice", "bob", "carol"]);

    // The pairing API lists them and approves one.
    let listed = gw.get("/api/pairing/telegram", Some(TOKEN)).json();
    assert_eq!(listed["pending"].as_array().unwrap().len(), 3);
    let r = gw.post(
        "/api/pairing/telegram/approve",
        &json!({ "code": code }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["approve"]["id"], "alice");
    let accepted = gw.message(msg("telegram", "alice", "now?"));
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["sessionKey"], "agent:main:telegram:direct:alice");
    // Approving frees a slot.
    assert!(gw.message(msg("telegram", "dave", "hi"))["pairingCode"].is_string());
    // Reject, unknown code, revoke.
    let bob = gw.message(msg("telegram", "bob", "hi"))["pairingCode"].clone();
    assert_eq!(
        gw.post(
            "/api/pairing/telegram/reject",
            &json!({ "code": bob }).to_string()
        )
        .status,
        200
    );
    assert_eq!(
        gw.post(
            "/api/pairing/telegram/approve",
            &json!({ "code": bob }).to_string()
        )
        .status,
        404
    );
    let revoked = gw.post("/api/pairing/telegram/revoke", r#"{"peer":"alice"}"#);
    assert_eq!(revoked.json()["revoked"], true);
    assert_eq!(
        gw.message(msg("telegram", "alice", "x"))["status"],
        "pairing_required"
    );
    let all = gw.get("/api/pairing", Some(TOKEN)).json();
    assert_eq!(all["channels"][0]["channel"], "telegram");
    assert_eq!(gw.get("/api/pairing", None).status, 401);
}

#[test]
fn the_other_policies() {
    let gw = Gateway::start(Some(
        r#"{ channels: {
            team: { dmPolicy: "allowlist", allowFrom: ["boss"] },
            public: { dmPolicy: "open" },
            off: { dmPolicy: "disabled" },
            paused: { enabled: false },
        } }"#,
    ));
    assert_eq!(gw.message(msg("team", "boss", "x"))["status"], "accepted");
    let denied = gw.message(msg("team", "intern", "x"));
    assert_eq!(denied["status"], "denied");
    assert!(denied.get("pairingCode").is_none());
    assert_eq!(
        gw.message(msg("public", "anyone", "x"))["status"],
        "accepted"
    );
    assert_eq!(gw.message(msg("off", "anyone", "x"))["status"], "ignored");
    assert_eq!(
        gw.message(msg("paused", "anyone", "x"))["status"],
        "ignored"
    );
    let s = gw.get("/api/status", Some(TOKEN)).json();
    assert_eq!(s["channels"]["off"], "disabled");
    assert_eq!(s["channels"]["paused"], "disabled");
    assert_eq!(s["channels"]["public"], "open");
}

#[test]
fn auto_approve_admits_new_senders() {
    let gw = Gateway::start(Some("{ pairing: { autoApprove: true } }"));
    assert_eq!(
        gw.message(msg("telegram", "stranger", "x"))["status"],
        "accepted"
    );
    let approved = gw.get("/api/pairing/telegram", Some(TOKEN)).json();
    assert_eq!(approved["approved"]["allowFrom"], json!(["stranger"]));
}

#[test]
fn groups_need_their_own_approval() {
    let gw = Gateway::start(None);
    // Alice is approved for direct messages...
    let code = gw.message(msg("discord", "alice", "hi"))["pairingCode"].clone();
    gw.post(
        "/api/pairing/discord/approve",
        &json!({ "code": code }).to_string(),
    );
    // ...but that does not let her bring the bot into a group.
    let in_group =
        json!({ "channel": "discord", "peer": "alice", "group": "g1", "text": "hi all" });
    let first = gw.message(in_group.clone());
    assert_eq!(first["status"], "pairing_required");
    let group_code = first["pairingCode"].as_str().unwrap().to_string();
    let pending = gw.get("/api/pairing/discord", Some(TOKEN)).json();
    assert_eq!(pending["pending"][0]["kind"], "group");
    assert_eq!(pending["pending"][0]["id"], "g1");
    gw.post(
        "/api/pairing/discord/approve",
        &json!({ "code": group_code }).to_string(),
    );
    let ok = gw.message(in_group);
    assert_eq!(ok["status"], "accepted");
    assert_eq!(ok["sessionKey"], "agent:main:discord:group:g1");
    // Anyone in the approved group is heard there, and only there.
    let other = json!({ "channel": "discord", "peer": "mallory", "group": "g1", "text": "hey" });
    assert_eq!(gw.message(other)["status"], "accepted");
    assert_eq!(
        gw.message(msg("discord", "mallory", "dm"))["status"],
        "pairing_required"
    );
}

#[test]
fn sessions_are_per_peer_and_isolated() {
    let gw = Gateway::start(Some(r#"{ channels: { wa: { dmPolicy: "open" } } }"#));
    let peers = ["alice", "bob", "../bob", "bob:direct:alice", "b%6Fb"];
    for peer in peers {
        let r = gw.message(msg("wa", peer, &format!("secret of {peer}")));
        // `%` and `:` inside an id are escaped, so the key stays unambiguous.
        let escaped = peer.replace('%', "%25").replace(':', "%3A");
        assert_eq!(r["sessionKey"], format!("agent:main:wa:direct:{escaped}"));
    }
    let transcripts = clawfort::sessions::Transcripts::new(gw.path().join("agents/main/sessions"));
    for peer in peers {
        let key = clawfort::sessions::direct_key(
            clawfort::config::DmScope::PerChannelPeer,
            "wa",
            "default",
            peer,
        );
        let lines = transcripts.read(&key).unwrap();
        assert_eq!(lines.len(), 1, "{peer}");
        assert_eq!(lines[0]["text"], format!("secret of {peer}"));
        assert_eq!(lines[0]["peer"], peer);
    }
    let files = std::fs::read_dir(gw.path().join("agents/main/sessions"))
        .unwrap()
        .count();
    assert_eq!(files, peers.len());
}

#[test]
fn session_scopes_form_openclaw_keys() {
    for (scope, key) in [
        ("main", "agent:main:main"),
        ("per-peer", "agent:main:direct:42"),
        ("per-channel-peer", "agent:main:tg:direct:42"),
        ("per-account-channel-peer", "agent:main:tg:bot2:direct:42"),
    ] {
        let gw = Gateway::start(Some(&format!(
            r#"{{ session: {{ dmScope: "{scope}" }}, channels: {{ tg: {{ dmPolicy: "open" }} }} }}"#
        )));
        let r =
            gw.message(json!({ "channel": "tg", "accountId": "bot2", "peer": "42", "text": "x" }));
        assert_eq!(r["sessionKey"], key, "{scope}");
    }
}

#[test]
fn cli_approval_reaches_the_running_gateway() {
    let gw = Gateway::start(None);
    let code = gw.message(msg("signal", "+15550100", "hi"))["pairingCode"]
        .as_str()
        .unwrap()
        .to_string();
    let list = cli(gw.path(), &["pairing", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains(&code));
    let out = cli(gw.path(), &["pairing", "approve", &code.to_lowercase()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        gw.message(msg("signal", "+15550100", "again"))["status"],
        "accepted"
    );
    let approved = cli(gw.path(), &["pairing", "approved", "--channel", "signal"]);
    assert!(String::from_utf8_lossy(&approved.stdout).contains("+15550100"));
    let out = cli(
        gw.path(),
        &["pairing", "revoke", "+15550100", "--channel", "signal"],
    );
    assert!(out.status.success());
    assert_eq!(
        gw.message(msg("signal", "+15550100", "x"))["status"],
        "pairing_required"
    );
    // Unknown codes are an error naming what to do.
    let out = cli(gw.path(), &["pairing", "approve", "ZZZZZZZZ"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pairing list"));
    // Counts in /api/status follow within the refresh interval.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let s = gw.get("/api/status", Some(TOKEN)).json();
    assert_eq!(s["pairing"]["pending"], 1);
}
