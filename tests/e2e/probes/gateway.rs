//! The gateway as the appliance runs it: its identity, where it listens, its authentication,
//! its secret's protection, its own audit, and its supervision.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::testbed::Testbed;
use crate::Ctx;

const UNIT: &str = "clawfort.service";

pub fn main_pid(ctx: &Ctx) -> Result<u32> {
    let pid = ctx
        .admin
        .check(&format!("systemctl show -P MainPID {UNIT}"))?;
    let pid: u32 = pid.trim().parse().context("unparsable MainPID")?;
    ensure!(pid != 0, "{UNIT} is not running (MainPID 0)");
    Ok(pid)
}

/// The HTTP status of `path` on the gateway, fetched with curl on the guest. The URL and the
/// extra header (such as the bearer token) reach curl as its config on stdin (`--config -`),
/// so a token in either is on no command line (`ps` on the guest would show it) and in no
/// error message (which shows the path without its query).
pub fn http_status(ctx: &Ctx, path: &str, header: Option<&str>) -> Result<u16> {
    let port = ctx.testbed.expect.gateway_port;
    let mut config = format!(
        "url = {}\n",
        curl_quote(&format!("http://127.0.0.1:{port}{path}"))
    );
    if let Some(header) = header {
        config.push_str(&format!("header = {}\n", curl_quote(header)));
    }
    let output = ctx.admin.run_with(
        "curl -s -o /dev/null -w '%{http_code}' --max-time 10 --config -",
        Some(config.as_bytes()),
        crate::ssh::COMMAND_LIMIT,
    )?;
    output.stdout.trim().parse().with_context(|| {
        let shown = path.split_once('?').map_or(path.to_owned(), |(path, _)| {
            format!("{path}?(query withheld)")
        });
        format!(
            "curl gave no HTTP status for {shown}: {}",
            output.stderr.trim()
        )
    })
}

/// A value as a double-quoted string of curl's config file syntax.
fn curl_quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The gateway's token, read as root from the first-boot `.env`. Never printed.
pub fn gateway_token(testbed: &Testbed, session: &crate::ssh::Session) -> Result<String> {
    let env = session.check_root(&format!(
        "cat /home/{}/.openclaw/.env",
        testbed.service_user
    ))?;
    env.lines()
        .find_map(|line| line.trim().strip_prefix("OPENCLAW_GATEWAY_TOKEN="))
        .map(|token| token.trim_matches('"').to_owned())
        .filter(|token| !token.is_empty())
        .context("no OPENCLAW_GATEWAY_TOKEN in the service user's .env")
}

/// The gateway process runs as the service user, not root.
pub fn gateway_runs_as_service_user(ctx: &Ctx) -> Result<String> {
    let pid = main_pid(ctx)?;
    let user = ctx.admin.check(&format!("ps -o user= -p {pid}"))?;
    let user = user.trim();
    let expected = &ctx.testbed.service_user;
    ensure!(
        user == expected,
        "the gateway (pid {pid}) runs as `{user}`, not `{expected}`"
    );
    let uid = ctx.admin.check(&format!("ps -o uid= -p {pid}"))?;
    ensure!(uid.trim() != "0", "the gateway runs with uid 0");
    Ok(format!("pid {pid} runs as {user} (uid {})", uid.trim()))
}

/// Every socket the gateway listens on is a loopback address.
pub fn gateway_listens_on_loopback_only(ctx: &Ctx) -> Result<String> {
    let pid = main_pid(ctx)?;
    let listeners = ctx.admin.check_root("ss -Htlnp")?;
    let sockets: Vec<&str> = listeners
        .lines()
        .filter(|line| line.contains(&format!("pid={pid},")))
        .filter_map(|line| line.split_whitespace().nth(3))
        .collect();
    ensure!(
        !sockets.is_empty(),
        "the gateway (pid {pid}) listens on no TCP socket"
    );
    let exposed: Vec<&&str> = sockets
        .iter()
        .filter(|socket| !(socket.starts_with("127.") || socket.starts_with("[::1]")))
        .collect();
    ensure!(
        exposed.is_empty(),
        "the gateway listens beyond loopback: {exposed:?}"
    );
    Ok(format!("listens on {}", sockets.join(", ")))
}

/// `/healthz` answers 200 without authentication.
pub fn gateway_healthz_ok(ctx: &Ctx) -> Result<String> {
    let status = http_status(ctx, "/healthz", None)?;
    ensure!(status == 200, "/healthz answered {status}");
    Ok("/healthz: 200".to_owned())
}

/// `/api/status` needs the bearer token: 401 without it, with a wrong one and with the token in
/// the query string; 200 with the real one.
pub fn gateway_api_requires_token(ctx: &Ctx) -> Result<String> {
    let token = gateway_token(&ctx.testbed, &ctx.admin)?;
    let without = http_status(ctx, "/api/status", None)?;
    let wrong = http_status(
        ctx,
        "/api/status",
        Some(&format!(
            "Authorization: Bearer {}",
            "x".repeat(token.len())
        )),
    )?;
    let query = http_status(ctx, &format!("/api/status?token={token}"), None)?;
    let with = http_status(
        ctx,
        "/api/status",
        Some(&format!("Authorization: Bearer {token}")),
    )?;
    ensure!(
        without == 401,
        "/api/status without a token answered {without}, not 401"
    );
    ensure!(
        wrong == 401,
        "/api/status with a wrong token answered {wrong}, not 401"
    );
    ensure!(
        query == 401,
        "/api/status with the token in the query string answered {query}, not 401"
    );
    ensure!(
        with == 200,
        "/api/status with the right token answered {with}, not 200"
    );
    Ok("no token 401, wrong token 401, token in query 401, bearer token 200".to_owned())
}

/// The first-boot token file is 600 and the state directory 700, both the service user's, and
/// the token has at least 32 characters.
pub fn gateway_token_file_protected(ctx: &Ctx) -> Result<String> {
    let user = &ctx.testbed.service_user;
    let stat = ctx.admin.check_root(&format!(
        "stat -c '%a %U %n' /home/{user}/.openclaw /home/{user}/.openclaw/.env"
    ))?;
    let mut lines = stat
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>());
    let dir = lines.next().unwrap_or_default();
    let env = lines.next().unwrap_or_default();
    ensure!(
        dir.len() == 3 && env.len() == 3,
        "unexpected stat output: {stat}"
    );
    ensure!(
        dir[0] == "700" && dir[1] == user,
        "~/.openclaw is mode {} owned by {}; want 700 {user}",
        dir[0],
        dir[1]
    );
    ensure!(
        env[0] == "600" && env[1] == user,
        ".env is mode {} owned by {}; want 600 {user}",
        env[0],
        env[1]
    );
    let token = gateway_token(&ctx.testbed, &ctx.admin)?;
    ensure!(
        token.len() >= 32,
        "the gateway token has only {} characters",
        token.len()
    );
    Ok(format!(
        "~/.openclaw 700 {user}, .env 600 {user}, token {} chars",
        token.len()
    ))
}

/// `sudo clawfort security audit --deep --json`, as the README tells the owner to run it on
/// the appliance: as root it audits the installation `clawfort.service` runs and can make the
/// host checks (nftables, `sshd -T`, fail2ban) that need root. It fails on any critical
/// finding, on any finding saying a check could not be made (which would otherwise pass a
/// missing firewall as "info"), on a report without the host checks' findings (an empty list
/// included) and on an audit of any installation but the service's.
pub fn security_audit_no_critical(ctx: &Ctx) -> Result<String> {
    let user = &ctx.testbed.service_user;
    let output = ctx
        .admin
        .sudo("cd / && clawfort security audit --deep --json")?;
    let report: Value = serde_json::from_str(&output.stdout).with_context(|| {
        format!(
            "the audit printed no JSON (exit {:?}): {}",
            output.code,
            crate::exec::last_lines(&output.stderr, 3)
        )
    })?;
    let installation = &report["installation"];
    ensure!(
        installation["source"] == UNIT && installation["user"] == user.as_str(),
        "the audit as root did not audit the installation {UNIT} runs as {user}: {installation}"
    );
    let findings = report["findings"]
        .as_array()
        .with_context(|| format!("the audit's JSON has no findings list: {report}"))?;
    let missing: Vec<&str> = HOST_CHECKS
        .iter()
        .copied()
        .filter(|id| !findings.iter().any(|finding| finding["checkId"] == *id))
        .collect();
    ensure!(
        missing.is_empty(),
        "the audit made {} finding(s) and none for its host checks {missing:?}",
        findings.len()
    );
    let field = |finding: &Value, key: &str| finding[key].as_str().unwrap_or("?").to_owned();
    let mut by_severity = std::collections::BTreeMap::new();
    for finding in findings {
        *by_severity.entry(field(finding, "severity")).or_insert(0) += 1;
    }
    let described = |finding: &Value| {
        format!(
            "{} ({}: {})",
            field(finding, "checkId"),
            field(finding, "title"),
            field(finding, "detail")
        )
    };
    let critical: Vec<String> = findings
        .iter()
        .filter(|finding| finding["severity"] == "critical")
        .map(described)
        .collect();
    let unchecked: Vec<String> = findings
        .iter()
        .filter(|finding| could_not_check(&field(finding, "checkId"), &field(finding, "title")))
        .map(described)
        .collect();
    let mut problems = Vec::new();
    if !critical.is_empty() {
        problems.push(format!("critical findings: {}", critical.join("; ")));
    }
    if !unchecked.is_empty() {
        problems.push(format!("checks not made: {}", unchecked.join("; ")));
    }
    ensure!(
        problems.is_empty(),
        "{} (findings by severity: {by_severity:?})",
        problems.join("; ")
    );
    Ok(format!(
        "audit of {UNIT}'s installation ({user}): {} findings, none critical, every check made; \
         by severity: {by_severity:?}",
        findings.len()
    ))
}

/// Host checks `--deep` reports on whatever their outcome: their findings show it ran them.
const HOST_CHECKS: &[&str] = &[
    "host.gateway_sockets",
    "host.nftables",
    "host.sshd",
    "host.fail2ban",
    "host.unattended_upgrades",
    "host.reboot_pending",
    "host.docker_socket",
];

/// Whether a finding says its check was not made: its id (`sandbox.unchecked`,
/// `egress.allow_file.unchecked`) or its title ("cannot check the firewall as this user", "nft
/// is not installed: cannot check ...", "cannot read the nftables ruleset", "cannot tell the
/// service user, ...", "the sandbox could not be checked"), as opposed to a check that found
/// something unable ("uid 0 cannot reach the root Docker socket" is a result).
fn could_not_check(check_id: &str, title: &str) -> bool {
    let title = title.to_ascii_lowercase();
    check_id.ends_with(".unchecked")
        || title.starts_with("cannot ")
        || title.contains("cannot check")
        || title.contains("could not be checked")
}

/// Killing the gateway with SIGKILL brings it back (new PID, `/healthz` 200) within a minute.
pub fn gateway_restarts_after_kill(ctx: &Ctx) -> Result<String> {
    let before = main_pid(ctx)?;
    ctx.admin
        .check_root(&format!("systemctl kill --signal=SIGKILL {UNIT}"))?;
    let killed_at = Instant::now();
    let deadline = killed_at + Duration::from_secs(60);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        let Ok(after) = main_pid(ctx) else { continue };
        if after != before && http_status(ctx, "/healthz", None).is_ok_and(|status| status == 200) {
            return Ok(format!(
                "killed pid {before}; pid {after} served /healthz {:.1} s later",
                killed_at.elapsed().as_secs_f64()
            ));
        }
    }
    bail!("after SIGKILL of pid {before}, the gateway did not come back within 60 s")
}
