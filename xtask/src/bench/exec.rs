//! `cargo xtask bench exec`: host `exec` of `true` under Landlock, p50 and p99 against the
//! target of issue 12 (p50 under 10 ms).
//!
//! The measuring program is the clawfort crate's `examples/exec_latency.rs`: it links the
//! gateway's library and runs the `exec` tool itself (the code the agent calls), which this
//! crate cannot link without building the whole gateway unoptimised. This builds it in
//! release, runs it (as `nobody` through `setpriv` when run as root: host exec refuses root)
//! and reports its JSON beside the load average.

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use xshell::{cmd, Shell};

use super::load_average;

const TARGET_P50_MS: f64 = 10.0;

/// Builds and runs the measurement; returns whether the target was met.
pub fn run(sh: &Shell, target_dir: &Path, execs: usize, json_out: bool) -> Result<bool> {
    cmd!(
        sh,
        "cargo build --release --quiet -p clawfort --example exec_latency"
    )
    .run()?;
    let program = target_dir.join("release/examples/exec_latency");
    let mut command = if rustix::process::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
            .arg(&program);
        c
    } else {
        Command::new(&program)
    };
    let load_before = load_average();
    let out = command
        .arg(execs.to_string())
        .env("TMPDIR", "/tmp")
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
    let p50 = report["execTool"]["p50"]
        .as_f64()
        .context("the report has no execTool.p50")?;
    let pass = p50 < TARGET_P50_MS;
    report["loadAverage"] = serde_json::json!([load_before, load_average()]);
    report["target"] = serde_json::json!({"p50Ms": TARGET_P50_MS, "pass": pass});
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(pass);
    }
    println!(
        "host exec of `true`, {execs} calls after 20 unmeasured, {}",
        report["landlock"].as_str().unwrap_or("?")
    );
    for (key, name) in [
        ("execTool", "exec tool, confined"),
        ("logEntry", "execution-log entry"),
        ("unconfinedSpawn", "unconfined spawn"),
    ] {
        let f = |p: &str| report[key][p].as_f64().unwrap_or(f64::NAN);
        println!(
            "{name:>20}: min {:.3} ms  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms",
            f("min"),
            f("p50"),
            f("p90"),
            f("p99")
        );
    }
    println!(
        "target: exec p50 < {TARGET_P50_MS} ms: {} ({p50:.2} ms); load average {} -> {}",
        if pass { "PASS" } else { "FAIL" },
        report["loadAverage"][0].as_str().unwrap_or("?"),
        report["loadAverage"][1].as_str().unwrap_or("?"),
    );
    Ok(pass)
}
