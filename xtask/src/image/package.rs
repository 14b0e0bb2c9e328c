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
use clawfort_imagedef::{Format, LoadedConfig};
use serde::Serialize;
use xshell::{cmd, Shell};

use super::cache::{self, Fingerprint};
use super::progress::StageProgress;

/// Paths of a finished build's artifacts.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The raw disk, when `raw` was one of the formats (the e2e suite boots it).
    pub raw: Option<PathBuf>,
    /// Every artifact written (the formats, then the package manifest).
    pub files: Vec<PathBuf>,
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
    let mut names: Vec<(Option<Format>, PathBuf)> = inputs
        .formats
        .iter()
        .map(|format| (Some(*format), final_path(format.extension())))
        .collect();
    names.push((None, final_path("manifest.json")));
    let sums_path = out.join("SHA256SUMS");

    // Reuse: same disk, same formats, and the artifacts untouched since (size and mtime).
    // SHA256SUMS is shared with the other targets' builds, so it is not part of the identity;
    // this build's own lines are kept beside the stamp and merged into it.
    let stamp_dir = work.join("package");
    std::fs::create_dir_all(&stamp_dir)?;
    let own_sums = stamp_dir.join("SHA256SUMS");
    let paths: Vec<&Path> = names.iter().map(|(_, path)| path.as_path()).collect();
    let key = || {
        let mut fingerprint = Fingerprint::new("package");
        fingerprint.add("disk", inputs.disk_key);
        for path in &paths {
            let identity = cache::file_identity(path);
            fingerprint.add("artifact", identity.as_deref().unwrap_or("missing"));
        }
        fingerprint.finish()
    };
    let artifacts = |sha256: BTreeMap<String, String>, reused: bool| Artifacts {
        raw: inputs
            .formats
            .contains(&Format::Raw)
            .then(|| final_path(Format::Raw.extension())),
        files: names.iter().map(|(_, path)| path.clone()).collect(),
        sha256sums: sums_path.clone(),
        rootfs: inputs.rootfs.to_path_buf(),
        sha256,
        reused,
        stages: Vec::new(),
        definition: Vec::new(),
    };
    if cache::stamp_matches(&stamp_dir, &key()) && own_sums.is_file() {
        stage.step("artifacts are up to date");
        let sha256 = read_sums(&own_sums)?;
        merge_sums(&sums_path, &sha256)?;
        return Ok(artifacts(sha256, true));
    }

    let sh = Shell::new()?;
    let partial = |path: &Path| {
        let name = path.file_name().expect("file").to_string_lossy();
        path.with_file_name(format!(".{name}.partial"))
    };
    // Leftovers of a build that was killed before it could clean up.
    for path in &paths {
        let _ = std::fs::remove_file(partial(path));
    }
    cache::remove_stamp(&stamp_dir)?;
    let mut guard = PartialFiles(Vec::new());
    for (format, path) in &names {
        let temporary = partial(path);
        guard.0.push(temporary.clone());
        match format {
            Some(Format::Raw) => raw(stage, &sh, inputs.disk, &temporary)?,
            Some(Format::Qcow2) => qcow2(stage, &sh, inputs.disk, &temporary)?,
            Some(Format::ImgXz) => img_xz(stage, &sh, inputs.disk, &temporary)?,
            Some(Format::Bmap) => bmap(stage, &sh, inputs.disk, &temporary)?,
            None => manifest(stage, &sh, inputs, &temporary)?,
        }
    }

    stage.step("SHA256SUMS");
    let mut sha256 = BTreeMap::new();
    for path in &paths {
        let name = path
            .file_name()
            .expect("file")
            .to_string_lossy()
            .into_owned();
        stage.step(format!("sha256 {name}"));
        sha256.insert(name, cache::sha256_file(&partial(path))?);
    }
    std::fs::write(&own_sums, sums_text(&sha256))?;

    // All complete: now they take their real names, SHA256SUMS last.
    for path in &paths {
        std::fs::rename(partial(path), path)?;
    }
    guard.0.clear();
    merge_sums(&sums_path, &sha256)?;
    cache::write_stamp(&stamp_dir, &key())?;
    Ok(artifacts(sha256, false))
}

fn sums_text(sha256: &BTreeMap<String, String>) -> String {
    sha256
        .iter()
        .map(|(name, digest)| format!("{digest}  {name}\n"))
        .collect()
}

/// Puts this build's digests into the output directory's SHA256SUMS, keeping the lines of
/// other builds (other targets) whose files are still there, and replaces the file atomically.
fn merge_sums(sums_path: &Path, own: &BTreeMap<String, String>) -> Result<()> {
    let dir = sums_path
        .parent()
        .expect("SHA256SUMS is inside the output directory");
    let mut merged = if sums_path.is_file() {
        read_sums(sums_path)?
    } else {
        BTreeMap::new()
    };
    merged.retain(|name, _| dir.join(name).is_file());
    merged.extend(own.iter().map(|(n, d)| (n.clone(), d.clone())));
    let partial = dir.join(".SHA256SUMS.partial");
    std::fs::write(&partial, sums_text(&merged))
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, sums_path)
        .with_context(|| format!("cannot replace {}", sums_path.display()))?;
    Ok(())
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

fn img_xz(stage: &mut StageProgress, sh: &Shell, disk: &Path, to: &Path) -> Result<()> {
    stage.step("img.xz image (compressed)");
    // Level 3: within a few percent of level 6 on a disk image, in a third of the time.
    stage.run_to_file(cmd!(sh, "xz -T0 -3 -c {disk}"), to)
}

fn bmap(stage: &mut StageProgress, sh: &Shell, disk: &Path, to: &Path) -> Result<()> {
    stage.step("bmap (map of the used blocks)");
    stage.run(cmd!(sh, "bmaptool create --output {to} {disk}"))?;
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
