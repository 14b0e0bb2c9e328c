//! `agents.defaults.sandbox`: which sessions run `exec` in a Docker container, and how that
//! container is built (OpenClaw's key names and defaults; see [`crate::sandbox`]).
//!
//! A bind that would hand the container the Docker socket (a way to start a privileged
//! sibling container), the whole file system, `/etc`, `/proc`, `/sys`, a home directory or
//! the state directory (config, `.env`, credentials) is refused here, naming the key. The
//! state directory of a non-default installation is checked again where it is known
//! ([`check_bind_source`]).

use std::path::{Component, Path, PathBuf};

use super::reader::Section;
use super::SandboxMode;

/// OpenClaw's sandbox image name; clawfort never pulls it: the operator builds or loads it.
pub const DEFAULT_IMAGE: &str = "openclaw-sandbox:bookworm-slim";
/// OpenClaw's default container user: not root, so a bind the image user owns stays closed.
pub const DEFAULT_USER: &str = "1000:1000";
/// OpenClaw's default `pidsLimit`.
pub const DEFAULT_PIDS_LIMIT: u64 = 256;
/// OpenClaw's default `prune.idleHours`.
pub const DEFAULT_IDLE_HOURS: u64 = 24;

/// How many containers serve the sandboxed sessions (`scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxScope {
    /// One container per session.
    Session,
    /// One container for the agent (OpenClaw's default; clawfort has one agent, `main`).
    Agent,
    /// One container for every sandboxed session.
    Shared,
}

/// What the container sees of the agent workspace (`workspaceAccess`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceAccess {
    /// Nothing: a private sandbox workspace (under the state directory's `sandboxes/`) is
    /// mounted read-write at `/workspace`.
    None,
    /// The agent workspace read-only at `/agent`, the sandbox workspace at `/workspace`.
    Ro,
    /// The agent workspace read-write at `/workspace`.
    Rw,
}

/// One `docker.binds` entry, `source:target[:ro|rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

impl BindMount {
    /// The form the Docker API takes (`HostConfig.Binds`).
    pub fn to_docker(&self) -> String {
        let mode = if self.read_only { "ro" } else { "rw" };
        format!("{}:{}:{mode}", self.source.display(), self.target)
    }
}

/// `agents.defaults.sandbox` but `mode` (kept in [`super::Config::sandbox_mode`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    pub scope: SandboxScope,
    pub workspace_access: WorkspaceAccess,
    /// `docker.image`.
    pub image: String,
    /// `docker.network`: `none` (the default) or a network the operator created; `host` and
    /// `container:<id>` are refused.
    pub network: String,
    /// `docker.user`, `uid:gid` or a name of the image; root is refused.
    pub user: String,
    /// `docker.memory` in bytes.
    pub memory_bytes: Option<i64>,
    /// `docker.cpus`.
    pub cpus: Option<f64>,
    /// `docker.pidsLimit`.
    pub pids_limit: u64,
    /// `docker.binds`.
    pub binds: Vec<BindMount>,
    /// `prune.idleHours` in seconds; 0: never pruned while the gateway runs.
    pub idle_secs: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            scope: SandboxScope::Agent,
            workspace_access: WorkspaceAccess::None,
            image: DEFAULT_IMAGE.to_owned(),
            network: "none".to_owned(),
            user: DEFAULT_USER.to_owned(),
            memory_bytes: None,
            cpus: None,
            pids_limit: DEFAULT_PIDS_LIMIT,
            binds: Vec::new(),
            idle_secs: DEFAULT_IDLE_HOURS * 3600,
        }
    }
}

/// Reads the `sandbox` section of `agents.defaults`.
pub fn read_sandbox(sandbox: &mut Section) -> (Option<SandboxMode>, SandboxConfig) {
    let mode = sandbox.choice(
        "mode",
        &[
            ("off", SandboxMode::Off),
            ("non-main", SandboxMode::NonMain),
            ("all", SandboxMode::All),
        ],
    );
    let mut config = SandboxConfig::default();
    if let Some(scope) = sandbox.choice(
        "scope",
        &[
            ("session", SandboxScope::Session),
            ("agent", SandboxScope::Agent),
            ("shared", SandboxScope::Shared),
        ],
    ) {
        config.scope = scope;
    }
    if let Some(access) = sandbox.choice(
        "workspaceAccess",
        &[
            ("none", WorkspaceAccess::None),
            ("ro", WorkspaceAccess::Ro),
            ("rw", WorkspaceAccess::Rw),
        ],
    ) {
        config.workspace_access = access;
    }
    sandbox.choice("backend", &[("docker", ())]);
    if let Some(mut docker) = sandbox.section("docker") {
        read_docker(&mut docker, &mut config);
        docker.finish();
    }
    if let Some(mut prune) = sandbox.section("prune") {
        if let Some(hours) = prune.integer("idleHours", 0, 24 * 365) {
            config.idle_secs = hours * 3600;
        }
        prune.finish();
    }
    (mode, config)
}

fn read_docker(docker: &mut Section, config: &mut SandboxConfig) {
    if let Some(image) = docker.string("image") {
        if image.trim().is_empty() {
            docker.error(
                "image",
                "must name an image, e.g. \"openclaw-sandbox:bookworm-slim\"",
            );
        } else {
            config.image = image;
        }
    }
    if let Some(network) = docker.string("network") {
        if network == "host" || network.starts_with("container:") {
            docker.error(
                "network",
                format!(
                    "\"{network}\" would share a network namespace with the host or another \
                     container; use \"none\" (no network) or a Docker network you created"
                ),
            );
        } else if network.is_empty() {
            docker.error("network", "must not be empty; use \"none\" for no network");
        } else {
            config.network = network;
        }
    }
    if let Some(user) = docker.string("user") {
        let name = user.split(':').next().unwrap_or_default();
        if name.is_empty() || name == "0" || name == "root" {
            docker.error(
                "user",
                format!("\"{user}\" runs commands as root in the container; use a uid:gid such as \"1000:1000\""),
            );
        } else {
            config.user = user;
        }
    }
    if let Some(value) = docker.get("memory") {
        match memory_bytes(value) {
            Ok(bytes) => config.memory_bytes = Some(bytes),
            Err(e) => docker.error("memory", e),
        }
    }
    if let Some(cpus) = docker.non_negative("cpus") {
        if cpus == 0.0 || cpus > 1024.0 {
            docker.error(
                "cpus",
                "must be more than 0 (a number of CPUs, e.g. 1 or 0.5)",
            );
        } else {
            config.cpus = Some(cpus);
        }
    }
    if let Some(limit) = docker.integer("pidsLimit", 8, 65_536) {
        config.pids_limit = limit;
    }
    if let Some(binds) = docker.strings("binds") {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        for (i, spec) in binds.iter().enumerate() {
            let key = format!("binds[{i}]");
            match parse_bind(spec).and_then(|b| {
                let state = home.as_ref().map(|h| h.join(".openclaw"));
                check_bind_source(&b.source, home.as_deref(), state.as_deref())?;
                Ok(b)
            }) {
                Ok(bind) => config.binds.push(bind),
                Err(e) => docker.error(&key, e),
            }
        }
    }
}

/// `"1g"`, `"512m"`, `"64k"`, a plain number of bytes as a string or a number.
fn memory_bytes(value: &serde_json::Value) -> Result<i64, String> {
    const MIN: i64 = 6 * 1024 * 1024;
    let bytes = match value {
        serde_json::Value::Number(n) => n.as_i64().ok_or("must be a whole number of bytes")?,
        serde_json::Value::String(s) => {
            let s = s.trim().to_ascii_lowercase();
            let s = s.strip_suffix('b').unwrap_or(&s);
            let (digits, unit) = match s.char_indices().last() {
                Some((i, c @ ('k' | 'm' | 'g'))) => (&s[..i], c),
                _ => (s, ' '),
            };
            let n: i64 = digits
                .parse()
                .map_err(|_| format!("\"{s}\" is not a size; write e.g. \"512m\" or \"1g\""))?;
            let shift = match unit {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                _ => 0,
            };
            n.checked_mul(1 << shift).ok_or("is too large")?
        }
        _ => return Err("must be a size such as \"1g\" or a number of bytes".to_owned()),
    };
    if bytes < MIN {
        return Err(format!(
            "{bytes} bytes is below Docker's minimum of 6 MiB; write e.g. \"512m\""
        ));
    }
    Ok(bytes)
}

fn parse_bind(spec: &str) -> Result<BindMount, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, "rw"),
        [s, t, m] => (*s, *t, *m),
        _ => {
            return Err(format!(
                "\"{spec}\" is not source:target or source:target:ro|rw"
            ))
        }
    };
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        other => return Err(format!("mode \"{other}\" of \"{spec}\" must be ro or rw")),
    };
    let source = Path::new(source);
    if !source.is_absolute() || !target.starts_with('/') {
        return Err(format!(
            "\"{spec}\": source and target must be absolute paths (a named volume is not \
             supported)"
        ));
    }
    let target_path = Path::new(target);
    if target_path
        .components()
        .any(|c| matches!(c, Component::ParentDir))
        || ["/", "/workspace", "/agent", "/proc", "/sys", "/dev"]
            .iter()
            .any(|r| target_path.starts_with(r) && (*r != "/" || target_path == Path::new("/")))
    {
        return Err(format!(
            "target {target} is reserved (/, /workspace, /agent, /proc, /sys, /dev) or \
             holds `..`"
        ));
    }
    Ok(BindMount {
        source: normalize(source),
        target: target.to_owned(),
        read_only,
    })
}

/// `source` with `.` and `..` resolved lexically (the daemon resolves symlinks itself, so
/// a symlink to a refused path is caught by [`check_bind_source`] at start on the
/// canonical path).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Refuses a bind source that exposes the Docker socket, the whole system, a home
/// directory or the state directory. `home` and `state_dir` are the service user's.
pub fn check_bind_source(
    source: &Path,
    home: Option<&Path>,
    state_dir: Option<&Path>,
) -> Result<(), String> {
    let refuse = |what: &str| {
        Err(format!(
            "binding {} would expose {what} to the sandbox; bind a project directory instead",
            source.display()
        ))
    };
    if source == Path::new("/") {
        return refuse("the whole file system");
    }
    for (dir, what) in [
        ("/etc", "/etc (system configuration and secrets)"),
        ("/proc", "/proc (every process of the host)"),
        ("/sys", "/sys (the kernel's settings)"),
        ("/dev", "/dev (the host's devices)"),
        ("/boot", "/boot (the kernel)"),
    ] {
        if source.starts_with(dir) {
            return refuse(what);
        }
    }
    // The Docker socket (rootful or rootless) or a directory holding it.
    let name = source.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with("docker.sock")
        || name == "containerd.sock"
        || ["/run", "/var/run", "/var", "/run/user", "/var/lib/docker"]
            .iter()
            .any(|d| source == Path::new(d))
        || source.starts_with("/run/docker")
        || source.starts_with("/var/run/docker")
        || (source.starts_with("/run/user") && source.components().count() <= 4)
    {
        return refuse("the Docker socket (control of the daemon)");
    }
    if ["/home", "/root"].iter().any(|d| source == Path::new(d))
        || (source.starts_with("/home") && source.components().count() == 3)
    {
        return refuse("a home directory");
    }
    if let Some(home) = home {
        if home.starts_with(source) {
            return refuse("the service user's home directory");
        }
    }
    if let Some(state) = state_dir {
        if state.starts_with(source) || source.starts_with(state) {
            return refuse("the state directory (config, .env, credentials, transcripts)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, EnvSource};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, &EnvSource::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_openclaws() {
        let c = parse(r#"{ agents: { defaults: { sandbox: { mode: "all" } } } }"#).unwrap();
        assert_eq!(c.sandbox, SandboxConfig::default());
        assert_eq!(c.sandbox.network, "none");
        assert_eq!(c.sandbox.scope, SandboxScope::Agent);
    }

    #[test]
    fn every_setting_is_read() {
        let c = parse(
            r#"{ agents: { defaults: { sandbox: { mode: "all", scope: "session",
                 workspaceAccess: "rw", prune: { idleHours: 2 },
                 docker: { image: "x:1", network: "mynet", user: "1001:1001", memory: "512m",
                           cpus: 0.5, pidsLimit: 64, binds: ["/srv/data:/data:ro"] } } } } }"#,
        )
        .unwrap();
        let s = &c.sandbox;
        assert_eq!(
            (
                s.scope,
                s.workspace_access,
                s.image.as_str(),
                s.network.as_str()
            ),
            (SandboxScope::Session, WorkspaceAccess::Rw, "x:1", "mynet")
        );
        assert_eq!(
            (s.memory_bytes, s.cpus, s.pids_limit, s.idle_secs),
            (Some(512 << 20), Some(0.5), 64, 7200)
        );
        assert_eq!(s.binds[0].to_docker(), "/srv/data:/data:ro");
        assert!(c.unimplemented.is_empty(), "{:?}", c.unimplemented);
    }

    #[test]
    fn dangerous_binds_are_refused_naming_the_key() {
        for source in [
            "/",
            "/etc",
            "/etc/ssl",
            "/proc",
            "/sys/fs",
            "/var/run/docker.sock",
            "/run/user/1000/docker.sock",
            "/run/user/1000",
            "/run",
            "/home",
            "/home/alice",
            "/root",
            "/srv/../etc",
        ] {
            let text = format!(
                r#"{{ agents: {{ defaults: {{ sandbox: {{ docker: {{ binds: ["/srv/ok:/ok", "{source}:/x"] }} }} }} }} }}"#
            );
            let e = parse(&text).unwrap_err();
            assert!(
                e.contains("agents.defaults.sandbox.docker.binds[1]") && e.contains("expose"),
                "{source}: {e}"
            );
        }
        let e = parse(
            r#"{ agents: { defaults: { sandbox: { docker: { binds: ["/srv:/proc/x"] } } } } }"#,
        )
        .unwrap_err();
        assert!(e.contains("reserved"), "{e}");
    }

    #[test]
    fn the_state_directory_and_the_home_are_refused() {
        let home = Path::new("/home/svc");
        let state = Path::new("/var/lib/clawfort/.openclaw");
        assert!(
            check_bind_source(Path::new("/var/lib/clawfort"), Some(home), Some(state)).is_err()
        );
        assert!(check_bind_source(state, Some(home), Some(state)).is_err());
        assert!(check_bind_source(&state.join("workspace"), Some(home), Some(state)).is_err());
        assert!(check_bind_source(Path::new("/home/svc/src"), Some(home), Some(state)).is_ok());
        assert!(check_bind_source(Path::new("/srv/project"), Some(home), Some(state)).is_ok());
    }

    #[test]
    fn unsafe_container_settings_name_the_key() {
        let e = parse(r#"{ agents: { defaults: { sandbox: { docker: { network: "host" } } } } }"#)
            .unwrap_err();
        assert!(e.contains("agents.defaults.sandbox.docker.network"), "{e}");
        let e = parse(r#"{ agents: { defaults: { sandbox: { docker: { user: "0:0" } } } } }"#)
            .unwrap_err();
        assert!(e.contains("agents.defaults.sandbox.docker.user"), "{e}");
        let e = parse(r#"{ agents: { defaults: { sandbox: { docker: { memory: "lots" } } } } }"#)
            .unwrap_err();
        assert!(e.contains("agents.defaults.sandbox.docker.memory"), "{e}");
    }
}
