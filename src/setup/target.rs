//! Which installation a command acts on, and who owns its files.
//!
//! Run as an ordinary user: that user's installation (`--config`, `OPENCLAW_CONFIG_PATH`,
//! `OPENCLAW_STATE_DIR`, else `~/.openclaw`). Run as root (`sudo clawfort setup` on the
//! appliance) without those: the installation `clawfort.service` runs, found as the audit
//! finds it (`audit::installation`), with its files handed to the service user; when no
//! service is found, root's own, and the output says so.

use std::path::PathBuf;

use super::write::Owner;
use crate::audit::installation::{self, Sources};
use crate::paths::{Paths, STATE_DIR_ENV};

/// Who gets the files setup writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerRule {
    /// Not root: files are created as the invoking user, nothing is chowned.
    Invoker,
    /// Root writing for the service: its user and group.
    Service(Owner),
    /// Root with an installation named on the command line: the state directory's owner.
    StateDirOwner,
}

/// The installation a command acts on.
#[derive(Debug, Clone)]
pub struct Target {
    pub paths: Paths,
    pub owner: OwnerRule,
    /// The user `clawfort.service` runs as, when this is its installation (then a restart
    /// applies the new settings).
    pub service_user: Option<String>,
    /// True when the installation was named by `--config` or the environment.
    pub named: bool,
    pub root: bool,
    /// Why the service's installation was not used, when it was looked for.
    pub note: Option<String>,
}

impl Target {
    /// Resolves the installation; `config_given` is true when `--config` (or
    /// `OPENCLAW_CONFIG_PATH`) was set.
    pub fn resolve(config_given: bool, paths: Paths) -> Self {
        let state_given = std::env::var_os(STATE_DIR_ENV).is_some_and(|v| !v.is_empty());
        let named = config_given || state_given;
        let root = rustix::process::geteuid().is_root();
        let mut target = Self {
            paths,
            owner: OwnerRule::Invoker,
            service_user: None,
            named,
            root,
            note: None,
        };
        if !root {
            return target;
        }
        target.owner = OwnerRule::StateDirOwner;
        let found = installation::discover(&Sources::system());
        match (found, named) {
            (Ok(found), false) => {
                // Single-threaded here: nothing else reads the environment concurrently.
                // `~` in the config means the service user's home, as in the gateway.
                std::env::set_var("HOME", &found.home);
                target.paths = found.paths;
                target.owner = OwnerRule::Service(Owner {
                    uid: found.uid,
                    gid: found.gid,
                });
                target.service_user = Some(found.user);
            }
            (Ok(found), true) if same_file(&found.paths.config, &target.paths.config) => {
                target.owner = OwnerRule::Service(Owner {
                    uid: found.uid,
                    gid: found.gid,
                });
                target.service_user = Some(found.user);
            }
            (Ok(_), true) => {}
            (Err(reason), false) => {
                target.note = Some(format!(
                    "the gateway service's installation was not found ({reason}); using \
                     root's own, {} (pass --config to choose another)",
                    target.paths.state_dir.display()
                ));
            }
            (Err(_), true) => {}
        }
        target
    }

    /// How to run a `clawfort` command on this installation from the same shell, e.g.
    /// `sudo -H -u openclaw clawfort` or `clawfort --config /srv/x/openclaw.json`.
    pub fn command(&self) -> String {
        let mut command = match &self.service_user {
            Some(user) if user != "root" => format!("sudo -H -u {user} clawfort"),
            _ => "clawfort".to_owned(),
        };
        if self.named {
            command.push_str(&format!(" --config {}", self.paths.config.display()));
        }
        command
    }
}

/// Whether two config paths name the same file (compared as given, then canonicalised).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    let canonical = |p: &std::path::Path| -> PathBuf {
        std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
    };
    a == b || canonical(a) == canonical(b)
}
