//! What a sandbox container is: its Docker create body, built from the config alone so the
//! hardening can be read (and tested) in one place.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{ContainerCreateBody, HostConfig, ResourcesUlimits};

use crate::config::SandboxConfig;

/// Label on every sandbox container; its value ties the container to one installation
/// (a hash of the state directory), so two gateways sharing a daemon never remove each
/// other's containers.
pub const OWNER_LABEL: &str = "clawfort.sandbox";
/// Label naming the scope (session, agent or shared) a container serves, as a hash.
pub const SCOPE_LABEL: &str = "clawfort.scope";

/// Where the sandbox workspace (or the agent workspace under `workspaceAccess: "rw"`)
/// appears in the container; commands start here.
pub const WORKDIR: &str = "/workspace";
/// Where the agent workspace appears under `workspaceAccess: "ro"`.
pub const AGENT_DIR: &str = "/agent";

/// The environment of the container and of every command: nothing of the gateway's.
pub const ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/workspace",
    "LANG=C.UTF-8",
];

/// Writable scratch space on a read-only root; `noexec` is left out since build tools
/// run what they compile in `/tmp`.
const TMPFS: &[&str] = &["/tmp", "/var/tmp", "/run"];
const TMPFS_OPTIONS: &str = "rw,nosuid,nodev,size=256m";

/// The create body of a container serving one scope.
///
/// `workspace_bind` is the `source:target:mode` binds the workspace access asks for.
/// Hardening: read-only root, tmpfs scratch, every capability dropped, `no-new-privileges`,
/// the configured non-root user, Docker's default seccomp profile (never `unconfined`),
/// the configured network (`none` by default), an init process that reaps orphans, and the
/// process cap `pidsLimit`, a cgroup limit. Where the daemon has no cgroups (rootless Docker
/// on a cgroup v1 host) `nproc_cap` adds `RLIMIT_NPROC` of the same size instead, the only
/// cap the kernel then enforces; not otherwise, because it counts every task of the
/// daemon's user on the host (runc sets it before it drops to the container's user, so
/// dockerd's, containerd's and every shim's threads count): with a few dozen containers an
/// exec could no longer start.
pub fn create_body(
    config: &SandboxConfig,
    owner: &str,
    scope: &str,
    workspace_binds: Vec<String>,
    nproc_cap: bool,
) -> ContainerCreateBody {
    let mut binds = workspace_binds;
    binds.extend(config.binds.iter().map(|b| b.to_docker()));
    let pids = i64::try_from(config.pids_limit).unwrap_or(i64::MAX);
    let host = HostConfig {
        binds: Some(binds),
        readonly_rootfs: Some(true),
        tmpfs: Some(
            TMPFS
                .iter()
                .map(|t| ((*t).to_owned(), TMPFS_OPTIONS.to_owned()))
                .collect(),
        ),
        cap_drop: Some(vec!["ALL".to_owned()]),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        network_mode: Some(config.network.clone()),
        pids_limit: Some(pids),
        memory: config.memory_bytes,
        // No swap beyond the memory limit.
        memory_swap: config.memory_bytes,
        nano_cpus: config.cpus.map(|c| (c * 1e9) as i64),
        ulimits: Some(
            [("core", 0)]
                .into_iter()
                .chain(nproc_cap.then_some(("nproc", pids)))
                .map(|(name, limit)| ResourcesUlimits {
                    name: Some(name.to_owned()),
                    soft: Some(limit),
                    hard: Some(limit),
                })
                .collect(),
        ),
        init: Some(true),
        ipc_mode: Some("private".to_owned()),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(config.image.clone()),
        // Idle until removed: commands arrive through the exec API.
        entrypoint: Some(vec!["sleep".to_owned(), "2147483647".to_owned()]),
        cmd: Some(Vec::new()),
        user: Some(config.user.clone()),
        working_dir: Some(WORKDIR.to_owned()),
        env: Some(ENV.iter().map(|e| (*e).to_owned()).collect()),
        labels: Some(HashMap::from([
            (OWNER_LABEL.to_owned(), owner.to_owned()),
            (SCOPE_LABEL.to_owned(), scope.to_owned()),
        ])),
        network_disabled: Some(config.network == "none"),
        host_config: Some(host),
        ..Default::default()
    }
}

/// The workspace binds `workspaceAccess` asks for: the private sandbox workspace at
/// `/workspace` (`none`), plus the agent workspace read-only at `/agent` (`ro`), or the
/// agent workspace read-write at `/workspace` (`rw`).
pub fn workspace_binds(
    access: crate::config::WorkspaceAccess,
    agent_workspace: &Path,
    sandbox_workspace: &Path,
) -> Vec<String> {
    use crate::config::WorkspaceAccess;
    let sandbox = format!("{}:{WORKDIR}:rw", sandbox_workspace.display());
    match access {
        WorkspaceAccess::None => vec![sandbox],
        WorkspaceAccess::Ro => vec![
            sandbox,
            format!("{}:{AGENT_DIR}:ro", agent_workspace.display()),
        ],
        WorkspaceAccess::Rw => vec![format!("{}:{WORKDIR}:rw", agent_workspace.display())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BindMount, WorkspaceAccess};

    #[test]
    fn the_container_is_locked_down() {
        let mut config = SandboxConfig {
            memory_bytes: Some(1 << 30),
            cpus: Some(1.5),
            ..SandboxConfig::default()
        };
        config.binds.push(BindMount {
            source: "/srv/data".into(),
            target: "/data".into(),
            read_only: true,
        });
        let body = create_body(
            &config,
            "owner",
            "scope",
            vec!["/w:/workspace:rw".into()],
            false,
        );
        let host = body.host_config.unwrap();
        let limits = |host: &HostConfig| -> Vec<(String, i64)> {
            let limits = host.ulimits.clone().unwrap_or_default();
            limits
                .into_iter()
                .map(|u| (u.name.unwrap(), u.hard.unwrap()))
                .collect()
        };
        // With cgroups the pids cgroup caps the processes; RLIMIT_NPROC would count the
        // daemon user's own tasks too.
        assert_eq!(limits(&host), [("core".to_owned(), 0)]);
        let v1 = create_body(&config, "owner", "scope", Vec::new(), true);
        assert_eq!(
            limits(&v1.host_config.unwrap()),
            [("core".to_owned(), 0), ("nproc".to_owned(), 256)]
        );
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_owned()])
        );
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.pids_limit, Some(256));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.memory_swap, Some(1 << 30));
        assert!(host.privileged.is_none() && host.cap_add.is_none());
        assert_eq!(
            host.binds.unwrap(),
            vec![
                "/w:/workspace:rw".to_owned(),
                "/srv/data:/data:ro".to_owned()
            ]
        );
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.network_disabled, Some(true));
        assert!(body.env.unwrap().iter().all(|e| !e.contains("TOKEN")));
    }

    #[test]
    fn workspace_access_decides_the_binds() {
        let (agent, own) = (Path::new("/a"), Path::new("/s"));
        assert_eq!(
            workspace_binds(WorkspaceAccess::None, agent, own),
            ["/s:/workspace:rw"]
        );
        assert_eq!(
            workspace_binds(WorkspaceAccess::Ro, agent, own),
            ["/s:/workspace:rw", "/a:/agent:ro"]
        );
        assert_eq!(
            workspace_binds(WorkspaceAccess::Rw, agent, own),
            ["/a:/workspace:rw"]
        );
    }
}
