//! The installation's files, read and replaced without ever following a link.
//!
//! `sudo clawfort setup` writes as root into a directory the service user owns, and that
//! user (or an agent that got its rights) can plant anything there. So:
//! - a directory is opened once (`O_DIRECTORY`, and as root `O_NOFOLLOW`), and every file is
//!   opened relative to that descriptor with `O_NOFOLLOW | O_NONBLOCK`: a symbolic link where
//!   `openclaw.json` or `.env` belongs is refused, a FIFO cannot block the read, and only a
//!   regular file with a single link is read (a hard link could make root copy another
//!   file's content into the backup);
//! - a file is replaced atomically, as in `pairing::atomic` but relative to the directory
//!   descriptor: a new temporary file (`O_CREAT | O_EXCL`, mode 600) is written, handed to
//!   the installation's user with `fchown` on its descriptor, `fsync`ed, renamed over the
//!   old name, and the directory is `fsync`ed. A crash leaves the old file or the new one.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid, CWD};
use rustix::io::Errno;

use super::plan::bad;

/// The user and group that own an installation's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// An open directory of the installation.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens `path`; `Ok(None)` when it does not exist. With `nofollow`, a symbolic link
    /// at `path` is refused (as root: the service user could point it anywhere).
    pub fn open(path: &Path, nofollow: bool) -> anyhow::Result<Option<Self>> {
        let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if nofollow {
            flags |= OFlags::NOFOLLOW;
        }
        match rustix::fs::openat(CWD, path, flags, Mode::empty()) {
            Ok(fd) => Ok(Some(Self {
                fd,
                path: path.to_path_buf(),
            })),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) if nofollow && is_link(path) => Err(bad(format!(
                "{} is a symbolic link; run as root, setup does not follow links in the \
                 installation: replace it with the directory itself, or pass --config with \
                 the real path",
                path.display()
            ))
            .into()),
            Err(e) => Err(anyhow::anyhow!("cannot open {}: {e}", path.display())),
        }
    }

    /// Opens `path`, creating it (mode 700, owned by `owner`) when missing. Only the last
    /// component is created: its parent (a home directory) must exist.
    pub fn open_or_create(
        path: &Path,
        nofollow: bool,
        owner: Option<Owner>,
    ) -> anyhow::Result<Self> {
        Self::open_or_create_with_mode(path, nofollow, owner, 0o700)
    }

    /// `open_or_create` with another mode for a created directory (set on its descriptor,
    /// whatever the umask).
    pub fn open_or_create_with_mode(
        path: &Path,
        nofollow: bool,
        owner: Option<Owner>,
        mode: u32,
    ) -> anyhow::Result<Self> {
        if let Some(dir) = Self::open(path, nofollow)? {
            return Ok(dir);
        }
        match std::fs::DirBuilder::new().mode(mode).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(anyhow::anyhow!("cannot create {}: {e}", path.display())),
        }
        let dir = Self::open(path, nofollow)?
            .with_context(|| format!("{} vanished while being created", path.display()))?;
        if let Some(owner) = owner {
            chown(&dir.fd, owner).with_context(|| format!("cannot chown {}", path.display()))?;
        }
        rustix::fs::fchmod(&dir.fd, Mode::from_raw_mode(mode))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The owner of the directory itself.
    pub fn owner(&self) -> anyhow::Result<Owner> {
        Ok(self.owner_and_mode()?.0)
    }

    /// The owner and the permission bits of the directory itself.
    pub fn owner_and_mode(&self) -> anyhow::Result<(Owner, u32)> {
        let stat = rustix::fs::fstat(&self.fd)
            .with_context(|| format!("cannot stat {}", self.path.display()))?;
        let owner = Owner {
            uid: stat.st_uid,
            gid: stat.st_gid,
        };
        Ok((owner, stat.st_mode & 0o7777))
    }

    /// The content of the regular file `name`, at most `max` bytes; `Ok(None)` when it does
    /// not exist. A link, a non-regular file or a file with several links is refused.
    pub fn read(&self, name: &str, max: usize) -> anyhow::Result<Option<Vec<u8>>> {
        let shown = self.path.join(name);
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => {
                return Err(bad(format!(
                    "{} is a symbolic link; setup does not follow links in the installation: \
                     replace it with the file itself (or remove it), then run setup again",
                    shown.display()
                ))
                .into())
            }
            Err(e) => return Err(anyhow::anyhow!("cannot open {}: {e}", shown.display())),
        };
        let stat =
            rustix::fs::fstat(&fd).with_context(|| format!("cannot stat {}", shown.display()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(bad(format!("{} is not a regular file", shown.display())).into());
        }
        if stat.st_nlink > 1 {
            return Err(bad(format!(
                "{} has {} hard links; setup does not touch a file shared with another path: \
                 replace it with a copy of its own",
                shown.display(),
                stat.st_nlink
            ))
            .into());
        }
        let mut bytes = Vec::new();
        File::from(fd)
            .take(max as u64 + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", shown.display()))?;
        if bytes.len() > max {
            return Err(bad(format!(
                "{} is larger than {max} bytes; is it the right file?",
                shown.display()
            ))
            .into());
        }
        Ok(Some(bytes))
    }

    /// Atomically replaces `name` with `contents`, mode 600, owned by `owner` when given.
    pub fn replace(&self, name: &str, contents: &[u8], owner: Option<Owner>) -> anyhow::Result<()> {
        self.replace_with_mode(name, contents, owner, 0o600)
    }

    /// `replace` with another mode (root's allow list for the egress proxy is 644).
    pub fn replace_with_mode(
        &self,
        name: &str,
        contents: &[u8],
        owner: Option<Owner>,
        mode: u32,
    ) -> anyhow::Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let shown = self.path.join(name);
        let result = (|| -> std::io::Result<()> {
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(&self.fd, tmp.as_str(), flags, Mode::from_raw_mode(0o600))?;
            if let Some(owner) = owner {
                chown(&fd, owner)?;
            }
            // The umask may have narrowed it: the mode set explicitly is what counts.
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
            let mut file = File::from(fd);
            file.write_all(contents)?;
            file.sync_all()?;
            rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name)?;
            rustix::fs::fsync(&self.fd)?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
            return Err(anyhow::anyhow!("cannot write {}: {e}", shown.display()));
        }
        Ok(())
    }
}

fn chown(fd: &OwnedFd, owner: Owner) -> std::io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(Uid::from_raw(owner.uid)),
        Some(Gid::from_raw(owner.gid)),
    )?;
    Ok(())
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn replace_is_private_and_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path(), true).unwrap().unwrap();
        dir.replace("a.json", b"{}", None).unwrap();
        dir.replace("a.json", b"{\"x\":1}", None).unwrap();
        let meta = std::fs::metadata(tmp.path().join("a.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(dir.read("a.json", 100).unwrap().unwrap(), b"{\"x\":1}");
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.json"]);
        assert_eq!(dir.read("missing", 100).unwrap(), None);
    }

    #[test]
    fn links_fifos_and_hard_links_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, "root's secret").unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::symlink(&secret, state.join("openclaw.json")).unwrap();
        std::fs::hard_link(&secret, state.join(".env")).unwrap();
        rustix::fs::mknodat(
            CWD,
            state.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let dir = Dir::open(&state, true).unwrap().unwrap();
        let e = dir.read("openclaw.json", 100).unwrap_err().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        let e = dir.read(".env", 100).unwrap_err().to_string();
        assert!(e.contains("2 hard links"), "{e}");
        let e = dir.read("fifo", 100).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");

        // Replacing a planted link swaps the link, never writes through it.
        dir.replace("openclaw.json", b"new", None).unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root's secret");

        let linked = tmp.path().join("linked");
        std::os::unix::fs::symlink(&state, &linked).unwrap();
        let e = Dir::open(&linked, true).unwrap_err().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        assert!(Dir::open(&linked, false).unwrap().is_some());
    }

    #[test]
    fn a_created_directory_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(".openclaw");
        let dir = Dir::open_or_create(&path, true, None).unwrap();
        let meta = std::fs::metadata(dir.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert_eq!(dir.owner().unwrap().uid, meta.uid());
    }
}
