//! The gateway's running marker, `~/.openclaw/gateway.running`: made durable at start,
//! removed on a clean stop. Found at start, it means the previous run ended without
//! stopping (a panic, an OOM kill, a power cut), and that is a security event: something
//! may have killed it on purpose.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The marker's file name inside the state directory.
pub const FILE_NAME: &str = "gateway.running";

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// The process id in the marker when that process still exists: a gateway is running on
/// this state directory. A marker left by a crash names a dead process (or, rarely, a
/// reused id: then the caller's message names the marker to remove). Works for another
/// user's gateway too, and with `/proc` mounted `hidepid`: the signal-0 probe answers
/// "not permitted" for a live process it may not signal.
pub fn live_pid(state_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path(state_dir)).ok()?;
    let pid = text.trim().parse::<i32>().ok()?;
    let pid = rustix::process::Pid::from_raw(pid)?;
    match rustix::process::test_kill_process(pid) {
        Ok(()) | Err(rustix::io::Errno::PERM) => u32::try_from(pid.as_raw_nonzero().get()).ok(),
        Err(_) => None,
    }
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

    #[test]
    fn a_marker_names_a_running_gateway_only_while_its_process_lives() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(live_pid(dir.path()), None, "no marker");
        begin(dir.path()).unwrap();
        assert_eq!(live_pid(dir.path()), Some(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::write(path(dir.path()), format!("{dead}\n")).unwrap();
        assert_eq!(live_pid(dir.path()), None, "a crashed gateway's marker");
    }
}
