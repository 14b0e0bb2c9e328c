//! `qemu/<target>.toml`: how one target boots under QEMU (machine, CPU per accelerator,
//! firmware, devices). Data, so a new target is a new file, not new Rust.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
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
    pub firmware: Firmware,
    pub devices: Devices,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accelerators {
    pub kvm: AccelSettings,
    pub tcg: AccelSettings,
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
    /// Reads `qemu/<target>.toml` under the project root.
    pub fn load(project_root: &Path, target: &str) -> Result<Machine> {
        let path = project_root.join("qemu").join(format!("{target}.toml"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no QEMU machine definition for target `{target}`: cannot read {} \
                 (add qemu/{target}.toml, or pick a target that has one)",
                path.display()
            )
        })?;
        let machine: Machine = toml::from_str(&text)
            .with_context(|| format!("invalid QEMU machine definition {}", path.display()))?;
        for (key, file) in [
            ("firmware.code", &machine.firmware.code),
            ("firmware.vars", &machine.firmware.vars),
        ] {
            anyhow::ensure!(
                file.is_file(),
                "{}: `{key}` = {} does not exist (install the firmware package, e.g. `apt-get install ovmf`)",
                path.display(),
                file.display()
            );
        }
        Ok(machine)
    }
}
