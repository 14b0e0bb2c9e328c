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
}

impl Format {
    /// The artifact's file name after `<name>-<target>.`.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::ImgXz => "img.xz",
            Format::Bmap => "img.bmap",
        }
    }
}
