//! Stage `bootstrap`: a Debian root file system for the target's architecture, made by
//! mmdebstrap from `[debian]` plus the target's packages. Also home of the mmdebstrap plumbing
//! the `sandbox` stage shares: the deb822 sources, the persistent `.deb` cache and the dpkg
//! path filters that keep documentation out of the image.
//!
//! The output is a directory in the persistent cache, keyed by the hash of its inputs, so it is
//! shared by every work directory (the e2e test variants reuse the main build's bootstrap).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clawfort_imagedef::InitramfsSection;
use xshell::{cmd, Shell};

use super::cache::Fingerprint;
use super::stage::{Runner, Stage};
use super::Profile;

/// Bump when the mmdebstrap invocation changes in a way the inputs below do not show.
const RECIPE: &str = "bootstrap-4";

/// Programs that package scripts run once per package but whose work only needs doing once,
/// at the end: replaced by a no-op for the install (dpkg-divert keeps the real one aside) and
/// run once afterwards. Under qemu-user emulation the arm64 initramfs alone took three and a
/// half minutes per run, and was built three times.
const DEFERRED: [&str; 2] = ["/usr/sbin/update-initramfs", "/usr/bin/py3compile"];

pub struct Bootstrapped {
    pub rootfs: PathBuf,
    pub key: String,
}

/// mmdebstrap options shared by every root file system this builder makes.
pub struct AptSetup {
    sources: PathBuf,
    deb_cache: PathBuf,
    path_exclude: Vec<String>,
    path_include: Vec<String>,
}

impl AptSetup {
    /// Writes the deb822 sources for the configured suite and makes the `.deb` cache for the
    /// target. One cache per target, not per architecture: the targets' builds run in
    /// parallel, and mmdebstrap copies its cache in and out without any locking.
    pub fn prepare(profile: &Profile) -> Result<Self> {
        let debian = &profile.definition.image.debian;
        let deb_cache = profile.layout.deb_cache(profile.target);
        let work = &profile.layout.apt_dir();
        std::fs::create_dir_all(&deb_cache)
            .with_context(|| format!("cannot create the .deb cache {}", deb_cache.display()))?;
        std::fs::create_dir_all(work)?;
        let components = debian.components.join(" ");
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let suite = &debian.suite;
        let text = format!(
            "Types: deb\nURIs: {}\nSuites: {suite} {suite}-updates\nComponents: {components}\n\
             Signed-By: {keyring}\n\n\
             Types: deb\nURIs: {}\nSuites: {suite}-security\nComponents: {components}\n\
             Signed-By: {keyring}\n",
            debian.mirror, debian.security_mirror
        );
        let sources = work.join("debian.sources");
        std::fs::write(&sources, text)
            .with_context(|| format!("cannot write {}", sources.display()))?;
        Ok(Self {
            sources,
            deb_cache,
            path_exclude: debian.path_exclude.clone(),
            path_include: debian.path_include.clone(),
        })
    }

    pub fn fingerprint_into(&self, fingerprint: &mut Fingerprint) -> Result<()> {
        fingerprint.add_file("sources", &self.sources)?;
        fingerprint.add("path-exclude", self.path_exclude.join("\n"));
        fingerprint.add("path-include", self.path_include.join("\n"));
        Ok(())
    }

    /// Arguments that make mmdebstrap take `.deb`s from the persistent cache and put new ones
    /// back, apply `debian.path_exclude`/`path_include`, and leave no `.deb` or apt list behind.
    pub fn mmdebstrap_args(&self) -> Vec<String> {
        let cache = self.deb_cache.display();
        let mut args: Vec<String> = [
            "--skip=download/empty",
            "--skip=essential/unlink",
            "--aptopt=Acquire::Languages \"none\"",
        ]
        .map(str::to_owned)
        .to_vec();
        // dpkg reads these in order and the last match wins, so includes come last.
        for glob in &self.path_exclude {
            args.push(format!("--dpkgopt=path-exclude={glob}"));
        }
        for glob in &self.path_include {
            args.push(format!("--dpkgopt=path-include={glob}"));
        }
        args.push("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives".to_owned());
        args.push(format!(
            "--setup-hook=sync-in {cache} /var/cache/apt/archives/"
        ));
        args.push(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {cache}"
        ));
        args.push(
            "--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb \"$1\"/var/cache/apt/*.bin"
                .to_owned(),
        );
        args.push(
            "--customize-hook=find \"$1\"/var/lib/apt/lists -type f ! -name lock -delete"
                .to_owned(),
        );
        args
    }

    /// Hooks that make package installation cheap under emulation: dpkg without fsync
    /// (mmdebstrap's eatmydata hooks), and [`DEFERRED`] programs run once at the end instead of
    /// once per package. The initramfs is compressed as `debian.initramfs.compress` says.
    pub fn deferral_hooks(initramfs: &InitramfsSection) -> Vec<String> {
        let mut args = vec!["--hook-dir=/usr/share/mmdebstrap/hooks/eatmydata".to_owned()];
        for program in DEFERRED {
            args.push(format!(
                "--essential-hook=chroot \"$1\" dpkg-divert --quiet --local --rename --add {program} \
                 && printf '#!/bin/sh\\nexit 0\\n' > \"$1\"{program} && chmod 755 \"$1\"{program}"
            ));
        }
        args.push(format!(
            "--essential-hook=mkdir -p \"$1\"/etc/initramfs-tools/conf.d && echo COMPRESS={} \
             > \"$1\"/etc/initramfs-tools/conf.d/clawfort-compress.conf",
            initramfs.compress
        ));
        for program in DEFERRED {
            args.push(format!(
                "--customize-hook=rm -f \"$1\"{program} \
                 && chroot \"$1\" dpkg-divert --quiet --local --rename --remove {program}"
            ));
        }
        // Debian's py3compile compiles each package's modules; compileall does all of them in
        // one run on every core. A module that does not compile is reported and left as source,
        // as py3compile does.
        args.push(
            "--customize-hook=if [ -x \"$1\"/usr/bin/python3 ]; then chroot \"$1\" python3 -m \
             compileall -q -j 0 /usr/lib/python3/dist-packages || true; fi"
                .to_owned(),
        );
        args.push(
            "--customize-hook=if ls \"$1\"/boot/vmlinuz-* >/dev/null 2>&1; then chroot \"$1\" \
             update-initramfs -c -k all; fi"
                .to_owned(),
        );
        args
    }

    pub fn sources(&self) -> &Path {
        &self.sources
    }
}

pub fn run(runner: &mut Runner, profile: &Profile, apt: &AptSetup) -> Result<Bootstrapped> {
    let config = &profile.definition;
    let debian = &config.image.debian;
    let mut packages = debian.packages.clone();
    packages.push(debian.initramfs.package.clone());
    packages.sort();
    packages.dedup();
    let mut fingerprint = Fingerprint::new("bootstrap");
    fingerprint
        .add("recipe", RECIPE)
        .add("arch", &config.target.debian_arch)
        .add("suite", &debian.suite)
        .add("packages", packages.join(","))
        .add("initramfs-compress", &debian.initramfs.compress);
    apt.fingerprint_into(&mut fingerprint)?;
    let key = fingerprint.finish();

    let parent = profile.layout.cache_stage("bootstrap");
    let prefix = format!("{}-", config.target.name);
    let dir = parent.join(format!("{prefix}{}", &key[..16]));
    let rootfs = dir.join("rootfs");
    let stage = Stage::new("bootstrap", dir.clone(), key.clone())
        .ready(|dir| dir.join("rootfs").is_dir())
        .force(profile.refresh);
    runner.cached(stage, |stage, dir| {
        let sh = Shell::new()?;
        let arch = format!("--arch={}", config.target.debian_arch);
        let include = format!("--include={}", packages.join(","));
        let mut extra = apt.mmdebstrap_args();
        extra.extend(AptSetup::deferral_hooks(&debian.initramfs));
        let suite = &debian.suite;
        let sources = apt.sources();
        stage.step(format!(
            "mmdebstrap {} packages for {} (cached .debs are reused)",
            packages.len(),
            config.target.debian_arch
        ));
        stage.run(cmd!(
            sh,
            "mmdebstrap --mode=root --variant=apt {arch} {include} {extra...} {suite} {rootfs} {sources}"
        ))?;
        // mmdebstrap names the copied sources file `0000<name>`; give it Debian's usual name.
        let copied = rootfs.join("etc/apt/sources.list.d/0000debian.sources");
        if copied.exists() {
            std::fs::rename(
                &copied,
                rootfs.join("etc/apt/sources.list.d/debian.sources"),
            )?;
        }
        prune_siblings(&parent, &prefix, dir)
    })?;
    Ok(Bootstrapped { rootfs, key })
}

/// Keeps one bootstrap per target in the cache: each is a full root file system.
pub fn prune_siblings(parent: &Path, prefix: &str, keep: &Path) -> Result<()> {
    for entry in std::fs::read_dir(parent)?.flatten() {
        let path = entry.path();
        let is_sibling = entry.file_name().to_string_lossy().starts_with(prefix);
        if is_sibling && path != keep {
            if path.is_dir() {
                super::cache::remove_tree(&path)
            } else {
                std::fs::remove_file(&path).map_err(anyhow::Error::from)
            }
            .with_context(|| format!("cannot prune old cache entry {}", path.display()))?;
        }
    }
    Ok(())
}
