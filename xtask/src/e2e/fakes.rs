//! The agent's outside world for the suite: `clawfort-fakes` (the workspace's `fakes/` crate)
//! serving a model provider and Telegram's Bot API on the namespace side of the private
//! network for the whole run, so the booted appliance's agent has someone to talk to and the
//! agent probe can see what it said.
//!
//! The harness picks the secrets: a random API key that the model fake insists on and a random
//! bot token that the Telegram fake serves. They go into the fakes' script (mode 600, in the
//! run's work directory), which the agent probe reads; never into the testbed, a command line
//! or a log.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use xshell::{cmd, Shell};

use super::testbed::Fakes;
use crate::qemu::cleanup::{self, Registration};
use crate::qemu::netns::PrivateNetwork;

/// Ports of the fakes on their address. Any port works: the appliance's proxy lets the gateway
/// reach exactly the hosts and ports its config names.
const MODEL_PORT: u16 = 8081;
const TELEGRAM_PORT: u16 = 8082;
/// The static file server's (the apt repositories, `repository.rs`).
pub const FILES_PORT: u16 = 8083;
/// The model id the fake reports and the probe configures.
const MODEL: &str = "fake-model";
/// What the fake model answers every turn.
const ANSWER: &str = "Hello from the fake model: the e2e round trip works.";
/// The bot id the Telegram fake's `getMe` reports; the token starts with it, as real ones do.
const BOT_ID: &str = "4242";
/// Time the fakes get to listen after their start.
const START_LIMIT: Duration = Duration::from_secs(10);

/// The running fakes; dropping this stops them.
pub struct FakeServices {
    child: Child,
    registration: Option<Registration>,
    pub testbed: Fakes,
}

/// Builds the fakes binary for the host (debug profile: it serves a handful of requests) and
/// returns its path.
pub fn build(sh: &Shell) -> Result<PathBuf> {
    eprintln!("==> building the fakes (cargo build -p clawfort-fakes)");
    cmd!(
        sh,
        "cargo build --quiet --package clawfort-fakes --bin clawfort-fakes"
    )
    .run()?;
    let metadata = cmd!(sh, "cargo metadata --format-version 1 --no-deps")
        .quiet()
        .read()?;
    let metadata: serde_json::Value =
        serde_json::from_str(&metadata).context("cargo metadata printed invalid JSON")?;
    let binary = Path::new(
        metadata["target_directory"]
            .as_str()
            .context("cargo metadata has no target_directory")?,
    )
    .join("debug/clawfort-fakes");
    ensure!(
        binary.is_file(),
        "cargo built the fakes but {} does not exist",
        binary.display()
    );
    Ok(binary)
}

impl FakeServices {
    /// Starts `binary` inside `network` on `address`, with a fresh script in `work` and the
    /// file server on `work/apt`, and waits until the three servers listen.
    pub fn start(
        network: &PrivateNetwork,
        binary: &Path,
        address: Ipv4Addr,
        work: &Path,
    ) -> Result<FakeServices> {
        let testbed = Fakes {
            model: SocketAddrV4::new(address, MODEL_PORT),
            telegram: SocketAddrV4::new(address, TELEGRAM_PORT),
            files: SocketAddrV4::new(address, FILES_PORT),
            script: work.join("fakes-script.json"),
        };
        let files_root = work.join("apt");
        std::fs::create_dir_all(&files_root)?;
        write_script(&testbed.script)?;
        let log_path = work.join("fakes.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let program = binary.display().to_string();
        let mut command = network.command(&program);
        command
            .arg("--model")
            .arg(testbed.model.to_string())
            .arg("--telegram")
            .arg(testbed.telegram.to_string())
            .arg("--script")
            .arg(&testbed.script)
            .arg("--files")
            .arg(testbed.files.to_string())
            .arg("--files-root")
            .arg(&files_root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        eprintln!("$ {command:?}");
        let child = command.spawn().context("cannot start clawfort-fakes")?;
        let pid = child.id();
        let registration = cleanup::on_exit(format!("clawfort-fakes (pid {pid})"), move || {
            terminate(pid)
        });
        let mut fakes = FakeServices {
            child,
            registration: Some(registration),
            testbed,
        };
        fakes.wait_listening(&log_path)?;
        Ok(fakes)
    }

    /// Each server prints `listening: <kind> http://<addr>` once it accepts connections.
    fn wait_listening(&mut self, log_path: &Path) -> Result<()> {
        let wanted = [
            format!("listening: model http://{}", self.testbed.model),
            format!("listening: telegram http://{}", self.testbed.telegram),
            format!("listening: files http://{}", self.testbed.files),
        ];
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            if wanted.iter().all(|line| log.contains(line.as_str())) {
                eprintln!(
                    "==> fakes listening: model {}, Telegram {} (log: {})",
                    self.testbed.model,
                    self.testbed.telegram,
                    log_path.display()
                );
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "clawfort-fakes exited with {status} at start: {}",
                    log.trim()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "clawfort-fakes did not listen within {} s: {}",
                    START_LIMIT.as_secs(),
                    log.trim()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for FakeServices {
    fn drop(&mut self) {
        if let Some(registration) = self.registration.take() {
            // SIGTERM is the fakes' orderly stop; the registration's teardown sends it.
            drop(registration);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// SIGTERM to the process `ip netns exec` became (it execs the program, keeping the PID).
fn terminate(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// Writes the fakes' script with fresh secrets, mode 600.
fn write_script(path: &Path) -> Result<()> {
    let script = json!({
        "model": {"text": ANSWER, "model": MODEL, "apiKey": format!("sk-e2e-{}", random_hex(24)?)},
        "telegram": {"token": format!("{BOT_ID}:AA{}", random_hex(20)?)},
    });
    let _ = std::fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(serde_json::to_string_pretty(&script)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|err| anyhow::anyhow!("no OS randomness: {err}"))?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}
