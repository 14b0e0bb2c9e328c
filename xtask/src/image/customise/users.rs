//! The two accounts from `[users]`, made with the image's own `useradd` (run in a chroot, so the
//! image's `login.defs` and shadow version decide the details):
//! - the administrator: SSH with a key only, in its groups (sudo), password locked;
//! - the service user: no login shell, private home, `~/.openclaw` and `~/workspace` (0700),
//!   a subordinate id range and lingering, which rootless Docker needs.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use clawfort_imagedef::UsersSection;
use xshell::{cmd, Shell};

use crate::image::progress::StageProgress;

#[derive(Debug, Clone)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// The image's `/etc/passwd`, by user name.
#[derive(Debug, Clone, Default)]
pub struct Accounts(BTreeMap<String, Account>);

impl Accounts {
    pub fn read(rootfs: &Path) -> Result<Self> {
        let passwd = rootfs.join("etc/passwd");
        let text = std::fs::read_to_string(&passwd)
            .with_context(|| format!("cannot read {}", passwd.display()))?;
        Ok(Self::parse(&text))
    }

    pub fn parse(passwd: &str) -> Self {
        Self(
            passwd
                .lines()
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split(':').collect();
                    let [name, _, uid, gid, _, home, ..] = fields[..] else {
                        return None;
                    };
                    Some((
                        name.to_owned(),
                        Account {
                            uid: uid.parse().ok()?,
                            gid: gid.parse().ok()?,
                            home: home.to_owned(),
                        },
                    ))
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&Account> {
        self.0.get(name)
    }
}

pub fn create(stage: &mut StageProgress, rootfs: &Path, users: &UsersSection) -> Result<Accounts> {
    let sh = Shell::new()?;
    let groups = std::fs::read_to_string(rootfs.join("etc/group"))?;
    for (i, group) in users.admin.groups.iter().enumerate() {
        ensure!(
            groups
                .lines()
                .any(|line| line.split(':').next() == Some(group.as_str())),
            "key `users.admin.groups[{i}]`: group `{group}` does not exist in the image; add the \
             package that creates it to `debian.packages` or drop it"
        );
    }
    for (key, shell) in [
        ("users.admin.shell", &users.admin.shell),
        ("users.service.shell", &users.service.shell),
    ] {
        ensure!(
            rootfs.join(shell.trim_start_matches('/')).exists(),
            "key `{key}`: {shell} does not exist in the image"
        );
    }

    let admin = &users.admin;
    let (name, shell) = (&admin.name, &admin.shell);
    let group_list = admin.groups.join(",");
    let group_args: Vec<String> = if admin.groups.is_empty() {
        Vec::new()
    } else {
        vec!["--groups".to_owned(), group_list]
    };
    stage.run(cmd!(
        sh,
        "chroot {rootfs} useradd --create-home --user-group --shell {shell} {group_args...} {name}"
    ))?;

    let service = &users.service;
    let (service_name, service_shell) = (&service.name, &service.shell);
    let service_home = format!("/home/{service_name}");
    // GECOS's fifth field carries pam_umask's per-user `umask=`, which outranks login.defs.
    let service_gecos = format!("clawfort service user,,,,umask={}", service.session_umask);
    stage.run(cmd!(
        sh,
        "chroot {rootfs} useradd --create-home --home-dir {service_home} --user-group --comment {service_gecos} --shell {service_shell} {service_name}"
    ))?;

    let accounts = Accounts::read(rootfs)?;
    ensure_password_locked(stage, &sh, rootfs, &admin.name)?;
    ensure_password_locked(stage, &sh, rootfs, &service.name)?;

    for user in [&admin.name, &service.name] {
        let account = accounts.get(user).context("useradd succeeded")?;
        let home = rootfs.join(account.home.trim_start_matches('/'));
        std::fs::set_permissions(&home, PermissionsExt::from_mode(0o700))?;
    }
    let account = accounts.get(&service.name).context("useradd succeeded")?;
    for dir in [".openclaw", "workspace"] {
        let path = rootfs.join(format!("home/{}/{dir}", service.name));
        std::fs::create_dir_all(&path)?;
        std::fs::set_permissions(&path, PermissionsExt::from_mode(0o700))?;
        std::os::unix::fs::chown(&path, Some(account.uid), Some(account.gid))?;
    }

    // Only the service user gets subordinate ids, exactly the configured range: useradd may
    // have handed the administrator a range of its own, which nothing needs.
    let range = format!(
        "{}:{}:{}\n",
        service.name, service.subid_start, service.subid_count
    );
    for file in ["etc/subuid", "etc/subgid"] {
        std::fs::write(rootfs.join(file), &range)?;
        std::fs::set_permissions(rootfs.join(file), PermissionsExt::from_mode(0o644))?;
    }

    // Lingering: the service user's systemd instance (and its rootless dockerd) starts at boot
    // without anyone logging in.
    let linger = rootfs.join("var/lib/systemd/linger");
    std::fs::create_dir_all(&linger)?;
    std::fs::write(linger.join(&service.name), "")?;
    Ok(accounts)
}

/// A fresh account's shadow entry is `!` (locked); lock it explicitly if this image's useradd
/// does otherwise.
fn ensure_password_locked(
    stage: &mut StageProgress,
    sh: &Shell,
    rootfs: &Path,
    user: &str,
) -> Result<()> {
    let shadow = std::fs::read_to_string(rootfs.join("etc/shadow"))?;
    let Some(password) = shadow
        .lines()
        .find(|line| line.split(':').next() == Some(user))
        .and_then(|line| line.split(':').nth(1))
    else {
        bail!("user `{user}` has no /etc/shadow entry after useradd");
    };
    if !(password.starts_with('!') || password == "*") {
        stage.run(cmd!(sh, "chroot {rootfs} usermod --lock {user}"))?;
    }
    Ok(())
}

/// Writes `~admin/.ssh/authorized_keys` (0600, the admin's) when keys were given at build time.
pub fn install_authorized_keys(
    rootfs: &Path,
    accounts: &Accounts,
    admin: &str,
    keys: &[String],
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let account = accounts
        .get(admin)
        .with_context(|| format!("administrator `{admin}` missing from the image"))?;
    let ssh_dir = rootfs
        .join(account.home.trim_start_matches('/'))
        .join(".ssh");
    std::fs::create_dir_all(&ssh_dir)?;
    std::fs::set_permissions(&ssh_dir, PermissionsExt::from_mode(0o700))?;
    std::os::unix::fs::chown(&ssh_dir, Some(account.uid), Some(account.gid))?;
    let file = ssh_dir.join("authorized_keys");
    std::fs::write(&file, keys.join("\n") + "\n")?;
    std::fs::set_permissions(&file, PermissionsExt::from_mode(0o600))?;
    std::os::unix::fs::chown(&file, Some(account.uid), Some(account.gid))?;
    Ok(())
}

/// Reads `--authorized-key` files: one or more public key lines each. A private key given by
/// mistake is refused rather than baked into an image.
pub fn read_authorized_keys(files: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--authorized-key {}: cannot read", file.display()))?;
        ensure!(
            !text.contains("PRIVATE KEY"),
            "--authorized-key {}: this is a private key; give the `.pub` file",
            file.display()
        );
        let before = keys.len();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let kind = line.split_whitespace().next().unwrap_or_default();
            ensure!(
                kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"),
                "--authorized-key {}: `{}…` is not an OpenSSH public key line",
                file.display(),
                line.chars().take(20).collect::<String>()
            );
            keys.push(line.to_owned());
        }
        ensure!(
            keys.len() > before,
            "--authorized-key {}: no public key in the file",
            file.display()
        );
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_parse_into_accounts() {
        let accounts = Accounts::parse(
            "root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000::/home/admin:/bin/bash\nbroken\n",
        );
        let admin = accounts.get("admin").unwrap();
        assert_eq!(
            (admin.uid, admin.gid, admin.home.as_str()),
            (1000, 1000, "/home/admin")
        );
        assert!(accounts.get("broken").is_none());
    }

    #[test]
    fn public_keys_are_read_and_private_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let public = dir.path().join("id.pub");
        std::fs::write(&public, "# mine\nssh-ed25519 AAAAC3Nza test@host\n\n").unwrap();
        assert_eq!(
            read_authorized_keys(&[public]).unwrap(),
            ["ssh-ed25519 AAAAC3Nza test@host"]
        );
        let private = dir.path().join("id");
        std::fs::write(&private, "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n").unwrap();
        let err = read_authorized_keys(&[private]).unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "hello world\n").unwrap();
        assert!(read_authorized_keys(&[junk]).is_err());
    }
}
