//! The `clawfort-fakes` binary as a controller outside the process uses it: scripted
//! answers, updates pushed at run time, the calls read back over the control API and from
//! the record file.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const TOKEN: &str = "123456:AAfakeTOKENfakeTOKENfakeTOKENfake1";
const KEY: &str = "sk-test-0123456789";

/// The binary, killed when dropped.
struct Fakes(Child);

impl Drop for Fakes {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request with a JSON body; the status and the body parsed as JSON.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &Value,
) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap())
}

/// Starts the binary with `args` and `script`; its servers' addresses by kind.
fn start(
    args: &[&str],
    script: &std::path::Path,
    record: Option<&std::path::Path>,
) -> (Fakes, HashMap<String, SocketAddr>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clawfort-fakes"));
    command.args(args).arg("--script").arg(script);
    if let Some(record) = record {
        command.arg("--record").arg(record);
    }
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let fakes = Fakes(child);
    let servers = args.iter().filter(|a| a.starts_with("--")).count();
    let mut addrs = HashMap::new();
    for line in BufReader::new(stdout).lines().take(servers) {
        let line = line.unwrap();
        let (kind, url) = line
            .strip_prefix("listening: ")
            .and_then(|rest| rest.split_once(" http://"))
            .unwrap_or_else(|| panic!("unexpected line {line}"));
        addrs.insert(kind.to_owned(), url.parse::<SocketAddr>().unwrap());
    }
    (fakes, addrs)
}

#[test]
fn scripted_answers_pushed_updates_and_recorded_calls() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.json");
    let record = dir.path().join("calls.jsonl");
    std::fs::write(
        &script,
        json!({
            "model": {"text": "Four.", "apiKey": KEY, "model": "m1"},
            "telegram": {"token": TOKEN, "updates": [
                clawfort_fakes::telegram::private_text(555, "hi")
            ]},
        })
        .to_string(),
    )
    .unwrap();
    let (fakes, addrs) = start(
        &["--openai", "127.0.0.1:0", "--telegram", "127.0.0.1:0"],
        &script,
        Some(&record),
    );
    let (model, telegram) = (addrs["model"], addrs["telegram"]);
    let bot = |method: &str| format!("/bot{TOKEN}/{method}");

    // The scripted update, then one pushed over the control API.
    let (status, first) = call(telegram, "POST", &bot("getUpdates"), &[], &json!({}));
    assert_eq!(status, 200);
    assert_eq!(first["result"][0]["update_id"], 100, "{first}");
    assert_eq!(first["result"][0]["message"]["text"], "hi");
    let (status, pushed) = call(
        telegram,
        "POST",
        "/_fake/updates",
        &[],
        &clawfort_fakes::telegram::private_text(555, "again"),
    );
    assert_eq!(
        (status, &pushed["update_ids"]),
        (200, &json!([101])),
        "{pushed}"
    );
    let (_, next) = call(
        telegram,
        "POST",
        &bot("getUpdates"),
        &[],
        &json!({"offset": 101, "timeout": 5}),
    );
    assert_eq!(next["result"].as_array().unwrap().len(), 1, "{next}");
    assert_eq!(next["result"][0]["message"]["text"], "again");
    let (status, _) = call(telegram, "POST", "/botWRONG/getMe", &[], &Value::Null);
    assert_eq!(status, 401);
    call(
        telegram,
        "POST",
        &bot("sendMessage"),
        &[],
        &json!({"chat_id": 555, "text": "pong"}),
    );

    // The model answers both wire formats and checks the key.
    let (status, answer) = call(
        model,
        "POST",
        "/v1/chat/completions",
        &[&format!("Authorization: Bearer {KEY}")],
        &json!({"model": "m1", "messages": [{"role": "user", "content": "2+2?"}]}),
    );
    assert_eq!(status, 200);
    assert_eq!(answer["choices"][0]["message"]["content"], "Four.");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let (status, answer) = call(
        model,
        "POST",
        "/v1/messages",
        &[
            &format!("x-api-key: {KEY}"),
            "anthropic-version: 2023-06-01",
        ],
        &json!({"model": "m1", "max_tokens": 8, "messages": [{"role": "user", "content": "2+2?"}]}),
    );
    assert_eq!(status, 200);
    assert_eq!(answer["content"][0]["text"], "Four.");
    let (status, error) = call(
        model,
        "POST",
        "/v1/chat/completions",
        &["Authorization: Bearer wrong"],
        &json!({}),
    );
    assert_eq!(status, 401);
    assert_eq!(error["error"]["code"], "invalid_api_key");
    let (status, list) = call(
        model,
        "GET",
        "/v1/models",
        &[&format!("Authorization: Bearer {KEY}")],
        &Value::Null,
    );
    assert_eq!((status, &list["data"][0]["id"]), (200, &json!("m1")));

    // What the controller reads back.
    let (_, sent) = call(
        telegram,
        "GET",
        "/_fake/calls?method=sendMessage",
        &[],
        &Value::Null,
    );
    assert_eq!(sent.as_array().unwrap().len(), 1, "{sent}");
    assert_eq!(sent[0]["body"]["text"], "pong");
    let (_, polls) = call(
        telegram,
        "GET",
        "/_fake/calls?method=getUpdates",
        &[],
        &Value::Null,
    );
    assert_eq!(polls[0]["delivered"], json!([100]));
    assert_eq!(polls[1]["delivered"], json!([101]));
    let (_, seen) = call(model, "GET", "/_fake/calls", &[], &Value::Null);
    assert_eq!(seen.as_array().unwrap().len(), 4, "{seen}");
    assert_eq!(seen[0]["path"], "/v1/chat/completions");
    assert_eq!(seen[0]["body"]["messages"][0]["content"], "2+2?");
    let (status, _) = call(model, "GET", "/_fake/nothing", &[], &Value::Null);
    assert_eq!(status, 404);

    drop(fakes);
    let lines: Vec<Value> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |server: &str| lines.iter().filter(|l| l["server"] == server).count();
    assert_eq!((count("telegram"), count("model")), (4, 4), "{lines:?}");
    assert!(lines.iter().all(|l| l["unixMs"].as_f64().unwrap() > 1.7e12));
}

#[test]
fn a_bad_script_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.json");
    std::fs::write(&script, r#"{"model": {"txt": "typo"}}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clawfort-fakes"))
        .args(["--model", "127.0.0.1:0", "--script"])
        .arg(&script)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("script.json is not valid"), "{stderr}");
    assert!(stderr.contains("unknown field `txt`"), "{stderr}");
}

/// A controller plays a rogue model: queued tool calls answer the next chat request, in that
/// API's format, once; a malformed plan is refused.
#[test]
fn queued_tool_calls_answer_the_next_chat_request_once() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.json");
    std::fs::write(
        &script,
        json!({"model": {"text": "Done.", "apiKey": KEY}}).to_string(),
    )
    .unwrap();
    let (_fakes, addrs) = start(&["--model", "127.0.0.1:0"], &script, None);
    let model = addrs["model"];
    let plan = |calls: Value| {
        call(
            model,
            "POST",
            "/_fake/tool-calls",
            &[],
            &json!({"calls": calls}),
        )
    };
    let read = json!([{"name": "read", "input": {"path": "../.env"}},
                      {"name": "exec", "input": {"command": "cat /etc/shadow"}}]);
    assert_eq!(plan(read.clone()), (200, json!({"queued": 1})));
    assert_eq!(plan(read).0, 200);
    assert_eq!(plan(json!([])).0, 400);
    let (status, _) = call(
        model,
        "POST",
        "/_fake/tool-calls",
        &[],
        &json!({"calls": [{"nme": "x"}]}),
    );
    assert_eq!(status, 400);

    let anthropic = [
        &format!("x-api-key: {KEY}") as &str,
        "anthropic-version: 2023-06-01",
    ];
    let messages =
        json!({"model": "m1", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    // A wrong key gets the script's 401, and the plan stays queued.
    let (status, _) = call(
        model,
        "POST",
        "/v1/messages",
        &["x-api-key: wrong"],
        &messages,
    );
    assert_eq!(status, 401);
    let (status, answer) = call(model, "POST", "/v1/messages", &anthropic, &messages);
    assert_eq!(status, 200);
    assert_eq!(answer["stop_reason"], "tool_use", "{answer}");
    assert_eq!(answer["model"], "m1");
    assert_eq!(answer["content"][0]["type"], "tool_use");
    assert_eq!(answer["content"][0]["name"], "read");
    assert_eq!(answer["content"][0]["input"], json!({"path": "../.env"}));
    assert_eq!(answer["content"][1]["name"], "exec");
    assert_ne!(answer["content"][0]["id"], answer["content"][1]["id"]);

    let bearer = format!("Authorization: Bearer {KEY}");
    let chat = json!({"model": "m2", "messages": [{"role": "user", "content": "hi"}]});
    let (_, answer) = call(model, "POST", "/v1/chat/completions", &[&bearer], &chat);
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    let first = &choice["message"]["tool_calls"][0];
    assert_eq!(first["type"], "function");
    assert_eq!(first["function"]["name"], "read");
    let arguments: Value =
        serde_json::from_str(first["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"path": "../.env"}));

    // The queue is empty: the script's text again.
    let (_, answer) = call(model, "POST", "/v1/chat/completions", &[&bearer], &chat);
    assert_eq!(answer["choices"][0]["message"]["content"], "Done.");
}
