//! `clawfort stop-all` and `clawfort status` (the CLI's gateway client), and
//! `POST /api/agent/stop-all`, against a running gateway.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{text, BOT_TOKEN, OWNER};
use crate::support::{append_env, cli, state_dir, Gateway, TOKEN};
use clawfort_fakes::model::{ok, Fake, Reply, KEY};
use clawfort_fakes::telegram::{private_text, Fake as Telegram};

/// A gateway whose agent talks to `model` (Anthropic) and `telegram`, the owner approved.
/// Once it runs, `gateway.port` in its config is the port it got, so the CLI finds it.
fn gateway(model: &Fake, telegram: &Telegram) -> Gateway {
    let config = |port: u16| {
        format!(
            r#"{{
              gateway: {{ port: {port} }},
              models: {{ providers: {{ fake: {{
                api: "anthropic-messages", baseUrl: "{}", apiKey: "${{FAKE_API_KEY}}",
                models: [{{ id: "m1" }}],
              }} }} }},
              agents: {{ defaults: {{ model: "fake/m1" }} }},
              channels: {{ telegram: {{
                botToken: "${{TELEGRAM_BOT_TOKEN}}", apiRoot: "{}", allowFrom: ["{OWNER}"],
              }} }},
            }}"#,
            model.url(""),
            telegram.api_root()
        )
    };
    let dir = state_dir(Some(&config(1)));
    append_env(
        dir.path(),
        &format!(
            "FAKE_API_KEY={KEY}
TELEGRAM_BOT_TOKEN={BOT_TOKEN}
"
        ),
    );
    let gw = Gateway::start_in(dir);
    std::fs::write(gw.path().join("openclaw.json"), config(gw.addr.port())).unwrap();
    gw
}

fn answer(text: &str) -> serde_json::Value {
    json!({
        "id": "msg", "type": "message", "role": "assistant", "model": "m1",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 5}
    })
}

/// Waits (at most 10 s) until `done` holds.
async fn wait(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_all_ends_the_running_turn_at_once() {
    // The first model call never answers; later ones do.
    let model = Fake::start(|n, _| {
        if n == 0 {
            Reply::Hang
        } else {
            ok(answer("Answered after the stop."))
        }
    })
    .await;
    let telegram = Telegram::start(BOT_TOKEN).await;
    let gw = tokio::task::block_in_place(|| gateway(&model, &telegram));

    telegram.push(private_text(OWNER, "think about this for a long time"));
    wait("the model call", || model.open_connections() == 1).await;

    let started = Instant::now();
    let out = tokio::task::block_in_place(|| cli(gw.path(), &["stop-all"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "stopped 1 running turn\n");
    // The turn ends promptly: its model request is dropped and the update is done.
    wait("the model connection to close", || {
        model.open_connections() == 0
    })
    .await;
    tokio::task::block_in_place(|| gw.wait_log("Telegram: update 100 stopped", 1));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        gw.log_lines("stop-all over the API: 1 running turn").len(),
        1
    );
    assert!(
        telegram.sent_to(OWNER).is_empty(),
        "a stopped turn sends nothing"
    );

    // Nothing runs now; the next message is answered as usual.
    let out = tokio::task::block_in_place(|| cli(gw.path(), &["stop-all", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer, json!({"stopped": 0}));
    telegram.push(private_text(OWNER, "and now?"));
    telegram
        .wait_until("the next answer", |t| !t.sent_to(OWNER).is_empty())
        .await;
    assert_eq!(telegram.sent_to(OWNER), ["Answered after the stop."]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_all_needs_the_gateway_token() {
    let model = Fake::start(|_, _| Reply::Hang).await;
    let telegram = Telegram::start(BOT_TOKEN).await;
    let gw = tokio::task::block_in_place(|| gateway(&model, &telegram));
    // The agent is built once the gateway listens; Telegram's getMe comes right after.
    telegram
        .wait_until("the agent to start", |t| !t.calls("getMe").is_empty())
        .await;
    let post = |auth: &str| {
        gw.raw(&format!(
            "POST /api/agent/stop-all HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\n\
             Connection: close\r\n\r\n"
        ))
    };
    let r = tokio::task::block_in_place(|| post(""));
    assert_eq!(r.status, 401, "{}", r.body);
    let r = tokio::task::block_in_place(|| {
        post("Authorization: Bearer wrong-token-0123456789abcdef\r\n")
    });
    assert_eq!(r.status, 401, "{}", r.body);
    let r = tokio::task::block_in_place(|| post(&format!("Authorization: Bearer {TOKEN}\r\n")));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"stopped": 0}));
    let r = tokio::task::block_in_place(|| gw.get("/api/agent/stop-all", Some(TOKEN)));
    assert_eq!(r.status, 405, "{}", r.body);

    // The CLI with another token in .env is refused and says so.
    std::fs::write(
        gw.path().join(".env"),
        "OPENCLAW_GATEWAY_TOKEN=not-the-gateways-token-0123456789\n",
    )
    .unwrap();
    let out = tokio::task::block_in_place(|| cli(gw.path(), &["stop-all"]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused the token (401"), "{stderr}");
    assert!(!stderr.contains("not-the-gateways-token"), "{stderr}");
}

#[test]
fn stop_all_without_an_agent_is_a_clear_conflict() {
    let gw = Gateway::start(None);
    let r = gw.post("/api/agent/stop-all", "");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("no agent is configured"),
        "{}",
        r.body
    );
    // The CLI reads the port from the config: give it the one this gateway got.
    std::fs::write(
        gw.path().join("openclaw.json"),
        format!("{{ gateway: {{ port: {} }} }}", gw.addr.port()),
    )
    .unwrap();
    let out = cli(gw.path(), &["stop-all"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("answered 409") && stderr.contains("no agent is configured"),
        "{stderr}"
    );

    // No gateway at all: the address is named.
    drop(gw);
    let dir = state_dir(Some("{ gateway: { port: 9 } }"));
    let out = cli(dir.path(), &["stop-all"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not answer on 127.0.0.1:9"),
        "{stderr}"
    );
}

/// `clawfort status` speaks to the gateway through the same client as `stop-all`: the
/// same answers for a refused token and for no gateway at all.
#[test]
fn status_names_a_refused_token_and_an_absent_gateway() {
    let gw = Gateway::start(None);
    std::fs::write(
        gw.path().join("openclaw.json"),
        format!("{{ gateway: {{ port: {} }} }}", gw.addr.port()),
    )
    .unwrap();
    let out = cli(gw.path(), &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("clawfort gateway "),
        "{}",
        text(&out.stdout)
    );

    std::fs::write(
        gw.path().join(".env"),
        "OPENCLAW_GATEWAY_TOKEN=not-the-gateways-token-0123456789\n",
    )
    .unwrap();
    let out = cli(gw.path(), &["status"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("the gateway on {} answered 401", gw.addr)),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-gateways-token"), "{stderr}");

    std::fs::write(gw.path().join(".env"), "").unwrap();
    let out = cli(gw.path(), &["status"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no gateway token is configured"),
        "{stderr}"
    );

    drop(gw);
    let dir = state_dir(Some("{ gateway: { port: 9 } }"));
    let out = cli(dir.path(), &["status"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not answer on 127.0.0.1:9"),
        "{stderr}"
    );
}
