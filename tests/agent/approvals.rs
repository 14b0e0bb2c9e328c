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

/// The gateway's config: the fake model and Telegram, `security`, `ask`, a `timeout` for
/// approvals.
fn config(security: &str, ask: &str, timeout: u64, model: &Fake, telegram: &Telegram) -> String {
    format!(
        r#"{{
          gateway: {{ port: PORT }},
          models: {{ providers: {{ fake: {{
            api: "anthropic-messages", baseUrl: "{}", apiKey: "${{FAKE_API_KEY}}",
            models: [{{ id: "m1" }}],
          }} }} }},
          agents: {{ defaults: {{ model: "fake/m1", sandbox: {{ mode: "off" }} }} }},
          tools: {{ exec: {{ security: "{security}", ask: "{ask}",
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
        Self::start_with("allowlist", ask, allowlist, 2).await
    }

    /// `tools.exec.security` `security`, `ask` `ask` and `approvalTimeoutSeconds`
    /// `timeout`; `allowlist`: the approvals file.
    async fn start_with(security: &str, ask: &str, allowlist: Option<&str>, timeout: u64) -> Self {
        let model = Fake::start(script).await;
        let telegram = Telegram::start(BOT_TOKEN).await;
        let config = config(security, ask, timeout, &model, &telegram);
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

/// The kinds of the gateway's security events feed once it holds `count` of `kind` (its
/// writer is a task of its own); fails after 5 s.
fn events_once(dir: &Path, kind: &str, count: usize) -> Vec<String> {
    let feed = dir.join("events.jsonl");
    let mut kinds = Vec::new();
    for _ in 0..100 {
        kinds = std::fs::read_to_string(&feed)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["kind"].to_string())
            .collect();
        if kinds
            .iter()
            .filter(|k| *k == &format!("\"{kind}\""))
            .count()
            >= count
        {
            return kinds;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("not {count} {kind} events in {}: {kinds:?}", feed.display());
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
    // The log says so too (the boot-and-probe suite looks for it in the journal).
    let logged = s.gw.wait_log("exec approval timed out: denied", 1);
    assert_eq!(logged.len(), 1, "{logged:?}");
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
    // Each question and each denial is a security event in the gateway's feed.
    let kinds = events_once(s.gw.path(), "exec-denied", 2);
    let count = |kind: &str| kinds.iter().filter(|k| k.contains(kind)).count();
    assert_eq!(
        (count("exec-waiting"), count("exec-denied")),
        (3, 2),
        "{kinds:?}"
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
    let s = Setup::start_with("allowlist", "on-miss", Some(allowlist), 60).await;
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
    events_once(s.gw.path(), "gateway-crash-restart", 1);
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

/// The execution log's entries for `command`, in order.
fn logged(s: &Setup, command: &str) -> Vec<Value> {
    std::fs::read_to_string(s.gw.path().join("logs/tools.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["target"] == command)
        .collect()
}

/// The last message to the owner about approval `id`.
fn prompt_of(s: &Setup, id: &str) -> String {
    s.sent(OWNER)
        .into_iter()
        .rfind(|m| m.starts_with(&format!("Exec approval {id}")))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_fallback_full_runs_what_nobody_answered_but_never_a_denial_or_an_untrusted_turn() {
    if !runnable(
        "approvals::ask_fallback_full_runs_what_nobody_answered_but_never_a_denial_or_an_untrusted_turn",
    ) {
        return;
    }
    let file = r#"{"version": 1, "defaults": {"askFallback": "full"}}"#;
    let s = Setup::start_with("full", "always", Some(file), 2).await;

    // Nobody answers: the prompt said what silence does, and the command runs.
    let (id, before) = s.asked("touch silent.txt").await;
    let prompt = prompt_of(&s, &id);
    assert!(
        prompt.contains("No answer within 2 s runs it anyway (askFallback \"full\")"),
        "{prompt}"
    );
    let reply = s.next(OWNER, before, "[exit code 0]").await;
    assert!(
        reply.contains("no approver answered within 2 s; it ran by askFallback \"full\""),
        "{reply}"
    );
    assert!(s.workspace("silent.txt").exists());

    // An explicit /deny is a denial, also once the timeout has passed.
    let (id, before) = s.asked("touch denied.txt").await;
    s.say(
        OWNER,
        &format!("/deny {id}"),
        OWNER,
        "Denied: touch denied.txt",
    )
    .await;
    let reply = s.next(OWNER, before, "not run").await;
    assert!(reply.contains("denied this command"), "{reply}");

    // Someone else's message is untrusted content: silence denies, whatever askFallback says.
    let before = s.sent(OWNER).len();
    let friend_before = s.sent(FRIEND).len();
    s.telegram.push(private_text(FRIEND, "touch friend.txt"));
    let prompt = s.next(OWNER, before, "Exec approval ").await;
    assert!(
        prompt.contains("No answer within 2 s denies it."),
        "{prompt}"
    );
    let reply = s.next(FRIEND, friend_before, "not run").await;
    assert!(
        reply.contains("no approver answered within 2 s") && reply.contains("untrusted content"),
        "{reply}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(!s.workspace("denied.txt").exists());
    assert!(!s.workspace("friend.txt").exists());

    // The execution log says what happened to each.
    let approval = |command: &str| {
        let entries = logged(&s, command);
        assert_eq!(entries.len(), 1, "{command}: {entries:?}");
        entries[0]["approval"].as_str().unwrap().to_owned()
    };
    assert_eq!(approval("touch silent.txt"), "fallback");
    let out = tokio::task::block_in_place(|| cli(s.gw.path(), &["logs", "--tools"]));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().next().unwrap().contains(" APPROVAL "),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.ends_with("touch silent.txt"))
        .unwrap();
    assert!(row.contains(" fallback "), "{table}");
    assert_eq!(logged(&s, "touch silent.txt")[0]["status"], "exited");
    assert_eq!(approval("touch denied.txt"), "denied");
    assert_eq!(approval("touch friend.txt"), "timed_out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_fallback_allowlist_runs_only_a_match_and_a_bad_value_denies_naming_it() {
    if !runnable(
        "approvals::ask_fallback_allowlist_runs_only_a_match_and_a_bad_value_denies_naming_it",
    ) {
        return;
    }
    let file = |fallback: &str| {
        format!(
            r#"{{"version": 1, "defaults": {{"askFallback": "{fallback}"}},
                "agents": {{"main": {{"allowlist": [{{"pattern": "touch"}}]}}}}}}"#
        )
    };
    // `full` in the file is held to `tools.exec.security` "allowlist".
    let s = Setup::start_with("allowlist", "always", Some(&file("full")), 2).await;

    let (id, before) = s.asked("touch matched.txt").await;
    let prompt = prompt_of(&s, &id);
    assert!(
        prompt.contains("runs it only if the allowlist then matches it"),
        "{prompt}"
    );
    let reply = s.next(OWNER, before, "[exit code 0]").await;
    assert!(reply.contains("askFallback \"allowlist\""), "{reply}");
    assert!(s.workspace("matched.txt").exists());

    let (_, before) = s.asked("mkdir missed").await;
    let reply = s.next(OWNER, before, "not run").await;
    assert!(reply.contains("matches no allowlist entry"), "{reply}");
    assert!(!s.workspace("missed").exists());

    // A hostile value: every command is denied, with the field and the values it takes.
    let path = s.gw.path().join("exec-approvals.json");
    std::fs::write(&path, file("yes")).unwrap();
    let reply = s.say(OWNER, "touch bad.txt", OWNER, "not run").await;
    assert!(
        reply.contains("defaults.askFallback")
            && reply.contains("`deny`, `allowlist`, `full`")
            && reply.contains("exec-approvals.json"),
        "{reply}"
    );
    assert!(!s.workspace("bad.txt").exists());
    assert_eq!(logged(&s, "touch matched.txt")[0]["approval"], "fallback");
    assert_eq!(logged(&s, "mkdir missed")[0]["approval"], "timed_out");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The approvals file once `ready` holds of it (the stamp is written beside the run), within
/// 5 s.
async fn file_once(s: &Setup, ready: impl Fn(&Value) -> bool) -> Value {
    let path = s.gw.path().join("exec-approvals.json");
    for _ in 0..100 {
        let file = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        if let Some(file) = file.filter(&ready) {
            return file;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "{} never got there: {:?}",
        path.display(),
        std::fs::read_to_string(&path)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_lets_a_command_run_is_stamped_and_listed() {
    if !runnable("approvals::an_entry_that_lets_a_command_run_is_stamped_and_listed") {
        return;
    }
    let allowlist = r#"{"version": 1, "socket": {"path": "/x.sock"},
        "agents": {"main": {"autoAllowSkills": true, "allowlist": [
            {"id": "t", "pattern": "touch", "lastUsedAt": null, "lastUsedCommand": null}]}}}"#;
    let s = Setup::start("on-miss", Some(allowlist)).await;
    let run = |args: &[&str]| tokio::task::block_in_place(|| cli(s.gw.path(), args));

    let before = now_ms();
    s.say(OWNER, "touch used.txt", OWNER, "[exit code 0]").await;
    let file = file_once(&s, |f| {
        f["agents"]["main"]["allowlist"][0]["lastUsedAt"].is_u64()
    })
    .await;
    let entry = &file["agents"]["main"]["allowlist"][0];
    let at = entry["lastUsedAt"].as_u64().unwrap();
    assert!(at >= before && at <= now_ms(), "{entry}");
    assert_eq!(entry["lastUsedCommand"], "touch used.txt");
    assert!(
        entry["lastResolvedPath"]
            .as_str()
            .unwrap()
            .ends_with("/touch"),
        "{entry}"
    );
    assert_eq!(entry["id"], "t");
    assert_eq!(file["agents"]["main"]["autoAllowSkills"], true);
    assert_eq!(file["socket"]["path"], "/x.sock");

    // `clawfort approvals list` shows it.
    let out = run(&["approvals", "list"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("  touch\n    last used 20") && text.contains(": touch used.txt ("),
        "{text}"
    );
    let out = run(&["approvals", "list", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["allowlist"][0]["lastUsedAt"], at, "{list}");

    // An "always" entry binds a hash of the text: stamped, without the text.
    let (id, before) = s.asked("mkdir -p made").await;
    s.say(
        OWNER,
        &format!("/approve {id} always"),
        OWNER,
        "added to the allowlist",
    )
    .await;
    s.next(OWNER, before, "[exit code 0]").await;
    s.say(OWNER, "mkdir -p made", OWNER, "[exit code 0]").await;
    let file = file_once(&s, |f| {
        f["agents"]["main"]["allowlist"][1]["lastUsedAt"].is_u64()
    })
    .await;
    let always = &file["agents"]["main"]["allowlist"][1];
    assert_eq!(always["source"], "allow-always", "{file}");
    assert!(always.get("lastUsedCommand").is_none(), "{file}");
    let text = String::from_utf8_lossy(&run(&["approvals", "list"]).stdout).into_owned();
    assert!(
        text.contains("(one exact command in one workdir)"),
        "{text}"
    );

    // A hostile stamp: every command is denied, naming the field; the CLI warns.
    std::fs::write(
        s.gw.path().join("exec-approvals.json"),
        r#"{"agents": {"main": {"allowlist": [{"pattern": "touch", "lastUsedAt": "x"}]}}}"#,
    )
    .unwrap();
    let reply = s.say(OWNER, "touch bad.txt", OWNER, "not run").await;
    assert!(
        reply.contains("agents.main.allowlist[0].lastUsedAt"),
        "{reply}"
    );
    assert!(!s.workspace("bad.txt").exists());
    let out = run(&["approvals", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("allowlist[0].lastUsedAt"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_approved_always_at_once_both_stay_in_the_allowlist() {
    if !runnable("approvals::two_sessions_approved_always_at_once_both_stay_in_the_allowlist") {
        return;
    }
    let allowlist = r#"{"version": 1, "agents": {"main": {"allowlist": [{"pattern": "ls"}]}}}"#;
    let s = Setup::start("on-miss", Some(allowlist)).await;
    let before = s.sent(OWNER).len();
    let friend_before = s.sent(FRIEND).len();
    s.telegram.push(private_text(OWNER, "touch one.txt"));
    s.telegram.push(private_text(FRIEND, "touch two.txt"));
    let one = s.next(OWNER, before, "Command: touch one.txt").await;
    let two = s.next(OWNER, before, "Command: touch two.txt").await;
    let id = |prompt: &str| prompt.lines().next().unwrap()["Exec approval ".len()..].to_owned();
    // Both answers in one batch: the two entries are written at the same moment.
    s.telegram.push(private_text(
        OWNER,
        &format!("/approve {} always", id(&one)),
    ));
    s.telegram.push(private_text(
        OWNER,
        &format!("/approve {} always", id(&two)),
    ));
    s.next(OWNER, before, "[exit code 0]").await;
    s.next(FRIEND, friend_before, "[exit code 0]").await;
    let file = file_once(&s, |f| {
        f["agents"]["main"]["allowlist"]
            .as_array()
            .is_some_and(|a| a.len() == 3)
    })
    .await;
    let entries = file["agents"]["main"]["allowlist"].as_array().unwrap();
    assert_eq!(entries[0]["pattern"], "ls");
    assert!(entries[1..].iter().all(|e| e["source"] == "allow-always"));
    assert!(s.workspace("one.txt").exists() && s.workspace("two.txt").exists());
}
