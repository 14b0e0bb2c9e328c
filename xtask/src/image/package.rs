//! Stage `package`: the files a person downloads, in `--out` (default `out/`):
//! `<name>-<target>.raw`, `<name>-<target>.qcow2` (compressed), `<name>-<target>.manifest.json`
//! (every Debian package with version and architecture), the gateway's Debian package
//! `<package>_<version>_<arch>.deb` (made by customise), `<name>-<target>.spdx.json` (the SPDX
//! SBOM, `sbom.rs`: written last, as it carries the other artifacts' SHA-256) and `SHA256SUMS`.
//!
//! Every artifact is written under a hidden `.partial` name and renamed only when all of them
//! are complete, so a failed build never leaves a half-written file under a good name. One
//! function per output format; the cloud and hypervisor formats are in `package/cloud.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clawfort_imagedef::{Format, LoadedConfig};
use serde::Serialize;
use xshell::{cmd, Shell};

use super::assemble::Disk;
use super::cache::{self, Fingerprint};
use super::layout::ArtifactNames;
use super::progress::StageProgress;
use super::sbom;
use super::stage::{Runner, Stage, StageTiming};
use super::Profile;

mod cloud;

/// Paths of a finished build's artifacts.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The raw disk, when `raw` was one of the formats (the e2e suite boots it).
    pub raw: Option<PathBuf>,
    /// Every artifact written (the formats, the package manifest, then the SBOM).
    pub files: Vec<PathBuf>,
    pub sha256sums: PathBuf,
    /// The scrubbed root file system the disk was made from (for inspection in tests).
    pub rootfs: PathBuf,
    /// SHA-256 per artifact file name, as written to SHA256SUMS.
    pub sha256: BTreeMap<String, String>,
    /// Each stage's name, duration and outcome ("built", "reused ...").
    pub stages: Vec<StageTiming>,
    /// The files the image definition was merged from, in order.
    pub definition: Vec<PathBuf>,
    /// SHA256SUMS.sig, set by the build after this stage.
    pub signature: super::Signature,
}

/// What the manifest and the SBOM are made from.
struct Inputs<'a> {
    config: &'a LoadedConfig,
    rootfs: &'a Path,
    /// The repository, for the gateway's crates (`cargo metadata`) and HEAD's commit time.
    repo: &'a Path,
    version: &'a str,
    /// The gateway package built by customise.
    deb: &'a Path,
}

impl Inputs<'_> {
    /// `<name>-<target>`: the artifacts' common stem.
    fn stem(&self) -> String {
        format!(
            "{}-{}",
            self.config.image.image.name, self.config.target.name
        )
    }
}

/// One file the stage writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Image(Format),
    Manifest,
    /// The gateway package, copied from the customise stage.
    Deb,
    /// Last: it carries the digests of the others.
    Sbom,
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

/// The stage. Its key is the disk, the lock file (the SBOM's crates) and the list of artifacts;
/// HEAD's commit time (the SBOM's `created`) is not: an SBOM kept with unchanged artifacts keeps
/// the time they were first built at. It is reused only while every
/// artifact is still the file this stage wrote (same size and mtime, recorded beside the
/// stamp), so a booted or edited artifact is written again instead of passed off as fresh.
/// SHA256SUMS is shared with the other targets' builds, so it is not part of the identity;
/// this build's own lines are kept beside the stamp and merged into it.
pub fn run(
    runner: &mut Runner,
    profile: &Profile,
    disk: &Disk,
    rootfs: &Path,
    deb: &Path,
) -> Result<Artifacts> {
    let names = &profile.layout.artifacts;
    let mut outputs: Vec<(Output, PathBuf)> = profile
        .formats
        .iter()
        .map(|format| {
            (
                Output::Image(*format),
                profile.layout.artifact_path(*format),
            )
        })
        .collect();
    outputs.push((Output::Manifest, names.manifest()));
    let deb_name = deb
        .file_name()
        .context("the gateway package has a file name")?;
    outputs.push((Output::Deb, names.dir.join(deb_name)));
    outputs.push((Output::Sbom, names.sbom()));
    let paths: Vec<&Path> = outputs.iter().map(|(_, path)| path.as_path()).collect();
    let identities = || {
        paths
            .iter()
            .map(|path| cache::file_identity(path).unwrap_or_else(|| "missing".to_owned()) + "\n")
            .collect::<String>()
    };
    let mut fingerprint = Fingerprint::new("package");
    fingerprint.add("disk", &disk.key);
    fingerprint.add_file("Cargo.lock", &profile.layout.repo.join("Cargo.lock"))?;
    for path in &paths {
        fingerprint.add("artifact", path.as_os_str().as_encoded_bytes());
    }
    let dir = profile.layout.stage_dir("package");
    let own_sums = dir.join("SHA256SUMS");
    let stage = Stage::new("package", dir, fingerprint.finish()).ready(|dir| {
        dir.join("SHA256SUMS").is_file()
            && std::fs::read_to_string(dir.join(IDENTITIES)).is_ok_and(|text| text == identities())
    });
    let inputs = Inputs {
        config: &profile.definition,
        rootfs,
        repo: &profile.layout.repo,
        version: &profile.version,
        deb,
    };
    runner.cached(stage, |stage, dir| {
        write(stage, &inputs, &disk.raw, &outputs, &own_sums)?;
        std::fs::write(dir.join(IDENTITIES), identities())
            .with_context(|| format!("cannot record the artifacts in {}", dir.display()))
    })?;
    let sha256 = read_sums(&own_sums)?;
    let sums_path = names.sha256sums();
    merge_sums(names, &sha256)?;
    Ok(Artifacts {
        raw: profile
            .formats
            .contains(&Format::Raw)
            .then(|| profile.layout.artifact_path(Format::Raw)),
        files: paths.iter().map(|path| path.to_path_buf()).collect(),
        sha256sums: sums_path,
        rootfs: rootfs.to_path_buf(),
        sha256,
        stages: Vec::new(),
        definition: Vec::new(),
        signature: super::Signature::None,
    })
}

/// Beside the stamp: the size and mtime of every artifact as this stage left it.
const IDENTITIES: &str = "artifacts";

/// Writes every artifact under a `.partial` name, their digests to `own_sums`, and then gives
/// them their real names.
fn write(
    stage: &mut StageProgress,
    inputs: &Inputs<'_>,
    disk: &Path,
    outputs: &[(Output, PathBuf)],
    own_sums: &Path,
) -> Result<()> {
    let sh = Shell::new()?;
    // The target is in the name: the aarch64 and Pi builds both write the arm64 gateway
    // package into one directory, and may do so at once.
    let target = &inputs.config.target.name;
    let partial = |path: &Path| {
        let name = path.file_name().expect("file").to_string_lossy();
        path.with_file_name(format!(".{name}.{target}.partial"))
    };
    // Leftovers of a build that was killed before it could clean up.
    for (_, path) in outputs {
        let _ = std::fs::remove_file(partial(path));
        cloud::remove_leftovers(&partial(path));
    }
    let mut guard = PartialFiles(Vec::new());
    // Digests in the order written: the SBOM, last, lists the ones before it.
    let mut written: Vec<(Output, String, String)> = Vec::new();
    for (output, path) in outputs {
        let temporary = partial(path);
        guard.0.push(temporary.clone());
        match output {
            Output::Image(Format::Raw) => raw(stage, &sh, disk, &temporary)?,
            Output::Image(Format::Qcow2) => qcow2(stage, &sh, disk, &temporary)?,
            Output::Image(Format::ImgXz) => img_xz(stage, &sh, disk, &temporary)?,
            Output::Image(Format::Bmap) => bmap(stage, &sh, disk, &temporary)?,
            Output::Image(Format::Vhd) => cloud::vhd(stage, &sh, disk, &temporary)?,
            Output::Image(Format::GceTar) => cloud::gce_tar(stage, &sh, disk, &temporary)?,
            Output::Image(Format::Vmdk) => cloud::vmdk(stage, &sh, disk, &temporary)?,
            Output::Image(Format::Ova) => {
                let appliance = cloud::Appliance {
                    stem: &inputs.stem(),
                    template: &inputs.repo.join(cloud::OVF_TEMPLATE),
                    suite: &inputs.config.image.debian.suite,
                };
                cloud::ova(stage, &sh, disk, &temporary, &appliance)?
            }
            Output::Image(Format::RawZst) => cloud::raw_zst(stage, &sh, disk, &temporary)?,
            Output::Manifest => manifest(stage, &sh, inputs, &temporary)?,
            Output::Deb => {
                stage.step("the gateway's Debian package");
                std::fs::copy(inputs.deb, &temporary).with_context(|| {
                    format!("cannot copy {} to the output", inputs.deb.display())
                })?;
            }
            Output::Sbom => sbom(stage, &sh, inputs, &written, &temporary)?,
        }
        let name = path
            .file_name()
            .expect("file")
            .to_string_lossy()
            .into_owned();
        stage.step(format!("sha256 {name}"));
        let digest = cache::sha256_file(&temporary)?;
        written.push((*output, name, digest));
    }

    stage.step("SHA256SUMS");
    let sha256: BTreeMap<String, String> = written
        .into_iter()
        .map(|(_, name, digest)| (name, digest))
        .collect();
    std::fs::write(own_sums, sums_text(&sha256))?;

    // All complete: now they take their real names.
    for (_, path) in outputs {
        std::fs::rename(partial(path), path)?;
    }
    guard.0.clear();
    Ok(())
}

fn sums_text(sha256: &BTreeMap<String, String>) -> String {
    sha256
        .iter()
        .map(|(name, digest)| format!("{digest}  {name}\n"))
        .collect()
}

/// Puts this build's digests into the output directory's SHA256SUMS, keeping the lines of
/// other targets' builds whose files are still there, and replaces the file atomically. This
/// target's earlier lines all go: an artifact of a format this build did not make (a `vhd`
/// from an earlier `--format vhd`) is not part of this release, even if its file is left.
/// Builds of several targets into one directory run at once (CI builds the Pi image beside the
/// aarch64 suite), so the read, merge and replace happen under the directory's lock.
fn merge_sums(names: &ArtifactNames, own: &BTreeMap<String, String>) -> Result<()> {
    let sums_path = names.sha256sums();
    let dir = &names.dir;
    let _lock = cache::DirLock::acquire_named(dir, ".SHA256SUMS.lock")?;
    let mut merged = if sums_path.is_file() {
        read_sums(&sums_path)?
    } else {
        BTreeMap::new()
    };
    merged.retain(|name, _| dir.join(name).is_file() && !names.is_own(name));
    merged.extend(own.iter().map(|(n, d)| (n.clone(), d.clone())));
    let partial = dir.join(".SHA256SUMS.partial");
    std::fs::write(&partial, sums_text(&merged))
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, &sums_path)
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
    // Level 1: on the Pi's 1.8 GB raw, 359.9 MB in 121 s of CPU where level 3 made 349.0 MB
    // (3.1% less) in 222 s. The image is downloaded and decompressed once; it is compressed
    // on every build, CI's included.
    stage.run_to_file(cmd!(sh, "xz -T0 -1 -c {disk}"), to)
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

/// The SBOM of the image and of the artifacts in `written`.
fn sbom(
    stage: &mut StageProgress,
    sh: &Shell,
    inputs: &Inputs<'_>,
    written: &[(Output, String, String)],
    to: &Path,
) -> Result<()> {
    stage.step("SBOM (SPDX 2.3)");
    let debian = sbom::debian_packages(stage, sh, inputs.rootfs)?;
    let target = &inputs.config.target;
    let crates = sbom::gateway_crates(stage, sh, inputs.repo, &target.rust_triple)?;
    let created = sbom::created(stage, sh, inputs.repo)?;
    let artifacts: Vec<sbom::Artifact> = written
        .iter()
        .map(|(output, name, digest)| sbom::Artifact {
            file_name: name.clone(),
            sha256: digest.clone(),
            // Every image format but the block map holds the disk.
            disk_image: matches!(output, Output::Image(format) if *format != Format::Bmap),
        })
        .collect();
    let subject = sbom::Subject {
        name: &inputs.stem(),
        suite: &inputs.config.image.debian.suite,
        version: inputs.version,
        created: &created,
        artifacts: &artifacts,
    };
    let document = sbom::document(&subject, &debian, &crates);
    std::fs::write(to, serde_json::to_string_pretty(&document)? + "\n")
        .with_context(|| format!("cannot write {}", to.display()))?;
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

#[cfg(test)]
mod sums_tests {
    use super::*;
    use crate::image::Target;

    #[test]
    fn merging_keeps_other_targets_and_drops_this_targets_old_lines() {
        let dir = tempfile::tempdir().unwrap();
        let names = ArtifactNames::new(dir.path().to_owned(), "clawfort", Target::X86_64);
        for file in [
            "clawfort-rpi.img.xz",
            "clawfort-x86_64.vhd",
            "clawfort-x86_64.qcow2",
        ] {
            std::fs::write(dir.path().join(file), file).unwrap();
        }
        let old = "aa  clawfort-rpi.img.xz\nbb  clawfort-x86_64.vhd\ncc  clawfort-x86_64.qcow2\n\
                   dd  clawfort-aarch64.qcow2\n";
        std::fs::write(names.sha256sums(), old).unwrap();
        let own = BTreeMap::from([("clawfort-x86_64.qcow2".to_owned(), "ee".to_owned())]);
        merge_sums(&names, &own).unwrap();
        let merged = read_sums(&names.sha256sums()).unwrap();
        assert_eq!(
            merged,
            BTreeMap::from([
                ("clawfort-rpi.img.xz".to_owned(), "aa".to_owned()),
                ("clawfort-x86_64.qcow2".to_owned(), "ee".to_owned()),
            ]),
            "the rpi line stays, the left-over vhd and the missing aarch64 file go"
        );
    }

    /// Two targets' builds into one directory (CI builds the Pi image beside the aarch64 suite's
    /// own reuse of its image) merge at the same moment: neither loses the other's line.
    #[test]
    fn merges_of_two_targets_at_once_keep_both_lines() {
        let dir = tempfile::tempdir().unwrap();
        let targets = [Target::Aarch64, Target::Rpi];
        let own = |target: Target, round: usize| {
            let names = ArtifactNames::new(dir.path().to_owned(), "clawfort", target);
            let file = format!("clawfort-{target}.artifact");
            std::fs::write(dir.path().join(&file), "x").unwrap();
            (names, BTreeMap::from([(file, format!("{round:064x}"))]))
        };
        for round in 0..50 {
            std::thread::scope(|scope| {
                for target in targets {
                    let (names, sums) = own(target, round);
                    scope.spawn(move || merge_sums(&names, &sums).unwrap());
                }
            });
            let merged = read_sums(&dir.path().join("SHA256SUMS")).unwrap();
            for target in targets {
                assert_eq!(
                    merged.get(&format!("clawfort-{target}.artifact")),
                    Some(&format!("{round:064x}")),
                    "round {round}: {merged:?}"
                );
            }
        }
    }
}
