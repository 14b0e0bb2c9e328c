//! The execution log through the real `clawfort gateway` and `clawfort logs --tools`: a
//! scripted model makes a call that works, one the confinement refuses and one of a tool
//! that does not exist, and each is one entry with its facts.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use clawfort_fakes::model::ok;
use clawfort_fakes::telegram::private_text;
use serde_json::{json, Value};

use crate::files::{answer, read_call, start, SENDER};
use crate::support::{cli, state_dir};

fn logs(dir: &std::path::Path, args: &[&str]) -> Value {
    let mut all = vec!["logs", "--tools", "--json"];
    all.extend_from_slice(args);
    let out = cli(dir, &all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_call_is_one_entry_of_the_execution_log() {
    // When the model is asked again, the entries of the calls whose results it gets are
    // already in the file: the log is written before a result goes back.
    let log_file = Arc::new(OnceLock::<PathBuf>::new());
    let lines_seen = Arc::new(Mutex::new(Vec::new()));
    let (file, seen) = (Arc::clone(&log_file), Arc::clone(&lines_seen));
    let (_model, telegram, gw) = start(
        move |n, _| {
            if let Some(file) = file.get() {
                let lines = std::fs::read_to_string(file).map_or(0, |t| t.lines().count());
                seen.lock().unwrap().push((n, lines));
            }
            ok(match n {
                0 => read_call(0, "notes.md"),
                1 => read_call(1, "../.env"),
                2 => answer(
                    json!([{"type": "tool_use", "id": "call_2", "name": "shell",
                            "input": {"command": "cat /etc/shadow"}}]),
                    "tool_use",
                ),
                _ => answer(json!([{"type": "text", "text": "done"}]), "end_turn"),
            })
        },
        "",
    )
    .await;
    log_file.set(gw.path().join("logs/tools.jsonl")).unwrap();
    telegram.push(private_text(SENDER, "look around"));
    telegram
        .wait_until("the final answer", |t| !t.sent_to(SENDER).is_empty())
        .await;
    assert_eq!(
        *lines_seen.lock().unwrap(),
        [(0, 0), (1, 1), (2, 2), (3, 3)]
    );

    let entries = logs(gw.path(), &[]);
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 3, "{entries:#?}");
    let session = entries[0]["session"].as_str().unwrap().to_owned();
    assert!(session.starts_with("agent:main:"), "{session}");
    for e in entries {
        assert_eq!(e["session"], session.as_str());
        assert_eq!(e["approval"], "none");
        assert!(e["durationMs"].is_u64() && e["time"].as_str().unwrap().ends_with('Z'));
    }
    let fields = |e: &Value| {
        (
            e["tool"].as_str().unwrap().to_owned(),
            e["target"].as_str().unwrap().to_owned(),
            e["place"].clone(),
            e["status"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(
        fields(&entries[0]),
        (
            "read".into(),
            "notes.md".into(),
            json!("gateway"),
            "ok".into()
        )
    );
    // The bytes returned: the file's text, as the tool reports it.
    assert!(
        entries[0]["bytesOut"].as_u64().unwrap() >= 25,
        "{}",
        entries[0]
    );
    assert_eq!(
        fields(&entries[1]),
        (
            "read".into(),
            "../.env".into(),
            json!("gateway"),
            "error".into()
        )
    );
    assert_eq!(
        fields(&entries[2]),
        (
            "shell".into(),
            "cat /etc/shadow".into(),
            Value::Null,
            "unknown_tool".into()
        )
    );

    // The file is the owner's alone.
    let file = gw.path().join("logs/tools.jsonl");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Filters: the latest N, a session, a time.
    let last = logs(gw.path(), &["--limit", "1"]);
    assert_eq!(last.as_array().unwrap().len(), 1);
    assert_eq!(last[0]["tool"], "shell");
    let mine = logs(gw.path(), &["--session", &session]);
    assert_eq!(mine.as_array().unwrap().len(), 3);
    let other = logs(gw.path(), &["--session", "agent:main:nobody"]);
    assert_eq!(other, json!([]));
    assert_eq!(
        logs(gw.path(), &["--since", "1h"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        logs(gw.path(), &["--since", "2999-01-01T00:00:00Z"]),
        json!([])
    );

    // The table for people.
    let out = cli(gw.path(), &["logs", "--tools"]);
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("TIME") && lines[0].ends_with("TARGET"),
        "{table}"
    );
    assert_eq!(lines.len(), 4, "{table}");
    for (line, words) in lines[1..].iter().zip([
        ["read", "gateway", "ok", "notes.md"],
        ["read", "gateway", "error", "../.env"],
        ["shell", "-", "unknown tool", "cat /etc/shadow"],
    ]) {
        assert!(words.iter().all(|w| line.contains(w)), "{line}");
    }
}

#[test]
fn without_a_log_the_command_says_so_and_a_bad_since_is_named() {
    let dir = state_dir(Some("{}"));
    let out = cli(dir.path(), &["logs", "--tools"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("there is no execution log yet") && err.contains("logs/tools.jsonl"),
        "{err}"
    );
    let out = cli(dir.path(), &["logs", "--tools", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`yesterday` is neither a duration"), "{err}");
    // The filters belong to --tools.
    let out = cli(dir.path(), &["logs", "--json"]);
    assert_eq!(out.status.code(), Some(2));
}
