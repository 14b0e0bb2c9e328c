//! `SHA256SUMS.sig`: the checksums signed with the publisher's SSH key (`ssh-keygen -Y sign`,
//! OpenSSH's file signatures), so whoever has the publisher's public key can tell that the
//! checksums, and through them every artifact, are the ones the publisher built. SSH keys
//! because publishers already have one and every Debian host has `ssh-keygen` to verify with;
//! the namespace keeps a signature made for this from being valid for anything else.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use xshell::{cmd, Shell};

/// The signature's namespace (`-n`): a signature over SHA256SUMS for anything else, say a git
/// commit or another project's files, does not verify as this.
pub const NAMESPACE: &str = "clawfort-image";

/// The signing key, checked before anything is built.
#[derive(Debug, Clone)]
pub struct SigningKey {
    path: PathBuf,
    /// `ssh-keygen -l`'s line: bits, fingerprint, comment, type.
    pub fingerprint: String,
}

impl SigningKey {
    /// Reads the key's fingerprint: a file ssh-keygen cannot read fails here, with the flag
    /// named, rather than after a build of many minutes.
    pub fn check(path: &Path) -> Result<Self> {
        let sh = Shell::new()?;
        let output = cmd!(sh, "ssh-keygen -l -f {path}")
            .quiet()
            .ignore_status()
            .output()?;
        ensure!(
            output.status.success(),
            "--sign-key {}: not an SSH key ssh-keygen can read ({}). Give an ed25519 private key \
             file without a passphrase (a CI secret), or the public key file of a key loaded in \
             ssh-agent",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(Self {
            path: path.to_path_buf(),
            fingerprint: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        })
    }
}

/// Where the signature of `sums` goes.
pub fn signature_path(sums: &Path) -> PathBuf {
    let mut name = sums.file_name().expect("a file").to_os_string();
    name.push(".sig");
    sums.with_file_name(name)
}

/// Signs `sums` with `key`, replacing an earlier signature.
pub fn sign(sums: &Path, key: &SigningKey) -> Result<PathBuf> {
    let signature = signature_path(sums);
    remove(&signature)?;
    let sh = Shell::new()?;
    let key_path = &key.path;
    cmd!(
        sh,
        "ssh-keygen -q -Y sign -f {key_path} -n {NAMESPACE} {sums}"
    )
    .quiet()
    .run()
    .with_context(|| format!("cannot sign {} with {}", sums.display(), key_path.display()))?;
    ensure!(
        signature.is_file(),
        "ssh-keygen left no {}",
        signature.display()
    );
    Ok(signature)
}

/// Removes the signature of `sums` if there is one: a build without `--sign-key` has just
/// rewritten `sums`, and a signature of its earlier text would only fail to verify.
pub fn remove_stale(sums: &Path) -> Result<bool> {
    let signature = signature_path(sums);
    let existed = signature.exists();
    remove(&signature)?;
    Ok(existed)
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The command that checks a download, run in the directory holding it: the signature over
/// SHA256SUMS by the key `allowed_signers` names for `identity`, then every listed file
/// that is present (`--ignore-missing`: a user downloads one target's files, not all).
pub fn verify_command(identity: &str) -> String {
    format!(
        "ssh-keygen -Y verify -f allowed_signers -I {identity} -n {NAMESPACE} \
         -s SHA256SUMS.sig < SHA256SUMS && sha256sum --ignore-missing -c SHA256SUMS"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signs as a build does, then runs the README's check: it passes on the artifacts as built,
    /// fails when an artifact is changed, and fails when SHA256SUMS is changed to match it.
    /// Whether ssh-keygen is here to test with. As root, `cargo xtask ci` installs it before
    /// the tests, so only a developer's unprivileged run without openssh-client skips.
    fn have_ssh_keygen() -> bool {
        if Path::new("/usr/bin/ssh-keygen").exists() {
            return true;
        }
        assert!(
            !crate::image::host_tools::is_root(),
            "as root, `cargo xtask ci` installs openssh-client before the tests"
        );
        eprintln!("skipped: no ssh-keygen (openssh-client) and not root to install it");
        false
    }

    #[test]
    fn a_changed_artifact_or_checksum_fails_the_readme_check() {
        if !have_ssh_keygen() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sh = Shell::new().unwrap();
        sh.change_dir(dir.path());
        std::fs::write(dir.path().join("clawfort-x86_64.raw"), b"the disk").unwrap();
        cmd!(sh, "sh -c 'sha256sum clawfort-x86_64.raw > SHA256SUMS'")
            .run()
            .unwrap();
        cmd!(sh, "ssh-keygen -q -t ed25519 -N '' -C publisher -f key")
            .run()
            .unwrap();
        let key = SigningKey::check(&dir.path().join("key")).unwrap();
        assert!(key.fingerprint.contains("SHA256:"), "{}", key.fingerprint);
        sign(&dir.path().join("SHA256SUMS"), &key).unwrap();
        let public = std::fs::read_to_string(dir.path().join("key.pub")).unwrap();
        std::fs::write(
            dir.path().join("allowed_signers"),
            format!("release@example.org {public}"),
        )
        .unwrap();
        let check = verify_command("release@example.org");
        let verify = || cmd!(sh, "sh -c {check}").quiet().ignore_stderr().run();
        verify().expect("the check passes on the artifacts as built");

        std::fs::write(dir.path().join("clawfort-x86_64.raw"), b"the disk, altered").unwrap();
        assert!(verify().is_err(), "a changed artifact must fail the check");

        cmd!(sh, "sh -c 'sha256sum clawfort-x86_64.raw > SHA256SUMS'")
            .run()
            .unwrap();
        assert!(
            verify().is_err(),
            "checksums changed to match must fail the signature"
        );

        assert!(remove_stale(&dir.path().join("SHA256SUMS")).unwrap());
        assert!(!dir.path().join("SHA256SUMS.sig").exists());
    }

    #[test]
    fn a_file_that_is_no_key_is_refused_before_the_build() {
        if !have_ssh_keygen() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-key");
        std::fs::write(&path, "hello\n").unwrap();
        let err = SigningKey::check(&path).unwrap_err().to_string();
        assert!(
            err.contains("--sign-key") && err.contains("not-a-key"),
            "{err}"
        );
    }

    /// The README shows the same check the test runs.
    #[test]
    fn the_readme_shows_the_verify_command() {
        let readme = std::fs::read_to_string(crate::project_root().join("README.md")).unwrap();
        let command = verify_command("release@example.org");
        assert!(readme.contains(&command), "README.md lacks `{command}`");
    }
}
