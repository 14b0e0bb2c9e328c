//! A feed file: one JSON [`Record`] a line, appended under an exclusive `flock` (the
//! gateway's writer task and, on the host feed, concurrent fail2ban actions), `fsync`ed
//! before [`append`] returns, so an event reported as written survives a crash or a power
//! cut.
//!
//! - Bounded: past [`ROTATE_AT`] bytes the file is renamed to `<name>.1` (replacing the
//!   previous one) before the next append, so a feed never takes more than twice that.
//!   [`read`] reads `<name>.1` then `<name>`; [`super::follow`] finishes a rotated file
//!   before it starts the new one.
//! - Torn lines: a power cut can leave the last line cut short. Before appending, the writer
//!   ends an unterminated last line with a newline, so the cut line is never glued to the
//!   next record; [`read`] skips a line that does not parse and counts it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Record;

/// The size at which a feed is rotated (several thousand events).
pub const ROTATE_AT: u64 = 1 << 20;

/// `<feed>.1`: the feed's previous file.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Appends `records` to the feed at `path` (created with `mode`), in one write, and syncs
/// it. Rotates first when the file has reached [`ROTATE_AT`].
pub fn append(path: &Path, records: &[Record], mode: u32) -> std::io::Result<()> {
    append_rotating_at(path, records, mode, ROTATE_AT)
}

fn append_rotating_at(
    path: &Path,
    records: &[Record],
    mode: u32,
    rotate_at: u64,
) -> std::io::Result<()> {
    let mut text = Vec::new();
    for record in records {
        serde_json::to_writer(&mut text, record)?;
        text.push(b'\n');
    }
    let mut file = open(path, mode)?;
    file.lock()?;
    // Another writer may have rotated the file between our open and our lock.
    if !same_file(&file, path)? {
        file = open(path, mode)?;
        file.lock()?;
    }
    let mut len = file.metadata()?.len();
    if len >= rotate_at {
        std::fs::rename(path, rotated(path))?;
        let fresh = open(path, mode)?;
        fresh.lock()?;
        file = fresh;
        len = 0;
    }
    if len > 0 && !ends_with_newline(&mut file, len)? {
        text.insert(0, b'\n');
    }
    file.write_all(&text)?;
    file.sync_data()?;
    if len == 0 {
        // A new file: its directory entry must be durable too.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

fn open(path: &Path, mode: u32) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .read(true)
        .create(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    // `mode` is filtered by the umask at creation (027 on the appliance); a feed others must
    // read gets its bits exactly.
    if file.metadata()?.permissions().mode() & 0o777 != mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok(file)
}

fn same_file(file: &File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (open, named) = (file.metadata()?, std::fs::symlink_metadata(path));
    Ok(named.is_ok_and(|n| n.dev() == open.dev() && n.ino() == open.ino()))
}

fn ends_with_newline(file: &mut File, len: u64) -> std::io::Result<bool> {
    let mut last = [0u8];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct Contents {
    pub records: Vec<Record>,
    /// Lines that did not parse (cut by a power loss, or written by something else).
    pub damaged: usize,
}

/// The records of the feed at `path` (its rotated file first), oldest first. A feed that
/// does not exist yet is empty.
pub fn read(path: &Path) -> std::io::Result<Contents> {
    let mut out = Contents::default();
    for file in [rotated(path), path.to_path_buf()] {
        let text = match std::fs::read(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        parse_lines(&text, &mut out);
    }
    Ok(out)
}

/// Parses every line of `text` (a last line without its newline too: `read` shows what is
/// there; the follower only takes terminated lines).
pub fn parse_lines(text: &[u8], out: &mut Contents) {
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Record>(line) {
            Ok(record) => out.records.push(record),
            Err(_) => out.damaged += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Source};

    fn record(n: u64) -> Record {
        Record::now(
            Source::Gateway,
            Event::Integrity {
                added: n,
                removed: 0,
                changed: 0,
            },
        )
    }

    fn added(read: &Contents) -> Vec<u64> {
        read.records
            .iter()
            .map(|r| match r.event {
                Event::Integrity { added, .. } => added,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_never_glued_to_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        append(&path, &[record(1), record(2)], 0o600).unwrap();
        // A power cut in the middle of the third line.
        let line = serde_json::to_string(&record(3)).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&line.as_bytes()[..line.len() / 2]).unwrap();
        let read_now = read(&path).unwrap();
        assert_eq!((added(&read_now), read_now.damaged), (vec![1, 2], 1));
        append(&path, &[record(4)], 0o600).unwrap();
        let after = read(&path).unwrap();
        assert_eq!((added(&after), after.damaged), (vec![1, 2, 4], 1));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_full_feed_is_rotated_and_read_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        for n in 0..5 {
            append_rotating_at(&path, &[record(n)], 0o644, 200).unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() < 400);
        assert!(rotated(&path).exists());
        let all = added(&read(&path).unwrap());
        assert_eq!(all.last(), Some(&4));
        assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
        assert!(
            all.len() < 5,
            "the oldest went with the second rotation: {all:?}"
        );
    }

    #[test]
    fn a_feed_that_does_not_exist_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let read = read(&dir.path().join("none.jsonl")).unwrap();
        assert!(read.records.is_empty());
    }
}
