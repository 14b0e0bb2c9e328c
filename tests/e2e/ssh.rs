//! SSH to the guests with the host's OpenSSH client: the admin session for checks from inside
//! (one multiplexed connection, so the firewall's per-source limit on new connections is never
//! hit) and one-shot client runs for the protocol probes from outside.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::exec::{self, shell_quote, Output};
use crate::testbed::{Guest, Testbed};

/// Time limit of one command run over the admin session unless a probe says otherwise.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// Client options every connection uses: this key only, no agent, no interaction, no host
/// config, the guest's host key pinned per guest on first use.
fn client_options(testbed: &Testbed, known_hosts: &std::path::Path) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        "ConnectTimeout=10",
        // A first-boot guest under TCG on a busy host can stall for tens of seconds. The admin
        // session must outlive that: once its master connection is gone every command opens a
        // new one, and the firewall's per-source limit on new SSH connections (which counts
        // SYN retransmits) then locks the admin address out for the rest of the run.
        "-o",
        "ServerAliveInterval=10",
        "-o",
        "ServerAliveCountMax=12",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        "-i".to_owned(),
        testbed.ssh_key.display().to_string(),
        "-o".to_owned(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
    ])
    .collect()
}

/// An open admin session to one guest.
pub struct Session {
    master: Child,
    control: PathBuf,
    options: Vec<String>,
    destination: String,
    pub guest: Guest,
}

impl Session {
    /// Connects as admin from the admin source address and keeps the connection as a control
    /// master for every later command.
    pub fn open(testbed: &Testbed, guest: &Guest) -> Result<Session> {
        let known_hosts = testbed.work_dir.join(format!("known_hosts-{}", guest.name));
        let control = testbed.work_dir.join(format!("ssh-{}.ctl", guest.name));
        let _ = std::fs::remove_file(&control);
        let mut options = client_options(testbed, &known_hosts);
        // The admin session's own chatter is noise; one-shot clients keep the default level,
        // because the probes read its messages ("Unable to negotiate", "Permission denied").
        options.extend(["-o".to_owned(), "LogLevel=ERROR".to_owned()]);
        let destination = format!("{}@{}", testbed.admin_user, guest.address);
        let master = Command::new("ip")
            .args(["netns", "exec", &testbed.netns, "ssh", "-M", "-N"])
            .args(["-S", &control.display().to_string()])
            .args(["-b", &testbed.sources.admin.to_string()])
            .args(&options)
            .arg(&destination)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start the admin SSH session")?;
        let mut session = Session {
            master,
            control,
            options,
            destination,
            guest: guest.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = session.master.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut pipe) = session.master.stderr.take() {
                    use std::io::Read;
                    let _ = pipe.read_to_string(&mut stderr);
                }
                bail!(
                    "admin SSH login to {} failed ({status}): {}",
                    guest.address,
                    exec::last_lines(&stderr, 3)
                );
            }
            if session.control.exists() {
                return Ok(session);
            }
            if Instant::now() > deadline {
                bail!("admin SSH login to {} took over 30 s", guest.address);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `script` in the admin's login shell on the guest.
    pub fn run_with(&self, script: &str, stdin: Option<&[u8]>, limit: Duration) -> Result<Output> {
        let control = self.control.display().to_string();
        let mut argv: Vec<&str> = vec!["ssh", "-S", &control, "-o", "ControlMaster=no"];
        argv.extend(self.options.iter().map(String::as_str));
        argv.extend([self.destination.as_str(), "--", script]);
        exec::run(None, &argv, stdin, limit)
    }

    pub fn run(&self, script: &str) -> Result<Output> {
        self.run_with(script, None, COMMAND_LIMIT)
    }

    /// Runs `script` as root through `sudo -n` (the admin has passwordless sudo).
    pub fn sudo(&self, script: &str) -> Result<Output> {
        self.sudo_with(script, COMMAND_LIMIT)
    }

    /// `sudo` with its own time limit, for commands that outlast [`COMMAND_LIMIT`].
    pub fn sudo_with(&self, script: &str, limit: Duration) -> Result<Output> {
        self.run_with(
            &format!("sudo -n sh -c {}", shell_quote(script)),
            None,
            limit,
        )
    }

    /// `run`, failing unless the command succeeded; returns its stdout.
    pub fn check(&self, script: &str) -> Result<String> {
        self.run(script)?
            .ok(&format!("`{script}` on {}", self.guest.name))
    }

    /// `sudo`, failing unless the command succeeded; returns its stdout.
    pub fn check_root(&self, script: &str) -> Result<String> {
        self.sudo(script)?
            .ok(&format!("`sudo {script}` on {}", self.guest.name))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.master.kill();
        let _ = self.master.wait();
        let _ = std::fs::remove_file(&self.control);
    }
}

/// A one-shot SSH client run from `source` inside the namespace (for probes from outside).
pub fn client(
    testbed: &Testbed,
    source: Ipv4Addr,
    destination: &str,
    extra: &[&str],
    limit: Duration,
) -> Result<Output> {
    let known_hosts = testbed.work_dir.join("known_hosts-probes");
    let options = client_options(testbed, &known_hosts);
    let source = source.to_string();
    let mut argv: Vec<&str> = vec!["ssh", "-b", &source];
    argv.extend(options.iter().map(String::as_str));
    argv.extend(extra);
    argv.extend([destination, "--", "true"]);
    exec::run(Some(&testbed.netns), &argv, None, limit)
}
