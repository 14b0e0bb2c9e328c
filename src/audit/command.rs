//! Running host tools for the deep audit: located on PATH or in the sbin directories (the
//! service user's PATH often lacks them), with a time limit so a stuck tool cannot hang
//! the audit.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A bound against a hung tool, not a speed target: `fail2ban-client` (Python) took over
/// 10 s to start on an emulated guest under load, which turned its check into "cannot check".
const TIME_LIMIT: Duration = Duration::from_secs(30);

/// What running a tool gave.
pub enum Outcome {
    /// The tool is not installed.
    Missing,
    /// It ran; `ok` is its exit status being zero.
    Ran {
        ok: bool,
        stdout: String,
        stderr: String,
    },
    /// It could not be started or did not finish in time.
    Failed(String),
}

/// The full path of `tool`, searching PATH, then /usr/sbin and /sbin.
pub fn locate(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

pub fn run(tool: &str, args: &[&str]) -> Outcome {
    run_within(tool, args, TIME_LIMIT)
}

/// `run` with another time limit (`systemctl restart` waits for a service to stop).
pub fn run_within(tool: &str, args: &[&str], limit: Duration) -> Outcome {
    let Some(path) = locate(tool) else {
        return Outcome::Missing;
    };
    let mut child = match Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Outcome::Failed(format!("cannot start {}: {e}", path.display())),
    };
    // Read both pipes on threads so a large output cannot block the child.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Outcome::Failed(format!(
                    "`{tool} {}` did not finish within {} s",
                    args.join(" "),
                    limit.as_secs()
                ));
            }
            Err(e) => return Outcome::Failed(format!("waiting for {tool}: {e}")),
        }
    };
    Outcome::Ran {
        ok: status.success(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
