//! The file tools through the real `clawfort gateway`: a scripted model asks for the
//! gateway's `.env` and for a workspace file over Telegram, and sees what the tools return.

use clawfort_fakes::model::{ok, Fake, Seen, KEY};
use clawfort_fakes::telegram::{private_text, Fake as Telegram};
use serde_json::{json, Value};

use crate::support::{append_env, state_dir, Gateway, TOKEN};

const BOT_TOKEN: &str = "123456789:AAHtestTOKENtestTOKENtestTOKENtest12";
pub(crate) const SENDER: i64 = 555;

pub(crate) fn answer(content: Value, stop: &str) -> Value {
    json!({
        "id": "msg", "type": "message", "role": "assistant", "model": "m1",
        "content": content, "stop_reason": stop,
        "usage": {"input_tokens": 10, "output_tokens": 10}
    })
}

pub(crate) fn read_call(n: usize, path: &str) -> Value {
    answer(
        json!([{"type": "tool_use", "id": format!("call_{n}"), "name": "read", "input": {"path": path}}]),
        "tool_use",
    )
}

/// The tool result the `n`th request carries back, as (is_error, content).
pub fn tool_result(seen: &Seen) -> (bool, String) {
    let body = seen.json();
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    let block = last["content"]
        .as_array()
        .and_then(|c| c.iter().find(|b| b["type"] == "tool_result"))
        .unwrap_or_else(|| panic!("no tool result in {last}"))
        .clone();
    (block["is_error"] == true, block["content"].to_string())
}

/// Starts the gateway with a fake model running `script`, Telegram with `SENDER` allowed,
/// and `extra` config keys; the workspace holds `notes.md`.
pub(crate) async fn start(
    script: impl Fn(usize, &Seen) -> clawfort_fakes::model::Reply + Send + Sync + 'static,
    extra: &str,
) -> (Fake, Telegram, Gateway) {
    let model = Fake::start(script).await;
    let telegram = Telegram::start(BOT_TOKEN).await;
    let config = format!(
        r#"{{
          models: {{ providers: {{ fake: {{
            api: "anthropic-messages", baseUrl: "{}", apiKey: "${{FAKE_API_KEY}}",
            models: [{{ id: "m1" }}],
          }} }} }},
          agents: {{ defaults: {{ model: "fake/m1" }} }},
          channels: {{ telegram: {{
            botToken: "${{TELEGRAM_BOT_TOKEN}}", apiRoot: "{}", dmPolicy: "allowlist",
            allowFrom: ["{SENDER}"],
          }} }},
          {extra}
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
    std::fs::create_dir(dir.path().join("workspace")).unwrap();
    std::fs::write(
        dir.path().join("workspace/notes.md"),
        "hello from the workspace\n",
    )
    .unwrap();
    let gw = tokio::task::block_in_place(|| Gateway::start_in(dir));
    (model, telegram, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_cannot_read_the_env_file_but_reads_the_workspace() {
    // The state directory is HOME here (OpenClaw's `~/.openclaw`); the whole home is an
    // allowed path, so the refusal of `.env` is the always-denied state directory winning.
    let (model, telegram, gw) = start(
        |n, _| {
            ok(match n {
                0 => read_call(0, "~/.env"),
                1 => read_call(1, "../.env"),
                2 => read_call(2, "notes.md"),
                _ => answer(json!([{"type": "text", "text": "done"}]), "end_turn"),
            })
        },
        r#"security: { allowedPaths: ["~"] },"#,
    )
    .await;
    telegram.push(private_text(SENDER, "show me your secrets"));
    telegram
        .wait_until("the final answer", |t| !t.sent_to(SENDER).is_empty())
        .await;
    assert_eq!(telegram.sent_to(SENDER), ["done"]);

    let seen = model.seen();
    assert_eq!(seen.len(), 4);
    let tools: Vec<String> = seen[0].json()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tools, ["edit", "read", "web_fetch", "write"]);

    let (error, content) = tool_result(&seen[1]);
    assert!(error, "{content}");
    assert!(
        content.contains("`~/.env` is in a denied location") && !content.contains("FAKE_API_KEY"),
        "{content}"
    );
    let (error, content) = tool_result(&seen[2]);
    assert!(
        error && content.contains("leads out of the workspace"),
        "{content}"
    );
    let (error, content) = tool_result(&seen[3]);
    assert!(
        !error && content.contains("hello from the workspace"),
        "{content}"
    );

    let everything = model.seen_without_auth();
    for secret in [TOKEN, KEY, BOT_TOKEN] {
        assert!(!everything.contains(secret), "a secret reached the model");
    }
    assert!(!gw
        .log_lines("file tools read, write, edit confined to")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_messaging_profile_offers_no_file_tools() {
    let (model, telegram, gw) = start(
        |_, _| ok(answer(json!([{"type": "text", "text": "hi"}]), "end_turn")),
        r#"tools: { profile: "messaging", deny: ["browser"] },"#,
    )
    .await;
    telegram.push(private_text(SENDER, "hello"));
    telegram
        .wait_until("the answer", |t| !t.sent_to(SENDER).is_empty())
        .await;
    let request = model.seen()[0].json();
    let tools = request["tools"].as_array().cloned().unwrap_or_default();
    assert!(tools.is_empty(), "{tools:?}");
    assert!(!gw
        .log_lines("tool policy names tools clawfort does not have (ignored): tools.deny: browser")
        .is_empty());
}
