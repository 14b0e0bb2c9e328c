//! What `clawfort setup` does to the files already in the state directory.

use serde_json::json;

use crate::harness::{
    config, mode, names, secret_files, setup, setup_with_env, text, Fakes, BOT_TOKEN,
};
use crate::support::{state_dir, TOKEN};
use clawfort_fakes::model::KEY;

/// The arguments of a run with both secrets in files of `dir`.
fn args(dir: &std::path::Path, fakes: &Fakes) -> Vec<String> {
    let (key, token) = secret_files(dir);
    let mut args = fakes.flags(&key, &token);
    args.extend(["--owner", "333", "--no-restart"].map(str::to_owned));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_installation_keeps_its_settings_and_a_backup() {
    let fakes = Fakes::start().await;
    let old_config = r#"{
      // The owner's own settings, in JSON5.
      gateway: { port: 18790, auth: { token: "${OPENCLAW_GATEWAY_TOKEN}" } },
      session: { dmScope: "per-peer" },
      channels: { telegram: { dmPolicy: "allowlist", allowFrom: ["111"], tokenFile: "~/old" } },
      models: { providers: { openai: { api: "openai-completions", baseUrl: "https://old/v1",
        models: [{ id: "fake-model", cost: { input: 1, output: 2 } }] } } },
      budget: { monthlyUsd: 30 },
    }"#;
    let dir = state_dir(Some(old_config));
    let env_path = dir.path().join(".env");
    std::fs::write(
        &env_path,
        format!(
            "# written at first boot\nOPENCLAW_GATEWAY_TOKEN={TOKEN}\nOPENAI_API_KEY=sk-old-0123456789\nTELEGRAM_BOT_TOKEN=1:old\nOTHER='kept as is'\n"
        ),
    )
    .unwrap();
    let args = args(dir.path(), &fakes);
    // A key exported in the shell would win over .env for a gateway started from it.
    let shell = [("OPENAI_API_KEY", "sk-from-the-shell-0123456789")];
    let out = tokio::task::block_in_place(|| setup_with_env(dir.path(), &args, "", &shell));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("OPENAI_API_KEY is also set in your environment"),
        "{stdout}"
    );
    assert!(!stdout.contains("sk-from-the-shell"), "{stdout}");
    assert!(stdout.contains("openclaw.json.bak"), "{stdout}");
    assert!(
        stdout.contains("comments and key order are not kept"),
        "{stdout}"
    );
    assert!(
        stdout.contains("removed channels.telegram.tokenFile"),
        "{stdout}"
    );

    let backup = dir.path().join("openclaw.json.bak");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), old_config);
    assert_eq!(mode(&backup), 0o600);
    assert_eq!(
        std::fs::read_to_string(&env_path).unwrap(),
        format!(
            "# written at first boot\nOPENCLAW_GATEWAY_TOKEN={TOKEN}\nOPENAI_API_KEY={KEY}\nTELEGRAM_BOT_TOKEN={BOT_TOKEN}\nOTHER='kept as is'\n"
        )
    );
    let config = config(dir.path());
    assert_eq!(config["gateway"]["port"], 18790);
    assert_eq!(config["session"], json!({"dmScope": "per-peer"}));
    let telegram_config = &config["channels"]["telegram"];
    assert_eq!(telegram_config["dmPolicy"], "allowlist");
    assert_eq!(telegram_config["allowFrom"], json!(["111", "333"]));
    assert!(telegram_config.get("tokenFile").is_none());
    assert_eq!(
        config["models"]["providers"]["openai"]["models"],
        json!([{"id": "fake-model", "cost": {"input": 1, "output": 2}}]),
        "the priced model entry is kept"
    );
    assert_eq!(config["budget"], json!({"monthlyUsd": 30}));
    assert!(!stdout.contains("has no `cost`"), "{stdout}");
    assert_eq!(
        names(dir.path()),
        [".env", "key", "openclaw.json", "openclaw.json.bak", "token"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_planted_in_the_state_directory_is_refused() {
    let fakes = Fakes::start().await;
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "not setup's to read or write\n").unwrap();

    for name in ["openclaw.json", ".env"] {
        let dir = state_dir(None);
        let args = args(dir.path(), &fakes);
        let link = dir.path().join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let out = tokio::task::block_in_place(|| setup(dir.path(), &args, ""));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name} is a symbolic link")),
            "{name}: {stderr}"
        );
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{name}: the link is left alone"
        );
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "not setup's to read or write\n"
        );
        // Refused before any call: nothing was checked either.
        assert!(fakes.telegram.calls("getMe").is_empty(), "{name}");
    }
    assert!(fakes.model.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_does_not_parse_is_named_and_left_alone() {
    let fakes = Fakes::start().await;
    let broken = "{ gateway: { port: 18790 ";
    let dir = state_dir(Some(broken));
    let args = args(dir.path(), &fakes);
    let out = tokio::task::block_in_place(|| setup(dir.path(), &args, ""));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("openclaw.json") && stderr.contains("not valid JSON5"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("openclaw.json")).unwrap(),
        broken
    );
    assert!(!dir.path().join("openclaw.json.bak").exists());
}
