//! The image definition's typed view: `image/clawfort.toml` and `image/targets/<target>.toml`
//! as the Rust machinery reads them.
//!
//! Two views of the same data are kept on purpose. The *document* (the merged TOML exactly as
//! written, [`crate::LoadedConfig::document`]) is the template context for `overlays/**.tera`,
//! so a content author can add a key and use it in a template at once. The *typed* structs
//! below are what the Rust machinery reads; their `deny_unknown_fields` turns a misspelt key
//! into an error that names it. They keep the sections and fields in the same order as
//! `image/clawfort.toml` so that adding a key to the file and its field here is one surgical
//! edit in each.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::{Format, Size};

/// The gateway program's own ports when `openclaw.json` names none (the OpenClaw defaults):
/// the firewall never opens them to the network, whatever `gateway.port` says, so a config
/// that drops its port keys cannot expose the gateway.
pub(crate) const GATEWAY_DEFAULT_PORTS: [u16; 2] = [18789, 18793];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    pub image: ImageSection,
    pub debian: DebianSection,
    pub users: UsersSection,
    pub gateway: GatewaySection,
    pub firewall: FirewallSection,
    pub ssh: SshSection,
    pub fail2ban: Fail2banSection,
    pub updates: UpdatesSection,
    pub boot: BootSection,
    pub journald: JournaldSection,
    pub sysctl: BTreeMap<String, toml::Value>,
    pub kernel_modules: KernelModulesSection,
    pub sandbox: SandboxSection,
    pub login: LoginSection,
    pub services: ServicesSection,
    pub package: PackageSection,
    /// Explicit modes for files and directories of the built image (`"/etc/sudoers.d/x" =
    /// "0440"`), because git only records the executable bit of an overlay file.
    #[serde(default)]
    pub file_modes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    pub name: String,
    pub hostname: String,
    /// Disk size (`4G`, `3584M`) or `auto` (root content plus margin).
    pub size: Size,
    pub timezone: String,
    pub locale: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSection {
    pub suite: String,
    pub mirror: String,
    pub security_mirror: String,
    pub components: Vec<String>,
    pub packages: Vec<String>,
    /// dpkg `path-exclude` globs, for the image and the sandbox alike.
    #[serde(default)]
    pub path_exclude: Vec<String>,
    /// dpkg `path-include` globs: exceptions inside `path_exclude`.
    #[serde(default)]
    pub path_include: Vec<String>,
    /// How the initramfs is compressed, and the package that makes it possible.
    pub initramfs: InitramfsSection,
}

/// `[debian.initramfs]`: initramfs-tools' compressor. The bootstrap writes `COMPRESS=` into
/// the image's initramfs-tools configuration and installs the package with the rest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitramfsSection {
    /// initramfs-tools' `COMPRESS=` value (`initramfs.conf(5)`).
    pub compress: String,
    /// The Debian package that provides that compressor.
    pub package: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersSection {
    pub admin: AdminUser,
    pub service: ServiceUser,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    pub name: String,
    pub groups: Vec<String>,
    pub shell: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceUser {
    pub name: String,
    pub shell: String,
    pub subid_start: u32,
    pub subid_count: u32,
    /// The umask pam_umask gives this user's PAM sessions (its systemd user instance, which
    /// runs rootless Docker), from the account's GECOS `umask=` field.
    pub session_umask: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    pub bind: String,
    pub port: u16,
    pub canvas_port: u16,
    /// The worst `systemd-analyze security` exposure the gateway's unit may have; its unit
    /// file states it and the boot-and-probe suite holds the running unit to it.
    pub exposure_budget: f64,
    pub egress: EgressSection,
}

/// How the appliance reaches out (`[gateway.egress]`): the egress proxy's socket, and the
/// TCP ports of the nftables output chain for the service user's uid.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSection {
    pub socket: String,
    pub tcp_ports: Vec<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallSection {
    pub extra_tcp_ports: Vec<u16>,
    pub extra_udp_ports: Vec<u16>,
    pub ssh_new_per_minute: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSection {
    pub port: u16,
    pub max_auth_tries: u32,
    #[allow(dead_code)] // read by templates; typed so a wrong type names the key
    pub password_authentication: bool,
    #[allow(dead_code)] // read by templates; typed so a wrong type names the key
    pub permit_root_login: bool,
    pub allow_tcp_forwarding: String,
    /// sshd `AllowGroups`: only members of these groups may log in.
    pub allow_groups: Vec<String>,
    /// Host key types made at first boot (`ssh-keygen -t`): `ed25519`, `rsa`, `ecdsa`.
    pub host_key_types: Vec<String>,
    pub kex_algorithms: Vec<String>,
    pub ciphers: Vec<String>,
    pub macs: Vec<String>,
    pub host_key_algorithms: Vec<String>,
    /// sshd `MaxSessions`: sessions one connection may carry at once (the suite needs 1).
    pub max_sessions: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fail2banSection {
    pub bantime: String,
    pub bantime_factor: u32,
    pub bantime_max: String,
    pub findtime: String,
    pub maxretry: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatesSection {
    pub origins: Vec<String>,
    /// unattended-upgrades reboots by itself when an update asks for it (a kernel, libc)...
    pub automatic_reboot: bool,
    /// ...at this time of day (`HH:MM`, the host's time zone): the maintenance window.
    pub automatic_reboot_time: String,
    /// needrestart's `$nrconf{restart}`: `a` (restart), `l` (list) or `i` (ask).
    pub needrestart_mode: String,
    /// An apt repository of gateway packages made by `cargo xtask repo`; empty: none.
    #[serde(default)]
    pub repository_url: String,
    /// Its suite (`cargo xtask repo build --suite`).
    pub repository_suite: String,
    /// Its public certificate (`KEY.asc` of `cargo xtask repo new-key`): absolute, or relative
    /// to the project root. Read by [`crate::render::repository_key`].
    #[serde(default)]
    pub repository_key: String,
}

/// Boot counting for kernels installed after the build (UEFI targets); read by the
/// `overlays.uefi` templates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSection {
    /// Boots a new kernel's entry gets to prove itself (`/etc/kernel/tries`).
    pub tries: u8,
    /// Seconds after boot within which the gateway must answer for the boot to count as good.
    pub gateway_within_s: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournaldSection {
    pub system_max_use: String,
    /// A remote collector (`systemd-journal-remote`) the journal is also sent to by
    /// `systemd-journal-upload`, `http://` or `https://` (mutual TLS); empty: none.
    #[serde(default)]
    pub upload_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelModulesSection {
    /// Modules that never load (`install <m> /bin/false` and `blacklist <m>`), less a target's
    /// `kept_modules`.
    pub blocked: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    pub image: String,
    pub packages: Vec<String>,
    /// Where the service user's rootless Docker listens (`<socket_dir>/docker.sock`).
    pub socket_dir: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSection {
    /// The login shells' umask, in octal (`027`).
    pub umask: String,
    /// login.defs `ENCRYPT_METHOD`.
    pub encrypt_method: String,
    /// login.defs `YESCRYPT_COST_FACTOR` (1..=11).
    pub yescrypt_cost_factor: u32,
    #[allow(dead_code)] // read by templates; typed so a wrong type names the key
    pub banner: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesSection {
    pub enable: Vec<String>,
    pub disable: Vec<String>,
    pub mask: Vec<String>,
}

/// The gateway as a Debian package: built from the customised root's files, installed there
/// by dpkg, and published beside the image for `cargo xtask repo`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSection {
    pub name: String,
    /// The control file's `Maintainer` (`Name <address>`).
    pub maintainer: String,
    /// The control file's one-line `Description`.
    pub summary: String,
    /// The control file's `Depends`, as written there (`libc6 (>= 2.36)`).
    pub depends: Vec<String>,
    /// Image paths taken out of the customised root into the package (and put back by dpkg).
    pub files: Vec<String>,
}

/// `image/targets/<name>.toml`: everything that differs between machines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    pub target: TargetConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    pub debian_arch: String,
    pub rust_triple: String,
    /// Packages this target adds to `debian.packages`: kernel, boot loader, firmware.
    pub packages: Vec<String>,
    /// The kernel command line without `root=` (the builder adds the root's PARTUUID).
    pub kernel_cmdline: String,
    /// Directories of extra file trees, relative to the repository, applied after `overlays/`
    /// with the same rules: files only this target needs (the Pi's raspi-firmware settings).
    #[serde(default)]
    pub overlays: Vec<PathBuf>,
    /// Modules of `kernel_modules.blocked` this target keeps loadable (what it boots from).
    #[serde(default)]
    pub kept_modules: Vec<String>,
    /// Disk size for this target when `--size` is not given; overrides `image.size`.
    #[serde(default)]
    pub size: Option<Size>,
    /// Artifacts written when `--format` is not given.
    pub formats: Vec<Format>,
    pub disk: DiskLayout,
}

/// How the disk is partitioned and booted: one variant, and one assemble function, per layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "layout", deny_unknown_fields)]
pub enum DiskLayout {
    /// GPT: EFI system partition with systemd-boot, a FAT `cidata` volume, ext4 root last.
    #[serde(rename = "gpt-efi")]
    GptEfi(GptEfiDisk),
    /// MBR: the FAT partition the Raspberry Pi's boot ROM reads, then the ext4 root.
    #[serde(rename = "rpi-mbr")]
    RpiMbr(RpiMbrDisk),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptEfiDisk {
    /// Name of the boot loader under `EFI/BOOT/` on the ESP (the firmware's fallback path).
    pub efi_binary: String,
    /// systemd-boot's EFI binary inside the root file system, copied to `EFI/BOOT/<efi_binary>`.
    pub systemd_boot_efi: String,
    pub esp_size: String,
    /// Size of the FAT volume labelled `cidata` where a person drops NoCloud seed files.
    pub cidata_size: String,
    /// GPT partition type GUID of the root partition (per architecture, from the
    /// Discoverable Partitions Specification).
    pub root_partition_type: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpiMbrDisk {
    /// Size of the FAT boot partition: firmware, device trees, kernel, initrd and the NoCloud
    /// seed files a person edits before first boot.
    pub boot_size: String,
}

impl DiskLayout {
    /// Where the FAT boot partition is mounted in the running system.
    pub fn boot_mount_point(&self) -> &'static str {
        match self {
            DiskLayout::GptEfi(_) => "/boot/efi",
            DiskLayout::RpiMbr(_) => "/boot/firmware",
        }
    }
}
