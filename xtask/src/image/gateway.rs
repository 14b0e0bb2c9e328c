//! Stage `gateway`: the `clawfort` binary for the target's Rust triple, installed in the image
//! as `/usr/bin/clawfort`. Cargo does the caching: an unchanged gateway builds in a second.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use xshell::{cmd, Shell};

use super::progress::StageProgress;
use super::stage::Runner;
use super::Profile;

pub const IMAGE_PATH: &str = "/usr/bin/clawfort";

/// The stage: always run, as cargo's incremental build is the cache.
pub fn run(runner: &mut Runner, profile: &Profile) -> Result<PathBuf> {
    runner.always("gateway", |s| {
        let binary = build(
            s,
            &profile.layout.repo,
            &profile.definition.target.rust_triple,
            profile.gateway_binary.as_deref(),
        )?;
        Ok((binary, "cargo build (incremental)"))
    })
}

/// Builds the gateway for `triple` (adding the Rust target through rustup when it is
/// missing), or checks a prebuilt binary given with `--gateway-binary`.
fn build(
    stage: &mut StageProgress,
    repo: &Path,
    triple: &str,
    prebuilt: Option<&Path>,
) -> Result<PathBuf> {
    if let Some(binary) = prebuilt {
        ensure!(
            binary.is_file(),
            "--gateway-binary {}: no such file",
            binary.display()
        );
        stage.step(format!("using prebuilt {}", binary.display()));
        return Ok(binary.to_path_buf());
    }
    let sh = Shell::new()?;
    sh.change_dir(repo);
    ensure_rust_target(stage, &sh, triple)?;
    let metadata = stage.run(cmd!(sh, "cargo metadata --format-version 1 --no-deps"))?;
    let metadata: serde_json::Value =
        serde_json::from_str(&metadata).context("cargo metadata printed invalid JSON")?;
    let mut target_dir = PathBuf::from(
        metadata["target_directory"]
            .as_str()
            .context("cargo metadata has no target_directory")?,
    );
    // Every cargo build locks the host's release directory (build scripts, proc macros), even
    // one for another triple. A cross build in its own target directory never waits for, or
    // holds up, the host's builds: CI cross-builds the ARM gateway beside the x86_64 probes.
    let host = cmd!(sh, "rustc -vV").quiet().read()?;
    let native = host
        .lines()
        .any(|line| line.strip_prefix("host: ") == Some(triple));
    if !native {
        target_dir.push("cross");
    }
    stage.step(format!(
        "cargo build --release -p clawfort --target {triple}"
    ));
    stage.run(cmd!(
        sh,
        "cargo build --release -p clawfort --target {triple} --target-dir {target_dir}"
    ))?;
    let binary = target_dir.join(triple).join("release").join("clawfort");
    ensure!(
        binary.is_file(),
        "cargo built the gateway but {} does not exist",
        binary.display()
    );
    Ok(binary)
}

/// Adds the Rust target through rustup when it is missing. Under the host-setup lock: two
/// builds adding the same target at once (CI builds aarch64 and rpi side by side) race in
/// rustup's download directory and one fails ("could not rename 'downloaded' file").
fn ensure_rust_target(stage: &mut StageProgress, sh: &Shell, triple: &str) -> Result<()> {
    let installed = || -> Option<bool> {
        let list = cmd!(sh, "rustup target list --installed")
            .quiet()
            .read()
            .ok()?;
        Some(list.lines().any(|line| line.trim() == triple))
    };
    // No rustup: the toolchain's own target set decides, and cargo's error will say so.
    if installed().unwrap_or(true) {
        return Ok(());
    }
    let _lock = super::host_tools::host_setup_lock()?;
    if installed().unwrap_or(true) {
        return Ok(());
    }
    stage.run(cmd!(sh, "rustup target add {triple}"))?;
    Ok(())
}
