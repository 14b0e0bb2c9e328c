//! The artifact formats a target's `formats` and `cargo xtask image --format` name.

/// One kind of file the builder writes for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Raw disk image `<name>-<target>.raw`: `dd` it to a disk, or upload it to a cloud.
    Raw,
    /// Compressed qcow2: QEMU/libvirt/Proxmox and clouds that import qcow2.
    Qcow2,
    /// `<name>-<target>.img.xz`: Raspberry Pi Imager, `xz -dc | dd`, `bmaptool copy`.
    ImgXz,
    /// `<name>-<target>.img.bmap`: the map of the image's used blocks for `bmaptool copy`,
    /// which then writes only those (minutes less on an SD card).
    Bmap,
    /// `<name>-<target>.vhd`: Azure's fixed VHD, its virtual size a whole MiB
    /// (`az storage blob upload --type page`, then `az image create`). Opt-in: never in a
    /// target's default `formats`, as each cloud format costs CI a full pass over the disk.
    Vhd,
    /// `<name>-<target>.gce.tar.gz`: Google Compute Engine's import archive, one sparse
    /// `disk.raw` member in an oldgnu tar, gzipped (`gcloud compute images create
    /// --source-uri`).
    GceTar,
    /// `<name>-<target>.vmdk`: a stream-optimised VMDK (vSphere, ESXi, VirtualBox, AWS import).
    Vmdk,
    /// `<name>-<target>.ova`: an OVF 1.0 appliance (descriptor, stream-optimised VMDK,
    /// SHA-256 manifest) for VMware and VirtualBox.
    Ova,
    /// `<name>-<target>.raw.zst`: the raw disk compressed with zstd, for bare metal and
    /// rescue-system installs (`zstd -dc | dd`, Hetzner's rescue system).
    RawZst,
}

impl Format {
    /// The artifact's file name after `<name>-<target>.`.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::ImgXz => "img.xz",
            Format::Bmap => "img.bmap",
            Format::Vhd => "vhd",
            Format::GceTar => "gce.tar.gz",
            Format::Vmdk => "vmdk",
            Format::Ova => "ova",
            Format::RawZst => "raw.zst",
        }
    }
}
