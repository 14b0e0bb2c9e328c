//! `clawfort setup` and `clawfort stop-all`: the real binary against the fake Telegram Bot
//! API and the fake model servers (the `clawfort-fakes` crate) on loopback, in temporary
//! state directories.

use clawfort_fakes::model as fake;
use clawfort_fakes::telegram as telegram_fake;
#[path = "setup/files.rs"]
mod files;
#[path = "setup/flows.rs"]
mod flows;
#[path = "setup/root.rs"]
mod root;
#[path = "setup/stop_all.rs"]
mod stop_all;
#[path = "gateway/support.rs"]
#[allow(dead_code)]
mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::{json, Value};

use fake::{ok, Reply, Seen, KEY};

/// The bot token the fake Bot API accepts.
pub const BOT_TOKEN: &str = "123456789:AAHtestTOKENtestTOKENtestTOKENtest12";
/// Another well-formed token, which the fake refuses.
pub const WRONG_BOT_TOKEN: &str = "123456789:AAHwrongTOKENwrongTOKENwrongTOKEN99";
/// The owner's Telegram id.
pub const OWNER: i64 = 333;

/// Runs `clawfort --config <dir>/openclaw.json setup <args>` with `stdin` on its standard
/// input (for `--api-key-file -`), isolated from the caller's environment.
pub fn setup(dir: &Path, args: &[&str], stdin: &str) -> Output {
    setup_with_env(dir, args, stdin, &[])
}

/// `setup` with extra environment variables.
pub fn setup_with_env(dir: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
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

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
