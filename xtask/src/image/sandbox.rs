//! Stage `sandbox`: the container root file system the gateway's tools run in, built from
//! Debian packages (`[sandbox].packages` on mmdebstrap's minbase) because no container
//! registry is reachable from the appliance's build or its users' networks by assumption.
//!
//! The result is a zstd-compressed tar (`docker import` reads zstd since Docker 23; trixie has
//! 26). Level 19 with a 128 MiB window makes it a fifth of the plain tar, about 10 MiB less
//! than level 9 and far less than the qcow2's own zlib would make of it: that keeps the
//! compressed image under its size budget, and zstd still unpacks it fast at first boot. It is
//! cached by the hash of its inputs, so the two-minute compression runs only when the sandbox
//! changes.

use std::path::PathBuf;

use anyhow::Result;
use xshell::{cmd, Shell};

use super::bootstrap::{prune_siblings, AptSetup};
use super::cache::Fingerprint;
use super::stage::{Runner, Stage};
use super::Profile;

const RECIPE: &str = "sandbox-4";

/// Where the tar lands inside the image; the first-boot unit `docker import`s it from here.
pub const IMAGE_PATH: &str = "/usr/lib/clawfort/sandbox-rootfs.tar.zst";

/// The tar's name in its cache entry.
const TAR: &str = "sandbox-rootfs.tar.zst";

pub struct SandboxTar {
    pub tar: PathBuf,
    pub key: String,
}

pub fn run(runner: &mut Runner, profile: &Profile, apt: &AptSetup) -> Result<SandboxTar> {
    let config = &profile.definition;
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

    let parent = profile.layout.cache_stage("sandbox");
    let prefix = format!("{}-", config.target.debian_arch);
    let dir = parent.join(format!("{prefix}{}", &key[..16]));
    let tar = dir.join(TAR);
    let stage = Stage::new("sandbox", dir.clone(), key.clone())
        .ready(|dir| dir.join(TAR).is_file())
        .force(profile.refresh);
    runner.cached(stage, |stage, dir| {
        // mmdebstrap picks the output format from the name, so the partial file still ends in .tar.
        let partial = dir.join("partial.tar");
        let sh = Shell::new()?;
        let arch = format!("--arch={}", config.target.debian_arch);
        let include = format!("--include={}", packages.join(","));
        let mut extra = apt.mmdebstrap_args();
        extra.extend(AptSetup::cleanup_hooks());
        extra.extend(AptSetup::deferral_hooks(&config.image.debian.initramfs));
        let suite = &config.image.debian.suite;
        let sources = apt.sources();
        stage.step(format!("mmdebstrap minbase + {} packages", packages.len()));
        stage.run(cmd!(
            sh,
            "mmdebstrap --mode=root --variant=minbase {arch} {include} {extra...} {suite} {partial} {sources}"
        ))?;
        stage.step("zstd -19 --long=27");
        let compressed = dir.join("partial.tar.zst");
        stage.run(cmd!(
            sh,
            "zstd -q -T0 -19 --long=27 --rm {partial} -o {compressed}"
        ))?;
        std::fs::rename(&compressed, &tar)?;
        prune_siblings(&parent, &prefix, dir)
    })?;
    Ok(SandboxTar { tar, key })
}
