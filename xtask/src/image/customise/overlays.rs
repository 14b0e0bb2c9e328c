//! Copying `overlays/` into the root file system, rendering `*.tera` files on the way.
//!
//! Rules (also in ARCHITECTURE.md):
//! - `overlays/<path>` lands at `/<path>`; `name.tera` is rendered with tera and lands as `name`.
//! - A file lands with the mode git records: 0755 when its source is executable, else 0644,
//!   whatever the checkout's umask made of it (a umask of 002 would otherwise ship
//!   group-writable files in /etc); `[file_modes]` in the image config sets anything else.
//!   Symbolic links are recreated as links.
//! - Everything is owned by root, except what lives under `overlays/home/<user>/`: that is owned
//!   by `<user>` and private (group and other permission bits cleared).
//! - An existing file or link at the destination is replaced, never written through: a link in
//!   the image may point at an absolute path that, seen from the build host, is the host's own.

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use clawfort_imagedef::render::{self, Templates};
use walkdir::WalkDir;

use super::users::Accounts;

/// Renders and copies every overlay file; returns the image paths written.
pub fn apply(
    overlays: &Path,
    rootfs: &Path,
    context: &tera::Context,
    accounts: &Accounts,
) -> Result<Vec<String>> {
    if !overlays.is_dir() {
        return Ok(Vec::new());
    }
    let templates = Templates::load(overlays)?;
    let mut written = Vec::new();
    for entry in WalkDir::new(overlays).min_depth(1).sort_by_file_name() {
        let entry = entry.with_context(|| format!("cannot walk {}", overlays.display()))?;
        let relative = entry
            .path()
            .strip_prefix(overlays)
            .expect("walkdir stays under its root")
            .to_path_buf();
        let is_template = entry.file_type().is_file() && render::is_template(&relative);
        let image_relative = if is_template {
            relative.with_extension("")
        } else {
            relative.clone()
        };
        let destination = safe_join(rootfs, &image_relative)?;
        let owner = owner_of(&relative, accounts)?;
        let private = owner != (0, 0);
        let source_meta = entry.path().symlink_metadata()?;
        let source_mode = git_mode(source_meta.permissions().mode());

        if entry.file_type().is_dir() {
            if !destination.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                remove_existing(&destination)?;
                std::fs::create_dir(&destination)
                    .with_context(|| format!("cannot create {}", destination.display()))?;
                let mode = if private { 0o700 } else { 0o755 };
                std::fs::set_permissions(&destination, PermissionsExt::from_mode(mode))?;
                std::os::unix::fs::chown(&destination, Some(owner.0), Some(owner.1))?;
            }
            continue;
        }

        remove_existing(&destination)?;
        if entry.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            symlink(&target, &destination)
                .with_context(|| format!("cannot create link {}", destination.display()))?;
            std::os::unix::fs::lchown(&destination, Some(owner.0), Some(owner.1))?;
        } else {
            if is_template {
                let text = templates.render(&relative, context)?;
                std::fs::write(&destination, text)
            } else {
                std::fs::copy(entry.path(), &destination).map(drop)
            }
            .with_context(|| format!("cannot write {}", destination.display()))?;
            let mode = if private {
                source_mode & !0o077
            } else {
                source_mode
            };
            std::fs::set_permissions(&destination, PermissionsExt::from_mode(mode))?;
            std::os::unix::fs::chown(&destination, Some(owner.0), Some(owner.1))?;
        }
        written.push(format!("/{}", image_relative.display()));
    }
    Ok(written)
}

/// The mode git would check `mode` out as: executable or not, nothing else.
fn git_mode(mode: u32) -> u32 {
    if mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

/// `home/<user>/...` belongs to `<user>`; everything else to root.
fn owner_of(relative: &Path, accounts: &Accounts) -> Result<(u32, u32)> {
    let mut parts = relative.components();
    if parts.next() != Some(Component::Normal("home".as_ref())) {
        return Ok((0, 0));
    }
    let Some(Component::Normal(user)) = parts.next() else {
        return Ok((0, 0));
    };
    let user = user.to_string_lossy();
    let account = accounts.get(&user).with_context(|| {
        format!(
            "overlays/home/{user}/ exists but the image has no user `{user}`; add it under \
             [users] in the image config or move the files"
        )
    })?;
    Ok((account.uid, account.gid))
}

/// Joins an image-relative path onto the root, refusing any path whose existing parent is a
/// link leading out of the root (the build host's files are never touched).
pub fn safe_join(rootfs: &Path, relative: &Path) -> Result<PathBuf> {
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        bail!("{} is not a plain relative path", relative.display());
    }
    let joined = rootfs.join(relative);
    let parent = joined.parent().expect("joined path has a parent");
    let real_root = rootfs.canonicalize()?;
    let real_parent = parent
        .canonicalize()
        .with_context(|| format!("parent directory of /{} is missing", relative.display()))?;
    if !real_parent.starts_with(&real_root) {
        bail!(
            "/{} would be written outside the image root: a parent directory is a link to {}",
            relative.display(),
            real_parent.display()
        );
    }
    Ok(joined)
}

fn remove_existing(path: &Path) -> Result<()> {
    match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => bail!(
            "{} is a directory in the image but a file or link in overlays/",
            path.display()
        ),
        Ok(_) => {
            std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))
        }
        Err(_) => Ok(()),
    }
}

/// Applies `[file_modes]`: explicit modes for paths git cannot express (0600, 0440, ...).
pub fn apply_file_modes(
    rootfs: &Path,
    modes: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    for (path, mode) in modes {
        let relative = Path::new(path.trim_start_matches('/'));
        let target = safe_join(rootfs, relative)?;
        let meta = target.symlink_metadata().with_context(|| {
            format!("key `file_modes.\"{path}\"`: {path} does not exist in the image")
        })?;
        if meta.file_type().is_symlink() {
            bail!("key `file_modes.\"{path}\"`: {path} is a symbolic link; name its target");
        }
        let mode = clawfort_imagedef::parse_mode(mode)
            .with_context(|| format!("key `file_modes.\"{path}\"`"))?;
        std::fs::set_permissions(&target, PermissionsExt::from_mode(mode))?;
        debug_assert_eq!(
            std::fs::metadata(&target)?.mode() & 0o7777,
            mode,
            "mode applied"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn accounts() -> Accounts {
        Accounts::parse(
            "root:x:0:0::/root:/bin/bash\nopenclaw:x:1001:1001::/home/openclaw:/usr/sbin/nologin\n",
        )
    }

    #[test]
    fn templates_render_files_copy_and_home_files_belong_to_their_user() {
        let overlays = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let o = overlays.path();
        std::fs::create_dir_all(o.join("etc/ssh/sshd_config.d")).unwrap();
        std::fs::write(
            o.join("etc/ssh/sshd_config.d/10-clawfort.conf.tera"),
            "MaxAuthTries {{ ssh.max_auth_tries }}\n# {{ target.debian_arch }} {{ build.version }}\n",
        )
        .unwrap();
        std::fs::create_dir_all(o.join("usr/local/bin")).unwrap();
        std::fs::write(o.join("usr/local/bin/tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            o.join("usr/local/bin/tool"),
            PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::create_dir_all(o.join("home/openclaw/.openclaw")).unwrap();
        std::fs::write(o.join("home/openclaw/.openclaw/openclaw.json"), "{}").unwrap();
        std::os::unix::fs::symlink("/usr/share/zoneinfo/Etc/UTC", o.join("etc/localtime")).unwrap();
        // Pre-existing absolute link in the image: must be replaced, not written through.
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("etc/localtime")).unwrap();

        let mut context = tera::Context::new();
        context.insert("ssh", &BTreeMap::from([("max_auth_tries", 3)]));
        context.insert("target", &BTreeMap::from([("debian_arch", "amd64")]));
        context.insert("build", &BTreeMap::from([("version", "0.1.0")]));
        let written = apply(o, root.path(), &context, &accounts()).unwrap();

        let rendered =
            std::fs::read_to_string(root.path().join("etc/ssh/sshd_config.d/10-clawfort.conf"))
                .unwrap();
        assert_eq!(rendered, "MaxAuthTries 3\n# amd64 0.1.0\n");
        assert!(!root
            .path()
            .join("etc/ssh/sshd_config.d/10-clawfort.conf.tera")
            .exists());
        let tool = std::fs::metadata(root.path().join("usr/local/bin/tool")).unwrap();
        assert_eq!(tool.mode() & 0o7777, 0o755);
        assert_eq!(tool.uid(), 0);
        let json =
            std::fs::metadata(root.path().join("home/openclaw/.openclaw/openclaw.json")).unwrap();
        assert_eq!((json.uid(), json.mode() & 0o777), (1001, 0o600));
        let dir = std::fs::metadata(root.path().join("home/openclaw/.openclaw")).unwrap();
        assert_eq!((dir.uid(), dir.mode() & 0o777), (1001, 0o700));
        assert_eq!(
            std::fs::read_link(root.path().join("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/Etc/UTC")
        );
        assert!(written.contains(&"/etc/ssh/sshd_config.d/10-clawfort.conf".to_owned()));
    }

    #[test]
    fn an_undefined_template_variable_names_the_file_and_the_variable() {
        let overlays = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(overlays.path().join("motd.tera"), "{{ ssh.no_such_key }}").unwrap();
        let mut context = tera::Context::new();
        context.insert("ssh", &BTreeMap::from([("port", 22)]));
        let err = apply(overlays.path(), root.path(), &context, &accounts()).unwrap_err();
        let message = format!("{err:#}");
        let tree = overlays.path().file_name().unwrap().to_string_lossy();
        assert!(message.contains(&format!("{tree}/motd.tera")), "{message}");
        assert!(message.contains("no_such_key"), "{message}");
    }

    #[test]
    fn home_files_of_an_unknown_user_are_refused() {
        let overlays = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(overlays.path().join("home/mallory")).unwrap();
        std::fs::write(overlays.path().join("home/mallory/x"), "").unwrap();
        let err = apply(
            overlays.path(),
            root.path(),
            &tera::Context::new(),
            &accounts(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("no user `mallory`"), "{err:#}");
    }

    #[test]
    fn a_parent_link_out_of_the_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("etc")).unwrap();
        let err = safe_join(root.path(), Path::new("etc/passwd")).unwrap_err();
        assert!(err.to_string().contains("outside the image root"), "{err}");
    }

    #[test]
    fn files_land_with_the_mode_git_records_whatever_the_checkout_umask() {
        let overlays = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let o = overlays.path();
        std::fs::create_dir_all(o.join("etc")).unwrap();
        for (name, mode) in [("etc/writable.conf", 0o664), ("etc/tool", 0o775)] {
            std::fs::write(o.join(name), "x\n").unwrap();
            std::fs::set_permissions(o.join(name), PermissionsExt::from_mode(mode)).unwrap();
        }
        apply(o, root.path(), &tera::Context::new(), &accounts()).unwrap();
        let mode = |name: &str| std::fs::metadata(root.path().join(name)).unwrap().mode() & 0o7777;
        assert_eq!(mode("etc/writable.conf"), 0o644);
        assert_eq!(mode("etc/tool"), 0o755);
    }

    #[test]
    fn file_modes_set_explicit_modes_and_name_missing_paths() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/sudoers.d")).unwrap();
        std::fs::write(root.path().join("etc/sudoers.d/admin"), "").unwrap();
        let modes = BTreeMap::from([("/etc/sudoers.d/admin".to_owned(), "0440".to_owned())]);
        apply_file_modes(root.path(), &modes).unwrap();
        let mode = std::fs::metadata(root.path().join("etc/sudoers.d/admin"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o7777, 0o440);
        let missing = BTreeMap::from([("/etc/nope".to_owned(), "0600".to_owned())]);
        let err = apply_file_modes(root.path(), &missing).unwrap_err();
        assert!(
            format!("{err:#}").contains("file_modes.\"/etc/nope\""),
            "{err:#}"
        );
    }
}
