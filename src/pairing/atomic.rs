//! Crash-safe file updates: an exclusive lock around read-modify-write, and atomic replace.
//!
//! The CLI and the gateway are separate processes that both change the pairing files, so
//! every change runs under `flock` on a per-channel lock file (the lock is released by the
//! kernel when a process dies, so a crash never leaves it held). A file is replaced by
//! writing a temporary file in the same directory, `fsync`ing it, renaming it over the old
//! one and `fsync`ing the directory: a reader or a crash sees the old or the new content,
//! never a torn one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Holds an exclusive `flock` until dropped.
pub struct LockGuard {
    _file: File,
}

/// Takes the exclusive lock on `path`, creating the file (mode 600) if needed. Blocks until
/// any other holder, in this or another process, lets go.
pub fn lock(path: &Path) -> std::io::Result<LockGuard> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    file.lock()?;
    Ok(LockGuard { _file: file })
}

/// Creates `dir` (and parents) with mode 700 when missing: it holds credentials.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The file a temporary file of `write_atomic` was going to replace: `.<target>.<pid>.<n>.tmp`
/// gives `<target>`; any other name gives `None`.
pub fn temp_target(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut parts = inner.rsplitn(3, '.');
    let counter = parts.next()?;
    let pid = parts.next()?;
    let target = parts.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(counter) && digits(pid) && !target.is_empty()).then_some(target)
}

/// Atomically replaces `path` with `contents` (mode 600), durable once this returns.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::temp_target;

    #[test]
    fn temp_names_are_recognised_exactly() {
        assert_eq!(
            temp_target(".tg-pairing.json.123.4.tmp"),
            Some("tg-pairing.json")
        );
        for other in [
            "tg-pairing.json",
            ".tg-pairing.json.tmp",
            ".tg-pairing.json.x.4.tmp",
            ".tg-pairing.json.1..tmp",
            "..1.2.tmp",
            "tg.lock",
        ] {
            assert_eq!(temp_target(other), None, "{other}");
        }
    }
}
