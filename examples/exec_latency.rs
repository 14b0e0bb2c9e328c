//! The measuring half of `cargo xtask bench exec` (which builds it in release, runs it as an
//! unprivileged user, since host exec refuses root, and reports against the target): the
//! latency of the `exec` tool running `true` on the host, through [`ExecTool`], the code the
//! agent calls (input checks, workdir, the approvals policy, `confine::run` with Landlock, rlimits, the seccomp
//! filter, a clean environment and its own process group, the report); the cost of one
//! execution-log entry ([`ToolLog::record`], the append the agent does per call); and the same
//! command spawned unconfined through tokio, for comparison. Also the same tool through the
//! command runner (`confine::Host::Runner`, the appliance's way): here an accept loop starts
//! this program again per connection as the runner, as clawfort-exec.socket starts
//! `clawfort exec-runner` (systemd's own cost of starting a unit is not in it).
//!
//! `exec_latency [RUNS]` prints one JSON object: the Landlock support and, per measure, min,
//! p50, p90 and p99 in milliseconds over RUNS (default 500) calls after 20 unmeasured ones.

#[path = "support/latency.rs"]
mod latency;

use std::sync::Arc;
use std::time::Duration;

use clawfort::approvals::Approvals;
use clawfort::config::{DmScope, ExecAsk, ExecSecurity};
use clawfort::confine::{self, Host, Policy};
use clawfort::redact::Redactor;
use clawfort::sessions::direct_key;
use clawfort::tools::log::{Approval, Entry, Place, Status};
use clawfort::tools::{Call, ExecTool, Tool, ToolLog};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The argument that makes this program serve one runner connection on stdin/stdout.
const SERVE: &str = "--serve-runner";

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some(SERVE) {
        return confine::runner::serve();
    }
    let runs: usize = std::env::args().nth(1).map_or(Ok(500), |n| n.parse())?;
    anyhow::ensure!(runs > 0, "RUNS must be 1 or more");
    let support = confine::available().map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let policy =
        Policy::new(&dir.path().join("workspace"), &[], &[]).map_err(anyhow::Error::msg)?;
    // `full` without asking: the policy check (a read of exec-approvals.json) is measured,
    // no approver is.
    let approvals = Approvals::new(
        dir.path(),
        ExecSecurity::Full,
        ExecAsk::Off,
        Duration::from_secs(10),
        Redactor::new([]),
    );
    let tool = Arc::new(ExecTool::new(
        policy.clone(),
        Host::Here,
        Some(Duration::from_secs(10)),
        approvals.clone(),
    ));
    let socket = dir.path().join("runner.sock");
    accept_loop(std::os::unix::net::UnixListener::bind(&socket)?, runs + 20);
    let via_runner = Arc::new(ExecTool::new(
        policy,
        Host::Runner(socket),
        Some(Duration::from_secs(10)),
        approvals,
    ));
    let log = ToolLog::new(dir.path().join("logs/tools.jsonl"), Redactor::new([]));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let session = direct_key(DmScope::Main, "telegram", "default", "1");
    let once = |tool: Arc<ExecTool>| {
        let session = session.clone();
        async move {
            let call = Call {
                session_key: session,
                deadline: tokio::time::Instant::now() + Duration::from_secs(10),
                cancel: CancellationToken::new(),
                tainted: false,
            };
            let out = tool.run(json!({"command": "true"}), call).await;
            assert_eq!(
                out.execution.map(|e| e.status),
                Some(Status::Exited { code: 0 }),
                "{}",
                out.content
            );
        }
    };
    let exec = rt.block_on(latency::measure(runs, || once(Arc::clone(&tool))));
    let runner = rt.block_on(latency::measure(runs, || once(Arc::clone(&via_runner))));
    let entry = rt.block_on(latency::measure(runs, || async {
        let entry = Entry::new(
            session.as_str(),
            "exec",
            Some("true".to_owned()),
            Some(Place::Host),
            Status::Exited { code: 0 },
            Approval::None,
        );
        log.record(entry.took(Duration::from_millis(2), 15));
    }));
    let plain = rt.block_on(latency::measure(runs, || async {
        let status = tokio::process::Command::new("/bin/sh")
            .args(["-c", "true"])
            .status()
            .await;
        assert!(status.is_ok_and(|s| s.success()));
    }));
    let report = json!({
        "runs": runs,
        "landlock": support.describe(),
        "execTool": latency::figures(exec),
        "runnerExec": latency::figures(runner),
        "logEntry": latency::figures(entry),
        "unconfinedSpawn": latency::figures(plain),
    });
    println!("{report}");
    Ok(())
}

/// Serves `count` connections, each by this program started again with [`SERVE`], the
/// connection as its standard input and output (systemd's `Accept=yes`).
fn accept_loop(listener: std::os::unix::net::UnixListener, count: usize) {
    use std::os::fd::{AsFd, OwnedFd};
    use std::process::{Command, Stdio};
    std::thread::spawn(move || -> std::io::Result<()> {
        let program = std::env::current_exe()?;
        for stream in listener.incoming().take(count) {
            let stream = stream?;
            let out = stream.as_fd().try_clone_to_owned()?;
            let mut child = Command::new(&program)
                .arg(SERVE)
                .stdin(Stdio::from(OwnedFd::from(stream)))
                .stdout(Stdio::from(out))
                .spawn()?;
            // Reaped in the background: the measured call ends when the reply is read.
            std::thread::spawn(move || child.wait());
        }
        Ok(())
    });
}
