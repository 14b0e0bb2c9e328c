//! `clawfort backup create` and `clawfort backup restore`: the state directory as one
//! encrypted file that survives a reflash.
//!
//! - `archive`: the tar inside (relative paths, modes; regular files and directories only),
//!   packed from and unpacked into a directory, every member checked on the way in.
//! - `key`: the age encryption around it: a passphrase (scrypt, asked on the terminal or read
//!   from `--passphrase-file`) or an x25519 recipient (`age1...`).
//! - `guard`: both refuse while a gateway runs on the installation.
//! - `create` / `restore`: the two commands. A restore unpacks into a new directory beside
//!   the state directory and swaps it in with one rename only when every member unpacked and
//!   the whole file authenticated: a wrong key or a tampered byte leaves the installation
//!   exactly as it was.

mod archive;
mod create;
mod guard;
mod key;
mod restore;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::target::Target;

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Write the state directory (config, .env, pairings, sessions, usage, approvals,
    /// events) to an encrypted file (age format), to copy off the box before a reflash.
    ///
    /// Encrypted with a passphrase asked twice on the terminal, or read from
    /// --passphrase-file, or to an age public key (--recipient) with no secret needed here.
    /// Refuses while the gateway runs: stop it first (sudo systemctl stop clawfort).
    Create(CreateArgs),
    /// Put a backup back: decrypt and check all of it into a new directory beside the
    /// state directory, then swap it in (the old one is kept as <dir>.before-restore-<time>),
    /// owned by the gateway's user.
    ///
    /// A wrong passphrase or key, or a damaged or tampered file, is an error and changes
    /// nothing. Refuses while the gateway runs: stop it first (sudo systemctl stop clawfort).
    Restore(RestoreArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// The backup file to write (mode 600; written as FILE.partial, then renamed).
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
    /// Encrypt to this age public key (age1...) instead of a passphrase; restore then
    /// needs its secret key (--identity).
    #[arg(long, value_name = "AGE_PUBKEY", conflicts_with = "passphrase_file")]
    recipient: Option<String>,
    /// Read the passphrase from the first line of this file (`-`: standard input) instead
    /// of asking on the terminal.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup file `backup create` wrote.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// The age identity file (AGE-SECRET-KEY-1...) of the key the backup was encrypted to.
    #[arg(long, value_name = "FILE", conflicts_with = "passphrase_file")]
    identity: Option<PathBuf>,
    /// Read the passphrase from the first line of this file (`-`: standard input) instead
    /// of asking on the terminal.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Restore over a state directory that already holds files (it is kept aside, not
    /// deleted).
    #[arg(long)]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `clawfort backup ...` on the installation `target`.
pub fn run(target: Target, command: BackupCommand) -> anyhow::Result<()> {
    target.print_note();
    guard::refuse_if_running(&target)?;
    match command {
        BackupCommand::Create(args) => create::run(&target, &args),
        BackupCommand::Restore(args) => restore::run(&target, &args),
    }
}
