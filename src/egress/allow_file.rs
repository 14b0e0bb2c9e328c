//! The allow list as the appliance's proxy reads it: a small JSON file only root can write.
//!
//! `openclaw.json` belongs to the service user, that is, to the gateway the proxy confines:
//! had the proxy read its destinations from there, a prompt-injected gateway could add a
//! provider with an attacker's `baseUrl` and be let through at the proxy's next start. So the
//! proxy reads this file instead (`clawfort egress --allow-file`), which root writes from the
//! config after looking at it (`clawfort setup`, `clawfort egress sync`). The gateway can
//! read it, never change it.
//!
//! The format, version 1 (unknown keys are refused, so a typo cannot go unnoticed):
//!
//! ```json
//! {
//!   "version": 1,
//!   "allow": ["api.anthropic.com:443", "api.telegram.org:443"],
//!   "source": "clawfort egress sync, from /home/openclaw/.openclaw/openclaw.json"
//! }
//! ```
//!
//! `allow` holds `host:port` pairs as a CONNECT request names them (IPv6 in brackets);
//! `source` says who wrote the file from what, for the person reading it, and is optional.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, CWD};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use super::allow::{AllowList, Target};
use crate::config::ConfigError;

/// Where the appliance keeps the file (named by `clawfort-egress.service`'s `--allow-file`).
pub const DEFAULT_PATH: &str = "/etc/clawfort/egress-allow.json";
/// The format this code reads and writes.
pub const VERSION: u32 = 1;
/// A longer file is not an allow list someone wrote.
const MAX_BYTES: u64 = 1 << 20;
/// How to make the file right, in every error about it.
const FIX: &str = "rewrite it from openclaw.json with `sudo clawfort egress sync`";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u32,
    allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
}

/// Reads the allow file at `path`: `Ok(None)` when there is none. A symbolic link, a file
/// its group or others may write, and anything but a valid version-1 document are errors
/// naming the file, what is wrong and how to fix it.
pub fn read(path: &Path) -> Result<Option<AllowList>, ConfigError> {
    let error = |message: String| ConfigError::File {
        file: path.to_path_buf(),
        message,
    };
    // O_NONBLOCK: a FIFO planted here must not hang the proxy's start.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(CWD, path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => {
            return Err(error(format!(
                "is a symbolic link; the allow list is read only from a file of its own: \
                 remove the link and {FIX}"
            )))
        }
        Err(e) => return Err(error(format!("cannot open the allow file: {e}"))),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| error(format!("cannot stat it: {e}")))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(error(format!("is not a regular file; {FIX}")));
    }
    let mode = stat.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(error(format!(
            "may be written by its group or by anyone (mode {mode:o}), so not only root decides \
             where the agent may connect: `sudo chmod 644 {}`, then check its content or {FIX}",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    File::from(fd)
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| error(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(error(format!(
            "is larger than {MAX_BYTES} bytes, which no allow list is; {FIX}"
        )));
    }
    parse(&bytes).map(Some).map_err(error)
}

/// The allow list of a file's content; the error says what is wrong (every bad entry).
pub fn parse(bytes: &[u8]) -> Result<AllowList, String> {
    let document: Document = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "not an allow file ({e}); it is JSON of the form \
             {{\"version\": {VERSION}, \"allow\": [\"host:port\", ...]}}: {FIX}"
        )
    })?;
    if document.version != VERSION {
        return Err(format!(
            "version {} is not one this clawfort reads (it reads version {VERSION}); {FIX}",
            document.version
        ));
    }
    let mut targets = Vec::new();
    let mut problems = Vec::new();
    for (i, entry) in document.allow.iter().enumerate() {
        // Written by root, so quoting it is safe (a CONNECT target is never quoted).
        match Target::of_authority(entry) {
            Ok(target) => targets.push(target),
            Err(why) => problems.push(format!("allow[{i}] `{entry}`: {why}")),
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "{}; entries are host:port, e.g. \"api.anthropic.com:443\" or \"[::1]:11434\"; {FIX}",
            problems.join("; ")
        ));
    }
    Ok(targets.into_iter().collect())
}

/// The file's content for `list`; `source` says who wrote it from what.
pub fn render(list: &AllowList, source: &str) -> String {
    let document = Document {
        version: VERSION,
        allow: list.iter().map(Target::to_string).collect(),
        source: Some(source.to_owned()),
    };
    // Serialising strings and numbers cannot fail.
    let text = serde_json::to_string_pretty(&document).unwrap_or_default();
    format!("{text}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn list(names: &[&str]) -> AllowList {
        names
            .iter()
            .map(|n| Target::of_authority(n).unwrap())
            .collect()
    }

    #[test]
    fn render_then_parse_is_the_same_list() {
        let allow = list(&["api.anthropic.com:443", "[::1]:11434", "10.0.0.9:8082"]);
        let text = render(
            &allow,
            "clawfort setup, from /home/openclaw/.openclaw/openclaw.json",
        );
        assert!(
            text.starts_with("{\n  \"version\": 1,\n  \"allow\": [\n"),
            "{text}"
        );
        assert_eq!(parse(text.as_bytes()).unwrap(), allow);
        // Upper case and duplicates as a person might write them.
        let hand =
            br#"{"version": 1, "allow": ["API.Anthropic.com:443", "api.anthropic.com:443"]}"#;
        assert_eq!(parse(hand).unwrap(), list(&["api.anthropic.com:443"]));
        assert!(parse(br#"{"version":1,"allow":[]}"#).unwrap().is_empty());
    }

    #[test]
    fn every_mistake_is_named_with_the_fix() {
        for (text, wanted) in [
            ("", "not an allow file"),
            ("[\"a:1\"]", "not an allow file"),
            (r#"{"allow": ["a.example:443"]}"#, "missing field `version`"),
            (r#"{"version": 1}"#, "missing field `allow`"),
            (r#"{"version": 2, "allow": []}"#, "version 2 is not one"),
            (
                r#"{"version": 1, "allow": [], "alow": ["evil.example:443"]}"#,
                "unknown field `alow`",
            ),
            (
                r#"{"version": 1, "allow": ["https://api.example/", "ok.example:443", "x.example"]}"#,
                "allow[0] `https://api.example/`",
            ),
            (
                r#"{"version": 1, "allow": ["ok.example:443", "x.example"]}"#,
                "allow[1] `x.example`: the target `x.example` has no port",
            ),
        ] {
            let err = parse(text.as_bytes()).unwrap_err();
            assert!(err.contains(wanted), "{text}: {err}");
            assert!(err.contains("sudo clawfort egress sync"), "{text}: {err}");
        }
    }

    #[test]
    fn missing_linked_or_writable_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress-allow.json");
        assert_eq!(read(&path).unwrap(), None);

        std::fs::write(&path, render(&list(&["a.example:443"]), "test")).unwrap();
        for mode in [0o644, 0o600, 0o444] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(read(&path).unwrap(), Some(list(&["a.example:443"])));
        }
        for mode in [0o664, 0o646, 0o666] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read(&path).unwrap_err().to_string();
            assert!(
                err.starts_with(&path.display().to_string())
                    && err.contains(&format!("(mode {mode:o})"))
                    && err.contains("sudo chmod 644"),
                "{err}"
            );
        }

        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = read(&link).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");

        let fifo = dir.path().join("fifo.json");
        rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
        let err = read(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");

        std::fs::write(&path, "{").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: not an allow file", path.display())),
            "{err}"
        );
    }
}
