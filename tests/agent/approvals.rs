//! Exec approvals through the real `clawfort gateway`: a scripted model runs each message's
//! text as an `exec` command; the owner answers the approval prompts over the fake Telegram
//! Bot API, and the tests look at what ran in the workspace.
//!
//! Host execution refuses root and needs Landlock: as root, each test runs again as `nobody`
//! (as `tests/confine.rs` does); without Landlock it is skipped with a printed reason.

use crate::unprivileged::unprivileged;
use std::path::{Path, PathBuf};

use clawfort_fakes::model::{ok, Fake, Seen, KEY};
use clawfort_fakes::telegram::{private_text, Fake as Telegram};
use serde_json::{json, Value};

use crate::support::{append_env, cli, state_dir, Gateway};

const BOT_TOKEN: &str = "123456789:AAHtestTOKENtestTOKENtestTOKENtest12";
const OWNER: i64 = 7_100_001;
/// Paired with the owner's consent but no approver.
const FRIEND: i64 = 7_100_002;

fn runnable(test: &str) -> bool {
    if !unprivileged(test) {
        return false;
    }
    if let Err(why) = clawfort::confine::support() {
        eprintln!("SKIPPED: {why}");
        return false;
    }
    true
}

fn answer(content: Value, stop: &str) -> Value {
    json!({
        "id": "msg", "type": "message", "role": "assistant", "model": "m1",
        "content": content, "stop_reason": stop,
        "usage": {"input_tokens": 10, "output_tokens": 10}
    })
}

/// The model: the user's text is the command to run; a tool result is repeated as the answer.
fn script(n: usize, seen: &Seen) -> clawfort_fakes::model::Reply {
    let body = seen.json();
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    let blocks = last["content"].as_array().cloned().unwrap_or_default();
    if let Some(result) = blocks.iter().find(|b| b["type"] == "tool_result") {
        let text = match &result["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return ok(answer(json!([{"type": "text", "text": text}]), "end_turn"));
    }
    // The latest text: a message a crash left unanswered comes first in the same turn.
    let command = match &last["content"] {
        Value::String(s) => s.clone(),
        _ => blocks
            .iter()
            .rev()
            .find_map(|b| b["text"].as_str())
            .unwrap()
            .to_owned(),
    };
    // Someone else's message arrives wrapped as untrusted data: the command is its body.
    let command = command
        .lines()
        .rfind(|l| {
            !l.starts_with("<untrusted-")
                && !l.starts_with("</untrusted-")
                && !l.starts_with("[message from")
        })
        .unwrap_or_default()
        .to_owned();
    ok(answer(
        json!([{"type": "tool_use", "id": format!("call_{n}"), "name": "exec",
                "input": {"command": command}}]),
        "tool_use",
    ))
}

struct Setup {
    _model: Fake,
    telegram: Telegram,
    gw: Gateway,
    /// The config, given the gateway's port (the CLI finds the gateway through it).
    config: String,
}

/// The gateway's config: the fake model and Telegram, `ask`, a `timeout` for approvals.
fn config(ask: &str, timeout: u64, model: &Fake, telegram: &Telegram) -> String {
    format!(
        r#"{{
          gateway: {{ port: PORT }},
          models: {{ providers: {{ fake: {{
            api: "anthropic-messages", baseUrl: "{}", apiKey: "${{FAKE_API_KEY}}",
            models: [{{ id: "m1" }}],
          }} }} }},
          agents: {{ defaults: {{ model: "fake/m1", sandbox: {{ mode: "off" }} }} }},
          tools: {{ exec: {{ security: "allowlist", ask: "{ask}",
                             approvalTimeoutSeconds: {timeout} }} }},
          channels: {{ telegram: {{
            botToken: "${{TELEGRAM_BOT_TOKEN}}", apiRoot: "{}", dmPolicy: "allowlist",
            allowFrom: ["{OWNER}", "{FRIEND}"],
          }} }},
          commands: {{ ownerAllowFrom: ["telegram:{OWNER}"] }},
        }}"#,
        model.url(""),
        telegram.api_root()
    )
}

impl Setup {
    async fn start(ask: &str, allowlist: Option<&str>) -> Self {
        Self::start_with(ask, allowlist, 2).await
    }

    /// `timeout`: `approvalTimeoutSeconds`.
    async fn start_with(ask: &str, allowlist: Option<&str>, timeout: u64) -> Self {
        let model = Fake::start(script).await;
        let telegram = Telegram::start(BOT_TOKEN).await;
        let config = config(ask, timeout, &model, &telegram);
        let dir = state_dir(Some(&config.replace("PORT", "1")));
        append_env(
            dir.path(),
            &format!("FAKE_API_KEY={KEY}\nTELEGRAM_BOT_TOKEN={BOT_TOKEN}\n"),
        );
        std::fs::create_dir(dir.path().join("workspace")).unwrap();
        if let Some(list) = allowlist {
            std::fs::write(dir.path().join("exec-approvals.json"), list).unwrap();
        }
        let gw = tokio::task::block_in_place(|| Gateway::start_in(dir));
        let s = Self {
            _model: model,
            telegram,
            gw,
            config,
        };
        s.point_cli_at_gateway();
        s
    }

    /// Writes the running gateway's port into the config, for the CLI.
    fn point_cli_at_gateway(&self) {
        let config = self
            .config
            .replace("PORT", &self.gw.addr.port().to_string());
        std::fs::write(self.gw.path().join("openclaw.json"), config).unwrap();
    }

    /// SIGKILLs the gateway, as a crash would, and starts it again on the same state.
    fn crashed_and_restarted(mut self) -> Self {
        self.gw = tokio::task::block_in_place(|| self.gw.restart());
        self.point_cli_at_gateway();
        self
    }

    fn workspace(&self, name: &str) -> PathBuf {
        self.gw.path().join("workspace").join(name)
    }

    fn sent(&self, to: i64) -> Vec<String> {
        self.telegram.sent_to(to)
    }

    /// Sends `text` from `from` and waits for one more message to `to` matching `want`.
    async fn say(&self, from: i64, text: &str, to: i64, want: &str) -> String {
        let before = self.sent(to).len();
        self.telegram.push(private_text(from, text));
        self.next(to, before, want).await
    }

    /// Waits for a message to `to` after the first `before` that contains `want`.
    async fn next(&self, to: i64, before: usize, want: &str) -> String {
        self.telegram
            .wait_until(&format!("a message to {to} with {want:?}"), |t| {
                t.sent_to(to)[before.min(t.sent_to(to).len())..]
                    .iter()
                    .any(|m| m.contains(want))
            })
            .await;
        self.sent(to)[before..]
            .iter()
            .find(|m| m.contains(want))
            .unwrap()
            .clone()
    }

    /// Sends the command `text` as the owner and returns the id of the approval it asks.
    async fn asked(&self, text: &str) -> (String, usize) {
        let before = self.sent(OWNER).len();
        let prompt = self.say(OWNER, text, OWNER, "Exec approval ").await;
        assert!(prompt.contains(&format!("Command: {text}")), "{prompt}");
        assert!(prompt.contains("Workdir: "), "{prompt}");
        assert!(prompt.contains("Session: "), "{prompt}");
        let id = prompt
            .lines()
            .next()
            .unwrap()
            .strip_prefix("Exec approval ")
            .unwrap()
            .to_owned();
        assert!(prompt.contains(&format!("/deny {id}")), "{prompt}");
        (id, before)
    }
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_runs_once_denied_and_unanswered_do_not_run() {
    if !runnable("approvals::approved_runs_once_denied_and_unanswered_do_not_run") {
        return;
    }
    let s = Setup::start("on-miss", None).await;

    // Approved once: runs, once.
    let (id, before) = s.asked("echo ran >> once.txt").await;
    let ack = s
        .say(OWNER, &format!("/approve {id}"), OWNER, "Approved once")
        .await;
    assert!(ack.contains("echo ran >> once.txt"), "{ack}");
    let reply = s.next(OWNER, before, "[exit code 0]").await;
    assert!(!reply.contains("not run"), "{reply}");
    assert_eq!(lines(&s.workspace("once.txt")), 1);

    // A non-approver's answer is refused and logged; the question stays open.
    let (id, before) = s.asked("touch friend.txt").await;
    let refused = s
        .say(
            FRIEND,
            &format!("/approve {id}"),
            FRIEND,
            "Only an exec approver",
        )
        .await;
    assert!(!refused.contains("Approved"), "{refused}");
    assert!(!s.gw.wait_log("not an exec approver", 1).is_empty());
    // Denied: not run, and the model is told.
    s.say(
        OWNER,
        &format!("/deny {id}"),
        OWNER,
        "Denied: touch friend.txt",
    )
    .await;
    let reply = s.next(OWNER, before, "not run").await;
    assert!(reply.contains("denied"), "{reply}");
    assert!(!s.workspace("friend.txt").exists());

    // No answer within the timeout: a denial the model hears of; a late answer does nothing.
    let (id, before) = s.asked("touch late.txt").await;
    let reply = s.next(OWNER, before, "not run").await;
    assert!(reply.contains("no approver answered within 2 s"), "{reply}");
    let late = s
        .say(OWNER, &format!("/approve {id}"), OWNER, "Nothing done")
        .await;
    assert!(late.contains("no pending approval"), "{late}");
    assert!(!s.workspace("late.txt").exists());
    assert_eq!(
        lines(&s.workspace("once.txt")),
        1,
        "the approved command ran once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_allows_that_command_again_and_no_chain_matches_the_allowlist() {
    if !runnable("approvals::always_allows_that_command_again_and_no_chain_matches_the_allowlist") {
        return;
    }
    let allowlist = r#"{"version": 1, "agents": {"main": {"allowlist": [{"pattern": "ls"}]}}}"#;
    let s = Setup::start("on-miss", Some(allowlist)).await;

    // An allowlisted command runs without a question.
    let reply = s.say(OWNER, "ls", OWNER, "[exit code 0]").await;
    assert!(!reply.contains("Exec approval"), "{reply}");

    // `ls; touch pwned` is not `ls`: asked, and denied by silence.
    let (_, before) = s.asked("ls; touch pwned").await;
    s.next(OWNER, before, "no approver answered").await;
    assert!(!s.workspace("pwned").exists());

    // "always": runs now, and the same command later runs without a question.
    let (id, before) = s.asked("touch again.txt").await;
    s.say(
        OWNER,
        &format!("/approve {id} always"),
        OWNER,
        "added to the allowlist",
    )
    .await;
    s.next(OWNER, before, "[exit code 0]").await;
    assert!(s.workspace("again.txt").exists());
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(s.gw.path().join("exec-approvals.json")).unwrap(),
    )
    .unwrap();
    let entries = file["agents"]["main"]["allowlist"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{file}");
    assert_eq!(
        entries[0]["pattern"], "ls",
        "the hand-written entry is kept"
    );
    assert_eq!(entries[1]["source"], "allow-always");
    std::fs::remove_file(s.workspace("again.txt")).unwrap();
    let prompts = s
        .sent(OWNER)
        .iter()
        .filter(|m| m.starts_with("Exec approval "))
        .count();
    s.say(OWNER, "touch again.txt", OWNER, "[exit code 0]")
        .await;
    assert!(s.workspace("again.txt").exists());
    // Not the same text: asked again.
    let (_, before) = s.asked("touch again.txt other.txt").await;
    s.next(OWNER, before, "no approver answered").await;
    assert!(!s.workspace("other.txt").exists());
    let after = s
        .sent(OWNER)
        .iter()
        .filter(|m| m.starts_with("Exec approval "))
        .count();
    assert_eq!(
        after,
        prompts + 1,
        "only the different command was asked about"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_answers_approvals() {
    if !runnable("approvals::the_cli_lists_and_answers_approvals") {
        return;
    }
    let s = Setup::start("always", None).await;
    let run = |args: &[&str]| tokio::task::block_in_place(|| cli(s.gw.path(), args));

    let (id, before) = s.asked("touch cli.txt").await;
    let out = run(&["approvals", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pending = list["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{list}");
    assert_eq!(pending[0]["id"], id.as_str());
    assert_eq!(pending[0]["command"], "touch cli.txt");
    assert!(pending[0]["workdir"]
        .as_str()
        .unwrap()
        .ends_with("workspace"));
    let out = run(&["approvals", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&id) && text.contains("touch cli.txt"),
        "{text}"
    );

    let out = run(&["approvals", "approve", &id]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Approved once"));
    s.next(OWNER, before, "[exit code 0]").await;
    assert!(s.workspace("cli.txt").exists());
    // Answered: a second answer does nothing, and says so.
    let out = run(&["approvals", "deny", &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no pending approval"),
        "{out:?}"
    );

    let (id, before) = s.asked("touch denied.txt").await;
    let out = run(&["approvals", "deny", &id]);
    assert!(out.status.success(), "{out:?}");
    let reply = s.next(OWNER, before, "not run").await;
    assert!(reply.contains("(cli) denied"), "{reply}");
    assert!(!s.workspace("denied.txt").exists());
    let out = run(&["approvals", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("No exec approval is waiting"));

    // A secret in the command reaches neither the prompt nor the list.
    let before = s.sent(OWNER).len();
    s.telegram
        .push(private_text(OWNER, &format!("echo {BOT_TOKEN}")));
    let prompt = s.next(OWNER, before, "Exec approval ").await;
    assert!(prompt.contains("Command: echo [redacted]"), "{prompt}");
    let out = run(&["approvals", "list", "--json"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("echo [redacted]") && !list.contains(BOT_TOKEN),
        "{list}"
    );
    assert!(!prompt.contains(BOT_TOKEN) && !prompt.contains(KEY));
    let out = run(&["approvals", "approve", "../x"]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_of_someone_else_asks_even_about_an_allowlisted_command() {
    if !runnable("approvals::a_turn_of_someone_else_asks_even_about_an_allowlisted_command") {
        return;
    }
    let allowlist = r#"{"version": 1, "agents": {"main": {"allowlist": [{"pattern": "touch"}]}}}"#;
    let s = Setup::start("on-miss", Some(allowlist)).await;

    // The owner's own turn: the allowlist entry suffices.
    s.say(OWNER, "touch owner.txt", OWNER, "[exit code 0]")
        .await;
    assert!(s.workspace("owner.txt").exists());

    // A friend's message is untrusted content: on-miss asks about every command.
    let before = s.sent(OWNER).len();
    let friend_before = s.sent(FRIEND).len();
    s.telegram.push(private_text(FRIEND, "touch friend.txt"));
    let prompt = s.next(OWNER, before, "Exec approval ").await;
    assert!(prompt.contains("Command: touch friend.txt"), "{prompt}");
    let reply = s.next(FRIEND, friend_before, "not run").await;
    assert!(reply.contains("no approver answered"), "{reply}");
    assert!(!s.workspace("friend.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_turn_withdraws_its_question() {
    if !runnable("approvals::a_stopped_turn_withdraws_its_question") {
        return;
    }
    let s = Setup::start("always", None).await;
    let (id, _) = s.asked("touch stopped.txt").await;
    s.say(OWNER, "/stop", OWNER, "Stopped.").await;
    // The stopped turn's task drops its question when it next runs: within moments.
    let mut list = String::new();
    for _ in 0..50 {
        let out = tokio::task::block_in_place(|| cli(s.gw.path(), &["approvals", "list"]));
        list = String::from_utf8_lossy(&out.stdout).into_owned();
        if list.contains("No exec approval is waiting") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(list.contains("No exec approval is waiting"), "{list}");
    let late = s
        .say(OWNER, &format!("/approve {id}"), OWNER, "Nothing done")
        .await;
    assert!(late.contains("its turn ended"), "{late}");
    assert!(!s.workspace("stopped.txt").exists());
    assert!(
        s.sent(OWNER).iter().all(|m| !m.contains("[exit code")),
        "{:?}",
        s.sent(OWNER)
    );
}

/// SIGKILL while a command waits for its approval. After the restart the command has not
/// run and never does, a late answer to the dead id (in the chat and through the CLI) says
/// there is no such approval, the approvals file the gateway wrote before is intact, and
/// the gateway serves: a new question is asked, answered and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_an_approval_wait_runs_nothing() {
    if !runnable("approvals::a_crash_during_an_approval_wait_runs_nothing") {
        return;
    }
    let allowlist = r#"{"version": 1, "agents": {"main": {"allowlist": [{"pattern": "ls"}]}}}"#;
    let s = Setup::start_with("on-miss", Some(allowlist), 60).await;
    let cli = |s: &Setup, args: &[&str]| tokio::task::block_in_place(|| cli(s.gw.path(), args));

    // The gateway writes the approvals file itself first: an "always" answer.
    let (id, before) = s.asked("touch always.txt").await;
    s.say(
        OWNER,
        &format!("/approve {id} always"),
        OWNER,
        "added to the allowlist",
    )
    .await;
    s.next(OWNER, before, "[exit code 0]").await;
    let approvals_file = s.gw.path().join("exec-approvals.json");
    let written = std::fs::read_to_string(&approvals_file).unwrap();

    // What a crash between writing and renaming the file leaves (the rename never came).
    let orphan = s.gw.path().join(".exec-approvals.json.4194304.0.tmp");
    std::fs::write(&orphan, &written[..written.len() / 2]).unwrap();
    // Killed while the question waits (the CLI sees it pending).
    let (id, _) = s.asked("touch crashed.txt").await;
    let out = cli(&s, &["approvals", "list", "--json"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&id),
        "{out:?}"
    );
    let s = s.crashed_and_restarted();
    let resend = s.next(OWNER, 0, "Please send it again").await;
    assert!(
        resend.contains("restarted while handling your message"),
        "{resend}"
    );

    // A late answer to the dead id: a clear "no", in the chat and through the CLI.
    let late = s
        .say(OWNER, &format!("/approve {id}"), OWNER, "Nothing done")
        .await;
    let dead = format!("no pending approval `{id}`");
    assert!(late.contains(&dead) && late.contains("restart"), "{late}");
    for answer in ["approve", "deny"] {
        let out = cli(&s, &["approvals", answer, &id]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(err.contains(&dead) && err.contains("restart"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = cli(&s, &["approvals", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("No exec approval is waiting"),
        "{out:?}"
    );

    // The approvals file: as the gateway wrote it, parseable, the temporary file removed.
    assert_eq!(std::fs::read_to_string(&approvals_file).unwrap(), written);
    let doc: Value = serde_json::from_str(&written).unwrap();
    assert_eq!(
        doc["agents"]["main"]["allowlist"].as_array().unwrap().len(),
        2
    );
    let strays: Vec<String> = std::fs::read_dir(s.gw.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(strays.is_empty(), "{strays:?}");
    assert!(!s.gw.wait_log("left by a crash mid-write", 1).is_empty());

    // The gateway serves: health, a new question answered and run, the remembered command.
    assert_eq!(s.gw.get("/healthz", None).status, 200);
    let (id, before) = s.asked("touch after.txt").await;
    s.say(OWNER, &format!("/approve {id}"), OWNER, "Approved once")
        .await;
    s.next(OWNER, before, "[exit code 0]").await;
    assert!(s.workspace("after.txt").exists());
    std::fs::remove_file(s.workspace("always.txt")).unwrap();
    s.say(OWNER, "touch always.txt", OWNER, "[exit code 0]")
        .await;
    assert!(s.workspace("always.txt").exists());
    // The question killed with the gateway never ran, before or after the restart.
    assert!(!s.workspace("crashed.txt").exists());
    assert!(
        s.sent(OWNER)
            .iter()
            .filter(|m| m.contains("Command: touch crashed.txt"))
            .count()
            == 1,
        "it was not asked again: {:?}",
        s.sent(OWNER)
    );
}
