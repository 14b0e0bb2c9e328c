//! The kernel's record of the agent's commands: a program the service user starts the way
//! the gateway's host commands start (a transient systemd unit with the service user's uid,
//! no login session, so no login uid) is in auditd's log with its command line, and
//! `clawfort logs --audit --json` shows it with the secret-shaped argument redacted. The
//! rules are locked (`-e 2`), the log's space is bounded and never halts the appliance.
//!
//! Runs late, so the log's size and the kernel's lost-record count cover the whole suite.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::exec::{field, shell_quote};
use crate::Ctx;

const AUDIT_LOG: &str = "/var/log/audit/audit.log";
/// auditd writes what the kernel sends at once; this bounds the wait for it.
const RECORDED_WITHIN: Duration = Duration::from_secs(20);
/// A key-shaped argument the output must redact (the Anthropic/OpenAI `sk-` shape).
const FAKE_KEY: &str = "sk-e2eAuditShapedKey0123456789abcdef";

pub fn agent_commands_audited(ctx: &Ctx) -> Result<String> {
    let user = &ctx.testbed.service_user;
    let nonce = format!("e2e-audit-{}", std::process::id());
    // A space in the argument makes the kernel hex-encode it, as it does most command lines.
    let script = format!("echo {nonce} {FAKE_KEY}");
    ctx.admin.check_root(&format!(
        "systemd-run --quiet --wait --pipe --uid={user} --gid={user} \
         -p WorkingDirectory=/home/{user}/workspace /bin/sh -c {}",
        shell_quote(&script)
    ))?;
    let raw = hex::encode_upper(&script);
    let started = Instant::now();
    let in_log = loop {
        let found = ctx
            .admin
            .check_root(&format!("grep -c {raw} {AUDIT_LOG} || true"))?;
        if found.trim() != "0" || started.elapsed() > RECORDED_WITHIN {
            break found.trim() != "0";
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    if !in_log {
        let state = ctx.admin.check_root(
            "echo auditd: $(systemctl is-active auditd.service); auditctl -s | tr '\\n' ' '",
        )?;
        bail!(
            "`/bin/sh -c '{script}'` run as {user} is not in the audit log {AUDIT_LOG} after \
             {} s ({})",
            RECORDED_WITHIN.as_secs(),
            state.trim()
        );
    }
    let shown = ctx
        .admin
        .check_root("clawfort logs --audit --json --limit 500")?;
    ensure!(
        !shown.contains(FAKE_KEY),
        "`clawfort logs --audit` printed the key-shaped argument unredacted"
    );
    let commands: Vec<Value> = serde_json::from_str(&shown)
        .with_context(|| format!("`clawfort logs --audit --json` is not a JSON array: {shown}"))?;
    let ours = commands
        .iter()
        .find(|c| {
            c["argv"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|s| s.as_str().is_some_and(|s| s.contains(&nonce)))
            })
        })
        .with_context(|| {
            format!(
                "the audit log has the command, `clawfort logs --audit --json` does not show \
                 it (of {} commands)",
                commands.len()
            )
        })?;
    let want_argv = ["/bin/sh", "-c", &format!("echo {nonce} [redacted]")];
    ensure!(
        ours["argv"] == serde_json::json!(want_argv)
            && ours["cwd"] == format!("/home/{user}/workspace").as_str()
            && ours["success"] == true,
        "`clawfort logs --audit` shows the command as {ours}; want argv {want_argv:?}, the \
         workspace as cwd and success"
    );
    let facts = log_facts(ctx)?;
    Ok(format!(
        "{user}'s `/bin/sh -c` is in the audit log and `clawfort logs --audit` shows it \
         redacted ({} commands listed); {facts}",
        commands.len()
    ))
}

/// The rules are locked, the log rotates within a bound and a full disk suspends logging
/// instead of halting; the log's size and the records the kernel lost are reported.
fn log_facts(ctx: &Ctx) -> Result<String> {
    let out = ctx.admin.check_root(
        "auditctl -s | awk '{print $1 \"=\" $2}'; \
         grep -E '^(max_log_file|num_logs|max_log_file_action|space_left_action|admin_space_left_action|disk_full_action|disk_error_action) ' \
           /etc/audit/auditd.conf | tr -d ' '; \
         echo rules=$(auditctl -l | grep -c 'key=clawfort-exec'); \
         echo bytes=$(du -cb /var/log/audit | tail -1 | cut -f1)",
    )?;
    let fact = |key: &str| field(&out, key).unwrap_or("?").to_owned();
    let mut wrong = Vec::new();
    if fact("enabled") != "2" {
        wrong.push(format!(
            "the rules are not locked (enabled {})",
            fact("enabled")
        ));
    }
    if fact("rules").parse::<u32>().unwrap_or(0) < 4 {
        wrong.push(format!(
            "{} execve rules are loaded, not 4 (b64/b32, user and subordinate ids)",
            fact("rules")
        ));
    }
    if !fact("max_log_file_action").eq_ignore_ascii_case("rotate") {
        wrong.push(format!(
            "max_log_file_action is {}",
            fact("max_log_file_action")
        ));
    }
    for key in [
        "space_left_action",
        "admin_space_left_action",
        "disk_full_action",
        "disk_error_action",
    ] {
        if fact(key).eq_ignore_ascii_case("halt") {
            wrong.push(format!("{key} halts the appliance"));
        }
    }
    ensure!(
        wrong.is_empty(),
        "the audit setup is off: {}",
        wrong.join("; ")
    );
    Ok(format!(
        "rules locked, log {} B ({} x {} MB at most, rotated), {} records lost, backlog {}",
        fact("bytes"),
        fact("num_logs"),
        fact("max_log_file"),
        fact("lost"),
        fact("backlog")
    ))
}
