//! Every path a build reads or writes, worked out once: the repository's inputs, the work
//! directory's stage outputs, the persistent cache, and the artifacts in `--out`. Stages ask
//! the layout for a path instead of joining names themselves, and every command that looks for
//! an artifact (`run`, the suite, CI) names it through [`ArtifactNames`].

use std::path::{Path, PathBuf};

use clawfort_imagedef::{Format, Target};

/// Where one build's files live.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The repository: the image definition, overlays and the NoCloud seed files.
    pub repo: PathBuf,
    /// `--work-dir`: the per-variant stage outputs (customise, assemble, package) and logs.
    pub work: PathBuf,
    /// `$XDG_CACHE_HOME/clawfort`: `.deb`s, bootstraps and sandbox tars, shared by variants.
    pub cache: PathBuf,
    /// `--out` and the artifacts' names.
    pub artifacts: ArtifactNames,
}

impl Layout {
    /// The default work directory of a target's builds.
    pub fn default_work(repo: &Path, target: Target) -> PathBuf {
        repo.join("target/image").join(target.name())
    }

    /// A work-directory stage's output directory (`customise`, `assemble`, `package`).
    pub fn stage_dir(&self, stage: &str) -> PathBuf {
        self.work.join(stage)
    }

    /// One log file per stage.
    pub fn logs(&self) -> PathBuf {
        self.work.join("logs")
    }

    /// The deb822 sources the bootstrap and the sandbox are made from.
    pub fn apt_dir(&self) -> PathBuf {
        self.work.join("apt")
    }

    /// The `.deb` cache of one target (one per target, not per architecture: mmdebstrap copies
    /// it in and out without locking, and the targets build in parallel).
    pub fn deb_cache(&self, target: Target) -> PathBuf {
        self.cache.join("apt").join(target.name())
    }

    /// The parent of a cached stage's entries (`bootstrap`, `sandbox`).
    pub fn cache_stage(&self, stage: &str) -> PathBuf {
        self.cache.join(stage)
    }

    /// The lock files that keep two builds off one cache entry.
    pub fn locks(&self) -> PathBuf {
        self.cache.join("locks")
    }

    /// The NoCloud seed files copied onto the `cidata` volume.
    pub fn cidata_seed(&self) -> PathBuf {
        self.repo.join("image/cidata")
    }

    /// The artifact of `format` in `--out`.
    pub fn artifact_path(&self, format: Format) -> PathBuf {
        self.artifacts.path(format)
    }
}

/// The names of one target's artifacts in an output directory: `<image.name>-<target>.<ext>`.
#[derive(Debug, Clone)]
pub struct ArtifactNames {
    pub dir: PathBuf,
    target: Target,
    /// `<image.name>-<target>`.
    stem: String,
}

impl ArtifactNames {
    pub fn new(dir: PathBuf, image_name: &str, target: Target) -> Self {
        Self {
            dir,
            target,
            stem: format!("{image_name}-{target}"),
        }
    }

    pub fn target(&self) -> Target {
        self.target
    }

    pub fn path(&self, format: Format) -> PathBuf {
        self.named(format.extension())
    }

    /// The Debian package manifest beside the images.
    pub fn manifest(&self) -> PathBuf {
        self.named("manifest.json")
    }

    /// The SPDX 2.3 SBOM of the image and its artifacts (`image/sbom.rs`).
    pub fn sbom(&self) -> PathBuf {
        self.named("spdx.json")
    }

    /// The `.img` that `xz -dk` makes of the `img.xz` artifact (the Pi image boots from it).
    pub fn decompressed_img(&self) -> PathBuf {
        self.named("img")
    }

    /// The digests of every artifact in the directory, all targets' together.
    pub fn sha256sums(&self) -> PathBuf {
        self.dir.join("SHA256SUMS")
    }

    /// Whether `file_name` is one of this target's artifacts (`<image.name>-<target>.*`).
    pub fn is_own(&self, file_name: &str) -> bool {
        file_name
            .strip_prefix(&self.stem)
            .is_some_and(|rest| rest.starts_with('.'))
    }

    fn named(&self, extension: &str) -> PathBuf {
        self.dir.join(format!("{}.{extension}", self.stem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_named_after_the_image_and_the_target() {
        let names = ArtifactNames::new("out".into(), "clawfort", Target::Rpi);
        assert_eq!(
            names.path(Format::ImgXz),
            Path::new("out/clawfort-rpi.img.xz")
        );
        assert_eq!(
            names.path(Format::Bmap),
            Path::new("out/clawfort-rpi.img.bmap")
        );
        assert_eq!(names.sbom(), Path::new("out/clawfort-rpi.spdx.json"));
        assert_eq!(names.decompressed_img(), Path::new("out/clawfort-rpi.img"));
        assert_eq!(
            ArtifactNames::new("o".into(), "clawfort", Target::X86_64).path(Format::Qcow2),
            Path::new("o/clawfort-x86_64.qcow2")
        );
    }
}
