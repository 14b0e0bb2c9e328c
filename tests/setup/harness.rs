//! What the setup tests share: the fakes, the secrets, running `clawfort setup`, and
//! looking at the state directory afterwards.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::{json, Value};

use crate::support;
use clawfort_fakes::model::{ok, Fake, Reply, Seen, KEY};
use clawfort_fakes::telegram::Fake as Telegram;

/// The bot token the fake Bot API accepts.
pub const BOT_TOKEN: &str = "123456789:AAHtestTOKENtestTOKENtestTOKENtest12";
/// Another well-formed token, which the fake refuses.
pub const WRONG_BOT_TOKEN: &str = "123456789:AAHwrongTOKENwrongTOKENwrongTOKEN99";
/// The owner's Telegram id.
pub const OWNER: i64 = 333;

/// The fake servers setup checks the secrets with.
pub struct Fakes {
    pub model: Fake,
    pub telegram: Telegram,
}

impl Fakes {
    /// An OpenAI-compatible model server that accepts [`KEY`] ([`model_server`]) and a Bot
    /// API that accepts [`BOT_TOKEN`].
    pub async fn start() -> Self {
        Self::with_model(Fake::start(|_, seen| model_server(seen, false)).await).await
    }

    /// `model` and a Bot API that accepts [`BOT_TOKEN`].
    pub async fn with_model(model: Fake) -> Self {
        Self {
            model,
            telegram: Telegram::start(BOT_TOKEN).await,
        }
    }

    /// The flags of a non-interactive run against these fakes (OpenAI-compatible, model
    /// `fake-model`) with the key and the bot token read from `key_file` and `token_file`.
    pub fn flags(&self, key_file: &str, token_file: &str) -> Vec<String> {
        [
            "--non-interactive",
            "--api",
            "openai-completions",
            "--base-url",
            &self.model.url("/v1"),
            "--model",
            "fake-model",
            "--api-key-file",
            key_file,
            "--bot-token-file",
            token_file,
            "--telegram-api-root",
            &self.telegram.api_root(),
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// Runs `clawfort --config <dir>/openclaw.json setup <args>` with `stdin` on its standard
/// input (for `--api-key-file -`), isolated from the caller's environment.
pub fn setup(dir: &Path, args: &[impl AsRef<OsStr>], stdin: &str) -> Output {
    setup_with_env(dir, args, stdin, &[])
}

/// `setup` with extra environment variables.
pub fn setup_with_env(
    dir: &Path,
    args: &[impl AsRef<OsStr>],
    stdin: &str,
    env: &[(&str, &str)],
) -> Output {
    let mut child = support::command(dir)
        .envs(env.iter().copied())
        .arg("setup")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_no_secrets(&out);
    out
}

/// Neither secret, nor a telling part of one, is in anything the command printed.
pub fn assert_no_secrets(out: &Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        for secret in [
            KEY,
            "TESTKEY",
            BOT_TOKEN,
            "AAHtestTOKEN",
            WRONG_BOT_TOKEN,
            "wrongTOKEN",
        ] {
            assert!(!text.contains(secret), "{stream} holds a secret:\n{text}");
        }
    }
}

/// Writes `secret` to a private file in `dir` and returns its path as text.
pub fn secret_file(dir: &Path, name: &str, secret: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path.display().to_string()
}

/// The right key and bot token in the files `key` and `token` of `dir`: their paths.
pub fn secret_files(dir: &Path) -> (String, String) {
    (
        secret_file(dir, "key", KEY),
        secret_file(dir, "token", BOT_TOKEN),
    )
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fake model server: the model list (`GET .../models`) answers 200 for the right key in
/// the api's header and 401 otherwise; chat requests get a short answer.
pub fn model_server(seen: &Seen, anthropic: bool) -> Reply {
    let key_ok = if anthropic {
        seen.header("x-api-key") == Some(KEY)
    } else {
        seen.header("authorization") == Some(format!("Bearer {KEY}").as_str())
    };
    if !key_ok {
        return Reply::Json(
            401,
            vec![],
            json!({"error": {"type": "authentication_error", "message": "invalid x-api-key"}})
                .to_string(),
        );
    }
    if seen.path.ends_with("/models") {
        return ok(json!({"data": [{"id": "fake-model"}, {"id": "other-model"}]}));
    }
    if anthropic {
        ok(json!({
            "id": "msg", "type": "message", "role": "assistant", "model": "fake-model",
            "content": [{"type": "text", "text": "Hello from the model."}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 5}
        }))
    } else {
        ok(json!({
            "id": "c", "object": "chat.completion", "model": "fake-model",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello from the model."}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}
        }))
    }
}

/// `openclaw.json` of `dir`, parsed.
pub fn config(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("openclaw.json")).unwrap()).unwrap()
}

/// The mode bits of `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// Every regular file under `dir` with its contents, sorted by path (links not followed).
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files.extend(all_files(&entry.path()));
        } else if kind.is_file() {
            files.push((entry.path(), std::fs::read(entry.path()).unwrap()));
        }
    }
    files.sort();
    files
}

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
