//! `qemu/<target>.toml`: how one target boots under QEMU (machine, CPU per accelerator,
//! firmware or kernel, devices). Data, so a new target is a new file, not new Rust.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clawfort_imagedef::Target;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// The QEMU system emulator, e.g. `qemu-system-x86_64`.
    pub binary: String,
    /// `-machine` value, e.g. `q35` or `virt`.
    pub machine: String,
    pub memory_mib: u32,
    pub smp: u32,
    pub accel: Accelerators,
    pub boot: Boot,
    pub devices: Devices,
    /// What the host needs to boot this machine (emulator, firmware, the tools that read the
    /// boot files), installed and reported with the tools every boot needs
    /// (`image::host_tools`).
    pub host_tools: Vec<crate::image::host_tools::HostTool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accelerators {
    /// Absent when KVM cannot run this guest on this host (an ARM guest on an x86_64 host).
    pub kvm: Option<AccelSettings>,
    pub tcg: AccelSettings,
}

/// What QEMU starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum Boot {
    /// UEFI firmware in pflash, which boots the image's own boot loader.
    #[serde(rename = "uefi")]
    Uefi(Firmware),
    /// The kernel, initrd and command line the Raspberry Pi's boot ROM would load, read from the
    /// image's FAT boot partition (config.txt names them). The Pi's boot ROM itself cannot be
    /// emulated usefully: QEMU's raspi4b has no PCIe or Ethernet, so this boots on `virt`.
    #[serde(rename = "pi-kernel")]
    PiKernel(PiKernel),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiKernel {
    /// MBR partition number of the FAT boot partition.
    pub partition: u32,
    /// Appended to cmdline.txt: the serial console of the emulated machine.
    pub extra_cmdline: String,
}

/// The `-accel` and `-cpu` values to use with one accelerator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccelSettings {
    pub accel: String,
    pub cpu: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    /// Read-only firmware code (pflash unit 0).
    pub code: PathBuf,
    /// Pristine variable store, copied per boot (pflash unit 1).
    pub vars: PathBuf,
    /// Text the firmware prints on the serial console early in every boot.
    pub ready_marker: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    pub disk: String,
    pub nic: String,
    pub rng: String,
}

impl Machine {
    /// Reads `qemu/<target>.toml` under the project root, and checks that its firmware is
    /// installed.
    pub fn load(project_root: &Path, target: Target) -> Result<Machine> {
        let machine = Self::read(project_root, target.name())?;
        if let Boot::Uefi(firmware) = &machine.boot {
            for (key, file) in [("boot.code", &firmware.code), ("boot.vars", &firmware.vars)] {
                anyhow::ensure!(
                    file.is_file(),
                    "qemu/{target}.toml: `{key}` = {} does not exist (install the firmware \
                     package its `[[host_tools]]` names: `cargo xtask doctor --target {target}`)",
                    file.display()
                );
            }
        }
        Ok(machine)
    }

    /// Reads `qemu/<target>.toml` under the project root without looking at the host, for
    /// the host-tool lists (which must be readable before the firmware is installed).
    pub fn read(project_root: &Path, target: &str) -> Result<Machine> {
        let path = project_root.join("qemu").join(format!("{target}.toml"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no QEMU machine definition for target `{target}`: cannot read {} \
                 (add qemu/{target}.toml, or pick a target that has one)",
                path.display()
            )
        })?;
        toml::from_str(&text)
            .with_context(|| format!("invalid QEMU machine definition {}", path.display()))
    }
}
