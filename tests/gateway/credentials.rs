//! The pairing store's files: OpenClaw's older formats are read and converted, a broken file
//! shuts only its own channel, and temporary files of interrupted writes are cleaned up
//! (issue 10 findings 5 and 7).

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::support::{cli, credentials, state_dir, Gateway, TOKEN};

fn iso_minutes_ago(minutes: i64) -> String {
    // RFC 3339 in UTC, as JavaScript's `toISOString` writes it.
    jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_mins(minutes))
        .unwrap()
        .to_string()
}

fn write(dir: &Path, name: &str, text: &str) {
    let creds = credentials(dir);
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join(name), text).unwrap();
}

fn read_json(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(credentials(dir).join(name)).unwrap()).unwrap()
}

/// `/api/status` once `ready` holds for it (bounded: 5 s).
fn status_when(gw: &Gateway, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = gw.get("/api/status", Some(TOKEN)).json();
        if ready(&status) || std::time::Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn legacy_allow_list_and_iso_timestamps_are_read_and_rewritten() {
    let dir = state_dir(None);
    // An allow-list as a bare array with a numeric Telegram id; a request without `kind`,
    // with ISO-8601 times and the account in `meta`, as older OpenClaw gateways wrote them.
    write(dir.path(), "tg-allowFrom.json", r#"["alice", 123456789]"#);
    let created = iso_minutes_ago(5);
    write(
        dir.path(),
        "tg-pairing.json",
        &json!({ "version": 1, "requests": [
            { "id": "bob", "code": "ABCD2345", "createdAt": created, "lastSeenAt": created,
              "meta": { "accountId": "default" } }
        ]})
        .to_string(),
    );
    let gw = Gateway::start_in(dir);

    let r = gw.get("/api/pairing/tg", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["approved"]["allowFrom"], json!(["alice", "123456789"]));
    assert_eq!(body["pending"][0]["code"], "ABCD2345");
    assert_eq!(body["pending"][0]["kind"], "direct");
    let status = gw.get("/api/status", Some(TOKEN)).json();
    assert_eq!(status["pairing"]["approved"], 2, "{status}");
    assert_eq!(status["pairing"]["pending"], 1, "{status}");
    assert_eq!(
        gw.message(json!({ "channel": "tg", "peer": "123456789", "text": "hi" }))["status"],
        "accepted"
    );

    let out = cli(gw.path(), &["pairing", "list", "--channel", "tg"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ABCD2345"));

    // The next change converts both files to the current format, keeping everything.
    let out = cli(
        gw.path(),
        &["pairing", "approve", "ABCD2345", "--channel", "tg"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        read_json(gw.path(), "tg-allowFrom.json"),
        json!({ "version": 1, "allowFrom": ["alice", "123456789", "bob"], "groups": [] })
    );
    assert_eq!(
        read_json(gw.path(), "tg-pairing.json"),
        json!({ "version": 1, "requests": [] })
    );
}

#[test]
fn a_broken_file_shuts_only_its_own_channel() {
    let dir = state_dir(None);
    write(dir.path(), "tg-allowFrom.json", "{ not json");
    write(
        dir.path(),
        "wa-allowFrom.json",
        r#"{"version":1,"allowFrom":["alice"],"groups":[]}"#,
    );
    let gw = Gateway::start_in(dir);
    let code = gw.message(json!({ "channel": "wa", "peer": "bob", "text": "hi" }))["pairingCode"]
        .as_str()
        .unwrap()
        .to_string();

    // The other channel works, over the API and in the status counts (refreshed each second).
    assert_eq!(gw.get("/api/pairing/wa", Some(TOKEN)).status, 200);
    let status = status_when(&gw, |s| s["pairing"]["pending"] == 1);
    assert_eq!(status["pairing"]["approved"], 1, "{status}");
    assert_eq!(status["pairing"]["pending"], 1, "{status}");
    let all = gw.get("/api/pairing", Some(TOKEN));
    assert_eq!(all.status, 200, "{}", all.body);
    let channels = all.json()["channels"].clone();
    assert_eq!(channels[0]["channel"], "tg");
    assert!(channels[0]["error"]
        .as_str()
        .unwrap()
        .contains("tg-allowFrom.json"));
    assert_eq!(channels[1]["approved"]["allowFrom"], json!(["alice"]));

    // The broken one answers an error that names its file.
    for r in [
        gw.get("/api/pairing/tg", Some(TOKEN)),
        gw.post(
            "/api/messages",
            r#"{"channel":"tg","peer":"x","text":"hi"}"#,
        ),
    ] {
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("tg-allowFrom.json"),
            "{}",
            r.body
        );
    }

    // The CLI lists the rest, names the file, and exits 1.
    let out = cli(gw.path(), &["pairing", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&code));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tg-allowFrom.json"));

    // One log line per change of the file, not one per status refresh (every second).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(gw.log_lines("left out of the counts").len(), 1);
    write(gw.path(), "tg-allowFrom.json", "[1, {}]");
    assert_eq!(gw.wait_log("left out of the counts", 2).len(), 2);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(gw.log_lines("left out of the counts").len(), 2);

    // The audit names the file.
    let out = cli(gw.path(), &["security", "audit", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["checkId"] == "pairing.store.unreadable")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert!(finding["detail"]
        .as_str()
        .unwrap()
        .contains("tg-allowFrom.json"));
}

#[test]
fn temp_files_of_interrupted_writes_are_removed_at_start() {
    let dir = state_dir(None);
    let creds = credentials(dir.path());
    // What a crash between write and rename leaves: ours, removed.
    write(dir.path(), ".tg-pairing.json.4242.0.tmp", "{\"version\":1");
    write(dir.path(), ".wa-allowFrom.json.17.3.tmp", "[");
    // Not ours, or not a plain file: kept.
    write(dir.path(), ".notes.tmp", "mine");
    write(dir.path(), "tg-pairing.json.1.2.tmp", "no leading dot");
    let victim = tempfile::NamedTempFile::new().unwrap();
    std::os::unix::fs::symlink(victim.path(), creds.join(".tg-allowFrom.json.1.2.tmp")).unwrap();

    let gw = Gateway::start_in(dir);
    assert!(!creds.join(".tg-pairing.json.4242.0.tmp").exists());
    assert!(!creds.join(".wa-allowFrom.json.17.3.tmp").exists());
    assert!(creds.join(".notes.tmp").exists());
    assert!(creds.join("tg-pairing.json.1.2.tmp").exists());
    assert!(victim.path().exists());
    assert!(std::fs::symlink_metadata(creds.join(".tg-allowFrom.json.1.2.tmp")).is_ok());
    assert_eq!(gw.log_lines("left by an interrupted write").len(), 2);
}
