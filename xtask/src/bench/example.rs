//! `cargo xtask bench exec` and `bench sandbox`: the tools' latency against issue 12's
//! targets (host exec of `true` under Landlock: p50 under 10 ms; warm sandboxed exec of
//! `true`: p50 under 100 ms, container creation reported).
//!
//! The measuring programs are the clawfort crate's examples (`examples/exec_latency.rs`,
//! `examples/sandbox_latency.rs`): they link the gateway's library and run its code (the
//! `exec` tool, the sandbox), which this crate cannot link without building the whole
//! gateway unoptimised. This builds one in release, runs it and reports its JSON beside the
//! load average.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use xshell::{cmd, Shell};

use super::load_average;

/// One measuring program and how to read its report.
pub struct Example {
    /// The example's name.
    pub name: &'static str,
    /// What one measured call is, for the heading.
    pub what: &'static str,
    /// Host exec refuses root: run as `nobody` (through `setpriv`) when started as root.
    pub as_nobody: bool,
    /// The sandbox's test daemon is started as its test user, which needs root.
    pub needs_root: bool,
    /// The report's figures, in order, with their names; the first is judged.
    pub rows: &'static [(&'static str, &'static str)],
    pub target_p50_ms: f64,
}

pub const EXEC: Example = Example {
    name: "exec_latency",
    what: "host exec of `true` under Landlock",
    as_nobody: true,
    needs_root: false,
    rows: &[
        ("execTool", "exec tool, confined"),
        ("runnerExec", "exec tool through the command runner"),
        ("logEntry", "execution-log entry"),
        ("unconfinedSpawn", "unconfined spawn"),
    ],
    target_p50_ms: 10.0,
};

pub const SANDBOX: Example = Example {
    name: "sandbox_latency",
    what: "exec of `true` in the Docker sandbox (rootless daemon of the test user)",
    as_nobody: false,
    needs_root: true,
    rows: &[
        ("warmExec", "warm container"),
        ("firstCommand", "new scope (create + start)"),
    ],
    target_p50_ms: 100.0,
};

/// Builds and runs `example` with `runs` measured calls; returns whether the target was met.
pub fn run(
    sh: &Shell,
    target_dir: &Path,
    example: &Example,
    runs: usize,
    json_out: bool,
) -> Result<bool> {
    let root = rustix::process::geteuid().is_root();
    ensure!(
        root || !example.needs_root,
        "`bench` of {} needs root: it starts a rootless Docker daemon as the test user \
         (run it with sudo; `cargo xtask ci` as root installs the packages and the user)",
        example.what
    );
    let name = example.name;
    cmd!(
        sh,
        "cargo build --release --quiet -p clawfort --example {name}"
    )
    .run()?;
    let program = target_dir.join("release/examples").join(name);
    let runs_arg = runs.to_string();
    let command = if root && example.as_nobody {
        cmd!(
            sh,
            "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all -- {program} {runs_arg}"
        )
    } else {
        cmd!(sh, "{program} {runs_arg}")
    };
    let load_before = load_average();
    let out = command
        .env("TMPDIR", "/tmp")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    ensure!(
        out.status.success(),
        "{} failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let mut report: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{} printed no JSON report", program.display()))?;
    let judged = example.rows[0].0;
    let p50 = report[judged]["p50"]
        .as_f64()
        .with_context(|| format!("the report has no {judged}.p50"))?;
    let pass = p50 < example.target_p50_ms;
    report["loadAverage"] = serde_json::json!([load_before, load_average()]);
    report["target"] = serde_json::json!({"p50Ms": example.target_p50_ms, "pass": pass});
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(pass);
    }
    let detail = report["landlock"]
        .as_str()
        .map_or(String::new(), |l| format!(", {l}"));
    println!("{}, {runs} calls after 20 unmeasured{detail}", example.what);
    for (key, label) in example.rows {
        let f = |p: &str| report[key][p].as_f64().unwrap_or(f64::NAN);
        println!(
            "{label:>27}: min {:.3} ms  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms",
            f("min"),
            f("p50"),
            f("p90"),
            f("p99")
        );
    }
    println!(
        "target: {} p50 < {} ms: {} ({p50:.2} ms); load average {} -> {}",
        example.rows[0].1,
        example.target_p50_ms,
        if pass { "PASS" } else { "FAIL" },
        report["loadAverage"][0].as_str().unwrap_or("?"),
        report["loadAverage"][1].as_str().unwrap_or("?"),
    );
    Ok(pass)
}
