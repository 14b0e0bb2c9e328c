//! The host programs the builder (and the boot suite) run, and setting them up on a fresh
//! machine: as root on Debian the missing ones are installed; anywhere else the build stops
//! with the exact command a person should run.
//!
//! On a bookworm host QEMU comes from bookworm-backports: bookworm's QEMU 7.2 makes the trixie
//! kernel panic under TCG, and `qemu-utils` must come from the same suite as `qemu-system-*`.
//!
//! The tools every target needs are tables here; what differs between targets is data: the
//! `[[host_tools]]` of `qemu/<target>.toml` (the emulator and firmware that boot it) and of
//! `image/foreign-arch/<debian_arch>.toml` (building that architecture on another host).
//! [`tools_for`] picks the groups a command needs for a target, and `cargo xtask doctor`
//! reports on the same groups. A unit test (`spawn_audit`)
//! reads the sources of every host-side program spawn and fails on one no table names.

#[cfg(test)]
mod spawn_audit;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clawfort_imagedef::TargetConfig;
use serde::Deserialize;
use xshell::{cmd, Shell};

use crate::qemu::Machine;

/// Something the host must provide, and the Debian package that provides it: a `[[host_tools]]`
/// entry of a data file, or a constant here (hence `Cow`: borrowed for the constants, owned
/// when read from a file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTool {
    /// A program looked up on PATH (plus the sbin directories), or an absolute file path.
    pub probe: Cow<'static, str>,
    pub package: Cow<'static, str>,
    /// On a bookworm host, install from bookworm-backports.
    #[serde(default)]
    pub from_backports: bool,
    /// Oldest acceptable major version, read from `<probe> --version`.
    #[serde(default)]
    pub min_major_version: Option<u32>,
}

/// A tool from the host's own suite, any version.
pub const fn tool(probe: &'static str, package: &'static str) -> HostTool {
    HostTool {
        probe: Cow::Borrowed(probe),
        package: Cow::Borrowed(package),
        from_backports: false,
        min_major_version: None,
    }
}

/// qemu-img from the same suite as the QEMU system emulators (backports on bookworm).
const QEMU_IMG: HostTool = HostTool {
    probe: Cow::Borrowed("qemu-img"),
    package: Cow::Borrowed("qemu-utils"),
    from_backports: true,
    min_major_version: None,
};

/// Why a command needs a set of tools; `cargo xtask doctor` shows it next to each tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// Bootstrapping, customising and assembling any image.
    Image,
    /// Building an image whose architecture is not the host's.
    ForeignArch,
    /// Writing the target's artifact formats.
    Package,
    /// Booting an image under QEMU (`run`, `e2e`, and `image` so a builder can boot its image).
    Boot,
    /// The suite's private network, SSH key and CIDATA seed (`e2e`).
    E2eNetwork,
}

impl Group {
    /// The name `doctor` prints.
    pub fn name(self) -> &'static str {
        match self {
            Group::Image => "image",
            Group::ForeignArch => "foreign-arch",
            Group::Package => "package",
            Group::Boot => "boot",
            Group::E2eNetwork => "e2e-network",
        }
    }
}

/// Tools one command needs for one reason.
#[derive(Debug, Clone)]
pub struct ToolGroup {
    pub group: Group,
    /// A table here, or the list a target's data file gives.
    pub tools: Cow<'static, [HostTool]>,
}

/// What a command does with a target; each needs its own tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `cargo xtask image`: build the image, and be able to boot it afterwards.
    Build,
    /// `cargo xtask run`: boot a built image.
    Boot,
    /// `cargo xtask e2e`: boot images on a private network and probe them over SSH (the suite
    /// image itself is built through [`Purpose::Build`]).
    Probe,
}

/// Everything `cargo xtask image` runs for any target (the Pi's MBR uses sfdisk, the UEFI
/// targets' GPT sgdisk; both are small).
const IMAGE_TOOLS: &[HostTool] = &[
    tool("mmdebstrap", "mmdebstrap"),
    // mmdebstrap's eatmydata hooks (`--hook-dir`) ask dpkg-architecture for the multiarch
    // library directory; it is in dpkg-dev, which a host without build-essential lacks.
    tool("dpkg-architecture", "dpkg-dev"),
    // mmdebstrap mounts /proc, /sys and /dev in the root; binfmt_misc is mounted with it too.
    // Priority: required, but not Essential, so a minimal container may lack it.
    tool("mount", "mount"),
    tool("sgdisk", "gdisk"),
    tool("sfdisk", "fdisk"),
    tool("mkfs.vfat", "dosfstools"),
    tool("mcopy", "mtools"),
    tool("mmd", "mtools"),
    tool("mkfs.ext4", "e2fsprogs"),
    tool("e2fsck", "e2fsprogs"),
    tool("dpkg-query", "dpkg"),
    // The gateway's Debian package (`customise/deb.rs`).
    tool("dpkg-deb", "dpkg"),
    tool("chroot", "coreutils"),
    tool("cp", "coreutils"),
    tool("zstd", "zstd"),
    tool(
        "/usr/share/keyrings/debian-archive-keyring.gpg",
        "debian-archive-keyring",
    ),
    QEMU_IMG,
];

/// The artifact formats' compressors and map writers (zstd, for `raw-zst`, and qemu-img, for
/// `vhd`, `vmdk` and `ova`, are image tools already; tar is Essential). pigz gzips the
/// `gce-tar` archive on every core.
/// The SBOM takes its creation time from git (HEAD's commit time).
const PACKAGE_TOOLS: &[HostTool] = &[
    tool("xz", "xz-utils"),
    tool("bmaptool", "bmap-tools"),
    tool("pigz", "pigz"),
    tool("git", "git"),
];

/// What every boot needs besides the emulator: per-boot overlay disks, NoCloud seed volumes
/// (`run --seed`), the NIC's option ROM, and SSH to the guest.
const BOOT_COMMON_TOOLS: &[HostTool] = &[
    QEMU_IMG,
    // `-device virtio-net-pci` loads efi-virtio.rom, and fails without it. qemu-system-x86
    // depends on ipxe-qemu, but qemu-system-arm only recommends it.
    tool("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu"),
    tool("mkfs.vfat", "dosfstools"),
    tool("mcopy", "mtools"),
    tool("ssh", "openssh-client"),
];

/// The suite's private network (namespace, bridge, taps, DHCP), its SSH key, and keying the
/// published artifact through its CIDATA volume (`e2e/seed.rs`: the partition table, the FAT
/// files, the Pi image's decompression, the qcow2 layer written with qemu-io), and the
/// self-test's token baked into its disk with debugfs (`e2e/self_test.rs`), and the journal
/// collector the forwarding probe runs (`tests/e2e/probes/journal.rs`).
const E2E_NETWORK_TOOLS: &[HostTool] = &[
    tool("ip", "iproute2"),
    tool("dnsmasq", "dnsmasq-base"),
    tool("ssh-keygen", "openssh-client"),
    tool("timeout", "coreutils"),
    tool("sfdisk", "fdisk"),
    tool("mtype", "mtools"),
    tool("mlabel", "mtools"),
    tool("xz", "xz-utils"),
    tool("debugfs", "e2fsprogs"),
    tool(
        "/usr/lib/systemd/systemd-journal-remote",
        "systemd-journal-remote",
    ),
    tool("journalctl", "systemd"),
    HostTool {
        probe: Cow::Borrowed("qemu-io"),
        ..QEMU_IMG
    },
    // The update probe's apt repositories (`e2e/repository.rs`, through `repo.rs`).
    tool("apt-ftparchive", "apt-utils"),
    tool("sqop", "sqop"),
];

/// `cargo xtask ci`'s SBOM validation: a virtual environment for the SPDX tools from PyPI
/// (`image/sbom/validator.rs`). The probe is python3; without python3-venv, `python3 -m venv`
/// fails saying to install it.
pub const SBOM_TOOLS: &[HostTool] = &[tool("python3", "python3-venv")];

/// `cargo xtask check-image` on a raw disk: its partition table, and mounting its root
/// partition read-only through a loop device.
pub const CHECK_IMAGE_TOOLS: &[HostTool] = &[
    tool("sfdisk", "fdisk"),
    tool("mount", "mount"),
    tool("umount", "mount"),
];

/// `cargo xtask repo`: the apt repository's indices (apt-ftparchive) and its OpenPGP key and
/// signatures through the Stateless OpenPGP interface (sqop, Sequoia's: no keyring or agent
/// state on the build host); apt-get reads the result back in the repository's test.
pub const REPO_TOOLS: &[HostTool] = &[
    tool("apt-ftparchive", "apt-utils"),
    tool("sqop", "sqop"),
    tool("dpkg-deb", "dpkg"),
    tool("gzip", "gzip"),
    tool("apt-get", "apt"),
    tool("apt-cache", "apt"),
];

/// `cargo xtask image --sign-key`: signing SHA256SUMS (`image/sign.rs`), and its test.
pub const SIGN_TOOLS: &[HostTool] = &[tool("ssh-keygen", "openssh-client")];

/// `cargo xtask bench`'s load generator.
pub const BENCH_TOOLS: &[HostTool] = &[tool("wrk", "wrk")];

/// `cargo test`'s Docker sandbox test (`tests/sandbox.rs`): a rootless daemon started for a
/// test user, and busybox for its image; `cargo xtask ci` installs them and adds the user.
pub const SANDBOX_TEST_TOOLS: &[HostTool] = &[
    tool("dockerd", "docker.io"),
    tool("docker", "docker.io"),
    tool("rootlesskit", "rootlesskit"),
    tool("newuidmap", "uidmap"),
    tool("/bin/busybox", "busybox-static"),
    tool("useradd", "passwd"),
];

/// `image/foreign-arch/<debian_arch>.toml`: what building an image of that architecture needs
/// on a host of another one. Per architecture, not per target, because the targets of one
/// architecture need the same (see the file's header).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForeignArch {
    /// qemu-user's name for the architecture (`aarch64` for arm64): the binfmt_misc entry
    /// `qemu-<name>` and its rule in `/usr/lib/binfmt.d/qemu-<name>.conf`.
    pub qemu_user: String,
    pub host_tools: Vec<HostTool>,
}

impl ForeignArch {
    /// Reads the file for `debian_arch`, to be built on a `host_arch` host.
    pub fn load(debian_arch: &str, host_arch: &str) -> Result<Self> {
        let path = crate::project_root()
            .join("image/foreign-arch")
            .join(format!("{debian_arch}.toml"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "building `{debian_arch}` images on a `{host_arch}` host is not supported: \
                 cannot read {} (add image/foreign-arch/{debian_arch}.toml with its qemu-user \
                 name and host tools)",
                path.display()
            )
        })?;
        toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))
    }
}

/// The tools that boot an image of `target` under QEMU: its machine file's, then the common.
fn boot_groups(target: &str) -> Result<Vec<ToolGroup>> {
    let machine = Machine::read(&crate::project_root(), target)?;
    Ok([
        Cow::Owned(machine.host_tools),
        Cow::Borrowed(BOOT_COMMON_TOOLS),
    ]
    .into_iter()
    .map(|tools| ToolGroup {
        group: Group::Boot,
        tools,
    })
    .collect())
}

/// The host tools `purpose` needs for `target`: the one place that decides it, used by
/// `image`, `run`, `e2e` (through [`ensure_for`]) and `doctor`.
pub fn tools_for(target: &TargetConfig, purpose: Purpose) -> Result<Vec<ToolGroup>> {
    tools_on_host(
        &target.name,
        &target.debian_arch,
        host_debian_arch(),
        purpose,
    )
}

/// [`tools_for`] on a host of Debian architecture `host_arch`.
fn tools_on_host(
    target: &str,
    debian_arch: &str,
    host_arch: &str,
    purpose: Purpose,
) -> Result<Vec<ToolGroup>> {
    let group = |group, tools: &'static [HostTool]| ToolGroup {
        group,
        tools: Cow::Borrowed(tools),
    };
    let mut groups = Vec::new();
    match purpose {
        Purpose::Build => {
            groups.push(group(Group::Image, IMAGE_TOOLS));
            if debian_arch != host_arch {
                groups.push(ToolGroup {
                    group: Group::ForeignArch,
                    tools: Cow::Owned(ForeignArch::load(debian_arch, host_arch)?.host_tools),
                });
            }
            groups.push(group(Group::Package, PACKAGE_TOOLS));
            // A machine that builds an image should also be able to boot it (`cargo xtask run`).
            groups.extend(boot_groups(target)?);
        }
        Purpose::Boot => groups.extend(boot_groups(target)?),
        Purpose::Probe => {
            groups.extend(boot_groups(target)?);
            groups.push(group(Group::E2eNetwork, E2E_NETWORK_TOOLS));
        }
    }
    Ok(groups)
}

/// Every tool of `groups`, each probe once, in order.
fn flatten(groups: &[ToolGroup]) -> Vec<HostTool> {
    let mut tools: Vec<HostTool> = Vec::new();
    for tool in groups.iter().flat_map(|g| g.tools.iter()) {
        if !tools.iter().any(|t| t.probe == tool.probe) {
            tools.push(tool.clone());
        }
    }
    tools
}

/// [`ensure`] for everything `purpose` needs for `target`.
pub fn ensure_for(target: &TargetConfig, purpose: Purpose) -> Result<()> {
    ensure(&flatten(&tools_for(target, purpose)?))
}

/// Serialises changes to the host (apt, binfmt_misc, rustup targets) between concurrent
/// builds.
pub fn host_setup_lock() -> Result<crate::image::cache::DirLock> {
    crate::image::cache::DirLock::acquire_named(&std::env::temp_dir(), "clawfort-host-setup.lock")
}

/// The host's architecture in Debian's names: that of this very program.
fn host_debian_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Registers qemu-user for `debian_arch` with the kernel's binfmt_misc, so that the chroot's
/// foreign binaries run. Debian's `qemu-user-binfmt` ships the registration as a systemd
/// binfmt.d file; hosts without systemd running (containers, CI runners) never apply it, so it
/// is written to binfmt_misc here. The `F` flag makes the kernel open the interpreter now,
/// which is what lets it work inside a chroot that does not contain it.
pub fn ensure_binfmt(debian_arch: &str) -> Result<()> {
    if debian_arch == host_debian_arch() {
        return Ok(());
    }
    let qemu_name = ForeignArch::load(debian_arch, host_debian_arch())?.qemu_user;
    let binfmt = Path::new("/proc/sys/fs/binfmt_misc");
    let entry = binfmt.join(format!("qemu-{qemu_name}"));
    let registered = || std::fs::read_to_string(&entry).is_ok_and(|t| t.starts_with("enabled"));
    if registered() {
        return Ok(());
    }
    let _lock = host_setup_lock()?;
    if registered() {
        return Ok(());
    }
    let sh = Shell::new()?;
    if !binfmt.join("register").exists() {
        cmd!(sh, "mount -t binfmt_misc binfmt_misc {binfmt}")
            .run()
            .with_context(|| {
                format!(
                    "cannot mount binfmt_misc (needed to run {debian_arch} programs in the \
                     chroot)"
                )
            })?;
    }
    let conf = PathBuf::from(format!("/usr/lib/binfmt.d/qemu-{qemu_name}.conf"));
    let rule = std::fs::read_to_string(&conf)
        .with_context(|| format!("cannot read {} (package qemu-user-binfmt)", conf.display()))?;
    let rule = rule
        .lines()
        .find(|line| line.starts_with(':'))
        .with_context(|| format!("{} holds no binfmt rule", conf.display()))?;
    if entry.exists() {
        // Registered but disabled: enable it rather than registering twice.
        std::fs::write(&entry, "1")
    } else {
        std::fs::write(binfmt.join("register"), rule)
    }
    .with_context(|| {
        format!(
            "cannot register qemu-{qemu_name} with binfmt_misc; as root run: \
             /usr/lib/systemd/systemd-binfmt {}",
            conf.display()
        )
    })?;
    eprintln!("==> registered qemu-{qemu_name} with binfmt_misc");
    Ok(())
}

/// Makes sure every tool is present (and new enough), installing what is missing when this
/// process may (root on Debian), otherwise failing with the command to run.
pub fn ensure(tools: &[HostTool]) -> Result<()> {
    let missing = || -> Vec<HostTool> {
        tools
            .iter()
            .filter(|tool| !is_satisfied(tool))
            .cloned()
            .collect()
    };
    if missing().is_empty() {
        return Ok(());
    }
    // Builds of several targets run at once (CI does): one installs, the others wait and
    // then find the tools there.
    let _lock = host_setup_lock()?;
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    let host = HostOs::detect();
    let plan = InstallPlan::new(&missing, &host);
    let names: Vec<&str> = missing.iter().map(|tool| &*tool.probe).collect();
    if !(host.is_debian && is_root()) {
        bail!(
            "missing host tools: {}\n  install them with:\n{}",
            names.join(", "),
            plan.commands_text()
        );
    }
    eprintln!("==> installing missing host tools: {}", names.join(", "));
    plan.execute().with_context(|| {
        format!(
            "installing host tools failed; run by hand:\n{}",
            plan.commands_text()
        )
    })?;
    let still_missing: Vec<&str> = tools
        .iter()
        .filter(|tool| !is_satisfied(tool))
        .map(|tool| &*tool.probe)
        .collect();
    if !still_missing.is_empty() {
        bail!(
            "host tools still missing or too old after installing: {}",
            still_missing.join(", ")
        );
    }
    Ok(())
}

/// What the host has of one tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolState {
    Found {
        path: PathBuf,
    },
    Missing,
    /// Present, but older than `min_major_version` (or its version unreadable).
    TooOld {
        path: PathBuf,
        major: Option<u32>,
    },
}

/// Looks for `tool` (and, for tools with a minimum version, runs `<tool> --version`); changes
/// nothing on the host.
pub fn check(tool: &HostTool) -> ToolState {
    let Some(path) = locate(&tool.probe) else {
        return ToolState::Missing;
    };
    match tool.min_major_version {
        None => ToolState::Found { path },
        Some(min) => match major_version(&path) {
            Some(major) if major >= min => ToolState::Found { path },
            major => ToolState::TooOld { path, major },
        },
    }
}

fn is_satisfied(tool: &HostTool) -> bool {
    matches!(check(tool), ToolState::Found { .. })
}

/// Finds a program on PATH or in the sbin directories (which a non-login root shell may lack).
pub fn locate(probe: &str) -> Option<PathBuf> {
    if probe.starts_with('/') {
        return Path::new(probe).exists().then(|| PathBuf::from(probe));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(probe))
        .find(|candidate| candidate.is_file())
}

/// The first `N.` number in `<program> --version` (QEMU prints `QEMU emulator version 10.0.2`).
fn major_version(program: &Path) -> Option<u32> {
    let sh = Shell::new().ok()?;
    let text = cmd!(sh, "{program} --version")
        .quiet()
        .ignore_status()
        .read()
        .ok()?;
    text.split(|c: char| !c.is_ascii_digit() && c != '.')
        .find(|word| word.contains('.') && word.starts_with(|c: char| c.is_ascii_digit()))
        .and_then(|version| version.split('.').next()?.parse().ok())
}

pub fn is_root() -> bool {
    // `id -u` answers without pulling in libc for one geteuid call.
    Shell::new()
        .ok()
        .and_then(|sh| cmd!(sh, "id -u").quiet().read().ok())
        .is_some_and(|uid| uid.trim() == "0")
}

/// The host's distribution, as far as installing host tools goes.
pub struct HostOs {
    /// Debian with apt: missing tools can be installed by apt-get.
    pub is_debian: bool,
    /// `VERSION_CODENAME` from os-release (`bookworm`, `trixie`).
    pub codename: String,
}

impl HostOs {
    pub fn detect() -> Self {
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let field = |name: &str| {
            os_release
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .map(|value| value.trim_matches('"').to_owned())
                .unwrap_or_default()
        };
        Self {
            is_debian: field("ID") == "debian" && Path::new("/usr/bin/apt-get").exists(),
            codename: field("VERSION_CODENAME"),
        }
    }

    /// Whether packages marked `from_backports` come from bookworm-backports on this host.
    pub fn uses_backports(&self) -> bool {
        self.codename == "bookworm"
    }
}

const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";

/// The apt-get commands that install a set of missing tools on a Debian host.
pub struct InstallPlan {
    from_main: Vec<String>,
    from_backports: Vec<String>,
    add_backports_source: bool,
    backports_uri: String,
}

impl InstallPlan {
    pub fn new(missing: &[HostTool], host: &HostOs) -> Self {
        let use_backports = host.uses_backports();
        let mut plan = Self {
            from_main: Vec::new(),
            from_backports: Vec::new(),
            add_backports_source: false,
            backports_uri: debian_mirror_uri(),
        };
        for tool in missing {
            let list = if tool.from_backports && use_backports {
                &mut plan.from_backports
            } else {
                &mut plan.from_main
            };
            if !list.iter().any(|package| *package == tool.package) {
                list.push(tool.package.to_string());
            }
        }
        // qemu-img and qemu-system must come from the same suite, or apt leaves the host
        // without qemu-img.
        if plan
            .from_backports
            .iter()
            .any(|p| p.starts_with("qemu-system"))
            && !plan.from_backports.iter().any(|p| p == "qemu-utils")
        {
            plan.from_backports.push("qemu-utils".to_owned());
        }
        plan.add_backports_source = !plan.from_backports.is_empty() && !backports_configured();
        plan
    }

    fn backports_source_text(&self) -> String {
        format!(
            "Types: deb\nURIs: {}\nSuites: bookworm-backports\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            self.backports_uri
        )
    }

    /// The commands, one a line, indented for an error message or a report.
    pub fn commands_text(&self) -> String {
        let mut lines = Vec::new();
        if self.add_backports_source {
            lines.push(format!(
                "    printf '{}' > {BACKPORTS_SOURCE}",
                self.backports_source_text().replace('\n', "\\n")
            ));
        }
        lines.push("    apt-get update".to_owned());
        if !self.from_main.is_empty() {
            lines.push(format!(
                "    apt-get install -y --no-install-recommends {}",
                self.from_main.join(" ")
            ));
        }
        if !self.from_backports.is_empty() {
            lines.push(format!(
                "    apt-get install -y --no-install-recommends -t bookworm-backports {}",
                self.from_backports.join(" ")
            ));
        }
        lines.join("\n")
    }

    fn execute(&self) -> Result<()> {
        let sh = Shell::new()?;
        if self.add_backports_source {
            sh.write_file(BACKPORTS_SOURCE, self.backports_source_text())?;
        }
        let env = ("DEBIAN_FRONTEND", "noninteractive");
        cmd!(sh, "apt-get update").env(env.0, env.1).run()?;
        let main = &self.from_main;
        if !main.is_empty() {
            cmd!(sh, "apt-get install -y --no-install-recommends {main...}")
                .env(env.0, env.1)
                .run()?;
        }
        let backports = &self.from_backports;
        if !backports.is_empty() {
            cmd!(
                sh,
                "apt-get install -y --no-install-recommends -t bookworm-backports {backports...}"
            )
            .env(env.0, env.1)
            .run()?;
        }
        Ok(())
    }
}

/// The host's own Debian mirror (from its deb822 sources), so backports come from the same
/// place as everything else.
fn debian_mirror_uri() -> String {
    std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("URIs:"))
                .and_then(|uris| uris.split_whitespace().next().map(str::to_owned))
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_owned())
}

fn backports_configured() -> bool {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(entries.flatten().map(|entry| entry.path()));
    }
    files.iter().any(|file| {
        std::fs::read_to_string(file).is_ok_and(|text| {
            text.lines().any(|line| {
                !line.trim_start().starts_with('#') && line.contains("bookworm-backports")
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Target;

    #[test]
    fn qemu_system_pulls_qemu_utils_from_the_same_suite() {
        let host = HostOs {
            is_debian: true,
            codename: "bookworm".into(),
        };
        let qemu = HostTool {
            from_backports: true,
            min_major_version: Some(10),
            ..tool("qemu-system-x86_64", "qemu-system-x86")
        };
        let plan = InstallPlan::new(&[qemu, tool("mmdebstrap", "mmdebstrap")], &host);
        assert_eq!(plan.from_backports, ["qemu-system-x86", "qemu-utils"]);
        assert_eq!(plan.from_main, ["mmdebstrap"]);
        let text = plan.commands_text();
        assert!(
            text.contains("-t bookworm-backports qemu-system-x86 qemu-utils"),
            "{text}"
        );
    }

    #[test]
    fn off_bookworm_everything_comes_from_the_host_suite() {
        let host = HostOs {
            is_debian: true,
            codename: "trixie".into(),
        };
        let x86_64 = Machine::read(&crate::project_root(), "x86_64").unwrap();
        let plan = InstallPlan::new(&x86_64.host_tools, &host);
        assert!(plan.from_backports.is_empty());
        assert!(plan.from_main.iter().any(|p| p == "qemu-system-x86"));
        assert!(!plan.commands_text().contains("backports"));
    }

    /// One line per group: what `doctor` reports for a target and purpose.
    fn render(groups: &[ToolGroup]) -> Vec<String> {
        groups
            .iter()
            .map(|group| {
                let tools: Vec<String> = group
                    .tools
                    .iter()
                    .map(|t| {
                        let mut text = format!("{}={}", t.probe, t.package);
                        if t.from_backports {
                            text.push_str("+bp");
                        }
                        if let Some(min) = t.min_major_version {
                            text.push_str(&format!(">={min}"));
                        }
                        text
                    })
                    .collect();
                format!("{}: {}", group.group.name(), tools.join(" "))
            })
            .collect()
    }

    /// The per-target lists live in `qemu/<t>.toml` and `image/foreign-arch/<arch>.toml`; this
    /// pins what they amount to, so moving a tool between Rust and data, or editing a file,
    /// cannot silently change what `image`, `run`, `e2e` and `doctor` check.
    #[test]
    fn every_target_needs_exactly_these_tools() {
        let image = "image: mmdebstrap=mmdebstrap dpkg-architecture=dpkg-dev mount=mount \
            sgdisk=gdisk sfdisk=fdisk mkfs.vfat=dosfstools mcopy=mtools mmd=mtools \
            mkfs.ext4=e2fsprogs e2fsck=e2fsprogs dpkg-query=dpkg dpkg-deb=dpkg chroot=coreutils cp=coreutils \
            zstd=zstd /usr/share/keyrings/debian-archive-keyring.gpg=debian-archive-keyring \
            qemu-img=qemu-utils+bp";
        let arm64 = "foreign-arch: /usr/lib/binfmt.d/qemu-aarch64.conf=qemu-user-binfmt+bp \
            arch-test=arch-test aarch64-linux-gnu-gcc=gcc-aarch64-linux-gnu \
            /usr/aarch64-linux-gnu/lib/crt1.o=libc6-dev-arm64-cross";
        let package = "package: xz=xz-utils bmaptool=bmap-tools pigz=pigz git=git";
        let boot_common = "boot: qemu-img=qemu-utils+bp \
            /usr/lib/ipxe/qemu/efi-virtio.rom=ipxe-qemu mkfs.vfat=dosfstools mcopy=mtools \
            ssh=openssh-client";
        let network = "e2e-network: ip=iproute2 dnsmasq=dnsmasq-base ssh-keygen=openssh-client \
            timeout=coreutils sfdisk=fdisk mtype=mtools mlabel=mtools xz=xz-utils \
            debugfs=e2fsprogs \
            /usr/lib/systemd/systemd-journal-remote=systemd-journal-remote journalctl=systemd \
            qemu-io=qemu-utils+bp apt-ftparchive=apt-utils sqop=sqop";
        let emulators = [
            (
                "x86_64",
                "amd64",
                "boot: qemu-system-x86_64=qemu-system-x86+bp>=10 \
                 /usr/share/OVMF/OVMF_CODE_4M.fd=ovmf /usr/share/OVMF/OVMF_VARS_4M.fd=ovmf",
            ),
            (
                "aarch64",
                "arm64",
                "boot: qemu-system-aarch64=qemu-system-arm+bp>=10 \
                 /usr/share/AAVMF/AAVMF_CODE.fd=qemu-efi-aarch64 \
                 /usr/share/AAVMF/AAVMF_VARS.fd=qemu-efi-aarch64",
            ),
            (
                "rpi",
                "arm64",
                "boot: qemu-system-aarch64=qemu-system-arm+bp>=10 sfdisk=fdisk mtype=mtools \
                 mlabel=mtools mdir=mtools",
            ),
        ];
        assert_eq!(
            emulators.len(),
            Target::ALL.len(),
            "a target is not pinned here"
        );
        for (target, arch, emulator) in emulators {
            let foreign = arch != "amd64";
            let build: Vec<&str> = [image]
                .into_iter()
                .chain(foreign.then_some(arm64))
                .chain([package, emulator, boot_common])
                .collect();
            let tools = |purpose| render(&tools_on_host(target, arch, "amd64", purpose).unwrap());
            assert_eq!(tools(Purpose::Build), build, "{target}");
            assert_eq!(tools(Purpose::Boot), [emulator, boot_common], "{target}");
            assert_eq!(
                tools(Purpose::Probe),
                [emulator, boot_common, network],
                "{target}"
            );
        }
    }

    /// Each target's files name its tools: the machine file its emulator (the spawn audit
    /// checks the firmware and the cross linker), and the foreign-arch file of its architecture
    /// the qemu-user rule [`ensure_binfmt`] registers.
    #[test]
    fn every_target_file_names_its_tools() {
        for target in Target::ALL {
            let machine = Machine::read(&crate::project_root(), target.name()).unwrap();
            assert!(
                machine.host_tools.iter().any(|t| t.probe == machine.binary),
                "qemu/{target}.toml: `[[host_tools]]` does not list its `binary`"
            );
            let arch = crate::image::load_target(target).unwrap().debian_arch;
            if arch == "amd64" {
                continue;
            }
            let foreign = ForeignArch::load(&arch, "amd64").unwrap();
            let rule = format!("/usr/lib/binfmt.d/qemu-{}.conf", foreign.qemu_user);
            assert!(
                foreign.host_tools.iter().any(|t| t.probe == rule),
                "image/foreign-arch/{arch}.toml does not list {rule}"
            );
        }
        let unknown = ForeignArch::load("riscv64", "amd64").unwrap_err();
        assert!(
            format!("{unknown:#}").contains("add image/foreign-arch/riscv64.toml"),
            "{unknown:#}"
        );
    }

    #[test]
    fn tools_on_this_host_are_found() {
        assert!(locate("sh").is_some());
        assert!(locate("surely-not-a-real-program-xyz").is_none());
    }
}
