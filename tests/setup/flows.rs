//! `clawfort setup --non-interactive`: checks, what is written, and what is refused.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{
    config, mode, model_server, names, secret_file, secret_files, setup, text, Fakes, BOT_TOKEN,
    OWNER, WRONG_BOT_TOKEN,
};
use crate::support::{state_dir, Gateway, TOKEN};
use clawfort_fakes::model::{Fake, Reply, KEY};
use clawfort_fakes::telegram::{private_text, BOT_NAME};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_writes_a_working_installation_and_names_the_bot() {
    let fakes = Fakes::start().await;
    let dir = state_dir(None);
    let token_file = secret_file(dir.path(), "bot-token", BOT_TOKEN);
    let mut args = fakes.flags("-", &token_file);
    args.extend(
        [
            "--owner",
            &OWNER.to_string(),
            "--daily-usd",
            "2",
            "--no-restart",
        ]
        .map(str::to_owned),
    );
    let Fakes { model, telegram } = fakes;
    let (base_url, api_root) = (model.url("/v1"), telegram.api_root());
    let out = tokio::task::block_in_place(|| setup(dir.path(), &args, &format!("{KEY}\n")));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains(&format!("@{BOT_NAME}")), "{stdout}");
    assert!(stdout.contains("send it a message now"), "{stdout}");
    assert!(
        stdout.contains("clawfort --config") && stdout.contains("pairing approve telegram <CODE>"),
        "{stdout}"
    );

    // One getMe and one model list, with the key in the header the api uses.
    assert_eq!(telegram.calls("getMe").len(), 1);
    let seen = model.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "/v1/models");

    // .env: the gateway token kept, both secrets added; both files private.
    let env = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    assert_eq!(
        env,
        format!(
            "OPENCLAW_GATEWAY_TOKEN={TOKEN}\nOPENAI_API_KEY={KEY}\nTELEGRAM_BOT_TOKEN={BOT_TOKEN}\n"
        )
    );
    assert_eq!(mode(&dir.path().join(".env")), 0o600);
    assert_eq!(mode(&dir.path().join("openclaw.json")), 0o600);
    assert_eq!(
        config(dir.path()),
        json!({
            "models": {"providers": {"openai": {
                "api": "openai-completions", "baseUrl": base_url,
                "apiKey": "${OPENAI_API_KEY}", "models": [{"id": "fake-model"}],
            }}},
            "agents": {"defaults": {"model": {"primary": "openai/fake-model"}}},
            "channels": {"telegram": {
                "enabled": true, "botToken": "${TELEGRAM_BOT_TOKEN}", "apiRoot": api_root,
                "dmPolicy": "pairing", "allowFrom": [OWNER.to_string()],
            }},
            "commands": {"ownerAllowFrom": [format!("telegram:{OWNER}")]},
            "budget": {"dailyUsd": 2.0},
        })
    );
    // No temporary file left, and no backup without a previous config.
    assert_eq!(names(dir.path()), [".env", "bot-token", "openclaw.json"]);

    // The budget without prices is called out.
    assert!(stdout.contains("has no `cost`"), "{stdout}");

    // The gateway runs what setup wrote: the owner's message gets the model's answer.
    let gw = tokio::task::block_in_place(|| Gateway::start_in(dir));
    telegram.push(private_text(OWNER, "hello"));
    telegram
        .wait_until("the model's answer", |t| !t.sent_to(OWNER).is_empty())
        .await;
    assert_eq!(telegram.sent_to(OWNER), ["Hello from the model."]);
    let chat = model.seen().pop().unwrap();
    assert_eq!(chat.path, "/v1/chat/completions");
    let log = gw.log_lines("").join("\n");
    assert!(!log.contains(KEY) && !log.contains(BOT_TOKEN), "{log}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_key_is_checked_on_the_model_list_and_json_is_printed() {
    let Fakes { model, telegram } =
        Fakes::with_model(Fake::start(|_, seen| model_server(seen, true)).await).await;
    let dir = state_dir(None);
    let key_file = secret_file(dir.path(), "key", KEY);
    let base_url = model.url("");
    let api_root = telegram.api_root();
    let out = tokio::task::block_in_place(|| {
        setup(
            dir.path(),
            &[
                "--non-interactive",
                "--api",
                "anthropic-messages",
                "--base-url",
                &base_url,
                "--model",
                "fake-model",
                "--api-key-file",
                &key_file,
                "--bot-token-file",
                "-",
                "--telegram-api-root",
                &api_root,
                "--no-restart",
                "--owner",
                "4242",
                "--json",
            ],
            BOT_TOKEN,
        )
    });
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["telegram"]["bot"], format!("@{BOT_NAME}"));
    assert_eq!(summary["provider"]["id"], "anthropic");
    assert_eq!(summary["provider"]["model"], "anthropic/fake-model");
    assert_eq!(summary["provider"]["apiKeyVar"], "ANTHROPIC_API_KEY");
    assert_eq!(summary["provider"]["check"], "model list");
    assert_eq!(summary["restarted"], Value::Null);
    assert_eq!(summary["gatewayTokenGenerated"], false);
    assert!(
        summary["pairingCommand"]
            .as_str()
            .unwrap()
            .ends_with("pairing approve telegram <CODE>"),
        "{summary}"
    );
    assert!(
        text(&out.stderr).is_empty(),
        "--json prints nothing else: {}",
        text(&out.stderr)
    );
    let seen = model.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/models");
    assert_eq!(seen[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen[0].header("x-api-key"), Some(KEY));
    let config = config(dir.path());
    assert_eq!(
        config["models"]["providers"]["anthropic"]["apiKey"],
        "${ANTHROPIC_API_KEY}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_model_list_gets_a_one_token_request() {
    let fakes = Fakes::with_model(
        Fake::start(|_, seen| {
            if seen.path.ends_with("/models") {
                Reply::Json(404, vec![], r#"{"error":"not found"}"#.into())
            } else {
                model_server(seen, false)
            }
        })
        .await,
    )
    .await;
    let dir = state_dir(None);
    let token_file = secret_file(dir.path(), "bot-token", BOT_TOKEN);
    let mut args = fakes.flags("-", &token_file);
    args.extend(["--provider-id", "local", "--no-restart", "--json"].map(str::to_owned));
    let out = tokio::task::block_in_place(|| setup(dir.path(), &args, KEY));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["provider"]["check"], "one-token request");
    assert_eq!(summary["provider"]["apiKeyVar"], "LOCAL_API_KEY");
    let seen = fakes.model.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].path, "/v1/chat/completions");
    let request = seen[1].json();
    assert_eq!(request["max_tokens"], 1, "{request}");
    assert_eq!(request["model"], "fake-model", "{request}");
}

/// The flags of a run against `fakes` with the secrets in files, without a restart.
fn flags(fakes: &Fakes, key_file: &str, token_file: &str) -> Vec<String> {
    let mut flags = fakes.flags(key_file, token_file);
    flags.push("--no-restart".into());
    flags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_secret_writes_nothing_and_is_named() {
    let fakes = Fakes::start().await;
    let old_config = "{ gateway: { port: 18790 } } // mine\n";
    let dir = state_dir(Some(old_config));
    let (good_key, good_token) = secret_files(dir.path());
    let wrong_key = secret_file(dir.path(), "wrong-key", "sk-wrong-0123456789abcdef");
    let wrong_token = secret_file(dir.path(), "wrong-token", WRONG_BOT_TOKEN);
    let before = names(dir.path());
    let env_before = std::fs::read_to_string(dir.path().join(".env")).unwrap();

    for (key, token, words) in [
        (
            &good_key,
            &wrong_token,
            "the bot token was refused by Telegram",
        ),
        (
            &wrong_key,
            &good_token,
            "the API key was refused by provider `openai`",
        ),
    ] {
        let args = flags(&fakes, key, token);
        let out = tokio::task::block_in_place(|| setup(dir.path(), &args, ""));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(words), "{stderr}");
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
        assert_eq!(names(dir.path()), before, "nothing written");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("openclaw.json")).unwrap(),
            old_config
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".env")).unwrap(),
            env_before
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_trouble_is_named_without_the_key() {
    // A provider that echoes the key in its error, and one that is not there at all.
    let echo = Fakes::with_model(
        Fake::start(|_, _| {
            Reply::Json(
                500,
                vec![],
                format!(r#"{{"error":{{"message":"internal trouble with key {KEY}"}}}}"#),
            )
        })
        .await,
    )
    .await;
    let dir = state_dir(None);
    let (key, token) = secret_files(dir.path());
    let args = flags(&echo, &key, &token);
    let out = tokio::task::block_in_place(|| setup(dir.path(), &args, ""));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("HTTP 500") && stderr.contains("[redacted]"),
        "{stderr}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut args = flags(&echo, &key, &token);
    args[4] = format!("http://127.0.0.1:{port}/v1");
    let out = tokio::task::block_in_place(|| setup(dir.path(), &args, ""));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!dir.path().join("openclaw.json").exists());

    // --skip-checks writes anyway, and says what it skipped past.
    let mut skip = args.clone();
    skip.push("--skip-checks".into());
    let out = tokio::task::block_in_place(|| setup(dir.path(), &skip, ""));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("warning: --skip-checks: written although cannot connect"),
        "{stdout}"
    );
    assert!(dir.path().join("openclaw.json").exists());
}

#[test]
fn missing_and_bad_flags_are_exit_2_naming_the_flag() {
    let dir = state_dir(None);
    let token = secret_file(dir.path(), "token", BOT_TOKEN);
    let short = secret_file(dir.path(), "short", "123:short");
    let base = [
        "--non-interactive",
        "--api",
        "openai-completions",
        "--model",
        "m",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--non-interactive".into()], "--api is required"),
        (
            vec![
                "--non-interactive".into(),
                "--api".into(),
                "anthropic-messages".into(),
            ],
            "--model is required",
        ),
        (
            with(&["--bot-token-file", &token]),
            "--api-key-file is required",
        ),
        (
            with(&["--api-key-file", &token]),
            "--bot-token-file is required",
        ),
        (
            with(&["--api-key-file", "-", "--bot-token-file", "-"]),
            "only one of --api-key-file and --bot-token-file can be -",
        ),
        (
            with(&["--api-key-file", &token, "--bot-token-file", &short]),
            "does not look like a Telegram bot token",
        ),
        (
            with(&[
                "--api-key-file",
                &token,
                "--bot-token-file",
                &token,
                "--base-url",
                "ftp://x",
            ]),
            "--base-url \"ftp://x\": must start with https://",
        ),
        (
            with(&[
                "--api-key-file",
                &token,
                "--bot-token-file",
                &token,
                "--owner",
                "@me",
            ]),
            "--owner \"@me\": a numeric Telegram user id",
        ),
        (
            with(&[
                "--api-key-file",
                &token,
                "--bot-token-file",
                &token,
                "--daily-usd",
                "-1",
            ]),
            "--daily-usd -1: a positive number",
        ),
        (
            with(&[
                "--api-key-file",
                "/nonexistent/key",
                "--bot-token-file",
                &token,
            ]),
            "--api-key-file: cannot read /nonexistent/key",
        ),
        (
            vec!["--api".into(), "openai".into()],
            "invalid value 'openai' for '--api <API>'",
        ),
    ];
    for (args, words) in cases {
        let out = setup(dir.path(), &args, "");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
        assert!(!dir.path().join("openclaw.json").exists(), "{args:?}");
    }
}
