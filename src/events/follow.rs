//! The gateway following root's host feed ([`super::HOST_FEED`]), which it may read but
//! not write.
//!
//! Its place is a [`Position`] (the file's device and inode, and the offset of the first
//! line not yet taken), kept in the state directory (`events-host.offset`, replaced
//! atomically) once the owner got the message the events went into, so a restart neither
//! loses nor sends again what it had read. Only lines ended by a newline are taken: a line
//! being written, or cut by a power loss, waits (and a cut one, ended by the next append,
//! is skipped as damaged).
//!
//! - Rotation (the feed renamed to `<feed>.1` and a new one begun): the rest of the old file
//!   is read from `<feed>.1` first, when that is still the file the position names.
//! - Truncation (the file shorter than the position): read again from its start.
//! - A position that does not parse is a warning and a start from the beginning: every
//!   event of the feed then reaches the owner once more, batched into one message.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::feed::{parse_lines, rotated, Contents};
use super::Source;
use crate::paths::Paths;

/// The most read from the feed in one poll; the rest waits for the next.
pub const READ_CAP: u64 = 256 << 10;

/// Where the follower is in the host feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
}

/// `~/.openclaw/events-host.offset`: the committed [`Position`].
pub fn offset_path(paths: &Paths) -> PathBuf {
    paths.state_dir.join("events-host.offset")
}

/// The committed position's file.
#[derive(Debug, Clone)]
pub struct OffsetFile(pub PathBuf);

impl OffsetFile {
    /// The committed position; `None` when there is none yet, or it does not parse (said
    /// in the log).
    pub fn load(&self) -> Option<Position> {
        let text = match std::fs::read(&self.0) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(
                    "cannot read the host events position {}: {e}; reading the host feed from \
                     its start",
                    self.0.display()
                );
                return None;
            }
        };
        serde_json::from_slice(&text)
            .map_err(|e| {
                tracing::warn!(
                    "the host events position {} does not parse ({e}); reading the host feed \
                     from its start",
                    self.0.display()
                )
            })
            .ok()
    }

    /// Durably records `position` (atomic replace).
    pub fn commit(&self, position: Position) -> std::io::Result<()> {
        let text = serde_json::to_vec(&position)?;
        crate::pairing::atomic::write_atomic(&self.0, &text)
    }
}

/// Reads new host events, from where the last commit left off.
#[derive(Debug)]
pub struct Follower {
    feed: PathBuf,
    /// How far this process has read (ahead of the committed position).
    position: Option<Position>,
}

impl Follower {
    pub fn new(feed: PathBuf, committed: Option<Position>) -> Self {
        Self {
            feed,
            position: committed,
        }
    }

    /// The complete lines added since the last poll (at most [`READ_CAP`] bytes of them),
    /// and the position after them. A feed that does not exist yet has none.
    pub fn poll(&mut self) -> std::io::Result<(Contents, Option<Position>)> {
        let mut out = Contents::default();
        let mut file = match File::open(&self.feed) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((out, self.position)),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let (dev, ino, len) = (meta.dev(), meta.ino(), meta.len());
        let offset = match self.position {
            Some(p) if (p.dev, p.ino) == (dev, ino) && p.offset <= len => p.offset,
            Some(p) if (p.dev, p.ino) == (dev, ino) => {
                tracing::warn!(
                    "the host feed {} was truncated ({len} bytes, read up to {}); reading it \
                     from its start",
                    self.feed.display(),
                    p.offset
                );
                0
            }
            Some(p) => {
                self.finish_rotated(p, &mut out)?;
                0
            }
            None => 0,
        };
        let taken = read_lines(&mut file, offset, &mut out)?;
        self.position = Some(Position {
            dev,
            ino,
            offset: offset + taken,
        });
        for record in &mut out.records {
            record.source = Source::Host;
        }
        Ok((out, self.position))
    }

    /// The rest of the file `position` names, when it is now `<feed>.1`.
    fn finish_rotated(&self, position: Position, out: &mut Contents) -> std::io::Result<()> {
        let old = rotated(&self.feed);
        let Ok(mut file) = File::open(&old) else {
            return Ok(());
        };
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) == (position.dev, position.ino) && position.offset <= meta.len()
        {
            read_lines(&mut file, position.offset, out)?;
        }
        Ok(())
    }
}

/// Parses the newline-ended lines from `offset` (at most [`READ_CAP`] bytes); how many
/// bytes they took.
fn read_lines(file: &mut File, offset: u64, out: &mut Contents) -> std::io::Result<u64> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.take(READ_CAP).read_to_end(&mut buf)?;
    let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
        return Ok(0);
    };
    parse_lines(&buf[..=end], out);
    Ok(end as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::feed::append;
    use crate::events::{Event, Record};
    use std::io::Write;

    fn ban(n: u8) -> Record {
        Record::now(
            Source::Host,
            Event::Fail2banBan {
                jail: "sshd".into(),
                ip: std::net::IpAddr::from([192, 0, 2, n]),
            },
        )
    }

    fn ips(c: &Contents) -> Vec<u8> {
        c.records
            .iter()
            .map(|r| match &r.event {
                Event::Fail2banBan {
                    ip: std::net::IpAddr::V4(ip),
                    ..
                } => ip.octets()[3],
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn a_restart_from_the_committed_position_neither_loses_nor_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let feed = dir.path().join("host.jsonl");
        let offsets = OffsetFile(dir.path().join("events-host.offset"));
        append(&feed, &[ban(1), ban(2)], 0o644).unwrap();
        let mut follower = Follower::new(feed.clone(), offsets.load());
        let (first, position) = follower.poll().unwrap();
        assert_eq!(ips(&first), [1, 2]);
        offsets.commit(position.unwrap()).unwrap();
        append(&feed, &[ban(3)], 0o644).unwrap();
        // The gateway stops before it sent ban 3: nothing committed past ban 2.
        let (_, _) = follower.poll().unwrap();
        drop(follower);
        let mut restarted = Follower::new(feed.clone(), offsets.load());
        let (again, _) = restarted.poll().unwrap();
        assert_eq!(
            ips(&again),
            [3],
            "the uncommitted event once, nothing before it"
        );
        let (none, _) = restarted.poll().unwrap();
        assert!(none.records.is_empty());
    }

    #[test]
    fn a_line_being_written_waits_until_it_is_ended() {
        let dir = tempfile::tempdir().unwrap();
        let feed = dir.path().join("host.jsonl");
        append(&feed, &[ban(1)], 0o644).unwrap();
        let line = serde_json::to_string(&ban(2)).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&feed)
            .unwrap();
        file.write_all(&line.as_bytes()[..10]).unwrap();
        let mut follower = Follower::new(feed.clone(), None);
        let (first, _) = follower.poll().unwrap();
        assert_eq!((ips(&first), first.damaged), (vec![1], 0));
        // A power cut: the next append ends the cut line, which is then skipped.
        append(&feed, &[ban(3)], 0o644).unwrap();
        let (next, _) = follower.poll().unwrap();
        assert_eq!((ips(&next), next.damaged), (vec![3], 1));
    }

    #[test]
    fn a_truncated_feed_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let feed = dir.path().join("host.jsonl");
        append(&feed, &[ban(1), ban(2), ban(3)], 0o644).unwrap();
        let mut follower = Follower::new(feed.clone(), None);
        assert_eq!(ips(&follower.poll().unwrap().0), [1, 2, 3]);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&feed)
            .unwrap();
        append(&feed, &[ban(4)], 0o644).unwrap();
        assert_eq!(ips(&follower.poll().unwrap().0), [4]);
    }

    #[test]
    fn a_rotated_feed_is_finished_before_the_new_one_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let feed = dir.path().join("host.jsonl");
        append(&feed, &[ban(1)], 0o644).unwrap();
        let mut follower = Follower::new(feed.clone(), None);
        assert_eq!(ips(&follower.poll().unwrap().0), [1]);
        append(&feed, &[ban(2)], 0o644).unwrap();
        std::fs::rename(&feed, rotated(&feed)).unwrap();
        append(&feed, &[ban(3)], 0o644).unwrap();
        assert_eq!(ips(&follower.poll().unwrap().0), [2, 3]);
    }
}
