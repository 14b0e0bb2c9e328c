//! The gateway's running marker, `~/.openclaw/gateway.running`: made durable at start,
//! removed on a clean stop. Found at start, it means the previous run ended without
//! stopping (a panic, an OOM kill, a power cut), and that is a security event: something
//! may have killed it on purpose.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("gateway.running")
}

/// Marks the gateway as running; whether the previous run left its marker (crashed). The
/// marker is in the page cache when this returns, so a kill from then on is seen at the
/// next start; [`sync`] makes it survive a power cut too.
pub fn begin(state_dir: &Path) -> std::io::Result<bool> {
    let marker = path(state_dir);
    let crashed = marker.exists();
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&marker)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(crashed)
}

/// Makes the marker [`begin`] wrote durable (off the start's path: two disk flushes).
pub fn sync(state_dir: &Path) -> std::io::Result<()> {
    File::open(path(state_dir))?.sync_all()?;
    File::open(state_dir)?.sync_all()
}

/// Marks a clean stop.
pub fn end(state_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path(state_dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_after_a_clean_stop_is_no_crash_and_one_without_is() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!begin(dir.path()).unwrap(), "the first start");
        sync(dir.path()).unwrap();
        end(dir.path()).unwrap();
        assert!(!begin(dir.path()).unwrap(), "after a clean stop");
        // Killed: no `end`.
        assert!(begin(dir.path()).unwrap(), "after a crash");
        end(dir.path()).unwrap();
        end(dir.path()).unwrap();
    }
}
