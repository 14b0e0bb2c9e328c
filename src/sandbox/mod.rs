//! The Docker sandbox for `exec` (`agents.defaults.sandbox`): commands of the sandboxed
//! sessions run in a locked-down container of the service user's rootless Docker daemon,
//! through its API ([`bollard`]), never through the host.
//!
//! - **Daemon.** The Unix socket of `DOCKER_HOST` (`unix://` only) or
//!   `$XDG_RUNTIME_DIR/docker.sock`. A daemon that is not rootless is refused: the socket of
//!   a rootful daemon is root on the host. An unreachable daemon or a missing image fails
//!   the call with what to do; nothing falls back to host execution, and no image is pulled.
//! - **Containers** ([`container`]): one per scope (`session`, the `agent`, or `shared`),
//!   created at its first command, reused after, labelled with the installation and the
//!   scope. Containers a previous run left are removed at the first sandboxed command; a
//!   container idle for `prune.idleHours` is removed by a background task.
//! - **Commands** ([`run`]): `/bin/sh -c` through the exec API, stdout and stderr read up
//!   to [`crate::confine::OUTPUT_CAP`] like host commands. The exec API cannot signal an
//!   exec's processes, so a command that times out, is cancelled, or whose future is dropped
//!   takes its whole container with it (force removal kills every process in it, background
//!   ones included); the scope's next command gets a fresh container.
//! - **Starved containers.** A command can leave processes running that take the container's
//!   `pidsLimit` (a fork bomb sent to the background, a flood of sleepers), and then nothing
//!   could start in it until the idle prune. So once a container has been idle for
//!   [`SETTLE`] after a command, its processes are counted ([`run::processes`]); one
//!   without room for a command is removed, and the scope's next command, in a new
//!   container, tells the model why. Counting when idle keeps it off a command's latency,
//!   never counts another command's processes, and lets a fork bomb reach its limit first.

mod container;
mod run;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OnceCell};
use tokio::time::Instant;

use crate::config::{SandboxConfig, SandboxMode, SandboxScope, WorkspaceAccess};
use crate::confine::{Ending, Outcome};
use crate::sessions::SessionKey;

pub use container::{AGENT_DIR, WORKDIR};

/// The main session's key (`session.dmScope: "main"`), the one `mode: "non-main"` leaves
/// on the host.
pub const MAIN_SESSION: &str = "agent:main:main";

/// Whether `mode` sends the commands of `session` to the sandbox.
pub fn is_sandboxed(mode: SandboxMode, session: &SessionKey) -> bool {
    match mode {
        SandboxMode::Off => false,
        SandboxMode::NonMain => session.as_str() != MAIN_SESSION,
        SandboxMode::All => true,
    }
}

/// The daemon's socket: `DOCKER_HOST` when set (only `unix://`), else
/// `$XDG_RUNTIME_DIR/docker.sock`, where rootless Docker listens.
pub fn socket_from_env() -> Result<PathBuf, String> {
    if let Some(host) = std::env::var_os("DOCKER_HOST") {
        let host = host.to_string_lossy();
        return match host.strip_prefix("unix://") {
            Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
            _ => Err(format!(
                "DOCKER_HOST={host} is not supported: the sandbox talks only to the rootless \
                 daemon's Unix socket (unix:///run/user/<uid>/docker.sock)"
            )),
        };
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => Ok(Path::new(&dir).join("docker.sock")),
        None => Err(
            "neither DOCKER_HOST nor XDG_RUNTIME_DIR is set, so the rootless Docker \
                     socket is unknown; set DOCKER_HOST=unix:///run/user/<uid>/docker.sock in \
                     the gateway's environment"
                .to_owned(),
        ),
    }
}

/// Refuses a bind `source` that is, or holds, the socket of the daemon the sandbox uses,
/// wherever `DOCKER_HOST` puts it (the config's own checks know only the usual places):
/// from inside a container it is control of the daemon, so of every container and every
/// file the service user can reach.
fn refuse_daemon_socket(source: &Path, socket: &Path) -> Result<(), String> {
    if socket.starts_with(source) {
        return Err(format!(
            "{} would put the sandbox's Docker socket ({}) in the container: control of the \
             daemon; bind a directory that does not hold it",
            source.display(),
            socket.display()
        ));
    }
    Ok(())
}

/// One container serving a scope.
#[derive(Debug)]
struct Entry {
    id: String,
    last_used: Instant,
    /// Commands running in it; a busy container is never pruned.
    busy: usize,
    /// Commands started in it so far: tells the idle check whether another one came.
    uses: u64,
}

/// The sandbox of one installation.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    socket: PathBuf,
    config: SandboxConfig,
    /// The agent workspace (bound per `workspaceAccess`).
    workspace: PathBuf,
    /// `<state dir>/sandboxes`: one private workspace per scope.
    sandboxes: PathBuf,
    /// [`container::OWNER_LABEL`]'s value.
    owner: String,
    /// Connected, checked rootless, stale containers removed, pruner started: once.
    docker: OnceCell<Docker>,
    /// The daemon has no cgroups (a cgroup v1 host), so `pidsLimit` holds only as
    /// `RLIMIT_NPROC`; set when connected.
    no_cgroups: AtomicBool,
    containers: Mutex<HashMap<String, Entry>>,
    /// Why a scope's container was reset, until its next command tells the model.
    resets: std::sync::Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("socket", &self.inner.socket)
            .field("image", &self.inner.config.image)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// A sandbox talking to the daemon at `socket`, for the agent `workspace` of the
    /// installation whose state directory is `state_dir`. Nothing is contacted until the
    /// first command.
    pub fn new(config: SandboxConfig, socket: PathBuf, workspace: &Path, state_dir: &Path) -> Self {
        let owner = hex::encode(&Sha256::digest(state_dir.as_os_str().as_encoded_bytes())[..8]);
        Self {
            inner: Arc::new(Inner {
                socket,
                config,
                workspace: workspace.to_owned(),
                sandboxes: state_dir.join("sandboxes"),
                owner,
                docker: OnceCell::new(),
                no_cgroups: AtomicBool::new(false),
                containers: Mutex::new(HashMap::new()),
                resets: std::sync::Mutex::default(),
            }),
        }
    }

    /// The sandbox of an installation, checked at start: the daemon's socket must be known
    /// and no `docker.binds` source may resolve (symlinks followed) to a refused path or
    /// the installation's state directory. Errors name the key.
    pub fn from_config(
        config: &crate::config::Config,
        paths: &crate::paths::Paths,
        workspace: &Path,
    ) -> Result<Self, crate::config::ConfigError> {
        use crate::config::ConfigError;
        let socket =
            socket_from_env().map_err(|e| ConfigError::key("agents.defaults.sandbox.mode", e))?;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
        let state = canonical(&paths.state_dir);
        let daemon = canonical(&socket);
        for (i, bind) in config.sandbox.binds.iter().enumerate() {
            let source = canonical(&bind.source);
            crate::config::check_bind_source(&source, home.as_deref(), Some(&state))
                .and_then(|()| refuse_daemon_socket(&source, &daemon))
                .map_err(|e| {
                    ConfigError::key(&format!("agents.defaults.sandbox.docker.binds[{i}]"), e)
                })?;
        }
        Ok(Self::new(
            config.sandbox.clone(),
            socket,
            workspace,
            &paths.state_dir,
        ))
    }

    /// The scope hash a session's commands run under (the container label's value).
    fn scope_of(&self, session: &SessionKey) -> String {
        let c = &self.inner.config;
        let name = match c.scope {
            SandboxScope::Session => format!("session\0{session}"),
            SandboxScope::Agent => "agent\0main".to_owned(),
            SandboxScope::Shared => "shared".to_owned(),
        };
        // Non-shared scopes include the workspace, as OpenClaw does, so two installations
        // with the same session keys never share a container.
        let mut hash = Sha256::new();
        hash.update(name.as_bytes());
        if c.scope != SandboxScope::Shared {
            hash.update(b"\0");
            hash.update(self.inner.workspace.as_os_str().as_encoded_bytes());
        }
        hex::encode(&hash.finalize()[..8])
    }

    /// The connected daemon; the first call checks it is rootless, removes this
    /// installation's containers a previous run left, and starts the idle pruner.
    async fn docker(&self) -> Result<&Docker, String> {
        self.inner
            .docker
            .get_or_try_init(|| async {
                let (docker, cgroups) = connect(&self.inner.socket).await?;
                self.inner.no_cgroups.store(!cgroups, Ordering::Relaxed);
                remove_stale(&docker, &self.inner.owner).await?;
                if self.inner.config.idle_secs > 0 {
                    tokio::spawn(prune(Arc::downgrade(&self.inner)));
                }
                Ok(docker)
            })
            .await
    }

    /// The container of `scope`, created when it has none, and its use count; marks it
    /// busy.
    async fn acquire(&self, scope: &str) -> Result<(String, u64), String> {
        let docker = self.docker().await?;
        let mut containers = self.inner.containers.lock().await;
        if let Some(entry) = containers.get_mut(scope) {
            entry.busy += 1;
            entry.uses += 1;
            entry.last_used = Instant::now();
            return Ok((entry.id.clone(), entry.uses));
        }
        let id = self.create(docker, scope).await?;
        containers.insert(
            scope.to_owned(),
            Entry {
                id: id.clone(),
                last_used: Instant::now(),
                busy: 1,
                uses: 1,
            },
        );
        Ok((id, 1))
    }

    /// Ends a command's use of `scope`'s container `id`; `gone`: it was removed.
    async fn release(&self, scope: &str, id: &str, gone: bool) {
        let mut containers = self.inner.containers.lock().await;
        if let Some(entry) = containers.get_mut(scope).filter(|e| e.id == id) {
            if gone {
                containers.remove(scope);
            } else {
                entry.busy = entry.busy.saturating_sub(1);
                entry.last_used = Instant::now();
            }
        }
    }

    async fn create(&self, docker: &Docker, scope: &str) -> Result<String, String> {
        let c = &self.inner.config;
        let own = self.inner.sandboxes.join(scope);
        if c.workspace_access != WorkspaceAccess::Rw {
            private_workspace(&self.inner.sandboxes, &own)?;
        }
        let binds = container::workspace_binds(c.workspace_access, &self.inner.workspace, &own);
        let nproc_cap = self.inner.no_cgroups.load(Ordering::Relaxed);
        let body = container::create_body(c, &self.inner.owner, scope, binds, nproc_cap);
        let name = format!("clawfort-sbx-{scope}");
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = match docker.create_container(Some(options), body).await {
            Ok(created) => created,
            Err(e) if status(&e) == Some(404) => {
                return Err(format!(
                    "the sandbox image {} is not on the Docker daemon ({}); build or load it \
                     as the service user (docker build / docker load), or set \
                     agents.defaults.sandbox.docker.image; clawfort never pulls images",
                    c.image,
                    self.inner.socket.display()
                ))
            }
            Err(e) if status(&e) == Some(409) => {
                // A container of this name survived (another gateway run on the same
                // state directory raced us): remove it and try once more.
                remove(docker, &name).await;
                let options = CreateContainerOptionsBuilder::new().name(&name).build();
                let body = container::create_body(
                    c,
                    &self.inner.owner,
                    scope,
                    container::workspace_binds(c.workspace_access, &self.inner.workspace, &own),
                    nproc_cap,
                );
                docker
                    .create_container(Some(options), body)
                    .await
                    .map_err(|e| format!("cannot create the sandbox container: {}", reason(&e)))?
            }
            Err(e) => {
                return Err(format!(
                    "cannot create the sandbox container: {}",
                    reason(&e)
                ))
            }
        };
        if let Err(e) = docker.start_container(&created.id, None).await {
            remove(docker, &created.id).await;
            return Err(format!(
                "cannot start the sandbox container: {}",
                reason(&e)
            ));
        }
        tracing::info!(container = %created.id, scope, "sandbox container started");
        Ok(created.id)
    }

    /// Runs `command` (`/bin/sh -c`) in the container of `session`'s scope, in `workdir`
    /// (relative to `/workspace`), until `deadline` or `cancel`.
    pub async fn run(
        &self,
        session: &SessionKey,
        command: &str,
        workdir: Option<&str>,
        deadline: Instant,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Outcome, String> {
        let workdir = container_workdir(workdir)?;
        let scope = self.scope_of(session);
        let user = &self.inner.config.user;
        // A container removed under us gets one replacement, then the call fails.
        for _ in 0..2 {
            let (id, uses) = self.acquire(&scope).await?;
            let docker = self.docker().await?;
            let mut guard = RemoveOnDrop {
                sandbox: self,
                scope: &scope,
                id: &id,
                armed: true,
            };
            let result = run::exec(docker, &id, user, command, &workdir, deadline, cancel).await;
            let gone = match &result {
                Ok(outcome) => matches!(outcome.ending, Ending::TimedOut | Ending::Cancelled),
                Err(_) => true,
            };
            guard.armed = false;
            if gone {
                remove(docker, &id).await;
            } else {
                self.check_when_idle(&scope, &id, uses);
            }
            self.release(&scope, &id, gone).await;
            match result {
                Ok(mut outcome) => {
                    let reset = self
                        .inner
                        .resets
                        .lock()
                        .expect("not poisoned")
                        .remove(&scope);
                    if let Some(why) = reset {
                        reset_note(&mut outcome, &why);
                    }
                    return Ok(outcome);
                }
                Err(run::ExecError::Stale) => continue,
                Err(run::ExecError::Failed(e)) => return Err(e),
            }
        }
        Err(
            "the sandbox container stopped twice under the command; see the Docker \
             daemon's log"
                .to_owned(),
        )
    }

    /// After [`SETTLE`] without another command in container `id` of `scope` (`uses`: its
    /// use count at the command just ended), counts its processes and removes it when it
    /// has no room left for a command; the scope's next command tells the model.
    fn check_when_idle(&self, scope: &str, id: &str, uses: u64) {
        let (sandbox, scope, id) = (self.clone(), scope.to_owned(), id.to_owned());
        tokio::spawn(async move {
            let idle = |containers: &HashMap<String, Entry>| {
                containers
                    .get(&scope)
                    .is_some_and(|e| e.id == id && e.busy == 0 && e.uses == uses)
            };
            tokio::time::sleep(SETTLE).await;
            let (Some(docker), true) = (
                sandbox.inner.docker.get(),
                idle(&*sandbox.inner.containers.lock().await),
            ) else {
                return;
            };
            let Some(why) = sandbox.starved(docker, &id).await else {
                return;
            };
            {
                let mut containers = sandbox.inner.containers.lock().await;
                // A command that started meanwhile may have added processes of its own.
                if !idle(&containers) {
                    return;
                }
                containers.remove(&scope);
                let mut resets = sandbox.inner.resets.lock().expect("not poisoned");
                resets.insert(scope.clone(), why.clone());
            }
            tracing::warn!(container = %id, scope, "sandbox container reset: {why}");
            remove(docker, &id).await;
        });
    }

    /// Why container `id` can serve no further command: what is left running in it holds
    /// (nearly) all of its `pidsLimit`. `None` when it has room or cannot be asked.
    async fn starved(&self, docker: &Docker, id: &str) -> Option<String> {
        let limit = self.inner.config.pids_limit;
        match run::processes(docker, id, &self.inner.config.user).await {
            // The count includes the probe: it is the room a command would have.
            Ok(n) if n + SPARE_PIDS > limit as usize + 1 => Some(format!(
                "it held {} processes, its pidsLimit is {limit}, so no further command \
                 could start in it",
                n - 1
            )),
            Ok(_) => None,
            Err(run::ProbeError::NoRoom(why)) => Some(format!(
                "no process could start in it any more, its pidsLimit is {limit} ({why})"
            )),
            Err(run::ProbeError::Daemon(e)) => {
                tracing::debug!(container = %id, "cannot count a sandbox container's processes: {e}");
                None
            }
        }
    }

    /// Removes every container of this installation (gateway shutdown, tests).
    pub async fn remove_all(&self) {
        let ids: Vec<String> = {
            let mut containers = self.inner.containers.lock().await;
            containers.drain().map(|(_, e)| e.id).collect()
        };
        if let Some(docker) = self.inner.docker.get() {
            for id in ids {
                remove(docker, &id).await;
            }
        }
    }
}

/// Processes a container must keep free to count as usable: a command is a shell, often a
/// pipeline or a command substitution.
const SPARE_PIDS: usize = 4;

/// How long a container stays idle after a command before its processes are counted:
/// enough for a fork bomb sent to the background to reach the limit, and a command that
/// follows at once is not slowed.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Tells the model, after the output of the first command in a new container, why the
/// scope's previous container was reset.
fn reset_note(outcome: &mut Outcome, why: &str) {
    let mut note = String::new();
    if outcome.output.last().is_some_and(|&b| b != b'\n') {
        note.push('\n');
    }
    note.push_str(&format!(
        "[sandbox container reset after the previous command: {why}; it was removed with \
         every process in it, and this command ran in a new container ({WORKDIR} is kept)]\n"
    ));
    outcome.output.extend_from_slice(note.as_bytes());
    outcome.total_bytes += note.len() as u64;
}

/// Removes a command's container when its future is dropped mid-run (the turn's loop drops
/// it at the deadline or on `/stop`): the exec API cannot kill the command itself.
struct RemoveOnDrop<'a> {
    sandbox: &'a Sandbox,
    scope: &'a str,
    id: &'a str,
    armed: bool,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (sandbox, scope, id) = (
            self.sandbox.clone(),
            self.scope.to_owned(),
            self.id.to_owned(),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(docker) = sandbox.inner.docker.get() {
                    remove(docker, &id).await;
                }
                sandbox.release(&scope, &id, true).await;
            });
        }
    }
}

/// `workdir` of the tool input as a path in the container: beneath `/workspace`.
fn container_workdir(workdir: Option<&str>) -> Result<String, String> {
    let Some(dir) = workdir
        .map(str::trim)
        .filter(|d| !d.is_empty() && *d != ".")
    else {
        return Ok(WORKDIR.to_owned());
    };
    let path = Path::new(dir);
    let inside = path.strip_prefix(WORKDIR).unwrap_or(path);
    if inside.is_absolute()
        || inside
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!(
            "`workdir` {dir} must be a directory inside the workspace ({WORKDIR}), without `..`"
        ));
    }
    Ok(Path::new(WORKDIR).join(inside).display().to_string())
}

/// The per-scope sandbox workspace: `sandboxes/` private to the service user (0700), the
/// scope's directory in it open (0777) because the container user is a subordinate uid of
/// rootless Docker, not the service user; no other host user can reach it through the
/// private parent.
fn private_workspace(sandboxes: &Path, own: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let error =
        |e: std::io::Error| format!("cannot create the sandbox workspace {}: {e}", own.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(sandboxes)
        .map_err(error)?;
    match std::fs::DirBuilder::new().mode(0o777).create(own) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(error(e)),
    }
    std::fs::set_permissions(own, std::fs::Permissions::from_mode(0o777)).map_err(error)
}

/// Connects to `socket`, agrees on an API version, and refuses a daemon that is not
/// rootless; also says whether the daemon has cgroups (false on a cgroup v1 host).
async fn connect(socket: &Path) -> Result<(Docker, bool), String> {
    let unreachable = |e: &bollard::errors::Error| {
        format!(
            "cannot reach the Docker daemon at {}: {}; the sandbox needs rootless Docker \
             running as the service user (systemctl --user start docker, or \
             dockerd-rootless.sh), or set agents.defaults.sandbox.mode to \"off\"",
            socket.display(),
            reason(e)
        )
    };
    let path = socket
        .to_str()
        .ok_or("the Docker socket path is not UTF-8")?;
    let docker = Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
        .map_err(|e| unreachable(&e))?
        .negotiate_version()
        .await
        .map_err(|e| unreachable(&e))?;
    let info = docker.info().await.map_err(|e| unreachable(&e))?;
    let options = info.security_options.unwrap_or_default();
    if !options.iter().any(|o| o.contains("rootless")) {
        return Err(format!(
            "the Docker daemon at {} is not rootless (security options: {}); access to a \
             rootful daemon is root on the host, so the sandbox refuses it; run rootless \
             Docker as the service user",
            socket.display(),
            options.join(", ")
        ));
    }
    let cgroups = info.cgroup_driver != Some(bollard::models::SystemInfoCgroupDriverEnum::NONE);
    if !cgroups {
        tracing::warn!(
            "the rootless Docker daemon has no cgroups (cgroup v1 host): sandbox memory and \
             cpus limits are not enforced; the process cap holds only through RLIMIT_NPROC, \
             which counts every task of the daemon's user (dockerd, containerd, each \
             container's shim), so many containers at once can exhaust it"
        );
    }
    Ok((docker, cgroups))
}

/// Whether the rootless daemon at `socket` holds `image`: its id, `None` when it does not,
/// or why the daemon could not tell (for `security audit --deep`, outside any runtime).
pub fn image_present(socket: &Path, image: &str) -> Result<Option<String>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let inspect = async {
            let (docker, _) = connect(socket).await?;
            match docker.inspect_image(image).await {
                Ok(found) => Ok(Some(found.id.unwrap_or_default())),
                Err(e) if status(&e) == Some(404) => Ok(None),
                Err(e) => Err(format!("cannot inspect {image}: {}", reason(&e))),
            }
        };
        tokio::time::timeout(Duration::from_secs(10), inspect)
            .await
            .map_err(|_| {
                format!(
                    "the Docker daemon at {} did not answer within 10 s",
                    socket.display()
                )
            })?
    })
}

/// Removes this installation's containers a previous run left behind.
async fn remove_stale(docker: &Docker, owner: &str) -> Result<(), String> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{}={owner}", container::OWNER_LABEL)],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let stale = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| format!("cannot list the sandbox containers: {}", reason(&e)))?;
    for c in stale {
        if let Some(id) = c.id {
            tracing::info!(container = %id, "removing a sandbox container of an earlier run");
            remove(docker, &id).await;
        }
    }
    Ok(())
}

/// Removes containers idle longer than `prune.idleHours`, until the sandbox is dropped.
async fn prune(inner: Weak<Inner>) {
    let Some(idle) = inner
        .upgrade()
        .map(|i| Duration::from_secs(i.config.idle_secs))
    else {
        return;
    };
    let period = (idle / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else { return };
        let Some(docker) = inner.docker.get() else {
            continue;
        };
        let idle_ids: Vec<String> = {
            let mut containers = inner.containers.lock().await;
            let expired: Vec<String> = containers
                .iter()
                .filter(|(_, e)| e.busy == 0 && e.last_used.elapsed() >= idle)
                .map(|(scope, _)| scope.clone())
                .collect();
            expired
                .iter()
                .filter_map(|scope| containers.remove(scope).map(|e| e.id))
                .collect()
        };
        for id in idle_ids {
            tracing::info!(container = %id, "removing an idle sandbox container");
            remove(docker, &id).await;
        }
    }
}

/// Force-removes a container (SIGKILL to every process in it); a container already gone
/// is fine, any other failure is logged.
async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => {}
        Err(e) if status(&e) == Some(404) => {}
        Err(e) => {
            tracing::warn!(container = %id, "cannot remove a sandbox container: {}", reason(&e))
        }
    }
}

/// The HTTP status of a daemon's error answer.
fn status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// A daemon error in words: its own message when it sent one.
fn reason(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DmScope;
    use crate::sessions::{direct_key, group_key};

    #[test]
    fn non_main_leaves_only_the_main_session_on_the_host() {
        let main = direct_key(DmScope::Main, "telegram", "default", "1");
        let peer = direct_key(DmScope::PerChannelPeer, "telegram", "default", "1");
        let group = group_key("telegram", "-100");
        assert!(!is_sandboxed(SandboxMode::NonMain, &main));
        assert!(is_sandboxed(SandboxMode::NonMain, &peer));
        assert!(is_sandboxed(SandboxMode::NonMain, &group));
        assert!(is_sandboxed(SandboxMode::All, &main));
        assert!(!is_sandboxed(SandboxMode::Off, &peer));
    }

    #[test]
    fn scopes_decide_which_sessions_share_a_container() {
        let a = direct_key(DmScope::PerPeer, "telegram", "default", "1");
        let b = direct_key(DmScope::PerPeer, "telegram", "default", "2");
        let with = |scope, workspace: &str| {
            let config = SandboxConfig {
                scope,
                ..SandboxConfig::default()
            };
            Sandbox::new(config, "/s".into(), Path::new(workspace), Path::new("/st"))
        };
        let session = with(SandboxScope::Session, "/w");
        assert_ne!(session.scope_of(&a), session.scope_of(&b));
        let agent = with(SandboxScope::Agent, "/w");
        assert_eq!(agent.scope_of(&a), agent.scope_of(&b));
        assert_ne!(
            agent.scope_of(&a),
            with(SandboxScope::Agent, "/v").scope_of(&a)
        );
        let shared = with(SandboxScope::Shared, "/w");
        assert_eq!(
            shared.scope_of(&a),
            with(SandboxScope::Shared, "/v").scope_of(&b)
        );
    }

    #[test]
    fn a_bind_holding_the_daemon_socket_is_refused() {
        let socket = Path::new("/run/clawfort-sandbox/docker.sock");
        for source in ["/run/clawfort-sandbox", "/run/clawfort-sandbox/docker.sock"] {
            let err = refuse_daemon_socket(Path::new(source), socket).unwrap_err();
            assert!(err.contains("control of the daemon"), "{source}: {err}");
        }
        for source in ["/run/clawfort-sandbox-data", "/srv/data"] {
            refuse_daemon_socket(Path::new(source), socket).unwrap();
        }
    }

    #[test]
    fn workdir_stays_in_the_workspace() {
        assert_eq!(container_workdir(None).unwrap(), "/workspace");
        assert_eq!(container_workdir(Some("src")).unwrap(), "/workspace/src");
        assert_eq!(
            container_workdir(Some("/workspace/src")).unwrap(),
            "/workspace/src"
        );
        for bad in ["..", "src/../..", "/etc", "/workspace/../etc"] {
            assert!(container_workdir(Some(bad)).is_err(), "{bad}");
        }
    }
}
