//! The cloud and hypervisor formats, each opt-in through `--format` (never a target's default:
//! each is one more pass over the disk, and CI pays for defaults). One function per format,
//! each made with the tool the cloud itself documents. The size rules are checked before
//! writing (a cloud would refuse the upload) and the VHD's footer after; the tests read every
//! format back by its rule:
//!
//! | format | cloud | rule |
//! |---|---|---|
//! | `vhd` | Azure | fixed VHD (`conectix` footer, disk type 2), virtual size a whole MiB |
//! | `gce-tar` | Google Compute Engine | one member named `disk.raw`, oldgnu tar, sparse, gzip; size a whole GiB |
//! | `vmdk` | vSphere, VirtualBox | stream-optimised VMDK |
//! | `ova` | VMware, VirtualBox | ustar: the OVF descriptor first, then the disk, then the SHA-256 manifest |
//! | `raw-zst` | bare metal, Hetzner | the raw disk through zstd |

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use xshell::{cmd, Shell};

use crate::image::cache;
use crate::image::progress::StageProgress;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// zstd's level for `raw-zst`. Measured on 512 MiB of the x86_64 root partition (BENCHMARKS.md,
/// "Cloud formats"): level 3 makes 228 MB in 1.4 s, level 9 215 MB in 5.6 s; the higher levels
/// buy a few percent more for many times the time, on a download that is a one-off.
const ZSTD_LEVEL: &str = "-9";

/// Azure: a fixed VHD whose virtual size is a whole MiB. `force_size` makes qemu-img keep the
/// exact size instead of rounding it to a CHS geometry (which would break the MiB rule).
pub fn vhd(stage: &mut StageProgress, sh: &Shell, disk: &Path, to: &Path) -> Result<()> {
    let size = disk_size(disk)?;
    ensure!(
        size % MIB == 0,
        "Azure needs a VHD whose virtual size is a whole MiB, but the disk {} is {size} bytes; \
         build it with a `--size` in whole MiB (e.g. 4G)",
        disk.display()
    );
    stage.step("vhd image (Azure, fixed)");
    stage.run(cmd!(
        sh,
        "qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on {disk} {to}"
    ))?;
    let footer = VhdFooter::read(to)?;
    ensure!(
        footer.disk_type == VhdFooter::FIXED && footer.current_size == size,
        "qemu-img wrote {} with a footer of disk type {} and size {} (want fixed = 2, {size}); \
         check the host's qemu-utils",
        to.display(),
        footer.disk_type,
        footer.current_size
    );
    Ok(())
}

/// Google Compute Engine: the disk as one sparse member named exactly `disk.raw` of a GNU
/// (oldgnu) tar, gzipped by pigz on every core. GCE takes only sizes in whole GiB.
pub fn gce_tar(stage: &mut StageProgress, sh: &Shell, disk: &Path, to: &Path) -> Result<()> {
    let size = disk_size(disk)?;
    ensure!(
        size % GIB == 0,
        "Compute Engine imports only disks of a whole number of GiB, but the disk {} is {size} \
         bytes; build it with a `--size` in whole GiB (e.g. 4G)",
        disk.display()
    );
    stage.step("gce.tar.gz (Compute Engine: disk.raw in oldgnu tar, gzip)");
    let scratch = Scratch::beside(to)?;
    let member = scratch.0.path().join("disk.raw");
    // A hard link costs nothing; across file systems a sparse copy does the same job.
    if std::fs::hard_link(disk, &member).is_err() {
        stage.run(cmd!(
            sh,
            "cp --sparse=always --reflink=auto {disk} {member}"
        ))?;
    }
    let dir = scratch.0.path();
    stage.run(cmd!(
        sh,
        "tar --format=oldgnu --sparse --owner=0 --group=0 --numeric-owner --use-compress-program=pigz -cf {to} -C {dir} disk.raw"
    ))?;
    Ok(())
}

/// VMware and VirtualBox: a stream-optimised VMDK (compressed grains, written in one pass).
pub fn vmdk(stage: &mut StageProgress, sh: &Shell, disk: &Path, to: &Path) -> Result<()> {
    stage.step("vmdk image (stream-optimised)");
    stage.run(cmd!(
        sh,
        "qemu-img convert -f raw -O vmdk -o subformat=streamOptimized {disk} {to}"
    ))?;
    Ok(())
}

/// The OVF descriptor's template, in the repository: the image is data.
pub const OVF_TEMPLATE: &str = "image/ova/appliance.ovf.tera";

/// What the OVA's descriptor names: the artifact's stem and where its template is.
pub struct Appliance<'a> {
    /// `<name>-<target>`: the virtual machine's name and the members' stem.
    pub stem: &'a str,
    /// The OVF 1.0 descriptor's tera template (`image/ova/appliance.ovf.tera`).
    pub template: &'a Path,
    /// The Debian suite, for the descriptor's description.
    pub suite: &'a str,
}

/// The descriptor's template context.
#[derive(Serialize)]
struct Descriptor<'a> {
    name: &'a str,
    suite: &'a str,
    vmdk_name: &'a str,
    vmdk_size: u64,
    capacity: u64,
    cpus: u32,
    memory_mib: u32,
}

/// VMware and VirtualBox: an OVA, a ustar archive of the OVF descriptor (first, as the OVF
/// specification requires), the stream-optimised disk, and the manifest of both's SHA-256.
pub fn ova(
    stage: &mut StageProgress,
    sh: &Shell,
    disk: &Path,
    to: &Path,
    appliance: &Appliance<'_>,
) -> Result<()> {
    let scratch = Scratch::beside(to)?;
    let dir = scratch.0.path();
    let names = OvaMembers::of(appliance.stem);
    vmdk(stage, sh, disk, &dir.join(&names.vmdk))?;
    stage.step("OVF descriptor and manifest");
    let template = std::fs::read_to_string(appliance.template)
        .with_context(|| format!("cannot read {}", appliance.template.display()))?;
    let descriptor = Descriptor {
        name: appliance.stem,
        suite: appliance.suite,
        vmdk_name: &names.vmdk,
        vmdk_size: disk_size(&dir.join(&names.vmdk))?,
        capacity: disk_size(disk)?,
        // What `cargo xtask run` gives it (qemu/x86_64.toml); the hypervisor's user may change it.
        cpus: 2,
        memory_mib: 2048,
    };
    let context = tera::Context::from_serialize(&descriptor)?;
    let ovf = tera::Tera::one_off(&template, &context, true)
        .with_context(|| format!("cannot render {}", appliance.template.display()))?;
    std::fs::write(dir.join(&names.ovf), ovf)?;
    let mut manifest = String::new();
    for member in [&names.ovf, &names.vmdk] {
        let digest = cache::sha256_file(&dir.join(member))?;
        manifest.push_str(&format!("SHA256({member})= {digest}\n"));
    }
    std::fs::write(dir.join(&names.mf), manifest)?;
    stage.step("ova archive (ustar: descriptor, disk, manifest)");
    let [ovf, vmdk, mf] = names.in_order();
    stage.run(cmd!(
        sh,
        "tar --format=ustar --owner=0 --group=0 --numeric-owner -cf {to} -C {dir} {ovf} {vmdk} {mf}"
    ))?;
    Ok(())
}

/// The member names of an OVA, in the order the archive holds them.
struct OvaMembers {
    ovf: String,
    vmdk: String,
    mf: String,
}

impl OvaMembers {
    fn of(stem: &str) -> Self {
        Self {
            ovf: format!("{stem}.ovf"),
            vmdk: format!("{stem}-disk1.vmdk"),
            mf: format!("{stem}.mf"),
        }
    }

    fn in_order(&self) -> [&str; 3] {
        [&self.ovf, &self.vmdk, &self.mf]
    }
}

/// Bare metal and Hetzner's rescue system: the raw disk through zstd on every core
/// (`zstd -dc <file> | dd of=/dev/sda`).
pub fn raw_zst(stage: &mut StageProgress, sh: &Shell, disk: &Path, to: &Path) -> Result<()> {
    stage.step("raw.zst image (compressed)");
    stage.run_to_file(cmd!(sh, "zstd -T0 {ZSTD_LEVEL} -q -c {disk}"), to)
}

fn disk_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("cannot read the size of {}", path.display()))?
        .len())
}

/// A directory beside an artifact for the members of an archive, removed afterwards: on the
/// artifact's file system, so the disk can be hard-linked into it. Named after the artifact's
/// `.partial` file, so [`remove_leftovers`] finds what a killed build left of it.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn beside(artifact: &Path) -> Result<Self> {
        let parent = artifact
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let dir = tempfile::Builder::new()
            .prefix(&scratch_prefix(artifact))
            .tempdir_in(&parent)
            .with_context(|| format!("cannot make a scratch directory in {}", parent.display()))?;
        Ok(Self(dir))
    }
}

fn scratch_prefix(artifact: &Path) -> String {
    let name = artifact.file_name().unwrap_or_default().to_string_lossy();
    format!("{name}.members-")
}

/// Removes the scratch directories a killed build left beside `artifact` (each may hold a hard
/// link to an old disk, keeping its blocks allocated).
pub fn remove_leftovers(artifact: &Path) {
    let (Some(parent), prefix) = (artifact.parent(), scratch_prefix(artifact)) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The 512-byte footer at the end of every VHD (Microsoft's "Virtual Hard Disk Image Format
/// Specification"): the fields Azure checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdFooter {
    /// The disk's size in bytes as the guest sees it.
    pub current_size: u64,
    /// 2 fixed, 3 dynamic, 4 differencing.
    pub disk_type: u32,
}

impl VhdFooter {
    pub const FIXED: u32 = 2;
    const LEN: usize = 512;

    /// The footer of the VHD file at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        file.seek(SeekFrom::End(-(Self::LEN as i64)))
            .with_context(|| format!("{} is shorter than a VHD footer", path.display()))?;
        let mut bytes = [0u8; Self::LEN];
        file.read_exact(&mut bytes)?;
        Self::parse(&bytes).with_context(|| format!("{} has no valid VHD footer", path.display()))
    }

    /// Checks the cookie and the checksum (the ones' complement of the sum of every byte but
    /// the checksum's own four) and reads the size and type.
    pub fn parse(bytes: &[u8; Self::LEN]) -> Result<Self> {
        if &bytes[0..8] != b"conectix" {
            bail!("the cookie is not `conectix`");
        }
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4"));
        let stored = u32_at(64);
        let sum = bytes
            .iter()
            .enumerate()
            .filter(|(at, _)| !(64..68).contains(at))
            .fold(0u32, |sum, (_, byte)| sum.wrapping_add(u32::from(*byte)));
        ensure!(
            !sum == stored,
            "the checksum is {stored:#x}, the bytes sum to the complement of {:#x}",
            !sum
        );
        Ok(Self {
            current_size: u64::from_be_bytes(bytes[48..56].try_into().expect("8")),
            disk_type: u32_at(60),
        })
    }
}

#[cfg(test)]
mod tests;
