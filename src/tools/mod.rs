//! The tools the agent may call: the interface ([`Tool`], the [`Tools`] registry), the file
//! tools `read`, `write` and `edit` ([`files`]), every path confined beneath the workspace
//! and `security.allowedPaths` by the kernel ([`paths`]), `exec` ([`exec`]) in the Docker
//! sandbox or confined on the host by [`crate::confine`], and `web_fetch` ([`web_fetch`]),
//! which reaches public addresses only. Every call is recorded in the execution log ([`log`]).
//!
//! Which tools exist is decided by `tools.profile` / `allow` / `alsoAllow` / `deny`
//! ([`crate::config::ToolPolicy`]) and `tools.exec.security`. The agent depends on this
//! module, and this module on `confine`, never the reverse.

pub mod exec;
pub mod files;
pub mod log;
pub mod paths;
mod registry;
pub mod web_fetch;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, ToolPolicy};
use crate::paths::Paths;

pub use exec::ExecTool;
pub use log::{Execution, ToolLog};
pub use paths::Confinement;
pub use registry::{Call, Tool, ToolFuture, ToolOutput, Tools};
pub use web_fetch::WebFetchTool;

/// The file tools' roots and denied paths from the config: the workspace, the allowed paths
/// (unless `tools.fs.workspaceOnly`), `security.deniedPaths`, and always the state
/// directory (but the workspace inside it), the config file and `.env`.
pub fn confinement(
    config: &Config,
    paths: &Paths,
    workspace: &std::path::Path,
) -> Result<Confinement, String> {
    let allowed: &[PathBuf] = if config.tools.fs_workspace_only {
        &[]
    } else {
        &config.security.allowed_paths
    };
    let mut denied: Vec<(PathBuf, String)> = config
        .security
        .denied_paths
        .iter()
        .map(|p| (p.clone(), format!("security.deniedPaths: {}", p.display())))
        .collect();
    for (path, what) in [
        (&paths.config, "the config file"),
        (&paths.env_file(), "the .env file"),
    ] {
        denied.push((path.clone(), format!("{what} {}", path.display())));
    }
    Confinement::new(workspace, allowed, &denied, &paths.state_dir)
}

/// Registers the file tools `policy` offers, each confined by `confinement`; returns their
/// names.
pub fn register_file_tools(
    tools: &mut Tools,
    policy: &ToolPolicy,
    confinement: &Arc<Confinement>,
) -> Vec<&'static str> {
    let all: [(&'static str, Arc<dyn Tool>); 3] = [
        (
            "read",
            Arc::new(files::ReadTool::new(Arc::clone(confinement))),
        ),
        (
            "write",
            Arc::new(files::WriteTool::new(Arc::clone(confinement))),
        ),
        (
            "edit",
            Arc::new(files::EditTool::new(Arc::clone(confinement))),
        ),
    ];
    let mut names = Vec::new();
    for (name, tool) in all {
        if policy.offers(name) {
            tools.register(tool);
            names.push(name);
        }
    }
    names
}
