//! Stage `package`: the files a person downloads, in `--out` (default `out/`):
//! `<name>-<target>.raw`, `<name>-<target>.qcow2` (compressed), `<name>-<target>.manifest.json`
//! (every Debian package with version and architecture) and `SHA256SUMS`.
//!
//! Every artifact is written under a hidden `.partial` name and renamed only when all of them
//! are complete, so a failed build never leaves a half-written file under a good name. One
//! function per output format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use xshell::{cmd, Shell};

use super::cache::{self, Fingerprint};
use super::config::LoadedConfig;
use super::progress::StageProgress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Format {
    /// Raw disk image: `dd` it to a USB stick or disk, or upload it to a cloud.
    Raw,
    /// Compressed qcow2: QEMU/libvirt/Proxmox and clouds that import qcow2.
    Qcow2,
}

/// Paths of a finished build's artifacts.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub raw: Option<PathBuf>,
    pub qcow2: Option<PathBuf>,
    pub manifest: PathBuf,
    pub sha256sums: PathBuf,
    /// The scrubbed root file system the disk was made from (for inspection in tests).
    pub rootfs: PathBuf,
    /// SHA-256 per artifact file name, as written to SHA256SUMS.
    pub sha256: BTreeMap<String, String>,
    pub reused: bool,
    /// Each stage's name, duration and outcome ("built", "reused ...").
    pub stages: Vec<StageTiming>,
    /// The files the image definition was merged from, in order.
    pub definition: Vec<PathBuf>,
}

pub type StageTiming = (&'static str, std::time::Duration, &'static str);

pub struct Inputs<'a> {
    pub config: &'a LoadedConfig,
    pub disk: &'a Path,
    pub disk_key: &'a str,
    pub rootfs: &'a Path,
    pub out: &'a Path,
    pub formats: &'a [Format],
}

#[derive(Serialize)]
struct Manifest<'a> {
    image: &'a str,
    target: &'a str,
    debian_suite: &'a str,
    packages: Vec<Package>,
}

#[derive(Serialize)]
struct Package {
    name: String,
    version: String,
    architecture: String,
}

pub fn run(stage: &mut StageProgress, inputs: &Inputs<'_>, work: &Path) -> Result<Artifacts> {
    let base = format!(
        "{}-{}",
        inputs.config.image.image.name, inputs.config.target.name
    );
    std::fs::create_dir_all(inputs.out)
        .with_context(|| format!("cannot create {}", inputs.out.display()))?;
    let out = inputs.out.canonicalize()?;
    let final_path = |ext: &str| out.join(format!("{base}.{ext}"));
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    for format in inputs.formats {
        let ext = match format {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        };
        names.push((ext.to_owned(), final_path(ext)));
    }
    names.push(("manifest.json".to_owned(), final_path("manifest.json")));
    let sums_path = out.join("SHA256SUMS");

    // Reuse: same disk, same formats, and the artifacts untouched since (size and mtime).
    let stamp_dir = work.join("package");
    std::fs::create_dir_all(&stamp_dir)?;
    let key_for = |identities: &[Option<String>]| {
        let mut fingerprint = Fingerprint::new("package");
        fingerprint.add("disk", inputs.disk_key);
        for identity in identities {
            fingerprint.add("artifact", identity.as_deref().unwrap_or("missing"));
        }
        fingerprint.finish()
    };
    let current = |paths: &[&Path]| {
        paths
            .iter()
            .map(|p| cache::file_identity(p))
            .collect::<Vec<_>>()
    };
    let all_paths: Vec<&Path> = names
        .iter()
        .map(|(_, path)| path.as_path())
        .chain([sums_path.as_path()])
        .collect();
    let artifacts = |sha256: BTreeMap<String, String>, reused: bool| Artifacts {
        raw: inputs
            .formats
            .contains(&Format::Raw)
            .then(|| final_path("raw")),
        qcow2: inputs
            .formats
            .contains(&Format::Qcow2)
            .then(|| final_path("qcow2")),
        manifest: final_path("manifest.json"),
        sha256sums: sums_path.clone(),
        rootfs: inputs.rootfs.to_path_buf(),
        sha256,
        reused,
        stages: Vec::new(),
        definition: Vec::new(),
    };
    if cache::stamp_matches(&stamp_dir, &key_for(&current(&all_paths))) {
        stage.step("artifacts are up to date");
        return Ok(artifacts(read_sums(&sums_path)?, true));
    }

    let sh = Shell::new()?;
    let partial = |path: &Path| {
        let name = path.file_name().expect("file").to_string_lossy();
        path.with_file_name(format!(".{name}.partial"))
    };
    // Leftovers of a build that was killed before it could clean up.
    for path in &all_paths {
        let _ = std::fs::remove_file(partial(path));
    }
    let mut guard = PartialFiles(Vec::new());
    for (ext, path) in &names {
        let temporary = partial(path);
        guard.0.push(temporary.clone());
        match ext.as_str() {
            "raw" => raw(stage, &sh, inputs.disk, &temporary)?,
            "qcow2" => qcow2(stage, &sh, inputs.disk, &temporary)?,
            _ => manifest(stage, &sh, inputs, &temporary)?,
        }
    }

    stage.step("SHA256SUMS");
    let mut sha256 = BTreeMap::new();
    for (_, path) in &names {
        let name = path
            .file_name()
            .expect("file")
            .to_string_lossy()
            .into_owned();
        sha256.insert(name, sha256sum(stage, &sh, &partial(path))?);
    }
    let sums: String = sha256
        .iter()
        .map(|(name, digest)| format!("{digest}  {name}\n"))
        .collect();
    let sums_partial = partial(&sums_path);
    guard.0.push(sums_partial.clone());
    std::fs::write(&sums_partial, sums)?;

    // All complete: now they take their real names, SHA256SUMS last.
    for (_, path) in &names {
        std::fs::rename(partial(path), path)?;
    }
    std::fs::rename(&sums_partial, &sums_path)?;
    guard.0.clear();
    cache::write_stamp(&stamp_dir, &key_for(&current(&all_paths)))?;
    Ok(artifacts(sha256, false))
}

/// Removes `.partial` files left by a failed package stage.
struct PartialFiles(Vec<PathBuf>);

impl Drop for PartialFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// coreutils' sha256sum: the 4 GiB raw disk is hashed at disk speed, where the sha2 crate in
/// xtask's unoptimised dev build would take minutes.
fn sha256sum(stage: &mut StageProgress, sh: &Shell, file: &Path) -> Result<String> {
    let line = stage.run(cmd!(sh, "sha256sum {file}"))?;
    let digest = line.split_whitespace().next().unwrap_or_default();
    anyhow::ensure!(
        digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
        "sha256sum printed `{line}` for {}",
        file.display()
    );
    Ok(digest.to_owned())
}

fn raw(stage: &mut StageProgress, sh: &Shell, disk: &Path, to: &Path) -> Result<()> {
    stage.step("raw image (sparse copy)");
    stage.run(cmd!(sh, "cp --sparse=always --reflink=auto {disk} {to}"))?;
    Ok(())
}

fn qcow2(stage: &mut StageProgress, sh: &Shell, disk: &Path, to: &Path) -> Result<()> {
    stage.step("qcow2 image (compressed)");
    // -W: out-of-order writes let qemu-img compress clusters on several threads.
    stage.run(cmd!(
        sh,
        "qemu-img convert -c -W -m 8 -f raw -O qcow2 {disk} {to}"
    ))?;
    Ok(())
}

fn manifest(stage: &mut StageProgress, sh: &Shell, inputs: &Inputs<'_>, to: &Path) -> Result<()> {
    stage.step("package manifest");
    let admindir = inputs.rootfs.join("var/lib/dpkg");
    let admindir = format!("--admindir={}", admindir.display());
    let format = "--showformat=${Package}\t${Version}\t${Architecture}\n";
    let listing = stage.run(cmd!(sh, "dpkg-query {admindir} --show {format}"))?;
    let packages = listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            Some(Package {
                name: fields.next()?.to_owned(),
                version: fields.next()?.to_owned(),
                architecture: fields.next()?.to_owned(),
            })
        })
        .collect();
    let manifest = Manifest {
        image: &inputs.config.image.image.name,
        target: &inputs.config.target.name,
        debian_suite: &inputs.config.image.debian.suite,
        packages,
    };
    std::fs::write(to, serde_json::to_string_pretty(&manifest)? + "\n")?;
    Ok(())
}

fn read_sums(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (digest, name) = line.split_once("  ")?;
            Some((name.to_owned(), digest.to_owned()))
        })
        .collect())
}
