//! The measuring half of `cargo xtask bench exec` (which builds it in release, runs it as an
//! unprivileged user, since host exec refuses root, and reports against the target): the
//! latency of the `exec` tool running `true` on the host, through [`ExecTool`], the code the
//! agent calls (input checks, workdir, the approvals policy, `confine::run` with Landlock, rlimits, the seccomp
//! filter, a clean environment and its own process group, the report); the cost of one
//! execution-log entry ([`ToolLog::record`], the append the agent does per call); and the same
//! command spawned unconfined through tokio, for comparison.
//!
//! `exec_latency [RUNS]` prints one JSON object: the Landlock support and, per measure, min,
//! p50, p90 and p99 in milliseconds over RUNS (default 500) calls after 20 unmeasured ones.

#[path = "support/latency.rs"]
mod latency;

use std::sync::Arc;
use std::time::Duration;

use clawfort::approvals::Approvals;
use clawfort::config::{DmScope, ExecAsk, ExecSecurity};
use clawfort::confine::{self, Policy};
use clawfort::redact::Redactor;
use clawfort::sessions::direct_key;
use clawfort::tools::log::{Approval, Entry, Place, Status};
use clawfort::tools::{Call, ExecTool, Tool, ToolLog};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
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
        policy,
        clawfort::confine::Host::Here,
        Some(Duration::from_secs(10)),
        approvals,
    ));
    let log = ToolLog::new(dir.path().join("logs/tools.jsonl"), Redactor::new([]));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let session = direct_key(DmScope::Main, "telegram", "default", "1");
    let exec = rt.block_on(latency::measure(runs, || async {
        let call = Call {
            session_key: session.clone(),
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
    }));
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
        "logEntry": latency::figures(entry),
        "unconfinedSpawn": latency::figures(plain),
    });
    println!("{report}");
    Ok(())
}
