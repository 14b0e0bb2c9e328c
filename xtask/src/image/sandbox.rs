//! Stage `sandbox`: the container root file system the gateway's tools run in, built from
//! Debian packages (`[sandbox].packages` on mmdebstrap's minbase) because no container
//! registry is reachable from the appliance's build or its users' networks by assumption.
//!
//! The result is a plain, uncompressed tar: `docker import` reads it in every Docker version,
//! and the qcow2 artifact compresses it anyway. It is cached by the hash of its inputs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use super::bootstrap::{prune_siblings, AptSetup};
use super::cache::{self, Fingerprint};
use super::config::LoadedConfig;
use super::progress::StageProgress;

const RECIPE: &str = "sandbox-1";

/// Where the tar lands inside the image; the first-boot unit `docker import`s it from here.
pub const IMAGE_PATH: &str = "/usr/lib/clawfort/sandbox-rootfs.tar";

pub struct SandboxTar {
    pub tar: PathBuf,
    pub key: String,
    pub reused: bool,
}

pub fn run(
    stage: &mut StageProgress,
    config: &LoadedConfig,
    apt: &AptSetup,
    cache_root: &Path,
    refresh: bool,
) -> Result<SandboxTar> {
    let mut packages = config.image.sandbox.packages.clone();
    packages.sort();
    let mut fingerprint = Fingerprint::new("sandbox");
    fingerprint
        .add("recipe", RECIPE)
        .add("arch", &config.target.debian_arch)
        .add("suite", &config.image.debian.suite)
        .add("packages", packages.join(","));
    apt.fingerprint_into(&mut fingerprint)?;
    let key = fingerprint.finish();

    let parent = cache_root.join("sandbox");
    let prefix = format!("{}-", config.target.debian_arch);
    let dir = parent.join(format!("{prefix}{}", &key[..16]));
    let tar = dir.join("sandbox-rootfs.tar");
    if !refresh && cache::stamp_matches(&dir, &key) && tar.is_file() {
        stage.step(format!("reusing {}", tar.display()));
        return Ok(SandboxTar {
            tar,
            key,
            reused: true,
        });
    }

    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    // mmdebstrap picks the output format from the name, so the partial file still ends in .tar.
    let partial = dir.join("partial.tar");
    let sh = Shell::new()?;
    let arch = format!("--arch={}", config.target.debian_arch);
    let include = format!("--include={}", packages.join(","));
    let extra = apt.mmdebstrap_args();
    let suite = &config.image.debian.suite;
    let sources = apt.sources();
    stage.step(format!("mmdebstrap minbase + {} packages", packages.len()));
    stage.run(cmd!(
        sh,
        "mmdebstrap --mode=root --variant=minbase {arch} {include} {extra...} {suite} {partial} {sources}"
    ))?;
    std::fs::rename(&partial, &tar)?;
    cache::write_stamp(&dir, &key)?;
    prune_siblings(&parent, &prefix, &dir)?;
    Ok(SandboxTar {
        tar,
        key,
        reused: false,
    })
}
