//! The egress proxy as the appliance runs it: its socket, its own identity, its refusal of a
//! host the config does not name, and the systemd sandbox ratings of its unit and the
//! gateway's.

use anyhow::{ensure, Context, Result};

use crate::Ctx;

const GATEWAY_UNIT: &str = "clawfort.service";
const EGRESS_UNIT: &str = "clawfort-egress.service";
/// `systemd-analyze security` of the gateway's unit before the egress proxy existed (systemd
/// 257); routing its calls through the proxy must not make it worse.
const GATEWAY_EXPOSURE: f64 = 0.9;
/// The egress unit's rating as measured on its rendered file (systemd 257, `--offline`).
const EGRESS_EXPOSURE: f64 = 1.0;
/// A destination the appliance's config never names.
const UNNAMED: &str = "example.com:443";

/// `CONNECT example.com:443` on the proxy's socket as the service user gets 403 from the proxy
/// (with its log line), the admin may not use the socket at all, the proxy runs as neither
/// root nor the service user, and neither unit rates worse than measured.
pub fn egress_proxy_allow_list(ctx: &Ctx) -> Result<String> {
    let user = &ctx.testbed.service_user;
    let socket = &ctx.testbed.expect.egress_socket;

    let mode = ctx
        .admin
        .check_root(&format!("stat -c '%U %G %a' {socket}"))?;
    ensure!(
        mode.trim() == format!("root {user} 660"),
        "{socket} is `{}`, not `root {user} 660`",
        mode.trim()
    );

    // The proxy starts on its socket's first connection. Start it first and wait (bounded), so
    // that a slow first start on a busy guest is not mistaken for a refusal that never came,
    // and a proxy that cannot start is reported as such, with its journal.
    let started = ctx.admin.sudo(&format!(
        "systemctl start {EGRESS_UNIT}; for i in $(seq 1 60); do \
         systemctl is-active --quiet {EGRESS_UNIT} && exit 0; sleep 1; done; exit 1"
    ))?;
    if started.code != Some(0) {
        let why = ctx.admin.sudo(&format!(
            "systemctl status --no-pager {EGRESS_UNIT} 2>&1 | tail -n 5; \
             journalctl -u {EGRESS_UNIT} --no-pager -n 15"
        ))?;
        anyhow::bail!(
            "{EGRESS_UNIT} is not active within 60 s of `systemctl start`:\n{}",
            why.stdout.trim()
        );
    }

    // curl speaks CONNECT when told the method and the request target; the proxy's answer
    // is the status. The host is never resolved: the proxy refuses it first.
    let connect = format!(
        "curl -sS -o /dev/null -w '%{{http_code}}' --max-time 30 --unix-socket {socket} \
         -X CONNECT --request-target {UNNAMED} http://{UNNAMED}/"
    );
    let refused = ctx.admin.sudo(&format!("runuser -u {user} -- {connect}"))?;
    if refused.stdout.trim() != "403" {
        let why = ctx
            .admin
            .sudo(&format!("journalctl -u {EGRESS_UNIT} --no-pager -n 15"))?;
        anyhow::bail!(
            "CONNECT {UNNAMED} as {user} was answered `{}` (exit {:?}), not 403 from the \
             proxy: {}\nthe proxy's journal:\n{}",
            refused.stdout.trim(),
            refused.code,
            refused.stderr.trim(),
            why.stdout.trim()
        );
    }
    // The line is written before the answer; give the journal a few seconds to show it.
    let logged = ctx.admin.sudo(&format!(
        "for i in $(seq 1 10); do journalctl -u {EGRESS_UNIT} --since=-120s --no-pager \
         | grep -q 'refused (403): {UNNAMED}' && exit 0; sleep 1; done; exit 1"
    ))?;
    ensure!(
        logged.code == Some(0),
        "no `refused (403): {UNNAMED}` line in the journal of {EGRESS_UNIT}"
    );

    // Not the service user's identity (whose traffic nftables confines), nor root.
    let pid = ctx
        .admin
        .check(&format!("systemctl show -P MainPID {EGRESS_UNIT}"))?;
    let pid: u32 = pid.trim().parse().context("unparsable MainPID")?;
    ensure!(pid != 0, "{EGRESS_UNIT} is not running after a connection");
    let identity = ctx.admin.check(&format!("ps -o user=,uid= -p {pid}"))?;
    let mut fields = identity.split_whitespace();
    let (proxy_user, uid) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
    ensure!(
        proxy_user != user.as_str() && uid != "0" && !uid.is_empty(),
        "the proxy (pid {pid}) runs as `{}`",
        identity.trim()
    );

    // The socket is for the service user's group only: curl cannot even connect (exit 7).
    let admin = ctx.admin.run(&connect)?;
    ensure!(
        admin.code == Some(7),
        "the admin's curl on the proxy's socket: exit {:?}, answered `{}` ({}); want exit 7 \
         (cannot connect)",
        admin.code,
        admin.stdout.trim(),
        admin.stderr.trim()
    );

    let gateway = exposure(ctx, GATEWAY_UNIT)?;
    let egress = exposure(ctx, EGRESS_UNIT)?;
    ensure!(
        gateway <= GATEWAY_EXPOSURE,
        "systemd-analyze security rates {GATEWAY_UNIT} {gateway}, worse than {GATEWAY_EXPOSURE}"
    );
    ensure!(
        egress <= EGRESS_EXPOSURE,
        "systemd-analyze security rates {EGRESS_UNIT} {egress}, worse than {EGRESS_EXPOSURE}"
    );
    Ok(format!(
        "{user}: CONNECT {UNNAMED} -> 403 (logged); socket root:{user} 660, admin refused; \
         proxy runs as {} (uid {uid}); exposure {GATEWAY_UNIT} {gateway}, {EGRESS_UNIT} {egress}",
        proxy_user
    ))
}

/// The overall exposure `systemd-analyze security` gives a loaded unit.
fn exposure(ctx: &Ctx, unit: &str) -> Result<f64> {
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
