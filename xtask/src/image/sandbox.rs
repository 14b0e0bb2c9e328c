//! Stage `sandbox`: the container root file system the gateway's tools run in, built from
//! Debian packages (`[sandbox].packages` on mmdebstrap's minbase) because no container
//! registry is reachable from the appliance's build or its users' networks by assumption.
//!
//! The result is a plain tar, cached by the hash of its inputs; customise loads it into the
//! service user's rootless Docker store (`customise/sandbox_store.rs`), so the image ships the
//! unpacked layer and no archive of it.

use std::path::PathBuf;

use anyhow::Result;
use xshell::{cmd, Shell};

use super::bootstrap::{prune_siblings, AptSetup};
use super::cache::Fingerprint;
use super::stage::{Runner, Stage};
use super::Profile;

const RECIPE: &str = "sandbox-5";

/// The tar's name in its cache entry.
const TAR: &str = "sandbox-rootfs.tar";

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
        std::fs::rename(&partial, &tar)?;
        prune_siblings(&parent, &prefix, dir)
    })?;
    Ok(SandboxTar { tar, key })
}
