//! Where log lines go, and `clawfort logs`.
//!
//! Under systemd (`JOURNAL_STREAM` set) the gateway logs to the journal through
//! tracing-journald, so `journalctl -u clawfort` and fail2ban's systemd backend see each
//! line as one entry. Otherwise it logs to stderr *and* appends to
//! `~/.openclaw/logs/gateway.log` (rotated once at 10 MiB on start), which
//! `clawfort logs` reads when there is no `clawfort.service`.
//!
//! Every authentication failure is exactly one line containing `auth failure from <ip>`.

use std::fs::OpenOptions;
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tracing::Level;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::prelude::*;

use crate::paths::Paths;

/// The systemd unit the appliance runs the gateway as.
pub const UNIT: &str = "clawfort.service";
const ROTATE_AT: u64 = 10 * 1024 * 1024;

/// Logging for CLI commands: warnings and errors to stderr.
pub fn init_cli() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(Level::WARN)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}

/// Logging for the gateway (see the module docs).
pub fn init_gateway(paths: &Paths) {
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(journald.with_filter(tracing_subscriber::filter::LevelFilter::INFO))
                .try_init();
            return;
        }
    }
    let stderr = std::io::stderr.with_max_level(Level::INFO);
    let fmt = tracing_subscriber::fmt()
        .with_max_level(Level::INFO)
        .with_target(false)
        .with_ansi(false);
    match open_log_file(&paths.log_file()) {
        Ok(file) => {
            let file = std::sync::Arc::new(file);
            let _ = fmt.with_writer(stderr.and(file)).try_init();
        }
        Err(e) => {
            let _ = fmt.with_writer(stderr).try_init();
            tracing::warn!(
                "cannot open the log file {}: {e}; logging to stderr only",
                paths.log_file().display()
            );
        }
    }
}

fn open_log_file(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        crate::pairing::ensure_private_dir(dir)?;
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() > ROTATE_AT) {
        std::fs::rename(path, path.with_extension("log.1"))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Where `clawfort logs` reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogSource {
    /// The journal if systemd knows `clawfort.service`, else the log file.
    Auto,
    Journal,
    File,
}

/// `clawfort logs`.
pub fn show(paths: &Paths, source: LogSource, tail: usize, follow: bool) -> anyhow::Result<()> {
    let use_journal = match source {
        LogSource::Journal => true,
        LogSource::File => false,
        LogSource::Auto => unit_is_known(),
    };
    if use_journal {
        let mut cmd = Command::new("journalctl");
        cmd.args(["--unit", UNIT, "--no-pager", "--lines", &tail.to_string()]);
        if follow {
            cmd.arg("--follow");
        }
        let status = cmd.status().map_err(|e| {
            anyhow::anyhow!("cannot run `journalctl --unit {UNIT}`: {e}; try --source file")
        })?;
        anyhow::ensure!(
            status.success(),
            "`journalctl --unit {UNIT}` failed ({status}); reading the journal may need the \
             systemd-journal or adm group"
        );
        return Ok(());
    }
    show_file(&paths.log_file(), tail, follow)
}

/// Whether systemd has a `clawfort.service` unit (installed, whatever its state).
fn unit_is_known() -> bool {
    Command::new("systemctl")
        .args(["show", "--property=LoadState", "--value", UNIT])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "loaded")
}

fn show_file(path: &Path, tail: usize, follow: bool) -> anyhow::Result<()> {
    let mut file = std::fs::File::open(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the log file {}: {e} (has the gateway run with this state dir?)",
            path.display()
        )
    })?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
    let mut out = std::io::stdout().lock();
    for line in &lines[lines.len().saturating_sub(tail)..] {
        out.write_all(line)?;
    }
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let mut pos = text.len() as u64;
    let mut reader = std::io::BufReader::new(file);
    loop {
        let len = std::fs::metadata(path)?.len();
        if len < pos {
            // Rotated or truncated: start over from the new file.
            reader = std::io::BufReader::new(std::fs::File::open(path)?);
            pos = 0;
        }
        reader.seek(SeekFrom::Start(pos))?;
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            pos += line.len() as u64;
            out.write_all(line.as_bytes())?;
            line.clear();
        }
        out.flush()?;
        std::thread::sleep(Duration::from_millis(250));
    }
}
