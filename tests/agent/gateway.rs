//! End to end: the real `clawfort gateway` binary with a fake Anthropic server and a fake
//! Telegram Bot API, pairing, a model answer, the transcript and the ledger.

use std::time::Duration;

use clawfort_fakes::model::{ok, Fake, KEY};
use clawfort_fakes::telegram::{private_text, Fake as Telegram};
use serde_json::{json, Value};

use crate::support::{append_env, cli, state_dir, Gateway};

const BOT_TOKEN: &str = "123456789:AAHtestTOKENtestTOKENtestTOKENtest12";
const STRANGER: i64 = 555;

fn answer(text: &str) -> Value {
    json!({
        "id": "msg", "type": "message", "role": "assistant", "model": "m1",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1000, "output_tokens": 100}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_sender_gets_the_models_answer_through_telegram() {
    let model = Fake::start(|_, _| ok(answer("Hello from the model."))).await;
    let telegram = Telegram::start(BOT_TOKEN).await;
    let config = format!(
        r#"{{
          models: {{ providers: {{ fake: {{
            api: "anthropic-messages", baseUrl: "{}", apiKey: "${{FAKE_API_KEY}}",
            models: [{{ id: "m1", contextWindow: 100000, cost: {{ input: 3, output: 15 }} }}],
          }} }} }},
          agents: {{ defaults: {{ model: "fake/m1" }} }},
          channels: {{ telegram: {{
            botToken: "${{TELEGRAM_BOT_TOKEN}}", apiRoot: "{}", dmPolicy: "pairing",
          }} }},
          budget: {{ dailyUsd: 5 }},
        }}"#,
        model.url(""),
        telegram.api_root()
    );
    let dir = state_dir(Some(&config));
    append_env(
        dir.path(),
        &format!(
            "FAKE_API_KEY={KEY}
TELEGRAM_BOT_TOKEN={BOT_TOKEN}
"
        ),
    );
    let gw = tokio::task::block_in_place(|| Gateway::start_in(dir));

    // An unknown sender gets the pairing reply and the model is not called.
    telegram.push(private_text(STRANGER, "hi"));
    telegram
        .wait_until("the pairing reply", |t| !t.sent_to(STRANGER).is_empty())
        .await;
    let reply = telegram.sent_to(STRANGER).remove(0);
    let code = reply
        .split("Pairing code: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no code in {reply}"))
        .to_owned();
    assert!(model.seen().is_empty());

    let out = cli(
        gw.path(),
        &["pairing", "approve", &code, "--channel", "telegram"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    telegram.push(private_text(STRANGER, "what is 2+2?"));
    telegram
        .wait_until("the model's answer", |t| t.sent_to(STRANGER).len() >= 2)
        .await;
    assert_eq!(telegram.sent_to(STRANGER)[1], "Hello from the model.");
    let seen = model.seen();
    assert_eq!(seen.len(), 1);
    let request = seen[0].json();
    let asked = request["messages"][0]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(asked.contains("what is 2+2?"), "{asked}");
    assert!(
        asked.starts_with("<untrusted-"),
        "a non-owner is untrusted: {asked}"
    );

    // The transcript holds the question and the answer; the ledger the call.
    let sessions = gw.path().join("agents/main/sessions");
    let mut transcript = String::new();
    for entry in std::fs::read_dir(&sessions).unwrap() {
        transcript.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert!(transcript.contains("what is 2+2?"), "{transcript}");
    assert!(transcript.contains(r#""role":"assistant""#), "{transcript}");
    assert!(transcript.contains("Hello from the model."), "{transcript}");
    let ledger = std::fs::read_to_string(gw.path().join("usage/ledger.jsonl")).unwrap();
    assert_eq!(ledger.lines().count(), 1, "{ledger}");
    assert!(
        ledger.contains(r#""model":"fake/m1""#) && ledger.contains(r#""input":1000"#),
        "{ledger}"
    );

    // `clawfort usage` reads the same ledger.
    let out = cli(gw.path(), &["usage", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let usage: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(usage["today"]["calls"], 1, "{usage}");
    assert_eq!(usage["today"]["byModel"]["fake/m1"]["calls"], 1, "{usage}");

    let log = gw.log_lines("").join("\n");
    assert!(
        !log.contains(KEY) && !log.contains(BOT_TOKEN),
        "a secret in the log:\n{log}"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[test]
fn a_damaged_ledger_is_an_error_naming_file_and_line() {
    let dir = state_dir(None);
    let usage = dir.path().join("usage");
    std::fs::create_dir(&usage).unwrap();
    std::fs::write(
        usage.join("ledger.jsonl"),
        "{\"kind\":\"call\",\"ts\":\"2026-01-01T00:00:00Z\",\"session\":\"s\",\"model\":\"a/b\",\
         \"input\":1,\"output\":1,\"cacheRead\":0,\"cacheWrite\":0,\"usd\":0.5}\nnot json\n",
    )
    .unwrap();
    let out = cli(dir.path(), &["usage"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ledger.jsonl line 2 is damaged"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_agent_settings_stop_the_gateway_with_the_key_named() {
    let provider = r#"models: { providers: { fake: { api: "anthropic-messages",
        baseUrl: "http://127.0.0.1:9", models: [{ id: "m1" }] } } },
        agents: { defaults: { model: "fake/m1" } },"#;
    let cases = [
        (
            format!(
                "{{ {provider} channels: {{ telegram: {{ botToken: \"${{NO_SUCH_TOKEN}}\" }} }} }}"
            ),
            "channels.telegram.botToken",
        ),
        (
            format!("{{ {provider} channels: {{ telegram: {{ tokenFile: \"~/token\" }} }} }}"),
            "may be read by other users",
        ),
    ];
    for (config, words) in cases {
        let dir = state_dir(Some(&config));
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{BOT_TOKEN}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = cli(dir.path(), &["gateway", "--port", "0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}: {stderr}");
        assert!(stderr.contains(words), "{config}: {stderr}");
        assert!(!stderr.contains(BOT_TOKEN), "{stderr}");
        let audit = cli(dir.path(), &["security", "audit", "--json"]);
        assert!(
            matches!(audit.status.code(), Some(0 | 1)),
            "the audit failed on {config}: {}",
            String::from_utf8_lossy(&audit.stderr)
        );
    }
}

/// A `docker.binds` entry holding the sandbox's Docker socket is refused at start wherever
/// `DOCKER_HOST` puts the socket (the appliance's is in `/run/clawfort-sandbox`, which the
/// config's own list of Docker socket places does not name): in a container it would be
/// control of the daemon.
#[test]
fn a_bind_holding_the_sandbox_socket_stops_the_gateway() {
    let run = tempfile::tempdir().unwrap();
    let sockets = run.path().join("clawfort-sandbox");
    std::fs::create_dir(&sockets).unwrap();
    let config = format!(
        r#"{{ models: {{ providers: {{ fake: {{ api: "anthropic-messages",
            baseUrl: "http://127.0.0.1:9", models: [{{ id: "m1" }}] }} }} }},
          agents: {{ defaults: {{ model: "fake/m1", sandbox: {{ mode: "all",
            docker: {{ binds: ["{}:/d:ro"] }} }} }} }},
          tools: {{ exec: {{ security: "full" }} }} }}"#,
        sockets.display()
    );
    let dir = state_dir(Some(&config));
    let mut child = crate::support::command(dir.path())
        .args(["gateway", "--port", "0"])
        .env(
            "DOCKER_HOST",
            format!("unix://{}/docker.sock", sockets.display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the gateway started with the sandbox's socket directory bound in");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("agents.defaults.sandbox.docker.binds[0]")
            && stderr.contains("control of the daemon"),
        "{stderr}"
    );
}
