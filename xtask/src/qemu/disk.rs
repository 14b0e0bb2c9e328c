//! Per-boot disks: a copy-on-write overlay over the artifact (so booting never changes the file
//! a user would flash or upload), optionally bigger than the artifact to exercise first-boot
//! growth, and a NoCloud seed volume for cloud-init.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use xshell::{cmd, Shell};

/// Creates `overlay` as a qcow2 overlay backed by `base` (raw or qcow2, read-only through the
/// overlay), grown to `size_bytes` when that is larger than the base.
pub fn overlay(sh: &Shell, base: &Path, overlay: &Path, size_bytes: Option<u64>) -> Result<()> {
    ensure!(
        base.is_file(),
        "disk image {} does not exist (build it with `cargo xtask image`, or pass --image PATH)",
        base.display()
    );
    let base = std::fs::canonicalize(base)
        .with_context(|| format!("cannot resolve {}", base.display()))?;
    let format = image_format(sh, &base)?;
    let _ = std::fs::remove_file(overlay);
    cmd!(
        sh,
        "qemu-img create -q -f qcow2 -b {base} -F {format} {overlay}"
    )
    .run()?;
    if let Some(size) = size_bytes {
        let base_size = virtual_size(sh, &base)?;
        if size > base_size {
            let size = size.to_string();
            cmd!(sh, "qemu-img resize -q {overlay} {size}").run()?;
        }
    }
    Ok(())
}

/// Decompresses an `.xz` disk image into a sparse file: the Pi image's 1.7 GiB hold about
/// 800 MiB of data, and QEMU, sfdisk and mtools cannot read xz.
pub fn decompress_xz_sparse(sh: &Shell, xz: &Path, raw: &Path) -> Result<()> {
    cmd!(
        sh,
        "sh -c 'xz -dc \"$0\" | cp --sparse=always /dev/stdin \"$1\"' {xz} {raw}"
    )
    .run()
    .with_context(|| format!("cannot decompress {} to {}", xz.display(), raw.display()))
}

/// The disk's virtual size in bytes, as the guest sees it.
pub fn virtual_size(sh: &Shell, image: &Path) -> Result<u64> {
    let info = cmd!(sh, "qemu-img info --output=json {image}").read()?;
    let info: serde_json::Value = serde_json::from_str(&info)
        .with_context(|| format!("unreadable `qemu-img info` output for {}", image.display()))?;
    info["virtual-size"].as_u64().with_context(|| {
        format!(
            "`qemu-img info` gave no virtual-size for {}",
            image.display()
        )
    })
}

fn image_format(sh: &Shell, image: &Path) -> Result<String> {
    let info = cmd!(sh, "qemu-img info --output=json {image}").read()?;
    let info: serde_json::Value = serde_json::from_str(&info)
        .with_context(|| format!("unreadable `qemu-img info` output for {}", image.display()))?;
    Ok(info["format"]
        .as_str()
        .with_context(|| format!("`qemu-img info` gave no format for {}", image.display()))?
        .to_owned())
}

/// Makes a small FAT volume labelled `cidata` holding `user-data` and `meta-data` from
/// `seed_dir`: cloud-init's NoCloud datasource reads it at first boot.
pub fn nocloud_seed(sh: &Shell, seed_dir: &Path, image: &Path) -> Result<PathBuf> {
    for name in ["user-data", "meta-data"] {
        ensure!(
            seed_dir.join(name).is_file(),
            "NoCloud seed directory {} has no `{name}` file (cloud-init needs both user-data and meta-data)",
            seed_dir.display()
        );
    }
    let _ = std::fs::remove_file(image);
    // 2 MiB: FAT12, plenty for a few files; the label is what cloud-init looks for.
    cmd!(sh, "mkfs.vfat -n CIDATA -C {image} 2048")
        .quiet()
        .ignore_stdout()
        .run()?;
    for entry in std::fs::read_dir(seed_dir)
        .with_context(|| format!("cannot read NoCloud seed directory {}", seed_dir.display()))?
    {
        let file = entry?.path();
        if file.is_file() {
            cmd!(sh, "mcopy -i {image} {file} ::/").run()?;
        }
    }
    Ok(image.to_owned())
}

/// Writes a NoCloud seed directory that authorises `public_key` for the `admin` user.
pub fn seed_dir_for_key(admin: &str, public_key: &Path, dir: &Path) -> Result<()> {
    let key = std::fs::read_to_string(public_key)
        .with_context(|| format!("cannot read public key {}", public_key.display()))?;
    let key = key.trim();
    ensure!(
        key.starts_with("ssh-") || key.starts_with("ecdsa-") || key.starts_with("sk-"),
        "{} does not look like an OpenSSH public key (expected e.g. `ssh-ed25519 AAAA...`)",
        public_key.display()
    );
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("user-data"),
        format!(
            "#cloud-config\nusers:\n  - name: {admin}\n    ssh_authorized_keys:\n      - {key}\n"
        ),
    )?;
    std::fs::write(
        dir.join("meta-data"),
        "instance-id: clawfort-run\nlocal-hostname: clawfort\n",
    )?;
    Ok(())
}
