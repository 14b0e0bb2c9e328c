//! Session keys and transcript files: every id the API accepts is stored, keys never collide,
//! and transcripts written under the old file names keep working.

use std::path::Path;

use clawfort::config::DmScope;
use clawfort::sessions::{direct_key, group_key, Transcripts};
use serde_json::json;

use crate::support::Gateway;

fn transcripts(dir: &Path) -> Transcripts {
    Transcripts::new(dir.join("agents/main/sessions"))
}

/// Issue 10 finding 4: ids of 217-256 bytes gave 500 "File name too long" and the message
/// was lost (the old name percent-encoded the whole key).
#[test]
fn longest_accepted_ids_are_stored() {
    let gw = Gateway::start(Some(r#"{ channels: { wa: { dmPolicy: "open" } } }"#));
    let store = transcripts(gw.path());
    let mut peers: Vec<String> = (217..=256).map(|n| "p".repeat(n)).collect();
    peers.push("\u{1F600}".repeat(64));
    peers.push(":".repeat(256));
    for peer in &peers {
        let r = gw.post(
            "/api/messages",
            &json!({ "channel": "wa", "peer": peer, "text": "hello" }).to_string(),
        );
        assert_eq!(r.status, 200, "{} bytes: {}", peer.len(), r.body);
        assert_eq!(r.json()["status"], "accepted");
        let key = direct_key(DmScope::PerChannelPeer, "wa", "default", peer);
        let lines = store.read(&key).unwrap();
        assert_eq!(lines.len(), 1, "{} bytes", peer.len());
        assert_eq!(lines[0]["peer"], peer.as_str());
        assert_eq!(lines[0]["sessionKey"], key.as_str());
    }
    let group = "g".repeat(230);
    let r = gw.post(
        "/api/messages",
        &json!({ "channel": "wa", "peer": "alice", "group": group, "text": "hi all" }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let lines = store.read(&group_key("wa", &group)).unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["group"], group.as_str());
}

/// Issue 10 finding 4: `{accountId:"group", peer:"alice"}` and
/// `{peer:"mallory", group:"direct:alice"}` shared one key and one transcript.
#[test]
fn account_named_group_and_group_named_direct_do_not_share_a_session() {
    let gw = Gateway::start(Some(
        r#"{ channels: { c: { dmPolicy: "open" } }, session: { dmScope: "per-account-channel-peer" } }"#,
    ));
    let alice = gw.message(json!({
        "channel": "c", "accountId": "group", "peer": "alice", "text": "alice's secret"
    }));
    let mallory = gw.message(json!({
        "channel": "c", "peer": "mallory", "group": "direct:alice", "text": "mallory was here"
    }));
    assert_eq!(alice["status"], "accepted");
    assert_eq!(mallory["status"], "accepted");
    assert_eq!(alice["sessionKey"], "agent:main:c:group:direct:alice");
    assert_eq!(mallory["sessionKey"], "agent:main:c:group:direct%3Aalice");
    let store = transcripts(gw.path());
    let alice_lines = store
        .read(&direct_key(
            DmScope::PerAccountChannelPeer,
            "c",
            "group",
            "alice",
        ))
        .unwrap();
    let mallory_lines = store.read(&group_key("c", "direct:alice")).unwrap();
    assert_eq!(alice_lines.len(), 1);
    assert_eq!(alice_lines[0]["text"], "alice's secret");
    assert_eq!(mallory_lines.len(), 1);
    assert_eq!(mallory_lines[0]["text"], "mallory was here");
}

/// A transcript written by an earlier version (percent-encoded key as the file name) is read,
/// and the first new message moves it to the new name with its history.
#[test]
fn old_transcript_names_are_read_and_migrated_on_first_append() {
    let gw = Gateway::start(Some(r#"{ channels: { wa: { dmPolicy: "open" } } }"#));
    let dir = gw.path().join("agents/main/sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join("agent%3Amain%3Awa%3Adirect%3Abob.jsonl");
    std::fs::write(&old, "{\"ts\":1,\"peer\":\"bob\",\"text\":\"from 0.1\"}\n").unwrap();
    // A colon id's old name is ambiguous (it could be another sender's): never adopted.
    let ambiguous = dir.join("agent%3Amain%3Awa%3Adirect%3Ab%3Ac.jsonl");
    std::fs::write(&ambiguous, "{\"ts\":1,\"text\":\"not b:c's\"}\n").unwrap();

    let store = transcripts(gw.path());
    let bob = direct_key(DmScope::PerChannelPeer, "wa", "default", "bob");
    assert_eq!(store.read(&bob).unwrap()[0]["text"], "from 0.1");

    assert_eq!(
        gw.message(json!({ "channel": "wa", "peer": "bob", "text": "from 0.2" }))["status"],
        "accepted"
    );
    assert!(!old.exists(), "the old name is moved, not copied");
    let lines = store.read(&bob).unwrap();
    let texts: Vec<_> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["from 0.1", "from 0.2"]);
    assert!(store.path(&bob).exists());

    gw.message(json!({ "channel": "wa", "peer": "b:c", "text": "mine" }));
    let bc = direct_key(DmScope::PerChannelPeer, "wa", "default", "b:c");
    let texts: Vec<_> = store
        .read(&bc)
        .unwrap()
        .iter()
        .map(|l| l["text"].clone())
        .collect();
    assert_eq!(texts, [json!("mine")]);
    assert!(ambiguous.exists());
}
