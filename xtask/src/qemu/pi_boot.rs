//! What the Raspberry Pi's boot ROM reads from the image's FAT partition: `config.txt` names
//! the kernel and initrd, `cmdline.txt` is the kernel command line. Read with mtools straight
//! from the raw image at the partition's offset, no mount needed. Used to boot the Pi image
//! under QEMU and by the Pi layout test.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use xshell::{cmd, Shell};

use super::machine::PiKernel;
use super::BootMedia;

/// The files a Pi 4 loads, as named by config.txt.
#[derive(Debug, PartialEq, Eq)]
pub struct PiBootFiles {
    pub kernel: String,
    pub initramfs: Option<String>,
}

/// Reads config.txt the way a Pi 4 applies it: lines before any `[filter]` and in `[all]` or
/// `[pi4]` sections count, later settings win. `kernel=<file>` and `initramfs <file> [followkernel]`.
pub fn parse_config_txt(text: &str) -> Result<PiBootFiles> {
    let mut applies = true;
    let mut kernel = None;
    let mut initramfs = None;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(filter) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            applies = matches!(filter, "all" | "pi4");
            continue;
        }
        if !applies {
            continue;
        }
        if let Some(value) = line.strip_prefix("kernel=") {
            kernel = Some(value.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("initramfs ") {
            initramfs = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    Ok(PiBootFiles {
        kernel: kernel.context("config.txt has no `kernel=` line for the Pi 4")?,
        initramfs,
    })
}

/// `-i <image>@@<offset>`: mtools' way of addressing a file system inside a disk image.
pub fn mtools_image(sh: &Shell, image: &Path, partition: u32) -> Result<String> {
    let table = cmd!(sh, "sfdisk --json {image}")
        .quiet()
        .read()
        .with_context(|| {
            format!(
                "cannot read the partition table of {} (the Pi boot needs the raw image: \
             decompress clawfort-rpi.img.xz with `xz -dk`)",
                image.display()
            )
        })?;
    let table: serde_json::Value = serde_json::from_str(&table)?;
    let start = table["partitiontable"]["partitions"]
        .get(partition as usize - 1)
        .and_then(|p| p["start"].as_u64())
        .with_context(|| format!("{} has no partition {partition}", image.display()))?;
    Ok(format!("{}@@{}", image.display(), start * 512))
}

/// Reads a text file from the FAT partition.
pub fn read_text(sh: &Shell, fat: &str, name: &str) -> Result<String> {
    cmd!(sh, "mtype -i {fat} ::{name}")
        .env("MTOOLS_SKIP_CHECK", "1")
        .quiet()
        .read()
        .with_context(|| format!("cannot read {name} from the boot partition"))
}

/// Copies the kernel and initrd out of the image into `dir` and composes the command line.
pub fn extract(sh: &Shell, image: &Path, pi: &PiKernel, dir: &Path) -> Result<BootMedia> {
    let fat = mtools_image(sh, image, pi.partition)?;
    let files = parse_config_txt(&read_text(sh, &fat, "config.txt")?)?;
    let cmdline = read_text(sh, &fat, "cmdline.txt")?;
    let copy_out = |name: &str| -> Result<PathBuf> {
        let to = dir.join(name);
        let from = format!("::{name}");
        cmd!(sh, "mcopy -o -n -i {fat} {from} {to}")
            .env("MTOOLS_SKIP_CHECK", "1")
            .quiet()
            .run()
            .with_context(|| format!("config.txt names {name}, which the boot partition lacks"))?;
        Ok(to)
    };
    let kernel = copy_out(&files.kernel)?;
    let initramfs = files
        .initramfs
        .context("config.txt names no initramfs; the image's root needs one")?;
    let initrd = copy_out(&initramfs)?;
    ensure!(
        !cmdline.trim().is_empty(),
        "cmdline.txt on the boot partition is empty"
    );
    Ok(BootMedia::Kernel {
        kernel,
        initrd,
        append: format!("{} {}", cmdline.trim(), pi.extra_cmdline),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pi4_section_and_the_last_setting_win() {
        let text = "# comment\nkernel=old\n[pi3]\nkernel=pi3-kernel\n[pi4]\narm_64bit=1\n\
                    kernel=vmlinuz-6.12\ninitramfs initrd.img-6.12 followkernel\n[all]\n";
        assert_eq!(
            parse_config_txt(text).unwrap(),
            PiBootFiles {
                kernel: "vmlinuz-6.12".into(),
                initramfs: Some("initrd.img-6.12".into()),
            }
        );
    }

    #[test]
    fn a_config_without_a_kernel_is_refused() {
        assert!(parse_config_txt("[pi4]\narm_64bit=1\n").is_err());
    }

    /// The layout test of the published Pi image (`out/clawfort-rpi.img.xz`, made by
    /// `cargo xtask image --target rpi`): what the Pi 4's boot ROM and Debian's initramfs need
    /// to find on it. `cargo test -p xtask the_built_pi_image -- --ignored`.
    #[test]
    #[ignore = "needs out/clawfort-rpi.img.xz from `cargo xtask image --target rpi`"]
    fn the_built_pi_image_has_the_layout_the_pi_boot_rom_expects() {
        use crate::image::{layout::ArtifactNames, Format, Target};
        let name = crate::image::load_definition(&[], Target::Rpi)
            .unwrap()
            .image
            .image
            .name;
        let out = crate::project_root().join("out");
        let names = ArtifactNames::new(out, &name, Target::Rpi);
        let artifact = names.path(Format::ImgXz);
        assert!(artifact.is_file(), "{} is missing", artifact.display());
        let dir = tempfile::tempdir().unwrap();
        let image = dir
            .path()
            .join(names.decompressed_img().file_name().unwrap());
        let sh = Shell::new().unwrap();
        crate::qemu::disk::decompress_xz_sparse(&sh, &artifact, &image).unwrap();

        // The partition table: MBR, FAT32 (LBA) boot partition at 4 MiB marked bootable, then
        // a Linux partition, nothing after it so first boot can grow it.
        let table = cmd!(sh, "sfdisk --json {image}").read().unwrap();
        let table: serde_json::Value = serde_json::from_str(&table).unwrap();
        let table = &table["partitiontable"];
        assert_eq!(table["label"], "dos");
        let disk_id = table["id"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x")
            .to_owned();
        let parts = table["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert_eq!(parts[0]["start"], 8192);
        assert_eq!(parts[0]["type"], "c");
        assert_eq!(parts[0]["bootable"], true);
        assert_eq!(parts[1]["type"], "83");
        let boot_end = parts[0]["start"].as_u64().unwrap() + parts[0]["size"].as_u64().unwrap();
        assert_eq!(parts[1]["start"].as_u64().unwrap(), boot_end);
        let image_sectors = std::fs::metadata(&image).unwrap().len() / 512;
        assert_eq!(
            parts[1]["start"].as_u64().unwrap() + parts[1]["size"].as_u64().unwrap(),
            image_sectors
        );

        // The FAT: what the boot ROM loads for a Pi 4, 400 and CM4, and the seed files.
        let fat = mtools_image(&sh, &image, 1).unwrap();
        let label = cmd!(sh, "mlabel -s -i {fat} ::")
            .env("MTOOLS_SKIP_CHECK", "1")
            .read()
            .unwrap();
        assert!(label.contains("CIDATA"), "volume label: {label}");
        let listing = cmd!(sh, "mdir -b -i {fat} ::")
            .env("MTOOLS_SKIP_CHECK", "1")
            .read()
            .unwrap();
        let files: Vec<&str> = listing
            .lines()
            .map(|line| line.trim_start_matches("::/"))
            .collect();
        for needed in [
            "start4.elf",
            "fixup4.dat",
            "bcm2711-rpi-4-b.dtb",
            "bcm2711-rpi-400.dtb",
            "bcm2711-rpi-cm4-io.dtb",
            "config.txt",
            "cmdline.txt",
            "user-data",
            "meta-data",
        ] {
            assert!(files.contains(&needed), "{needed} missing from {files:?}");
        }
        let config = read_text(&sh, &fat, "config.txt").unwrap();
        for line in ["arm_64bit=1", "enable_uart=1"] {
            assert!(
                config.lines().any(|l| l.trim() == line),
                "{line} missing:\n{config}"
            );
        }
        let boot_files = parse_config_txt(&config).unwrap();
        assert!(
            files.contains(&boot_files.kernel.as_str()),
            "{boot_files:?}"
        );
        let initramfs = boot_files.initramfs.unwrap();
        assert!(files.contains(&initramfs.as_str()), "{initramfs}");

        // cmdline.txt: the root by this disk's PARTUUID, and the serial console.
        let cmdline = read_text(&sh, &fat, "cmdline.txt").unwrap();
        assert_eq!(
            cmdline.lines().count(),
            1,
            "cmdline.txt must be one line: {cmdline}"
        );
        let words: Vec<&str> = cmdline.split_whitespace().collect();
        assert!(
            words.contains(&format!("root=PARTUUID={disk_id}-02").as_str()),
            "{cmdline}"
        );
        for word in ["console=ttyS1,115200", "rootwait", "rw"] {
            assert!(words.contains(&word), "{word} missing: {cmdline}");
        }
        let user_data = read_text(&sh, &fat, "user-data").unwrap();
        assert!(user_data.starts_with("#cloud-config"), "{user_data}");
    }
}
