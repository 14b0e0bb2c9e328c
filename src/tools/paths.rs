//! Where a model-supplied `path` may lead: beneath the workspace or an allowed root, never
//! into a denied path.
//!
//! **Containment** is the kernel's: each root is opened once (`O_PATH | O_DIRECTORY`) when
//! the gateway starts, and every path is opened relative to that descriptor with `openat2`
//! and `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`. The kernel refuses,
//! during the one resolution that also opens the file, any step that leaves the root: `..`
//! above it, an absolute symbolic link, a relative one pointing out, `/proc/<pid>/fd/*`
//! style magic links, and a crossing into another mount (a bind mount of a denied
//! directory into the workspace, `/proc`, `/dev`). There is no check-then-use window: a
//! swap of a path component after our call cannot change what the descriptor refers to,
//! and a concurrent rename that could have moved `..` out makes the kernel fail the call
//! (`EAGAIN`, retried a few times). A relative path is relative to the workspace; an
//! absolute one is accepted only when it lies under a root (as configured, or its canonical
//! form), and is then opened relative to the deepest such root.
//!
//! **Denied paths** (`security.deniedPaths`, and always the state directory `~/.openclaw`
//! except the workspace inside it) are checked on the opened descriptor, not on the text
//! the model sent: the kernel's own name of the open file (`/proc/self/fd/<n>`) is compared,
//! component by component, with the canonical form of each denied path. Since the
//! resolution can neither leave a root nor cross a mount, that name is the one path by which
//! the file was reached, so a symbolic link inside a root pointing at a denied directory in
//! the same root is caught wherever it sits. The one alias a name check cannot see is a
//! hard link (a second name of the same inode outside the denied directory); a regular file
//! with more than one link is therefore refused for reading ([`Opened::check_single_link`]).
//! Writes replace the name with a new file (temp file and `rename`), so they never reach a
//! hard-linked inode.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{openat2, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// How every path is resolved beneath a root.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// `openat2` fails with `EAGAIN` when a concurrent rename might have let `..` escape.
const EAGAIN_RETRIES: usize = 4;

/// Why a path was refused; the message names the path as the model gave it and says what
/// to do instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("`{path}` is empty: give a file path relative to the workspace")]
    Empty { path: String },
    #[error(
        "`{path}` is outside the directories the file tools may use ({roots}); use a path \
         relative to the workspace"
    )]
    Outside { path: String, roots: String },
    #[error(
        "`{path}` leads out of {root} (through `..`, a symbolic link or a mount point); \
         use a path inside it"
    )]
    Escapes { path: String, root: String },
    #[error(
        "`{path}` involves a symbolic link loop or a /proc magic link, which the file tools \
         do not follow"
    )]
    Loop { path: String },
    #[error("`{path}` is in a denied location ({rule}); the file tools may not use it")]
    Denied { path: String, rule: String },
    #[error("`{path}` does not exist")]
    NotFound { path: String },
    #[error("`{path}`: a part of it before the last is not a directory")]
    NotDirectory { path: String },
    /// `openat2` is missing: a kernel before 5.6, or a seccomp filter (systemd's
    /// `RestrictSUIDSGID=` fails it with ENOSYS). Nothing is opened any other way.
    #[error(
        "`{path}`: the file tools cannot work here: the kernel refuses openat2 (Linux 5.6 or \
         newer is needed, and a service manager's RestrictSUIDSGID= filter blocks it)"
    )]
    NoOpenat2 { path: String },
    #[error("`{path}`: {message}")]
    Other { path: String, message: String },
}

impl PathError {
    fn from_errno(path: &str, root: &Root, e: Errno) -> Self {
        let path = path.to_owned();
        match e {
            Errno::XDEV => Self::Escapes {
                path,
                root: root.describe(),
            },
            Errno::LOOP => Self::Loop { path },
            Errno::NOENT => Self::NotFound { path },
            Errno::NOTDIR => Self::NotDirectory { path },
            Errno::NOSYS => Self::NoOpenat2 { path },
            e => Self::Other {
                path,
                message: std::io::Error::from(e).to_string(),
            },
        }
    }
}

/// One directory the file tools may use.
#[derive(Debug)]
struct Root {
    /// As configured (`~` expanded).
    shown: PathBuf,
    canonical: PathBuf,
    fd: OwnedFd,
    is_workspace: bool,
}

impl Root {
    fn open(path: &Path, is_workspace: bool) -> std::io::Result<Self> {
        let canonical = path.canonicalize()?;
        let fd = rustix::fs::open(
            &canonical,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            shown: path.to_owned(),
            canonical,
            fd,
            is_workspace,
        })
    }

    fn describe(&self) -> String {
        if self.is_workspace {
            format!("the workspace {}", self.shown.display())
        } else {
            format!("the allowed path {}", self.shown.display())
        }
    }

    /// `path` relative to this root, if it lies under the root as configured or canonical.
    fn relative<'p>(&self, path: &'p Path) -> Option<&'p Path> {
        path.strip_prefix(&self.shown)
            .or_else(|_| path.strip_prefix(&self.canonical))
            .ok()
    }
}

/// A file opened beneath a root and found not denied.
#[derive(Debug)]
pub struct Opened {
    pub fd: OwnedFd,
    pub stat: Stat,
}

impl Opened {
    /// Refuses a regular file with more than one hard link: the other name may lie in a
    /// denied directory, and no name check can tell.
    pub fn check_single_link(&self, path: &str) -> Result<(), PathError> {
        if FileType::from_raw_mode(self.stat.st_mode) == FileType::RegularFile
            && self.stat.st_nlink > 1
        {
            return Err(PathError::Other {
                path: path.to_owned(),
                message: format!(
                    "has {} hard links; the file tools refuse hard-linked files because a \
                     link can make a denied file appear here (copy it to a new file instead)",
                    self.stat.st_nlink
                ),
            });
        }
        Ok(())
    }
}

/// The directory a new file goes into, opened beneath a root, and the file's name.
#[derive(Debug)]
pub struct Parent {
    pub dir: OwnedFd,
    pub name: OsString,
}

/// The roots and denied paths of the file tools; see the module documentation.
#[derive(Debug)]
pub struct Confinement {
    /// The workspace first.
    roots: Vec<Root>,
    /// Canonical denied paths, each with the rule it comes from.
    denied: Vec<(PathBuf, String)>,
    /// Canonical state directory, denied except for the workspace strictly inside it.
    state_dir: PathBuf,
}

impl Confinement {
    /// Opens the roots. `denied` pairs each denied path with the rule it comes from (for the
    /// message). The workspace is created (mode 700) when missing, as OpenClaw does;
    /// an allowed path that cannot be opened is left out with a warning. Fails only when the
    /// workspace cannot be created or opened.
    pub fn new(
        workspace: &Path,
        allowed: &[PathBuf],
        denied: &[(PathBuf, String)],
        state_dir: &Path,
    ) -> Result<Self, String> {
        if !workspace.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(workspace)
                .map_err(|e| format!("cannot create the workspace {}: {e}", workspace.display()))?;
        }
        let ws = Root::open(workspace, true)
            .map_err(|e| format!("cannot open the workspace {}: {e}", workspace.display()))?;
        let mut roots = vec![ws];
        for path in allowed {
            match Root::open(path, false) {
                Ok(root) => roots.push(root),
                Err(e) => tracing::warn!(
                    "security.allowedPaths: {} is left out of the file tools: {e}",
                    path.display()
                ),
            }
        }
        let denied = denied
            .iter()
            .map(|(p, rule)| (canonical_lenient(p), rule.clone()))
            .collect();
        let confinement = Self {
            roots,
            denied,
            state_dir: canonical_lenient(state_dir),
        };
        for root in &confinement.roots {
            if let Some(rule) = confinement.denial(&root.canonical) {
                tracing::warn!(
                    "the file tools cannot use {}: it is denied ({rule})",
                    root.describe()
                );
            }
        }
        Ok(confinement)
    }

    /// The roots, for the tools' descriptions.
    pub fn describe_roots(&self) -> String {
        self.roots
            .iter()
            .map(Root::describe)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Which rule denies the canonical path `real`, if any.
    fn denial(&self, real: &Path) -> Option<String> {
        if let Some((_, rule)) = self.denied.iter().find(|(d, _)| real.starts_with(d)) {
            return Some(rule.clone());
        }
        let workspace = &self.roots[0].canonical;
        let in_workspace = workspace.starts_with(&self.state_dir)
            && workspace != &self.state_dir
            && real.starts_with(workspace);
        (real.starts_with(&self.state_dir) && !in_workspace).then(|| {
            format!(
                "the gateway's state directory {} (config, .env, credentials, transcripts)",
                self.state_dir.display()
            )
        })
    }

    /// The root `path` is resolved beneath, and `path` relative to it.
    /// `~/` at the start is the gateway user's home, as in a shell.
    fn locate(&self, path: &str) -> Result<(&Root, PathBuf), PathError> {
        if path.is_empty() {
            return Err(PathError::Empty { path: path.into() });
        }
        let p = if path == "~" || path.starts_with("~/") {
            crate::paths::expand_tilde(path)
        } else {
            PathBuf::from(path)
        };
        if p.is_relative() {
            return Ok((&self.roots[0], p));
        }
        self.roots
            .iter()
            .filter_map(|r| r.relative(&p).map(|rel| (r, rel.to_path_buf())))
            .min_by_key(|(_, rel)| rel.components().count())
            .ok_or_else(|| PathError::Outside {
                path: path.into(),
                roots: self.describe_roots(),
            })
    }

    /// Whether `path` names a place under an allowed path rather than the workspace: its
    /// content is then not the agent's own (it taints the turn, see `Tool::taints`). A path
    /// outside every root is refused anyway and counts as outside too.
    pub fn outside_workspace(&self, path: &str) -> bool {
        !matches!(self.locate(path), Ok((root, _)) if std::ptr::eq(root, &self.roots[0]))
    }

    /// Opens `path` with `flags` (plus `O_CLOEXEC | O_NOCTTY`) beneath its root and checks
    /// that where it led is not denied.
    pub fn open(&self, path: &str, flags: OFlags) -> Result<Opened, PathError> {
        let (root, rel) = self.locate(path)?;
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        let fd = open_beneath(root, rel, flags | OFlags::CLOEXEC | OFlags::NOCTTY)
            .map_err(|e| PathError::from_errno(path, root, e))?;
        self.check_fd(path, &fd, None)?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| PathError::from_errno(path, root, e))?;
        Ok(Opened { fd, stat })
    }

    /// Opens the directory that `path` names a file in, beneath its root, creating missing
    /// directories (mode 755 before the umask) one at a time, each beneath the root and
    /// checked against the denied paths before it is made.
    pub fn parent_for_write(&self, path: &str) -> Result<Parent, PathError> {
        let (root, rel) = self.locate(path)?;
        let other = |message: &str| PathError::Other {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        let name = match rel.components().next_back() {
            Some(Component::Normal(name)) if !path.ends_with('/') => name.to_owned(),
            _ => return Err(other("names a directory, not a file: add a file name")),
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let errno = |e| PathError::from_errno(path, root, e);
        let mut dir = open_beneath(root, Path::new("."), dir_flags).map_err(errno)?;
        let mut prefix = PathBuf::new();
        for component in parent.components() {
            prefix.push(component);
            dir = match open_beneath(root, &prefix, dir_flags) {
                Ok(next) => next,
                Err(Errno::NOENT) => {
                    let Component::Normal(part) = component else {
                        return Err(errno(Errno::NOENT));
                    };
                    self.check_fd(path, &dir, Some(part))?;
                    match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(errno(e)),
                    }
                    open_beneath(root, &prefix, dir_flags).map_err(errno)?
                }
                Err(e) => return Err(errno(e)),
            };
        }
        self.check_fd(path, &dir, Some(&name))?;
        self.check_writable(path, &dir, &name)?;
        Ok(Parent { dir, name })
    }

    /// Refuses to replace the workspace's `AGENTS.md`: it becomes the owner's instructions in
    /// every later system prompt, so a model steered by untrusted text (a fetched page, another
    /// sender's message) could otherwise make that text permanent and trusted. The owner
    /// edits it; the tools may read it.
    fn check_writable(
        &self,
        path: &str,
        dir: &OwnedFd,
        name: &std::ffi::OsStr,
    ) -> Result<(), PathError> {
        let real = kernel_path(dir).map_err(|e| PathError::Other {
            path: path.to_owned(),
            message: format!("cannot tell where it leads ({e}); refused"),
        })?;
        if real == self.roots[0].canonical && name == crate::paths::AGENTS_MD {
            return Err(PathError::Other {
                path: path.to_owned(),
                message: "is the owner's instructions (read into every system prompt); the \
                          file tools may read it but not change it: ask the owner to edit it"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// Refuses when the kernel's name of `fd` (joined with `child`, for a name about to be
    /// made in the directory `fd`) is denied.
    fn check_fd(
        &self,
        path: &str,
        fd: &OwnedFd,
        child: Option<&std::ffi::OsStr>,
    ) -> Result<(), PathError> {
        let mut real = kernel_path(fd).map_err(|e| PathError::Other {
            path: path.to_owned(),
            message: format!("cannot tell where it leads ({e}); refused"),
        })?;
        if let Some(child) = child {
            real.push(child);
        }
        match self.denial(&real) {
            Some(rule) => Err(PathError::Denied {
                path: path.to_owned(),
                rule,
            }),
            None => Ok(()),
        }
    }
}

fn open_beneath(root: &Root, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    let mut tries = 0;
    loop {
        match openat2(root.fd.as_fd(), rel, flags, Mode::empty(), RESOLVE) {
            Err(Errno::AGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            other => return other,
        }
    }
}

/// The kernel's absolute name of the open file `fd`.
fn kernel_path(fd: &OwnedFd) -> std::io::Result<PathBuf> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if !link.is_absolute() {
        return Err(std::io::Error::other(format!(
            "the kernel names it {}, not a path",
            link.display()
        )));
    }
    Ok(link)
}

/// `path` canonicalized as far as it exists, the rest appended: a denied path that does not
/// exist yet is still compared in the form the kernel will report once it does.
fn canonical_lenient(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            return rest
                .iter()
                .rev()
                .fold(canonical, |p, c: &OsString| p.join(c));
        }
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// `base/` holds a state directory with the workspace inside it (OpenClaw's layout), a
    /// denied directory and a public one; `base` itself is an allowed path.
    pub(crate) struct Fixture {
        pub dir: tempfile::TempDir,
        pub conf: std::sync::Arc<Confinement>,
    }

    impl Fixture {
        pub(crate) fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let base = dir.path();
            for d in ["state/workspace", "state/credentials", "secret", "public"] {
                std::fs::create_dir_all(base.join(d)).unwrap();
            }
            std::fs::write(base.join("state/.env"), "API_KEY=sk-test-secret\n").unwrap();
            std::fs::write(base.join("state/credentials/x.json"), "{}").unwrap();
            std::fs::write(base.join("secret/key"), "PRIVATE\n").unwrap();
            std::fs::write(base.join("public/ok.txt"), "public\n").unwrap();
            std::fs::write(base.join("state/workspace/notes.md"), "hello\n").unwrap();
            let denied = [(base.join("secret"), "security.deniedPaths: secret".into())];
            let conf = Confinement::new(
                &base.join("state/workspace"),
                &[base.to_path_buf()],
                &denied,
                &base.join("state"),
            )
            .unwrap();
            Self {
                dir,
                conf: std::sync::Arc::new(conf),
            }
        }

        pub(crate) fn ws(&self) -> PathBuf {
            self.dir.path().join("state/workspace")
        }

        pub(crate) fn abs(&self, rel: &str) -> String {
            self.dir.path().join(rel).display().to_string()
        }

        fn open(&self, path: &str) -> Result<Opened, PathError> {
            self.conf.open(path, OFlags::RDONLY | OFlags::NONBLOCK)
        }
    }

    fn is<T>(r: Result<T, PathError>, want: fn(&PathError) -> bool) -> PathError {
        match r {
            Err(e) if want(&e) => e,
            Err(e) => panic!("wrong refusal: {e:?}"),
            Ok(_) => panic!("not refused"),
        }
    }

    #[test]
    fn workspace_files_open_by_relative_and_absolute_path() {
        let f = Fixture::new();
        assert!(f.open("notes.md").is_ok());
        assert!(f.open(&f.abs("state/workspace/notes.md")).is_ok());
        assert!(f.open(&f.abs("public/ok.txt")).is_ok(), "an allowed path");
        is(f.open("missing.md"), |e| {
            matches!(e, PathError::NotFound { .. })
        });
        is(f.open(""), |e| matches!(e, PathError::Empty { .. }));
    }

    #[test]
    fn dot_dot_and_absolute_paths_cannot_leave_the_roots() {
        let f = Fixture::new();
        is(f.open("../.env"), |e| {
            matches!(e, PathError::Escapes { .. })
        });
        is(f.open("sub/../../../secret/key"), |e| {
            matches!(e, PathError::Escapes { .. } | PathError::NotFound { .. })
        });
        is(f.open(&f.abs("state/workspace/../.env")), |e| {
            matches!(e, PathError::Escapes { .. })
        });
        let e = is(f.open("/etc/passwd"), |e| {
            matches!(e, PathError::Outside { .. })
        });
        assert!(e.to_string().contains("relative to the workspace"), "{e}");
        // `base/..` lies lexically under the allowed root `base`, and is refused by the kernel.
        is(f.open(&f.abs("../etc/passwd")), |e| {
            matches!(e, PathError::Escapes { .. })
        });
    }

    #[test]
    fn symlinks_out_are_refused() {
        let f = Fixture::new();
        symlink("/etc/passwd", f.ws().join("passwd")).unwrap();
        symlink("../.env", f.ws().join("env")).unwrap();
        symlink("/", f.ws().join("rootdir")).unwrap();
        is(f.open("passwd"), |e| matches!(e, PathError::Escapes { .. }));
        is(f.open("env"), |e| matches!(e, PathError::Escapes { .. }));
        is(f.open("rootdir/etc/passwd"), |e| {
            matches!(e, PathError::Escapes { .. })
        });
    }

    #[test]
    fn a_symlink_loop_is_an_error_not_a_hang() {
        let f = Fixture::new();
        symlink("b", f.ws().join("a")).unwrap();
        symlink("a", f.ws().join("b")).unwrap();
        is(f.open("a"), |e| matches!(e, PathError::Loop { .. }));
    }

    #[test]
    fn denied_paths_win_over_allowed_ones_whatever_the_route() {
        let f = Fixture::new();
        // Straight in, through the allowed root that contains them.
        let e = is(f.open(&f.abs("secret/key")), |e| {
            matches!(e, PathError::Denied { .. })
        });
        assert!(e.to_string().contains("security.deniedPaths"), "{e}");
        let e = is(f.open(&f.abs("state/.env")), |e| {
            matches!(e, PathError::Denied { .. })
        });
        assert!(e.to_string().contains("state directory"), "{e}");
        is(f.open(&f.abs("state/credentials/x.json")), |e| {
            matches!(e, PathError::Denied { .. })
        });
        is(f.open(&f.abs("state")), |e| {
            matches!(e, PathError::Denied { .. })
        });
        // Through a relative symlink that stays inside the allowed root.
        symlink("../secret/key", f.dir.path().join("public/key")).unwrap();
        symlink("../secret", f.dir.path().join("public/dir")).unwrap();
        symlink("../state", f.dir.path().join("public/state")).unwrap();
        for p in ["public/key", "public/dir/key", "public/state/.env"] {
            is(f.open(&f.abs(p)), |e| matches!(e, PathError::Denied { .. }));
        }
        // The workspace inside the state directory stays usable through the allowed root.
        assert!(f.open(&f.abs("public/state/workspace/notes.md")).is_ok());
    }

    #[test]
    fn a_denied_path_that_does_not_exist_yet_is_denied_once_made() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let later = dir.path().join("ws/later");
        let conf = Confinement::new(
            &ws,
            &[],
            &[(later.clone(), "deniedPaths".into())],
            &dir.path().join("state"),
        )
        .unwrap();
        std::fs::create_dir(&later).unwrap();
        std::fs::write(later.join("f"), "x").unwrap();
        is(conf.open("later/f", OFlags::RDONLY), |e| {
            matches!(e, PathError::Denied { .. })
        });
    }

    #[test]
    fn proc_magic_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let conf = Confinement::new(
            &dir.path().join("ws"),
            &[PathBuf::from("/proc/self")],
            &[],
            &dir.path().join("state"),
        )
        .unwrap();
        for p in [
            "/proc/self/cwd/Cargo.toml",
            "/proc/self/root/etc/passwd",
            "/proc/self/exe",
            "/proc/self/fd/0",
        ] {
            is(conf.open(p, OFlags::RDONLY), |e| {
                matches!(e, PathError::Loop { .. })
            });
        }
        // A symlink in the workspace to a magic link is an absolute link out.
        symlink("/proc/self/environ", dir.path().join("ws/environ")).unwrap();
        is(conf.open("environ", OFlags::RDONLY), |e| {
            matches!(e, PathError::Escapes { .. })
        });
    }

    #[test]
    fn writing_makes_parents_beneath_the_root_and_never_in_a_denied_place() {
        let f = Fixture::new();
        let parent = f.conf.parent_for_write("a/b/c.txt").unwrap();
        assert_eq!(parent.name, "c.txt");
        assert!(f.ws().join("a/b").is_dir());
        is(f.conf.parent_for_write(&f.abs("secret/sub/new")), |e| {
            matches!(e, PathError::Denied { .. })
        });
        assert!(!f.dir.path().join("secret/sub").exists());
        symlink("../secret", f.dir.path().join("public/dir")).unwrap();
        is(f.conf.parent_for_write(&f.abs("public/dir/new")), |e| {
            matches!(e, PathError::Denied { .. })
        });
        is(f.conf.parent_for_write("../escape/new"), |e| {
            matches!(e, PathError::Escapes { .. })
        });
        assert!(!f.dir.path().join("state/escape").exists());
        is(f.conf.parent_for_write("dir/"), |e| {
            matches!(e, PathError::Other { .. })
        });
        is(f.conf.parent_for_write(&f.abs("state/.env")), |e| {
            matches!(e, PathError::Denied { .. })
        });
    }

    /// A directory swapped with a symlink out, as fast as a thread can, while paths through
    /// it are opened: every open either reaches the real directory or is refused.
    #[test]
    fn a_swap_between_resolution_steps_cannot_escape() {
        let f = Fixture::new();
        let ws = f.ws();
        std::fs::create_dir(ws.join("d")).unwrap();
        std::fs::write(ws.join("d/passwd"), "safe\n").unwrap();
        let depth = ws.canonicalize().unwrap().components().count() - 1;
        symlink(format!("{}etc", "../".repeat(depth)), ws.join("s")).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flipper = {
            let (ws, stop) = (ws.clone(), stop.clone());
            std::thread::spawn(move || {
                let dir = rustix::fs::open(&ws, OFlags::PATH, Mode::empty()).unwrap();
                let mut flips = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && flips < 2_000_000 {
                    rustix::fs::renameat_with(
                        &dir,
                        "d",
                        &dir,
                        "s",
                        rustix::fs::RenameFlags::EXCHANGE,
                    )
                    .unwrap();
                    flips += 1;
                }
                flips
            })
        };
        let (mut opened, mut refused) = (0, 0);
        for _ in 0..5_000 {
            match f.open("d/passwd") {
                Ok(o) => {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::fs::File::from(o.fd), &mut text)
                        .unwrap();
                    assert_eq!(text, "safe\n", "escaped to the real /etc/passwd");
                    opened += 1;
                }
                Err(PathError::Escapes { .. } | PathError::NotFound { .. }) => refused += 1,
                Err(PathError::NotDirectory { .. }) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let flips = flipper.join().unwrap();
        assert!(
            flips > 0 && opened + refused == 5_000,
            "{flips} {opened} {refused}"
        );
    }
}
