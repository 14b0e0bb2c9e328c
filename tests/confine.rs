//! Host confinement (`clawfort::confine`) on this machine's kernel: each test runs a real
//! `/bin/sh -c` under the real Landlock ruleset, rlimits and environment and attacks one
//! protection, with a positive control where a denial alone would prove nothing.
//!
//! A kernel without Landlock skips each test with a printed reason (and `run` refuses, which
//! `refuses_without_landlock_or_runs_confined` checks either way).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "gateway/support.rs"]
#[allow(dead_code)]
mod support;
#[path = "shared/unprivileged.rs"]
mod unprivileged;

use unprivileged::unprivileged;

use clawfort::confine::{self, Ending, Outcome, Policy};
use tempfile::TempDir;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A state directory standing in for `~/.openclaw`: `.env` with a secret, and the workspace
/// inside it, as OpenClaw's default layout has it.
struct Home {
    _dir: TempDir,
    state: PathBuf,
    policy: Policy,
}

const SECRET: &str = "sk-ant-confine-test-0123456789abcdef";

fn home(test: &str) -> Option<Home> {
    if !unprivileged(test) {
        return None;
    }
    if let Err(why) = confine::support() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".openclaw");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join(".env"), format!("ANTHROPIC_API_KEY={SECRET}\n")).unwrap();
    let workspace = state.join("workspace");
    let policy = Policy::new(&workspace, &[], &[]).unwrap();
    policy.ensure_workspace().unwrap();
    std::fs::write(workspace.join("notes.txt"), "inside the workspace\n").unwrap();
    Some(Home {
        _dir: dir,
        state: state.canonicalize().unwrap(),
        policy,
    })
}

async fn run_for(policy: &Policy, command: &str, timeout: Duration) -> Outcome {
    let workdir = policy.workspace().to_owned();
    confine::run(
        policy,
        command,
        &workdir,
        Instant::now() + timeout,
        &CancellationToken::new(),
    )
    .await
    .unwrap()
}

async fn run(policy: &Policy, command: &str) -> Outcome {
    run_for(policy, command, Duration::from_secs(20)).await
}

fn text(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.output).into_owned()
}

#[tokio::test]
async fn root_is_refused() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: the refusal of root needs a test run as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy::new(&dir.path().join("ws"), &[], &[]).unwrap();
    policy.ensure_workspace().unwrap();
    let marker = dir.path().join("ran");
    let command = format!("touch '{}'", marker.display());
    let deadline = Instant::now() + Duration::from_secs(20);
    let err = confine::run(
        &policy,
        &command,
        policy.workspace(),
        deadline,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.contains("runs as root"), "{err}");
    assert!(!marker.exists());
}

#[tokio::test]
async fn refuses_without_landlock_or_runs_confined() {
    if !unprivileged("refuses_without_landlock_or_runs_confined") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy::new(&dir.path().join("ws"), &[], &[]).unwrap();
    policy.ensure_workspace().unwrap();
    let result = confine::run(
        &policy,
        "echo ran",
        policy.workspace(),
        Instant::now() + Duration::from_secs(20),
        &CancellationToken::new(),
    )
    .await;
    match confine::support() {
        Ok(support) => {
            eprintln!("kernel: {}", support.describe());
            let out = result.unwrap();
            assert_eq!(out.ending, Ending::Exited(0));
            assert_eq!(text(&out), "ran\n");
        }
        Err(why) => {
            let err = result.unwrap_err();
            assert!(
                err.contains("host execution is refused") && err.contains(&why),
                "{err}"
            );
        }
    }
}

#[tokio::test]
async fn the_state_directory_is_unreadable_but_the_workspace_is_not() {
    let Some(h) = home("the_state_directory_is_unreadable_but_the_workspace_is_not") else {
        return;
    };
    let env = h.state.join(".env");
    let out = run(&h.policy, &format!("cat '{}'", env.display())).await;
    assert_ne!(out.ending, Ending::Exited(0), "{}", text(&out));
    assert!(text(&out).contains("Permission denied"), "{}", text(&out));
    assert!(!text(&out).contains(SECRET));
    // Listing the state directory is denied too.
    let out = run(&h.policy, &format!("ls '{}'", h.state.display())).await;
    assert_ne!(out.ending, Ending::Exited(0), "{}", text(&out));
    assert!(!text(&out).contains(".env"), "{}", text(&out));
    // Neither a symbolic nor a hard link from the workspace reaches it.
    let out = run(
        &h.policy,
        &format!(
            "ln -s '{0}' sym; cat sym; ln '{0}' hard; cat hard",
            env.display()
        ),
    )
    .await;
    assert!(!text(&out).contains(SECRET), "{}", text(&out));
    assert!(
        !h.policy.workspace().join("hard").exists(),
        "{}",
        text(&out)
    );
    // The control: the same command works inside the workspace, by absolute path too.
    let notes = h.policy.workspace().join("notes.txt");
    let out = run(&h.policy, &format!("cat notes.txt '{}'", notes.display())).await;
    assert_eq!(out.ending, Ending::Exited(0), "{}", text(&out));
    assert_eq!(text(&out), "inside the workspace\n".repeat(2));
}

#[tokio::test]
async fn the_gateways_proc_entries_are_unreadable() {
    let Some(h) = home("the_gateways_proc_entries_are_unreadable") else {
        return;
    };
    let pid = std::process::id();
    let out = run(
        &h.policy,
        &format!("cat /proc/{pid}/environ; head -c 16 /proc/{pid}/mem; ls /proc"),
    )
    .await;
    assert_ne!(out.ending, Ending::Exited(0), "{}", text(&out));
    let output = text(&out);
    assert_eq!(output.matches("Permission denied").count(), 3, "{output}");
    assert!(!output.contains("PATH="), "{output}");
}

#[tokio::test]
async fn nothing_outside_the_workspace_can_be_written() {
    let Some(h) = home("nothing_outside_the_workspace_can_be_written") else {
        return;
    };
    let outside = h.state.join("planted");
    let config = h.state.join("openclaw.json");
    let tmp_outside = std::env::temp_dir().join(format!("clawfort-planted-{}", std::process::id()));
    let out = run(
        &h.policy,
        &format!(
            "echo x > '{}'; echo x > '{}'; echo x > '{}'; mkdir '{}.d'; echo done",
            outside.display(),
            config.display(),
            tmp_outside.display(),
            outside.display()
        ),
    )
    .await;
    assert_eq!(
        text(&out).matches("Permission denied").count(),
        4,
        "{}",
        text(&out)
    );
    assert!(!outside.exists() && !config.exists() && !tmp_outside.exists());
    assert!(!h.state.join("planted.d").exists());
    // The control: writing inside the workspace and in the private TMPDIR works.
    let out = run(
        &h.policy,
        "echo y > made.txt && echo t > \"$TMPDIR/t\" && cat \"$TMPDIR/t\"",
    )
    .await;
    assert_eq!(out.ending, Ending::Exited(0), "{}", text(&out));
    assert_eq!(text(&out), "t\n");
    let made = h.policy.workspace().join("made.txt");
    assert_eq!(std::fs::read_to_string(made).unwrap(), "y\n");
}

#[tokio::test]
async fn a_denied_path_outside_the_workspace_wins_over_the_system_directories() {
    let Some(_) = home("a_denied_path_outside_the_workspace_wins_over_the_system_directories")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // clawfort's default deniedPaths include /etc: commands then cannot read it.
    let policy = Policy::new(&dir.path().join("ws"), &[], &[PathBuf::from("/etc")]).unwrap();
    policy.ensure_workspace().unwrap();
    let out = run(&policy, "cat /etc/hostname").await;
    assert!(text(&out).contains("Permission denied"), "{}", text(&out));
    let open = Policy::new(&dir.path().join("ws"), &[], &[]).unwrap();
    let out = run(&open, "cat /etc/hostname >/dev/null && echo readable").await;
    assert_eq!(text(&out), "readable\n");
}

#[tokio::test]
async fn tcp_connect_is_denied_unless_the_port_is_allowed() {
    let Some(h) = home("tcp_connect_is_denied_unless_the_port_is_allowed") else {
        return;
    };
    if !confine::support().unwrap().tcp() {
        eprintln!("SKIPPED: the kernel has no Landlock TCP rules (ABI 4)");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let probe = format!(
        "perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(PeerAddr => \"127.0.0.1:{port}\") \
         or die \"connect: $!\\n\"; print \"connected\\n\"'"
    );
    let out = run(&h.policy, &probe).await;
    assert!(
        text(&out).contains("connect: Permission denied"),
        "{}",
        text(&out)
    );
    assert!(
        listener.accept().is_err(),
        "a connection reached the listener"
    );
    // The control: with the port allowed the same probe connects.
    let mut allowed = h.policy.clone();
    allowed.connect_ports = vec![port];
    let out = run(&allowed, &probe).await;
    assert_eq!(text(&out), "connected\n");
}

#[tokio::test]
async fn udp_and_unix_sockets_are_denied() {
    let Some(h) = home("udp_and_unix_sockets_are_denied") else {
        return;
    };
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    // A unix socket the command's user may open, like the egress proxy's on the appliance.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.sock");
    let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    unix.set_nonblocking(true).unwrap();
    let probe = format!(
        "perl -MIO::Socket::INET -MIO::Socket::UNIX -e '\
         $u = IO::Socket::INET->new(PeerAddr => \"127.0.0.1:{udp_port}\", Proto => \"udp\") \
           or print \"udp: $!\\n\"; $u and $u->send(\"x\"); \
         $s = IO::Socket::UNIX->new(Peer => \"{}\") or print \"unix: $!\\n\"'",
        path.display()
    );
    let out = run(&h.policy, &probe).await;
    let output = text(&out);
    assert!(output.contains("udp: Permission denied"), "{output}");
    assert!(output.contains("unix: Permission denied"), "{output}");
    assert!(udp.recv(&mut [0; 8]).is_err() && unix.accept().is_err());
    // The control: unconfined, the same probe reaches both.
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", &probe])
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::thread::sleep(Duration::from_millis(50));
    assert!(udp.recv(&mut [0; 8]).is_ok() && unix.accept().is_ok());
}

#[tokio::test]
async fn the_command_sees_none_of_the_gateways_environment() {
    let Some(h) = home("the_command_sees_none_of_the_gateways_environment") else {
        return;
    };
    // SAFETY: set once, before the command starts; no other test reads this variable.
    unsafe { std::env::set_var("CLAWFORT_TEST_LEAK", SECRET) };
    let out = run(&h.policy, "env").await;
    let output = text(&out);
    assert!(!output.contains(SECRET), "{output}");
    let mut names: Vec<&str> = output.lines().filter_map(|l| l.split('=').next()).collect();
    names.sort_unstable();
    // `PWD` is the shell's own.
    assert_eq!(
        names,
        ["HOME", "LANG", "PATH", "PWD", "TERM", "TMPDIR"],
        "{output}"
    );
    assert!(output.contains(&format!("HOME={}\n", h.policy.workspace().display())));
}

#[tokio::test]
async fn a_fork_bomb_is_stopped_by_the_process_limit_and_the_caller_survives() {
    let Some(h) = home("a_fork_bomb_is_stopped_by_the_process_limit_and_the_caller_survives")
    else {
        return;
    };
    let mut policy = h.policy.clone();
    policy.limits.extra_processes = 64;
    let started = std::time::Instant::now();
    let out = run_for(
        &policy,
        "bomb() { bomb | bomb & }; bomb; sleep 30",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(out.ending, Ending::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        text(&out).contains("fork"),
        "no fork failed: {}",
        text(&out)
    );
    // The caller can still make threads and processes, and a next command runs.
    std::thread::spawn(|| ()).join().unwrap();
    let out = run(&h.policy, "echo alive").await;
    assert_eq!(text(&out), "alive\n");
}

#[tokio::test]
async fn memory_and_cpu_hogs_hit_their_limits() {
    let Some(h) = home("memory_and_cpu_hogs_hit_their_limits") else {
        return;
    };
    let mut policy = h.policy.clone();
    policy.limits.data_bytes = 64 << 20;
    policy.limits.cpu_secs = 1;
    let out = run(
        &policy,
        "perl -e '$x = \"a\" x (256 * 1024 * 1024); print \"allocated\\n\"'",
    )
    .await;
    assert!(!text(&out).contains("allocated"), "{}", text(&out));
    assert!(text(&out).contains("Out of memory"), "{}", text(&out));
    // The control: a small allocation works under the same limit.
    let out = run(
        &policy,
        "perl -e '$x = \"a\" x (1024 * 1024); print \"allocated\\n\"'",
    )
    .await;
    assert_eq!(text(&out), "allocated\n");
    let started = std::time::Instant::now();
    let out = run(&policy, "exec perl -e '1 while 1'").await;
    assert_eq!(out.ending, Ending::Signaled(9), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Whether `pid` is still a live process (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

async fn gone(pid: u32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let Some(h) = home("a_timeout_kills_the_whole_process_group") else {
        return;
    };
    let started = std::time::Instant::now();
    let out = run_for(
        &h.policy,
        "sleep 100 & echo $!; wait",
        Duration::from_millis(700),
    )
    .await;
    assert_eq!(out.ending, Ending::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(3));
    let grandchild: u32 = text(&out).trim().parse().unwrap();
    assert!(
        gone(grandchild).await,
        "sleep {grandchild} survived the timeout"
    );
}

#[tokio::test]
async fn background_processes_end_with_the_command_and_with_a_dropped_future() {
    let Some(h) = home("background_processes_end_with_the_command_and_with_a_dropped_future")
    else {
        return;
    };
    // A command that returns at once leaves no background process behind.
    let out = run(&h.policy, "sleep 100 >/dev/null & echo $!").await;
    assert_eq!(out.ending, Ending::Exited(0));
    let pid: u32 = text(&out).trim().parse().unwrap();
    assert!(
        gone(pid).await,
        "background sleep {pid} outlived its command"
    );
    // Dropping the future (the agent loop's deadline or /stop) kills the group too.
    let pid_file = h.policy.workspace().join("pid");
    let command = format!("sleep 100 & echo $! > '{}'; wait", pid_file.display());
    let workdir = h.policy.workspace().to_owned();
    let cancel = CancellationToken::new();
    let running = confine::run(
        &h.policy,
        &command,
        &workdir,
        Instant::now() + Duration::from_secs(60),
        &cancel,
    );
    let _ = tokio::time::timeout(Duration::from_millis(500), running).await;
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(gone(pid).await, "sleep {pid} outlived the dropped future");
}

#[tokio::test]
async fn cancel_kills_the_command() {
    let Some(h) = home("cancel_kills_the_command") else {
        return;
    };
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let workdir = h.policy.workspace().to_owned();
    let out = confine::run(
        &h.policy,
        "echo started; sleep 100",
        &workdir,
        Instant::now() + Duration::from_secs(60),
        &cancel,
    )
    .await
    .unwrap();
    assert_eq!(out.ending, Ending::Cancelled);
    assert_eq!(text(&out), "started\n");
}

#[tokio::test]
async fn output_beyond_the_cap_is_counted_and_dropped() {
    let Some(h) = home("output_beyond_the_cap_is_counted_and_dropped") else {
        return;
    };
    let out = run(
        &h.policy,
        "head -c 200000 /dev/zero | tr '\\0' a; echo tail >&2",
    )
    .await;
    assert_eq!(out.ending, Ending::Exited(0));
    assert_eq!(out.output.len(), confine::OUTPUT_CAP);
    assert_eq!(out.total_bytes, 200_005);
    assert!(out.truncated());
}

#[tokio::test]
async fn stderr_and_exit_status_come_back() {
    let Some(h) = home("stderr_and_exit_status_come_back") else {
        return;
    };
    let out = run(&h.policy, "echo out; echo err >&2; exit 3").await;
    assert_eq!(out.ending, Ending::Exited(3));
    assert_eq!(text(&out), "out\nerr\n");
}

#[test]
fn workdir_must_lie_inside_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy::new(&dir.path().join("ws"), &[], &[]).unwrap();
    policy.ensure_workspace().unwrap();
    let ws = policy.workspace().canonicalize().unwrap();
    std::fs::create_dir(ws.join("sub")).unwrap();
    std::os::unix::fs::symlink(dir.path(), ws.join("out")).unwrap();
    assert_eq!(policy.workdir(None).unwrap(), ws);
    assert_eq!(policy.workdir(Some("sub")).unwrap(), ws.join("sub"));
    assert_eq!(
        policy
            .workdir(Some(ws.join("sub").to_str().unwrap()))
            .unwrap(),
        ws.join("sub")
    );
    for outside in ["..", "/tmp", "out", "sub/../.."] {
        let err = policy.workdir(Some(outside)).unwrap_err();
        assert!(err.contains("outside the workspace"), "{outside}: {err}");
    }
    assert!(policy.workdir(Some("missing")).is_err());
}

#[test]
fn denied_paths_inside_granted_trees_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let inside = ws.join("secret");
    let err = Policy::new(&ws, &[], &[inside]).unwrap_err();
    assert!(err.contains("overlaps"), "{err}");
    let err = Policy::new(&ws, &[], &[PathBuf::from("/usr/share/secret")]).unwrap_err();
    assert!(err.contains("inside /usr"), "{err}");
    let err = Policy::new(&ws, &[PathBuf::from("/")], &[]).unwrap_err();
    assert!(err.contains("whole file system"), "{err}");
    assert!(Policy::new(
        &ws,
        &[],
        &[PathBuf::from("/etc"), Path::new("/root").into()]
    )
    .is_ok());
}

/// End to end: the real gateway binary, a scripted model that calls `exec`, and Telegram.
mod through_the_gateway {
    use clawfort_fakes::model::{ok, Fake, KEY};
    use clawfort_fakes::telegram::{private_text, Fake as Telegram};
    use serde_json::{json, Value};

    use crate::support::{append_env, state_dir, Gateway, TOKEN};
    use crate::unprivileged;

    const BOT_TOKEN: &str = "123456789:AAHexecTOKENexecTOKENexecTOKENexec12";
    const USER: i64 = 555;

    fn answer(content: Value, stop: &str) -> Value {
        json!({
            "id": "msg", "type": "message", "role": "assistant", "model": "m1",
            "content": content, "stop_reason": stop,
            "usage": {"input_tokens": 10, "output_tokens": 10}
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_models_exec_call_runs_confined_and_its_output_returns_to_the_model() {
        if !unprivileged("through_the_gateway::a_models_exec_call_runs_confined_and_its_output_returns_to_the_model") {
            return;
        }
        if let Err(why) = clawfort::confine::support() {
            eprintln!("SKIPPED: {why}");
            return;
        }
        let dir = state_dir(None);
        let env = dir.path().join(".env");
        // The model's command: prove it runs in the workspace, try the state directory's
        // secrets, and keep what it saw in files the test reads past the gateway's redactor.
        let command = format!(
            "echo ran-in-$(pwd); cat '{}' > leak.txt 2>&1; echo \"cat: $?\"; env > env.txt",
            env.display()
        );
        let model = Fake::start(move |n, _| {
            ok(match n {
                0 => answer(
                    json!([{"type": "tool_use", "id": "call_1", "name": "exec",
                            "input": {"command": command}}]),
                    "tool_use",
                ),
                _ => answer(json!([{"type": "text", "text": "Done."}]), "end_turn"),
            })
        })
        .await;
        let telegram = Telegram::start(BOT_TOKEN).await;
        let config = format!(
            r#"{{
              models: {{ providers: {{ fake: {{
                api: "anthropic-messages", baseUrl: "{}", apiKey: "${{FAKE_API_KEY}}",
                models: [{{ id: "m1", contextWindow: 100000 }}],
              }} }} }},
              agents: {{ defaults: {{ model: "fake/m1", sandbox: {{ mode: "off" }} }} }},
              tools: {{ exec: {{ security: "full", timeoutSeconds: 20 }} }},
              channels: {{ telegram: {{
                botToken: "${{TELEGRAM_BOT_TOKEN}}", apiRoot: "{}",
                dmPolicy: "allowlist", allowFrom: ["{USER}"],
              }} }},
            }}"#,
            model.url(""),
            telegram.api_root()
        );
        std::fs::write(dir.path().join("openclaw.json"), config).unwrap();
        append_env(dir.path(), &format!("FAKE_API_KEY={KEY}\n"));
        // The bot token in the process environment, as systemd's EnvironmentFile puts it.
        let gw = tokio::task::block_in_place(|| {
            Gateway::start_with_env(dir, &[("TELEGRAM_BOT_TOKEN", BOT_TOKEN)])
        });

        telegram.push(private_text(USER, "run the thing"));
        telegram
            .wait_until("the final answer", |t| !t.sent_to(USER).is_empty())
            .await;
        assert_eq!(telegram.sent_to(USER), ["Done."]);

        // The model offered `exec` and got the command's output back as a tool result.
        let seen = model.seen();
        assert_eq!(seen.len(), 2);
        let offered = seen[0].json()["tools"].clone();
        assert!(
            offered
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "exec"),
            "{offered}"
        );
        let request = seen[1].json();
        let last = request["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        let result = &last["content"][0];
        assert_eq!(result["type"], "tool_result", "{last}");
        let content = result["content"].as_str().unwrap();
        let workspace = gw.path().join("workspace").canonicalize().unwrap();
        assert!(
            content.contains(&format!("ran-in-{}", workspace.display())),
            "{content}"
        );
        assert!(
            content.contains("cat: 1") && content.contains("[exit code 0]"),
            "{content}"
        );

        // What the command saw, unredacted: the .env was closed to it, and none of the
        // gateway's secrets were in its environment.
        let leak = std::fs::read_to_string(workspace.join("leak.txt")).unwrap();
        assert!(leak.contains("Permission denied"), "{leak}");
        let seen_env = std::fs::read_to_string(workspace.join("env.txt")).unwrap();
        for secret in [KEY, BOT_TOKEN, TOKEN] {
            assert!(
                !leak.contains(secret) && !seen_env.contains(secret),
                "{seen_env}"
            );
        }
        assert!(
            gw.log_lines("exec runs commands on the host under Landlock")
                .len()
                == 1
        );

        // The call is in the execution log: on the host, its exit code, its command.
        let out = crate::support::cli(gw.path(), &["logs", "--tools", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let entries: Value = serde_json::from_slice(&out.stdout).unwrap();
        let entry = &entries[0];
        assert_eq!(entries.as_array().unwrap().len(), 1, "{entries:#}");
        assert_eq!(
            (
                &entry["tool"],
                &entry["place"],
                &entry["status"],
                &entry["code"]
            ),
            (&json!("exec"), &json!("host"), &json!("exited"), &json!(0)),
            "{entry:#}"
        );
        assert!(entry["target"]
            .as_str()
            .unwrap()
            .starts_with("echo ran-in-$(pwd)"));
        // The bytes of the output, which the result wraps as untrusted data.
        let bytes = entry["bytesOut"].as_u64().unwrap() as usize;
        assert!(bytes > 0 && bytes < content.len(), "{bytes} of {content}");
    }
}

#[path = "confine/runner.rs"]
mod runner;
