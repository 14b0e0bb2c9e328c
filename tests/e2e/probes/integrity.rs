//! File integrity: the AIDE baseline was made on this machine at its first boot (never shipped
//! in the image), the daily check is scheduled, and a program planted among the system's
//! binaries is in the check's report, which then takes it into the baseline; a second check
//! after its removal reports that too, so the guest is left as it was.
//!
//! Runs late: the baseline is made in the time the first boot leaves idle, and the suite's
//! earlier probes give it that time.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::exec::last_lines;
use crate::Ctx;

const DATABASE: &str = "/var/lib/aide/aide.db";
const BASELINE_UNIT: &str = "clawfort-integrity-baseline.service";
const BASELINE_TIMER: &str = "clawfort-integrity-baseline.timer";
const CHECK_UNIT: &str = "clawfort-integrity-check.service";
const CHECK_TIMER: &str = "clawfort-integrity-check.timer";
/// The baseline starts two minutes into the boot and hashes /usr, /etc and /boot at idle
/// priority; under TCG, beside the suite's other work, that may take minutes.
const BASELINE_WITHIN: Duration = Duration::from_secs(900);
/// One check hashes the same files at the same priority, with the guest otherwise quiet.
const CHECK_WITHIN: Duration = Duration::from_secs(600);

pub fn integrity_baseline_and_check(ctx: &Ctx) -> Result<String> {
    let enabled = ctx
        .admin
        .check(&format!(
            "systemctl is-enabled {BASELINE_TIMER} {CHECK_TIMER} || true"
        ))?
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    ensure!(
        enabled == "enabled enabled",
        "no integrity baseline or daily check: {BASELINE_TIMER} and {CHECK_TIMER} are `{enabled}`, \
         not both enabled"
    );
    let waited = Instant::now();
    loop {
        let state = ctx.admin.check(&format!(
            "systemctl show -P ActiveState -P Result {BASELINE_UNIT} | tr '\\n' ' '"
        ))?;
        let exists = ctx.admin.sudo(&format!("test -s {DATABASE}"))?.success;
        if exists {
            break;
        }
        ensure!(
            !state.contains("failed"),
            "no integrity baseline: {BASELINE_UNIT} failed ({state}); its journal: {}",
            ctx.admin.check_root(&format!(
                "journalctl -b -u {BASELINE_UNIT} -n 20 --no-pager"
            ))?
        );
        if waited.elapsed() > BASELINE_WITHIN {
            bail!(
                "no integrity baseline {:.0} s into the probe: {DATABASE} is missing ({BASELINE_UNIT}: {state})",
                BASELINE_WITHIN.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    let baseline_wait = waited.elapsed();
    // Made on this machine: after this boot began (boot time from the kernel).
    let times = ctx.admin.check_root(&format!(
        "stat -c %Y {DATABASE}; awk '/^btime/ {{print $2}}' /proc/stat"
    ))?;
    let mut times = times.lines().map(|l| l.trim().parse::<u64>());
    let (made, booted) = match (times.next(), times.next()) {
        (Some(Ok(made)), Some(Ok(booted))) => (made, booted),
        _ => bail!("cannot read the baseline's time and the boot time"),
    };
    ensure!(
        made >= booted,
        "the integrity baseline is older than this boot ({made} < {booted}): it came with the image"
    );
    let next = ctx.admin.check(&format!(
        "systemctl show -P NextElapseUSecRealtime {CHECK_TIMER}"
    ))?;
    ensure!(
        !next.trim().is_empty() && next.trim() != "0",
        "{CHECK_TIMER} has no next run"
    );

    let implant = format!(
        "/usr/local/sbin/clawfort-e2e-implant-{}",
        std::process::id()
    );
    ctx.admin.check_root(&format!(
        "printf '#!/bin/sh\\necho implanted\\n' > {implant} && chmod 755 {implant}"
    ))?;
    let planted = check_report(ctx);
    let removed = ctx
        .admin
        .check_root(&format!("rm -f {implant}"))
        .and_then(|_| check_report(ctx));
    let (planted_report, planted_took) = planted?;
    let (removed_report, removed_took) = removed?;
    ensure!(
        planted_report.contains(&implant),
        "the integrity check did not report the planted {implant}; its report: {}",
        last_lines(&planted_report, 15)
    );
    ensure!(
        removed_report.contains(&implant),
        "the integrity check after the implant's removal did not report it gone; its report: {}",
        last_lines(&removed_report, 15)
    );
    Ok(format!(
        "baseline made this boot (waited {:.0} s for it); {CHECK_TIMER} next at {}; the check \
         reported a planted program ({:.0} s) and its removal ({:.0} s)",
        baseline_wait.as_secs_f64(),
        next.trim(),
        planted_took.as_secs_f64(),
        removed_took.as_secs_f64()
    ))
}

/// Runs the check unit once and returns what it wrote to the journal, and how long it took.
fn check_report(ctx: &Ctx) -> Result<(String, Duration)> {
    let cursor = ctx
        .admin
        .check_root("journalctl -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'")?;
    let started = Instant::now();
    let output = ctx
        .admin
        .sudo_with(&format!("systemctl start {CHECK_UNIT}"), CHECK_WITHIN)?;
    let took = started.elapsed();
    let report = ctx
        .admin
        .check_root(&format!(
            "journalctl -u {CHECK_UNIT} --after-cursor='{}' -o cat --no-pager",
            cursor.trim()
        ))
        .context("reading the check's report")?;
    ensure!(
        output.success,
        "{CHECK_UNIT} failed: {}",
        last_lines(&report, 15)
    );
    Ok((report, took))
}
