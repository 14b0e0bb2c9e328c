//! Stage `customise`: turns the bootstrap into the appliance. It copies the bootstrap root file
//! system into the work directory and then, in this order (later steps may override earlier):
//! 1. machine settings from `[image]`: host name, hosts, time zone, locale, fstab;
//! 2. the users from `[users]`;
//! 3. `overlays/`, then the target's `overlays` (templates rendered with the image config; see
//!    `overlays.rs` for the rules);
//! 4. `[file_modes]`, then `pam-auth-update` for the PAM profiles the overlays added;
//! 5. the gateway binary, then the gateway package (`deb.rs`: the files `[package]` names,
//!    packed and installed back with dpkg), and the sandbox image loaded into the service user's rootless Docker
//!    store (`sandbox_store.rs`);
//! 6. `[services]`: enable, disable, mask (with the image's own systemctl, offline);
//! 7. the administrator's authorized_keys, only when `--authorized-key` was given.

mod deb;
mod overlays;
mod sandbox_store;
pub mod users;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clawfort_imagedef::render::{template_context, BuildValues};
use clawfort_imagedef::{DiskLayout, LoadedConfig};
use xshell::{cmd, Shell};

use super::bootstrap::Bootstrapped;
use super::cache::Fingerprint;
use super::disk_ids::DiskIds;
use super::progress::StageProgress;
use super::sandbox::SandboxTar;
use super::stage::{Runner, Stage};
use super::{gateway, Profile};

/// What customise reads besides the profile: the earlier stages' outputs.
pub struct Inputs<'a> {
    pub profile: &'a Profile,
    pub bootstrap: &'a Bootstrapped,
    pub sandbox: &'a SandboxTar,
    pub gateway_binary: &'a Path,
}

pub struct Customised {
    pub rootfs: PathBuf,
    /// Files for the FAT boot partition that packages put under the boot mount point
    /// (raspi-firmware's /boot/firmware), moved out of the root so they are not stored twice.
    pub boot_files: PathBuf,
    /// The gateway package the root's dpkg installed (`<name>_<version>_<arch>.deb`).
    pub deb: PathBuf,
    pub key: String,
}

/// The stage's key: every input except the disk ids, which derive from it (the caller names
/// it the pre-customise key), so it is worked out before the stage runs.
pub fn key(inputs: &Inputs<'_>, builder: &str) -> Result<String> {
    let profile = inputs.profile;
    let mut fingerprint = Fingerprint::new("customise");
    fingerprint
        .add("builder", builder)
        .add("bootstrap", &inputs.bootstrap.key)
        .add("sandbox", &inputs.sandbox.key)
        .add("config", toml::to_string(&profile.definition.document)?)
        .add(
            "target",
            toml::to_string(&profile.definition.target_document)?,
        )
        .add("build-version", &profile.version)
        .add("source-date-epoch", profile.source_date_epoch.to_string())
        .add("authorized-keys", profile.authorized_keys.join("\n"))
        .add("repository-key", &profile.repository_key);
    fingerprint.add_file("gateway", inputs.gateway_binary)?;
    fingerprint.add_tree("package-scripts", &profile.layout.repo.join(deb::SCRIPTS))?;
    for overlay in &profile.overlays {
        fingerprint.add_tree("overlays", overlay)?;
    }
    Ok(fingerprint.finish())
}

pub fn run(
    runner: &mut Runner,
    inputs: &Inputs<'_>,
    key: &str,
    disk_ids: &DiskIds,
) -> Result<Customised> {
    let profile = inputs.profile;
    let dir = profile.layout.stage_dir("customise");
    let rootfs = dir.join("rootfs");
    let boot_files = dir.join("boot-partition");
    let deb = dir.join(package_spec(profile).file_name());
    let stage =
        Stage::new("customise", dir, key.to_owned()).ready(|dir| dir.join("rootfs").is_dir());
    runner.cached(stage, |stage, _| {
        customise(stage, inputs, disk_ids, &rootfs, &boot_files)
    })?;
    Ok(Customised {
        rootfs,
        boot_files,
        deb,
        key: key.to_owned(),
    })
}

fn package_spec(profile: &Profile) -> deb::Spec<'_> {
    deb::Spec {
        config: &profile.definition,
        version: &profile.version,
        scripts: profile.layout.repo.join(deb::SCRIPTS),
        source_date_epoch: profile.source_date_epoch,
    }
}

fn customise(
    stage: &mut StageProgress,
    inputs: &Inputs<'_>,
    disk_ids: &DiskIds,
    rootfs: &Path,
    boot_files: &Path,
) -> Result<()> {
    let sh = Shell::new()?;
    stage.step("copying the bootstrap root file system");
    let from = &inputs.bootstrap.rootfs;
    stage.run(cmd!(sh, "cp -a --reflink=auto {from} {rootfs}"))?;

    let profile = inputs.profile;
    let config = &profile.definition;
    stage.step("host name, time zone, locale, fstab");
    machine_settings(rootfs, config, disk_ids)?;

    stage.step("users");
    let accounts = users::create(stage, rootfs, &config.image.users)?;

    let build = BuildValues {
        version: profile.version.clone(),
        authorized_keys: profile.authorized_keys.clone(),
        root_partuuid: disk_ids.root_partuuid.clone(),
        boot_partuuid: disk_ids.boot_partuuid.clone(),
        root_fs_uuid: disk_ids.root_fs_uuid.clone(),
        gateway_binary: gateway::IMAGE_PATH.to_owned(),
        repository_key: profile.repository_key.clone(),
    };
    let context = template_context(config, &build)?;
    for overlay in &profile.overlays {
        stage.step(format!("overlays from {}", overlay.display()));
        let written = overlays::apply(overlay, rootfs, &context, &accounts)?;
        stage.step(format!("{} overlay files installed", written.len()));
    }
    overlays::apply_file_modes(rootfs, &config.image.file_modes)?;
    // A PAM profile the overlays put in /usr/share/pam-configs (clawfort-umask) takes effect
    // through Debian's pam-auth-update, which writes /etc/pam.d/common-* and records their
    // hashes, so later upgrades of PAM packages keep managing those files.
    stage.step("PAM profiles (pam-auth-update)");
    stage.run(cmd!(
        sh,
        "chroot {rootfs} env DEBIAN_FRONTEND=noninteractive pam-auth-update --package"
    ))?;

    apparmor_profiles_compile(stage, &sh, rootfs)?;

    stage.step("gateway binary");
    install_file(rootfs, inputs.gateway_binary, gateway::IMAGE_PATH, 0o755)?;
    let stage_dir = rootfs.parent().expect("the root is in the stage directory");
    deb::build_and_install(stage, &sh, rootfs, &package_spec(profile), stage_dir)?;
    sandbox_store::load(stage, &sh, rootfs, &inputs.sandbox.tar, config, &accounts)?;

    // apt downloads as its unprivileged `_apt` user into these directories, which it owns on
    // an installed Debian system; in a bootstrapped root they are root's, and apt then fetches
    // every package (security updates, the gateway's) as root, with a warning.
    stage.step("apt's download directories owned by _apt");
    stage.run(cmd!(
        sh,
        "chroot {rootfs} chown _apt:root /var/cache/apt/archives/partial /var/lib/apt/lists/partial"
    ))?;

    stage.step("services");
    services(stage, &sh, rootfs, config)?;

    users::install_authorized_keys(
        rootfs,
        &accounts,
        &config.image.users.admin.name,
        &profile.authorized_keys,
    )?;
    if let DiskLayout::GptEfi(_) = &config.target.disk {
        stage.step("the kernel's boot entry (kernel-install, as a later kernel gets its own)");
        let version = kernel_version(rootfs)?;
        std::fs::create_dir_all(boot_files)?;
        stage.run(cmd!(
            sh,
            "unshare --mount --propagation private sh -c {KERNEL_INSTALL_SCRIPT} sh {rootfs} {version} {boot_files}"
        ))?;
    }
    move_boot_files(rootfs, config.target.disk.boot_mount_point(), boot_files)
}

/// Runs the image's own kernel-install for its kernel, as Debian's kernel hooks will for every
/// later one, and copies what it wrote on the ESP to `$3` (the assemble stage puts it on the
/// FAT partition). The ESP is a tmpfs on /boot/efi here, in a mount namespace that ends with
/// the shell: kernel-install and its loader-entry plugin find the boot partition's root by its
/// mount, and write paths relative to it. `KERNEL_INSTALL_CONF_ROOT` holds the image's
/// install.conf, cmdline and entry-token but not `tries`: the build's kernel is the one the
/// suite probes, so its entry boots without counting; later ones count (`[boot] tries`).
/// `SYSTEMD_RELAX_ESP_CHECKS`: a tmpfs is not a FAT partition with the ESP's GPT type.
const KERNEL_INSTALL_SCRIPT: &str = r#"set -eu
root=$1 version=$2 out=$3
mount -t tmpfs -o mode=0755 esp "$root/boot/efi"
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=0755 run "$root/run"
mkdir "$root/run/kernel-conf"
cp "$root/etc/kernel/install.conf" "$root/etc/kernel/cmdline" "$root/etc/kernel/entry-token" "$root/run/kernel-conf/"
SYSTEMD_RELAX_ESP_CHECKS=1 KERNEL_INSTALL_CONF_ROOT=/run/kernel-conf chroot "$root" kernel-install add "$version" "/boot/vmlinuz-$version" "/boot/initrd.img-$version"
cp -R "$root/boot/efi/." "$out"
"#;

/// The version of the one kernel in the image's /boot.
fn kernel_version(rootfs: &Path) -> Result<String> {
    let boot = rootfs.join("boot");
    let mut versions: Vec<String> = std::fs::read_dir(&boot)
        .with_context(|| format!("cannot list {}", boot.display()))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("vmlinuz-")
                .map(str::to_owned)
        })
        .collect();
    versions.sort();
    let [version] = &versions[..] else {
        bail!(
            "expected exactly one kernel in /boot of the image, found {versions:?}; check the \
             kernel package in `target.packages`"
        );
    };
    let initrd = boot.join(format!("initrd.img-{version}"));
    ensure!(
        initrd.is_file(),
        "{} is missing: is `initramfs-tools` in `target.packages`?",
        initrd.display()
    );
    for file in ["install.conf", "cmdline", "entry-token"] {
        ensure!(
            rootfs.join("etc/kernel").join(file).is_file(),
            "/etc/kernel/{file} is not in the image: a UEFI target lists `overlays.uefi` in \
             `target.overlays`"
        );
    }
    Ok(version.clone())
}

fn machine_settings(rootfs: &Path, config: &LoadedConfig, ids: &DiskIds) -> Result<()> {
    let image = &config.image.image;
    let hostname = &image.hostname;
    // mmdebstrap copies the build host's name and hosts file; the image gets its own.
    std::fs::write(rootfs.join("etc/hostname"), format!("{hostname}\n"))?;
    std::fs::set_permissions(
        rootfs.join("etc/hostname"),
        PermissionsExt::from_mode(0o644),
    )?;
    std::fs::write(
        rootfs.join("etc/hosts"),
        format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        ),
    )?;

    let localtime = rootfs.join("etc/localtime");
    let zone = format!("usr/share/zoneinfo/{}", image.timezone);
    if localtime.symlink_metadata().is_ok() {
        std::fs::remove_file(&localtime)?;
    }
    if rootfs.join(&zone).exists() {
        std::os::unix::fs::symlink(format!("../{zone}"), &localtime)?;
        std::fs::write(rootfs.join("etc/timezone"), format!("{}\n", image.timezone))?;
    } else {
        // Without /etc/localtime the system runs on UTC, so UTC needs no tzdata.
        ensure!(
            matches!(image.timezone.as_str(), "UTC" | "Etc/UTC"),
            "key `image.timezone`: `{}` needs the `tzdata` package; add it to `debian.packages`",
            image.timezone
        );
    }
    std::fs::write(
        rootfs.join("etc/default/locale"),
        format!("LANG={}\n", image.locale),
    )?;

    let boot_mount = config.target.disk.boot_mount_point();
    std::fs::write(
        rootfs.join("etc/fstab"),
        format!(
            "# Written by `cargo xtask image`. The ids are fixed per build; first boot grows the\n\
             # root partition and file system to the disk.\n\
             PARTUUID={root}\t/\text4\trw,discard,errors=remount-ro\t0\t1\n\
             PARTUUID={boot}\t{boot_mount}\tvfat\tumask=0077,nofail\t0\t2\n",
            root = ids.root_partuuid,
            boot = ids.boot_partuuid,
        ),
    )?;
    std::fs::create_dir_all(rootfs.join(boot_mount.trim_start_matches('/')))?;
    Ok(())
}

/// Moves what packages installed under the boot partition's mount point (raspi-firmware's
/// firmware, kernel, initrd and device trees) to `to`, for the assemble stage to put on the
/// FAT partition, and leaves the mount point empty.
fn move_boot_files(rootfs: &Path, boot_mount: &str, to: &Path) -> Result<()> {
    let mount_point = rootfs.join(boot_mount.trim_start_matches('/'));
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(&mount_point)
        .with_context(|| format!("cannot list {}", mount_point.display()))?
    {
        let entry = entry?;
        std::fs::rename(entry.path(), to.join(entry.file_name())).with_context(|| {
            format!(
                "cannot move {} out of the root file system",
                entry.path().display()
            )
        })?;
    }
    Ok(())
}

fn install_file(rootfs: &Path, source: &Path, image_path: &str, mode: u32) -> Result<()> {
    let destination = rootfs.join(image_path.trim_start_matches('/'));
    std::fs::create_dir_all(destination.parent().expect("absolute image path"))?;
    std::fs::copy(source, &destination).with_context(|| {
        format!(
            "cannot copy {} to {}",
            source.display(),
            destination.display()
        )
    })?;
    std::fs::set_permissions(&destination, PermissionsExt::from_mode(mode))?;
    std::os::unix::fs::chown(&destination, Some(0), Some(0))?;
    Ok(())
}

/// The unit that sends the journal to `[journald] upload_url` (package
/// systemd-journal-remote).
const JOURNAL_UPLOAD_UNIT: &str = "systemd-journal-upload.service";

fn services(
    stage: &mut StageProgress,
    sh: &Shell,
    rootfs: &Path,
    config: &LoadedConfig,
) -> Result<()> {
    let services = &config.image.services;
    for (i, unit) in services.enable.iter().enumerate() {
        let found = [
            "etc/systemd/system",
            "usr/lib/systemd/system",
            "lib/systemd/system",
        ]
        .iter()
        .any(|dir| rootfs.join(dir).join(unit).symlink_metadata().is_ok());
        ensure!(
            found,
            "key `services.enable[{i}]`: unit `{unit}` does not exist in the image; add it under \
             overlays/etc/systemd/system/ or install the package that ships it"
        );
    }
    // `--root=/` inside the chroot: the image's own systemctl, offline, no running systemd
    // and no /proc needed.
    let mut enable = services.enable.clone();
    // Forwarding the journal is on exactly when `[journald] upload_url` names a collector.
    if !config.image.journald.upload_url.is_empty() {
        enable.push(JOURNAL_UPLOAD_UNIT.to_owned());
    }
    let (disable, mask) = (&services.disable, &services.mask);
    if !enable.is_empty() {
        stage.run(cmd!(
            sh,
            "chroot {rootfs} systemctl --root=/ enable {enable...}"
        ))?;
    }
    if !disable.is_empty() {
        stage.run(cmd!(
            sh,
            "chroot {rootfs} systemctl --root=/ disable {disable...}"
        ))?;
    }
    if !mask.is_empty() {
        stage.run(cmd!(
            sh,
            "chroot {rootfs} systemctl --root=/ mask {mask...}"
        ))?;
    }
    Ok(())
}

/// Every AppArmor profile in the image's `/etc/apparmor.d` compiles with the image's own
/// parser, against the feature set the package ships (no kernel is needed: `-Q` loads
/// nothing, `-K` writes no cache), so a profile the overlays broke fails the build with the
/// parser's message instead of keeping its unit from starting on the appliance.
fn apparmor_profiles_compile(stage: &mut StageProgress, sh: &Shell, rootfs: &Path) -> Result<()> {
    const PARSER: &str = "usr/sbin/apparmor_parser";
    if !rootfs.join(PARSER).exists() {
        return Ok(());
    }
    let dir = rootfs.join("etc/apparmor.d");
    let mut profiles: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
        .map(|entry| format!("/etc/apparmor.d/{}", entry.file_name().to_string_lossy()))
        .collect();
    profiles.sort();
    stage.step(format!("AppArmor profiles compile: {}", profiles.join(" ")));
    for profile in &profiles {
        stage.run(cmd!(
            sh,
            "chroot {rootfs} apparmor_parser -QK -M /usr/share/apparmor-features/features {profile}"
        ))?;
    }
    Ok(())
}
