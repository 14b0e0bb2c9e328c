//! The age encryption of a backup: who can open it.
//!
//! A passphrase goes through age's scrypt recipient (a work factor of about a second on
//! this machine); it is asked on the terminal with hidden input, or read from a file or
//! standard input for scripts, and never taken from the command line, where `ps` and the
//! shell history would show it. A recipient (`age1...`) needs no secret on the box at all:
//! only the holder of its identity file can restore.

use std::path::Path;
use std::str::FromStr;

use age::secrecy::SecretString;
use age::{Decryptor, Encryptor, Identity};
use anyhow::Context;

/// The encryptor `backup create` uses: to `recipient`, else with a passphrase read from
/// `passphrase_file`, else asked twice on the terminal.
pub fn encryptor(
    recipient: Option<&str>,
    passphrase_file: Option<&Path>,
) -> anyhow::Result<Encryptor> {
    if let Some(recipient) = recipient {
        let recipient = age::x25519::Recipient::from_str(recipient.trim()).map_err(|e| {
            crate::setup::BadInput(format!(
                "--recipient: not an age public key ({e}); give the age1... line of \
                 `age-keygen -y IDENTITY_FILE`"
            ))
        })?;
        return Ok(Encryptor::with_recipients(std::iter::once(
            &recipient as &dyn age::Recipient,
        ))?);
    }
    let passphrase = match passphrase_file {
        Some(path) => from_file(path)?,
        None => {
            let first = ask("Passphrase for the backup: ")?;
            let again = ask("The same passphrase again: ")?;
            if first != again {
                anyhow::bail!("the two passphrases differ; nothing was written");
            }
            first
        }
    };
    Ok(Encryptor::with_user_passphrase(SecretString::from(
        passphrase,
    )))
}

/// The identities that may open `file` (whose header `decryptor` read): for a passphrase
/// backup the passphrase (from `passphrase_file` or asked once), for a key backup the
/// identity file.
pub fn identities<R>(
    decryptor: &Decryptor<R>,
    file: &Path,
    identity: Option<&Path>,
    passphrase_file: Option<&Path>,
) -> anyhow::Result<Vec<Box<dyn Identity + Send + Sync>>> {
    if decryptor.is_scrypt() {
        let passphrase = match (passphrase_file, identity) {
            (Some(path), _) => from_file(path)?,
            (None, Some(_)) => anyhow::bail!(
                "{} is encrypted with a passphrase, not to a key: leave out --identity (and \
                 type the passphrase) or pass --passphrase-file FILE",
                file.display()
            ),
            (None, None) => ask(&format!("Passphrase of {}: ", file.display()))?,
        };
        return Ok(vec![Box::new(age::scrypt::Identity::new(
            SecretString::from(passphrase),
        ))]);
    }
    let Some(identity) = identity else {
        anyhow::bail!(
            "{} is encrypted to an age key, not with a passphrase: pass --identity FILE, the \
             file holding its secret key (AGE-SECRET-KEY-1...)",
            file.display()
        );
    };
    age::IdentityFile::from_file(identity.display().to_string())
        .map_err(anyhow::Error::from)
        .and_then(|f| Ok(f.into_identities()?))
        .with_context(|| {
            format!(
                "--identity: cannot read an age identity from {}",
                identity.display()
            )
        })
}

/// The passphrase on the first line of `path` (`-`: standard input).
fn from_file(path: &Path) -> anyhow::Result<String> {
    Ok(crate::setup::read_secret(path, "--passphrase-file")?)
}

/// Asks for a passphrase with hidden input on the terminal.
fn ask(prompt: &str) -> anyhow::Result<String> {
    let passphrase = rpassword::prompt_password(prompt).map_err(|e| {
        anyhow::anyhow!(
            "cannot ask for the passphrase ({e}): run on a terminal, or pass \
             --passphrase-file FILE (`-` reads standard input)"
        )
    })?;
    if passphrase.is_empty() {
        anyhow::bail!("the passphrase is empty; nothing was done");
    }
    Ok(passphrase)
}
