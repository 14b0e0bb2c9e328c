//! Booting images under QEMU, shared by `cargo xtask run` and `cargo xtask e2e`: the per-target
//! machine definition (`qemu/<target>.toml`), the KVM-or-TCG decision, per-boot disks and
//! firmware variables, a private network for probing, and VM lifecycle with guaranteed
//! teardown.

pub mod accel;
pub mod cleanup;
pub mod disk;
pub mod machine;
pub mod netns;
pub mod pi_boot;
pub mod vm;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub use machine::Machine;
pub use vm::{Console, Nic, Vm, VmSpec};

/// What one VM boots from.
pub enum BootMedia {
    /// UEFI firmware code (read-only) and this boot's own copy of the variable store.
    Firmware { code: PathBuf, vars: PathBuf },
    /// A kernel started by QEMU itself, as the Raspberry Pi's boot ROM would start it.
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
}

/// Prepares the boot of `image` on `machine` in `dir`: a private copy of the firmware
/// variables (named after `tag`, one per VM), or the kernel files read from the image.
pub fn prepare_boot(
    sh: &xshell::Shell,
    machine: &Machine,
    image: &Path,
    dir: &Path,
    tag: &str,
) -> Result<BootMedia> {
    match &machine.boot {
        machine::Boot::Uefi(firmware) => {
            let vars = dir.join(format!("{tag}-vars.fd"));
            std::fs::copy(&firmware.vars, &vars).with_context(|| {
                format!(
                    "cannot copy firmware variables {} to {}",
                    firmware.vars.display(),
                    vars.display()
                )
            })?;
            Ok(BootMedia::Firmware {
                code: firmware.code.clone(),
                vars,
            })
        }
        machine::Boot::PiKernel(pi) => pi_boot::extract(sh, image, pi, dir),
    }
}
