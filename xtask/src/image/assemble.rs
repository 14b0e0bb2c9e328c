//! Stage `assemble`: the bootable disk, made without loop devices or mounts.
//!
//! `gpt-efi` layout (one function per layout; the Pi's MBR layout will be a second one):
//!
//! | # | GPT type | FAT/ext4 label | what |
//! |---|----------|----------------|------|
//! | 1 | EFI system | `ESP` | systemd-boot as `EFI/BOOT/<efi_binary>`, loader entry, kernel, initrd |
//! | 2 | Microsoft basic data | `CIDATA` | NoCloud seed: a person drops `user-data` / `meta-data` here |
//! | 3 | Linux root (per arch) | `root` | ext4 filled from the root file system with `mkfs.ext4 -d` |
//!
//! Why a separate `cidata` volume instead of labelling the ESP `cidata`: Windows and macOS hide
//! or refuse to mount an EFI system partition, so a person could not add seed files to it before
//! first boot; a basic-data FAT volume shows up as an ordinary drive. It also keeps user-edited
//! files away from the boot loader. The root partition is last so cloud-init's growpart can grow
//! it to the disk at first boot.
//!
//! Each partition is made as its own file (`mkfs.vfat -C`, `mkfs.ext4 -d`) and placed into the
//! disk with `dd conv=notrunc,sparse`; `sgdisk` writes the GPT with ids fixed per build.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use walkdir::WalkDir;
use xshell::{cmd, Shell};

use super::cache::{self, Fingerprint};
use super::config::{parse_size, Layout, LoadedConfig};
use super::progress::StageProgress;

const MIB: u64 = 1 << 20;

/// Identifiers of the disk and its partitions, derived from the customise inputs so that the
/// same inputs give the same disk (and fstab can name them before the disk exists).
#[derive(Debug, Clone)]
pub struct DiskIds {
    pub disk_guid: String,
    pub esp_partuuid: String,
    pub cidata_partuuid: String,
    pub root_partuuid: String,
    pub root_fs_uuid: String,
    pub esp_volume_id: String,
    pub cidata_volume_id: String,
}

impl DiskIds {
    pub fn derive(seed: &str) -> Self {
        let digest = |label: &str| -> [u8; 32] {
            let mut hasher = Sha256::new();
            hasher.update(seed.as_bytes());
            hasher.update(label.as_bytes());
            hasher.finalize().into()
        };
        let uuid = |label: &str| {
            let mut b = digest(label);
            b[6] = (b[6] & 0x0f) | 0x40; // version 4 layout
            b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
            let h = cache::hex(&b[..16]);
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        };
        Self {
            disk_guid: uuid("disk"),
            esp_partuuid: uuid("esp"),
            cidata_partuuid: uuid("cidata"),
            root_partuuid: uuid("root"),
            root_fs_uuid: uuid("root-fs"),
            esp_volume_id: cache::hex(&digest("esp-volume")[..4]),
            cidata_volume_id: cache::hex(&digest("cidata-volume")[..4]),
        }
    }
}

pub struct Disk {
    pub raw: PathBuf,
    pub key: String,
    pub reused: bool,
}

pub struct Inputs<'a> {
    pub config: &'a LoadedConfig,
    pub rootfs: &'a Path,
    pub customise_key: &'a str,
    pub ids: &'a DiskIds,
    /// `--size` or `image.size`: a size or `auto`.
    pub size: &'a str,
    /// The NoCloud seed files copied onto the `cidata` volume.
    pub cidata_seed: &'a Path,
}

pub fn run(stage: &mut StageProgress, inputs: &Inputs<'_>, work: &Path) -> Result<Disk> {
    let mut fingerprint = Fingerprint::new("assemble");
    fingerprint
        .add("customise", inputs.customise_key)
        .add("size", inputs.size);
    fingerprint.add_tree("cidata", inputs.cidata_seed)?;
    let key = fingerprint.finish();
    let dir = work.join("assemble");
    let raw = dir.join("disk.raw");
    if cache::stamp_matches(&dir, &key) && raw.is_file() {
        stage.step(format!("reusing {}", raw.display()));
        return Ok(Disk {
            raw,
            key,
            reused: true,
        });
    }
    std::fs::create_dir_all(&dir)?;
    cache::remove_stamp(&dir)?;
    match inputs.config.target.layout {
        Layout::GptEfi => gpt_efi(stage, inputs, &dir, &raw)?,
    }
    cache::write_stamp(&dir, &key)?;
    Ok(Disk {
        raw,
        key,
        reused: false,
    })
}

/// Partition offsets in bytes, all 1 MiB aligned.
#[derive(Debug, PartialEq)]
struct GptPlan {
    esp: (u64, u64),
    cidata: (u64, u64),
    root: (u64, u64),
    disk: u64,
}

impl GptPlan {
    /// `requested` is the disk size or `None` for auto; `root_needed` the smallest root.
    fn new(esp: u64, cidata: u64, root_needed: u64, requested: Option<u64>) -> Result<Self> {
        let esp_start = MIB;
        let cidata_start = esp_start + round_up(esp, MIB);
        let root_start = cidata_start + round_up(cidata, MIB);
        // 1 MiB at the end holds the backup GPT.
        let minimum = root_start + round_up(root_needed, MIB) + MIB;
        let disk = match requested {
            None => minimum,
            Some(size) => {
                ensure!(
                    size >= minimum,
                    "the disk size {} is too small: the partitions and the root file system's \
                     content need at least {} MiB; raise `image.size` (or `--size`) or use `auto`",
                    size,
                    minimum.div_ceil(MIB)
                );
                size / MIB * MIB
            }
        };
        Ok(Self {
            esp: (esp_start, round_up(esp, MIB)),
            cidata: (cidata_start, round_up(cidata, MIB)),
            root: (root_start, disk - MIB - root_start),
            disk,
        })
    }
}

fn round_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}

/// Bytes the root file system needs: its content (allocated blocks, hard links once) plus
/// room for ext4's metadata and a margin, so the first boot never starts on a full disk even
/// before growpart runs.
fn root_size_needed(rootfs: &Path) -> Result<u64> {
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    for entry in WalkDir::new(rootfs).follow_links(false) {
        let entry = entry.with_context(|| format!("cannot walk {}", rootfs.display()))?;
        let meta = entry.path().symlink_metadata()?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        inodes += 1;
        bytes += round_up(meta.len(), 4096);
    }
    let content = bytes + inodes * 256;
    Ok(content + content / 4 + 256 * MIB)
}

fn gpt_efi(stage: &mut StageProgress, inputs: &Inputs<'_>, dir: &Path, raw: &Path) -> Result<()> {
    let sh = Shell::new()?;
    let target = &inputs.config.target;
    let ids = inputs.ids;
    stage.step("measuring the root file system");
    let root_needed = root_size_needed(inputs.rootfs)?;
    let requested = match inputs.size {
        "auto" => None,
        size => Some(parse_size(size).context("disk size (`image.size` or `--size`)")?),
    };
    let plan = GptPlan::new(
        parse_size(&target.esp_size)?,
        parse_size(&target.cidata_size)?,
        root_needed,
        requested,
    )?;

    let esp_img = dir.join("esp.img");
    let cidata_img = dir.join("cidata.img");
    let root_img = dir.join("root.img");
    for file in [&esp_img, &cidata_img, &root_img, raw] {
        if file.exists() {
            std::fs::remove_file(file)?;
        }
    }

    stage.step("ESP: systemd-boot, loader entry, kernel, initrd");
    let (kernel, initrd, version) = find_kernel(inputs.rootfs)?;
    let esp_kib = (plan.esp.1 / 1024).to_string();
    let esp_id = &ids.esp_volume_id;
    stage.run(cmd!(
        sh,
        "mkfs.vfat -F 32 -n ESP --invariant -i {esp_id} -C {esp_img} {esp_kib}"
    ))?;
    let boot_efi = inputs
        .rootfs
        .join(target.systemd_boot_efi.trim_start_matches('/'));
    ensure!(
        boot_efi.is_file(),
        "key `target.systemd_boot_efi`: {} is not in the image; is `systemd-boot-efi` in \
         `target.packages`?",
        target.systemd_boot_efi
    );
    let loader_conf = dir.join("loader.conf");
    // `editor no`: nobody at the console edits the kernel command line (init=/bin/sh).
    std::fs::write(
        &loader_conf,
        "default clawfort.conf\ntimeout 0\neditor no\n",
    )?;
    let entry = dir.join("clawfort.conf");
    std::fs::write(
        &entry,
        format!(
            "title {name} (Debian {suite})\nversion {version}\nlinux /clawfort/vmlinuz\n\
             initrd /clawfort/initrd.img\noptions root=PARTUUID={root} {cmdline}\n",
            name = inputs.config.image.image.name,
            suite = inputs.config.image.debian.suite,
            root = ids.root_partuuid,
            cmdline = target.kernel_cmdline,
        ),
    )?;
    let efi_dest = format!("::EFI/BOOT/{}", target.efi_binary);
    // mtools refuses FAT images whose geometry it finds odd unless told to skip the check.
    sh.set_var("MTOOLS_SKIP_CHECK", "1");
    stage.run(cmd!(
        sh,
        "mmd -i {esp_img} ::EFI ::EFI/BOOT ::loader ::loader/entries ::clawfort"
    ))?;
    stage.run(cmd!(sh, "mcopy -i {esp_img} {boot_efi} {efi_dest}"))?;
    stage.run(cmd!(
        sh,
        "mcopy -i {esp_img} {loader_conf} ::loader/loader.conf"
    ))?;
    stage.run(cmd!(
        sh,
        "mcopy -i {esp_img} {entry} ::loader/entries/clawfort.conf"
    ))?;
    stage.run(cmd!(sh, "mcopy -i {esp_img} {kernel} ::clawfort/vmlinuz"))?;
    stage.run(cmd!(
        sh,
        "mcopy -i {esp_img} {initrd} ::clawfort/initrd.img"
    ))?;

    stage.step("cidata: NoCloud seed volume");
    let cidata_kib = (plan.cidata.1 / 1024).to_string();
    let cidata_id = &ids.cidata_volume_id;
    stage.run(cmd!(
        sh,
        "mkfs.vfat -n CIDATA --invariant -i {cidata_id} -C {cidata_img} {cidata_kib}"
    ))?;
    for seed in std::fs::read_dir(inputs.cidata_seed).with_context(|| {
        format!(
            "cannot read the NoCloud seed {}",
            inputs.cidata_seed.display()
        )
    })? {
        let seed = seed?.path();
        let name = format!("::{}", seed.file_name().expect("entry").to_string_lossy());
        stage.run(cmd!(sh, "mcopy -i {cidata_img} {seed} {name}"))?;
    }

    stage.step(format!(
        "root: mkfs.ext4 -d ({} MiB partition)",
        plan.root.1 / MIB
    ));
    let rootfs = inputs.rootfs;
    let fs_uuid = &ids.root_fs_uuid;
    let extended = format!("root_owner=0:0,hash_seed={fs_uuid}");
    let root_kib = format!("{}k", plan.root.1 / 1024);
    stage.run(cmd!(
        sh,
        "mkfs.ext4 -q -F -L root -U {fs_uuid} -E {extended} -d {rootfs} {root_img} {root_kib}"
    ))?;
    stage.run(cmd!(sh, "e2fsck -f -n {root_img}"))?;

    stage.step("GPT and partitions into the disk");
    let partial = dir.join("disk.raw.partial");
    if partial.exists() {
        std::fs::remove_file(&partial)?;
    }
    std::fs::File::create(&partial)?.set_len(plan.disk)?;
    let sector = |bytes: u64| (bytes / 512).to_string();
    let end = |(start, size): (u64, u64)| (start + size) / 512 - 1;
    let disk_guid = &ids.disk_guid;
    let new1 = format!("--new=1:{}:{}", sector(plan.esp.0), end(plan.esp));
    let new2 = format!("--new=2:{}:{}", sector(plan.cidata.0), end(plan.cidata));
    let new3 = format!("--new=3:{}:{}", sector(plan.root.0), end(plan.root));
    let (u1, u2, u3) = (
        format!("--partition-guid=1:{}", ids.esp_partuuid),
        format!("--partition-guid=2:{}", ids.cidata_partuuid),
        format!("--partition-guid=3:{}", ids.root_partuuid),
    );
    let root_type = format!("--typecode=3:{}", target.root_partition_type);
    // Not `-q`: this sgdisk version exits without writing when quiet.
    stage.run(cmd!(
        sh,
        "sgdisk --clear --disk-guid={disk_guid}
            {new1} --typecode=1:ef00 --change-name=1:ESP {u1}
            {new2} --typecode=2:0700 --change-name=2:cidata {u2}
            {new3} {root_type} --change-name=3:root {u3}
            {partial}"
    ))?;
    for (image, (start, _)) in [
        (&esp_img, plan.esp),
        (&cidata_img, plan.cidata),
        (&root_img, plan.root),
    ] {
        let seek = format!("seek={}", start / MIB);
        let input = format!("if={}", image.display());
        let output = format!("of={}", partial.display());
        stage.run(cmd!(
            sh,
            "dd {input} {output} bs=1M {seek} conv=notrunc,sparse status=none"
        ))?;
    }
    let verify = stage.run(cmd!(sh, "sgdisk --verify {partial}"))?;
    if !verify.contains("No problems found") {
        bail!("sgdisk --verify found problems in the new disk:\n{verify}");
    }
    for file in [&esp_img, &cidata_img, &root_img] {
        std::fs::remove_file(file)?;
    }
    std::fs::rename(&partial, raw)?;
    Ok(())
}

/// The one kernel and initrd in `/boot`; several would leave the choice to chance.
fn find_kernel(rootfs: &Path) -> Result<(PathBuf, PathBuf, String)> {
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
            "expected exactly one kernel in /boot of the image, found {:?}; check the kernel \
             package in `target.packages`",
            versions
        );
    };
    let kernel = boot.join(format!("vmlinuz-{version}"));
    let initrd = boot.join(format!("initrd.img-{version}"));
    ensure!(
        initrd.is_file(),
        "{} is missing: is `initramfs-tools` in `target.packages`?",
        initrd.display()
    );
    Ok((kernel, initrd, version.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_seed_and_differ_between_seeds() {
        let a = DiskIds::derive("seed-a");
        assert_eq!(a.root_partuuid, DiskIds::derive("seed-a").root_partuuid);
        assert_ne!(a.root_partuuid, DiskIds::derive("seed-b").root_partuuid);
        assert_ne!(a.root_partuuid, a.esp_partuuid);
        assert_eq!(a.root_partuuid.len(), 36);
        assert_eq!(&a.root_partuuid[14..15], "4");
        assert_eq!(a.esp_volume_id.len(), 8);
    }

    #[test]
    fn the_plan_aligns_partitions_and_puts_root_last() {
        let plan = GptPlan::new(256 * MIB, 16 * MIB, 1000 * MIB, Some(4 << 30)).unwrap();
        assert_eq!(plan.esp, (MIB, 256 * MIB));
        assert_eq!(plan.cidata, (257 * MIB, 16 * MIB));
        assert_eq!(plan.root.0, 273 * MIB);
        assert_eq!(plan.root.0 + plan.root.1 + MIB, 4 << 30);
        let auto = GptPlan::new(256 * MIB, 16 * MIB, 1000 * MIB, None).unwrap();
        assert_eq!(auto.root.1, 1000 * MIB);
    }

    #[test]
    fn a_disk_too_small_for_its_content_is_refused_with_the_key() {
        let err = GptPlan::new(256 * MIB, 16 * MIB, 2000 * MIB, Some(1 << 30)).unwrap_err();
        assert!(err.to_string().contains("image.size"), "{err}");
    }
}
