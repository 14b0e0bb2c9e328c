//! The image definition: `image/clawfort.toml` (plus `--set-config` overlay files merged over
//! it) and `image/targets/<target>.toml`, loaded into typed structs and validated.
//!
//! Two views of the same data are kept on purpose. The *document* (the merged TOML exactly as
//! written) is the template context for `overlays/**.tera`, so a content author can add a key and
//! use it in a template at once. The *typed* structs are what the Rust machinery reads; their
//! `deny_unknown_fields` turns a misspelt key into an error that names it. The structs below keep
//! the sections and fields in the same order as `image/clawfort.toml` so that adding a key to the
//! file and its field here is one surgical edit in each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::package::Format;

/// The gateway's fixed loopback ports: the firewall must never open them to the network.
const GATEWAY_PORTS_NEVER_OPEN: [u16; 2] = [18789, 18793];

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
    pub journald: JournaldSection,
    pub sysctl: BTreeMap<String, toml::Value>,
    pub sandbox: SandboxSection,
    pub services: ServicesSection,
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
    pub size: String,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fail2banSection {
    pub bantime: String,
    pub bantime_factor: u32,
    pub bantime_max: String,
    pub findtime: String,
    pub maxretry: u32,
    pub gateway_maxretry: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatesSection {
    pub origins: Vec<String>,
    #[allow(dead_code)] // read by templates; typed so a wrong type names the key
    pub automatic_reboot: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournaldSection {
    pub system_max_use: String,
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
pub struct ServicesSection {
    pub enable: Vec<String>,
    pub disable: Vec<String>,
    pub mask: Vec<String>,
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
    /// Disk size for this target when `--size` is not given; overrides `image.size`.
    #[serde(default)]
    pub size: Option<String>,
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

/// The image definition after merging and validation.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The merged image document exactly as written: the template context's top level.
    pub document: toml::Table,
    /// The target file's `[target]` table as written: the template context's `target`.
    pub target_document: toml::Table,
    pub image: ImageConfig,
    pub target: TargetConfig,
    /// Every file the definition was read from, in merge order (for messages and hashing).
    pub sources: Vec<PathBuf>,
}

impl LoadedConfig {
    /// Loads `base`, merges each overlay over it (tables merge key by key, everything else is
    /// replaced), loads `targets_dir/<target>.toml`, and validates the result.
    pub fn load(
        base: &Path,
        overlays: &[PathBuf],
        targets_dir: &Path,
        target: &str,
    ) -> Result<Self> {
        let mut document = read_toml(base)?;
        let mut sources = vec![base.to_path_buf()];
        for overlay in overlays {
            merge_tables(&mut document, read_toml(overlay)?);
            sources.push(overlay.clone());
        }
        let image: ImageConfig = typed(&document).with_context(|| {
            format!(
                "image definition {} is not valid",
                display_sources(&sources)
            )
        })?;
        validate_image(&image).with_context(|| {
            format!(
                "image definition {} is not valid",
                display_sources(&sources)
            )
        })?;

        let (target, target_document, target_path) = load_target_file(targets_dir, target)?;
        sources.push(target_path);
        Ok(Self {
            document,
            target_document,
            image: image_with_target_packages(image, &target),
            target,
            sources,
        })
    }
}

/// `targets_dir/<target>.toml` alone, validated: what a command needs to know about a target
/// without the image definition (which host tools it needs, for instance).
pub fn load_target(targets_dir: &Path, target: &str) -> Result<TargetConfig> {
    Ok(load_target_file(targets_dir, target)?.0)
}

/// The typed target, its `[target]` table as written, and the file's path.
fn load_target_file(
    targets_dir: &Path,
    target: &str,
) -> Result<(TargetConfig, toml::Table, PathBuf)> {
    let target_path = targets_dir.join(format!("{target}.toml"));
    ensure!(
        target_path.is_file(),
        "unknown target `{target}`: {} does not exist (known targets: {})",
        target_path.display(),
        known_targets(targets_dir).join(", ")
    );
    let target_whole = read_toml(&target_path)?;
    let target_file: TargetFile = typed(&target_whole)
        .with_context(|| format!("target file {} is not valid", target_path.display()))?;
    validate_target(&target_file.target, target)
        .with_context(|| format!("target file {} is not valid", target_path.display()))?;
    let target_document = match target_whole.get("target") {
        Some(toml::Value::Table(table)) => table.clone(),
        _ => unreachable!("TargetFile deserialised, so [target] is a table"),
    };
    Ok((target_file.target, target_document, target_path))
}

/// The target's packages (kernel, boot loader) belong to the bootstrap like the common ones;
/// the typed view carries them together so the bootstrap stage reads one list.
fn image_with_target_packages(mut image: ImageConfig, target: &TargetConfig) -> ImageConfig {
    for package in &target.packages {
        if !image.debian.packages.contains(package) {
            image.debian.packages.push(package.clone());
        }
    }
    image
}

fn display_sources(sources: &[PathBuf]) -> String {
    sources
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The names of the target files in `targets_dir`, sorted.
pub fn known_targets(targets_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(targets_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".toml").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

fn read_toml(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read image definition {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))
}

/// Deserialises with the failing key's dotted path in the error (`ssh.max_auth_tries: invalid
/// type ...`), which plain serde loses once the document has been merged.
fn typed<T: DeserializeOwned>(document: &toml::Table) -> Result<T> {
    let value = toml::Value::Table(document.clone());
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        anyhow::anyhow!("key `{path}`: {}", err.into_inner())
    })
}

/// Tables merge key by key (recursively); any other value in `overlay` replaces the base's, so
/// an overlay sets `ssh.password_authentication = true` without restating `[ssh]`.
pub fn merge_tables(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge_tables(base_table, overlay_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn validate_image(c: &ImageConfig) -> Result<()> {
    check_name("image.name", &c.image.name)?;
    check_hostname(&c.image.hostname)?;
    if c.image.size != "auto" {
        parse_size(&c.image.size).context("key `image.size`")?;
    }
    ensure!(
        !c.image.timezone.is_empty() && !c.image.timezone.contains(".."),
        "key `image.timezone`: `{}` is not a zoneinfo name such as `UTC` or `Europe/Berlin`",
        c.image.timezone
    );
    ensure!(
        !c.image.locale.is_empty(),
        "key `image.locale`: must not be empty (e.g. `C.UTF-8`)"
    );
    let builtin_locale = matches!(c.image.locale.as_str(), "C" | "C.UTF-8" | "POSIX");
    ensure!(
        builtin_locale
            || !c
                .debian
                .path_exclude
                .iter()
                .any(|glob| glob.starts_with("/usr/share/i18n")),
        "key `image.locale`: `{}` must be generated from /usr/share/i18n, which \
         `debian.path_exclude` keeps out of the image; remove that entry or use `C.UTF-8`",
        c.image.locale
    );

    check_name("debian.suite", &c.debian.suite)?;
    check_url("debian.mirror", &c.debian.mirror)?;
    check_url("debian.security_mirror", &c.debian.security_mirror)?;
    ensure!(
        !c.debian.components.is_empty(),
        "key `debian.components`: list at least `main`"
    );
    check_packages("debian.packages", &c.debian.packages)?;
    for (key, globs) in [
        ("debian.path_exclude", &c.debian.path_exclude),
        ("debian.path_include", &c.debian.path_include),
    ] {
        for (i, glob) in globs.iter().enumerate() {
            ensure!(
                glob.starts_with('/') && !glob.contains(char::is_whitespace),
                "key `{key}[{i}]`: `{glob}` must be an absolute path glob such as \
                 `/usr/share/doc/*`"
            );
        }
    }

    check_user_name("users.admin.name", &c.users.admin.name)?;
    check_user_name("users.service.name", &c.users.service.name)?;
    ensure!(
        c.users.admin.name != c.users.service.name,
        "keys `users.admin.name` and `users.service.name`: the administrator and the service \
         user must be different accounts"
    );
    for (i, group) in c.users.admin.groups.iter().enumerate() {
        check_user_name(&format!("users.admin.groups[{i}]"), group)?;
    }
    check_absolute("users.admin.shell", &c.users.admin.shell)?;
    check_absolute("users.service.shell", &c.users.service.shell)?;
    ensure!(
        c.users.service.subid_count >= 65536,
        "key `users.service.subid_count`: rootless Docker needs at least 65536 subordinate ids, \
         got {}",
        c.users.service.subid_count
    );
    ensure!(
        c.users.service.subid_start >= 65536,
        "key `users.service.subid_start`: {} overlaps ordinary user and group ids; use 100000 \
         or above",
        c.users.service.subid_start
    );
    c.users
        .service
        .subid_start
        .checked_add(c.users.service.subid_count)
        .context("keys `users.service.subid_start` + `subid_count` overflow a 32-bit id")?;

    ensure!(
        matches!(c.gateway.bind.as_str(), "127.0.0.1" | "::1" | "localhost"),
        "key `gateway.bind`: `{}` is not a loopback address; the appliance's gateway is reached \
         through an SSH tunnel only (use 127.0.0.1)",
        c.gateway.bind
    );
    ensure!(
        c.gateway.port != c.gateway.canvas_port,
        "keys `gateway.port` and `gateway.canvas_port` must differ"
    );
    ensure!(
        (0.0..=10.0).contains(&c.gateway.exposure_budget),
        "key `gateway.exposure_budget`: {} is not an exposure level; `systemd-analyze \
         security` rates from 0.0 (best) to 10.0",
        c.gateway.exposure_budget
    );

    // The path lands in ListenStream= and CLAWFORT_EGRESS_PROXY: no `%` (a systemd
    // specifier), no space, nothing to quote.
    let socket = &c.gateway.egress.socket;
    ensure!(
        socket.starts_with('/')
            && socket.len() < 108
            && socket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b)),
        "key `gateway.egress.socket`: `{socket}` must be an absolute path (shorter than 108 \
         bytes) of letters, digits and `/._-`, e.g. /run/clawfort-egress/egress.sock"
    );
    for (i, port) in c.gateway.egress.tcp_ports.iter().enumerate() {
        ensure!(
            *port != 0,
            "key `gateway.egress.tcp_ports[{i}]`: port 0 is not a port"
        );
    }

    for (key, ports) in [
        ("firewall.extra_tcp_ports", &c.firewall.extra_tcp_ports),
        ("firewall.extra_udp_ports", &c.firewall.extra_udp_ports),
    ] {
        for (i, port) in ports.iter().enumerate() {
            ensure!(*port != 0, "key `{key}[{i}]`: port 0 is not a port");
            let gateway_ports = [
                GATEWAY_PORTS_NEVER_OPEN[0],
                GATEWAY_PORTS_NEVER_OPEN[1],
                c.gateway.port,
                c.gateway.canvas_port,
            ];
            ensure!(
                !gateway_ports.contains(port),
                "key `{key}[{i}]`: port {port} is a gateway port and is never opened to the \
                 network; reach the gateway through an SSH tunnel"
            );
        }
    }
    ensure!(
        c.firewall.ssh_new_per_minute > 0,
        "key `firewall.ssh_new_per_minute`: 0 would lock everyone out of SSH"
    );

    ensure!(c.ssh.port != 0, "key `ssh.port`: port 0 is not a port");
    ensure!(
        (1..=10).contains(&c.ssh.max_auth_tries),
        "key `ssh.max_auth_tries`: {} is outside 1..=10",
        c.ssh.max_auth_tries
    );
    ensure!(
        matches!(
            c.ssh.allow_tcp_forwarding.as_str(),
            "yes" | "no" | "local" | "remote" | "all"
        ),
        "key `ssh.allow_tcp_forwarding`: `{}` is not one of yes, no, local, remote, all",
        c.ssh.allow_tcp_forwarding
    );
    ensure!(
        !c.ssh.allow_groups.is_empty(),
        "key `ssh.allow_groups`: empty would let no one log in; list the admin's group (`sudo`)"
    );
    for (i, group) in c.ssh.allow_groups.iter().enumerate() {
        check_user_name(&format!("ssh.allow_groups[{i}]"), group)?;
    }
    ensure!(
        !c.ssh.host_key_types.is_empty(),
        "key `ssh.host_key_types`: list at least `ed25519`"
    );
    for (i, key_type) in c.ssh.host_key_types.iter().enumerate() {
        ensure!(
            matches!(key_type.as_str(), "ed25519" | "rsa" | "ecdsa"),
            "key `ssh.host_key_types[{i}]`: `{key_type}` is not one of ed25519, rsa, ecdsa"
        );
    }
    for (key, list) in [
        ("ssh.kex_algorithms", &c.ssh.kex_algorithms),
        ("ssh.ciphers", &c.ssh.ciphers),
        ("ssh.macs", &c.ssh.macs),
        ("ssh.host_key_algorithms", &c.ssh.host_key_algorithms),
    ] {
        ensure!(!list.is_empty(), "key `{key}`: must list at least one");
        for (i, item) in list.iter().enumerate() {
            ensure!(
                !item.is_empty() && !item.contains([',', ' ']),
                "key `{key}[{i}]`: `{item}` must be a single algorithm name"
            );
        }
    }

    parse_duration("fail2ban.bantime", &c.fail2ban.bantime)?;
    parse_duration("fail2ban.bantime_max", &c.fail2ban.bantime_max)?;
    parse_duration("fail2ban.findtime", &c.fail2ban.findtime)?;
    ensure!(
        c.fail2ban.maxretry > 0 && c.fail2ban.gateway_maxretry > 0,
        "keys `fail2ban.maxretry` and `fail2ban.gateway_maxretry` must be at least 1"
    );
    ensure!(
        c.fail2ban.bantime_factor >= 1,
        "key `fail2ban.bantime_factor`: must be at least 1"
    );

    ensure!(
        !c.updates.origins.is_empty(),
        "key `updates.origins`: list at least the Debian-Security origin"
    );
    parse_size(&c.journald.system_max_use).context("key `journald.system_max_use`")?;

    for (key, value) in &c.sysctl {
        ensure!(
            !key.is_empty() && key.split('.').all(|part| !part.is_empty()),
            "key `sysctl.\"{key}\"`: not a sysctl name"
        );
        ensure!(
            matches!(value, toml::Value::Integer(_) | toml::Value::String(_)),
            "key `sysctl.\"{key}\"`: value must be an integer or a string, got {}",
            value.type_str()
        );
    }

    ensure!(
        !c.sandbox.image.is_empty() && !c.sandbox.image.contains(char::is_whitespace),
        "key `sandbox.image`: `{}` is not a Docker image reference such as \
         `clawfort-sandbox:latest`",
        c.sandbox.image
    );
    check_packages("sandbox.packages", &c.sandbox.packages)?;
    // The directory lands in a tmpfiles.d line, dockerd's --host= and the gateway's
    // DOCKER_HOST: a directory of its own under /run (tmpfiles makes it at boot, before the
    // user's runtime directory exists, which the gateway's unit hides anyway), nothing to
    // quote, and room for `/docker.sock` within a Unix socket path's 108 bytes.
    let dir = &c.sandbox.socket_dir;
    ensure!(
        dir.strip_prefix("/run/")
            .is_some_and(|name| !name.is_empty()
                && !name.contains('/')
                && !name.starts_with('.')
                && !["user", "docker", "containerd", "systemd"].contains(&name))
            && dir.len() + "/docker.sock".len() < 108
            && dir
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b)),
        "key `sandbox.socket_dir`: `{dir}` must be a directory of its own directly under /run \
         (letters, digits and `._-`; not /run/user, docker, containerd or systemd), e.g. \
         /run/clawfort-sandbox"
    );

    for (key, units) in [
        ("services.enable", &c.services.enable),
        ("services.disable", &c.services.disable),
        ("services.mask", &c.services.mask),
    ] {
        for (i, unit) in units.iter().enumerate() {
            check_unit_name(&format!("{key}[{i}]"), unit)?;
        }
    }
    for unit in &c.services.enable {
        ensure!(
            !c.services.mask.contains(unit) && !c.services.disable.contains(unit),
            "key `services.enable`: `{unit}` is also listed under `services.mask` or \
             `services.disable`; keep it in one list"
        );
    }

    for (path, mode) in &c.file_modes {
        ensure!(
            path.starts_with('/') && !path.contains(".."),
            "key `file_modes.\"{path}\"`: must be an absolute image path without `..`"
        );
        parse_mode(mode).with_context(|| format!("key `file_modes.\"{path}\"`"))?;
    }
    Ok(())
}

fn validate_target(t: &TargetConfig, requested: &str) -> Result<()> {
    ensure!(
        t.name == requested,
        "key `target.name`: `{}` does not match the file name `{requested}.toml`",
        t.name
    );
    check_name("target.debian_arch", &t.debian_arch)?;
    ensure!(
        t.rust_triple.split('-').count() >= 3,
        "key `target.rust_triple`: `{}` is not a Rust target triple such as \
         `x86_64-unknown-linux-gnu`",
        t.rust_triple
    );
    check_packages("target.packages", &t.packages)?;
    ensure!(
        !t.formats.is_empty(),
        "key `target.formats`: list at least one artifact format (e.g. [\"raw\", \"qcow2\"])"
    );
    if let Some(size) = &t.size {
        if size != "auto" {
            parse_size(size).context("key `target.size`")?;
        }
    }
    for (i, dir) in t.overlays.iter().enumerate() {
        ensure!(
            dir.is_relative()
                && !dir
                    .components()
                    .any(|c| c == std::path::Component::ParentDir),
            "key `target.overlays[{i}]`: `{}` must be a directory inside the repository, \
             relative to it (e.g. `overlays.rpi`)",
            dir.display()
        );
    }
    match &t.disk {
        DiskLayout::GptEfi(disk) => {
            ensure!(
                disk.efi_binary.ends_with(".EFI") && !disk.efi_binary.contains('/'),
                "key `target.disk.efi_binary`: `{}` must be a file name like `BOOTX64.EFI`",
                disk.efi_binary
            );
            check_absolute("target.disk.systemd_boot_efi", &disk.systemd_boot_efi)?;
            check_min_size("target.disk.esp_size", &disk.esp_size, 64, "FAT32")?;
            check_min_size(
                "target.disk.cidata_size",
                &disk.cidata_size,
                2,
                "a FAT volume",
            )?;
        }
        DiskLayout::RpiMbr(disk) => {
            check_min_size("target.disk.boot_size", &disk.boot_size, 64, "FAT32")?;
        }
    }
    ensure!(
        !t.kernel_cmdline.contains("root="),
        "key `target.kernel_cmdline`: leave out `root=`; the builder adds the root partition's \
         PARTUUID itself"
    );
    Ok(())
}

fn check_min_size(key: &str, text: &str, min_mib: u64, what: &str) -> Result<()> {
    let bytes = parse_size(text).with_context(|| format!("key `{key}`"))?;
    ensure!(
        bytes >= min_mib << 20,
        "key `{key}`: {what} needs at least {min_mib}M, got {text}"
    );
    Ok(())
}

fn check_name(key: &str, value: &str) -> Result<()> {
    ensure!(
        !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
        "key `{key}`: `{value}` may contain only letters, digits, `-`, `_` and `.`"
    );
    Ok(())
}

fn check_hostname(value: &str) -> Result<()> {
    ensure!(
        !value.is_empty()
            && value.len() <= 63
            && !value.starts_with('-')
            && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "key `image.hostname`: `{value}` is not a host name (letters, digits and `-`, at most \
         63 characters)"
    );
    Ok(())
}

fn check_user_name(key: &str, value: &str) -> Result<()> {
    ensure!(
        !value.is_empty()
            && value.len() <= 32
            && value.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')),
        "key `{key}`: `{value}` is not a valid user or group name (lower-case letters, digits, \
         `-`, `_`; starting with a letter)"
    );
    Ok(())
}

fn check_absolute(key: &str, value: &str) -> Result<()> {
    ensure!(
        value.starts_with('/') && !value.contains(".."),
        "key `{key}`: `{value}` must be an absolute path"
    );
    Ok(())
}

fn check_url(key: &str, value: &str) -> Result<()> {
    ensure!(
        (value.starts_with("http://") || value.starts_with("https://"))
            && !value.contains(char::is_whitespace),
        "key `{key}`: `{value}` is not an http(s) URL"
    );
    Ok(())
}

fn check_packages(key: &str, packages: &[String]) -> Result<()> {
    ensure!(
        !packages.is_empty(),
        "key `{key}`: list at least one package"
    );
    for (i, package) in packages.iter().enumerate() {
        // Debian policy 5.6.1: lower case, digits, + - . ; at least two characters.
        ensure!(
            package.len() >= 2
                && package.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && package.chars().all(|c| c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, '+' | '-' | '.')),
            "key `{key}[{i}]`: `{package}` is not a Debian package name"
        );
    }
    Ok(())
}

fn check_unit_name(key: &str, unit: &str) -> Result<()> {
    const SUFFIXES: [&str; 8] = [
        ".service",
        ".socket",
        ".timer",
        ".target",
        ".mount",
        ".path",
        ".slice",
        ".automount",
    ];
    ensure!(
        SUFFIXES.iter().any(|suffix| unit.ends_with(suffix)) && !unit.contains('/'),
        "key `{key}`: `{unit}` is not a systemd unit name (e.g. `ssh.service`, `apt-daily.timer`)"
    );
    Ok(())
}

/// Parses `4G`, `256M`, `512K` or a plain byte count (binary units, as `truncate` and
/// `qemu-img` read them).
pub fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let number: u64 = digits
        .parse()
        .with_context(|| format!("`{text}` is not a size such as `4G` or `256M`"))?;
    let shift = match unit.trim_end_matches(['B', 'b', 'i']) {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => bail!("`{text}`: unknown unit `{unit}` (use K, M, G or T)"),
    };
    number
        .checked_mul(1 << shift)
        .with_context(|| format!("`{text}` is too large"))
}

/// fail2ban's time abbreviations as the image uses them: `600`, `30s`, `10m`, `1h`, `1d`, `1w`.
fn parse_duration(key: &str, text: &str) -> Result<u64> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let seconds_per_unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 604800,
        _ => bail!("key `{key}`: `{text}` is not a duration such as `30s`, `10m`, `1h`, `1w`"),
    };
    let number: u64 = digits.parse().with_context(|| {
        format!("key `{key}`: `{text}` is not a duration such as `30s`, `10m`, `1h`, `1w`")
    })?;
    ensure!(number > 0, "key `{key}`: must be longer than zero");
    Ok(number * seconds_per_unit)
}

/// An octal file mode such as `0600` or `755`.
pub fn parse_mode(text: &str) -> Result<u32> {
    let mode = u32::from_str_radix(text, 8)
        .with_context(|| format!("`{text}` is not an octal mode such as `0600`"))?;
    ensure!(mode <= 0o7777, "`{text}` is not a file mode");
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    fn load_with(overlay: &str) -> Result<LoadedConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overlay.toml");
        std::fs::write(&path, overlay).unwrap();
        LoadedConfig::load(
            &repo().join("image/clawfort.toml"),
            &[path],
            &repo().join("image/targets"),
            "x86_64",
        )
    }

    #[test]
    fn the_shipped_definition_loads_for_x86_64() {
        let config = load_with("").unwrap();
        assert_eq!(config.target.debian_arch, "amd64");
        assert_eq!(config.image.users.admin.name, "admin");
        assert!(config
            .image
            .debian
            .packages
            .contains(&"linux-image-cloud-amd64".to_owned()));
        assert_eq!(
            config.document["ssh"]["max_auth_tries"].as_integer(),
            Some(3)
        );
    }

    #[test]
    fn every_shipped_target_loads_with_its_layout() {
        for (target, arch, is_pi) in [
            ("x86_64", "amd64", false),
            ("aarch64", "arm64", false),
            ("rpi", "arm64", true),
        ] {
            let config = LoadedConfig::load(
                &repo().join("image/clawfort.toml"),
                &[],
                &repo().join("image/targets"),
                target,
            )
            .unwrap_or_else(|err| panic!("{target}: {err:#}"));
            assert_eq!(config.target.debian_arch, arch);
            assert_eq!(
                matches!(config.target.disk, DiskLayout::RpiMbr(_)),
                is_pi,
                "{target}"
            );
            for dir in &config.target.overlays {
                assert!(repo().join(dir).is_dir(), "{target}: {}", dir.display());
            }
        }
    }

    #[test]
    fn a_target_with_a_misspelt_disk_key_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(repo().join("image/targets/rpi.toml"))
            .unwrap()
            .replace("boot_size", "boot_sise");
        std::fs::write(dir.path().join("rpi.toml"), text).unwrap();
        let err = LoadedConfig::load(&repo().join("image/clawfort.toml"), &[], dir.path(), "rpi")
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("boot_sise"), "{message}");
        assert!(message.contains("target.disk"), "{message}");
    }

    #[test]
    fn an_overlay_changes_one_key_and_keeps_its_neighbours() {
        let config =
            load_with("[ssh]\npassword_authentication = true\n[fail2ban]\nbantime = \"30s\"\n")
                .unwrap();
        assert!(config.image.ssh.password_authentication);
        assert_eq!(config.image.ssh.max_auth_tries, 3);
        assert_eq!(config.image.fail2ban.bantime, "30s");
        assert_eq!(config.document["fail2ban"]["bantime"].as_str(), Some("30s"));
    }

    #[test]
    fn a_sandbox_socket_dir_outside_its_own_run_directory_names_the_key() {
        for dir in [
            "/run/user",
            "/run/user/1000",
            "/tmp/sandbox",
            "/run/",
            "/run/a b",
            "/run/%t",
        ] {
            let err = load_with(&format!("[sandbox]\nsocket_dir = \"{dir}\"\n")).unwrap_err();
            assert!(
                format!("{err:#}").contains("sandbox.socket_dir"),
                "{dir}: {err:#}"
            );
        }
        load_with("[sandbox]\nsocket_dir = \"/run/my-sandbox\"\n").unwrap();
    }

    #[test]
    fn an_egress_port_0_names_the_key() {
        let err = load_with("[gateway.egress]\ntcp_ports = [443, 0]\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("gateway.egress.tcp_ports[1]"),
            "{err:#}"
        );
    }

    #[test]
    fn an_egress_socket_that_systemd_would_misread_names_the_key() {
        for bad in ["run/egress.sock", "/run/egress %i.sock", "/run/a b.sock"] {
            let err = load_with(&format!("[gateway.egress]\nsocket = \"{bad}\"\n")).unwrap_err();
            assert!(
                format!("{err:#}").contains("gateway.egress.socket"),
                "{bad}: {err:#}"
            );
        }
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let err = load_with("[ssh]\nmax_auth_tries = \"three\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("ssh.max_auth_tries"), "{err:#}");
    }

    #[test]
    fn a_misspelt_key_is_refused_with_its_name() {
        let err = load_with("[ssh]\nmax_auth_trys = 3\n").unwrap_err();
        assert!(format!("{err:#}").contains("max_auth_trys"), "{err:#}");
    }

    #[test]
    fn opening_a_gateway_port_is_refused() {
        let err = load_with("[firewall]\nextra_tcp_ports = [443, 18789]\n").unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("firewall.extra_tcp_ports[1]"), "{message}");
    }

    #[test]
    fn a_locale_without_its_sources_is_refused() {
        let err = load_with("[image]\nlocale = \"de_DE.UTF-8\"\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("debian.path_exclude"),
            "{err:#}"
        );
    }

    #[test]
    fn a_public_gateway_bind_is_refused() {
        let err = load_with("[gateway]\nbind = \"0.0.0.0\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("gateway.bind"), "{err:#}");
    }

    #[test]
    fn an_unknown_target_lists_the_known_ones() {
        let err = LoadedConfig::load(
            &repo().join("image/clawfort.toml"),
            &[],
            &repo().join("image/targets"),
            "sparc",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("x86_64"), "{err:#}");
    }

    #[test]
    fn sizes_modes_and_durations_parse() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1536MiB").unwrap(), 1536 << 20);
        assert!(parse_size("4X").is_err());
        assert_eq!(parse_mode("0600").unwrap(), 0o600);
        assert!(parse_mode("0800").is_err());
        assert_eq!(parse_duration("k", "1w").unwrap(), 604800);
        assert!(parse_duration("k", "1 hour").is_err());
    }
}
