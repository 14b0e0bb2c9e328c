//! File permissions of an installation: the check and `--fix`.
//!
//! Both look at each path itself, never through a symbolic link: a link is a finding of its
//! own, and `--fix` never changes it or anything it points to. `security audit --fix` is often
//! run by root on a state directory that the (unprivileged) service user controls; following
//! a link planted there would let that user have root chmod any file on the machine.
//!
//! Severity of a link:
//! - the state directory itself: **warn**. Moving `~/.openclaw` to another disk with a link is
//!   an ordinary setup, and whoever can change the link owns the installation anyway. The
//!   target is still audited (read only), but `--fix` leaves the whole installation alone,
//!   because it acts only inside a real state directory; audit the target itself
//!   (`--config <target>/openclaw.json`) to fix it.
//! - `credentials/` or a file in it: **critical**. The pairing store decides who may talk to
//!   the agent; through a link it is read from a file outside the state directory that the
//!   audit cannot vouch for (another user's file, or one any process can write), and the
//!   gateway's atomic replace would silently swap the link for a private copy.
//! - `openclaw.json` or `.env`: **warn**. Keeping the config elsewhere is a legitimate
//!   choice, but its permissions are then those of a file outside the installation.
//!
//! `--fix` opens the state directory with `O_NOFOLLOW | O_DIRECTORY`, every entry relative to
//! it with `O_NOFOLLOW`, checks what it opened (`fstat`: a regular file or directory owned by
//! the state directory's owner, a file with no second hard link) and `fchmod`s that very
//! descriptor, clearing only the group and other bits: setuid, setgid and sticky bits are
//! kept. A config file outside the state directory is reported, not fixed.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};

use super::{Finding, Severity};
use crate::config::Config;
use crate::pairing::Store;
use crate::paths::Paths;

/// What `--fix` did: the changes, and what it left alone with the reason.
#[derive(Debug, Default)]
pub struct FixOutcome {
    pub changed: Vec<String>,
    pub unfixed: Vec<String>,
}

/// The role of a private path, which decides its finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    StateDir,
    Config,
    Env,
    CredentialsDir,
    Credential,
}

impl Role {
    fn wanted(self) -> u32 {
        match self {
            Role::StateDir | Role::CredentialsDir => 0o700,
            _ => 0o600,
        }
    }
}

/// The permission findings of the installation at `paths`.
pub fn check(paths: &Paths, config: &Config, findings: &mut Vec<Finding>) {
    let state_meta = match std::fs::symlink_metadata(&paths.state_dir) {
        Ok(meta) => meta,
        Err(_) => {
            findings.push(Finding::new(
                "fs.state_dir.missing",
                Severity::Info,
                format!("no state directory at {}", paths.state_dir.display()),
                "nothing to check on disk; the gateway runs with the secure defaults",
                "pass --config PATH (or set OPENCLAW_CONFIG_PATH) to audit another installation",
            ));
            return;
        }
    };
    // A linked state directory: its own finding, then the target is audited read-only.
    let (root, linked) = if state_meta.file_type().is_symlink() {
        let target = std::fs::canonicalize(&paths.state_dir);
        findings.push(link_finding(
            Role::StateDir,
            &paths.state_dir,
            target.as_ref().ok().map(PathBuf::as_path),
            &paths.state_dir,
        ));
        match target {
            Ok(target) => (target, true),
            Err(_) => return,
        }
    } else {
        (paths.state_dir.clone(), false)
    };
    let Ok(root_meta) = std::fs::symlink_metadata(&root) else {
        return;
    };
    if root_meta.uid() == 0 && config.from_file {
        findings.push(Finding::new(
            "process.root",
            Severity::Warn,
            "this installation belongs to root",
            format!("{} is owned by root", root.display()),
            "run the gateway as a dedicated unprivileged user (the appliance uses `openclaw`)",
        ));
    }
    store_files(&root, findings);
    for (path, role) in private_paths(paths, &root) {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let target = std::fs::canonicalize(&path).ok();
            findings.push(link_finding(role, &path, target.as_deref(), &root));
            continue;
        }
        let current = meta.permissions().mode() & 0o7777;
        if current & 0o077 == 0 {
            continue;
        }
        let fixable = !linked && (role != Role::Config || inside(&path, &paths.state_dir));
        findings.push(perms_finding(role, &path, current, config, fixable));
    }
}

/// Every pairing file must parse: a broken one shuts its channel (fail closed) until fixed.
/// Links are skipped here: they have their own critical finding.
fn store_files(root: &Path, findings: &mut Vec<Finding>) {
    let dir = root.join("credentials");
    if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return;
    }
    let store = Store::new(dir);
    let Ok(channels) = store.channels() else {
        return;
    };
    for channel in channels {
        for e in store.check_channel(&channel) {
            if std::fs::symlink_metadata(&e.file).is_ok_and(|m| m.file_type().is_symlink()) {
                continue;
            }
            findings.push(Finding::new(
                "pairing.store.unreadable",
                Severity::Warn,
                format!("the pairing state of channel {channel} cannot be read"),
                e.to_string(),
                format!(
                    "repair {} (JSON; see README \"Pairing and sessions\") or move it aside; \
                     until then the channel answers every message with an error",
                    e.file.display()
                ),
            ));
        }
    }
}

/// `--fix`: clears the group and other bits of every private path that has them, through
/// descriptors opened without following links (see the module doc).
pub fn fix(paths: &Paths) -> FixOutcome {
    let mut out = FixOutcome::default();
    let state = &paths.state_dir;
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let state_fd = match rustix::fs::openat(CWD, state, dir_flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return out,
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            out.unfixed.push(format!(
                "{}: a symbolic link (or not a directory); --fix acts only inside a real state \
                 directory",
                state.display()
            ));
            return out;
        }
        Err(e) => {
            out.unfixed
                .push(format!("{}: cannot open: {e}", state.display()));
            return out;
        }
    };
    let owner = match rustix::fs::fstat(&state_fd) {
        Ok(st) => st.st_uid,
        Err(e) => {
            out.unfixed
                .push(format!("{}: cannot stat: {e}", state.display()));
            return out;
        }
    };
    tighten(&state_fd, state, owner, true, &mut out);

    match paths.config.file_name() {
        Some(name) if paths.config.parent() == Some(state.as_path()) => {
            fix_entry(&state_fd, state, name, owner, false, &mut out);
        }
        _ => {
            if std::fs::symlink_metadata(&paths.config)
                .is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
            {
                out.unfixed.push(format!(
                    "{}: outside the state directory {}; chmod it yourself",
                    paths.config.display(),
                    state.display()
                ));
            }
        }
    }
    fix_entry(&state_fd, state, OsStr::new(".env"), owner, false, &mut out);
    let credentials = state.join("credentials");
    let Some(creds_fd) = fix_entry(
        &state_fd,
        state,
        OsStr::new("credentials"),
        owner,
        true,
        &mut out,
    ) else {
        return out;
    };
    // The names come from the opened directory itself, not from its path again.
    let entries = match rustix::fs::Dir::read_from(&creds_fd) {
        Ok(dir) => dir,
        Err(e) => {
            out.unfixed
                .push(format!("{}: cannot list: {e}", credentials.display()));
            return out;
        }
    };
    for entry in entries.flatten() {
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if entry.file_type() == FileType::Directory || name == "." || name == ".." {
            continue;
        }
        fix_entry(&creds_fd, &credentials, name, owner, false, &mut out);
    }
    out
}

/// Opens `name` in `dir_fd` without following a link, and tightens it. Returns the
/// descriptor (for descending into a directory).
fn fix_entry(
    dir_fd: &OwnedFd,
    dir: &Path,
    name: &OsStr,
    owner: u32,
    want_dir: bool,
    out: &mut FixOutcome,
) -> Option<OwnedFd> {
    let path = dir.join(name);
    // NONBLOCK: a FIFO planted under a credential's name must not hang the audit.
    let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    if want_dir {
        flags |= OFlags::DIRECTORY;
    }
    match rustix::fs::openat(dir_fd, name, flags, Mode::empty()) {
        Ok(fd) => {
            tighten(&fd, &path, owner, want_dir, out);
            Some(fd)
        }
        Err(rustix::io::Errno::NOENT) => None,
        // O_NOFOLLOW gives ELOOP on a link; with O_DIRECTORY the kernel may say ENOTDIR.
        Err(e @ (rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR)) => {
            let link = rustix::fs::statat(dir_fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
            out.unfixed.push(if link {
                format!(
                    "{}: a symbolic link; neither it nor its target was changed",
                    path.display()
                )
            } else {
                format!("{}: cannot open: {e}", path.display())
            });
            None
        }
        Err(e) => {
            out.unfixed
                .push(format!("{}: cannot open: {e}", path.display()));
            None
        }
    }
}

/// Clears the group and other bits of the opened `fd` when it is what it should be.
fn tighten(fd: &OwnedFd, path: &Path, owner: u32, want_dir: bool, out: &mut FixOutcome) {
    let st = match rustix::fs::fstat(fd) {
        Ok(st) => st,
        Err(e) => {
            out.unfixed
                .push(format!("{}: cannot stat: {e}", path.display()));
            return;
        }
    };
    let current = st.st_mode & 0o7777;
    if current & 0o077 == 0 {
        return;
    }
    let kind = FileType::from_raw_mode(st.st_mode);
    let refuse = if want_dir && kind != FileType::Directory {
        Some("not a directory".to_string())
    } else if !want_dir && kind != FileType::RegularFile {
        Some(format!("not a regular file ({kind:?})"))
    } else if st.st_uid != owner {
        Some(format!(
            "owned by uid {}, not by the state directory's owner (uid {owner})",
            st.st_uid
        ))
    } else if kind == FileType::RegularFile && st.st_nlink > 1 {
        Some(format!(
            "has {} hard links, so it may be a file outside the state directory",
            st.st_nlink
        ))
    } else {
        None
    };
    if let Some(reason) = refuse {
        out.unfixed
            .push(format!("{}: {reason}; left alone", path.display()));
        return;
    }
    let wanted = current & !0o077;
    match rustix::fs::fchmod(fd, Mode::from_raw_mode(wanted)) {
        Ok(()) => out.changed.push(format!(
            "chmod {wanted:o} {} (was {current:o})",
            path.display()
        )),
        Err(e) => out.unfixed.push(format!(
            "could not chmod {wanted:o} {} (is {current:o}): {e}",
            path.display()
        )),
    }
}

/// The private paths under `root` (the state directory, or the target of its link).
fn private_paths(paths: &Paths, root: &Path) -> Vec<(PathBuf, Role)> {
    let config = if paths.config.parent() == Some(paths.state_dir.as_path()) {
        root.join(paths.config.file_name().unwrap_or_default())
    } else {
        paths.config.clone()
    };
    let credentials = root.join("credentials");
    let mut list = vec![
        (root.to_path_buf(), Role::StateDir),
        (config, Role::Config),
        (root.join(".env"), Role::Env),
        (credentials.clone(), Role::CredentialsDir),
    ];
    let real_dir = std::fs::symlink_metadata(&credentials).is_ok_and(|m| m.is_dir());
    if real_dir {
        if let Ok(entries) = std::fs::read_dir(&credentials) {
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
                .map(|e| e.path())
                .collect();
            files.sort();
            list.extend(files.into_iter().map(|f| (f, Role::Credential)));
        }
    }
    list
}

/// True when `path` lies lexically inside `dir`.
fn inside(path: &Path, dir: &Path) -> bool {
    path.parent() == Some(dir)
}

fn link_finding(role: Role, path: &Path, target: Option<&Path>, root: &Path) -> Finding {
    let raw = std::fs::read_link(path)
        .map(|t| t.display().to_string())
        .unwrap_or_default();
    let resolved = match target {
        Some(t) if role != Role::StateDir && !t.starts_with(root) => {
            format!("{}, outside the state directory", t.display())
        }
        Some(t) => t.display().to_string(),
        None => "nothing (a dangling link)".to_string(),
    };
    let detail = format!(
        "{} is a symbolic link to {raw:?}, which resolves to {resolved}",
        path.display()
    );
    match role {
        Role::StateDir => Finding::new(
            "fs.state_dir.symlink",
            Severity::Warn,
            "the state directory is a symbolic link",
            format!("{detail}; the target is audited, but --fix changes nothing through a link"),
            format!(
                "replace the link with the directory itself, or audit the target with \
                 --config {}",
                target
                    .map(|t| t.join("openclaw.json").display().to_string())
                    .unwrap_or_else(|| "<target>/openclaw.json".into())
            ),
        ),
        Role::CredentialsDir | Role::Credential => Finding::new(
            "fs.credentials.symlink",
            Severity::Critical,
            "pairing state is read through a symbolic link",
            if role == Role::CredentialsDir {
                format!("{detail}; the files behind it were not checked")
            } else {
                detail
            },
            format!(
                "replace {} with a real {} inside the state directory (mode {:o})",
                path.display(),
                if role == Role::CredentialsDir {
                    "directory"
                } else {
                    "file"
                },
                role.wanted()
            ),
        ),
        Role::Config | Role::Env => Finding::new(
            if role == Role::Config {
                "fs.config.symlink"
            } else {
                "fs.env.symlink"
            },
            Severity::Warn,
            format!(
                "{} is a symbolic link",
                if role == Role::Config {
                    "the config file"
                } else {
                    "the .env file (secrets)"
                }
            ),
            format!("{detail}; its permissions are not those of the installation"),
            format!(
                "move the file into the state directory, or check the target's owner and mode \
                 ({:o}) yourself",
                role.wanted()
            ),
        ),
    }
}

fn perms_finding(role: Role, path: &Path, current: u32, config: &Config, fixable: bool) -> Finding {
    let (id, severity, what) = match role {
        Role::StateDir => (
            "fs.state_dir.perms",
            Severity::Critical,
            "the state directory",
        ),
        Role::Env => (
            "fs.env.perms",
            Severity::Critical,
            "the .env file (secrets)",
        ),
        Role::Config => {
            let severity = if config.literal_secrets.is_empty() {
                Severity::Warn
            } else {
                Severity::Critical
            };
            ("fs.config.perms", severity, "the config file")
        }
        Role::CredentialsDir | Role::Credential => {
            ("fs.credentials.perms", Severity::Warn, "pairing state")
        }
    };
    let wanted = current & !0o077;
    let name = path.display();
    Finding::new(
        id,
        severity,
        format!("{what} is accessible to other users"),
        format!("{name} has mode {current:o}; want {:o}", role.wanted()),
        if fixable {
            format!("chmod {wanted:o} {name} (or run with --fix)")
        } else {
            format!("chmod {wanted:o} {name} (--fix does not act on it: it is reached through a link or lies outside the state directory)")
        },
    )
}
