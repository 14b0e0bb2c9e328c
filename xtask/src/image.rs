//! `cargo xtask image`: the appliance disk image from `image/*.toml` and `overlays/`.
//!
//! One straight pipeline; each stage is a module and reads the previous stage's output:
//!
//! ```text
//! config ─► host tools ─► gateway ─► bootstrap ─► sandbox ─► customise ─► scrub ─► assemble ─► package
//! ```
//!
//! [`Profile::resolve`] first works out everything the build needs, Talos-style in three parts:
//! *input* (the image definition and the target), *customisation* (overlays, authorized keys,
//! gateway binary) and *output* (`--format`, `--size`, and the [`layout::Layout`] of every
//! path). Then each stage hands the one runner (`stage.rs`) its key and build closure. Other
//! tasks call [`build`] (e2e builds its test variants with it) and [`host_tools::ensure_for`].

mod assemble;
mod bootstrap;
pub mod cache;
pub mod check;
mod customise;
mod disk_ids;
mod gateway;
pub mod host_tools;
pub mod layout;
mod package;
mod profile;
mod progress;
mod sandbox;
pub mod sbom;
mod scrub;
pub mod sign;
mod stage;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clawfort_imagedef::{LoadedConfig, Size, TargetConfig};

pub use clawfort_imagedef::{Format, Target};
pub use package::Artifacts;
pub use profile::Profile;

use self::disk_ids::DiskIds;
use self::host_tools::Purpose;
use self::progress::human_size;
use self::stage::Runner;

/// Build the appliance disk image (the target's formats: raw + compressed qcow2 for x86_64
/// and aarch64, img.xz + bmap for rpi; a package manifest; SHA256SUMS).
///
/// Stages: gateway, bootstrap, sandbox, customise, scrub, assemble, package. A stage whose
/// inputs did not change since the last build is reused; downloaded .debs are kept in
/// $XDG_CACHE_HOME/clawfort (or ~/.cache/clawfort). Needs root (chroot, file ownership).
/// ARM targets build on x86_64 through qemu-user, which the builder sets up itself.
#[derive(clap::Args, Debug, Clone)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Target machine: selects image/targets/<TARGET>.toml (architecture, packages, disk
    /// layout, formats) and qemu/<TARGET>.toml (how it boots).
    #[arg(long, value_enum, default_value_t)]
    pub target: Target,
    /// Image definition to build [default: image/clawfort.toml in the repository].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// TOML merged over the image definition (tables key by key, other values replaced);
    /// repeatable, applied in order. E.g. a file with `[ssh]\npassword_authentication = true`.
    #[arg(long = "set-config", value_name = "FILE")]
    pub set_config: Vec<PathBuf>,
    /// Public key file whose keys are baked into ~admin/.ssh/authorized_keys (tests and
    /// private builds); repeatable. Without it the image holds no authorized key: keys come
    /// from the cloud or a NoCloud seed at first boot.
    #[arg(long = "authorized-key", value_name = "FILE")]
    pub authorized_key: Vec<PathBuf>,
    /// Directory for the artifacts [default: out/ in the repository].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Disk size (e.g. 4G, 3584M) or `auto` (root content plus margin); overrides the
    /// target's `size` and `image.size`. First boot grows the root partition to the real disk.
    #[arg(long)]
    pub size: Option<Size>,
    /// Artifact formats to write; repeat or separate with commas [default: the target's
    /// `formats`: raw,qcow2 for x86_64 and aarch64, img-xz,bmap for rpi]. The cloud formats
    /// (vhd, gce-tar, vmdk, ova, raw-zst) are written only when named here.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub format: Vec<Format>,
    /// Use this gateway binary instead of building `clawfort` for the target with cargo.
    #[arg(long, value_name = "FILE")]
    pub gateway_binary: Option<PathBuf>,
    /// Directory for stage outputs (default: target/image/<TARGET>). Use a separate one per
    /// image variant to keep each variant's stages warm.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Directory of file trees copied into the root file system (default: overlays/); the
    /// target's own `overlays` are applied after it.
    #[arg(long, value_name = "DIR")]
    pub overlays: Option<PathBuf>,
    /// Bootstrap again with the newest packages from the mirror (cached .debs still count).
    #[arg(long)]
    pub refresh: bool,
    /// Rebuild every stage even when its inputs did not change.
    #[arg(long)]
    pub rebuild: bool,
    /// Make only the stages kept in the persistent cache (the bootstrap and the sandbox) and
    /// stop. A later build of the target reuses them; `cargo xtask ci` makes the ARM targets'
    /// this way beside the x86_64 steps, since emulated dpkg is most of a cold ARM build.
    #[arg(long, conflicts_with = "gateway_only")]
    pub cache_only: bool,
    /// Build only the gateway binary for the target (cargo is its cache) and stop. `cargo xtask
    /// ci` cross-builds the ARM gateway this way beside the x86_64 probes, once the x86_64
    /// build no longer needs cargo's release directory (both builds lock it).
    #[arg(long)]
    pub gateway_only: bool,
    /// Sign SHA256SUMS with this SSH key into SHA256SUMS.sig (`ssh-keygen -Y sign`, namespace
    /// `clawfort-image`): an ed25519 private key file without a passphrase (a CI secret), or
    /// the public key file of a key loaded in ssh-agent. The README shows how users verify.
    /// Without it, a signature left by an earlier build is removed.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
}

/// Everything [`build`] needs; paths may be relative to the current directory.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub target: Target,
    pub config: PathBuf,
    pub config_overlays: Vec<PathBuf>,
    pub authorized_keys: Vec<PathBuf>,
    pub out: PathBuf,
    pub size: Option<Size>,
    /// Empty: the target's `formats`.
    pub formats: Vec<Format>,
    pub gateway_binary: Option<PathBuf>,
    pub work_dir: Option<PathBuf>,
    pub overlays: Option<PathBuf>,
    pub refresh: bool,
    pub rebuild: bool,
    /// `--sign-key`: sign SHA256SUMS after the build.
    pub sign_key: Option<PathBuf>,
}

impl BuildOptions {
    /// The defaults of `cargo xtask image` for a target, with paths anchored at the repository.
    pub fn for_target(target: Target) -> Self {
        let repo = crate::project_root();
        Self {
            target,
            config: repo.join("image/clawfort.toml"),
            config_overlays: Vec::new(),
            authorized_keys: Vec::new(),
            out: repo.join("out"),
            size: None,
            formats: Vec::new(),
            gateway_binary: None,
            work_dir: None,
            overlays: None,
            refresh: false,
            rebuild: false,
            sign_key: None,
        }
    }
}

impl From<Args> for BuildOptions {
    fn from(args: Args) -> Self {
        let defaults = Self::for_target(args.target);
        Self {
            config: args.config.unwrap_or(defaults.config),
            config_overlays: args.set_config,
            authorized_keys: args.authorized_key,
            out: args.out.unwrap_or(defaults.out),
            size: args.size,
            formats: args.format,
            gateway_binary: args.gateway_binary,
            work_dir: args.work_dir,
            overlays: args.overlays,
            refresh: args.refresh,
            rebuild: args.rebuild,
            sign_key: args.sign_key,
            ..defaults
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    if args.cache_only {
        let profile = prepare(&args.into())?;
        let layout = &profile.layout;
        let _work_lock = cache::DirLock::acquire(&layout.work)?;
        let mut runner = Runner::new(layout.logs(), profile.rebuild);
        cached_stages(&mut runner, &profile)?;
        eprintln!(
            "\nthe cached stages of target {} are ready ({:.0} s); `cargo xtask image --target {}` \
             reuses them",
            profile.definition.target.name,
            started.elapsed().as_secs_f64(),
            profile.definition.target.name
        );
        return Ok(());
    }
    if args.gateway_only {
        let profile = prepare(&args.into())?;
        let mut runner = Runner::new(profile.layout.logs(), profile.rebuild);
        let binary = gateway::run(&mut runner, &profile)?;
        eprintln!(
            "\nthe gateway for target {} is built ({:.0} s): {}",
            profile.definition.target.name,
            started.elapsed().as_secs_f64(),
            binary.display()
        );
        return Ok(());
    }
    let artifacts = build(&args.into())?;
    print_summary(&artifacts, started.elapsed());
    Ok(())
}

/// The profile, with the host tools a build needs for its target in place.
fn prepare(opts: &BuildOptions) -> Result<Profile> {
    let profile = Profile::resolve(opts)?;
    host_tools::ensure_for(&profile.definition.target, Purpose::Build)?;
    host_tools::ensure_binfmt(&profile.definition.target.debian_arch)?;
    Ok(profile)
}

/// The stages kept in the persistent cache (bootstrap, sandbox), made or found, with the
/// locks that keep another build of the same target (or architecture, for the sandbox) from
/// replacing them while they are read. Builds of other targets go on in parallel.
struct Cached {
    bootstrapped: bootstrap::Bootstrapped,
    sandbox: sandbox::SandboxTar,
    _locks: [cache::DirLock; 2],
}

fn cached_stages(runner: &mut Runner, profile: &Profile) -> Result<Cached> {
    let layout = &profile.layout;
    let apt = bootstrap::AptSetup::prepare(profile)?;
    let target = &profile.definition.target;
    let bootstrap_lock =
        cache::DirLock::acquire_named(&layout.locks(), &format!("bootstrap-{}", target.name))?;
    let sandbox = |runner: &mut Runner| -> Result<(sandbox::SandboxTar, cache::DirLock)> {
        let lock = cache::DirLock::acquire_named(
            &layout.locks(),
            &format!("sandbox-{}", target.debian_arch),
        )?;
        Ok((sandbox::run(runner, profile, &apt)?, lock))
    };
    // While the other target of this architecture makes the shared base (CI warms both at
    // once), make the sandbox rather than wait: under emulation each takes many minutes. The
    // base's lock is released once a layer has copied the base, before the sandbox is asked
    // for, so the two builds cannot wait for each other.
    let (bootstrapped, (sandbox, sandbox_lock)) = match bootstrap::try_lock_base(profile)? {
        None => {
            let sandbox = sandbox(runner)?;
            (bootstrap::run(runner, profile, &apt, None)?, sandbox)
        }
        held => (
            bootstrap::run(runner, profile, &apt, held)?,
            sandbox(runner)?,
        ),
    };
    Ok(Cached {
        bootstrapped,
        sandbox,
        _locks: [bootstrap_lock, sandbox_lock],
    })
}

/// Builds the image, reusing every stage whose inputs did not change, and returns its
/// artifacts. The e2e suite calls this for its test variants (with `config_overlays`,
/// `authorized_keys` and its own `out`/`work_dir`).
pub fn build(opts: &BuildOptions) -> Result<Artifacts> {
    let profile = prepare(opts)?;
    let key = match &opts.sign_key {
        Some(path) => {
            host_tools::ensure(host_tools::SIGN_TOOLS)?;
            Some(sign::SigningKey::check(path)?)
        }
        None => None,
    };
    let mut artifacts = build_stages(&profile)?;
    artifacts.signature = match &key {
        Some(key) => Signature::Signed {
            path: sign::sign(&artifacts.sha256sums, key)?,
            fingerprint: key.fingerprint.clone(),
        },
        None if sign::remove_stale(&artifacts.sha256sums)? => Signature::StaleRemoved,
        None => Signature::None,
    };
    Ok(artifacts)
}

/// What became of SHA256SUMS.sig in a build.
#[derive(Debug, Clone, Default)]
pub enum Signature {
    #[default]
    None,
    Signed {
        path: PathBuf,
        fingerprint: String,
    },
    /// A signature of the previous SHA256SUMS, removed as it no longer matches.
    StaleRemoved,
}

/// The repository's image definition (`image/clawfort.toml`) with `config_overlays` merged
/// over it, for `target`, validated: what `cargo xtask image --set-config ...` builds from.
pub fn load_definition(config_overlays: &[PathBuf], target: Target) -> Result<LoadedConfig> {
    let repo = crate::project_root();
    LoadedConfig::load(
        &repo.join("image/clawfort.toml"),
        config_overlays,
        &repo.join("image/targets"),
        target.name(),
    )
}

/// `image/targets/<target>.toml`, validated.
pub fn load_target(target: Target) -> Result<TargetConfig> {
    clawfort_imagedef::load_target(&crate::project_root().join("image/targets"), target.name())
}

fn print_summary(a: &Artifacts, total: Duration) {
    {
        eprintln!("\nArtifacts:");
        for path in &a.files {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            let allocated = std::fs::metadata(path)
                .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
                .unwrap_or(0);
            let sha = a.sha256.get(name.as_ref()).map_or("?", String::as_str);
            eprintln!(
                "  {:<44} {:>10} ({:>10} on disk)  sha256 {sha}",
                path.display(),
                human_size(size),
                human_size(allocated)
            );
        }
        eprintln!("  {}", a.sha256sums.display());
        match &a.signature {
            Signature::Signed { path, fingerprint } => eprintln!(
                "  {} (signed by {fingerprint}; users check with: {})",
                path.display(),
                sign::verify_command("<identity in allowed_signers>")
            ),
            Signature::StaleRemoved => eprintln!(
                "  (SHA256SUMS.sig of an earlier build removed: it no longer matches; sign with \
                 --sign-key)"
            ),
            Signature::None => {}
        }
        let definition: Vec<String> = a
            .definition
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        eprintln!("\nImage definition: {}", definition.join(" + "));
        eprintln!(
            "Root file system (inspect it, or run the scrub test on it): {}",
            a.rootfs.display()
        );
        eprintln!("\nStages:");
        for (name, took, note) in &a.stages {
            eprintln!("  {name:<10} {:>7.1} s  {note}", took.as_secs_f64());
        }
        eprintln!("  {:<10} {:>7.1} s", "total", total.as_secs_f64());
    }
}

/// The stages in order; each module builds its [`stage::Stage`] (directory, key, build) and
/// the runner reuses or builds it.
fn build_stages(profile: &Profile) -> Result<Artifacts> {
    let layout = &profile.layout;
    let _work_lock = cache::DirLock::acquire(&layout.work)?;
    let builder = cache::builder_fingerprint(&layout.repo)?;
    let mut runner = Runner::new(layout.logs(), profile.rebuild);

    let gateway_binary = gateway::run(&mut runner, profile)?;
    // Its locks are held until customise has copied the bootstrap and the sandbox tar.
    let cached = cached_stages(&mut runner, profile)?;
    let target = &profile.definition.target;

    let inputs = customise::Inputs {
        profile,
        bootstrap: &cached.bootstrapped,
        sandbox: &cached.sandbox,
        gateway_binary: &gateway_binary,
    };
    // fstab and the kernel command line name the disk ids, so they derive from the key of
    // everything else customise reads, worked out before it runs.
    let pre_customise_key = customise::key(&inputs, &builder)?;
    let disk_ids = DiskIds::derive(&pre_customise_key, &target.disk);
    let customised = customise::run(&mut runner, &inputs, &pre_customise_key, &disk_ids)?;
    drop(cached);

    scrub::stage(&mut runner, profile, &customised.rootfs)?;
    let disk = assemble::run(&mut runner, profile, &customised, &disk_ids)?;
    let mut artifacts = package::run(
        &mut runner,
        profile,
        &disk,
        &customised.rootfs,
        &customised.deb,
    )?;
    artifacts.stages = runner.into_timings();
    artifacts.definition = profile.definition.sources.clone();
    Ok(artifacts)
}

/// Bytes an unprivileged writer may still use on the file system holding `path` (the image
/// build's disk check and `cargo xtask ci`'s space report).
pub fn free_bytes(path: &Path) -> Result<u64> {
    let stat =
        rustix::fs::statvfs(path).with_context(|| format!("cannot statvfs {}", path.display()))?;
    Ok(stat.f_bavail * stat.f_frsize)
}
