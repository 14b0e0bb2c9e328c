//! The execution log through the real `clawfort gateway` and `clawfort logs --tools`: a
//! scripted model makes a call that works, one the confinement refuses and one of a tool
//! that does not exist, and each is one entry with its facts.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// SIGKILL while tool calls are being logged, then a line torn as a crash mid-write leaves it
/// (cut inside a two-byte character, so not even UTF-8): `logs --tools` still shows every
/// complete entry and names the damaged line, and the first entry after the restart starts
/// on a line of its own instead of being glued to the torn one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_logging_loses_no_complete_entry() {
    const CALLS: usize = 100;
    // While `flood` holds, every answer is CALLS calls of a tool that does not exist (the
    // quickest calls to log); the turn's 8 steps bound each message's calls. Afterwards a
    // message gets one `read`, and its result the final answer.
    let flood = Arc::new(AtomicBool::new(true));
    let flooding = Arc::clone(&flood);
    let (_model, telegram, gw) = start(
        move |n, seen| {
            let body = seen.json();
            let last = body["messages"].as_array().unwrap().last().unwrap().clone();
            let after_tool = last["content"]
                .as_array()
                .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"));
            ok(if flooding.load(Ordering::SeqCst) {
                let calls: Vec<Value> = (0..CALLS)
                    .map(|i| {
                        json!({"type": "tool_use", "id": format!("call_{n}_{i}"),
                               "name": "no_such_tool", "input": {"path": format!("f{n}_{i}")}})
                    })
                    .collect();
                answer(Value::Array(calls), "tool_use")
            } else if after_tool {
                answer(json!([{"type": "text", "text": "done"}]), "end_turn")
            } else {
                read_call(n, "notes.md")
            })
        },
        "",
    )
    .await;
    let file = gw.path().join("logs/tools.jsonl");
    telegram.push(private_text(SENDER, "flood"));
    let lines = |file: &std::path::Path| {
        std::fs::read(file).map_or(0, |b| b.split(|&c| c == b'\n').count() - 1)
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while lines(&file) < CALLS && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(lines(&file) >= CALLS, "the calls were logged");
    // Somewhere in the flood (bounded: the turn's 7 rounds log at most 7 * CALLS entries).
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 100;
    tokio::time::sleep(std::time::Duration::from_millis(u64::from(jitter))).await;
    let dir = tokio::task::block_in_place(|| gw.crash());
    flood.store(false, Ordering::SeqCst);

    let mut bytes = std::fs::read(&file).unwrap();
    let complete = bytes
        .split(|&b| b == b'\n')
        .filter(|l| serde_json::from_slice::<Value>(l).is_ok())
        .count();
    if bytes.ends_with(b"\n") {
        // The crash cut no line itself (one write(2) per line): tear one as a crash would.
        let torn =
            r#"{"time":"2026-01-01T00:00:00.000Z","session":"s","tool":"read","target":"caf"#;
        let mut append = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        use std::io::Write;
        append.write_all(torn.as_bytes()).unwrap();
        append.write_all(&[0xc3]).unwrap();
        bytes = std::fs::read(&file).unwrap();
    }
    let torn_line = bytes.split(|&b| b == b'\n').count();
    assert!(complete >= CALLS, "{complete}");

    let gw = tokio::task::block_in_place(|| crate::support::Gateway::start_in(dir));
    telegram.push(private_text(SENDER, "read the notes"));
    telegram
        .wait_until("the answer after the restart", |t| {
            t.sent_to(SENDER).iter().any(|m| m == "done")
        })
        .await;

    for json in [true, false] {
        let mut args = vec!["logs", "--tools", "--limit", "100000"];
        if json {
            args.push("--json");
        }
        let out = cli(gw.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains(&format!("skipped line {torn_line} of ")) && err.contains("tools.jsonl"),
            "the damaged line is named: {err}"
        );
        if json {
            let entries: Value = serde_json::from_slice(&out.stdout).unwrap();
            let entries = entries.as_array().unwrap();
            assert_eq!(
                entries.len(),
                complete + 1,
                "every complete entry, and the new one"
            );
            let last = entries.last().unwrap();
            assert_eq!(
                (&last["tool"], &last["target"]),
                (&json!("read"), &json!("notes.md"))
            );
            assert_eq!(last["status"], "ok");
        } else {
            let table = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                table.lines().count(),
                complete + 2,
                "a header and a row each"
            );
        }
    }
    // On disk: the torn line alone on its line, the new entry whole on the next.
    let bytes = std::fs::read(&file).unwrap();
    let disk: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    assert_eq!(
        disk.len(),
        torn_line + 2,
        "the torn line, the new entry, the end"
    );
    assert!(serde_json::from_slice::<Value>(disk[torn_line - 1]).is_err());
    let new: Value = serde_json::from_slice(disk[torn_line]).unwrap();
    assert_eq!(new["target"], "notes.md");
}
