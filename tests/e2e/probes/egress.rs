//! The egress proxy as the appliance runs it: its socket, its own identity, its refusal of a
//! host root's allow list does not name (also after the service user named that host in
//! its openclaw.json and the proxy restarted), and the systemd sandbox ratings of its unit
//! and the gateway's.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::exec::{last_lines, shell_quote};
use crate::probes::hardening::exposure;
use crate::Ctx;

const GATEWAY_UNIT: &str = "clawfort.service";
const EGRESS_UNIT: &str = "clawfort-egress.service";
/// `systemd-analyze security` of the gateway's unit before the egress proxy existed (systemd
/// 257); routing its calls through the proxy must not make it worse.
const GATEWAY_EXPOSURE: f64 = 1.1;
/// The egress unit's rating as measured on its rendered file (systemd 257, `--offline`).
const EGRESS_EXPOSURE: f64 = 1.0;
/// A destination the appliance's config never names.
const UNNAMED: &str = "example.com:443";
/// The proxy's allow list, root's alone (the unit's `--allow-file`).
const ALLOW_FILE: &str = "/etc/clawfort/egress-allow.json";
/// The provider the attack adds to the service user's openclaw.json.
const EXFIL_PROVIDER: &str = "e2e-exfil";

/// `CONNECT example.com:443` on the proxy's socket as the service user gets 403 from the proxy
/// (with its log line); so does a host the service user adds to its openclaw.json, after a
/// restart of the proxy (its allow list is root's file, which the image does not ship); the
/// admin may not use the socket at all, the proxy runs as neither root nor the service user,
/// and neither unit rates worse than measured.
pub fn egress_proxy_allow_list(ctx: &Ctx) -> Result<String> {
    let user = &ctx.testbed.service_user;
    let socket = &ctx.testbed.expect.egress_socket;
    // Before `clawfort setup` there is no allow list; if a probe run wrote one, only root may
    // change it.
    let allow_file = ctx.admin.check(&format!(
        "stat -c '%U %G %a' {ALLOW_FILE} 2>/dev/null || echo absent"
    ))?;
    ensure!(
        matches!(allow_file.trim(), "absent" | "root root 644"),
        "{ALLOW_FILE} is `{}`, not absent or `root root 644`",
        allow_file.trim()
    );

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
    activate(ctx, "start")?;

    let connect = connect_command(socket, UNNAMED);
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

    let exfil = tampered_config_is_ignored(ctx)?;

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
        "{user}: CONNECT {UNNAMED} -> 403 (logged); {exfil}; allow file {}; socket \
         root:{user} 660, admin refused; proxy runs as {} (uid {uid}); exposure \
         {GATEWAY_UNIT} {gateway}, {EGRESS_UNIT} {egress}",
        allow_file.trim(),
        proxy_user
    ))
}

/// `systemctl <verb>` the proxy and wait (bounded) until it is active; its status and journal
/// when it is not.
fn activate(ctx: &Ctx, verb: &str) -> Result<()> {
    let started = ctx.admin.sudo(&format!(
        "systemctl {verb} {EGRESS_UNIT}; for i in $(seq 1 60); do \
         systemctl is-active --quiet {EGRESS_UNIT} && exit 0; sleep 1; done; exit 1"
    ))?;
    if started.code != Some(0) {
        let why = ctx.admin.sudo(&format!(
            "systemctl status --no-pager {EGRESS_UNIT} 2>&1 | tail -n 5; \
             journalctl -u {EGRESS_UNIT} --no-pager -n 15"
        ))?;
        bail!(
            "{EGRESS_UNIT} is not active within 60 s of `systemctl {verb}`:\n{}",
            why.stdout.trim()
        );
    }
    Ok(())
}

/// curl speaks CONNECT when told the method and the request target; the proxy's answer is the
/// status it prints. A refused host is never resolved: the proxy refuses it first.
fn connect_command(socket: &str, target: &str) -> String {
    format!(
        "curl -sS -o /dev/null -w '%{{http_code}}' --max-time 30 --unix-socket {socket} \
         -X CONNECT --request-target {target} http://{target}/"
    )
}

/// The attack root's allow list stops: the service user (a gateway talked into it) adds a
/// provider whose baseUrl is a host the proxy could reach (the fakes' model server), the
/// proxy restarts (as after a crash or a reboot), and a CONNECT to that host is still 403.
/// The service user's openclaw.json is restored byte for byte afterwards, pass or fail.
fn tampered_config_is_ignored(ctx: &Ctx) -> Result<String> {
    let user = &ctx.testbed.service_user;
    let config = format!("/home/{user}/.openclaw/openclaw.json");
    let target = ctx.testbed.fakes.model.to_string();
    let original = ctx.admin.check_root(&format!("cat {config}"))?;
    let mut tree: Value =
        json5::from_str(&original).with_context(|| format!("{config} is not JSON5"))?;
    let root = tree
        .as_object_mut()
        .with_context(|| format!("{config} is not an object"))?;
    let models = root.entry("models").or_insert_with(|| json!({}));
    let providers = models
        .as_object_mut()
        .context("models is not an object")?
        .entry("providers")
        .or_insert_with(|| json!({}));
    providers
        .as_object_mut()
        .context("models.providers is not an object")?
        .insert(
            EXFIL_PROVIDER.to_owned(),
            json!({ "api": "openai-completions", "baseUrl": format!("http://{target}/v1") }),
        );
    let tampered = serde_json::to_string_pretty(&tree)?;

    // Written by the service user itself, through its own file (mode and owner kept).
    let write_as_user = |text: &str| -> Result<()> {
        let script = format!(
            "sudo -n runuser -u {user} -- sh -c {}",
            shell_quote(&format!("cat > {config}"))
        );
        ctx.admin
            .run_with(&script, Some(text.as_bytes()), crate::ssh::COMMAND_LIMIT)?
            .ok(&format!("writing {config} as {user}"))?;
        Ok(())
    };
    write_as_user(&tampered)?;
    let attack = (|| -> Result<String> {
        activate(ctx, "restart")?;
        let socket = &ctx.testbed.expect.egress_socket;
        let answer = ctx.admin.sudo(&format!(
            "runuser -u {user} -- {}",
            connect_command(socket, &target)
        ))?;
        if answer.stdout.trim() != "403" {
            let journal = ctx
                .admin
                .sudo(&format!("journalctl -u {EGRESS_UNIT} --no-pager -n 15"))?;
            bail!(
                "after {user} named {target} in {config} and the proxy restarted, CONNECT \
                 {target} was answered `{}` (exit {:?}), not 403: the gateway's user widened \
                 the proxy's allow list ({}); the proxy's journal:\n{}",
                answer.stdout.trim(),
                answer.code,
                last_lines(&answer.stderr, 2),
                journal.stdout.trim()
            );
        }
        Ok(format!(
            "{user} added {target} to openclaw.json, proxy restarted: CONNECT -> 403"
        ))
    })();
    let restored = write_as_user(&original);
    let outcome = attack?;
    restored?;
    Ok(outcome)
}
