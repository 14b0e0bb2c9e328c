//! The gateway updated through apt (issue 16, item 3): the appliance's own apt and
//! unattended-upgrades take a newer `clawfort` package from a repository made by
//! `cargo xtask repo`, the package's postinst restarts the gateway on it, and the owner's
//! pairings and transcripts are untouched; a repository signed by another key is refused.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::gateway::{gateway_token, http_status};
use crate::testbed::Repository;
use crate::Ctx;

/// Where the image keeps the gateway's apt source and unattended-upgrades' settings.
const SOURCES: &str = "/etc/apt/sources.list.d/clawfort.sources";
const UPGRADES: &str = "/etc/apt/apt.conf.d/52clawfort-unattended-upgrades";
/// What the probe keeps of the image's own files, to put them back.
const SAVED: &str = "/root/clawfort-e2e-update-saved";

/// apt and unattended-upgrades under TCG: loading the package cache is slow.
const UPGRADE_LIMIT: Duration = Duration::from_secs(300);
/// The restarted gateway's first `/healthz`.
const RESTART_LIMIT: Duration = Duration::from_secs(90);

/// Both parts run, and a failure names every problem: the trusted repository's update must
/// arrive, and the stranger's must not.
pub fn gateway_updates_from_its_repository(ctx: &Ctx) -> Result<String> {
    let repository = ctx.testbed.repository.clone().context(
        "no gateway package was found beside the image, so no repository was served: build \
         the image with `cargo xtask image` (it writes out/clawfort_<version>_<arch>.deb)",
    )?;
    let admin = &ctx.admin;
    admin.check_root(&format!(
        "mkdir -p {SAVED} && cp -p {SOURCES} {UPGRADES} {SAVED}/"
    ))?;
    let upgrades = std::fs::read(&repository.unattended_upgrades)?;
    install(ctx, UPGRADES, &upgrades)?;
    let trusted = update_from_trusted(ctx, &repository);
    let stranger = refuse_the_stranger(ctx, &repository);
    admin.check_root(&format!(
        "cp -p {SAVED}/clawfort.sources {SOURCES} && cp -p {SAVED}/52clawfort-unattended-upgrades {UPGRADES}"
    ))?;
    match (trusted, stranger) {
        (Ok(a), Ok(b)) => Ok(format!("{a}; {b}")),
        (Err(a), Ok(_)) => Err(a),
        (Ok(_), Err(b)) => Err(b),
        (Err(a), Err(b)) => bail!("{a:#}; and {b:#}"),
    }
}

fn update_from_trusted(ctx: &Ctx, repository: &Repository) -> Result<String> {
    let admin = &ctx.admin;
    let installed = package_version(ctx)?;
    if installed != repository.installed_version {
        bail!(
            "the image's clawfort package is {installed}, not {} as built",
            repository.installed_version
        );
    }
    // Read now, judged last: a guest without pairings yet still shows whether updates arrive.
    let owner_state = state_digest(ctx);
    let before = main_process(ctx)?;
    install(ctx, SOURCES, &std::fs::read(&repository.trusted_sources)?)?;
    let update = refresh_lists(ctx)?;
    let started = Instant::now();
    let upgrade = admin.sudo_with(
        // Retried (bounded) while an apt timer's job holds the lock.
        "command -v unattended-upgrade >/dev/null || exit 127; \
         for i in $(seq 1 12); do unattended-upgrade -v && exit 0; sleep 5; done; exit 1",
        UPGRADE_LIMIT,
    )?;
    let upgrade_s = started.elapsed().as_secs_f64();
    let now = package_version(ctx)?;
    if now != repository.trusted_version {
        let log = admin
            .sudo("tail -n 15 /var/log/unattended-upgrades/unattended-upgrades.log /var/log/unattended-upgrades/unattended-upgrades-dpkg.log 2>&1")
            .map(|o| o.stdout)
            .unwrap_or_default();
        bail!(
            "clawfort stayed at {now} although the trusted repository offers {} (apt-get \
             update: {}; unattended-upgrade exited {}: {}; its logs: {})",
            repository.trusted_version,
            last_lines(&update, 3),
            upgrade
                .code
                .map_or("by a signal".to_owned(), |c| c.to_string()),
            last_lines(&(upgrade.stdout.clone() + &upgrade.stderr), 6),
            last_lines(&log, 12)
        );
    }
    // The postinst restarted the gateway: a new process, on the new file.
    let deadline = Instant::now() + RESTART_LIMIT;
    let after = loop {
        let process = main_process(ctx).ok().filter(|p| p.pid != before.pid);
        let healthy = http_status(ctx, "/healthz", None).is_ok_and(|status| status == 200);
        match process {
            Some(process) if healthy => break process,
            _ if Instant::now() > deadline => bail!(
                "clawfort {now} is installed but the gateway did not come back on it within \
                 {} s (it was pid {} before; now {:?})",
                RESTART_LIMIT.as_secs(),
                before.pid,
                main_process(ctx).map(|p| p.pid).ok()
            ),
            _ => std::thread::sleep(Duration::from_secs(1)),
        }
    };
    if after.exe != "/usr/bin/clawfort" {
        bail!(
            "the restarted gateway (pid {}) runs {}, not /usr/bin/clawfort",
            after.pid,
            after.exe
        );
    }
    let token = gateway_token(&ctx.testbed, admin)?;
    let status = http_status(
        ctx,
        "/api/status",
        Some(&format!("Authorization: Bearer {token}")),
    )?;
    if status != 200 {
        bail!("after the update, /api/status with the token answered {status}, not 200");
    }
    let owner_state = owner_state?;
    let owner_state_after = state_digest(ctx)?;
    if owner_state_after.digest != owner_state.digest {
        bail!(
            "the owner's pairings or transcripts changed across the update ({} files before, \
             {} after)",
            owner_state.files,
            owner_state_after.files
        );
    }
    Ok(format!(
        "{installed} -> {now} by unattended-upgrade in {upgrade_s:.0} s; gateway pid {} -> {} \
         on /usr/bin/clawfort, token accepted, {} pairing and transcript files unchanged",
        before.pid, after.pid, owner_state.files
    ))
}

fn refuse_the_stranger(ctx: &Ctx, repository: &Repository) -> Result<String> {
    let before = package_version(ctx)?;
    install(ctx, SOURCES, &std::fs::read(&repository.stranger_sources)?)?;
    let update = refresh_lists(ctx)?;
    let candidate = ctx
        .admin
        .check("apt-cache policy clawfort")?
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: ").map(str::to_owned))
        .unwrap_or_default();
    let refused = update.contains("NO_PUBKEY") || update.contains("not signed");
    if !refused || candidate == repository.stranger_version {
        bail!(
            "the repository signed by another key was accepted: apt's candidate is \
             {candidate} (apt-get update: {})",
            last_lines(&update, 3)
        );
    }
    let upgrade = ctx
        .admin
        .sudo_with("unattended-upgrade -v", UPGRADE_LIMIT)?;
    let after = package_version(ctx)?;
    if after != before {
        bail!(
            "clawfort went from {before} to {after} from the repository signed by another key \
             ({})",
            last_lines(&upgrade.stdout, 4)
        );
    }
    let said = update
        .lines()
        .find(|l| l.contains("NO_PUBKEY") || l.contains("not signed"))
        .unwrap_or_default()
        .trim();
    Ok(format!(
        "the repository signed by another key refused (apt: {said}), clawfort stays {after}"
    ))
}

/// Writes `bytes` to the root-owned `path` on the guest (mode 644).
fn install(ctx: &Ctx, path: &str, bytes: &[u8]) -> Result<()> {
    ctx.admin
        .run_with(
            &format!(
                "sudo -n sh -c 'cat > {path}.new && chmod 644 {path}.new && mv {path}.new {path}'"
            ),
            Some(bytes),
            crate::ssh::COMMAND_LIMIT,
        )?
        .ok(&format!("writing {path}"))?;
    Ok(())
}

/// `apt-get update` of the gateway's source alone (the Debian mirrors are out of the private
/// network's reach, and would only add their timeouts); its output, errors included.
fn refresh_lists(ctx: &Ctx) -> Result<String> {
    let output = ctx.admin.sudo_with(
        &format!(
            "apt-get -o DPkg::Lock::Timeout=120 -o Dir::Etc::SourceList={SOURCES} \
             -o Dir::Etc::SourceParts=- update 2>&1"
        ),
        UPGRADE_LIMIT,
    )?;
    Ok(output.stdout + &output.stderr)
}

fn package_version(ctx: &Ctx) -> Result<String> {
    Ok(ctx
        .admin
        .check("dpkg-query -W -f '${Version}' clawfort")?
        .trim()
        .to_owned())
}

struct Process {
    pid: u32,
    exe: String,
}

fn main_process(ctx: &Ctx) -> Result<Process> {
    let pid: u32 = ctx
        .admin
        .check("systemctl show -P MainPID clawfort.service")?
        .trim()
        .parse()
        .context("systemctl printed no MainPID")?;
    if pid == 0 {
        bail!("clawfort.service has no main process");
    }
    let exe = ctx.admin.check_root(&format!("readlink /proc/{pid}/exe"))?;
    Ok(Process {
        pid,
        exe: exe.trim().to_owned(),
    })
}

struct Digest {
    digest: String,
    files: usize,
}

/// One digest over the owner's pairing store and transcripts (each file's SHA-256 and name),
/// which must hold at least one of each.
fn state_digest(ctx: &Ctx) -> Result<Digest> {
    let state = format!("/home/{}/.openclaw", ctx.testbed.service_user);
    let listing = ctx.admin.check_root(&format!(
        "cd {state} && find credentials agents -type f \\( -path 'credentials/*' -o -path '*/sessions/*' \\) \
         -print0 2>/dev/null | sort -z | xargs -0 -r sha256sum"
    ))?;
    let files = listing.lines().count();
    let pairings = listing.lines().any(|l| l.contains("credentials/"));
    let transcripts = listing.lines().any(|l| l.contains("/sessions/"));
    if !pairings || !transcripts {
        bail!(
            "nothing to compare across the update: the state directory holds {} pairing and {} \
             transcript files (this probe runs after the agent probe, which makes both)",
            listing
                .lines()
                .filter(|l| l.contains("credentials/"))
                .count(),
            listing.lines().filter(|l| l.contains("/sessions/")).count()
        );
    }
    Ok(Digest {
        digest: listing,
        files,
    })
}

fn last_lines(text: &str, n: usize) -> String {
    crate::exec::last_lines(text, n)
}
