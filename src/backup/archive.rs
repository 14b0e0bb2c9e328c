//! The tar inside a backup: the state directory's regular files and directories under
//! relative paths, with their permission bits; nothing else.
//!
//! Packing skips the crash marker (it describes the process that wrote it, not the
//! installation) and what a restore would refuse: symbolic links, sockets, FIFOs and
//! devices, each reported. Unpacking writes into a directory of its own making and accepts
//! only what packing writes: a member with an absolute path, a `..` or any type but file
//! or directory stops it, so a crafted archive cannot place a file outside that directory
//! or leave a link there for a later write to follow.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use tar::{EntryType, Header};

use crate::events::marker;

/// What a pack or an unpack handled.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub files: u64,
    pub directories: u64,
    /// The regular files' bytes.
    pub bytes: u64,
    /// What packing left out and why (`path: a symbolic link`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// Writes the tree under `root` to `out` as a tar, entries in name order.
pub fn pack<W: Write>(root: &Path, out: W) -> anyhow::Result<(Counts, W)> {
    let mut builder = tar::Builder::new(out);
    let mut counts = Counts::default();
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name();
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).display().to_string();
            anyhow::anyhow!(
                "cannot read {path}: {e} (run as the gateway's user, or with sudo on the \
                 appliance)"
            )
        })?;
        let rel = entry.path().strip_prefix(root)?;
        if rel == Path::new(marker::FILE_NAME) {
            continue;
        }
        let kind = entry.file_type();
        let shown = || rel.display().to_string();
        if kind.is_dir() {
            let meta = entry.metadata()?;
            let mut header = header(EntryType::Directory, &meta, 0);
            builder
                .append_data(&mut header, rel, io::empty())
                .with_context(|| format!("cannot add {}", shown()))?;
            counts.directories += 1;
        } else if kind.is_file() {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(entry.path())
                .with_context(|| format!("cannot read {}", entry.path().display()))?;
            let meta = file.metadata()?;
            let mut header = header(EntryType::Regular, &meta, meta.len());
            builder
                .append_data(&mut header, rel, file.take(meta.len()))
                .with_context(|| format!("cannot add {}", shown()))?;
            counts.files += 1;
            counts.bytes += meta.len();
        } else {
            let what = if kind.is_symlink() {
                "a symbolic link"
            } else {
                "not a regular file or directory"
            };
            counts.skipped.push(format!("{}: {what}", shown()));
        }
    }
    let out = builder.into_inner().context("cannot finish the archive")?;
    Ok((counts, out))
}

/// A member's header: type, size, permission bits (no set-id or sticky bits) and time; no
/// owner, which the restore sets.
fn header(kind: EntryType, meta: &std::fs::Metadata, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(meta.mode() & 0o777);
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    header
}

/// Unpacks the tar `input` into the empty directory `dest`, checking every member, then
/// reads `input` to its end (so that a cipher stream under it authenticates all of it) and
/// sets the members' modes. An error leaves `dest` partly filled, for the caller to remove.
pub fn unpack<R: Read>(input: R, dest: &Path) -> anyhow::Result<Counts> {
    let mut archive = tar::Archive::new(input);
    let mut counts = Counts::default();
    let mut modes: Vec<(PathBuf, u32)> = Vec::new();
    for entry in archive.entries().context("cannot read the archive")? {
        let mut entry = entry.context("cannot read the archive")?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let rel = checked(&entry.path().context("a member's path")?)
            .with_context(|| format!("member {shown:?}"))?;
        let path = dest.join(&rel);
        let mode = entry.header().mode().context("a member's mode")? & 0o777;
        match entry.header().entry_type() {
            EntryType::Directory => {
                private_dirs()
                    .create(&path)
                    .with_context(|| format!("member {shown:?}"))?;
                counts.directories += 1;
            }
            EntryType::Regular => {
                if let Some(parent) = path.parent() {
                    private_dirs().create(parent)?;
                }
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .with_context(|| format!("member {shown:?} (twice in the archive?)"))?;
                counts.bytes +=
                    io::copy(&mut entry, &mut file).with_context(|| format!("member {shown:?}"))?;
                // On disk before the swap makes it the installation.
                file.sync_all()?;
                counts.files += 1;
            }
            other => anyhow::bail!(
                "member {shown:?} is a {other:?}, and a backup holds only regular files and \
                 directories"
            ),
        }
        modes.push((path, mode));
    }
    io::copy(&mut archive.into_inner(), &mut io::sink()).context("cannot read the archive")?;
    // Deepest first, so a read-only directory is closed only after what it holds.
    for (path, mode) in modes.iter().rev() {
        std::fs::set_permissions(path, Permissions::from_mode(*mode))?;
    }
    File::open(dest)?.sync_all()?;
    Ok(counts)
}

/// Directories made while unpacking: private until their recorded mode is set at the end.
fn private_dirs() -> DirBuilder {
    let mut builder = DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder
}

/// `path` when it is relative and made of plain names only (no `..`, no `.`, no root).
fn checked(path: &Path) -> anyhow::Result<PathBuf> {
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => rel.push(name),
            _ => anyhow::bail!(
                "is not a plain relative path (absolute, or with `..` or `.`): refused, a \
                 backup never holds one"
            ),
        }
    }
    if rel.as_os_str().is_empty() {
        anyhow::bail!("has an empty path");
    }
    Ok(rel)
}
