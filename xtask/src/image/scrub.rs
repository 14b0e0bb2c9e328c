//! Stage `scrub`: nothing secret and nothing machine-specific leaves the builder. Every machine
//! booted from the image makes its own SSH host keys, machine-id, random seed and gateway
//! token at first boot; logs, apt lists, shell history and temporary files of the build stay
//! behind.
//!
//! The stage works in place on the customised tree (it is idempotent, and a copy of a whole
//! root file system per stage would buy nothing) and then *verifies* with [`find_leaks`], the
//! same check the tests run against a real built tree.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use walkdir::WalkDir;

use super::stage::Runner;
use super::Profile;

/// What may legitimately stay: the administrator's authorized_keys when `--authorized-key`
/// was given at build time.
pub struct Policy<'a> {
    pub keep_authorized_keys_of: Option<&'a str>,
}

/// Files removed outright when present (image-relative).
const FILES: &[&str] = &[
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
    "var/lib/urandom/random-seed",
    "etc/ssl/private/ssl-cert-snakeoil.key",
    "etc/ssl/certs/ssl-cert-snakeoil.pem",
    "var/cache/ldconfig/aux-cache",
];

/// Directories whose contents go (the directory itself stays, with its mode).
const EMPTIED_DIRS: &[&str] = &[
    "tmp",
    "var/tmp",
    "var/lib/cloud",
    "root/.cache",
    "var/backups",
];

/// File names removed wherever they are under `/root` and `/home`.
const HISTORY_FILES: &[&str] = &[
    ".bash_history",
    ".python_history",
    ".lesshst",
    ".viminfo",
    ".wget-hsts",
    ".sudo_as_admin_successful",
    ".mysql_history",
];

pub fn scrub(root: &Path, policy: &Policy<'_>) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let mut remove = |path: &Path| -> Result<()> {
        if path.symlink_metadata().is_ok() {
            if path.symlink_metadata()?.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            }
            .with_context(|| format!("scrub: cannot remove {}", path.display()))?;
            removed.push(format!(
                "/{}",
                path.strip_prefix(root).unwrap_or(path).display()
            ));
        }
        Ok(())
    };

    for entry in read_dir_sorted(&root.join("etc/ssh"))? {
        if entry
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("ssh_host_"))
        {
            remove(&entry)?;
        }
    }
    for file in FILES {
        remove(&root.join(file))?;
    }
    for dir in EMPTIED_DIRS {
        for entry in read_dir_sorted(&root.join(dir))? {
            remove(&entry)?;
        }
    }
    // apt: lists and package caches (the `lock` file and `partial/` directory stay).
    for entry in read_dir_sorted(&root.join("var/lib/apt/lists"))? {
        if !matches!(
            entry.file_name().and_then(|n| n.to_str()),
            Some("lock" | "partial")
        ) {
            remove(&entry)?;
        }
    }
    for dir in [
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
    ] {
        for entry in read_dir_sorted(&root.join(dir))? {
            remove(&entry)?;
        }
    }
    for entry in read_dir_sorted(&root.join("var/cache/apt"))? {
        if entry.extension().is_some_and(|ext| ext == "bin") {
            remove(&entry)?;
        }
    }
    for entry in read_dir_sorted(&root.join("var/cache/apt/archives"))? {
        if entry.extension().is_some_and(|ext| ext == "deb") {
            remove(&entry)?;
        }
    }
    // Every log file; directories stay so services that log into them keep working.
    for entry in files_under(&root.join("var/log"))? {
        remove(&entry)?;
    }
    for entry in files_under(&root.join("var/cache/debconf"))?
        .into_iter()
        .chain(files_under(&root.join("var/lib/dpkg"))?)
    {
        if entry.to_string_lossy().ends_with("-old") {
            remove(&entry)?;
        }
    }
    for entry in home_dirs(root)? {
        for name in HISTORY_FILES {
            remove(&entry.join(name))?;
        }
        remove(&entry.join(".openclaw/.env"))?;
        let keep = policy
            .keep_authorized_keys_of
            .is_some_and(|user| entry == root.join("home").join(user));
        for file in read_dir_sorted(&entry.join(".ssh"))? {
            let is_keys = file
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("authorized_keys"));
            if is_keys && !(keep && file.file_name() == Some("authorized_keys".as_ref())) {
                remove(&file)?;
            }
        }
    }

    // An empty machine-id (not a missing one) tells systemd this is the first boot: it makes
    // a new id and runs the first-boot units (ConditionFirstBoot).
    let machine_id = root.join("etc/machine-id");
    if std::fs::read(&machine_id).map_or(true, |content| !content.is_empty()) {
        std::fs::write(&machine_id, "")?;
        removed.push("/etc/machine-id (emptied)".to_owned());
    }
    std::fs::set_permissions(&machine_id, PermissionsExt::from_mode(0o444))?;
    Ok(removed)
}

/// What a leak is; `cargo xtask check-image` reports each kind as one of its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakKind {
    /// SSH host keys, private keys, authorized keys, the gateway token.
    Key,
    /// The machine-id, random seeds and credentials every machine must make for itself.
    MachineState,
    /// Temporary files, apt lists and caches of the build.
    BuildLeftover,
    Log,
    ShellHistory,
}

/// One thing in the root file system that must not ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub kind: LeakKind,
    /// Where, as the image sees it (`/etc/machine-id`).
    pub path: PathBuf,
    pub what: &'static str,
}

impl std::fmt::Display for Leak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)
    }
}

/// Everything in `root` that should not ship; empty when clean.
pub fn find_leaks(root: &Path, policy: &Policy<'_>) -> Result<Vec<Leak>> {
    let mut leaks = Vec::new();
    let mut leak = |kind, path: &Path, what| {
        let path = Path::new("/").join(path.strip_prefix(root).unwrap_or(path));
        leaks.push(Leak { kind, path, what });
    };
    let exists = |relative: &str| root.join(relative).symlink_metadata().is_ok();

    for entry in read_dir_sorted(&root.join("etc/ssh"))? {
        if entry.to_string_lossy().contains("ssh_host_") {
            leak(LeakKind::Key, &entry, "SSH host key");
        }
    }
    let machine_id = root.join("etc/machine-id");
    match std::fs::read(&machine_id) {
        Ok(content) if content.is_empty() => {}
        Ok(_) => leak(LeakKind::MachineState, &machine_id, "not empty"),
        Err(_) => leak(
            LeakKind::MachineState,
            &machine_id,
            "missing (must exist and be empty)",
        ),
    }
    for file in FILES {
        if exists(file) {
            leak(LeakKind::MachineState, &root.join(file), "exists");
        }
    }
    for dir in EMPTIED_DIRS {
        if !read_dir_sorted(&root.join(dir))?.is_empty() {
            leak(LeakKind::BuildLeftover, &root.join(dir), "not empty");
        }
    }
    for entry in read_dir_sorted(&root.join("var/lib/apt/lists"))? {
        let name = entry
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name != "lock" && name != "partial" {
            leak(LeakKind::BuildLeftover, &entry, "apt list");
        }
    }
    for entry in files_under(&root.join("var/cache/apt"))? {
        let name = entry.to_string_lossy();
        if name.ends_with(".deb") || name.ends_with(".bin") {
            leak(LeakKind::BuildLeftover, &entry, "apt cache");
        }
    }
    for entry in files_under(&root.join("var/log"))? {
        leak(LeakKind::Log, &entry, "log file");
    }
    for home in home_dirs(root)? {
        for name in HISTORY_FILES {
            if home.join(name).symlink_metadata().is_ok() {
                leak(LeakKind::ShellHistory, &home.join(name), "history");
            }
        }
        if home.join(".openclaw/.env").exists() {
            leak(
                LeakKind::Key,
                &home.join(".openclaw/.env"),
                "gateway token file",
            );
        }
        for file in read_dir_sorted(&home.join(".ssh"))? {
            if file.to_string_lossy().contains("authorized_keys") {
                let allowed = policy.keep_authorized_keys_of.is_some_and(|user| {
                    file == root.join("home").join(user).join(".ssh/authorized_keys")
                });
                if !allowed {
                    leak(LeakKind::Key, &file, "authorized keys");
                }
            }
        }
    }
    // Any private key anywhere a key could hide.
    for dir in ["etc", "root", "home", "var/lib", "usr/local"] {
        for file in files_under(&root.join(dir))? {
            if is_private_key(&file) {
                leak(LeakKind::Key, &file, "private key");
            }
        }
    }
    Ok(leaks)
}

/// Scrubs, then refuses to continue when anything is still there.
/// The stage: runs on every build (it is cheap, and a reused tree is checked again).
pub fn stage(runner: &mut Runner, profile: &Profile, rootfs: &Path) -> Result<()> {
    runner.always("scrub", |s| {
        let policy = Policy {
            keep_authorized_keys_of: (!profile.authorized_keys.is_empty())
                .then_some(profile.definition.image.users.admin.name.as_str()),
        };
        let removed = run(rootfs, &policy)?;
        s.step(format!(
            "{} items removed, nothing secret left",
            removed.len()
        ));
        let note = if removed.is_empty() {
            "verified clean"
        } else {
            "scrubbed and verified clean"
        };
        Ok(((), note))
    })
}

pub fn run(root: &Path, policy: &Policy<'_>) -> Result<Vec<String>> {
    let removed = scrub(root, policy)?;
    let leaks = find_leaks(root, policy)?;
    if !leaks.is_empty() {
        let leaks: Vec<String> = leaks.iter().map(ToString::to_string).collect();
        bail!(
            "the root file system still holds what must not ship:\n  {}",
            leaks.join("\n  ")
        );
    }
    Ok(removed)
}

fn is_private_key(path: &Path) -> bool {
    let Ok(meta) = path.symlink_metadata() else {
        return false;
    };
    if !meta.is_file() || meta.len() > 64 * 1024 || meta.len() < 64 {
        return false;
    }
    std::fs::read(path).is_ok_and(|bytes| {
        let text = String::from_utf8_lossy(&bytes);
        text.contains("-----BEGIN") && text.contains("PRIVATE KEY-----")
    })
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    if !dir.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        return Ok(Vec::new());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    Ok(entries)
}

/// Regular files and links below `dir`, never following links (a link may point at the build
/// host's own files).
fn files_under(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    if !dir.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in WalkDir::new(dir).follow_links(false).sort_by_file_name() {
        let entry = entry.with_context(|| format!("cannot walk {}", dir.display()))?;
        if !entry.file_type().is_dir() {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

fn home_dirs(root: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut homes = read_dir_sorted(&root.join("home"))?;
    homes.retain(|home| home.is_dir());
    homes.push(root.join("root"));
    Ok(homes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A miniature root file system with one of everything that must not ship.
    fn dirty_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let files = [
            ("etc/ssh/ssh_host_ed25519_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"),
            ("etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 AAAA"),
            ("etc/ssh/sshd_config", "Port 22\n"),
            ("etc/machine-id", "0123456789abcdef0123456789abcdef\n"),
            ("var/lib/dbus/machine-id", "0123456789abcdef0123456789abcdef\n"),
            ("var/lib/systemd/random-seed", "seed"),
            ("var/lib/apt/lists/deb.debian.org_debian_dists_trixie_InRelease", "x"),
            ("var/lib/apt/lists/lock", ""),
            ("var/cache/apt/pkgcache.bin", "x"),
            ("var/cache/apt/archives/bash_5.2_amd64.deb", "x"),
            ("var/log/dpkg.log", "installed"),
            ("var/log/journal/abc/system.journal", "x"),
            ("var/lib/cloud/instance/obj.pkl", "x"),
            ("tmp/build-leftover", "x"),
            ("root/.bash_history", "rm -rf"),
            ("home/admin/.bash_history", "ls"),
            ("home/admin/.ssh/authorized_keys", "ssh-ed25519 AAAA admin"),
            ("home/openclaw/.openclaw/.env", "CLAWFORT_GATEWAY_TOKEN=secret"),
            ("home/openclaw/.openclaw/openclaw.json", "{}"),
            ("home/openclaw/.ssh/authorized_keys", "ssh-ed25519 AAAA sneaky"),
            ("root/.ssh/authorized_keys", "ssh-ed25519 AAAA root"),
        ];
        for (path, content) in files {
            let path = r.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        root
    }

    #[test]
    fn scrub_removes_every_secret_and_keeps_the_configuration() {
        let root = dirty_root();
        let r = root.path();
        let policy = Policy {
            keep_authorized_keys_of: None,
        };
        assert!(find_leaks(r, &policy).unwrap().len() >= 15);
        run(r, &policy).unwrap();
        assert!(find_leaks(r, &policy).unwrap().is_empty());
        assert!(!r.join("etc/ssh/ssh_host_ed25519_key").exists());
        assert_eq!(std::fs::read(r.join("etc/machine-id")).unwrap(), b"");
        assert!(!r.join("var/lib/dbus/machine-id").exists());
        assert!(!r.join("home/openclaw/.openclaw/.env").exists());
        assert!(!r.join("home/admin/.ssh/authorized_keys").exists());
        assert!(
            r.join("var/log/journal/abc").is_dir(),
            "log directories stay"
        );
        assert!(r.join("var/lib/apt/lists/lock").exists());
        assert!(r.join("etc/ssh/sshd_config").exists());
        assert!(r.join("home/openclaw/.openclaw/openclaw.json").exists());
        // Idempotent: a second run finds nothing more to do.
        assert_eq!(scrub(r, &policy).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn the_admins_build_time_key_stays_when_asked_and_no_one_elses() {
        let root = dirty_root();
        let r = root.path();
        let policy = Policy {
            keep_authorized_keys_of: Some("admin"),
        };
        run(r, &policy).unwrap();
        assert!(r.join("home/admin/.ssh/authorized_keys").exists());
        assert!(!r.join("home/openclaw/.ssh/authorized_keys").exists());
        assert!(!r.join("root/.ssh/authorized_keys").exists());
    }

    /// Inspects a real built root file system (`cargo xtask image` leaves it in the work
    /// directory). CI runs it after the image build:
    /// `CLAWFORT_ROOTFS=target/image/x86_64/customise/rootfs cargo test -p xtask -- --ignored`.
    #[test]
    #[ignore = "needs a root file system built by `cargo xtask image`"]
    fn a_built_root_file_system_holds_nothing_secret() {
        let root = std::env::var_os("CLAWFORT_ROOTFS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/image/x86_64/customise/rootfs")
            });
        assert!(
            root.join("etc/os-release").exists(),
            "no root file system at {}",
            root.display()
        );
        // The build may have baked in an admin key (--authorized-key); nothing else.
        let policy = Policy {
            keep_authorized_keys_of: Some("admin"),
        };
        let leaks: Vec<String> = find_leaks(&root, &policy)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            leaks.is_empty(),
            "leaks in {}:\n{}",
            root.display(),
            leaks.join("\n")
        );
        // The checks named in the issue, spelt out independently of find_leaks.
        let ssh: Vec<_> = std::fs::read_dir(root.join("etc/ssh"))
            .unwrap()
            .flatten()
            .collect();
        assert!(ssh
            .iter()
            .all(|e| !e.file_name().to_string_lossy().starts_with("ssh_host_")));
        assert_eq!(std::fs::read(root.join("etc/machine-id")).unwrap(), b"");
        assert!(!root.join("var/lib/dbus/machine-id").exists());
        assert!(!root.join("home/openclaw/.openclaw/.env").exists());
        assert!(!root.join("var/lib/systemd/random-seed").exists());
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        let lists: Vec<_> = std::fs::read_dir(root.join("var/lib/apt/lists"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != "lock" && name != "partial")
            .collect();
        assert!(lists.is_empty(), "{lists:?}");
        assert!(!root.join("root/.bash_history").exists());
        assert!(!root.join("var/lib/cloud/instance").exists());
        for entry in WalkDir::new(root.join("var/log")) {
            let entry = entry.unwrap();
            assert!(
                entry.file_type().is_dir(),
                "log file {}",
                entry.path().display()
            );
        }
    }
}
