//! The kernel and service hardening as the running guest has it, not as its files say: every
//! sysctl of the image definition with its value, core dumps going nowhere, and the gateway
//! unit's `systemd-analyze security` exposure within the budget the definition states.

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};

use crate::exec::shell_quote;
use crate::Ctx;

const GATEWAY_UNIT: &str = "clawfort.service";

/// Every `[sysctl]` key of the image definition reads back (`sysctl -n`, as root: some keys,
/// such as `net.core.bpf_jit_harden`, are root's alone) with its defined value, all in one
/// SSH round trip. A key the kernel lacks fails with sysctl's own error.
pub fn sysctls_as_defined(ctx: &Ctx) -> Result<String> {
    let expected = &ctx.testbed.expect.sysctl;
    ensure!(
        !expected.is_empty(),
        "the image definition has no [sysctl] entries, so there is nothing to check"
    );
    let keys: Vec<String> = expected.keys().map(|key| shell_quote(key)).collect();
    let script = format!(
        "for key in {}; do printf '%s=%s\\n' \"$key\" \"$(sysctl -n \"$key\" 2>&1 | tr '\\n\\t' '  ')\"; done",
        keys.join(" ")
    );
    let output = ctx.admin.check_root(&script)?;
    let actual: BTreeMap<&str, String> = output
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key, normalise(value)))
        .collect();
    let wrong: Vec<String> = expected
        .iter()
        .filter_map(|(key, want)| match actual.get(key.as_str()) {
            Some(got) if *got == normalise(want) => None,
            Some(got) => Some(format!("{key} is `{got}`, not `{want}`")),
            None => Some(format!("{key} was not read")),
        })
        .collect();
    ensure!(
        wrong.is_empty(),
        "{} of {} sysctls differ from the image definition: {}",
        wrong.len(),
        expected.len(),
        wrong.join("; ")
    );
    Ok(format!(
        "all {} sysctls of the image definition have their values (kernel.core_pattern `{}`)",
        expected.len(),
        actual
            .get("kernel.core_pattern")
            .map_or("?", String::as_str)
    ))
}

/// `sysctl -n` separates the numbers of a multi-valued key with tabs; the definition may use
/// spaces.
fn normalise(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Core dumps go nowhere: a process crashed by root with no core size limit at all (so only
/// the kernel's `core_pattern` decides) leaves no file in its directory nor in
/// systemd-coredump's or apport's, and besides, services (systemd's default, the gateway
/// itself) may not dump at all (limit 0) and set-user-ID programs never dump. The login's
/// limit is reported.
pub fn core_dumps_go_nowhere(ctx: &Ctx) -> Result<String> {
    // The crash runs in a fresh directory; `sleep 1` gives a piped handler time to write.
    let facts = ctx.admin.check_root(&format!(
        "echo pattern=$(cat /proc/sys/kernel/core_pattern); \
         echo suid=$(cat /proc/sys/fs/suid_dumpable); \
         echo services=$(systemctl show -p DefaultLimitCORESoft --value)/$(systemctl show -p DefaultLimitCORE --value); \
         pid=$(systemctl show -p MainPID --value {GATEWAY_UNIT}); \
         echo gateway=$(awk '/^Max core file size/ {{print $5 \"/\" $6}}' /proc/$pid/limits); \
         dir=$(mktemp -d) && cd \"$dir\" || exit 1; \
         (ulimit -c unlimited && sh -c 'kill -SEGV $$'); echo crash=$?; sleep 1; \
         echo left=$(ls -A \"$dir\") $(find /var/lib/systemd/coredump /var/crash -type f -newer \"$dir\" 2>/dev/null); \
         cd / && rm -rf \"$dir\""
    ))?;
    let fact = |key: &str| -> String {
        facts
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let login = ctx.admin.check("ulimit -Hc")?;
    let (pattern, left) = (fact("pattern"), fact("left"));
    let mut problems = Vec::new();
    // 139: the shell's status for a child killed by SIGSEGV; anything else and the test
    // proved nothing.
    if fact("crash") != "139" {
        problems.push(format!(
            "the crash test did not crash (exit status `{}`), so it proves nothing",
            fact("crash")
        ));
    }
    if !left.is_empty() {
        problems.push(format!(
            "a crash left a core dump: {left} (kernel.core_pattern `{pattern}`)"
        ));
    }
    for (what, value, want) in [
        ("fs.suid_dumpable", fact("suid"), "0"),
        (
            "systemd's DefaultLimitCORE (soft/hard)",
            fact("services"),
            "0/0",
        ),
        (
            "the gateway's core size limit (soft/hard)",
            fact("gateway"),
            "0/0",
        ),
    ] {
        if value != want {
            problems.push(format!("{what} is `{value}`, not `{want}`"));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    // Reported, not judged: the image's limits.d file asks for 0, yet the first booted run
    // read `unlimited` in an SSH session (pam_limits' setting is not reaching it; to find).
    // The crash above is what shows that a dump goes nowhere whatever the limit.
    Ok(format!(
        "a crash with no core limit left nothing (kernel.core_pattern `{pattern}`); \
         fs.suid_dumpable 0; core limit 0 for services and the gateway; the admin login's \
         hard core limit is `{}`",
        login.trim()
    ))
}

/// `systemd-analyze security` rates the loaded `clawfort.service` at or under the budget the
/// image definition states (`gateway.exposure_budget`, which the unit file repeats).
pub fn gateway_unit_exposure(ctx: &Ctx) -> Result<String> {
    let budget = ctx.testbed.expect.gateway_exposure_budget;
    let exposure = exposure(ctx, GATEWAY_UNIT)?;
    ensure!(
        exposure <= budget,
        "systemd-analyze security rates {GATEWAY_UNIT} {exposure}, over its budget of {budget}"
    );
    Ok(format!(
        "systemd-analyze security rates {GATEWAY_UNIT} {exposure} (budget {budget})"
    ))
}

/// The overall exposure `systemd-analyze security` gives a loaded unit.
pub(crate) fn exposure(ctx: &Ctx, unit: &str) -> Result<f64> {
    let report = ctx
        .admin
        .check_root(&format!("systemd-analyze security --no-pager {unit}"))?;
    report
        .lines()
        .find_map(|line| {
            line.split(&format!("Overall exposure level for {unit}: "))
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| {
            format!(
                "no overall exposure for {unit} in: {}",
                crate::exec::last_lines(&report, 3)
            )
        })
}
