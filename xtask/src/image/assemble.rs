//! Stage `assemble`: the bootable disk, made without loop devices or mounts.
//!
//! One function per layout (`target.disk.layout`). `gpt-efi` (x86_64, aarch64):
//!
//! | # | GPT type | FAT/ext4 label | what |
//! |---|----------|----------------|------|
//! | 1 | EFI system | `ESP` | systemd-boot (`EFI/BOOT/<efi_binary>` and `EFI/systemd/`), `loader/loader.conf`, the kernel's kernel-install entry, kernel and initrd |
//! | 2 | Microsoft basic data | `CIDATA` | NoCloud seed: a person drops `user-data` / `meta-data` here |
//! | 3 | Linux root (per arch) | `root` | ext4 filled from the root file system with `mkfs.ext4 -d` |
//!
//! Why a separate `cidata` volume instead of labelling the ESP `cidata`: Windows and macOS hide
//! or refuse to mount an EFI system partition, so a person could not add seed files to it before
//! first boot; a basic-data FAT volume shows up as an ordinary drive. It also keeps user-edited
//! files away from the boot loader. The root partition is last so cloud-init's growpart can grow
//! it to the disk at first boot.
//!
//! `rpi-mbr` (Raspberry Pi 4):
//!
//! | # | MBR type | label | what |
//! |---|----------|-------|------|
//! | 1 | `0c` FAT32 LBA, bootable, at 4 MiB | `CIDATA` | raspi-firmware's boot files, config.txt, cmdline.txt, the NoCloud seed |
//! | 2 | `83` Linux | `root` | ext4, grown at first boot |
//!
//! The Pi's boot ROM reads the first FAT partition whatever its label, so the one FAT
//! partition also carries the seed files a person edits before first boot.
//!
//! Each partition is made as its own file (`mkfs.vfat -C`, `mkfs.ext4 -d`) and placed into the
//! disk with `dd conv=notrunc,sparse`; `sgdisk` (GPT) or `sfdisk` (MBR) writes the partition
//! table with ids fixed per build.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clawfort_imagedef::{parse_size, DiskLayout, GptEfiDisk, LoadedConfig, RpiMbrDisk, Size};
use walkdir::WalkDir;
use xshell::{cmd, Shell};

use super::cache::Fingerprint;
use super::customise::Customised;
use super::disk_ids::DiskIds;
use super::progress::StageProgress;
use super::stage::{Runner, Stage};
use super::Profile;

const MIB: u64 = 1 << 20;

pub struct Disk {
    pub raw: PathBuf,
    pub key: String,
}

/// What the disk is made from; the layout functions read it.
struct Inputs<'a> {
    config: &'a LoadedConfig,
    rootfs: &'a Path,
    /// Files for the FAT boot partition that the customise stage took out of the root.
    boot_files: &'a Path,
    ids: &'a DiskIds,
    /// The NoCloud seed files copied onto the `cidata` volume.
    cidata_seed: &'a Path,
}

pub fn run(
    runner: &mut Runner,
    profile: &Profile,
    customised: &Customised,
    ids: &DiskIds,
) -> Result<Disk> {
    let cidata_seed = profile.layout.cidata_seed();
    let mut fingerprint = Fingerprint::new("assemble");
    fingerprint
        .add("customise", &customised.key)
        .add("size", profile.size.to_string());
    fingerprint.add_tree("cidata", &cidata_seed)?;
    let key = fingerprint.finish();
    let dir = profile.layout.stage_dir("assemble");
    let raw = dir.join(RAW);
    let inputs = Inputs {
        config: &profile.definition,
        rootfs: &customised.rootfs,
        boot_files: &customised.boot_files,
        ids,
        cidata_seed: &cidata_seed,
    };
    let stage = Stage::new("assemble", dir, key.clone()).ready(|dir| dir.join(RAW).is_file());
    runner.cached(stage, |stage, dir| {
        assemble(stage, &inputs, profile.size, dir)
    })?;
    Ok(Disk { raw, key })
}

/// The disk's name in the stage directory.
const RAW: &str = "disk.raw";

fn assemble(stage: &mut StageProgress, inputs: &Inputs<'_>, size: Size, dir: &Path) -> Result<()> {
    let partial = dir.join("disk.raw.partial");
    stage.step("measuring the root file system");
    let root_needed = root_size_needed(inputs.rootfs)?;
    ensure_free_space(dir, 2 * root_needed)?;
    let requested = size.bytes();
    let builder = DiskBuilder {
        sh: Shell::new()?,
        inputs,
        dir,
        partial: &partial,
    };
    // mtools refuses FAT images whose geometry it finds odd unless told to skip the check.
    builder.sh.set_var("MTOOLS_SKIP_CHECK", "1");
    match &inputs.config.target.disk {
        DiskLayout::GptEfi(disk) => builder.gpt_efi(stage, disk, root_needed, requested)?,
        DiskLayout::RpiMbr(disk) => builder.rpi_mbr(stage, disk, root_needed, requested)?,
    }
    std::fs::rename(&partial, dir.join(RAW))?;
    Ok(())
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
        let disk = disk_size(root_start + round_up(root_needed, MIB) + MIB, requested)?;
        Ok(Self {
            esp: (esp_start, round_up(esp, MIB)),
            cidata: (cidata_start, round_up(cidata, MIB)),
            root: (root_start, disk - MIB - root_start),
            disk,
        })
    }
}

/// The Pi's layout: the boot partition at 4 MiB (where Raspberry Pi OS and Debian's raspi
/// images put it: SD cards erase in blocks of up to 4 MiB), the root right after it.
#[derive(Debug, PartialEq)]
struct MbrPlan {
    boot: (u64, u64),
    root: (u64, u64),
    disk: u64,
}

impl MbrPlan {
    fn new(boot: u64, root_needed: u64, requested: Option<u64>) -> Result<Self> {
        let boot_start = 4 * MIB;
        let root_start = boot_start + round_up(boot, MIB);
        let disk = disk_size(root_start + round_up(root_needed, MIB), requested)?;
        Ok(Self {
            boot: (boot_start, round_up(boot, MIB)),
            root: (root_start, disk - root_start),
            disk,
        })
    }
}

fn disk_size(minimum: u64, requested: Option<u64>) -> Result<u64> {
    match requested {
        None => Ok(minimum),
        Some(size) => {
            ensure!(
                size >= minimum,
                "the disk size {} is too small: the partitions and the root file system's \
                 content need at least {} MiB; raise `image.size` (or the target's `size`, or \
                 `--size`) or use `auto`",
                size,
                minimum.div_ceil(MIB)
            );
            Ok(size / MIB * MIB)
        }
    }
}

/// The root partition's image and the disk that receives it are both written in `dir` (sparse,
/// so about the content each). A host disk that fills up half-way makes mkfs fail with a bare
/// "No space left on device" about a file inside the image; this says whose space ran out.
fn ensure_free_space(dir: &Path, needed: u64) -> Result<()> {
    let free = super::free_bytes(dir)?;
    ensure!(
        free >= needed,
        "{} has {} MiB free on its file system, but assembling the disk writes about {} MiB \
         there; free space on this machine (an old `target/image/*` or `out/` goes first) or \
         point `--work-dir` at a larger disk",
        dir.display(),
        free / MIB,
        needed.div_ceil(MIB)
    );
    Ok(())
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

/// One disk being assembled in `partial`: each partition is made as its own file in `dir`,
/// then placed into the disk.
struct DiskBuilder<'a> {
    sh: Shell,
    inputs: &'a Inputs<'a>,
    dir: &'a Path,
    partial: &'a Path,
}

impl DiskBuilder<'_> {
    fn gpt_efi(
        &self,
        stage: &mut StageProgress,
        disk: &GptEfiDisk,
        root_needed: u64,
        requested: Option<u64>,
    ) -> Result<()> {
        let sh = &self.sh;
        let ids = self.inputs.ids;
        let plan = GptPlan::new(
            parse_size(&disk.esp_size)?,
            parse_size(&disk.cidata_size)?,
            root_needed,
            requested,
        )?;

        stage.step("ESP: systemd-boot, loader.conf, the kernel's kernel-install entry");
        let esp = self.fat(stage, "esp.img", "ESP", &ids.boot_volume_id, plan.esp.1)?;
        let boot_efi = self
            .inputs
            .rootfs
            .join(disk.systemd_boot_efi.trim_start_matches('/'));
        ensure!(
            boot_efi.is_file(),
            "key `target.disk.systemd_boot_efi`: {} is not in the image; is `systemd-boot-efi` \
             in `target.packages`?",
            disk.systemd_boot_efi
        );
        // The customise stage ran kernel-install for the image's kernel: loader/entries/ and
        // <entry-token>/<version>/ are in boot_files, laid out as on the running system.
        let entries_dir = self.inputs.boot_files.join("loader/entries");
        let entries = std::fs::read_dir(&entries_dir)
            .map(|dir| dir.flatten().count())
            .unwrap_or(0);
        ensure!(
            entries == 1,
            "expected the one boot entry kernel-install wrote in {}, found {entries}",
            entries_dir.display()
        );
        let mut tree: Vec<PathBuf> = std::fs::read_dir(self.inputs.boot_files)
            .with_context(|| format!("cannot list {}", self.inputs.boot_files.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        tree.sort();
        stage.run(cmd!(sh, "mcopy -s -i {esp} {tree...} ::"))?;
        let loader_conf = self.dir.join("loader.conf");
        // No `default`: systemd-boot starts the newest entry that is not out of tries, so a
        // kernel installed later is the default, and the one before it the fallback.
        // `editor no`: nobody at the console edits the kernel command line (init=/bin/sh).
        std::fs::write(&loader_conf, "timeout 0\neditor no\n")?;
        stage.run(cmd!(
            sh,
            "mcopy -i {esp} {loader_conf} ::loader/loader.conf"
        ))?;
        // The firmware's fallback path starts it without an NVRAM entry; EFI/systemd/ is where
        // `bootctl is-installed` (Debian's kernel hooks ask it) and `bootctl update` (the
        // systemd-boot package's upgrades) look for it.
        let efi_name = boot_efi
            .file_name()
            .context("target.disk.systemd_boot_efi names no file")?
            .to_string_lossy()
            .into_owned();
        let (fallback, installed) = (
            format!("::EFI/BOOT/{}", disk.efi_binary),
            format!("::EFI/systemd/{efi_name}"),
        );
        stage.run(cmd!(sh, "mmd -i {esp} ::EFI ::EFI/BOOT ::EFI/systemd"))?;
        stage.run(cmd!(sh, "mcopy -i {esp} {boot_efi} {fallback}"))?;
        stage.run(cmd!(sh, "mcopy -i {esp} {boot_efi} {installed}"))?;

        stage.step("cidata: NoCloud seed volume");
        let cidata = self.fat(
            stage,
            "cidata.img",
            "CIDATA",
            &ids.cidata_volume_id,
            plan.cidata.1,
        )?;
        self.copy_seed(stage, &cidata)?;

        let root = self.root_fs(stage, plan.root.1)?;

        stage.step("GPT and partitions into the disk");
        std::fs::File::create(self.partial)?.set_len(plan.disk)?;
        let sector = |bytes: u64| (bytes / 512).to_string();
        let end = |(start, size): (u64, u64)| (start + size) / 512 - 1;
        let disk_guid = &ids.disk_id;
        let new1 = format!("--new=1:{}:{}", sector(plan.esp.0), end(plan.esp));
        let new2 = format!("--new=2:{}:{}", sector(plan.cidata.0), end(plan.cidata));
        let new3 = format!("--new=3:{}:{}", sector(plan.root.0), end(plan.root));
        let (u1, u2, u3) = (
            format!("--partition-guid=1:{}", ids.boot_partuuid),
            format!("--partition-guid=2:{}", ids.cidata_partuuid),
            format!("--partition-guid=3:{}", ids.root_partuuid),
        );
        let root_type = format!("--typecode=3:{}", disk.root_partition_type);
        let partial = self.partial;
        // Not `-q`: this sgdisk version exits without writing when quiet.
        stage.run(cmd!(
            sh,
            "sgdisk --clear --disk-guid={disk_guid}
                {new1} --typecode=1:ef00 --change-name=1:ESP {u1}
                {new2} --typecode=2:0700 --change-name=2:cidata {u2}
                {new3} {root_type} --change-name=3:root {u3}
                {partial}"
        ))?;
        self.place(
            stage,
            &[
                (esp, plan.esp.0),
                (cidata, plan.cidata.0),
                (root, plan.root.0),
            ],
        )?;
        let verify = stage.run(cmd!(sh, "sgdisk --verify {partial}"))?;
        if !verify.contains("No problems found") {
            bail!("sgdisk --verify found problems in the new disk:\n{verify}");
        }
        Ok(())
    }

    /// The Raspberry Pi: the boot ROM reads `config.txt` from the first FAT partition and
    /// loads the kernel, initrd and device tree it names; raspi-firmware put all of them (and
    /// its own cmdline.txt) in `boot_files`. cmdline.txt is written here because only now is
    /// the root's PARTUUID known; /etc/default/raspi-firmware (overlays.rpi) makes the package
    /// write the same line on every later kernel update.
    fn rpi_mbr(
        &self,
        stage: &mut StageProgress,
        disk: &RpiMbrDisk,
        root_needed: u64,
        requested: Option<u64>,
    ) -> Result<()> {
        let sh = &self.sh;
        let ids = self.inputs.ids;
        let plan = MbrPlan::new(parse_size(&disk.boot_size)?, root_needed, requested)?;

        stage.step("boot partition: firmware, device trees, kernel, initrd, NoCloud seed");
        // Labelled CIDATA: cloud-init's NoCloud finds the seed files a person drops here.
        let boot = self.fat(
            stage,
            "boot.img",
            "CIDATA",
            &ids.boot_volume_id,
            plan.boot.1,
        )?;
        let firmware = self.inputs.boot_files;
        ensure!(
            firmware.join("config.txt").is_file(),
            "raspi-firmware left no config.txt in /boot/firmware of the image; is \
             `raspi-firmware` in `target.packages` (component `non-free-firmware`)?"
        );
        let mut entries: Vec<PathBuf> = std::fs::read_dir(firmware)
            .with_context(|| format!("cannot list {}", firmware.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        entries.sort();
        stage.run(cmd!(sh, "mcopy -s -i {boot} {entries...} ::"))?;
        let cmdline = self.dir.join("cmdline.txt");
        std::fs::write(&cmdline, format!("{}\n", self.kernel_cmdline()))?;
        stage.run(cmd!(sh, "mcopy -o -i {boot} {cmdline} ::cmdline.txt"))?;
        self.copy_seed(stage, &boot)?;

        let root = self.root_fs(stage, plan.root.1)?;

        stage.step("MBR and partitions into the disk");
        std::fs::File::create(self.partial)?.set_len(plan.disk)?;
        let table = format!(
            "label: dos\nlabel-id: 0x{id}\nunit: sectors\n\n\
             start={boot_start}, size={boot_size}, type=c, bootable\n\
             start={root_start}, size={root_size}, type=83\n",
            id = ids.disk_id,
            boot_start = plan.boot.0 / 512,
            boot_size = plan.boot.1 / 512,
            root_start = plan.root.0 / 512,
            root_size = plan.root.1 / 512,
        );
        let partial = self.partial;
        stage.run(cmd!(sh, "sfdisk --no-reread --no-tell-kernel {partial}").stdin(table))?;
        self.place(stage, &[(boot, plan.boot.0), (root, plan.root.0)])?;
        Ok(())
    }

    /// `root=PARTUUID=<root> <target.kernel_cmdline>`: the Pi's `cmdline.txt`. The UEFI targets
    /// write the same line to `/etc/kernel/cmdline` (`overlays.uefi`), which kernel-install reads.
    fn kernel_cmdline(&self) -> String {
        format!(
            "root=PARTUUID={} {}",
            self.inputs.ids.root_partuuid, self.inputs.config.target.kernel_cmdline
        )
    }

    /// An empty FAT file system of `bytes` in `dir/name`; FAT32 from 64 MiB up.
    fn fat(
        &self,
        stage: &mut StageProgress,
        name: &str,
        label: &str,
        volume_id: &str,
        bytes: u64,
    ) -> Result<PathBuf> {
        let sh = &self.sh;
        let image = self.dir.join(name);
        if image.exists() {
            std::fs::remove_file(&image)?;
        }
        let kib = (bytes / 1024).to_string();
        let fat32: &[&str] = if bytes >= 64 * MIB {
            &["-F", "32"]
        } else {
            &[]
        };
        // `--invariant` before `-i`: after it, it would reset the volume id to a fixed one.
        stage.run(cmd!(
            sh,
            "mkfs.vfat {fat32...} -n {label} --invariant -i {volume_id} -C {image} {kib}"
        ))?;
        Ok(image)
    }

    /// The NoCloud seed files (image/cidata) onto a FAT image's root.
    fn copy_seed(&self, stage: &mut StageProgress, fat: &Path) -> Result<()> {
        let sh = &self.sh;
        let seed_dir = self.inputs.cidata_seed;
        for seed in std::fs::read_dir(seed_dir)
            .with_context(|| format!("cannot read the NoCloud seed {}", seed_dir.display()))?
        {
            let seed = seed?.path();
            let name = format!("::{}", seed.file_name().expect("entry").to_string_lossy());
            stage.run(cmd!(sh, "mcopy -o -i {fat} {seed} {name}"))?;
        }
        Ok(())
    }

    /// The ext4 root of `bytes`, filled from the root file system, checked.
    fn root_fs(&self, stage: &mut StageProgress, bytes: u64) -> Result<PathBuf> {
        let sh = &self.sh;
        stage.step(format!(
            "root: mkfs.ext4 -d ({} MiB partition)",
            bytes / MIB
        ));
        let image = self.dir.join("root.img");
        if image.exists() {
            std::fs::remove_file(&image)?;
        }
        let rootfs = self.inputs.rootfs;
        let fs_uuid = &self.inputs.ids.root_fs_uuid;
        let extended = format!("root_owner=0:0,hash_seed={fs_uuid}");
        let kib = format!("{}k", bytes / 1024);
        stage.run(cmd!(
            sh,
            "mkfs.ext4 -q -F -L root -U {fs_uuid} -E {extended} -d {rootfs} {image} {kib}"
        ))?;
        stage.run(cmd!(sh, "e2fsck -f -n {image}"))?;
        Ok(image)
    }

    /// Writes each partition image into the disk at its offset (sparse: zeros stay holes),
    /// then removes the partition images.
    fn place(&self, stage: &mut StageProgress, parts: &[(PathBuf, u64)]) -> Result<()> {
        let sh = &self.sh;
        for (image, start) in parts {
            let seek = format!("seek={}", start / MIB);
            let input = format!("if={}", image.display());
            let output = format!("of={}", self.partial.display());
            stage.run(cmd!(
                sh,
                "dd {input} {output} bs=1M {seek} conv=notrunc,sparse status=none"
            ))?;
        }
        for (image, _) in parts {
            std::fs::remove_file(image)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pi_plan_starts_at_4_mib_and_fills_the_disk() {
        let plan = MbrPlan::new(512 * MIB, 1000 * MIB, None).unwrap();
        assert_eq!(plan.boot, (4 * MIB, 512 * MIB));
        assert_eq!(plan.root, (516 * MIB, 1000 * MIB));
        assert_eq!(plan.disk, 1516 * MIB);
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
