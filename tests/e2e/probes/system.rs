//! The rest of the appliance from inside: firewall policy, automatic updates, the service
//! user's privileges, the rootless sandbox's daemon and image, and first-boot growth of the
//! root file system.

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::exec::field;
use crate::Ctx;

/// `table inet filter` has an input chain whose policy is drop (as loaded, not as written).
pub fn nftables_input_policy_drop(ctx: &Ctx) -> Result<String> {
    let ruleset = ctx.admin.check_root("nft -j list ruleset")?;
    let ruleset: Value = serde_json::from_str(&ruleset).context("`nft -j` printed no JSON")?;
    let chains: Vec<&Value> = ruleset["nftables"]
        .as_array()
        .context("`nft -j` output has no nftables array")?
        .iter()
        .filter_map(|item| item.get("chain"))
        .filter(|chain| chain["hook"] == "input")
        .collect();
    let filter_input = chains
        .iter()
        .find(|chain| chain["family"] == "inet" && chain["table"] == "filter")
        .context("no input chain in `table inet filter`: the firewall is not loaded")?;
    ensure!(
        filter_input["policy"] == "drop",
        "inet filter input policy is {}, not drop",
        filter_input["policy"]
    );
    let accepting: Vec<String> = chains
        .iter()
        .filter(|chain| chain["policy"] != "drop" && chain["table"] != "f2b-table")
        .map(|chain| format!("{} {}", chain["family"], chain["table"]))
        .collect();
    ensure!(
        accepting.is_empty(),
        "other input chains accept by default: {accepting:?}"
    );
    Ok(format!(
        "{} input chain(s); inet filter input policy drop",
        chains.len()
    ))
}

/// The timers that run apt's daily jobs; apt-daily-upgrade's runs unattended-upgrades.
const APT_TIMERS: [&str; 2] = ["apt-daily.timer", "apt-daily-upgrade.timer"];
/// The package that installs the updates (its configuration files alone do nothing).
const UPDATES_PACKAGE: &str = "unattended-upgrades";

/// Security updates really happen: the unattended-upgrades package is installed (dpkg says
/// so, not the presence of its configuration, which the image's overlay ships either way),
/// both apt timers are enabled, active and have a next run, apt's effective configuration
/// runs unattended-upgrades daily and names the Debian security origin, and reboots by itself
/// in the definition's maintenance window (`[updates]`); a pending reboot shows in `clawfort
/// status`. Every problem is named, not only the first.
pub fn unattended_upgrades_security(ctx: &Ctx) -> Result<String> {
    let mut problems = Vec::new();
    let package = ctx.admin.run(&format!(
        "dpkg-query -W -f '${{Status}} ${{Version}}' {UPDATES_PACKAGE}"
    ))?;
    let status = package.stdout.trim();
    let version = status.strip_prefix("install ok installed ");
    if version.is_none() {
        problems.push(format!(
            "{UPDATES_PACKAGE} is not installed (dpkg: {})",
            if status.is_empty() {
                package.stderr.trim()
            } else {
                status
            }
        ));
    }

    let shown = ctx.admin.run(&format!(
        "systemctl show -p Id,UnitFileState,ActiveState,NextElapseUSecRealtime {}",
        APT_TIMERS.join(" ")
    ))?;
    let timers = timer_states(&shown.stdout);
    let mut next_runs = Vec::new();
    for timer in APT_TIMERS {
        let Some(state) = timers.iter().find(|state| state.get("Id") == Some(&timer)) else {
            problems.push(format!(
                "systemctl knows no {timer}: {}",
                shown.stderr.trim()
            ));
            continue;
        };
        let value = |key: &str| state.get(key).copied().unwrap_or("");
        if value("UnitFileState") != "enabled" || value("ActiveState") != "active" {
            problems.push(format!(
                "{timer} is {} and {}, not enabled and active",
                value("UnitFileState"),
                value("ActiveState")
            ));
        }
        let next = value("NextElapseUSecRealtime");
        if matches!(next, "" | "n/a" | "0") {
            problems.push(format!("{timer} has no next run scheduled"));
        } else {
            next_runs.push(format!("{timer} next {next}"));
        }
    }

    let config = ctx.admin.check("apt-config dump")?;
    let value = |key: &str| {
        config
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key} ")))
            .map(|v| v.trim_end_matches(';').trim_matches('"').to_owned())
    };
    let periodic = value("APT::Periodic::Unattended-Upgrade");
    if periodic.as_deref() != Some("1") {
        problems.push(format!(
            "APT::Periodic::Unattended-Upgrade is {periodic:?}, not \"1\""
        ));
    }
    let origins: Vec<&str> = config
        .lines()
        .filter(|line| line.starts_with("Unattended-Upgrade::Origins-Pattern:: "))
        .collect();
    if !origins
        .iter()
        .any(|line| line.contains("Debian-Security") || line.contains("-security"))
    {
        problems.push(format!(
            "no security origin in Unattended-Upgrade::Origins-Pattern: {origins:?}"
        ));
    }
    let want = &ctx.testbed.expect.kernel_and_login;
    let reboot = value("Unattended-Upgrade::Automatic-Reboot");
    let reboot_time = value("Unattended-Upgrade::Automatic-Reboot-Time");
    if want.automatic_reboot && reboot.as_deref() != Some("true") {
        problems.push(format!(
            "automatic reboots are off: Unattended-Upgrade::Automatic-Reboot is {reboot:?}, not \
             \"true\", so an installed kernel waits for someone to reboot"
        ));
    }
    if reboot_time.as_deref() != Some(want.automatic_reboot_time.as_str()) {
        problems.push(format!(
            "Unattended-Upgrade::Automatic-Reboot-Time is {reboot_time:?}, not the maintenance \
             window {:?}",
            want.automatic_reboot_time
        ));
    }
    let pending = match pending_reboot_shown(ctx) {
        Ok(shown) => shown,
        Err(e) => {
            problems.push(format!("{e:#}"));
            String::new()
        }
    };
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(format!(
        "{UPDATES_PACKAGE} {} installed; timers enabled and active ({}); daily run with {} \
         origin patterns incl. security; automatic reboots at {}; {pending}",
        version.unwrap_or("?"),
        next_runs.join(", "),
        origins.len(),
        want.automatic_reboot_time
    ))
}

/// The package name the probe writes into /run/reboot-required.pkgs.
const PENDING_PACKAGE: &str = "clawfort-e2e-reboot-probe";

/// A pending reboot reaches `clawfort status`: the flag Debian's kernel hook
/// (/etc/kernel/postinst.d/unattended-upgrades) leaves is made the way the hook makes it (as
/// root, under dpkg's umask 022, not the admin's 027), `sudo clawfort status --json` must show
/// it with its package and the maintenance window, and the flag is removed again. A flag that
/// was already there (a real pending reboot) is read and left alone.
fn pending_reboot_shown(ctx: &Ctx) -> Result<String> {
    let made = ctx.admin.sudo(&format!(
        "test -e /run/reboot-required && exit 3; umask 022 && touch /run/reboot-required && \
         echo {PENDING_PACKAGE} >> /run/reboot-required.pkgs"
    ))?;
    let ours = match made.code {
        Some(0) => true,
        Some(3) => false,
        _ => anyhow::bail!(
            "could not make /run/reboot-required: {}",
            made.stderr.trim()
        ),
    };
    let status = ctx.admin.sudo("cd / && clawfort status --json");
    if ours {
        ctx.admin
            .check_root("rm -f /run/reboot-required /run/reboot-required.pkgs")?;
    }
    let status = status?;
    let json: Value = serde_json::from_str(&status.stdout).with_context(|| {
        format!(
            "`clawfort status --json` printed no JSON (exit {:?}): {}",
            status.code,
            crate::exec::last_lines(&status.stderr, 3)
        )
    })?;
    let host = &json["host"];
    ensure!(
        host["rebootPending"] == true,
        "`clawfort status --json` does not show the pending reboot: host is {host}"
    );
    let packages = &host["reboot"]["pending"]["packages"];
    if ours {
        ensure!(
            packages
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p == PENDING_PACKAGE)),
            "`clawfort status --json` does not name the package that asked for the reboot: \
             {packages}"
        );
    }
    let want = &ctx.testbed.expect.kernel_and_login;
    let automatic = &host["reboot"]["automatic"];
    ensure!(
        automatic["enabled"] == want.automatic_reboot
            && automatic["time"] == want.automatic_reboot_time.as_str(),
        "`clawfort status --json` shows automatic reboots as {automatic}, not enabled {} at {}",
        want.automatic_reboot,
        want.automatic_reboot_time
    );
    Ok(format!(
        "a pending reboot{} shows in `clawfort status` ({packages})",
        if ours { " (made by the probe)" } else { "" }
    ))
}

/// `systemctl show` of several units: one `key=value` block per unit, blank-line separated.
fn timer_states(text: &str) -> Vec<std::collections::BTreeMap<&str, &str>> {
    text.split("\n\n")
        .map(|block| {
            block
                .lines()
                .filter_map(|line| line.split_once('='))
                .collect()
        })
        .filter(|state: &std::collections::BTreeMap<&str, &str>| !state.is_empty())
        .collect()
}

/// The service user is in no privileged group and sudo grants it nothing.
pub fn service_user_has_no_sudo(ctx: &Ctx) -> Result<String> {
    let user = &ctx.testbed.service_user;
    let groups = ctx.admin.check(&format!("id -nG {user}"))?;
    let privileged: Vec<&str> = groups
        .split_whitespace()
        .filter(|group| {
            [
                "sudo", "wheel", "admin", "adm", "docker", "root", "disk", "lxd",
            ]
            .contains(group)
        })
        .collect();
    ensure!(
        privileged.is_empty(),
        "{user} is in privileged groups {privileged:?}"
    );
    let sudo = ctx.admin.sudo(&format!("sudo -n -l -U {user}"))?;
    ensure!(
        sudo.stdout.contains("is not allowed to run sudo"),
        "sudo grants {user} something: {}",
        sudo.stdout.trim()
    );
    let direct = ctx.admin.sudo(&format!("sudo -n -u {user} sudo -n true"))?;
    ensure!(!direct.success, "{user} ran `sudo -n true` successfully");
    Ok(format!("groups: {}; sudo: not allowed", groups.trim()))
}

/// Root-owned container sockets the service user must not be able to use.
const ROOT_CONTAINER_SOCKETS: &[&str] = &[
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/containerd/containerd.sock",
];

/// The root Docker daemon is not running, and the service user cannot talk to any root-owned
/// container socket (tested by connecting with curl, so the answer does not depend on which
/// client tools are installed).
pub fn service_user_cannot_use_root_docker(ctx: &Ctx) -> Result<String> {
    let user = &ctx.testbed.service_user;
    let active = ctx
        .admin
        .run("systemctl is-active docker.service docker.socket containerd.service")?;
    ensure!(
        !active.stdout.lines().any(|state| state.trim() == "active"),
        "the system Docker is active: {}",
        active.stdout.replace('\n', " ")
    );
    let mut facts = Vec::new();
    for socket in ROOT_CONTAINER_SOCKETS {
        let exists = ctx.admin.sudo(&format!("test -S {socket}"))?.success;
        if !exists {
            facts.push(format!("{socket} absent"));
            continue;
        }
        let ping = ctx.admin.sudo(&format!(
            "cd / && sudo -n -u {user} curl -s --max-time 5 --unix-socket {socket} http://localhost/_ping"
        ))?;
        ensure!(
            !ping.success,
            "{user} can connect to the root-owned socket {socket}"
        );
        facts.push(format!("{socket} refused"));
    }
    Ok(format!(
        "system docker/containerd inactive; {user}: {}",
        facts.join(", ")
    ))
}

/// How long the probe waits for the service user's rootless Docker to list the sandbox image.
/// The image build put the image in the daemon's store, so this is the daemon's first start,
/// which under TCG on a loaded host takes a minute or more (rootlesskit, containerd, the
/// store's first check); a bound, not a target.
const SANDBOX_WAIT_S: u64 = 600;

/// The sandbox image the appliance's gateway config names (`[sandbox].image`).
pub(crate) const SANDBOX_IMAGE: &str = "clawfort-sandbox:latest";

/// The docker CLI as the service user, talking to its rootless daemon (a root shell runs it).
pub(crate) fn docker_cli(ctx: &Ctx) -> String {
    let user = &ctx.testbed.service_user;
    format!(
        "cd / && sudo -n -u {user} env XDG_RUNTIME_DIR=/run/user/$(id -u {user}) DOCKER_HOST=unix://{} docker",
        ctx.testbed.expect.sandbox_socket
    )
}

/// The service user's rootless Docker starts in the background after the gateway is up: waits
/// (at most [`SANDBOX_WAIT_S`]) until it answers with the sandbox image; returns the seconds
/// waited.
pub(crate) fn wait_for_sandbox_image(ctx: &Ctx) -> Result<f64> {
    let waited = std::time::Instant::now();
    let arrived = ctx.admin.run_with(
        &format!(
            "for i in $(seq 1 {SANDBOX_WAIT_S}); do sudo -n sh -c {} >/dev/null 2>&1 && exit 0; sleep 1; done; exit 1",
            crate::exec::shell_quote(&format!("{} image inspect {SANDBOX_IMAGE}", docker_cli(ctx)))
        ),
        None,
        std::time::Duration::from_secs(SANDBOX_WAIT_S + 60),
    )?;
    ensure!(
        arrived.success,
        "the sandbox image {SANDBOX_IMAGE} was not loaded into {}'s rootless Docker within \
         {SANDBOX_WAIT_S} s",
        ctx.testbed.service_user
    );
    Ok(waited.elapsed().as_secs_f64())
}

/// First boot grew the root partition to the end of the (enlarged) disk and the file system
/// to the partition.
pub fn root_fs_grown_to_disk(ctx: &Ctx) -> Result<String> {
    let facts = ctx.admin.check_root(
        "part=$(findmnt -no SOURCE /); disk=/dev/$(lsblk -no PKNAME $part); \
         echo disk=$(blockdev --getsize64 $disk); echo part=$(blockdev --getsize64 $part); \
         echo start=$(( $(cat /sys/class/block/$(basename $part)/start) * 512 )); \
         echo fs=$(( $(tune2fs -l $part | awk -F: '/^Block count/ {print $2}') * $(tune2fs -l $part | awk -F: '/^Block size/ {print $2}') ))",
    )?;
    let value = |key: &str| -> Result<u64> {
        field(&facts, key)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no `{key}` in: {facts}"))
    };
    let (disk, part, start, fs) = (
        value("disk")?,
        value("part")?,
        value("start")?,
        value("fs")?,
    );
    let expected = ctx.testbed.guest.disk_bytes;
    ensure!(
        disk == expected,
        "the guest's disk is {disk} bytes, the harness made it {expected}"
    );
    const MIB: u64 = 1 << 20;
    // The backup GPT and alignment take the last MiB or so.
    ensure!(
        start + part + 4 * MIB >= disk,
        "the root partition ends {} MiB before the end of the disk",
        (disk - start - part) / MIB
    );
    ensure!(
        fs + 4 * MIB >= part,
        "the root file system ({} MiB) does not fill its partition ({} MiB)",
        fs / MIB,
        part / MIB
    );
    Ok(format!(
        "disk {} MiB, root partition {} MiB ending at the disk's end, ext4 {} MiB",
        disk / MIB,
        part / MIB,
        fs / MIB
    ))
}

/// The ceiling for memory in use at idle: issue 15's budget, so a 1 GiB Pi has room for the
/// agent's turns and its sandbox. The 2 GiB suite guest measured 321 MiB when first boot still
/// imported the sandbox image and then restarted rootless Docker (before that restart, the
/// daemon kept 190-270 MiB resident and the guest used 441-499 MiB).
const IDLE_MEMORY_BUDGET_MIB: u64 = 400;

/// How long the sandbox unit (`clawfort-sandbox-import`: the CLI's context, the image's check)
/// may take to finish once the image is listed: a bound, not a target.
const IMPORT_DONE_WAIT_S: u64 = 300;

/// Memory in use at idle (`MemTotal - MemAvailable`, what `free` calls used) stays under
/// [`IDLE_MEMORY_BUDGET_MIB`]; the report names it and the largest processes. Idle means
/// after the first boot's own work, rootless Docker up with the sandbox image and the sandbox
/// unit finished (waited for here), and before any agent turn: the probe runs after the
/// attacks from outside and before the agent probes.
pub fn idle_memory_within_budget(ctx: &Ctx) -> Result<String> {
    let waited = wait_for_sandbox_image(ctx)?;
    let user = &ctx.testbed.service_user;
    // The sandbox unit is active (it remains so) once it has checked the image; bounded.
    let unit = std::time::Instant::now();
    let checked = ctx.admin.sudo_with(
        &format!(
            "for i in $(seq 1 {IMPORT_DONE_WAIT_S}); do systemctl --user --machine={user}@.host \
             is-active --quiet clawfort-sandbox-import.service && exit 0; sleep 1; done; exit 1"
        ),
        std::time::Duration::from_secs(IMPORT_DONE_WAIT_S + 30),
    )?;
    ensure!(
        checked.success,
        "{user}'s clawfort-sandbox-import.service did not finish within {IMPORT_DONE_WAIT_S} s \
         of the image being listed"
    );
    let unit = unit.elapsed().as_secs_f64();
    let output = ctx
        .admin
        .check("cat /proc/meminfo; ps -eo rss=,comm= --sort=-rss | head -n 5")?;
    let kib = |key: &str| -> Result<u64> {
        output
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {key} in /proc/meminfo: {output}"))
    };
    let (total, available) = (kib("MemTotal")?, kib("MemAvailable")?);
    let used_mib = total.saturating_sub(available) / 1024;
    let largest: Vec<String> = output
        .lines()
        .filter_map(|line| {
            let (rss, name) = line.trim().split_once(' ')?;
            let rss: u64 = rss.parse().ok()?;
            Some(format!("{} {} MiB", name.trim(), rss / 1024))
        })
        .collect();
    ensure!(
        used_mib < IDLE_MEMORY_BUDGET_MIB,
        "{used_mib} MiB of {} MiB in use at idle, over the {IDLE_MEMORY_BUDGET_MIB} MiB budget; \
         largest: {}",
        total / 1024,
        largest.join(", ")
    );
    Ok(format!(
        "{used_mib} MiB of {} MiB in use at idle (budget {IDLE_MEMORY_BUDGET_MIB} MiB; the sandbox \
         image waited for {waited:.0} s, the sandbox unit after it {unit:.0} s); \
         largest: {}",
        total / 1024,
        largest.join(", ")
    ))
}
