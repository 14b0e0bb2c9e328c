//! `clawfort backup create`: state directory -> tar -> age -> `FILE.partial` -> `FILE`,
//! streamed, so memory stays flat whatever the transcripts weigh.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::{archive, key, CreateArgs};
use crate::target::Target;

/// What `backup create --json` prints.
#[derive(Serialize)]
struct Summary<'a> {
    file: &'a Path,
    state_dir: &'a Path,
    #[serde(flatten)]
    counts: archive::Counts,
    /// The size of the encrypted file.
    file_bytes: u64,
    key: Key,
}

/// What opens the backup.
#[derive(Serialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Key {
    Passphrase,
    /// The identity file of the `--recipient` key.
    Recipient,
}

pub fn run(target: &Target, args: &CreateArgs) -> anyhow::Result<()> {
    let state_dir = &target.paths.state_dir;
    if !state_dir.is_dir() {
        anyhow::bail!(
            "no state directory at {}: nothing to back up (pass --config PATH to name the \
             installation)",
            state_dir.display()
        );
    }
    refuse_inside(&args.to, state_dir)?;
    if args.to.exists() && !args.force {
        anyhow::bail!(
            "{} exists: choose another file, or pass --force to replace it",
            args.to.display()
        );
    }
    let encryptor = key::encryptor(args.recipient.as_deref(), args.passphrase_file.as_deref())?;
    let partial = partial_path(&args.to);
    let written = write(&partial, state_dir, encryptor).and_then(|counts| {
        std::fs::rename(&partial, &args.to).with_context(|| {
            format!(
                "cannot rename {} to {}",
                partial.display(),
                args.to.display()
            )
        })?;
        Ok(counts)
    });
    let counts = match written {
        Ok(counts) => counts,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context(format!("no backup was written to {}", args.to.display())));
        }
    };
    if let Some(dir) = args.to.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    let summary = Summary {
        file: &args.to,
        state_dir,
        file_bytes: std::fs::metadata(&args.to)?.len(),
        counts,
        key: if args.recipient.is_some() {
            Key::Recipient
        } else {
            Key::Passphrase
        },
    };
    print(&summary, args.json)
}

/// Streams the archive of `state_dir` through `encryptor` into a new `partial` (mode 600).
fn write(
    partial: &Path,
    state_dir: &Path,
    encryptor: age::Encryptor,
) -> anyhow::Result<archive::Counts> {
    // A stale partial of an interrupted run is replaced by a new file, never reused: its
    // mode and owner are this run's.
    match std::fs::remove_file(partial) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", partial.display()))
        }
        _ => {}
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    if let Some((uid, gid)) = sudo_invoker() {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to uid {uid}", partial.display()))?;
    }
    let sealed = encryptor.wrap_output(BufWriter::new(file))?;
    let (counts, sealed) = archive::pack(state_dir, sealed)?;
    let mut out = sealed.finish()?;
    out.flush()?;
    out.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("cannot write {}", partial.display()))?;
    Ok(counts)
}

/// The user who ran `sudo clawfort backup create` (`SUDO_UID`, `SUDO_GID`), when root runs
/// it that way: the file is theirs, so the admin can copy it off the box with scp without
/// another sudo. It is encrypted; the state directory's own owner gains nothing from it.
fn sudo_invoker() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let id = |name: &str| std::env::var(name).ok()?.parse::<u32>().ok();
    Some((id("SUDO_UID")?, id("SUDO_GID")?))
}

/// `FILE.partial`, beside `FILE`.
fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Refuses a backup file inside the state directory: it would archive itself, half
/// written, and a restore would bring back a stale copy of it.
fn refuse_inside(to: &Path, state_dir: &Path) -> anyhow::Result<()> {
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let parent = parent
        .canonicalize()
        .with_context(|| format!("the directory of {} cannot be used", to.display()))?;
    if parent.starts_with(state_dir.canonicalize()?) {
        anyhow::bail!(
            "{} is inside the state directory {}: write the backup elsewhere (e.g. the admin \
             user's home, to copy it off the box)",
            to.display(),
            state_dir.display()
        );
    }
    Ok(())
}

fn print(summary: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
        return Ok(());
    }
    let c = &summary.counts;
    println!(
        "backed up {} files and {} directories ({} bytes) of {} to {} ({} bytes, {})",
        c.files,
        c.directories,
        c.bytes,
        summary.state_dir.display(),
        summary.file.display(),
        summary.file_bytes,
        match summary.key {
            Key::Recipient => "opened by the age key's identity file",
            Key::Passphrase => "opened by the passphrase",
        }
    );
    for skipped in &c.skipped {
        println!("  skipped {skipped}");
    }
    println!("copy it off this machine; `clawfort backup restore --from FILE` puts it back");
    Ok(())
}
