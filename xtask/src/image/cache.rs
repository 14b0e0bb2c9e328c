//! Reusing work between builds.
//!
//! Two kinds of reuse make a warm build fast:
//! - Downloaded `.deb` files live in a persistent cache outside the repository
//!   (`$XDG_CACHE_HOME/clawfort`, else `~/.cache/clawfort`), so a second build downloads nothing.
//! - Each stage's output directory carries a *stamp*: the SHA-256 of everything the stage read
//!   (config values, package lists, overlay files, the gateway binary, the builder itself). A
//!   stage whose stamp matches its inputs is skipped. A stamp is written only after the stage
//!   succeeded, so a failed or interrupted stage is never mistaken for a finished one.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use walkdir::WalkDir;

const STAMP: &str = ".clawfort-stamp";

/// The persistent cache root, outside the repository.
pub fn cache_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("clawfort"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_CACHE_HOME nor HOME is set: cannot place the build cache")?;
    Ok(PathBuf::from(home).join(".cache/clawfort"))
}

/// A SHA-256 over labelled inputs. Labels keep `("a", "bc")` and `("ab", "c")` apart.
pub struct Fingerprint(Sha256);

impl Fingerprint {
    pub fn new(stage: &str) -> Self {
        let mut fingerprint = Self(Sha256::new());
        fingerprint.add("stage", stage);
        fingerprint
    }

    pub fn add(&mut self, label: &str, value: impl AsRef<[u8]>) -> &mut Self {
        let value = value.as_ref();
        self.0.update((label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value);
        self
    }

    pub fn add_file(&mut self, label: &str, path: &Path) -> Result<&mut Self> {
        let digest = sha256_file(path)?;
        Ok(self.add(label, digest))
    }

    /// Every entry under `root`: relative path, kind, mode, and content (or link target).
    pub fn add_tree(&mut self, label: &str, root: &Path) -> Result<&mut Self> {
        self.add(label, root.as_os_str().as_encoded_bytes());
        if !root.exists() {
            return Ok(self.add("absent", ""));
        }
        for entry in WalkDir::new(root).sort_by_file_name() {
            let entry = entry.with_context(|| format!("cannot walk {}", root.display()))?;
            let relative = entry
                .path()
                .strip_prefix(root)
                .expect("walkdir stays under root");
            let meta = entry.path().symlink_metadata()?;
            self.add("path", relative.as_os_str().as_encoded_bytes());
            self.add("mode", meta.permissions().mode().to_le_bytes());
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(entry.path())?;
                self.add("link", target.as_os_str().as_encoded_bytes());
            } else if meta.is_file() {
                self.add("content", sha256_file(entry.path())?);
            }
        }
        Ok(self)
    }

    pub fn finish(&self) -> String {
        hex::encode(self.0.clone().finalize())
    }
}

/// A file's SHA-256 as hex, what `sha256sum` prints. The sha2 crate is optimised even in this
/// dev build (the root manifest's `[profile.dev.package.sha2]`), so a 4 GiB disk hashes at
/// disk speed: in a test, 2 GiB took 3.7 s, against 84 s unoptimised.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The hash of the builder's own source (`xtask/src/image.rs`, `xtask/src/image/`, and the
/// image definition's crate `imagedef/src/`): a change to the machinery invalidates the stages
/// that depend on it, without anyone having to remember to bump a version, while edits to other
/// xtask commands leave the stages warm.
pub fn builder_fingerprint(repo: &Path) -> Result<String> {
    let mut fingerprint = Fingerprint::new("builder");
    fingerprint.add_file("image.rs", &repo.join("xtask/src/image.rs"))?;
    fingerprint.add_tree("image", &repo.join("xtask/src/image"))?;
    fingerprint.add_tree("imagedef", &repo.join("imagedef/src"))?;
    Ok(fingerprint.finish())
}

pub fn stamp_matches(dir: &Path, key: &str) -> bool {
    std::fs::read_to_string(dir.join(STAMP)).is_ok_and(|stamp| stamp.trim() == key)
}

pub fn write_stamp(dir: &Path, key: &str) -> Result<()> {
    std::fs::write(dir.join(STAMP), format!("{key}\n"))
        .with_context(|| format!("cannot write the stage stamp in {}", dir.display()))
}

/// Removes a cache or stage directory whole, after detaching every mount below it. A bootstrap
/// killed part-way (a CI step failing, a Ctrl-C) can leave mmdebstrap's /proc, /sys, /dev/pts
/// and /dev/shm mounted in the root it was making; removing the directory would then walk into
/// them and fail on the kernel's files.
pub fn remove_tree(dir: &Path) -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    for mount_point in mounts_below(&mounts, dir) {
        rustix::mount::unmount(&mount_point, rustix::mount::UnmountFlags::DETACH).with_context(
            || {
                format!(
                    "cannot detach {}, left mounted by an interrupted build; unmount it and \
                     remove {}",
                    mount_point.display(),
                    dir.display()
                )
            },
        )?;
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))
}

/// The mount points below `dir` in a mountinfo text, deepest first (the order they detach in).
/// The fifth field is the mount point, with space, tab, newline and backslash octal-escaped.
fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut below: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| {
            PathBuf::from(
                field
                    .replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .filter(|mount_point| mount_point.starts_with(dir) && mount_point != dir)
        .collect();
    below.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    below.dedup();
    below
}

pub fn remove_stamp(dir: &Path) -> Result<()> {
    match std::fs::remove_file(dir.join(STAMP)) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("cannot remove the stage stamp in {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// What a package stamp records about an artifact: a booted or edited artifact has another
/// size or mtime and is rebuilt instead of being passed off as fresh.
pub fn file_identity(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    Some(format!(
        "{}:{}:{}.{}",
        path.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

/// An exclusive lock held for as long as the value lives, so two builds sharing a cache entry
/// or a work directory wait for each other instead of corrupting each other's stages.
pub struct DirLock {
    _held: File,
}

impl DirLock {
    /// Locks the directory `dir` as a whole (`dir/.lock`).
    pub fn acquire(dir: &Path) -> Result<Self> {
        Self::acquire_named(dir, ".lock")
    }

    /// Locks `dir/<name>` if no other build holds it; `None` when one does.
    pub fn try_acquire_named(dir: &Path, name: &str) -> Result<Option<Self>> {
        let (file, _) = lock_file(dir, name)?;
        Ok(file.try_lock().is_ok().then_some(Self { _held: file }))
    }

    /// Locks one entry of `dir` (`dir/<name>`): builds of other entries go on in parallel.
    pub fn acquire_named(dir: &Path, name: &str) -> Result<Self> {
        let (file, path) = lock_file(dir, name)?;
        if file.try_lock().is_err() {
            eprintln!("    waiting for another build holding {}", path.display());
            file.lock()
                .with_context(|| format!("cannot lock {}", path.display()))?;
        }
        Ok(Self { _held: file })
    }
}

/// The lock file `dir/<name>`, opened (and made, with `dir`, when missing).
fn lock_file(dir: &Path, name: &str) -> Result<(File, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(name);
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_below_a_directory_come_deepest_first_and_unescaped() {
        let mountinfo = "\
25 1 0:22 / / rw - ext4 /dev/vda rw
80 25 0:5 / /c/boot\\040strap/rootfs/proc rw - proc proc rw
81 25 0:6 / /c/boot\\040strap/rootfs/dev/pts rw - devpts none rw
82 25 0:7 / /c/boot\\040strap/rootfs/dev rw - tmpfs tmpfs rw
83 25 0:8 / /c/other/proc rw - proc proc rw
84 25 0:9 / /c/boot\\040strap rw - tmpfs tmpfs rw
";
        let below = mounts_below(mountinfo, Path::new("/c/boot strap"));
        assert_eq!(
            below,
            [
                "/c/boot strap/rootfs/dev/pts",
                "/c/boot strap/rootfs/proc",
                "/c/boot strap/rootfs/dev",
            ]
            .map(PathBuf::from)
        );
    }

    /// What an interrupted bootstrap leaves: a file system mounted inside the stage directory.
    /// Needs root to mount; CI runs the tests as root.
    #[test]
    fn a_tree_with_a_mount_left_inside_is_removed() {
        if !crate::image::host_tools::is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join("stage");
        let proc_dir = stage.join("rootfs/proc");
        std::fs::create_dir_all(&proc_dir).unwrap();
        rustix::mount::mount(
            "proc",
            &proc_dir,
            "proc",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        remove_tree(&stage).unwrap();
        assert!(!stage.exists());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(mounts_below(&mounts, dir.path()).is_empty());
    }

    #[test]
    fn a_changed_file_in_a_tree_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/a.conf"), "one").unwrap();
        let before = Fingerprint::new("t")
            .add_tree("o", dir.path())
            .unwrap()
            .finish();
        let again = Fingerprint::new("t")
            .add_tree("o", dir.path())
            .unwrap()
            .finish();
        assert_eq!(before, again);
        std::fs::write(dir.path().join("etc/a.conf"), "two").unwrap();
        let after = Fingerprint::new("t")
            .add_tree("o", dir.path())
            .unwrap()
            .finish();
        assert_ne!(before, after);
        std::fs::set_permissions(
            dir.path().join("etc/a.conf"),
            PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let chmodded = Fingerprint::new("t")
            .add_tree("o", dir.path())
            .unwrap()
            .finish();
        assert_ne!(after, chmodded);
    }

    #[test]
    fn labels_keep_inputs_apart() {
        let a = Fingerprint::new("t").add("a", "bc").finish();
        let b = Fingerprint::new("t").add("ab", "c").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn a_stamp_matches_only_its_key() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!stamp_matches(dir.path(), "k1"));
        write_stamp(dir.path(), "k1").unwrap();
        assert!(stamp_matches(dir.path(), "k1"));
        assert!(!stamp_matches(dir.path(), "k2"));
        remove_stamp(dir.path()).unwrap();
        assert!(!stamp_matches(dir.path(), "k1"));
    }

    /// The FIPS 180-2 vectors.
    #[test]
    fn file_digests_match_the_standard_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "abc").unwrap();
        assert_eq!(
            sha256_file(&file).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(&file, "a".repeat(1_000_000)).unwrap();
        assert_eq!(
            sha256_file(&file).unwrap(),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }
}
