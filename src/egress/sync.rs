//! Root writes the proxy's allow list from the service user's `openclaw.json`.
//!
//! `sudo clawfort egress sync [--dry-run]` is for a person who edited `openclaw.json` by
//! hand: it reads the config of the installation `clawfort.service` runs (found as `clawfort
//! setup` finds it), derives the destinations exactly as the proxy used to ([`AllowList`]),
//! prints what is added and removed, replaces the allow file `clawfort-egress.service`
//! reads (its `--allow-file`) and restarts that unit. `clawfort setup` writes the same file
//! through [`for_setup`] before it restarts the units.
//!
//! Root acts on a file the service user owns, so `openclaw.json` is read without following
//! a link (`setup::write::Dir`), and the allow file is replaced atomically in a directory
//! only root may write (created 755, the file 644, both root's).

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::allow::in_file;
use super::{allow_file, AllowList};
use crate::audit::command::{self, Outcome};
use crate::audit::installation::{self, EgressAllow, Sources, EGRESS_UNIT};
use crate::config::EnvSource;
use crate::setup::write::{Dir, Owner};
use crate::setup::BadInput;
use crate::target::Target;

/// The largest `openclaw.json` read.
const MAX_CONFIG: usize = 4 << 20;
/// `systemctl restart` waits for the old proxy to stop (the unit allows it 10 s).
const RESTART_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);
/// Who owns the allow file and its directory.
const ROOT: Owner = Owner { uid: 0, gid: 0 };

/// `clawfort egress sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Only print what would change; write and restart nothing.
    #[arg(long)]
    dry_run: bool,
    /// The allow file to write, instead of the one clawfort-egress.service reads (its
    /// --allow-file).
    #[arg(long, value_name = "PATH")]
    allow_file: Option<PathBuf>,
}

/// A new allow list, derived and checked, not yet written.
#[derive(Debug)]
pub struct Pending {
    pub path: PathBuf,
    pub list: AllowList,
    /// What changes against the list the proxy reads now (a missing or unreadable file
    /// counts as empty), so that a host nobody asked for is seen before it is allowed.
    pub diff: super::Diff,
    /// The file's `source`: who wrote it from what.
    source: String,
}

impl Pending {
    /// Replaces the allow file: written to a temporary file in the same directory, handed to
    /// root, mode 644, synced, renamed over the old one. The directory is created (755) when
    /// missing; an existing one that anyone but root may write is refused, since whoever can
    /// write it can swap the file.
    pub fn write(&self) -> anyhow::Result<()> {
        let (dir_path, name) = split(&self.path)?;
        let dir = Dir::open_or_create_with_mode(dir_path, true, Some(ROOT), 0o755)?;
        let (owner, mode) = dir.owner_and_mode()?;
        if owner.uid != 0 || mode & 0o022 != 0 {
            return Err(BadInput(format!(
                "{} belongs to uid {} with mode {mode:o}: anyone but root who can write it can \
                 replace the egress allow list; `sudo chown root:root {0}` and `sudo chmod 755 \
                 {0}`, then run this again",
                dir_path.display(),
                owner.uid
            ))
            .into());
        }
        let text = allow_file::render(&self.list, &self.source);
        dir.replace_with_mode(name, text.as_bytes(), Some(ROOT), 0o644)
    }
}

/// For `clawfort setup` as root on the service's installation: the allow list of the new
/// config `text`, to be written where `clawfort-egress.service` reads it. `None` when the
/// installation has no egress unit, or an older one that reads `openclaw.json` itself (then
/// a warning says so). An error (nothing written yet) when a destination cannot be derived.
pub fn for_setup(
    text: &str,
    config: &Path,
    warnings: &mut Vec<String>,
) -> Result<Option<Pending>, BadInput> {
    let path = match installation::egress_allow(&Sources::system()) {
        EgressAllow::NotInstalled => return Ok(None),
        EgressAllow::Config { from } => {
            warnings.push(format!(
                "{EGRESS_UNIT} ({from}) reads its allow list from openclaw.json, which the \
                 gateway it confines can write: give it `--allow-file {}` as the clawfort \
                 image does, then run `sudo clawfort egress sync`",
                allow_file::DEFAULT_PATH
            ));
            return Ok(None);
        }
        EgressAllow::File { path, .. } => path,
    };
    let list = derive(text, config).map_err(|e| {
        BadInput(format!(
            "the new openclaw.json names a destination the egress proxy could not allow, so \
             nothing was written: {e}"
        ))
    })?;
    let current = allow_file::read(&path).ok().flatten().unwrap_or_default();
    Ok(Some(Pending {
        diff: current.diff(&list),
        path,
        list,
        source: format!("clawfort setup, from {}", config.display()),
    }))
}

/// The destinations of the config `text` read from `config`. A URL written as `${VAR}` is
/// refused: the list must not depend on an environment the proxy does not share.
fn derive(text: &str, config: &Path) -> Result<AllowList, crate::config::ConfigError> {
    AllowList::from_config_text(text, &EnvSource::fixed([])).map_err(|e| in_file(e, config))
}

/// Runs `clawfort egress sync` on `target` (as root: the installation `clawfort.service`
/// runs). Prints the change on stdout.
pub fn run(args: SyncArgs, target: Target) -> anyhow::Result<()> {
    anyhow::ensure!(
        target.root,
        "`clawfort egress sync` writes the egress proxy's allow list, which only root may \
         change (that is its point): run `sudo clawfort egress sync`"
    );
    let unit = installation::egress_allow(&Sources::system());
    let path = match (args.allow_file, &unit) {
        (Some(path), _) => path,
        (None, EgressAllow::File { path, .. }) => path.clone(),
        (None, EgressAllow::Config { from }) => {
            return Err(BadInput(format!(
                "{EGRESS_UNIT} ({from}) has no --allow-file: it reads openclaw.json itself, \
                 which the gateway it confines can write. Make its ExecStart= `clawfort egress \
                 --allow-file {}` as the clawfort image ships it (or pass --allow-file to \
                 write a file anyway)",
                allow_file::DEFAULT_PATH
            ))
            .into())
        }
        (None, EgressAllow::NotInstalled) => {
            return Err(BadInput(format!(
                "{EGRESS_UNIT} is not installed, so no proxy reads an allow file; pass \
                 --allow-file PATH to write one anyway"
            ))
            .into())
        }
    };
    if target.service.is_none() && !target.named() {
        return Err(BadInput(format!(
            "{}; pass --config with the gateway's openclaw.json",
            target
                .note
                .as_deref()
                .unwrap_or("the gateway service's installation was not found")
        ))
        .into());
    }
    let config = &target.paths.config;
    let text = read_config(config)?;
    let list = derive(text.as_deref().unwrap_or("{}"), config)?;
    let current = allow_file::read(&path);

    println!("From {} into {}:", config.display(), path.display());
    let old = match &current {
        Ok(Some(list)) => list.clone(),
        Ok(None) => {
            println!("  ({} does not exist yet)", path.display());
            AllowList::default()
        }
        Err(e) => {
            println!("  (the current file is replaced: {e})");
            AllowList::default()
        }
    };
    let diff = old.diff(&list);
    for target in &diff.added {
        println!("  + {target}");
    }
    for target in &diff.removed {
        println!("  - {target}");
    }
    for target in list.iter().filter(|t| old.allows(t)) {
        println!("  = {target}");
    }
    if list.is_empty() {
        println!("  (no destination: the proxy will refuse every connection)");
    }
    if matches!(current, Ok(Some(_))) && diff.is_empty() {
        println!("Up to date: nothing written, nothing restarted.");
        return Ok(());
    }
    if args.dry_run {
        println!("Dry run: nothing written, nothing restarted.");
        return Ok(());
    }
    Pending {
        path: path.clone(),
        list,
        diff,
        source: format!("clawfort egress sync, from {}", config.display()),
    }
    .write()?;
    println!("Wrote {}.", path.display());
    if unit == EgressAllow::NotInstalled {
        println!("{EGRESS_UNIT} is not installed: nothing restarted.");
        return Ok(());
    }
    restart()?;
    println!("Restarted {EGRESS_UNIT}: it reads the new list.");
    Ok(())
}

/// `openclaw.json` as text (`None` when missing), never through a link.
pub fn read_config(config: &Path) -> anyhow::Result<Option<String>> {
    let (dir_path, name) = split(config)?;
    let Some(dir) = Dir::open(dir_path, true)? else {
        return Ok(None);
    };
    let Some(bytes) = dir.read(name, MAX_CONFIG)? else {
        return Ok(None);
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| BadInput(format!("{} is not UTF-8 text", config.display())).into())
}

/// `systemctl restart clawfort-egress.service`.
fn restart() -> anyhow::Result<()> {
    match command::run_within("systemctl", &["restart", EGRESS_UNIT], RESTART_LIMIT) {
        Outcome::Ran { ok: true, .. } => Ok(()),
        Outcome::Ran { stderr, .. } => anyhow::bail!(
            "the allow file is written, but `systemctl restart {EGRESS_UNIT}` failed: {}; see \
             `journalctl -u {EGRESS_UNIT}`",
            stderr.trim()
        ),
        Outcome::Missing => {
            anyhow::bail!("the allow file is written, but systemctl is not installed to restart {EGRESS_UNIT}")
        }
        Outcome::Failed(why) => Err(anyhow::anyhow!("{why}"))
            .context("the allow file is written, but the restart failed"),
    }
}

/// A file path's directory and name.
fn split(path: &Path) -> anyhow::Result<(&Path, &str)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| BadInput(format!("{}: not a file name", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((dir, name))
}
