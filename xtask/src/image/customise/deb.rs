//! The gateway as a Debian package. After the overlays and the binary are in the root, the
//! files `[package] files` names are moved out into a package tree, packed with the control
//! file and the maintainer scripts of `image/deb/` by `dpkg-deb`, and installed back with the
//! image's own dpkg. So the image's dpkg database (its manifest, its SBOM) lists the gateway,
//! and a later version of the same package, from a repository made by `cargo xtask repo`,
//! replaces it through apt like any other package.
//!
//! The package is reproducible: its files' times are the source's (`SOURCE_DATE_EPOCH`,
//! HEAD's commit time, also what dpkg-deb stamps the archive members with), owners are root,
//! and dpkg-deb sorts the members. The aarch64 and Pi builds both write
//! `clawfort_<version>_arm64.deb` into one output directory, so they must make the same bytes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use clawfort_imagedef::LoadedConfig;
use rustix::fs::{Timespec, Timestamps};
use walkdir::WalkDir;
use xshell::{cmd, Shell};

use crate::image::progress::StageProgress;

/// The maintainer scripts, relative to the repository: data, like the overlays.
pub const SCRIPTS: &str = "image/deb";

/// The scripts dpkg runs; each must be in [`SCRIPTS`].
const SCRIPT_NAMES: [&str; 3] = ["postinst", "prerm", "postrm"];

/// What the package is made of besides the image's files.
pub struct Spec<'a> {
    pub config: &'a LoadedConfig,
    /// The Debian version (the workspace's).
    pub version: &'a str,
    /// `image/deb/` of the repository.
    pub scripts: PathBuf,
    /// Seconds since the epoch: every file's time and dpkg-deb's `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: i64,
}

impl Spec<'_> {
    /// `<name>_<version>_<arch>.deb`, Debian's file name for it.
    pub fn file_name(&self) -> String {
        let package = &self.config.image.package;
        format!(
            "{}_{}_{}.deb",
            package.name, self.version, self.config.target.debian_arch
        )
    }
}

/// Builds the package from the root's files into `dir` and installs it into the root; returns
/// the `.deb`.
pub fn build_and_install(
    stage: &mut StageProgress,
    sh: &Shell,
    rootfs: &Path,
    spec: &Spec<'_>,
    dir: &Path,
) -> Result<PathBuf> {
    let deb = pack(stage, sh, rootfs, spec, dir)?;
    // The image's own dpkg installs it, and checks its Depends against the image.
    let inside = Path::new("var/cache").join(spec.file_name());
    std::fs::copy(&deb, rootfs.join(&inside))?;
    let result = stage.run(cmd!(
        sh,
        "chroot {rootfs} env DEBIAN_FRONTEND=noninteractive dpkg --install /{inside}"
    ));
    std::fs::remove_file(rootfs.join(&inside))?;
    result.context("the image's dpkg refused the gateway package; see `[package] depends`")?;
    Ok(deb)
}

/// Moves the package's files out of the root and packs them; returns the `.deb`.
fn pack(
    stage: &mut StageProgress,
    sh: &Shell,
    rootfs: &Path,
    spec: &Spec<'_>,
    dir: &Path,
) -> Result<PathBuf> {
    let tree = dir.join("deb-root");
    if tree.exists() {
        std::fs::remove_dir_all(&tree)?;
    }
    let mut installed_kib = 0u64;
    for path in &spec.config.image.package.files {
        installed_kib += move_into(rootfs, &tree, path)?.div_ceil(1024);
    }
    let control = tree.join("DEBIAN");
    std::fs::create_dir_all(&control)?;
    std::fs::write(
        control.join("control"),
        control_file(spec, installed_kib.max(1)),
    )?;
    for name in SCRIPT_NAMES {
        let from = spec.scripts.join(name);
        let to = control.join(name);
        std::fs::copy(&from, &to).with_context(|| {
            format!(
                "cannot copy the maintainer script {}: the package needs {SCRIPT_NAMES:?} \
                 in {SCRIPTS}/",
                from.display()
            )
        })?;
        std::fs::set_permissions(&to, PermissionsExt::from_mode(0o755))?;
    }
    set_times(&tree, spec.source_date_epoch)?;

    let deb = dir.join(spec.file_name());
    stage.step(format!("gateway package {}", spec.file_name()));
    let _epoch = sh.push_env("SOURCE_DATE_EPOCH", spec.source_date_epoch.to_string());
    // xz level 1: 1.1 s for 3.8 MB where the default level 6 took 4.6 s for 3.3 MB; it runs
    // in every target's customise, and the download is a few MB either way.
    stage.run(cmd!(
        sh,
        "dpkg-deb --root-owner-group -Zxz -z1 --build {tree} {deb}"
    ))?;
    std::fs::remove_dir_all(&tree)?;
    Ok(deb)
}

/// Moves one image file into the package tree; returns its size.
fn move_into(rootfs: &Path, tree: &Path, path: &str) -> Result<u64> {
    let relative = path.trim_start_matches('/');
    let from = rootfs.join(relative);
    let meta = from.symlink_metadata().with_context(|| {
        format!(
            "key `package.files`: `{path}` is not in the image after the overlays and the \
             binary; add it to overlays/ or remove it from the list"
        )
    })?;
    ensure!(
        meta.is_file(),
        "key `package.files`: `{path}` is not a regular file in the image"
    );
    ensure!(
        meta.uid() == 0 && meta.gid() == 0,
        "key `package.files`: `{path}` belongs to {}:{} in the image, but a package's files \
         are root's; keep it out of the package",
        meta.uid(),
        meta.gid()
    );
    let to = tree.join(relative);
    std::fs::create_dir_all(to.parent().expect("a file has a parent"))?;
    std::fs::rename(&from, &to)
        .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
    Ok(meta.len())
}

fn control_file(spec: &Spec<'_>, installed_kib: u64) -> String {
    let package = &spec.config.image.package;
    let mut text = format!(
        "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: {}\nInstalled-Size: {}\n",
        package.name,
        spec.version,
        spec.config.target.debian_arch,
        package.maintainer,
        installed_kib
    );
    if !package.depends.is_empty() {
        text += &format!("Depends: {}\n", package.depends.join(", "));
    }
    text += &format!(
        "Section: net\nPriority: optional\nDescription: {}\n",
        package.summary
    );
    text
}

/// Every entry's modification time becomes `epoch`, links' own included.
fn set_times(tree: &Path, epoch: i64) -> Result<()> {
    let time = Timespec {
        tv_sec: epoch,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    for entry in WalkDir::new(tree) {
        let entry = entry?;
        rustix::fs::utimensat(
            rustix::fs::CWD,
            entry.path(),
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("cannot set the time of {}", entry.path().display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root holding the package's files as the overlays leave them.
    fn root_with_files(dir: &Path, config: &LoadedConfig) -> PathBuf {
        let root = dir.join("rootfs");
        for (i, path) in config.image.package.files.iter().enumerate() {
            let file = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, format!("file {i}\n")).unwrap();
            std::fs::set_permissions(&file, PermissionsExt::from_mode(0o755)).unwrap();
        }
        root
    }

    /// The same inputs give the same bytes (the aarch64 and Pi builds write one file), the
    /// files are root's with the source's time, and they leave the root for the package.
    #[test]
    fn the_package_is_reproducible_and_takes_the_files_out_of_the_root() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: the files must be root's, as in an image (CI runs as root)");
            return;
        }
        let repo = crate::project_root();
        let config =
            crate::image::load_definition(&[], clawfort_imagedef::Target::Aarch64).unwrap();
        let sh = Shell::new().unwrap();
        let spec = Spec {
            config: &config,
            version: "1.2.3",
            scripts: repo.join(SCRIPTS),
            source_date_epoch: 1_700_000_000,
        };
        assert_eq!(spec.file_name(), "clawfort_1.2.3_arm64.deb");
        let mut digests = Vec::new();
        for run in ["a", "b"] {
            let dir = tempfile::tempdir().unwrap();
            let root = root_with_files(dir.path(), &config);
            let mut stage = StageProgress::start("deb-test", &dir.path().join("logs")).unwrap();
            let out = dir.path().join(run);
            std::fs::create_dir_all(&out).unwrap();
            let deb = pack(&mut stage, &sh, &root, &spec, &out).unwrap();
            for path in &config.image.package.files {
                assert!(!root.join(path.trim_start_matches('/')).exists(), "{path}");
            }
            let listing = cmd!(sh, "dpkg-deb --contents {deb}").read().unwrap();
            for path in &config.image.package.files {
                let line = listing
                    .lines()
                    .find(|l| l.ends_with(&format!(".{path}")))
                    .unwrap_or_else(|| panic!("{path} not in {listing}"));
                assert!(line.starts_with("-rwxr-xr-x root/root"), "{line}");
                assert!(line.contains("2023-11-14"), "{line}");
            }
            let fields = cmd!(
                sh,
                "dpkg-deb --field {deb} Package Version Architecture Depends"
            )
            .read()
            .unwrap();
            assert!(fields.contains("Version: 1.2.3"), "{fields}");
            assert!(fields.contains("Depends: libc6"), "{fields}");
            digests.push(crate::image::cache::sha256_file(&deb).unwrap());
        }
        assert_eq!(digests[0], digests[1]);
    }

    #[test]
    fn a_file_the_root_lacks_is_named() {
        let config = crate::image::load_definition(&[], clawfort_imagedef::Target::X86_64).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = move_into(dir.path(), &dir.path().join("tree"), "/usr/bin/clawfort").unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("package.files") && text.contains("/usr/bin/clawfort"),
            "{text}"
        );
        assert!(config
            .image
            .package
            .files
            .contains(&"/usr/bin/clawfort".to_owned()));
    }
}
