//! The boot-and-probe suite: attacks a booted clawfort image from its network and checks it
//! from inside over SSH, one line per probe, plus a JSON report.
//!
//! It boots nothing itself: `cargo xtask e2e` builds the image, boots it (twice, for the
//! uniqueness probe) on a private network namespace, and runs this binary with a testbed file
//! describing the guests (`cargo test --test e2e -- --testbed FILE`). A plain `cargo test`
//! skips it.

mod exec;
mod fakes;
mod probes;
mod redact;
mod ssh;
#[path = "testbed.rs"]
mod testbed;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

use crate::ssh::Session;
use crate::testbed::{ProbeResult, Report, Testbed};

#[derive(Parser)]
#[command(about = "Probe a booted clawfort image (run by `cargo xtask e2e`)")]
struct Args {
    /// Testbed description written by `cargo xtask e2e`.
    #[arg(long)]
    testbed: Option<PathBuf>,
    /// Print the probe names and exit.
    #[arg(long)]
    list: bool,
}

/// What every probe gets: the testbed and an open admin session to the guest.
pub struct Ctx {
    pub testbed: Testbed,
    pub admin: Session,
    /// The second boot's identity, read in the background from the start.
    pub peer: probes::uniqueness::PeerCapture,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("e2e: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool> {
    let args = Args::parse();
    if args.list {
        for probe in probes::ALL {
            println!("{}", probe.name);
        }
        return Ok(true);
    }
    let path = args
        .testbed
        .context("no --testbed FILE: run the suite with `cargo xtask e2e`, which boots the image and writes it")?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read testbed {}", path.display()))?;
    let testbed: Testbed = serde_json::from_str(&text)
        .with_context(|| format!("invalid testbed {}", path.display()))?;
    let unknown: Vec<&String> = testbed
        .only
        .iter()
        .chain(&testbed.skip)
        .filter(|name| !probes::ALL.iter().any(|probe| probe.name == name.as_str()))
        .collect();
    anyhow::ensure!(
        unknown.is_empty(),
        "unknown probe names {unknown:?} (see --list)"
    );

    let started = Instant::now();
    let admin = Session::open(&testbed, &testbed.guest)?;
    let peer = probes::uniqueness::PeerCapture::start(&testbed);
    let ctx = Ctx {
        testbed,
        admin,
        peer,
    };
    let redactions = redact::Redactions::gather(&ctx);
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for probe in probes::ALL {
        if !ctx.testbed.only.is_empty() && !ctx.testbed.only.iter().any(|name| name == probe.name) {
            continue;
        }
        if ctx.testbed.skip.iter().any(|name| name == probe.name) {
            println!("SKIP {} (told to)", probe.name);
            skipped.push(probe.name.to_owned());
            continue;
        }
        let probe_started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (probe.run)(&ctx)))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the probe panicked")));
        let seconds = probe_started.elapsed().as_secs_f64();
        let (passed, detail) = match outcome {
            Ok(detail) => (true, redactions.apply(&detail)),
            Err(err) => (false, redactions.apply(&format!("{err:#}"))),
        };
        println!(
            "{} {} ({seconds:.1} s): {detail}",
            if passed { "PASS" } else { "FAIL" },
            probe.name
        );
        results.push(ProbeResult {
            name: probe.name.to_owned(),
            passed,
            detail,
            seconds,
        });
    }
    let failed = results.iter().filter(|result| !result.passed).count();
    let report = Report {
        target: ctx.testbed.target.clone(),
        guest: ctx.testbed.guest.clone(),
        peer: ctx.testbed.peer.clone(),
        booted: ctx.testbed.booted.clone(),
        passed: results.len() - failed,
        failed,
        skipped,
        duration_s: started.elapsed().as_secs_f64(),
        probes: results,
    };
    std::fs::write(&ctx.testbed.report, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write report {}", ctx.testbed.report.display()))?;
    println!(
        "{} of {} probes passed in {:.0} s; report: {}",
        report.passed,
        report.passed + failed,
        report.duration_s,
        ctx.testbed.report.display()
    );
    Ok(failed == 0)
}
