//! `clawfort logs --audit`: the commands the service user ran, from the kernel's audit log
//! rather than the gateway's own (which a gateway a prompt has taken over writes itself).
//!
//! auditd writes `/var/log/audit/audit.log` and rotates it to `audit.log.1`, `.2`... (older
//! the higher the number; `num_logs` in auditd.conf). The directory is root's, so this runs
//! under sudo; an unreadable log is an error naming who may read it.

pub mod cli;
pub mod commands;
pub mod record;

use std::io::{BufRead, BufReader, ErrorKind};
use std::path::{Path, PathBuf};

pub use commands::Command;
use record::Record;

/// Where auditd writes (auditd.conf `log_file`, Debian's default).
pub const AUDIT_LOG: &str = "/var/log/audit/audit.log";

/// How many rotated files are read at most: auditd.conf's `num_logs` is 5 on the appliance,
/// and its maximum is 999.
const MAX_ROTATED: u32 = 999;

/// The agent's commands in the log `current` and its rotated files, oldest first, with how
/// many lines were not audit records.
pub fn read_commands(current: &Path) -> anyhow::Result<(Vec<Command>, usize)> {
    let mut records = Vec::new();
    let mut damaged = 0;
    for file in files(current) {
        let reader = BufReader::new(open(&file)?);
        for line in reader.split(b'\n') {
            let line = line.map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            match Record::parse(&String::from_utf8_lossy(&line)) {
                Ok(record) => records.push(record),
                Err(_) if line.is_empty() => {}
                Err(_) => damaged += 1,
            }
        }
    }
    Ok((commands::commands(records), damaged))
}

/// The rotated files that exist (oldest first), then `current`.
fn files(current: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=MAX_ROTATED)
        .map(|n| PathBuf::from(format!("{}.{n}", current.display())))
        .take_while(|f| f.exists())
        .collect();
    files.reverse();
    files.push(current.to_owned());
    files
}

/// Opens one log file, with an error that says what to do.
fn open(file: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::open(file).map_err(|e| match e.kind() {
        ErrorKind::PermissionDenied => anyhow::anyhow!(
            "cannot read the audit log {}: permission denied. auditd keeps it readable by \
             root only (and its log_group, `adm` on Debian); run `sudo clawfort logs --audit`.",
            file.display()
        ),
        ErrorKind::NotFound => anyhow::anyhow!(
            "there is no audit log at {}: auditd is not installed or not running \
             (`systemctl status auditd`), or it writes elsewhere (`log_file` in \
             /etc/audit/auditd.conf).",
            file.display()
        ),
        _ => anyhow::anyhow!("cannot read the audit log {}: {e}", file.display()),
    })
}
