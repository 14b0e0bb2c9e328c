//! The sandbox the gateway itself makes: the probe has the gateway run one sandboxed `exec`
//! call and then inspects the container that ran it, so what is checked is what the appliance
//! sends to Docker (`src/sandbox/container.rs`'s create body), not flags the probe chose.
//!
//! The gateway keeps a scope's container running between commands (until
//! `prune.idleHours`), so after the turn the container is still there to `docker inspect`,
//! as the service user against its rootless daemon; no events API or lifetime setting is
//! needed. The gateway's restart before the turn makes its first sandboxed command remove
//! the containers earlier runs left, and the command prints its container's hostname, which
//! the probe matches to the inspected container's, so the container judged is the one the
//! command ran in.
//!
//! Runs after `agent_round_trip` (setup, the paired stranger), like the other probes that
//! drive the gateway through the fakes.

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::exec::field;
use crate::fakes::Script;
use crate::probes::agent::{RoundTrip, Secrets};
use crate::probes::commands::{configure, turn, with_config_restored};
use crate::probes::system::{docker_cli, wait_for_sandbox_image, SANDBOX_IMAGE};
use crate::Ctx;

/// The label on every container the gateway's sandbox makes (`container::OWNER_LABEL`).
const OWNER_LABEL: &str = "clawfort.sandbox";

/// The rootless daemon runs the sandbox the gateway configures: no network, read-only root,
/// no capabilities, no new privileges, not privileged, Docker's seccomp profile, a process
/// limit, only the workspace bound from the host; and from inside, the command sees only
/// `lo` and none of the host's files. The sandbox image came with the appliance: its last tag
/// predates this boot (the image build loaded it into the daemon's store; nothing imported it
/// at first boot).
pub fn rootless_sandbox_isolated(ctx: &Ctx) -> Result<String> {
    with_config_restored(ctx, run)
}

fn run(ctx: &Ctx, script: &Script, secrets: &Secrets) -> Result<String> {
    let user = &ctx.testbed.service_user;
    let home = format!("/home/{user}");
    let docker = docker_cli(ctx);
    let waited = wait_for_sandbox_image(ctx)?;
    let daemon = ctx
        .admin
        .sudo(&format!(
            "{docker} info --format '{{{{json .SecurityOptions}}}}'"
        ))?
        .ok("docker info as the service user")?;
    let mut broken = daemon_problems(&daemon);
    let tagged = ctx.admin.check_root(&format!(
        "{docker} image inspect -f '{{{{.Metadata.LastTagTime.Unix}}}}' {SANDBOX_IMAGE}; \
         date -d \"$(uptime -s)\" +%s"
    ))?;
    let loaded = loaded_before_boot(&tagged);
    broken.extend(loaded.as_ref().err().cloned());

    // A file only the host has, where a bind of the host's /etc would show it.
    let marker = format!("/etc/clawfort-e2e-marker-{}", std::process::id());
    ctx.admin
        .check_root(&format!("echo host > {marker} && chmod 644 {marker}"))?;
    // The shipped config's sandbox (mode `all` already, its network, limits and workspace),
    // with `exec` offered so the model can run a command in it.
    configure(
        ctx,
        &json!({"mode": "all"}),
        &json!({"security": "full", "ask": "off"}),
    )?;
    let chat = RoundTrip::new(ctx, script, secrets);
    let call = json!([{"name": "exec", "input": {"command": inside_script(&marker, &home)}}]);
    let turned = turn(ctx, &chat, &call, "What does your sandbox look like?");
    let _ = ctx.admin.sudo(&format!("rm -f {marker}"));
    let (results, unhealthy) = turned?;
    broken.extend(unhealthy);
    let facts = results.get(&0).cloned().unwrap_or_default();
    let fact = |key: &str| field(&facts, key).unwrap_or("?").to_owned();
    broken.extend(inside_problems(&fact, &marker));

    let ids = ctx.admin.check_root(&format!(
        "{docker} ps -q --no-trunc --filter label={OWNER_LABEL}"
    ))?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    let inspected = if ids.is_empty() {
        Value::Array(Vec::new())
    } else {
        let json = ctx
            .admin
            .check_root(&format!("{docker} inspect {}", ids.join(" ")))?;
        serde_json::from_str(&json).context("`docker inspect` printed no JSON")?
    };
    let containers = inspected.as_array().cloned().unwrap_or_default();
    let hostname = fact("hostname");
    let ran = containers
        .iter()
        .find(|c| c["Config"]["Hostname"].as_str() == Some(hostname.as_str()));
    match ran {
        None => broken.push(format!(
            "no running container labelled {OWNER_LABEL} ran the command (it printed \
             hostname {hostname}; {} labelled running); its result: {:?}",
            containers.len(),
            facts.chars().take(300).collect::<String>()
        )),
        Some(container) => broken.extend(container_problems(container, &home)),
    }
    anyhow::ensure!(broken.is_empty(), "{}", broken.join("; "));
    let host = &ran.context("checked above")?["HostConfig"];
    Ok(format!(
        "rootless daemon with seccomp; the gateway's container {} (uid {}): network none, \
         read-only root, caps dropped (CapEff {}), no-new-privileges, unprivileged, pids \
         limit {}, memory limit {}, binds {}; inside: interfaces lo only, host files \
         invisible (sandbox image present after {waited:.0} s of waiting, {})",
        ran.and_then(|c| c["Name"].as_str()).unwrap_or("?"),
        fact("uid"),
        fact("caps"),
        host["PidsLimit"],
        match host["Memory"].as_i64() {
            Some(0) | None => "none (the config sets none)".to_owned(),
            Some(bytes) => format!("{} MiB", bytes >> 20),
        },
        host["Binds"],
        loaded.unwrap_or_default()
    ))
}

/// From the image's last tag time and the boot's start (Unix seconds, a line each): whether the
/// sandbox image was in the store before this boot, as the image build leaves it.
fn loaded_before_boot(text: &str) -> Result<String, String> {
    let mut numbers = text.lines().map(|line| line.trim().parse::<i64>());
    let (Some(Ok(tagged)), Some(Ok(boot))) = (numbers.next(), numbers.next()) else {
        return Err(format!(
            "no last tag time and boot time for {SANDBOX_IMAGE} in: {}",
            text.trim()
        ));
    };
    if tagged <= 0 {
        return Err(format!("{SANDBOX_IMAGE} has no last tag time ({tagged})"));
    }
    if tagged >= boot {
        return Err(format!(
            "{SANDBOX_IMAGE} was tagged after this boot began ({} s in): imported at boot, not \
             loaded when the image was built",
            tagged - boot
        ));
    }
    Ok(format!("loaded {} s before this boot", boot - tagged))
}

/// What the command in the sandbox prints about itself: `key=value` lines the host judges.
fn inside_script(marker: &str, home: &str) -> String {
    format!(
        "echo hostname=$(hostname); echo uid=$(id -u); \
         echo caps=$(grep CapEff /proc/self/status | cut -f2); \
         echo ifaces=$(ls /sys/class/net | tr '\\n' ,); \
         if touch /rootfs-write-test 2>/dev/null; then echo rootfs=writable; else echo rootfs=read-only; fi; \
         if cat {marker} >/dev/null 2>&1; then echo marker=visible; else echo marker=absent; fi; \
         if ls {home}/.openclaw >/dev/null 2>&1; then echo state=visible; else echo state=absent; fi"
    )
}

/// The daemon must be rootless and filter system calls.
fn daemon_problems(security_options: &str) -> Vec<String> {
    let mut broken = Vec::new();
    if !security_options.contains("name=rootless") {
        broken.push(format!(
            "the service user's Docker is not rootless: {}",
            security_options.trim()
        ));
    }
    if !security_options.contains("name=seccomp") {
        broken.push(format!(
            "the service user's Docker has no seccomp: {}",
            security_options.trim()
        ));
    }
    broken
}

/// What the command saw from inside, by `fact(key)`.
fn inside_problems(fact: &dyn Fn(&str) -> String, marker: &str) -> Vec<String> {
    let mut broken = Vec::new();
    let ifaces = fact("ifaces");
    if ifaces.trim_end_matches(',') != "lo" {
        broken.push(format!("the command saw network interfaces {ifaces}"));
    }
    if fact("caps") != "0000000000000000" {
        broken.push(format!("the command had capabilities {}", fact("caps")));
    }
    if fact("rootfs") != "read-only" {
        broken.push(format!(
            "the command found the root file system {}",
            fact("rootfs")
        ));
    }
    if fact("marker") != "absent" {
        broken.push(format!("the command could read the host file {marker}"));
    }
    if fact("state") != "absent" {
        broken.push("the command saw the gateway's state directory".to_owned());
    }
    broken
}

/// The settings of the gateway's container (`docker inspect`) that make it a sandbox.
fn container_problems(container: &Value, home: &str) -> Vec<String> {
    let host = &container["HostConfig"];
    let name = container["Name"].as_str().unwrap_or("?");
    let mut broken = Vec::new();
    let mut wrong = |what: String| broken.push(format!("the gateway's container {name} {what}"));
    let network = host["NetworkMode"].as_str().unwrap_or("?");
    if network != "none" {
        wrong(format!("is on network {network}, not none"));
    }
    if host["ReadonlyRootfs"] != true {
        wrong("has a writable root file system".to_owned());
    }
    if host["Privileged"] != false {
        wrong("is privileged".to_owned());
    }
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    if !strings(&host["CapDrop"]).iter().any(|c| c == "ALL") {
        wrong(format!(
            "does not drop every capability: {}",
            host["CapDrop"]
        ));
    }
    if !strings(&host["CapAdd"]).is_empty() {
        wrong(format!("adds capabilities {}", host["CapAdd"]));
    }
    let security = strings(&host["SecurityOpt"]);
    if !security
        .iter()
        .any(|o| o == "no-new-privileges" || o == "no-new-privileges:true")
    {
        wrong(format!("allows new privileges: SecurityOpt {security:?}"));
    }
    if security.iter().any(|o| o.contains("unconfined")) {
        wrong(format!("runs unconfined: SecurityOpt {security:?}"));
    }
    for (mode, key) in [("PidMode", "pid"), ("IpcMode", "ipc"), ("UTSMode", "uts")] {
        if host[mode] == "host" {
            wrong(format!("shares the host's {key} namespace"));
        }
    }
    if host["PidsLimit"].as_i64().is_none_or(|n| n <= 0) {
        wrong(format!(
            "has no process limit: PidsLimit {}",
            host["PidsLimit"]
        ));
    }
    if host["Devices"].as_array().is_some_and(|d| !d.is_empty()) {
        wrong(format!("has host devices {}", host["Devices"]));
    }
    let user = container["Config"]["User"].as_str().unwrap_or("");
    if user.is_empty() || user == "root" || user.starts_with("0:") || user == "0" {
        wrong(format!("runs its commands as root (User {user:?})"));
    }
    // `workspaceAccess` binds the sandbox's own workspace, or the agent workspace; nothing
    // else of the host may be in the container.
    let workspaces = [
        format!("{home}/.openclaw/sandboxes/"),
        format!("{home}/workspace"),
    ];
    for mount in container["Mounts"].as_array().into_iter().flatten() {
        let source = mount["Source"].as_str().unwrap_or("?");
        let target = mount["Destination"].as_str().unwrap_or("?");
        let workspace = mount["Type"] == "bind"
            && workspaces.iter().any(|w| source.starts_with(w.as_str()))
            && ["/workspace", "/agent"].contains(&target);
        if !workspace {
            wrong(format!("mounts {} {source} at {target}", mount["Type"]));
        }
    }
    broken
}
