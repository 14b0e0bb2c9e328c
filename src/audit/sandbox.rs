//! `--deep`: whether the Docker sandbox `exec` would run in is there: the service user's
//! rootless daemon answering on its socket and holding `agents.defaults.sandbox.docker.image`.
//! Without either, every sandboxed command fails (closed, never on the host), which the
//! config alone cannot show.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::{Finding, Severity};
use crate::config::{Config, ExecSecurity, SandboxMode};
use crate::paths::Paths;

/// One finding when the config sends commands to the sandbox; none otherwise.
pub fn check(config: &Config, paths: &Paths) -> Option<Finding> {
    if config.exec.security == ExecSecurity::Deny
        || !config.tools.offers("exec")
        || config.sandbox_mode == SandboxMode::Off
    {
        return None;
    }
    let image = &config.sandbox.image;
    let socket = match socket(paths) {
        Ok(socket) => socket,
        Err(why) => {
            return Some(Finding::new(
                "sandbox.unchecked",
                Severity::Info,
                "the sandbox could not be checked",
                why,
                "run the audit as root or as the gateway's user",
            ))
        }
    };
    Some(match crate::sandbox::image_present(&socket, image) {
        Ok(Some(id)) => Finding::new(
            "sandbox.image",
            Severity::Info,
            "the sandbox image is loaded",
            format!(
                "{image} ({id}) in the rootless Docker at {}",
                socket.display()
            ),
            "",
        ),
        Ok(None) => Finding::new(
            "sandbox.image.missing",
            Severity::Warn,
            "the sandbox image is missing: every sandboxed command fails",
            format!(
                "agents.defaults.sandbox.docker.image is {image}, which the rootless Docker at \
                 {} does not have (images are never pulled)",
                socket.display()
            ),
            "on the appliance the image build loads it into that daemon's store, so it was \
             removed since (`systemctl --user status clawfort-sandbox-import` as the gateway's \
             user says so too): reflash, or `docker import`/`docker build` it for that user; \
             elsewhere `docker import` or `docker build` it for that user",
        ),
        Err(why) => Finding::new(
            "sandbox.unreachable",
            Severity::Warn,
            "the sandbox's Docker daemon does not answer: every sandboxed command fails",
            why,
            "start the gateway user's rootless Docker (`systemctl --user start docker` as that \
             user), or set agents.defaults.sandbox.mode to \"off\"",
        ),
    })
}

/// The socket the gateway would use: `DOCKER_HOST` when set (as in its unit), else the
/// rootless daemon's of the state directory's owner.
fn socket(paths: &Paths) -> Result<PathBuf, String> {
    if std::env::var_os("DOCKER_HOST").is_some() {
        return crate::sandbox::socket_from_env();
    }
    let owner = std::fs::metadata(&paths.state_dir)
        .map_err(|e| format!("cannot read {}: {e}", paths.state_dir.display()))?
        .uid();
    Ok(PathBuf::from(format!("/run/user/{owner}/docker.sock")))
}

#[cfg(test)]
mod tests {
    use super::check;
    use crate::audit::Severity;
    use crate::config::{Config, EnvSource};
    use crate::paths::Paths;

    fn config(text: &str) -> Config {
        Config::parse(text, &EnvSource::default()).unwrap()
    }

    /// Only a config that sends commands to the sandbox is checked; a daemon that is not
    /// there is a warning naming its socket (the image check runs against a real daemon in
    /// tests/sandbox.rs).
    #[test]
    fn only_sandboxed_exec_is_checked_and_a_missing_daemon_warns() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::from_parts(None, Some(dir.path().to_path_buf()), dir.path());
        for quiet in [
            "{}",
            r#"{ tools: { exec: { security: "full" } },
                 agents: { defaults: { sandbox: { mode: "off" } } } }"#,
            r#"{ tools: { exec: { security: "full" }, deny: ["exec"] } }"#,
        ] {
            assert!(check(&config(quiet), &paths).is_none(), "{quiet}");
        }
        if std::env::var_os("DOCKER_HOST").is_some() {
            eprintln!("skipped the daemon half: DOCKER_HOST is set");
            return;
        }
        let sandboxed = config(
            r#"{ tools: { exec: { security: "full" } },
                 agents: { defaults: { sandbox: { mode: "all" } } } }"#,
        );
        let finding = check(&sandboxed, &paths).expect("a finding");
        let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.path()).unwrap());
        let socket = format!("/run/user/{owner}/docker.sock");
        if std::path::Path::new(&socket).exists() {
            eprintln!("skipped the daemon half: {socket} exists on this host");
            return;
        }
        assert_eq!(
            (finding.check_id, finding.severity),
            ("sandbox.unreachable", Severity::Warn)
        );
        assert!(finding.detail.contains(&socket), "{}", finding.detail);
    }
}
