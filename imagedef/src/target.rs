//! The machines an image is built for, as a closed set: `--target` of every command parses into
//! a [`Target`], so a misspelt name is refused by the argument parser with the list of known
//! ones, before anything is loaded. What a target *is* stays data: `image/targets/<t>.toml`
//! (architecture, packages, disk layout, formats) and `qemu/<t>.toml` (how it boots); a test
//! checks that every variant has both files and that no file lacks its variant.

use std::fmt;

/// A target machine: selects `image/targets/<target>.toml` and `qemu/<target>.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Target {
    /// UEFI PCs, servers and clouds (GPT, systemd-boot; raw and qcow2).
    #[default]
    #[cfg_attr(feature = "clap", value(name = "x86_64"))]
    X86_64,
    /// UEFI ARM servers and clouds (GPT, systemd-boot; raw and qcow2).
    Aarch64,
    /// Raspberry Pi 4, 400 and CM4 (MBR, the Pi's boot ROM; img.xz and bmap).
    Rpi,
}

impl Target {
    /// Every target, in the order the help lists them.
    pub const ALL: [Target; 3] = [Target::X86_64, Target::Aarch64, Target::Rpi];

    /// The name on the command line, in file names (`image/targets/<name>.toml`, artifacts)
    /// and in `target.name`.
    pub fn name(self) -> &'static str {
        match self {
            Target::X86_64 => "x86_64",
            Target::Aarch64 => "aarch64",
            Target::Rpi => "rpi",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    /// The enum is the closed set and the files are the data: they must name the same targets.
    #[test]
    fn every_target_has_its_files_and_every_file_its_target() {
        let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
        for dir in ["image/targets", "qemu"] {
            let mut files = crate::known_targets(&repo().join(dir));
            files.sort();
            let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            expected.sort();
            assert_eq!(files, expected, "{dir}/*.toml against `Target`");
        }
    }
}
