//! The command runner (`clawfort exec-runner`, `confine::Host::Runner`): the real binary
//! serves each connection as systemd's `Accept=yes` would hand it over (the connection as
//! standard input and output), started here by a small accept loop standing in for
//! clawfort-exec.socket.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::*;
use clawfort::confine::Host;

/// The accept loop: one `clawfort exec-runner` per connection, its children kept for the
/// tests to watch. The gateway's stand-in environment holds a secret the command must not see.
struct Runner {
    _dir: TempDir,
    socket: PathBuf,
    children: Arc<Mutex<Vec<Child>>>,
}

impl Runner {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("exec.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let children = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&children);
        std::thread::spawn(move || {
            for stream in listener.incoming().take(16) {
                let Ok(stream) = stream else { return };
                let out = stream.as_fd().try_clone_to_owned().unwrap();
                let child = Command::new(env!("CARGO_BIN_EXE_clawfort"))
                    .arg("exec-runner")
                    .env("ANTHROPIC_API_KEY", SECRET)
                    .stdin(Stdio::from(OwnedFd::from(stream)))
                    .stdout(Stdio::from(out))
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap();
                kept.lock().unwrap().push(child);
            }
        });
        Self {
            _dir: dir,
            socket,
            children,
        }
    }

    fn host(&self) -> Host {
        Host::Runner(self.socket.clone())
    }

    /// Waits (bounded) for every runner process started so far to exit.
    fn all_exited(&self) -> bool {
        for _ in 0..100 {
            let mut children = self.children.lock().unwrap();
            if children.iter_mut().all(|c| c.try_wait().unwrap().is_some()) {
                return true;
            }
            drop(children);
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

async fn run_in(host: &Host, policy: &Policy, command: &str, timeout: Duration) -> Outcome {
    host.run(
        policy,
        command,
        policy.workspace(),
        Instant::now() + timeout,
        &CancellationToken::new(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_runner_runs_the_command_confined_and_returns_its_output() {
    let Some(h) = home("runner::the_runner_runs_the_command_confined_and_returns_its_output")
    else {
        return;
    };
    let runner = Runner::start();
    let host = runner.host();
    // The control: output, exit status and cwd come back.
    let out = run_in(
        &host,
        &h.policy,
        "pwd; echo oops >&2; exit 3",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.ending, Ending::Exited(3), "{}", text(&out));
    assert_eq!(
        text(&out),
        format!("{}\noops\n", h.policy.workspace().display())
    );
    // Confined as a direct run is: the state directory and the runner's environment are
    // out of reach.
    let env = h.state.join(".env");
    let out = run_in(
        &host,
        &h.policy,
        &format!("cat '{}'; env; cat /proc/$PPID/environ", env.display()),
        Duration::from_secs(20),
    )
    .await;
    assert!(!text(&out).contains(SECRET), "{}", text(&out));
    assert!(text(&out).contains("Permission denied"), "{}", text(&out));
    // Output beyond the cap is counted, and only the cap crosses the socket.
    let out = run_in(
        &host,
        &h.policy,
        "head -c 100000 /dev/zero",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        (out.output.len(), out.total_bytes),
        (confine::OUTPUT_CAP, 100_000)
    );
    assert!(runner.all_exited(), "a runner outlived its command");
}

#[tokio::test]
async fn a_timeout_in_the_runner_kills_the_command() {
    let Some(h) = home("runner::a_timeout_in_the_runner_kills_the_command") else {
        return;
    };
    let runner = Runner::start();
    let out = run_in(
        &runner.host(),
        &h.policy,
        "echo $$ > pid; sleep 60",
        Duration::from_millis(700),
    )
    .await;
    assert_eq!(out.ending, Ending::TimedOut, "{}", text(&out));
    let pid: u32 = read_pid(h.policy.workspace());
    assert!(gone(pid).await, "the timed-out command {pid} still runs");
    assert!(runner.all_exited());
}

#[tokio::test]
async fn cancelling_closes_the_connection_and_the_runner_kills_the_command() {
    let Some(h) = home("runner::cancelling_closes_the_connection_and_the_runner_kills_the_command")
    else {
        return;
    };
    let runner = Runner::start();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let pid_file = h.policy.workspace().join("pid");
    tokio::spawn(async move {
        for _ in 0..200 {
            if pid_file.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        trigger.cancel();
    });
    let started = Instant::now();
    let out = runner
        .host()
        .run(
            &h.policy,
            "echo $$ > pid; sleep 60",
            h.policy.workspace(),
            Instant::now() + Duration::from_secs(60),
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(out.ending, Ending::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The runner saw the connection close and ended the command, then itself.
    let pid = read_pid(h.policy.workspace());
    assert!(gone(pid).await, "the cancelled command {pid} still runs");
    assert!(runner.all_exited());
}

#[tokio::test]
async fn a_bad_request_or_an_absent_runner_is_a_clear_refusal() {
    let Some(h) = home("runner::a_bad_request_or_an_absent_runner_is_a_clear_refusal") else {
        return;
    };
    let runner = Runner::start();
    // Garbage on the wire: the runner answers with a refusal line, runs nothing.
    let mut stream = std::os::unix::net::UnixStream::connect(&runner.socket).unwrap();
    std::io::Write::write_all(&mut stream, b"{\"command\": 1}\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(
        answer.starts_with("{\"reply\":\"refused\"") && answer.contains("a bad request"),
        "{answer}"
    );
    // A policy no gateway would build (granting `/`) is refused, whoever sends it.
    let mut stream = std::os::unix::net::UnixStream::connect(&runner.socket).unwrap();
    let wide = serde_json::json!({
        "policy": {"workspace": "/", "allowed": [], "system": [], "connect_ports": [],
                   "limits": confine::Limits::default()},
        "command": "echo RAN", "workdir": "/", "timeout_ms": 5000,
    });
    std::io::Write::write_all(&mut stream, format!("{wide}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(
        answer.contains("refused") && answer.contains("grants `/`") && !answer.contains("RAN"),
        "{answer}"
    );
    // A workspace the runner cannot see is named, with the fix.
    let elsewhere = Policy::new(Path::new("/nonexistent/clawfort-ws"), &[], &[]).unwrap();
    let err = runner
        .host()
        .run(
            &elsewhere,
            "true",
            Path::new("/"),
            Instant::now() + Duration::from_secs(20),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        err.contains("/nonexistent/clawfort-ws") && err.contains("BindPaths="),
        "{err}"
    );
    // No runner at all: the error names the socket and the unit.
    let absent = Host::Runner(h.state.join("no-such.sock"));
    let err = absent
        .run(
            &h.policy,
            "true",
            h.policy.workspace(),
            Instant::now() + Duration::from_secs(20),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        err.contains("no-such.sock") && err.contains("clawfort-exec.socket"),
        "{err}"
    );
}

fn read_pid(workspace: &Path) -> u32 {
    std::fs::read_to_string(workspace.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
