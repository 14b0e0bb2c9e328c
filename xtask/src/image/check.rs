//! `cargo xtask check-image`: a cloud marketplace's readiness review of a built image (in the
//! manner of DigitalOcean's `img_check`), run on its root file system. The leak checks are the
//! scrub stage's own [`scrub::find_leaks`], one check per kind of leak; the shadow file is read
//! for password hashes; what services must be on (cloud-init, the firewall, automatic updates)
//! is data, `image/check/requirements.toml`, checked against dpkg's status, the units enabled
//! in `/etc/systemd/system`, the nftables ruleset and apt's settings.
//!
//! A raw disk's root partition (the last: the assemble stage puts it there) is mounted
//! read-only through a loop device; a directory (the build's `customise/rootfs`) is read as is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use xshell::{cmd, Shell};

use super::host_tools;
use super::layout::ArtifactNames;
use super::scrub::{self, LeakKind};
use super::{Format, Target};

/// Inspect a built image's root file system the way a cloud marketplace reviews an image:
/// no shell history, no keys, no logs, no machine state, no build leftovers, no password
/// hashes; cloud-init installed and enabled, the firewall on with a default-drop input policy,
/// automatic updates on. Exits non-zero when a check fails.
#[derive(clap::Args, Debug, Clone)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The target whose raw disk in out/ is checked when --image is not given.
    #[arg(long, value_enum, default_value_t)]
    pub target: Target,
    /// A raw disk (its root partition is mounted read-only, which needs root) or a root
    /// directory such as target/image/<TARGET>/customise/rootfs [default:
    /// out/<name>-<TARGET>.raw].
    #[arg(long, value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// Print the report as JSON instead of one line per check.
    #[arg(long)]
    pub json: bool,
}

/// One check of the review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    NoShellHistory,
    NoKeys,
    NoLogs,
    NoMachineState,
    NoBuildLeftovers,
    NoPasswords,
    CloudInitEnabled,
    FirewallEnabled,
    UpdatesEnabled,
}

impl Rule {
    /// The check's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Rule::NoShellHistory => "no-shell-history",
            Rule::NoKeys => "no-keys",
            Rule::NoLogs => "no-logs",
            Rule::NoMachineState => "no-machine-state",
            Rule::NoBuildLeftovers => "no-build-leftovers",
            Rule::NoPasswords => "no-passwords",
            Rule::CloudInitEnabled => "cloud-init-enabled",
            Rule::FirewallEnabled => "firewall-enabled",
            Rule::UpdatesEnabled => "updates-enabled",
        }
    }

    /// What a pass means.
    fn passed(self) -> &'static str {
        match self {
            Rule::NoShellHistory => "no shell history under /root or /home",
            Rule::NoKeys => "no SSH host, private or authorized keys, no gateway token",
            Rule::NoLogs => "/var/log holds directories only",
            Rule::NoMachineState => "/etc/machine-id empty, no random seed or credentials",
            Rule::NoBuildLeftovers => "no temporary files, apt lists or caches",
            Rule::NoPasswords => "every account's password field is locked (`*` or `!`)",
            Rule::CloudInitEnabled => "cloud-init installed, its units enabled, not disabled",
            Rule::FirewallEnabled => "nftables enabled, its input chain's policy drop",
            Rule::UpdatesEnabled => "unattended-upgrades installed, apt's daily timers enabled",
        }
    }

    /// The check that reports a kind of leak.
    fn of_leak(kind: LeakKind) -> Self {
        match kind {
            LeakKind::ShellHistory => Rule::NoShellHistory,
            LeakKind::Key => Rule::NoKeys,
            LeakKind::Log => Rule::NoLogs,
            LeakKind::MachineState => Rule::NoMachineState,
            LeakKind::BuildLeftover => Rule::NoBuildLeftovers,
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub rule: Rule,
    pub passed: bool,
    /// What was verified, or every finding that failed the check.
    pub reason: String,
}

#[derive(Serialize)]
struct Report<'a> {
    image: &'a Path,
    passed: bool,
    checks: &'a [Outcome],
}

pub fn run(args: Args) -> Result<ExitCode> {
    let image = match &args.image {
        Some(path) => path.clone(),
        None => {
            let definition = super::load_definition(&[], args.target)?;
            let out = crate::project_root().join("out");
            ArtifactNames::new(out, &definition.image.image.name, args.target).path(Format::Raw)
        }
    };
    let requirements = Requirements::load()?;
    let outcomes = if image.is_dir() {
        inspect(&image, &requirements)?
    } else {
        ensure!(
            image.is_file(),
            "no image at {}: build it with `cargo xtask image --target {} --format raw`, or pass \
             --image with a raw disk or a root directory",
            image.display(),
            args.target
        );
        let mounted = MountedRoot::mount(&image)?;
        inspect(mounted.path(), &requirements)?
    };
    let passed = outcomes.iter().all(|o| o.passed);
    if args.json {
        let report = Report {
            image: &image,
            passed,
            checks: &outcomes,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}:", image.display());
        for outcome in &outcomes {
            let verdict = if outcome.passed { "pass" } else { "FAIL" };
            println!(
                "  {verdict}  {:<18} {}",
                outcome.rule.name(),
                outcome.reason
            );
        }
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Every check on the root file system at `root`, in the order of [`Rule`].
pub fn inspect(root: &Path, requirements: &Requirements) -> Result<Vec<Outcome>> {
    ensure!(
        root.join("etc/os-release").symlink_metadata().is_ok(),
        "{} is not a root file system (no etc/os-release)",
        root.display()
    );
    // No key may be baked in: cloud-init writes the ones the cloud gives.
    let policy = scrub::Policy {
        keep_authorized_keys_of: None,
    };
    let leaks = scrub::find_leaks(root, &policy)?;
    let leak_rules = [
        Rule::NoShellHistory,
        Rule::NoKeys,
        Rule::NoLogs,
        Rule::NoMachineState,
        Rule::NoBuildLeftovers,
    ];
    let mut outcomes: Vec<Outcome> = leak_rules
        .into_iter()
        .map(|rule| {
            let findings = leaks
                .iter()
                .filter(|leak| Rule::of_leak(leak.kind) == rule)
                .map(ToString::to_string)
                .collect();
            Outcome::of(rule, findings)
        })
        .collect();
    outcomes.push(Outcome::of(Rule::NoPasswords, passwords(root)?));
    for (rule, requirement) in [
        (Rule::CloudInitEnabled, &requirements.cloud_init),
        (Rule::FirewallEnabled, &requirements.firewall),
        (Rule::UpdatesEnabled, &requirements.updates),
    ] {
        outcomes.push(Outcome::of(rule, unmet(root, requirement)?));
    }
    Ok(outcomes)
}

impl Outcome {
    fn of(rule: Rule, findings: Vec<String>) -> Self {
        Self {
            rule,
            passed: findings.is_empty(),
            reason: if findings.is_empty() {
                rule.passed().to_owned()
            } else {
                findings.join("; ")
            },
        }
    }
}

/// Accounts whose shadow password field is neither locked (`!...`) nor disabled (`*`): a hash
/// someone could log in with, or an empty field that needs no password at all.
fn passwords(root: &Path) -> Result<Vec<String>> {
    let shadow = root.join("etc/shadow");
    let text = std::fs::read_to_string(&shadow)
        .with_context(|| format!("cannot read {}", shadow.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let user = fields.next()?;
            let password = fields.next()?;
            match password.chars().next() {
                Some('*' | '!') => None,
                None => Some(format!("/etc/shadow: `{user}` has an empty password")),
                Some(_) => Some(format!("/etc/shadow: `{user}` has a password hash")),
            }
        })
        .collect())
}

/// `image/check/requirements.toml`: the services the review wants on, one table per check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    pub cloud_init: Requirement,
    pub firewall: Requirement,
    pub updates: Requirement,
}

/// What one check requires (the file's header says what each key means).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub units: Vec<String>,
    #[serde(default)]
    pub absent: Vec<String>,
    pub ruleset: Option<String>,
    pub apt_setting: Option<String>,
}

impl Requirements {
    pub const PATH: &'static str = "image/check/requirements.toml";

    pub fn load() -> Result<Self> {
        let path = crate::project_root().join(Self::PATH);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))
    }
}

/// Everything in `root` that does not meet `requirement`.
fn unmet(root: &Path, requirement: &Requirement) -> Result<Vec<String>> {
    let mut findings = not_installed(root, &requirement.packages)?;
    findings.extend(not_enabled(root, &requirement.units));
    for file in &requirement.absent {
        if root.join(file).symlink_metadata().is_ok() {
            findings.push(format!("/{file} exists"));
        }
    }
    if let Some(ruleset) = &requirement.ruleset {
        match std::fs::read_to_string(root.join(ruleset)) {
            Ok(text) if input_policy_drops(&text) => {}
            Ok(_) => findings.push(format!(
                "/{ruleset}: no chain hooked to input with `policy drop`"
            )),
            Err(_) => findings.push(format!("/{ruleset} is missing")),
        }
    }
    if let Some(setting) = &requirement.apt_setting {
        if !apt_sets(root, setting) {
            findings.push(format!("/etc/apt/apt.conf.d: no `{setting};`"));
        }
    }
    Ok(findings)
}

/// Whether a chain hooked to `input` declares `policy drop` (on its `type` line or the line
/// after it, as `nft list ruleset` and hand-written files put it).
fn input_policy_drops(ruleset: &str) -> bool {
    let lines: Vec<&str> = ruleset
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .collect();
    lines.iter().enumerate().any(|(at, line)| {
        line.contains("hook input")
            && lines[at..(at + 2).min(lines.len())]
                .iter()
                .any(|l| l.contains("policy drop"))
    })
}

/// Whether a file of `/etc/apt/apt.conf.d` sets `setting` on a line not commented out.
fn apt_sets(root: &Path, setting: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(root.join("etc/apt/apt.conf.d")) else {
        return false;
    };
    entries.flatten().any(|entry| {
        std::fs::read_to_string(entry.path()).is_ok_and(|text| {
            text.lines()
                .any(|line| !line.trim_start().starts_with("//") && line.contains(setting))
        })
    })
}

/// The packages dpkg does not list as installed.
fn not_installed(root: &Path, packages: &[String]) -> Result<Vec<String>> {
    let status_path = root.join("var/lib/dpkg/status");
    let status = std::fs::read_to_string(&status_path)
        .with_context(|| format!("cannot read {}", status_path.display()))?;
    let installed: Vec<&str> = status
        .split("\n\n")
        .filter(|paragraph| {
            paragraph
                .lines()
                .any(|line| line == "Status: install ok installed")
        })
        .filter_map(|paragraph| {
            paragraph
                .lines()
                .find_map(|line| line.strip_prefix("Package: "))
        })
        .collect();
    Ok(packages
        .iter()
        .filter(|package| !installed.contains(&package.as_str()))
        .map(|package| format!("package {package} is not installed"))
        .collect())
}

/// The units that no `.wants`/`.requires` directory of `/etc/systemd/system` pulls in (what
/// `systemctl enable` makes), or that are masked.
fn not_enabled(root: &Path, units: &[String]) -> Vec<String> {
    let system = root.join("etc/systemd/system");
    let pulled_in: Vec<PathBuf> = std::fs::read_dir(&system)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|dir| {
                    dir.extension()
                        .is_some_and(|ext| ext == "wants" || ext == "requires")
                })
                .collect()
        })
        .unwrap_or_default();
    units
        .iter()
        .filter_map(|unit| {
            let masked = std::fs::read_link(system.join(unit))
                .is_ok_and(|target| target == Path::new("/dev/null"));
            if masked {
                return Some(format!("{unit} is masked"));
            }
            let enabled = pulled_in
                .iter()
                .any(|dir| dir.join(unit).symlink_metadata().is_ok());
            (!enabled).then(|| format!("{unit} is not enabled"))
        })
        .collect()
}

/// A raw disk's root partition mounted read-only on a temporary directory; unmounted on drop.
struct MountedRoot {
    dir: tempfile::TempDir,
}

impl MountedRoot {
    fn mount(disk: &Path) -> Result<Self> {
        if !host_tools::is_root() {
            bail!(
                "mounting the root partition of {} needs root; run as root, or pass the build's \
                 root directory: --image target/image/<TARGET>/customise/rootfs",
                disk.display()
            );
        }
        host_tools::ensure(host_tools::CHECK_IMAGE_TOOLS)?;
        let sh = Shell::new()?;
        let (start, length) = last_partition(&sh, disk)?;
        let dir = tempfile::tempdir()?;
        let mountpoint = dir.path();
        // noload: never replay the journal, so the disk is not written even by the kernel.
        let options = format!("ro,noload,loop,offset={start},sizelimit={length}");
        cmd!(sh, "mount -o {options} {disk} {mountpoint}")
            .quiet()
            .run()
            .with_context(|| {
                format!(
                    "cannot mount the root partition of {} (bytes {start}..+{length})",
                    disk.display()
                )
            })?;
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for MountedRoot {
    fn drop(&mut self) {
        let mountpoint = self.dir.path();
        if let Ok(sh) = Shell::new() {
            // The loop device was made by mount's `loop` option, so umount detaches it.
            let _ = cmd!(sh, "umount {mountpoint}").quiet().run();
        }
    }
}

/// The byte range of the disk's last partition: the root, on every target's layout.
fn last_partition(sh: &Shell, disk: &Path) -> Result<(u64, u64)> {
    let table = cmd!(sh, "sfdisk --json {disk}").quiet().read()?;
    let table: serde_json::Value = serde_json::from_str(&table)
        .with_context(|| format!("unreadable `sfdisk --json` output for {}", disk.display()))?;
    let sector = table["partitiontable"]["sectorsize"]
        .as_u64()
        .unwrap_or(512);
    let last = table["partitiontable"]["partitions"]
        .as_array()
        .and_then(|partitions| partitions.last())
        .with_context(|| format!("{} has no partition table", disk.display()))?;
    let field = |name: &str| {
        last[name]
            .as_u64()
            .with_context(|| format!("sfdisk gives no `{name}` for the last partition"))
    };
    Ok((field("start")? * sector, field("size")? * sector))
}

#[cfg(test)]
mod tests;
