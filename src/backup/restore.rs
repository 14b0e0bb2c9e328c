//! `clawfort backup restore`: decrypt and unpack all of the backup into a new directory
//! beside the state directory, hand it to the installation's owner, and only then swap it
//! in: the old state directory is renamed aside and the new one renamed into place, on the
//! same file system. Until that first rename nothing of the installation has changed; the
//! new directory is removed on any error before it (a wrong key, a flipped byte anywhere in
//! the file, a truncated file, a refused member).

use std::fs::File;
use std::io::BufReader;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::{archive, key, RestoreArgs};
use crate::target::Target;

/// What `backup restore --json` prints.
#[derive(Serialize)]
struct Summary<'a> {
    file: &'a Path,
    state_dir: &'a Path,
    #[serde(flatten)]
    counts: archive::Counts,
    /// Where the state directory that was replaced now is, if there was one.
    previous: Option<PathBuf>,
}

pub fn run(target: &Target, args: &RestoreArgs) -> anyhow::Result<()> {
    let state_dir = &target.paths.state_dir;
    let file = &args.from;
    let existing = existing(state_dir, args.force)?;
    let (parent, name) = match (state_dir.parent(), state_dir.file_name()) {
        (Some(parent), Some(name)) => (
            if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            },
            name.to_string_lossy().into_owned(),
        ),
        _ => anyhow::bail!(
            "cannot restore into {}: name the state directory with --config DIR/openclaw.json",
            state_dir.display()
        ),
    };
    let input =
        File::open(file).with_context(|| format!("cannot open the backup {}", file.display()))?;
    let decryptor = age::Decryptor::new(BufReader::new(input)).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a backup clawfort can read ({e}); nothing was restored",
            file.display()
        )
    })?;
    let identities = key::identities(
        &decryptor,
        file,
        args.identity.as_deref(),
        args.passphrase_file.as_deref(),
    )?;
    let plain = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot decrypt {}: {e} (a wrong passphrase or key, or a damaged file); \
                 nothing was restored, {} is unchanged",
                file.display(),
                state_dir.display()
            )
        })?;
    let fresh = tempfile::Builder::new()
        .prefix(&format!(".{name}.restore-"))
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    let counts = archive::unpack(plain, fresh.path()).map_err(|e| {
        anyhow::anyhow!(
            "{} is damaged or was altered: {e:#}; nothing was restored, {} is unchanged",
            file.display(),
            state_dir.display()
        )
    })?;
    std::fs::set_permissions(
        fresh.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    if let Some((uid, gid)) = owner(target, existing.as_ref()) {
        hand_over(fresh.path(), uid, gid)?;
    }
    let previous = swap(fresh, state_dir, existing.is_some(), parent, &name)?;
    let summary = Summary {
        file,
        state_dir,
        counts,
        previous,
    };
    print(&summary, args.json)
}

/// The metadata of the state directory if it exists; an error if it holds files and
/// `force` was not given, or is a symbolic link (the swap would replace the link, not
/// the directory it names).
fn existing(state_dir: &Path, force: bool) -> anyhow::Result<Option<std::fs::Metadata>> {
    let meta = match std::fs::symlink_metadata(state_dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", state_dir.display())),
    };
    if !meta.is_dir() {
        anyhow::bail!(
            "{} is not a directory (a symbolic link?): restore into the directory it names \
             with --config DIR/openclaw.json",
            state_dir.display()
        );
    }
    let holds_files = std::fs::read_dir(state_dir)?.next().is_some();
    if holds_files && !force {
        anyhow::bail!(
            "{} already holds an installation: pass --force to restore over it (it is kept \
             as {}.before-restore-<time>, not deleted)",
            state_dir.display(),
            state_dir.display()
        );
    }
    Ok(Some(meta))
}

/// Who owns the restored tree: as root, the service's user for its installation, else the
/// existing state directory's owner; not root, the invoking user (nothing to change).
fn owner(target: &Target, existing: Option<&std::fs::Metadata>) -> Option<(u32, u32)> {
    if !target.root {
        return None;
    }
    match (&target.service, existing) {
        (Some(user), _) => Some((user.uid, user.gid)),
        (None, Some(meta)) => Some((meta.uid(), meta.gid())),
        (None, None) => None,
    }
}

/// Gives every entry of `root` (which holds no links: unpacking makes none) to `uid:gid`.
fn hand_over(root: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry?;
        std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to uid {uid}", entry.path().display()))?;
    }
    Ok(())
}

/// Renames the old state directory aside (when there is one) and `fresh` into its place;
/// puts the old one back if the second rename fails, and `fresh` is removed on any error
/// (it is a `TempDir` until it is the state directory). The old one's new path.
fn swap(
    fresh: tempfile::TempDir,
    state_dir: &Path,
    has_old: bool,
    parent: &Path,
    name: &str,
) -> anyhow::Result<Option<PathBuf>> {
    let aside = if has_old {
        Some(aside_path(state_dir, name)?)
    } else {
        None
    };
    if let Some(aside) = &aside {
        std::fs::rename(state_dir, aside).with_context(|| {
            format!(
                "cannot move {} aside to {}",
                state_dir.display(),
                aside.display()
            )
        })?;
    }
    if let Err(e) = std::fs::rename(fresh.path(), state_dir) {
        if let Some(aside) = &aside {
            let _ = std::fs::rename(aside, state_dir);
        }
        return Err(e)
            .with_context(|| format!("cannot move the restored tree to {}", state_dir.display()));
    }
    // Renamed: nothing left at the temporary path for the `TempDir` to remove.
    let _ = fresh.keep();
    File::open(parent)?.sync_all()?;
    Ok(aside)
}

/// `<name>.before-restore-<UTC time>` beside the state directory, with `-2`, `-3`... when
/// an earlier restore in the same second took that name.
fn aside_path(state_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let time = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
    let base = format!("{name}.before-restore-{time}");
    (1..=100)
        .map(|n| match n {
            1 => state_dir.with_file_name(&base),
            n => state_dir.with_file_name(format!("{base}-{n}")),
        })
        .find(|path| std::fs::symlink_metadata(path).is_err())
        .ok_or_else(|| anyhow::anyhow!("100 restores in one second: remove {base}-*"))
}

fn print(summary: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
        return Ok(());
    }
    let c = &summary.counts;
    println!(
        "restored {} files and {} directories ({} bytes) from {} to {}",
        c.files,
        c.directories,
        c.bytes,
        summary.file.display(),
        summary.state_dir.display()
    );
    if let Some(previous) = &summary.previous {
        println!(
            "the previous state directory is kept at {}",
            previous.display()
        );
    }
    println!(
        "next: start the gateway (sudo systemctl start clawfort), then check it with \
         `clawfort status` and `sudo clawfort security audit`"
    );
    Ok(())
}
