//! `cargo xtask image`: the appliance disk image from `image/*.toml` and `overlays/`.
//!
//! One straight pipeline; each stage is a module and reads the previous stage's output:
//!
//! ```text
//! config ─► host tools ─► gateway ─► bootstrap ─► sandbox ─► customise ─► scrub ─► assemble ─► package
//! ```
//!
//! The profile is typed in three parts, Talos-style: *input* (the image definition and the
//! target), *customisation* (overlays, authorized keys, gateway binary) and *output* (`--out`,
//! `--format`, `--size`). Other tasks call [`build`] (e2e builds its test variants with it) and
//! [`host_tools::ensure_for`].

mod assemble;
mod bootstrap;
mod cache;
mod customise;
mod gateway;
pub mod host_tools;
mod package;
mod progress;
mod sandbox;
mod scrub;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clawfort_imagedef::render::BuildValues;
use clawfort_imagedef::{LoadedConfig, TargetConfig};

pub use clawfort_imagedef::Format;
pub use package::{Artifacts, StageTiming};

use self::progress::{human_size, StageProgress};

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
    /// Target machine, a file image/targets/<TARGET>.toml: x86_64 (UEFI PCs, servers, clouds),
    /// aarch64 (UEFI ARM servers and clouds), rpi (Raspberry Pi 4/400/CM4).
    #[arg(long, default_value = "x86_64")]
    pub target: String,
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
    pub size: Option<String>,
    /// Artifact formats to write; repeat or separate with commas [default: the target's
    /// `formats`: raw,qcow2 for x86_64 and aarch64, img-xz,bmap for rpi].
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
}

/// Everything [`build`] needs; paths may be relative to the current directory.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub target: String,
    pub config: PathBuf,
    pub config_overlays: Vec<PathBuf>,
    pub authorized_keys: Vec<PathBuf>,
    pub out: PathBuf,
    pub size: Option<String>,
    /// Empty: the target's `formats`.
    pub formats: Vec<Format>,
    pub gateway_binary: Option<PathBuf>,
    pub work_dir: Option<PathBuf>,
    pub overlays: Option<PathBuf>,
    pub refresh: bool,
    pub rebuild: bool,
}

impl BuildOptions {
    /// The defaults of `cargo xtask image` for a target, with paths anchored at the repository.
    pub fn for_target(target: &str) -> Self {
        let repo = repo_root();
        Self {
            target: target.to_owned(),
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
        }
    }
}

impl From<Args> for BuildOptions {
    fn from(args: Args) -> Self {
        let defaults = Self::for_target(&args.target);
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
            ..defaults
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let artifacts = build(&args.into())?;
    print_summary(&artifacts, started.elapsed());
    Ok(())
}

/// Builds the image, reusing every stage whose inputs did not change, and returns its
/// artifacts. The e2e suite calls this for its test variants (with `config_overlays`,
/// `authorized_keys` and its own `out`/`work_dir`).
pub fn build(opts: &BuildOptions) -> Result<Artifacts> {
    build_stages(opts)
}

/// The repository's image definition (`image/clawfort.toml`) with `config_overlays` merged
/// over it, for `target`, validated: what `cargo xtask image --set-config ...` builds from.
pub fn load_definition(config_overlays: &[PathBuf], target: &str) -> Result<LoadedConfig> {
    let repo = repo_root();
    LoadedConfig::load(
        &repo.join("image/clawfort.toml"),
        config_overlays,
        &repo.join("image/targets"),
        target,
    )
}

/// `image/targets/<name>.toml`, validated (the unknown-target error lists the known ones).
pub fn load_target(name: &str) -> Result<TargetConfig> {
    clawfort_imagedef::load_target(&repo_root().join("image/targets"), name)
}

/// Every target with a file in `image/targets/`, sorted.
pub fn known_targets() -> Vec<String> {
    clawfort_imagedef::known_targets(&repo_root().join("image/targets"))
}

/// The repository root (xtask lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the repository")
        .to_path_buf()
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

/// Runs one stage: progress display, timing, and the stage's name on any error.
fn stage<T>(
    stages: &mut Vec<StageTiming>,
    logs: &Path,
    name: &'static str,
    body: impl FnOnce(&mut StageProgress) -> Result<(T, &'static str)>,
) -> Result<T> {
    let mut progress = StageProgress::start(name, logs)?;
    match body(&mut progress) {
        Ok((value, note)) => {
            let took = progress.finish(note);
            stages.push((name, took, note));
            Ok(value)
        }
        Err(err) => {
            let log = progress.log_path().display().to_string();
            progress.fail();
            Err(err.context(format!("stage `{name}` failed (log: {log})")))
        }
    }
}

fn build_stages(opts: &BuildOptions) -> Result<Artifacts> {
    let repo = repo_root();
    let config = LoadedConfig::load(
        &opts.config,
        &opts.config_overlays,
        &repo.join("image/targets"),
        &opts.target,
    )?;
    host_tools::ensure_for(&config.target, host_tools::Purpose::Build)?;
    host_tools::ensure_binfmt(&config.target.debian_arch)?;
    let authorized_keys = customise::users::read_authorized_keys(&opts.authorized_keys)?;

    let work = opts
        .work_dir
        .clone()
        .unwrap_or_else(|| repo.join("target/image").join(&config.target.name));
    std::fs::create_dir_all(&work)
        .with_context(|| format!("cannot create the work directory {}", work.display()))?;
    let work = work.canonicalize()?;
    let _work_lock = cache::DirLock::acquire(&work)?;
    let cache_root = cache::cache_root()?;
    let logs = work.join("logs");
    let overlays = config.overlay_trees(
        &repo,
        opts.overlays
            .clone()
            .unwrap_or_else(|| repo.join("overlays")),
    );
    let size = opts
        .size
        .clone()
        .or_else(|| config.target.size.clone())
        .unwrap_or_else(|| config.image.image.size.clone());
    let formats = if opts.formats.is_empty() {
        config.target.formats.clone()
    } else {
        opts.formats.clone()
    };
    if size != "auto" {
        clawfort_imagedef::parse_size(&size).context("--size")?;
    }
    let builder = cache::builder_fingerprint(&repo)?;
    let mut stages = Vec::new();

    let gateway_binary = stage(&mut stages, &logs, "gateway", |s| {
        let binary = gateway::build(
            s,
            &repo,
            &config.target.rust_triple,
            opts.gateway_binary.as_deref(),
        )?;
        Ok((binary, "cargo build (incremental)"))
    })?;

    let apt = bootstrap::AptSetup::prepare(&config, &work.join("apt"), &cache_root)?;
    // Held until customise has copied the bootstrap and the sandbox tar: another build of the
    // same target (or architecture, for the sandbox) must not replace them while they are
    // read. Builds of other targets go on in parallel.
    let locks = cache_root.join("locks");
    let bootstrap_lock =
        cache::DirLock::acquire_named(&locks, &format!("bootstrap-{}", config.target.name))?;
    let bootstrapped = {
        stage(&mut stages, &logs, "bootstrap", |s| {
            let out = bootstrap::run(s, &config, &apt, &cache_root, opts.refresh || opts.rebuild)?;
            let note = outcome(out.reused);
            Ok((out, note))
        })?
    };
    let sandbox_lock =
        cache::DirLock::acquire_named(&locks, &format!("sandbox-{}", config.target.debian_arch))?;
    let sandbox_tar = {
        stage(&mut stages, &logs, "sandbox", |s| {
            let out = sandbox::run(s, &config, &apt, &cache_root, opts.refresh || opts.rebuild)?;
            let note = outcome(out.reused);
            Ok((out, note))
        })?
    };

    let mut build_values = BuildValues {
        version: gateway_version(&repo)?,
        authorized_keys,
        root_partuuid: String::new(),
        boot_partuuid: String::new(),
        root_fs_uuid: String::new(),
        sandbox_tar: sandbox::IMAGE_PATH.to_owned(),
        gateway_binary: gateway::IMAGE_PATH.to_owned(),
    };
    // The disk ids derive from the customise inputs without the ids themselves.
    let placeholder_ids = assemble::DiskIds::derive("", &config.target.disk);
    let customise_key = customise::fingerprint(
        &customise::Inputs {
            config: &config,
            bootstrap_rootfs: &bootstrapped.rootfs,
            bootstrap_key: &bootstrapped.key,
            sandbox_tar: &sandbox_tar.tar,
            sandbox_key: &sandbox_tar.key,
            gateway_binary: &gateway_binary,
            overlays: &overlays,
            build: &build_values,
            disk_ids: &placeholder_ids,
        },
        &builder,
    )?;
    let disk_ids = assemble::DiskIds::derive(&customise_key, &config.target.disk);
    build_values.root_partuuid = disk_ids.root_partuuid.clone();
    build_values.boot_partuuid = disk_ids.boot_partuuid.clone();
    build_values.root_fs_uuid = disk_ids.root_fs_uuid.clone();
    let inputs = customise::Inputs {
        config: &config,
        bootstrap_rootfs: &bootstrapped.rootfs,
        bootstrap_key: &bootstrapped.key,
        sandbox_tar: &sandbox_tar.tar,
        sandbox_key: &sandbox_tar.key,
        gateway_binary: &gateway_binary,
        overlays: &overlays,
        build: &build_values,
        disk_ids: &disk_ids,
    };
    let customised = stage(&mut stages, &logs, "customise", |s| {
        let out = customise::run(s, &inputs, &customise_key, &work, opts.rebuild)?;
        let note = outcome(out.reused);
        Ok((out, note))
    })?;

    drop(sandbox_lock);
    drop(bootstrap_lock);

    stage(&mut stages, &logs, "scrub", |s| {
        let policy = scrub::Policy {
            keep_authorized_keys_of: (!build_values.authorized_keys.is_empty())
                .then_some(config.image.users.admin.name.as_str()),
        };
        let removed = scrub::run(&customised.rootfs, &policy)?;
        s.step(format!(
            "{} items removed, nothing secret left",
            removed.len()
        ));
        let note = if removed.is_empty() {
            "verified clean"
        } else {
            "scrubbed and verified clean"
        };
        Ok(((), note))
    })?;

    let disk = stage(&mut stages, &logs, "assemble", |s| {
        let out = assemble::run(
            s,
            &assemble::Inputs {
                config: &config,
                rootfs: &customised.rootfs,
                boot_files: &customised.boot_files,
                customise_key: &customised.key,
                ids: &disk_ids,
                size: &size,
                cidata_seed: &repo.join("image/cidata"),
            },
            &work,
        )?;
        let note = outcome(out.reused);
        Ok((out, note))
    })?;

    let mut artifacts = stage(&mut stages, &logs, "package", |s| {
        let out = package::run(
            s,
            &package::Inputs {
                config: &config,
                disk: &disk.raw,
                disk_key: &disk.key,
                rootfs: &customised.rootfs,
                out: &opts.out,
                formats: &formats,
            },
            &work,
        )?;
        let note = outcome(out.reused);
        Ok((out, note))
    })?;
    artifacts.stages = stages;
    artifacts.definition = config.sources.clone();
    Ok(artifacts)
}

fn outcome(reused: bool) -> &'static str {
    if reused {
        "reused (inputs unchanged)"
    } else {
        "built"
    }
}

/// The gateway package's version from the workspace manifest: `build.version` in templates.
fn gateway_version(repo: &Path) -> Result<String> {
    let manifest = repo.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    let document: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", manifest.display()))?;
    document
        .get("package")
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no package.version", manifest.display()))
}

/// Bytes an unprivileged writer may still use on the file system holding `path` (the image
/// build's disk check and `cargo xtask ci`'s space report).
pub fn free_bytes(path: &Path) -> Result<u64> {
    let stat =
        rustix::fs::statvfs(path).with_context(|| format!("cannot statvfs {}", path.display()))?;
    Ok(stat.f_bavail * stat.f_frsize)
}
