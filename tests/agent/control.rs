//! The owner's side of a running gateway, end to end: the real `clawfort gateway` binary with
//! the fake Anthropic server and the fake Telegram Bot API on loopback. Secrets kept out of
//! files, logs, chats and model requests; the owner's notices; status and audit lines.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::fake::{assert_no_key, ok, Fake, Reply, KEY};
use crate::support::{state_dir, Gateway, TOKEN};
use crate::telegram_fake::{private_text, Fake as Telegram};

pub const BOT_TOKEN: &str = "123456789:AAHtestTOKENtestTOKENtestTOKENtest12";
/// The owner, named in `commands.ownerAllowFrom` (or `allowFrom`, as the config says).
pub const OWNER: i64 = 4_242_001;
/// A key nobody configured, pasted into a chat.
const PASTED: &str = "sk-proj-PASTEDpastedPASTEDpasted0123456789";

/// An answer of `text` costing 1000 input and 100 output tokens.
pub fn answer(text: &str) -> Value {
    json!({
        "id": "msg", "type": "message", "role": "assistant", "model": "m1",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1000, "output_tokens": 100}
    })
}

/// More config for [`agent_dir`], as JSON5 members each ending in a comma.
#[derive(Default)]
pub struct Extra<'a> {
    /// Top-level keys.
    pub top: &'a str,
    /// Keys of `channels.telegram`.
    pub telegram: &'a str,
    /// Other channels, inside `channels`.
    pub channels: &'a str,
}

/// A state directory for a gateway whose model `fake/m1` is served by `model` and whose
/// Telegram bot by `telegram`.
pub fn agent_dir(model: &Fake, telegram: &Telegram, extra: Extra) -> tempfile::TempDir {
    let config = format!(
        r#"{{
          models: {{ providers: {{ fake: {{
            api: "anthropic-messages", baseUrl: "{}", apiKey: "${{FAKE_API_KEY}}",
            models: [{{ id: "m1", contextWindow: 100000, cost: {{ input: 3, output: 15 }} }}],
          }} }} }},
          agents: {{ defaults: {{ model: "fake/m1" }} }},
          channels: {{ telegram: {{
            botToken: "${{TELEGRAM_BOT_TOKEN}}", apiRoot: "{}", dmPolicy: "pairing",
            {}
          }}, {} }},
          {}
        }}"#,
        model.url(""),
        telegram.api_root(),
        extra.telegram,
        extra.channels,
        extra.top,
    );
    let dir = state_dir(Some(&config));
    let env = dir.path().join(".env");
    let mut text = std::fs::read_to_string(&env).unwrap();
    text.push_str(&format!(
        "FAKE_API_KEY={KEY}\nTELEGRAM_BOT_TOKEN={BOT_TOKEN}\n"
    ));
    std::fs::write(&env, text).unwrap();
    dir
}

/// Starts the gateway from an async test.
pub fn start(dir: tempfile::TempDir) -> Gateway {
    tokio::task::block_in_place(|| Gateway::start_in(dir))
}

/// Every regular file under `dir` (recursively) with its content, read as lossy text.
pub fn every_file(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                let bytes = std::fs::read(entry.path()).unwrap();
                let name = entry
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .display()
                    .to_string();
                out.push((name, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    out
}

/// Asserts that `secret` is in no file under the state directory but `.env` (where the
/// configured ones belong) and in no line the gateway logged.
fn assert_nowhere(gw: &Gateway, what: &str, secret: &str) {
    for (name, text) in every_file(gw.path()) {
        if name != ".env" {
            assert!(!text.contains(secret), "{what} is in {name}:\n{text}");
        }
    }
    let log = gw.log_lines("").join("\n");
    assert!(!log.contains(secret), "{what} is in the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_or_echoed_secret_lands_in_no_file_log_chat_or_model_request() {
    // The model repeats the configured key and the pasted one (as an injected model might).
    let model = Fake::start(|_, _| ok(answer(&format!("Noted: {PASTED} and {KEY}")))).await;
    let telegram = Telegram::start(BOT_TOKEN).await;
    let owner = format!(r#"allowFrom: ["{OWNER}"],"#);
    let extra = Extra {
        telegram: &owner,
        channels: r#"webhook: { allowFrom: ["ops"] },"#,
        ..Extra::default()
    };
    let gw = start(agent_dir(&model, &telegram, extra));

    let pasted =
        format!("my OpenAI key is {PASTED}, the bot token {BOT_TOKEN}, the gateway token {TOKEN}");
    telegram.push(private_text(OWNER, &pasted));
    telegram
        .wait_until("the model's answer", |t| !t.sent_to(OWNER).is_empty())
        .await;
    let reply = telegram.sent_to(OWNER).remove(0);
    assert_eq!(reply, "Noted: [redacted] and [redacted]");
    // The webhook channel writes to transcripts too.
    let answer = gw.message(json!({"channel": "webhook", "peer": "ops", "text": pasted}));
    assert_eq!(answer["status"], "accepted", "{answer}");

    // The model saw the message with the secrets replaced.
    let request = model.seen()[0].json().to_string();
    assert!(request.contains("my OpenAI key is [redacted]"), "{request}");
    for (what, secret) in [
        ("the pasted key", PASTED),
        ("the bot token", BOT_TOKEN),
        ("the gateway token", TOKEN),
    ] {
        assert!(
            !request.contains(secret),
            "{what} reached the model: {request}"
        );
    }
    // And the transcript holds the conversation, redacted.
    let transcripts: String = every_file(&gw.path().join("agents/main/sessions"))
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert!(
        transcripts.contains("my OpenAI key is [redacted], the bot token [redacted]"),
        "{transcripts}"
    );
    assert_eq!(
        transcripts
            .matches("Noted: [redacted] and [redacted]")
            .count(),
        1
    );

    for (what, secret) in [
        ("the pasted key", PASTED),
        ("the provider key", KEY),
        ("the bot token", BOT_TOKEN),
        ("the gateway token", TOKEN),
    ] {
        assert_nowhere(&gw, what, secret);
    }
    let env = std::fs::read_to_string(gw.path().join(".env")).unwrap();
    assert!(!env.contains(PASTED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_echoing_the_key_leaves_no_part_of_it_in_the_log() {
    // A 400 whose message quotes the key where the gateway shortens error text (300
    // characters): cut first and scrubbed second, the key's first 20 characters would stay.
    let message = format!("{}{KEY} is not allowed", "x".repeat(300 - 23 - 20));
    let body =
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
    let model = Fake::start(move |_, _| Reply::Json(400, vec![], body.to_string())).await;
    let telegram = Telegram::start(BOT_TOKEN).await;
    let owner = format!(r#"allowFrom: ["{OWNER}"],"#);
    let extra = Extra {
        telegram: &owner,
        ..Extra::default()
    };
    let gw = start(agent_dir(&model, &telegram, extra));
    telegram.push(private_text(OWNER, "hello"));
    telegram
        .wait_until("the failure reply", |t| !t.sent_to(OWNER).is_empty())
        .await;
    let failed = gw.wait_log("answered HTTP 400", 1);
    assert!(!failed.is_empty(), "{:?}", gw.log_lines(""));
    assert!(failed[0].contains("[redacted]"), "{failed:?}");
    assert_no_key("the log", &gw.log_lines("").join("\n"));
    for (name, text) in every_file(gw.path()) {
        if name != ".env" {
            assert_no_key(&name, &text);
        }
    }
    assert_no_key("the chat", &telegram.sent_to(OWNER).join("\n"));
    tokio::time::sleep(Duration::from_millis(10)).await;
}
