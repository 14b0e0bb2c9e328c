//! Stage `bootstrap`: a Debian root file system for the target, in two cached layers:
//! - the **base** of the target's Debian architecture: mmdebstrap from `[debian]`, every
//!   package but the target's own, shared by the targets of that architecture;
//! - the target's **layer**: a copy of the base with the target's packages (kernel, boot
//!   loader, firmware) installed by the image's own apt in a chroot (after reading the
//!   mirror's indices: mmdebstrap leaves none), then the deferred work done once (initramfs,
//!   Python byte code) and apt's lists and caches removed.
//!
//! aarch64 and rpi share the arm64 base. Under qemu-user emulation a base takes about eight
//! minutes of a core, a layer three to six (BENCHMARKS.md). Also home of the mmdebstrap plumbing the `sandbox` stage
//! shares: the deb822 sources, the persistent `.deb` cache and the dpkg path filters that keep
//! documentation out of the image.
//!
//! Both are directories in the persistent cache, keyed by the hash of their inputs, so they are
//! shared by every work directory (the e2e test variants reuse the main build's bootstrap).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clawfort_imagedef::{InitramfsSection, LoadedConfig};
use xshell::{cmd, Shell};

use super::cache::{DirLock, Fingerprint};
use super::stage::{Runner, Stage};
use super::Profile;

/// Bump when the mmdebstrap invocation of the base changes in a way its inputs do not show.
const BASE_RECIPE: &str = "base-1";
/// Bump when the layer's making changes in a way its inputs do not show.
const RECIPE: &str = "bootstrap-5";

/// Programs that package scripts run once per package but whose work only needs doing once,
/// at the end: replaced by a no-op for the install (dpkg-divert keeps the real one aside) and
/// run once afterwards. Under qemu-user emulation the arm64 initramfs alone took three and a
/// half minutes per run, and was built three times.
const DEFERRED: [&str; 2] = ["/usr/sbin/update-initramfs", "/usr/bin/py3compile"];

/// mmdebstrap customize hooks (`$1` is the root) that leave no `.deb`, no apt cache and no apt
/// list in a finished root: all three for the sandbox and after a layer's install; the
/// `.deb`s alone for the base (mmdebstrap's own cleanup removes its lists).
const CLEAN_DEBS: &str = "--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb";
const CLEAN_ALL: [&str; 3] = [
    CLEAN_DEBS,
    "--customize-hook=rm -f \"$1\"/var/cache/apt/*.bin",
    "--customize-hook=find \"$1\"/var/lib/apt/lists -type f ! -name lock -delete",
];

/// The shell command of a customize hook, for the layer's script, which runs it itself.
fn hook_command(hook: &str) -> &str {
    hook.strip_prefix("--customize-hook=")
        .expect("every command the layer runs after its install is written as a customize hook")
}

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
    /// back, and apply `debian.path_exclude`/`path_include` (kept in the root's dpkg
    /// configuration, so later installs follow them too).
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
        args
    }

    /// For a root finished by mmdebstrap itself (the sandbox): the cleanup of [`CLEAN_ALL`].
    pub fn cleanup_hooks() -> Vec<String> {
        CLEAN_ALL.map(str::to_owned).to_vec()
    }

    /// Hooks that make package installation cheap under emulation: dpkg without fsync
    /// (mmdebstrap's eatmydata hooks), and [`DEFERRED`] programs replaced by no-ops for the
    /// install. The initramfs is compressed as `debian.initramfs.compress` says.
    pub fn divert_hooks(initramfs: &InitramfsSection) -> Vec<String> {
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
        args
    }

    /// What [`divert_hooks`](Self::divert_hooks) deferred, done once after the last package, as
    /// customize hooks: mmdebstrap runs them for the sandbox, the layer's script for the
    /// bootstrap.
    pub fn finish_hooks() -> Vec<String> {
        let mut hooks: Vec<String> = DEFERRED
            .iter()
            .map(|program| {
                format!(
                    "--customize-hook=rm -f \"$1\"{program} \
                     && chroot \"$1\" dpkg-divert --quiet --local --rename --remove {program}"
                )
            })
            .collect();
        // Debian's py3compile compiles each package's modules; compileall does all of them in
        // one run on every core. A module that does not compile is reported and left as source,
        // as py3compile does.
        hooks.push(
            "--customize-hook=if [ -x \"$1\"/usr/bin/python3 ]; then chroot \"$1\" python3 -m \
             compileall -q -j 0 /usr/lib/python3/dist-packages || true; fi"
                .to_owned(),
        );
        hooks.push(
            "--customize-hook=if ls \"$1\"/boot/vmlinuz-* >/dev/null 2>&1; then chroot \"$1\" \
             update-initramfs -c -k all; fi"
                .to_owned(),
        );
        hooks
    }

    /// [`divert_hooks`](Self::divert_hooks) and [`finish_hooks`](Self::finish_hooks), for a root
    /// mmdebstrap makes whole (the sandbox).
    pub fn deferral_hooks(initramfs: &InitramfsSection) -> Vec<String> {
        let mut args = Self::divert_hooks(initramfs);
        args.extend(Self::finish_hooks());
        args
    }

    /// The target's `.deb` cache, which the bootstrap layer's apt also reads and fills.
    pub fn deb_cache(&self) -> &Path {
        &self.deb_cache
    }

    pub fn sources(&self) -> &Path {
        &self.sources
    }
}

/// The bootstrap's two package lists: the base's, shared by every target of an architecture,
/// and the target's own layer on top of it.
struct Split {
    base: Vec<String>,
    layer: Vec<String>,
}

impl Split {
    /// `debian.packages` already holds the target's packages (`imagedef` merges them in); the
    /// base takes them out again, and keeps the initramfs generator, which every kernel needs.
    fn of(config: &LoadedConfig) -> Self {
        let debian = &config.image.debian;
        let own = &config.target.packages;
        let mut base: Vec<String> = debian
            .packages
            .iter()
            .filter(|p| !own.contains(p))
            .cloned()
            .collect();
        base.push(debian.initramfs.package.clone());
        base.sort();
        base.dedup();
        let mut layer: Vec<String> = own.iter().filter(|p| !base.contains(p)).cloned().collect();
        layer.sort();
        layer.dedup();
        Self { base, layer }
    }
}

/// The shared base of one architecture, and the lock that keeps a newer base from replacing it
/// until the target's layer has copied it.
struct Base {
    rootfs: PathBuf,
    _lock: DirLock,
}

fn base_lock_name(debian_arch: &str) -> String {
    format!("base-{debian_arch}")
}

/// The lock on the base of the profile's architecture, taken without waiting.
pub struct BaseLock(DirLock);

/// Takes the base's lock if no other build (the other target of this architecture) holds it.
pub fn try_lock_base(profile: &Profile) -> Result<Option<BaseLock>> {
    let arch = &profile.definition.target.debian_arch;
    Ok(DirLock::try_acquire_named(&profile.layout.locks(), &base_lock_name(arch))?.map(BaseLock))
}

/// What the base of the profile's architecture is made from: nothing target-specific.
fn base_key(profile: &Profile, apt: &AptSetup, packages: &[String]) -> Result<String> {
    let config = &profile.definition;
    let debian = &config.image.debian;
    let mut fingerprint = Fingerprint::new("base");
    fingerprint
        .add("recipe", BASE_RECIPE)
        .add("arch", &config.target.debian_arch)
        .add("suite", &debian.suite)
        .add("packages", packages.join(","))
        .add("initramfs-compress", &debian.initramfs.compress);
    apt.fingerprint_into(&mut fingerprint)?;
    Ok(fingerprint.finish())
}

/// The base of `debian_arch`: mmdebstrap of the common packages, with the [`DEFERRED`]
/// programs still diverted, so that a target layer's install into a copy defers them too.
fn make_base(
    runner: &mut Runner,
    profile: &Profile,
    apt: &AptSetup,
    packages: &[String],
    key: String,
    held: Option<BaseLock>,
) -> Result<Base> {
    let config = &profile.definition;
    let debian = &config.image.debian;
    let arch = &config.target.debian_arch;
    let lock = match held {
        Some(BaseLock(lock)) => lock,
        None => DirLock::acquire_named(&profile.layout.locks(), &base_lock_name(arch))?,
    };
    let parent = profile.layout.cache_stage("base");
    let prefix = format!("{arch}-");
    let dir = parent.join(format!("{prefix}{}", &key[..16]));
    let rootfs = dir.join("rootfs");
    let stage = Stage::new("base", dir.clone(), key.clone())
        .ready(|dir| dir.join("rootfs").is_dir())
        .force(profile.refresh);
    runner.cached(stage, |stage, dir| {
        let sh = Shell::new()?;
        let arch_arg = format!("--arch={arch}");
        let include = format!("--include={}", packages.join(","));
        let mut extra = apt.mmdebstrap_args();
        extra.push(CLEAN_DEBS.to_owned());
        extra.extend(AptSetup::divert_hooks(&debian.initramfs));
        let suite = &debian.suite;
        let sources = apt.sources();
        stage.step(format!(
            "mmdebstrap {} packages for {arch}, shared by its targets (cached .debs are reused)",
            packages.len()
        ));
        stage.run(cmd!(
            sh,
            "mmdebstrap --mode=root --variant=apt {arch_arg} {include} {extra...} {suite} {rootfs} {sources}"
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
    Ok(Base {
        rootfs,
        _lock: lock,
    })
}

/// Installs the target's packages into a copy of the base, in a private mount namespace (the
/// mounts go with the shell, even when it is killed). `$1` is the root, `$2` the `.deb` cache,
/// `$3` the packages; then `$1` alone, for the [`AptSetup::finish_hooks`] and [`CLEAN_ALL`]
/// that follow.
/// - `policy-rc.d` keeps package scripts from starting services in the root (mmdebstrap does
///   the same during its own install); apt's options for the install are in a configuration
///   file that goes with it: no recommends, as mmdebstrap installs the base;
/// - `/run` is a fresh tmpfs with the host's resolver, because the root's `resolv.conf` points
///   into systemd-resolved's `/run` directory, and apt reads the mirror's indices first: the
///   base has none (mmdebstrap removes them), and the mirror may have moved on since the base.
const LAYER_SCRIPT: &str = r#"set -eu
root=$1 cache=$2 packages=$3
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
mkdir -p "$root/run/systemd/resolve"
cp /etc/resolv.conf "$root/run/systemd/resolve/stub-resolv.conf"
mount --bind "$cache" "$root/var/cache/apt/archives"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
printf '%s\n' 'quiet "1";' 'APT::Get::Assume-Yes "true";' 'APT::Install-Recommends "false";' \
  'APT::Sandbox::User "root";' 'Dpkg::Options:: "--force-unsafe-io";' \
  > "$root/etc/apt/apt.conf.d/00clawfort-layer"
export DEBIAN_FRONTEND=noninteractive
if [ -n "$packages" ]; then
  chroot "$root" apt-get update
  chroot "$root" apt-get install $packages
fi
rm "$root/usr/sbin/policy-rc.d" "$root/etc/apt/apt.conf.d/00clawfort-layer"
umount "$root/var/cache/apt/archives"
set -- "$root"
"#;

/// Makes or finds the target's bootstrap, and its base when the layer has to be made. `held`:
/// the base's lock if the caller already took it.
pub fn run(
    runner: &mut Runner,
    profile: &Profile,
    apt: &AptSetup,
    held: Option<BaseLock>,
) -> Result<Bootstrapped> {
    let config = &profile.definition;
    let split = Split::of(&profile.definition);
    let base_key = base_key(profile, apt, &split.base)?;
    let finish: Vec<String> = AptSetup::finish_hooks()
        .into_iter()
        .chain(AptSetup::cleanup_hooks())
        .map(|hook| hook_command(&hook).to_owned())
        .collect();
    let finish = finish.join("\n");
    let mut fingerprint = Fingerprint::new("bootstrap");
    fingerprint
        .add("recipe", RECIPE)
        .add("base", &base_key)
        .add("packages", split.layer.join(","))
        .add("script", LAYER_SCRIPT)
        .add("finish", &finish);
    let key = fingerprint.finish();

    let parent = profile.layout.cache_stage("bootstrap");
    let prefix = format!("{}-", config.target.name);
    let dir = parent.join(format!("{prefix}{}", &key[..16]));
    let rootfs = dir.join("rootfs");
    let stage = Stage::new("bootstrap", dir.clone(), key.clone())
        .ready(|dir| dir.join("rootfs").is_dir())
        .force(profile.refresh);
    // The base is read only to make the layer: a reused layer needs no base in the cache.
    let base = if runner.would_reuse(&stage) {
        None
    } else {
        Some(make_base(
            runner,
            profile,
            apt,
            &split.base,
            base_key,
            held,
        )?)
    };
    runner.cached(stage, |stage, dir| {
        let base = base.context("the base was not made before its layer")?;
        let sh = Shell::new()?;
        let from = &base.rootfs;
        stage.step(format!("copying the {} base", config.target.debian_arch));
        stage.run(cmd!(sh, "cp -a {from} {rootfs}"))?;
        drop(base);
        stage.step(format!(
            "installing {} in a chroot (cached .debs are reused)",
            if split.layer.is_empty() {
                "no target packages".to_owned()
            } else {
                split.layer.join(", ")
            }
        ));
        let script = format!("{LAYER_SCRIPT}{finish}\n");
        let cache = apt.deb_cache();
        let packages = split.layer.join(" ");
        stage.run(cmd!(
            sh,
            "unshare --mount --propagation private sh -c {script} sh {rootfs} {cache} {packages}"
        ))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{load_definition, Target};

    /// The point of the base: one emulated mmdebstrap serves both arm64 targets, and each
    /// target's layer is only its kernel and boot packages.
    #[test]
    fn the_arm64_targets_share_one_base_and_differ_only_in_their_layers() {
        let split = |target| Split::of(&load_definition(&[], target).unwrap());
        let (aarch64, rpi) = (split(Target::Aarch64), split(Target::Rpi));
        assert_eq!(aarch64.base, rpi.base);
        for (target, split) in [(Target::Aarch64, &aarch64), (Target::Rpi, &rpi)] {
            let loaded = load_definition(&[], target).unwrap();
            assert!(
                !split.layer.is_empty(),
                "{target:?} has no kernel in its layer"
            );
            for package in &split.layer {
                assert!(loaded.target.packages.contains(package));
                assert!(!split.base.contains(package), "{package} is in both layers");
            }
        }
        assert!(aarch64.layer.iter().any(|p| p.starts_with("linux-image-")));
        assert!(rpi.layer.contains(&"raspi-firmware".to_owned()));
    }
}
