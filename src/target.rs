//! Which installation a command acts on: the one rule shared by `security audit`, `setup`,
//! `egress sync`, `stop-all`, `status`, `usage` and `backup`.
//!
//! - An installation named by `--config`, `OPENCLAW_CONFIG_PATH` or `OPENCLAW_STATE_DIR` is
//!   used as named, whoever runs the command.
//! - An ordinary user gets their own (`~/.openclaw`).
//! - Root with nothing named gets the installation `clawfort.service` runs, found from the
//!   installed unit and the passwd file (`audit::installation::discover`), with `HOME` set to
//!   the service user's home so `~` in its config means what it means to the gateway. When
//!   no service is found, root's own, with a note saying why.
//!
//! As root the service is looked for even when an installation is named: when the named
//! config is the service's own, files written there still belong to the service user.

use std::path::{Path, PathBuf};

use crate::audit::installation::{self, Discovered, Installation, Sources};
use crate::paths::{Paths, STATE_DIR_ENV};

/// How the installation was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The one `clawfort.service` runs; `unit` says where its settings were read.
    Service { unit: String },
    /// `--config` or `OPENCLAW_CONFIG_PATH`.
    Config,
    /// `OPENCLAW_STATE_DIR`.
    StateDir,
    /// The invoking user's own.
    Invoker,
}

/// What the command line and the environment named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    Nothing,
    /// `--config` or `OPENCLAW_CONFIG_PATH` (perhaps with `OPENCLAW_STATE_DIR` too).
    Config,
    /// `OPENCLAW_STATE_DIR` alone.
    StateDir,
}

/// The user `clawfort.service` runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// The installation a command acts on.
#[derive(Debug, Clone)]
pub struct Target {
    pub paths: Paths,
    pub source: Source,
    /// The service's user when this is the installation `clawfort.service` runs (found, or
    /// named and the same config file): files written here are handed to that user, and a
    /// restart applies new settings.
    pub service: Option<ServiceUser>,
    /// Whether the command runs as root.
    pub root: bool,
    /// Why the service's installation was not used although it was looked for.
    pub note: Option<String>,
}

impl Target {
    /// Resolves the installation for this process: its command line (`cli_config`), its
    /// environment and its user. As root on the service's installation, sets `HOME` to the
    /// service user's home (call it before any other thread runs).
    pub fn resolve(cli_config: Option<&Path>) -> anyhow::Result<Self> {
        let paths = Paths::resolve(cli_config)?;
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        let named = if cli_config.is_some() || set(crate::paths::CONFIG_ENV) {
            Named::Config
        } else if set(STATE_DIR_ENV) {
            Named::StateDir
        } else {
            Named::Nothing
        };
        let root = rustix::process::geteuid().is_root();
        let target = Self::decide(paths, named, root, || {
            installation::discover(&Sources::system())
        });
        if let (Source::Service { .. }, Some(user)) = (&target.source, &target.service) {
            // Single-threaded here: nothing else reads the environment concurrently.
            std::env::set_var("HOME", &user.home);
        }
        Ok(target)
    }

    /// The rule itself, with the discovery of the service passed in (tests give their own).
    pub fn decide(
        paths: Paths,
        named: Named,
        root: bool,
        discover: impl FnOnce() -> Result<Discovered, String>,
    ) -> Self {
        let source = match named {
            Named::Nothing => Source::Invoker,
            Named::Config => Source::Config,
            Named::StateDir => Source::StateDir,
        };
        let mut target = Self {
            paths,
            source,
            service: None,
            root,
            note: None,
        };
        if !root {
            return target;
        }
        match discover() {
            Ok(found) if named == Named::Nothing => {
                target.paths = found.paths.clone();
                target.source = Source::Service {
                    unit: found.from.clone(),
                };
                target.service = Some(service_user(found));
            }
            Ok(found) if same_file(&found.paths.config, &target.paths.config) => {
                target.service = Some(service_user(found));
            }
            Ok(_) => {}
            Err(reason) if named == Named::Nothing => {
                target.note = Some(format!(
                    "the gateway service's installation was not found ({reason}); using the \
                     invoking user's own, {} (pass --config to choose another)",
                    target.paths.state_dir.display()
                ));
            }
            Err(_) => {}
        }
        target
    }

    /// Whether the installation was named on the command line or in the environment.
    pub fn named(&self) -> bool {
        matches!(self.source, Source::Config | Source::StateDir)
    }

    /// How to run a `clawfort` command on this installation from the same shell, e.g.
    /// `sudo -H -u openclaw clawfort` or `clawfort --config /srv/x/openclaw.json`.
    pub fn command(&self) -> String {
        let mut command = match &self.service {
            Some(user) if user.name != "root" => format!("sudo -H -u {} clawfort", user.name),
            _ => "clawfort".to_owned(),
        };
        if self.named() {
            command.push_str(&format!(" --config {}", self.paths.config.display()));
        }
        command
    }

    /// Prints the note, if any, on stderr.
    pub fn print_note(&self) {
        if let Some(note) = &self.note {
            eprintln!("note: {note}");
        }
    }

    /// The installation as the audit report names it.
    pub fn report(&self) -> Installation {
        let (source, unit) = match &self.source {
            Source::Service { unit } => (installation::UNIT, Some(unit.clone())),
            Source::Config => ("--config or OPENCLAW_CONFIG_PATH", None),
            Source::StateDir => (STATE_DIR_ENV, None),
            Source::Invoker => ("invoking user", None),
        };
        Installation {
            user: self.service.as_ref().map(|u| u.name.clone()),
            state_dir: self.paths.state_dir.clone(),
            config: self.paths.config.clone(),
            source: source.to_owned(),
            unit,
            note: self.note.clone(),
        }
    }
}

fn service_user(found: Discovered) -> ServiceUser {
    ServiceUser {
        name: found.user,
        uid: found.uid,
        gid: found.gid,
        home: found.home,
    }
}

/// Whether two config paths name the same file (compared as given, then canonicalised).
fn same_file(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    a == b || canonical(a) == canonical(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found() -> Result<Discovered, String> {
        let home = PathBuf::from("/home/openclaw");
        Ok(Discovered {
            user: "openclaw".into(),
            uid: 999,
            gid: 998,
            paths: Paths::from_parts(None, None, &home),
            home,
            from: "systemctl show clawfort.service".into(),
        })
    }

    fn mine() -> Paths {
        Paths::in_dir(Path::new("/root/.openclaw"))
    }

    #[test]
    fn an_ordinary_user_never_looks_for_the_service() {
        for named in [Named::Nothing, Named::Config, Named::StateDir] {
            let t = Target::decide(mine(), named, false, || panic!("looked for the service"));
            assert_eq!(t.paths.state_dir, Path::new("/root/.openclaw"));
            assert!(t.service.is_none() && t.note.is_none());
        }
        let t = Target::decide(mine(), Named::Nothing, false, found);
        assert_eq!(
            (&t.source, t.command()),
            (&Source::Invoker, "clawfort".into())
        );
    }

    #[test]
    fn root_gets_the_service_installation_unless_another_is_named() {
        let t = Target::decide(mine(), Named::Nothing, true, found);
        assert_eq!(
            t.paths.config,
            Path::new("/home/openclaw/.openclaw/openclaw.json")
        );
        assert_eq!(t.service.as_ref().unwrap().uid, 999);
        assert_eq!(t.command(), "sudo -H -u openclaw clawfort");
        let report = t.report();
        assert_eq!(
            (report.source.as_str(), report.user.as_deref()),
            ("clawfort.service", Some("openclaw"))
        );

        // Named: used as named; the service's user only when it is the service's file.
        let t = Target::decide(mine(), Named::Config, true, found);
        assert_eq!(t.paths.state_dir, Path::new("/root/.openclaw"));
        assert!(t.service.is_none());
        assert_eq!(
            t.command(),
            "clawfort --config /root/.openclaw/openclaw.json"
        );
        let theirs = Paths::in_dir(Path::new("/home/openclaw/.openclaw"));
        let t = Target::decide(theirs, Named::StateDir, true, found);
        assert_eq!(t.service.unwrap().name, "openclaw");
        assert_eq!(t.source, Source::StateDir);
    }

    #[test]
    fn root_without_a_service_is_told_whose_installation_it_got() {
        let t = Target::decide(mine(), Named::Nothing, true, || Err("no unit".into()));
        assert_eq!(t.source, Source::Invoker);
        let note = t.note.unwrap();
        assert!(note.contains("not found (no unit)"), "{note}");
        assert!(note.contains("/root/.openclaw (pass --config"), "{note}");
        let t = Target::decide(mine(), Named::Config, true, || Err("no unit".into()));
        assert!(t.note.is_none());
    }
}
