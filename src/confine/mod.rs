//! Host confinement for commands the agent runs (`exec` without the Docker sandbox).
//!
//! A command runs as `/bin/sh -c <command>`, as the gateway's own (service) user, with:
//! - its own session and process group, killed as a whole (SIGKILL) when the command ends,
//!   times out, is cancelled (`/stop`) or its future is dropped, so nothing it started in
//!   the background outlives it (a process that calls `setsid` itself leaves the group; it
//!   stays confined and its CPU time is capped, and systemd's stop of the unit ends it);
//! - an environment built from nothing ([`environment`]): no variable of the gateway, so no
//!   API key, bot token or gateway token, reaches it;
//! - stdin `/dev/null`, stdout and stderr on one pipe, read up to [`OUTPUT_CAP`];
//! - rlimits ([`Limits`]) and `PR_SET_NO_NEW_PRIVS`;
//! - a Landlock ruleset ([`landlock`]): read-write beneath the workspace, the allowed paths
//!   and a private temporary directory; read and execute beneath the system directories;
//!   `/dev/null` and the random devices; nothing else, so the state directory
//!   (`~/.openclaw`: config, `.env`, credentials, transcripts) and `/proc` (the gateway's
//!   environment and memory) are out of reach. TCP `connect` and `bind` are denied except
//!   `connect` to [`Policy::connect_ports`] where the kernel has Landlock's TCP rules (ABI
//!   4), and abstract unix sockets and signals are scoped to the sandbox where it has ABI 6.
//!   Without Landlock (or older than ABI 3) nothing runs: [`run`] refuses and says why.
//! - a seccomp filter ([`sockets`]): `socket(2)` only for TCP, so neither UDP nor a unix
//!   socket (the egress proxy's, the journal's, Docker's) is reachable.
//!
//! The ruleset is built in the gateway before the fork; between fork and exec the child only
//! makes system calls (`setsid`, `setrlimit`, `prctl`, `landlock_restrict_self`, `seccomp`),
//! which are async-signal-safe, so no trampoline process is needed and a run costs one fork and exec.

mod child;
pub mod landlock;
pub mod runner;
mod sockets;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use child::{run, Ending, Outcome};
pub use landlock::{support, Grant, Rule, Support};

/// The most output kept per command (stdout and stderr together); the rest is counted and
/// dropped.
pub const OUTPUT_CAP: usize = 64 * 1024;

/// Directories every command may read and execute from, when they exist and no
/// `security.deniedPaths` entry covers them. `/etc` is among them unless denied (it is, by
/// clawfort's default): its secrets (`shadow`, SSH host keys) are root's and closed to the
/// service user anyway, while many programs want `passwd`, `ld.so.cache` or the TLS roots.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];

/// Device files a command may use.
const DEVICES: &[(&str, Grant)] = &[
    ("/dev/null", Grant::Device),
    ("/dev/zero", Grant::ReadDevice),
    ("/dev/random", Grant::ReadDevice),
    ("/dev/urandom", Grant::ReadDevice),
];

/// The `PATH` of a command.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Resource limits of every process of a command (`setrlimit`, soft and hard, inherited by
/// its children; never above the gateway's own hard limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU seconds per process (`RLIMIT_CPU`, soft and hard: SIGKILL at the limit).
    pub cpu_secs: u64,
    /// Heap and other private writable memory per process (`RLIMIT_DATA`). Chosen over
    /// `RLIMIT_AS`, which also counts reserved but unused address space and so breaks
    /// runtimes that reserve large arenas (Go, the JVM, V8).
    pub data_bytes: u64,
    /// Processes and threads the command may add to the service user's current count
    /// (`RLIMIT_NPROC` counts every task of the user, the gateway's threads included, so
    /// the limit is set to the count at start plus this).
    pub extra_processes: u64,
    /// Largest file a process may write (`RLIMIT_FSIZE`; SIGXFSZ beyond it).
    pub file_bytes: u64,
    /// Open file descriptors per process (`RLIMIT_NOFILE`).
    pub open_files: u64,
}

impl Default for Limits {
    /// 600 CPU seconds, 1 GiB of data, 128 more tasks, 1 GiB files, 1024 descriptors, and
    /// (not configurable) no core dumps. 128 tasks stay well inside the appliance unit's
    /// `TasksMax=256`, which the gateway's own threads share with its commands.
    fn default() -> Self {
        Self {
            cpu_secs: 600,
            data_bytes: 1 << 30,
            extra_processes: 128,
            file_bytes: 1 << 30,
            open_files: 1024,
        }
    }
}

/// Where a command may go, checked once when the tool is built.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// The workspace, canonical where it exists: read-write, `HOME` of the command, and where `workdir`
    /// must lie.
    workspace: PathBuf,
    /// `security.allowedPaths`, canonical where they exist: read-write.
    allowed: Vec<PathBuf>,
    /// The [`SYSTEM_DIRS`] no denied path covers: read and execute.
    system: Vec<PathBuf>,
    /// TCP ports a command may connect to (any address); none by default.
    pub connect_ports: Vec<u16>,
    pub limits: Limits,
}

impl Policy {
    /// The policy for `workspace`, `allowed` read-write paths and `denied` paths. Denied
    /// paths win: a system directory a denied path covers is left out; a denied path inside
    /// a granted one, or a granted one inside a denied one, is an error naming both
    /// (Landlock grants whole trees and cannot cut a hole in one). Nothing is created here
    /// (setup validates configs with this); [`Policy::ensure_workspace`] does, before a run.
    pub fn new(workspace: &Path, allowed: &[PathBuf], denied: &[PathBuf]) -> Result<Self, String> {
        if !workspace.is_absolute() {
            return Err(format!(
                "the workspace {} is not an absolute path",
                workspace.display()
            ));
        }
        let workspace = canonical(workspace);
        let allowed: Vec<PathBuf> = allowed.iter().map(|p| canonical(p)).collect();
        let denied: Vec<PathBuf> = denied.iter().map(|p| canonical(p)).collect();
        let granted = std::iter::once((&workspace, "the workspace"))
            .chain(allowed.iter().map(|p| (p, "security.allowedPaths")));
        for (path, source) in granted {
            if path == Path::new("/") {
                return Err(format!(
                    "{source} grants `/`, the whole file system; name narrower directories"
                ));
            }
            for d in &denied {
                if path.starts_with(d) || d.starts_with(path) {
                    return Err(format!(
                        "security.deniedPaths entry {} overlaps {} ({source}); Landlock grants \
                         whole directory trees, so keep denied paths outside granted ones",
                        d.display(),
                        path.display()
                    ));
                }
            }
        }
        let mut system = Vec::new();
        for dir in SYSTEM_DIRS.iter().map(PathBuf::from) {
            if denied.iter().any(|d| dir.starts_with(d)) {
                continue;
            }
            if let Some(d) = denied.iter().find(|d| d.starts_with(&dir)) {
                return Err(format!(
                    "security.deniedPaths entry {} lies inside {}, which commands may read; \
                     Landlock cannot deny part of it: deny all of {} or move the entry",
                    d.display(),
                    dir.display(),
                    dir.display()
                ));
            }
            system.push(dir);
        }
        Ok(Self {
            workspace,
            allowed,
            system,
            connect_ports: Vec::new(),
            limits: Limits::default(),
        })
    }

    /// What [`Policy::new`] guarantees, checked again on a policy that arrived from
    /// elsewhere (the command runner's request): an absolute workspace, no grant of `/`, and
    /// read-execute only on [`SYSTEM_DIRS`]. (Which denied paths it was built with is not
    /// in it: that part stays the sender's word.)
    pub fn check(&self) -> Result<(), String> {
        Self::new(&self.workspace, &self.allowed, &[])?;
        match self.system.iter().find(|dir| {
            !SYSTEM_DIRS
                .iter()
                .any(|known| dir.as_path() == Path::new(known))
        }) {
            Some(dir) => Err(format!(
                "{} is not one of the system directories commands may read",
                dir.display()
            )),
            None => Ok(()),
        }
    }

    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// Creates the workspace (mode 700) when it does not exist yet.
    pub fn ensure_workspace(&self) -> Result<(), String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.workspace)
            .map_err(|e| {
                format!(
                    "cannot create the workspace {}: {e}",
                    self.workspace.display()
                )
            })
    }

    /// The Landlock rules of a run whose private temporary directory is `tmp`.
    fn rules(&self, tmp: &Path) -> Vec<Rule> {
        let rw = |path: &Path| Rule {
            path: path.to_owned(),
            grant: Grant::ReadWrite,
        };
        let mut rules: Vec<Rule> = std::iter::once(self.workspace.as_path())
            .chain(self.allowed.iter().map(PathBuf::as_path))
            .chain(std::iter::once(tmp))
            .map(rw)
            .collect();
        rules.extend(self.system.iter().map(|path| Rule {
            path: path.clone(),
            grant: Grant::ReadExecute,
        }));
        rules.extend(DEVICES.iter().map(|(path, grant)| Rule {
            path: PathBuf::from(path),
            grant: *grant,
        }));
        rules
    }

    /// `workdir` (relative to the workspace, or absolute) resolved, symlinks included; it
    /// must be a directory inside the workspace. Landlock is what confines the command; this
    /// check makes a mistake a clear error instead of a command that cannot read its cwd.
    pub fn workdir(&self, workdir: Option<&str>) -> Result<PathBuf, String> {
        let Some(workdir) = workdir.filter(|w| !w.is_empty()) else {
            return Ok(self.workspace.clone());
        };
        let workspace = self
            .workspace
            .canonicalize()
            .map_err(|e| format!("the workspace {}: {e}", self.workspace.display()))?;
        let resolved = workspace
            .join(workdir)
            .canonicalize()
            .map_err(|e| format!("workdir `{workdir}`: {e}"))?;
        if !resolved.starts_with(&workspace) {
            return Err(format!(
                "workdir `{workdir}` is outside the workspace {}; commands run inside it",
                self.workspace.display()
            ));
        }
        if !resolved.is_dir() {
            return Err(format!("workdir `{workdir}` is not a directory"));
        }
        Ok(resolved)
    }
}

/// Where host commands run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Forked by the gateway itself ([`run`]).
    Here,
    /// By the runner listening on this socket, in a unit of their own ([`runner`]).
    Runner(PathBuf),
}

impl Host {
    /// [`Host::Runner`] when [`runner::ENV`] names a socket (the appliance), else
    /// [`Host::Here`].
    pub fn from_env() -> Self {
        runner::socket_from_env().map_or(Host::Here, Host::Runner)
    }

    /// Runs `command` confined by `policy` (see [`run`]).
    pub async fn run(
        &self,
        policy: &Policy,
        command: &str,
        workdir: &Path,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Outcome, String> {
        match self {
            Host::Here => run(policy, command, workdir, deadline, cancel).await,
            Host::Runner(socket) => {
                runner::run_via(socket, policy, command, workdir, deadline, cancel).await
            }
        }
    }
}

/// Whether host execution can run here, and with what; `Err` says why not, for the
/// refusal, the log and the audit. Beyond Landlock ([`support`]) it refuses a gateway
/// running as root: its commands would be root's too, with every capability (raw sockets
/// past the TCP rules, kernel modules, ...), which no ruleset makes safe.
pub fn available() -> Result<Support, String> {
    if rustix::process::geteuid().is_root() {
        return Err(
            "the gateway runs as root, so its commands would too, with every \
             capability; run it as an unprivileged service user (the appliance's `openclaw`)"
                .into(),
        );
    }
    support()
}

/// The whole environment of a command: nothing inherited from the gateway.
pub fn environment(home: &Path, tmp: &Path) -> Vec<(&'static str, std::ffi::OsString)> {
    vec![
        ("PATH", PATH.into()),
        ("HOME", home.into()),
        ("TMPDIR", tmp.into()),
        ("LANG", "C.UTF-8".into()),
        ("TERM", "dumb".into()),
    ]
}

/// `path` resolved when it exists, else as written (a denied path need not exist).
fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_owned())
}
