//! The suite's self-test: no probe may pass vacuously. A variant image with the protections
//! turned off through the image configuration (tests/e2e/variants/weakened.toml) is booted and
//! probed against the hardened image's expectations; each probe that guards a removed
//! protection must fail, for the reason that protection gives, while the guest itself works.

use anyhow::{ensure, Result};

use super::boot::Report;

/// Probes that must fail on the weakened image, and a fragment their failure must contain, so
/// that a failure for an unrelated reason (say, sshd not running) does not count.
pub const MUST_FAIL: &[(&str, &str)] = &[
    ("ssh_offers_only_publickey", "password"),
    ("ssh_refuses_root_with_valid_key", "root logged in"),
    (
        "ssh_offers_no_weak_algorithms",
        "diffie-hellman-group14-sha1",
    ),
    ("tcp_port_scan", "18789"),
    ("gateway_listens_on_loopback_only", "beyond loopback"),
    ("nftables_input_policy_drop", "firewall is not loaded"),
    ("unattended_upgrades_security", "no security origin"),
    ("fail2ban_bans_and_unbans", "did not ban"),
];

/// Probes that must still pass: the weakened guest boots, serves and is reachable, so the
/// failures above are about the protections and not about a broken guest.
pub const MUST_PASS: &[&str] = &["gateway_healthz_ok", "gateway_runs_as_service_user"];

/// Every probe the self-test runs.
pub fn probes() -> Vec<String> {
    MUST_FAIL
        .iter()
        .map(|(name, _)| *name)
        .chain(MUST_PASS.iter().copied())
        .map(str::to_owned)
        .collect()
}

/// Checks the weakened image's report; prints one line per expectation.
pub fn judge(report: &Report) -> Result<()> {
    let mut wrong = Vec::new();
    let result = |name: &str| report.probes.iter().find(|probe| probe.name == name);
    for (name, reason) in MUST_FAIL {
        let verdict = match result(name) {
            None => Err("did not run".to_owned()),
            Some(probe) if probe.passed => {
                Err(format!("passed on the weakened image: {}", probe.detail))
            }
            Some(probe) if !probe.detail.contains(reason) => Err(format!(
                "failed, but not because of the removed protection (expected `{reason}`): {}",
                probe.detail
            )),
            Some(_) => Ok(()),
        };
        report_line(
            name,
            "fails when its protection is removed",
            verdict,
            &mut wrong,
        );
    }
    for name in MUST_PASS {
        let verdict = match result(name) {
            None => Err("did not run".to_owned()),
            Some(probe) if !probe.passed => {
                Err(format!("the weakened guest is broken: {}", probe.detail))
            }
            Some(_) => Ok(()),
        };
        report_line(name, "still passes (the guest works)", verdict, &mut wrong);
    }
    ensure!(
        wrong.is_empty(),
        "suite self-test failed for: {}",
        wrong.join(", ")
    );
    Ok(())
}

fn report_line(name: &str, claim: &str, verdict: Result<(), String>, wrong: &mut Vec<String>) {
    match verdict {
        Ok(()) => println!("PASS self-test {name}: {claim}"),
        Err(why) => {
            println!("FAIL self-test {name}: {why}");
            wrong.push(name.to_owned());
        }
    }
}
