//! Where clawfort finds its configuration and state.
//!
//! OpenClaw keeps everything under `~/.openclaw`: the config `openclaw.json`, the `.env` with
//! secrets, `credentials/` (pairing state) and `agents/` (session transcripts). The state
//! directory is the directory of the config file, so `--config /srv/x/openclaw.json` moves
//! the whole installation; `OPENCLAW_STATE_DIR` overrides that.

use std::path::{Path, PathBuf};

/// The workspace file whose text joins the agent's system prompt (OpenClaw's convention).
pub const AGENTS_MD: &str = "AGENTS.md";

/// Environment variable naming the config file (same as `--config`).
pub const CONFIG_ENV: &str = "OPENCLAW_CONFIG_PATH";
/// Environment variable naming the state directory.
pub const STATE_DIR_ENV: &str = "OPENCLAW_STATE_DIR";
/// File name of the config inside the state directory.
pub const CONFIG_FILE_NAME: &str = "openclaw.json";

/// The resolved locations of one installation.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The config file; it may not exist (then the secure defaults apply).
    pub config: PathBuf,
    pub state_dir: PathBuf,
}

impl Paths {
    /// Resolves the paths from the command line, then the environment, then `$HOME`.
    pub fn resolve(cli_config: Option<&Path>) -> anyhow::Result<Self> {
        let env_config = std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let config = cli_config.map(Path::to_path_buf).or(env_config);
        let home = match config {
            Some(_) => PathBuf::new(),
            None => home_dir()?,
        };
        let state_dir = std::env::var_os(STATE_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Ok(Self::from_parts(config, state_dir, &home))
    }

    /// The paths a process gets from `--config` / `OPENCLAW_CONFIG_PATH` (`config`),
    /// `OPENCLAW_STATE_DIR` (`state_dir`) and its home directory: the one rule shared by the
    /// CLI and by the audit when it works out the service's installation.
    pub fn from_parts(config: Option<PathBuf>, state_dir: Option<PathBuf>, home: &Path) -> Self {
        let config = config.unwrap_or_else(|| home.join(".openclaw").join(CONFIG_FILE_NAME));
        let state_dir = state_dir.unwrap_or_else(|| {
            config
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        });
        Self { config, state_dir }
    }

    /// Paths for an installation rooted at `state_dir` (used by tests and benchmarks).
    pub fn in_dir(state_dir: &Path) -> Self {
        Self {
            config: state_dir.join(CONFIG_FILE_NAME),
            state_dir: state_dir.to_path_buf(),
        }
    }

    /// `~/.openclaw/.env`: secrets referenced from the config as `${VAR}`.
    pub fn env_file(&self) -> PathBuf {
        self.state_dir.join(".env")
    }

    /// `~/.openclaw/credentials`: pairing requests and allow-lists per channel.
    pub fn credentials_dir(&self) -> PathBuf {
        self.state_dir.join("credentials")
    }

    /// `~/.openclaw/agents/main/sessions`: one append-only transcript per session key.
    pub fn sessions_dir(&self) -> PathBuf {
        self.state_dir.join("agents").join("main").join("sessions")
    }

    /// `~/.openclaw/logs/gateway.log`: the log file used when not running under systemd.
    pub fn log_file(&self) -> PathBuf {
        self.state_dir.join("logs").join("gateway.log")
    }
}

/// `$HOME`, required to find `~/.openclaw` when no path was given.
pub fn home_dir() -> anyhow::Result<PathBuf> {
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home)),
        None => anyhow::bail!(
            "HOME is not set, so ~/.openclaw cannot be found: set HOME, or pass --config PATH \
             (or set {CONFIG_ENV})"
        ),
    }
}

/// Expands a leading `~/` against `$HOME` (config paths such as `~/.ssh`).
pub fn expand_tilde(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), home_dir()) {
        (Some(rest), Ok(home)) => home.join(rest),
        _ if path == "~" => home_dir().unwrap_or_else(|_| PathBuf::from(path)),
        _ => PathBuf::from(path),
    }
}
