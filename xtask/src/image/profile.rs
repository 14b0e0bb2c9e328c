//! [`Profile::resolve`]: the whole description of one build, typed and defaulted before any
//! stage runs. Talos-style it has three parts: the *input* (the validated image definition and
//! the target), the *customisation* (overlay trees, authorized keys, the gateway binary, the
//! version) and the *output* (size, formats, and the [`Layout`] that owns every path). A wrong
//! option or definition key is reported here, before minutes of bootstrap.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clawfort_imagedef::{Format, LoadedConfig, Size, Target};

use super::cache;
use super::customise::users;
use super::layout::{ArtifactNames, Layout};
use super::BuildOptions;

/// Everything a build needs, resolved.
#[derive(Debug)]
pub struct Profile {
    pub target: Target,
    /// The merged, validated image definition and the target file.
    pub definition: LoadedConfig,
    /// The overlay trees, in the order they are applied.
    pub overlays: Vec<PathBuf>,
    /// `--authorized-key` lines for the administrator.
    pub authorized_keys: Vec<String>,
    /// A prebuilt gateway instead of `cargo build`.
    pub gateway_binary: Option<PathBuf>,
    /// The gateway package's version (`build.version` in templates).
    pub version: String,
    /// `[updates] repository_key`'s certificate, folded for deb822 (`build.repository_key`).
    pub repository_key: String,
    /// HEAD's commit time in seconds: the gateway package's file times (`customise/deb.rs`).
    pub source_date_epoch: i64,
    /// `--size`, else the target's `size`, else `image.size`.
    pub size: Size,
    /// `--format`, else the target's `formats`.
    pub formats: Vec<Format>,
    pub layout: Layout,
    /// `--refresh`: bootstrap again from the mirror.
    pub refresh: bool,
    /// `--rebuild`: reuse no stage.
    pub rebuild: bool,
}

impl Profile {
    /// Loads and validates the definition, reads the authorized keys, and settles every
    /// default and path (creating the work and output directories).
    pub fn resolve(opts: &BuildOptions) -> Result<Self> {
        let repo = crate::project_root();
        let definition = LoadedConfig::load(
            &opts.config,
            &opts.config_overlays,
            &repo.join("image/targets"),
            opts.target.name(),
        )?;
        let overlays = definition.overlay_trees(
            &repo,
            opts.overlays
                .clone()
                .unwrap_or_else(|| repo.join("overlays")),
        );
        let size = opts
            .size
            .or(definition.target.size)
            .unwrap_or(definition.image.image.size);
        let formats = if opts.formats.is_empty() {
            definition.target.formats.clone()
        } else {
            opts.formats.clone()
        };
        // The OVF descriptor (image/ova/appliance.ovf.tera) describes an x86_64 machine:
        // VMware's `debian12_64Guest` type, EFI firmware for x86. An arm64 disk in it would
        // be offered to hypervisors that cannot run it.
        anyhow::ensure!(
            !formats.contains(&Format::Ova) || definition.target.debian_arch == "amd64",
            "--format ova is for x86_64 only: its OVF descriptor names an x86_64 guest type. For \
             target {}, use --format vmdk (the same stream-optimised disk) and create the virtual \
             machine in the hypervisor",
            opts.target
        );
        let work = opts
            .work_dir
            .clone()
            .unwrap_or_else(|| Layout::default_work(&repo, opts.target));
        let layout = Layout {
            work: created("work", &work)?,
            cache: cache::cache_root()?,
            artifacts: ArtifactNames::new(
                created("output", &opts.out)?,
                &definition.image.image.name,
                opts.target,
            ),
            repo,
        };
        Ok(Self {
            target: opts.target,
            authorized_keys: users::read_authorized_keys(&opts.authorized_keys)?,
            gateway_binary: opts.gateway_binary.clone(),
            version: gateway_version(&layout.repo)?,
            source_date_epoch: source_date_epoch(&layout.repo)?,
            repository_key: clawfort_imagedef::render::repository_key(&definition, &layout.repo)?,
            definition,
            overlays,
            size,
            formats,
            layout,
            refresh: opts.refresh,
            rebuild: opts.rebuild,
        })
    }
}

/// `dir`, created, as an absolute path (stages run commands in other directories).
fn created(what: &str, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the {what} directory {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("cannot resolve the {what} directory {}", dir.display()))
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

/// HEAD's commit time in seconds (git's `%ct`).
fn source_date_epoch(repo: &Path) -> Result<i64> {
    let sh = xshell::Shell::new()?;
    let text = xshell::cmd!(sh, "git -C {repo} log -1 --format=%ct")
        .quiet()
        .read()
        .context("the image takes its file times from HEAD's commit: build from a git checkout")?;
    text.trim()
        .parse()
        .with_context(|| format!("git printed `{}` for HEAD's commit time", text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> BuildOptions {
        let mut opts = BuildOptions::for_target(Target::Rpi);
        opts.out = dir.join("out");
        opts.work_dir = Some(dir.join("work"));
        opts
    }

    /// The Pi's own `size` and `formats` win over `image.size`, and its overlays follow the
    /// common ones.
    #[test]
    fn a_target_s_defaults_are_resolved_before_any_stage() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::resolve(&options(dir.path())).unwrap();
        assert_eq!(profile.formats, [Format::ImgXz, Format::Bmap]);
        assert_eq!(profile.size, profile.definition.target.size.unwrap());
        assert_eq!(profile.overlays.len(), 2);
        assert!(profile.overlays[1].ends_with("overlays.rpi"));
        assert_eq!(
            profile.layout.artifact_path(Format::ImgXz),
            dir.path()
                .canonicalize()
                .unwrap()
                .join("out/clawfort-rpi.img.xz")
        );
    }

    #[test]
    fn options_override_the_target_s_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.size = Some(Size::Auto);
        opts.formats = vec![Format::Raw];
        let profile = Profile::resolve(&opts).unwrap();
        assert_eq!(profile.size, Size::Auto);
        assert_eq!(profile.formats, [Format::Raw]);
    }

    #[test]
    fn an_ova_of_an_arm_target_is_refused_before_any_stage() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.formats = vec![Format::Ova];
        let err = Profile::resolve(&opts).unwrap_err().to_string();
        assert!(err.contains("--format ova is for x86_64 only"), "{err}");
        assert!(err.contains("--format vmdk"), "{err}");
    }
}
