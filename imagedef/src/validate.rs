//! Validation of the typed definition: every rule a template or a stage relies on, checked
//! before anything is built, each error naming the key and what to write instead. Also the
//! value syntaxes the definition uses (sizes, octal modes, fail2ban durations).

use anyhow::{bail, ensure, Context, Result};

use crate::definition::{DiskLayout, ImageConfig, TargetConfig, GATEWAY_DEFAULT_PORTS};

pub(crate) fn validate_image(c: &ImageConfig) -> Result<()> {
    check_name("image.name", &c.image.name)?;
    check_hostname(&c.image.hostname)?;
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
    let initramfs = &c.debian.initramfs;
    ensure!(
        // tidy: allow (initramfs-tools' COMPRESS= values, not package names)
        ["gzip", "bzip2", "lz4", "lzma", "lzop", "xz", "zstd"]
            .contains(&initramfs.compress.as_str()),
        "key `debian.initramfs.compress`: `{}` is not one of initramfs-tools' compressors \
         (gzip, bzip2, lz4, lzma, lzop, xz, zstd)",
        initramfs.compress
    );
    check_packages(
        "debian.initramfs.package",
        std::slice::from_ref(&initramfs.package),
    )?;
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
                GATEWAY_DEFAULT_PORTS[0],
                GATEWAY_DEFAULT_PORTS[1],
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
        (1..=10).contains(&c.ssh.max_sessions),
        "key `ssh.max_sessions`: {} is outside 1..=10 (0 would refuse every shell and command)",
        c.ssh.max_sessions
    );
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
        c.fail2ban.maxretry > 0,
        "key `fail2ban.maxretry` must be at least 1"
    );
    ensure!(
        c.fail2ban.bantime_factor >= 1,
        "key `fail2ban.bantime_factor`: must be at least 1"
    );

    ensure!(
        !c.updates.origins.is_empty(),
        "key `updates.origins`: list at least the Debian-Security origin"
    );
    ensure!(
        (1..=9).contains(&c.boot.tries),
        "key `boot.tries`: {} is not between 1 and 9 (boots a new kernel gets before the one \
         before it boots again)",
        c.boot.tries
    );
    ensure!(
        c.boot.gateway_within_s >= 60,
        "key `boot.gateway_within_s`: {} s is too short for a first boot after a kernel update \
         (at least 60; a machine that misses it reboots)",
        c.boot.gateway_within_s
    );
    parse_size(&c.journald.system_max_use).context("key `journald.system_max_use`")?;
    let upload = &c.journald.upload_url;
    ensure!(
        upload.is_empty()
            || ((upload.starts_with("https://") || upload.starts_with("http://"))
                && !upload.contains(char::is_whitespace)),
        "key `journald.upload_url`: `{upload}` is not an http:// or https:// URL of a \
         systemd-journal-remote collector (e.g. https://logs.example.net:19532); leave it empty \
         to keep the journal on the machine only"
    );

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
                // tidy: allow (directories under /run that others own, not the package names)
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
    validate_package(c)?;
    validate_repository(c)?;
    validate_login_and_modules(c)
}

/// `[updates] repository_*`: both or neither, each of a shape apt takes.
fn validate_repository(c: &ImageConfig) -> Result<()> {
    let u = &c.updates;
    check_name("updates.repository_suite", &u.repository_suite)?;
    match (u.repository_url.is_empty(), u.repository_key.is_empty()) {
        (true, true) => Ok(()),
        (false, false) => check_url("updates.repository_url", &u.repository_url),
        (false, true) => bail!(
            "key `updates.repository_key`: `repository_url` names a repository, so name its \
             public certificate too (`KEY.asc` of `cargo xtask repo new-key KEY`); apt takes \
             nothing unsigned"
        ),
        (true, false) => bail!(
            "key `updates.repository_url`: `repository_key` is set but no repository is named; \
             set the URL the repository is served at, or empty both"
        ),
    }
}

/// `[package]`: what dpkg-deb and apt will take, checked before anything is built.
fn validate_package(c: &ImageConfig) -> Result<()> {
    let p = &c.package;
    check_packages("package.name", std::slice::from_ref(&p.name))?;
    ensure!(
        p.maintainer.contains('<') && p.maintainer.ends_with('>') && !p.maintainer.contains('\n'),
        "key `package.maintainer`: `{}` is not `Name <address>`",
        p.maintainer
    );
    ensure!(
        !p.summary.is_empty() && !p.summary.contains('\n'),
        "key `package.summary`: one line of text"
    );
    for (i, depends) in p.depends.iter().enumerate() {
        ensure!(
            !depends.is_empty() && !depends.contains([',', '\n']),
            "key `package.depends[{i}]`: `{depends}` is one dependency (`libc6 (>= 2.36)`), \
             one per list entry"
        );
    }
    ensure!(
        !p.files.is_empty(),
        "key `package.files`: list at least the gateway binary"
    );
    for (i, path) in p.files.iter().enumerate() {
        ensure!(
            path.starts_with('/') && !path.contains("..") && !path.ends_with('/'),
            "key `package.files[{i}]`: `{path}` must be an absolute image path of a file"
        );
        // dpkg would make a file under /etc a configuration file of the package, and an
        // upgrade that finds one changed stops to ask; unattended-upgrades then skips the
        // package for good. The gateway's units and helpers live under /usr instead.
        ensure!(
            !path.starts_with("/etc/"),
            "key `package.files[{i}]`: `{path}` is under /etc, where an administrator's change \
             would stop every unattended upgrade of the package; ship the file under /usr \
             (units in /usr/lib/systemd/system) or keep it in the image only"
        );
        ensure!(
            !p.files[..i].contains(path),
            "key `package.files[{i}]`: `{path}` is listed twice"
        );
    }
    Ok(())
}

/// `HH:MM` on a 24-hour clock, as (hours, minutes).
fn reboot_time(text: &str) -> Option<(u8, u8)> {
    let (h, m) = text.split_once(':')?;
    let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || !digits(m) {
        return None;
    }
    let (h, m) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((h, m))
}

/// `[updates]`' needrestart mode and reboot time, `[kernel_modules]` and `[login]`.
fn validate_login_and_modules(c: &ImageConfig) -> Result<()> {
    ensure!(
        ["a", "l", "i"].contains(&c.updates.needrestart_mode.as_str()),
        "key `updates.needrestart_mode`: `{}` is not one of a (restart), l (list), i (ask)",
        c.updates.needrestart_mode
    );
    ensure!(
        reboot_time(&c.updates.automatic_reboot_time).is_some(),
        "key `updates.automatic_reboot_time`: `{}` is not a time of day as HH:MM (24-hour, \
         e.g. \"04:00\"); unattended-upgrades hands it to `shutdown -r`",
        c.updates.automatic_reboot_time
    );
    for (i, module) in c.kernel_modules.blocked.iter().enumerate() {
        ensure!(
            !module.is_empty()
                && module.chars().all(|ch| ch.is_ascii_lowercase()
                    || ch.is_ascii_digit()
                    || ch == '-'
                    || ch == '_'),
            "key `kernel_modules.blocked[{i}]`: `{module}` is not a kernel module name (as \
             `modinfo` knows it, e.g. `usb-storage`)"
        );
    }
    ensure!(
        matches!(c.login.umask.len(), 3 | 4) && u32::from_str_radix(&c.login.umask, 8).is_ok(),
        "key `login.umask`: `{}` is not an octal umask such as `027`",
        c.login.umask
    );
    let session_umask = &c.users.service.session_umask;
    ensure!(
        matches!(session_umask.len(), 3 | 4) && u32::from_str_radix(session_umask, 8).is_ok(),
        "key `users.service.session_umask`: `{session_umask}` is not an octal umask such as `022`"
    );
    ensure!(
        ["YESCRYPT", "SHA512"].contains(&c.login.encrypt_method.as_str()),
        "key `login.encrypt_method`: `{}` is not YESCRYPT or SHA512 (the others are weak)",
        c.login.encrypt_method
    );
    ensure!(
        (1..=11).contains(&c.login.yescrypt_cost_factor),
        "key `login.yescrypt_cost_factor`: {} is outside login.defs' 1..=11",
        c.login.yescrypt_cost_factor
    );
    ensure!(
        !c.login.banner.trim().is_empty() && !c.login.banner.contains('\\'),
        "key `login.banner`: write some text, without backslashes (getty reads `\\s`, `\\r` \
         and the like in /etc/issue as the OS name and version, which a banner must not show)"
    );
    Ok(())
}

pub(crate) fn validate_target(t: &TargetConfig, requested: &str) -> Result<()> {
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

/// fail2ban's time abbreviations as the image uses them (`600`, `30s`, `10m`, `1h`, `1d`, `1w`),
/// in seconds; an error names `key`.
pub fn parse_duration(key: &str, text: &str) -> Result<u64> {
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
