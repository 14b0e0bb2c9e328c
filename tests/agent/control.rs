//! The owner's side of a running gateway, end to end: the real `clawfort gateway` binary with
//! the fake Anthropic server and the fake Telegram Bot API on loopback. Secrets kept out of
//! files, logs, chats and model requests; the owner's notices; status and audit lines.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{append_env, state_dir, Gateway, TOKEN};
use clawfort_fakes::model::{assert_no_key, ok, Fake, Reply, KEY};
use clawfort_fakes::telegram::{private_text, Fake as Telegram};

pub const BOT_TOKEN: &str = "123456789:AAHtestTOKENtestTOKENtestTOKENtest12";
/// The owner, named in `commands.ownerAllowFrom` (or `allowFrom`, as the config says).
pub const OWNER: i64 = 4_242_001;
/// An approved sender who is not the owner.
pub const FRIEND: i64 = 4_242_002;
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
    append_env(
        dir.path(),
        &format!(
            "FAKE_API_KEY={KEY}
TELEGRAM_BOT_TOKEN={BOT_TOKEN}
"
        ),
    );
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

/// Waits until `chat` has `count` messages, then a moment more, and returns them all.
async fn settled(telegram: &Telegram, chat: i64, count: usize) -> Vec<String> {
    telegram
        .wait_until(&format!("{count} message(s) to {chat}"), |t| {
            t.sent_to(chat).len() >= count
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    telegram.sent_to(chat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_gets_the_80_percent_warning_once_across_a_restart() {
    // $0.0045 a call against $0.01 a day: the second call crosses 80 %, the fourth is refused.
    let model = Fake::start(|_, _| ok(answer("fine"))).await;
    let telegram = Telegram::start(BOT_TOKEN).await;
    let owner = format!(r#"allowFrom: ["{FRIEND}"],"#);
    let top = format!(
        r#"commands: {{ ownerAllowFrom: ["telegram:{OWNER}"] }}, budget: {{ dailyUsd: 0.01 }},"#
    );
    let extra = Extra {
        top: &top,
        telegram: &owner,
        ..Extra::default()
    };
    let gw = start(agent_dir(&model, &telegram, extra));
    telegram.push(private_text(FRIEND, "one"));
    settled(&telegram, FRIEND, 1).await;
    assert!(telegram.sent_to(OWNER).is_empty());
    telegram.push(private_text(FRIEND, "two"));
    let to_owner = settled(&telegram, OWNER, 1).await;
    assert_eq!(to_owner.len(), 1, "{to_owner:?}");
    assert!(
        to_owner[0]
            .starts_with("Budget warning: $0.01 of the $0.01 daily spend budget is used (90 %"),
        "{}",
        to_owner[0]
    );
    // The friend's answers are the model's, nothing appended.
    assert_eq!(telegram.sent_to(FRIEND), ["fine", "fine"]);
    assert_eq!(gw.wait_log("daily spend budget is used", 1).len(), 1);

    let gw = tokio::task::block_in_place(|| gw.restart());
    telegram.push(private_text(FRIEND, "three"));
    settled(&telegram, FRIEND, 3).await;
    telegram.push(private_text(FRIEND, "four"));
    let to_friend = settled(&telegram, FRIEND, 4).await;
    assert!(
        to_friend[3].starts_with("I cannot answer now: the daily spend budget of $0.01 is used up"),
        "the refusal is said in the chat: {to_friend:?}"
    );
    assert_eq!(model.seen().len(), 3, "no call past the budget");
    assert_eq!(telegram.sent_to(OWNER).len(), 1, "the warning came once");
    assert!(gw.log_lines("daily spend budget is used").is_empty());
    let ledger = std::fs::read_to_string(gw.path().join("usage/ledger.jsonl")).unwrap();
    assert_eq!(ledger.matches(r#""kind":"warn""#).count(), 1, "{ledger}");
    assert_eq!(
        ledger.matches(r#""kind":"notified""#).count(),
        1,
        "{ledger}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_the_owner_never_got_is_sent_after_a_restart_and_only_then() {
    let model = Fake::start(|_, _| ok(answer("fine"))).await;
    let telegram = Telegram::start(BOT_TOKEN).await;
    let top =
        format!(r#"commands: {{ ownerAllowFrom: ["{OWNER}"] }}, budget: {{ monthlyUsd: 10 }},"#);
    let extra = Extra {
        top: &top,
        ..Extra::default()
    };
    let dir = agent_dir(&model, &telegram, extra);
    // The last run crossed 80 % and stopped before the owner was told.
    let now = jiff::Timestamp::now();
    let month = now.strftime("%Y-%m").to_string();
    std::fs::create_dir(dir.path().join("usage")).unwrap();
    std::fs::write(
        dir.path().join("usage/ledger.jsonl"),
        format!(
            "{{\"kind\":\"call\",\"ts\":\"{now}\",\"session\":\"s\",\"model\":\"fake/m1\",\
             \"input\":1,\"output\":1,\"cacheRead\":0,\"cacheWrite\":0,\"usd\":8.5}}\n\
             {{\"kind\":\"warn\",\"ts\":\"{now}\",\"period\":\"monthly\",\"key\":\"{month}\"}}\n"
        ),
    )
    .unwrap();
    let gw = start(dir);
    let to_owner = settled(&telegram, OWNER, 1).await;
    assert!(
        to_owner[0].starts_with("Budget warning: $8.50 of the $10.00 monthly spend budget"),
        "{to_owner:?}"
    );
    let gw = tokio::task::block_in_place(|| gw.restart());
    gw.wait_log("Telegram: polling as", 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(telegram.sent_to(OWNER).len(), 1, "sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_is_one_log_line_one_owner_message_and_no_retries() {
    let model = Fake::start(|_, _| {
        Reply::Json(
            401,
            vec![],
            json!({"type": "error", "error": {"type": "authentication_error",
                   "message": "invalid x-api-key"}})
            .to_string(),
        )
    })
    .await;
    let telegram = Telegram::start(BOT_TOKEN).await;
    let friend = format!(r#"allowFrom: ["{FRIEND}"],"#);
    let top = format!(r#"commands: {{ ownerAllowFrom: ["telegram:{OWNER}"] }},"#);
    let extra = Extra {
        top: &top,
        telegram: &friend,
        ..Extra::default()
    };
    let gw = start(agent_dir(&model, &telegram, extra));
    telegram.push(private_text(FRIEND, "hello"));
    settled(&telegram, FRIEND, 1).await;
    telegram.push(private_text(FRIEND, "hello again"));
    let to_friend = settled(&telegram, FRIEND, 2).await;
    assert!(
        to_friend.iter().all(|t| t.contains("rejected the API key")),
        "{to_friend:?}"
    );
    assert_eq!(
        model.seen().len(),
        2,
        "one request per message, none retried"
    );
    let to_owner = telegram.sent_to(OWNER);
    assert_eq!(to_owner.len(), 1, "{to_owner:?}");
    assert!(
        to_owner[0].contains("models.providers.<id>.apiKey"),
        "{to_owner:?}"
    );
    let lines = gw.log_lines("rejected the API key");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("HTTP 401") && lines[0].contains("FAKE_API_KEY"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_provider_models_owner_channel_and_budget_and_no_secret() {
    let model = Fake::start(|_, _| ok(answer("fine"))).await;
    let telegram = Telegram::start(BOT_TOKEN).await;
    let owner = format!(r#"allowFrom: ["{OWNER}"],"#);
    let extra = Extra {
        top: "budget: { dailyUsd: 5 },",
        telegram: &owner,
        ..Extra::default()
    };
    let gw = start(agent_dir(&model, &telegram, extra));
    // The next poll fails once (the fake's error text quotes the token); then one turn.
    telegram.fail("getUpdates", 502, 1, None);
    telegram.push(private_text(OWNER, "hello"));
    settled(&telegram, OWNER, 1).await;
    // A poll answered 200 after the failed one was answered (a call's status is known when it
    // arrives, so "the last call is a 200" also matched a long poll still waiting).
    telegram
        .wait_until("a poll answered after the failure", |t| {
            let calls = t.calls("getUpdates");
            let failed = calls
                .iter()
                .find(|c| c.status == 502)
                .and_then(|c| c.answered);
            failed.is_some_and(|failed| {
                calls
                    .iter()
                    .any(|c| c.status == 200 && c.answered.is_some_and(|at| at > failed))
            })
        })
        .await;

    // `clawfort status` finds the gateway through gateway.port.
    let config_path = gw.path().join("openclaw.json");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let config = config.replacen(
        '{',
        &format!("{{ gateway: {{ port: {} }},", gw.addr.port()),
        1,
    );
    std::fs::write(&config_path, config).unwrap();
    // The gateway reads that answer a moment after the fake gave it: ask again (bounded) until
    // the channel says it polls.
    let mut out = crate::support::cli(gw.path(), &["status", "--json"]);
    for _ in 0..50 {
        let polling = serde_json::from_slice::<Value>(&out.stdout)
            .is_ok_and(|j| j["agent"]["channels"]["telegram"]["state"] == "polling");
        if polling || !out.status.success() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        out = crate::support::cli(gw.path(), &["status", "--json"]);
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let agent = &json["agent"];
    assert_eq!(
        agent["providers"],
        json!([{"id": "fake", "api": "anthropic-messages", "baseUrl": model.url("")}])
    );
    assert_eq!(
        agent["model"],
        json!({"primary": "fake/m1", "fallbacks": []})
    );
    assert_eq!(agent["owners"], json!([format!("telegram:{OWNER}")]));
    let tg = &agent["channels"]["telegram"];
    assert_eq!(tg["state"], "polling", "{tg}");
    assert_eq!(tg["bot"], "claw_bot");
    assert!(tg["lastOk"].is_string(), "{tg}");
    let error = tg["lastError"].as_str().unwrap();
    assert!(
        error.contains("error 502") && error.contains("bot[redacted]"),
        "{error}"
    );
    assert_eq!(agent["budget"]["dailyUsd"], 5.0);
    assert_eq!(agent["budget"]["monthlyUsd"], Value::Null);
    assert_eq!(agent["budget"]["today"]["calls"], 1);
    assert!((agent["budget"]["today"]["usd"].as_f64().unwrap() - 0.0045).abs() < 1e-9);

    let out = crate::support::cli(gw.path(), &["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "  model         fake/m1\n".to_owned(),
        format!(
            "  provider      fake (anthropic-messages, {})\n",
            model.url("")
        ),
        format!("  owner         telegram:{OWNER}\n"),
        "  telegram      polling as @claw_bot, last poll ".to_owned(),
        "  today (UTC)   $0.00 of $5.00, 1 call(s)\n".to_owned(),
        "  this month    $0.00 (no limit), 1 call(s)\n".to_owned(),
    ] {
        assert!(text.contains(&want), "{want:?} not in:\n{text}");
    }
    for (what, secret) in [
        ("provider key", KEY),
        ("bot token", BOT_TOKEN),
        ("gateway token", TOKEN),
    ] {
        assert!(
            !text.contains(secret) && !json.to_string().contains(secret),
            "{what} in the status"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_md_is_read_without_following_a_link_and_cut_with_one_log_line() {
    let model = Fake::start(|_, _| ok(answer("fine"))).await;
    let telegram = Telegram::start(BOT_TOKEN).await;
    let owner = format!(r#"allowFrom: ["{OWNER}"],"#);
    let extra = Extra {
        telegram: &owner,
        ..Extra::default()
    };
    let dir = agent_dir(&model, &telegram, extra);
    let workspace = dir.path().join("workspace");
    std::fs::create_dir(&workspace).unwrap();
    // A link to the secrets file, as a prompt-injected tool might leave behind.
    std::os::unix::fs::symlink(dir.path().join(".env"), workspace.join("AGENTS.md")).unwrap();
    let gw = start(dir);
    telegram.push(private_text(OWNER, "one"));
    settled(&telegram, OWNER, 1).await;
    let system = model.seen()[0].json()["system"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!system.contains("AGENTS.md"), "{system}");
    assert!(!system.contains("OPENCLAW_GATEWAY_TOKEN") && !system.contains("FAKE_API_KEY"));
    assert_eq!(gw.wait_log("AGENTS.md: it is a symbolic link", 1).len(), 1);

    std::fs::remove_file(workspace.join("AGENTS.md")).unwrap();
    std::fs::write(workspace.join("AGENTS.md"), "Be brief. ".repeat(4096)).unwrap();
    for (n, text) in [(2, "two"), (3, "three")] {
        telegram.push(private_text(OWNER, text));
        settled(&telegram, OWNER, n).await;
    }
    let system = model.seen()[2].json()["system"]
        .as_str()
        .unwrap()
        .to_owned();
    let agents = system.split("instructions for you)\n\n").nth(1).unwrap();
    assert_eq!(agents.len(), 32 * 1024);
    assert!(agents.starts_with("Be brief. Be brief."));
    let cut = gw.log_lines("only its first 32 KiB go into the prompt");
    assert_eq!(cut.len(), 1, "once, not per turn: {cut:?}");
    assert!(cut[0].contains("AGENTS.md: it is 40960 bytes"), "{cut:?}");
}
