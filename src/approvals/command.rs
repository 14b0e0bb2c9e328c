//! Which shell commands an allowlist entry can match, and how.
//!
//! `exec` runs `/bin/sh -c <command>`, so a command string is a shell program: `ls; rm -rf ~`
//! starts with `ls` but is not `ls`. clawfort therefore lets the allowlist judge only a
//! *simple* command: words separated by spaces, each made of letters, digits and
//! `_ . / , : = + @ % -` only. Anything else (`; | & $ \` < > ( ) { } [ ] * ? ~ ! # ' "`,
//! backslashes, tabs, newlines, a leading `NAME=value`) can chain, substitute, redirect or
//! expand, and is an allowlist miss: it runs only when an approver allows that exact text.
//!
//! The first word is the executable. A word with a `/` is a path (relative to the workdir);
//! a bare name is looked up in the command's `PATH` ([`crate::confine::PATH`]).
//! An entry's `pattern` is OpenClaw's: a glob with a `/` (or a leading `~`) matches the
//! resolved path (as found in `PATH`, or with symlinks resolved); a bare glob matches only
//! a bare name, so `rg` allows `rg` but not `./rg`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The `argPattern` prefix of clawfort's "always" entries: a SHA-256 over the workdir and the
/// exact command text, so the entry allows that command in that directory and nothing else.
pub const EXACT_PREFIX: &str = "sha256:clawfort-cwd-command:v1:";

/// A command the allowlist may judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simple<'a> {
    /// The executable as written.
    pub program: &'a str,
    pub args: Vec<&'a str>,
}

/// `command` as a [`Simple`] command, or `None` when the shell could read it as more.
pub fn simple(command: &str) -> Option<Simple<'_>> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_./,:=+@%-".contains(c);
    if !command.chars().all(|c| c == ' ' || safe(c)) {
        return None;
    }
    let mut words = command.split(' ').filter(|w| !w.is_empty());
    let program = words.next()?;
    // `NAME=value cmd` sets a variable for `cmd`; `-x` is no command name.
    if program.contains('=') || program.starts_with('-') {
        return None;
    }
    Some(Simple {
        program,
        args: words.collect(),
    })
}

/// Where `program` is: the `PATH` entry or workdir-relative path, and its real path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub found: PathBuf,
    pub real: PathBuf,
}

/// Resolves the executable of a simple command; `None` when no such file exists (a shell
/// builtin such as `cd`, or a typo): then only a bare-name pattern can match it.
pub fn resolve(program: &str, workdir: &Path) -> Option<Resolved> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![workdir.join(program)]
    } else {
        crate::confine::PATH
            .split(':')
            .map(|dir| Path::new(dir).join(program))
            .collect()
    };
    candidates.into_iter().find_map(|found| {
        let real = found.canonicalize().ok()?;
        real.is_file().then_some(Resolved { found, real })
    })
}

/// Whether `pattern` (an allowlist entry's glob) matches the executable.
pub fn pattern_matches(
    pattern: &str,
    simple: &Simple,
    resolved: Option<&Resolved>,
    home: Option<&Path>,
) -> bool {
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return false;
    }
    let is_path = pattern.contains('/') || pattern.starts_with('~');
    if !is_path {
        return !simple.program.contains('/') && glob(pattern, simple.program);
    }
    let pattern = match (pattern.strip_prefix('~'), home) {
        (Some(rest), Some(home)) => format!("{}{rest}", home.display()),
        (Some(_), None) => return false,
        (None, _) => pattern.to_owned(),
    };
    resolved.is_some_and(|r| {
        [&r.found, &r.real]
            .iter()
            .any(|p| p.to_str().is_some_and(|p| glob(&pattern, p)))
    })
}

/// Whether an entry's `argPattern` allows the arguments: clawfort's exact form binds the
/// command text and workdir; OpenClaw's other generated (hashed) forms cannot be checked
/// here and never match; anything else is a regular expression over the arguments joined
/// by single spaces (OpenClaw's rule for hand-written entries).
pub fn arg_pattern_matches(
    arg_pattern: &str,
    simple: &Simple,
    command: &str,
    workdir: &Path,
) -> bool {
    if let Some(digest) = arg_pattern.strip_prefix(EXACT_PREFIX) {
        return digest.eq_ignore_ascii_case(&exact_digest(command, workdir));
    }
    if arg_pattern.starts_with("sha256:") {
        return false;
    }
    match regex::Regex::new(arg_pattern) {
        Ok(re) => re.is_match(&simple.args.join(" ")),
        Err(e) => {
            tracing::warn!("exec-approvals.json: argPattern `{arg_pattern}` is not a valid regular expression ({e}); the entry does not match");
            false
        }
    }
}

/// The `argPattern` of an "always" entry for `command` run in `workdir`.
pub fn exact_arg_pattern(command: &str, workdir: &Path) -> String {
    format!("{EXACT_PREFIX}{}", exact_digest(command, workdir))
}

fn exact_digest(command: &str, workdir: &Path) -> String {
    let dir = workdir.as_os_str().as_encoded_bytes();
    let mut hash = Sha256::new();
    hash.update(dir.len().to_string());
    hash.update([0]);
    hash.update(dir);
    hash.update([0]);
    hash.update(command.as_bytes());
    hex::encode(hash.finalize())
}

/// A glob as OpenClaw's patterns use it: `**` spans directories, `*` and `?` stay within
/// one path component; the whole text must match.
fn glob(pattern: &str, text: &str) -> bool {
    let mut re = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                re.push_str(".*");
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).is_ok_and(|re| re.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_words_are_simple() {
        assert_eq!(
            simple("ls -la  src/"),
            Some(Simple {
                program: "ls",
                args: vec!["-la", "src/"]
            })
        );
        for chained in [
            "ls; touch pwned",
            "ls && rm -rf ~",
            "ls | sh",
            "ls $(touch pwned)",
            "ls `touch pwned`",
            "ls > /etc/passwd",
            "ls\ntouch pwned",
            "ls\ttouch",
            "ls *",
            "ls ~",
            "ls 'a b'",
            "ls \\; touch pwned",
            "PATH=/tmp ls",
            "ls # comment",
            "{ ls; }",
            "ls &",
            "",
            "   ",
        ] {
            assert_eq!(simple(chained), None, "{chained:?}");
        }
    }

    #[test]
    fn patterns_match_names_or_resolved_paths() {
        let ls = simple("ls -l").unwrap();
        let at = Resolved {
            found: "/usr/bin/ls".into(),
            real: "/usr/bin/ls".into(),
        };
        assert!(pattern_matches("ls", &ls, Some(&at), None));
        assert!(pattern_matches("l?", &ls, Some(&at), None));
        assert!(pattern_matches("/usr/bin/ls", &ls, Some(&at), None));
        assert!(pattern_matches("/usr/**/ls", &ls, Some(&at), None));
        assert!(pattern_matches("/usr/*/ls", &ls, Some(&at), None));
        assert!(!pattern_matches("/usr/*", &ls, Some(&at), None));
        assert!(!pattern_matches("/*/ls", &ls, Some(&at), None));
        assert!(!pattern_matches("rg", &ls, Some(&at), None));
        assert!(!pattern_matches("/usr/bin/ls", &ls, None, None));
        // A bare pattern never matches a path the model wrote.
        let local = simple("./ls").unwrap();
        assert!(!pattern_matches("ls", &local, Some(&at), None));
        let home = Path::new("/home/claw");
        let tool = Resolved {
            found: "/home/claw/bin/tool".into(),
            real: "/home/claw/bin/tool".into(),
        };
        let t = simple("/home/claw/bin/tool").unwrap();
        assert!(pattern_matches("~/bin/*", &t, Some(&tool), Some(home)));
        assert!(!pattern_matches("~/bin/*", &t, Some(&tool), None));
    }

    #[test]
    fn exact_entries_bind_command_and_workdir() {
        let cmd = "git status";
        let s = simple(cmd).unwrap();
        let ws = Path::new("/srv/ws");
        let p = exact_arg_pattern(cmd, ws);
        assert!(arg_pattern_matches(&p, &s, cmd, ws));
        assert!(!arg_pattern_matches(&p, &s, cmd, Path::new("/srv/ws/sub")));
        let other = simple("git  status").unwrap();
        assert!(!arg_pattern_matches(&p, &other, "git  status", ws));
        // OpenClaw's own hashes cannot be checked here: never a match.
        assert!(!arg_pattern_matches("sha256:cwd-argv:v1:00", &s, cmd, ws));
        assert!(arg_pattern_matches("^status$", &s, cmd, ws));
        assert!(!arg_pattern_matches("^log$", &s, cmd, ws));
        assert!(!arg_pattern_matches("(", &s, cmd, ws));
    }

    #[test]
    fn resolves_through_path_and_workdir() {
        let sh = resolve("sh", Path::new("/")).expect("sh is in PATH");
        assert!(
            sh.found.starts_with("/usr/local/bin")
                || sh.found.starts_with("/usr/bin")
                || sh.found.starts_with("/bin")
        );
        assert!(resolve("no-such-program-here", Path::new("/")).is_none());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tool"), "").unwrap();
        let r = resolve("./tool", dir.path()).unwrap();
        assert_eq!(r.real, dir.path().canonicalize().unwrap().join("tool"));
    }
}
