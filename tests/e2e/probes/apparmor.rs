//! AppArmor: the gateway runs in its profile in enforce mode, host commands get theirs, and
//! that profile alone keeps a command out of the gateway's state directory.
//!
//! The last check takes the other walls away on purpose: the command runs in a transient unit
//! as the service user with the whole of /home visible and no Landlock, once in the
//! `clawfort-exec` profile (it must be refused opening `.env`, and the kernel must log the
//! denial) and once without it (it must open the file, so the refusal is AppArmor's alone).
//! Nothing is read: the shell only opens the file (`: < .env`), so no secret is printed.
//!
//! Runs late, so that the gateway's whole workload in the suite (the agent, its tools, the
//! sandbox) has run under its profile: any denial the kernel logged for it is reported.

use anyhow::{ensure, Result};

use crate::exec::shell_quote;
use crate::Ctx;

/// The profiles the image ships, each in enforce mode.
const PROFILES: [&str; 2] = ["clawfort-gateway", "clawfort-exec"];
const AUDIT_LOG: &str = "/var/log/audit/audit.log";

/// Opens `path` (`: < path`, nothing read or printed) as the service user in a transient unit
/// with the whole of /home visible and no Landlock, with `profile` (systemd-run properties,
/// e.g. `-p AppArmorProfile=X`, or none): what AppArmor alone allows.
fn open_as_service_user(ctx: &Ctx, profile: &str, path: &str) -> Result<crate::exec::Output> {
    let user = &ctx.testbed.service_user;
    ctx.admin.sudo(&format!(
        "systemd-run --quiet --wait --pipe --uid={user} --gid={user} {profile} /bin/sh -c {}",
        shell_quote(&format!(": < {path}"))
    ))
}

pub fn apparmor_confines_gateway_and_commands(ctx: &Ctx) -> Result<String> {
    let user = &ctx.testbed.service_user;
    let mut wrong = Vec::new();

    // The kernel's own list, one `name (mode)` a line (what `aa-status` reads).
    let loaded = ctx
        .admin
        .check_root("cat /sys/kernel/security/apparmor/profiles")?;
    for profile in PROFILES {
        let mode = loaded.lines().find_map(|line| {
            line.strip_prefix(profile)?
                .strip_prefix(" (")?
                .strip_suffix(')')
        });
        match mode {
            Some("enforce") => {}
            Some(mode) => wrong.push(format!("{profile} is in {mode} mode, not enforce")),
            None => wrong.push(format!("{profile} is not loaded")),
        }
    }

    let pid = super::gateway::main_pid(ctx)?;
    let label = ctx
        .admin
        .check_root(&format!("cat /proc/{pid}/attr/apparmor/current"))?;
    let label = label.trim_end_matches(['\0', '\n']);
    if label != "clawfort-gateway (enforce)" {
        wrong.push(format!(
            "the gateway (pid {pid}) runs as `{label}`, not `clawfort-gateway (enforce)`"
        ));
    }
    let exec_profile = ctx
        .admin
        .check("systemctl show -P AppArmorProfile clawfort-exec@probe.service")?;
    if !exec_profile.contains("clawfort-exec") {
        wrong.push(format!(
            "clawfort-exec@.service names the AppArmor profile `{}`, not clawfort-exec",
            exec_profile.trim()
        ));
    }

    // AppArmor alone: the same open with and without the profile.
    let env = format!("/home/{user}/.openclaw/.env");
    let denial = format!("apparmor=\"DENIED\".*profile=\"clawfort-exec\".*name=\"{env}\"");
    let count = |ctx: &Ctx| -> Result<u64> {
        let found = ctx.admin.check_root(&format!(
            "grep -c {} {AUDIT_LOG} || true",
            shell_quote(&denial)
        ))?;
        Ok(found.trim().parse().unwrap_or(0))
    };
    let open = |profile: &str| open_as_service_user(ctx, profile, &env);
    let before = count(ctx)?;
    let confined = open("-p AppArmorProfile=clawfort-exec")?;
    let unconfined = open("")?;
    if confined.success {
        wrong.push(format!(
            "a command in clawfort-exec opened the state directory's {env} (Landlock and the \
             unit's namespace out of the way)"
        ));
    } else if !confined.stderr.contains("Permission denied") {
        wrong.push(format!(
            "a command in clawfort-exec failed to open {env}, but not for want of permission: {}",
            confined.stderr.trim()
        ));
    }
    ensure!(
        unconfined.success,
        "the same command without the profile could not open {env} either, so the test shows \
         nothing: {}",
        unconfined.stderr.trim()
    );
    if !confined.success {
        let after = count(ctx)?;
        if after <= before {
            wrong.push(format!(
                "the kernel's denial of {env} is not in {AUDIT_LOG}"
            ));
        }
    }

    // Everything the suite made the gateway do, it could do in its profile.
    let gateway_denials = ctx.admin.check_root(&format!(
        "grep 'apparmor=\"DENIED\".*profile=\"clawfort-gateway\"' {AUDIT_LOG} \
         | grep -o 'operation=\"[^\"]*\".*name=\"[^\"]*\"' | sort | uniq -c | head -5 || true"
    ))?;
    if !gateway_denials.trim().is_empty() {
        wrong.push(format!(
            "the kernel refused the gateway: {}",
            gateway_denials.trim().replace('\n', "; ")
        ));
    }

    ensure!(wrong.is_empty(), "{}", wrong.join("; "));
    Ok(format!(
        "{} in enforce mode; gateway pid {pid} in clawfort-gateway; a command in clawfort-exec \
         refused {env} (logged), the same command unconfined opened it; no denial of the gateway",
        PROFILES.join(" and ")
    ))
}

/// The service user's rootless Docker and its containers run in `clawfort-sandbox`, which
/// rootless Docker cannot give them itself; a process in it is refused the state directory,
/// and so is the daemon asked to bind-mount it into a container.
pub fn apparmor_confines_sandbox(ctx: &Ctx) -> Result<String> {
    const PROFILE: &str = "clawfort-sandbox";
    let user = &ctx.testbed.service_user;
    let mut wrong = Vec::new();
    let loaded = ctx
        .admin
        .check_root("cat /sys/kernel/security/apparmor/profiles")?;
    if !loaded
        .lines()
        .any(|line| line == format!("{PROFILE} (enforce)"))
    {
        wrong.push(format!("{PROFILE} is not loaded in enforce mode"));
    }
    super::system::wait_for_sandbox_image(ctx)?;
    let daemon = ctx.admin.check_root(&format!(
        "pid=$(systemctl --user --machine={user}@.host show -P MainPID docker.service) \
         && cat /proc/$pid/attr/apparmor/current"
    ))?;
    let daemon = daemon.trim_end_matches(['\0', '\n']);
    if daemon != format!("{PROFILE} (enforce)") {
        wrong.push(format!("the rootless Docker daemon runs as `{daemon}`"));
    }
    let docker = super::system::docker_cli(ctx);
    let image = super::system::SANDBOX_IMAGE;
    let container = ctx.admin.check_root(&format!(
        "{docker} run --rm --network none {image} cat /proc/self/attr/apparmor/current"
    ))?;
    let container = container.trim_end_matches(['\0', '\n']);
    if container != format!("{PROFILE} (enforce)") {
        wrong.push(format!("a container's process runs as `{container}`"));
    }

    // A process of the stack, by the state directory's own path.
    let env = format!("/home/{user}/.openclaw/.env");
    let open = |profile: &str| open_as_service_user(ctx, profile, &env);
    let confined = open(&format!("-p AppArmorProfile={PROFILE}"))?;
    if confined.success {
        wrong.push(format!("a process in {PROFILE} opened {env}"));
    }
    ensure!(
        open("")?.success,
        "the service user could not open {env} without the profile either, so the test shows \
         nothing"
    );
    // The daemon asked for the state directory in a container: the mount is refused.
    let mounted = ctx.admin.sudo(&format!(
        "{docker} run --rm --network none -v /home/{user}/.openclaw:/state {image} \
         sh -c ': < /state/.env'"
    ))?;
    if mounted.success {
        wrong.push(format!(
            "a container given `-v /home/{user}/.openclaw:/state` opened /state/.env"
        ));
    }
    let logged = ctx.admin.check_root(&format!(
        "grep -c 'apparmor=\"DENIED\".*profile=\"{PROFILE}\"' {AUDIT_LOG} || true"
    ))?;
    if logged.trim().parse::<u64>().unwrap_or(0) == 0 {
        wrong.push(format!("no denial by {PROFILE} is in {AUDIT_LOG}"));
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("; "));
    Ok(format!(
        "{PROFILE} in enforce mode on the rootless daemon and a container; a process in it was \
         refused {env}, the daemon the bind mount of the state directory ({})",
        mounted.stderr.trim().lines().last().unwrap_or("refused")
    ))
}
