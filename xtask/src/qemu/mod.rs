//! Booting images under QEMU, shared by `cargo xtask run` and `cargo xtask e2e`: the per-target
//! machine definition (`qemu/<target>.toml`), the KVM-or-TCG decision, per-boot disks and
//! firmware variables, a private network for probing, and VM lifecycle with guaranteed
//! teardown.

pub mod accel;
pub mod cleanup;
pub mod disk;
pub mod machine;
pub mod netns;
pub mod vm;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub use machine::Machine;
pub use vm::{Console, Nic, Vm, VmSpec};

/// The repository root (the workspace that holds `qemu/`, `image/` and `out/`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the project root")
        .to_owned()
}

/// Copies the machine's pristine firmware variable store for one boot.
pub fn copy_firmware_vars(machine: &Machine, to: &Path) -> Result<()> {
    std::fs::copy(&machine.firmware.vars, to).with_context(|| {
        format!(
            "cannot copy firmware variables {} to {}",
            machine.firmware.vars.display(),
            to.display()
        )
    })?;
    Ok(())
}
