//! `clawfort approvals list|approve|deny`: answers the running gateway's exec approvals
//! through its HTTP API, with the gateway token (`GET /api/approvals`,
//! `POST /api/approvals/<id>/approve|always|deny`).
//!
//! The questions live in the gateway's memory, beside the turn that waits for them, so the
//! API (authenticated, rate limited, on loopback) answers at once and says whether the
//! question still existed; a file the gateway watched would answer neither. `list` also
//! shows the allowlist of `exec-approvals.json`, read from the state directory, with when
//! each entry last let a command run.

use std::path::Path;

use super::{file, unix_ms, FILE_NAME};
use crate::config::Config;
use crate::gateway_client::{error_text, GatewayClient};
use crate::target::Target;

#[derive(Debug, clap::Subcommand)]
pub enum ApprovalsCommand {
    /// List the commands waiting for an answer, and the allowlist with each entry's last use.
    List {
        /// Print the gateway's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Run the command of approval ID (once).
    Approve {
        id: String,
        /// Also add the command to the allowlist for its workdir (exec-approvals.json).
        #[arg(long)]
        always: bool,
    },
    /// Refuse the command of approval ID; the agent is told it was denied.
    Deny { id: String },
}

pub fn run(target: Target, command: ApprovalsCommand) -> anyhow::Result<()> {
    target.print_note();
    let config = Config::load(&target.paths)?;
    let client = GatewayClient::new(&config);
    let (method, path) = match &command {
        ApprovalsCommand::List { .. } => (hyper::Method::GET, "/api/approvals".to_owned()),
        ApprovalsCommand::Approve { id, always } => {
            let action = if *always { "always" } else { "approve" };
            (
                hyper::Method::POST,
                format!("/api/approvals/{}/{action}", checked(id)?),
            )
        }
        ApprovalsCommand::Deny { id } => (
            hyper::Method::POST,
            format!("/api/approvals/{}/deny", checked(id)?),
        ),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) = runtime.block_on(client.request(method, &path, true))?;
    let addr = client.addr();
    if status.as_u16() == 401 {
        anyhow::bail!(
            "the gateway on {addr} refused the token (401: {}): {} in {} must be the running \
             gateway's (run as the user the gateway runs as, or with sudo on the appliance)",
            error_text(&body),
            crate::config::TOKEN_ENV,
            target.paths.env_file().display()
        );
    }
    if !status.is_success() {
        anyhow::bail!(
            "{} (the gateway on {addr} answered {status})",
            error_text(&body)
        );
    }
    let mut answer: serde_json::Value = serde_json::from_slice(&body)?;
    let allowlist = || {
        let path = target.paths.state_dir.join(FILE_NAME);
        let entries = file::load(&path).map(|doc| doc.effective().allowlist);
        if let Err(e) = &entries {
            eprintln!("warning: {e} (every command that needs it is denied until it is fixed)");
        }
        (path, entries.ok())
    };
    match command {
        ApprovalsCommand::List { json: true } => {
            if let (_, Some(entries)) = allowlist() {
                answer["allowlist"] = serde_json::to_value(entries)?;
            }
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
        ApprovalsCommand::List { json: false } => {
            let pending = answer["pending"].as_array().cloned().unwrap_or_default();
            if pending.is_empty() {
                println!("No exec approval is waiting.");
            }
            for p in pending {
                let field = |k: &str| p[k].as_str().unwrap_or("?").to_owned();
                let left = p["expiresAt"]
                    .as_u64()
                    .map(|t| t.saturating_sub(unix_ms()) / 1000)
                    .unwrap_or(0);
                println!(
                    "{}  {}\n    workdir {}  session {}  ({left} s left)",
                    field("id"),
                    field("command"),
                    field("workdir"),
                    field("sessionKey")
                );
            }
            if let (path, Some(entries)) = allowlist() {
                print!("{}", allowlist_text(&path, &entries));
            }
        }
        _ => println!("{}", answer["result"].as_str().unwrap_or_default()),
    }
    Ok(())
}

/// The allowlist, one entry a line: its pattern, what its `argPattern` allows, and its last
/// use (`lastUsedAt`, with the command and the executable when the file has them).
fn allowlist_text(path: &Path, entries: &[file::Entry]) -> String {
    if entries.is_empty() {
        return format!("\nNo allowlist entry in {}.\n", path.display());
    }
    let mut out = format!("\nAllowlist ({}, agents.main):\n", path.display());
    for e in entries {
        let args = match e.arg_pattern.as_deref() {
            None => String::new(),
            Some(p) if p.starts_with(super::command::EXACT_PREFIX) => {
                "  (one exact command in one workdir)".to_owned()
            }
            Some(p) => format!("  args /{p}/"),
        };
        let used = match e.last_used_at.and_then(|ms| i64::try_from(ms).ok()) {
            None => "never used by clawfort".to_owned(),
            Some(ms) => {
                let at = jiff::Timestamp::from_millisecond(ms)
                    .map_or_else(|_| format!("{ms} ms"), |t| t.to_string());
                let what = e
                    .last_used_command
                    .as_deref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                let exe = e
                    .last_resolved_path
                    .as_deref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default();
                format!("last used {at}{what}{exe}")
            }
        };
        out.push_str(&format!("  {}{args}\n    {used}\n", e.pattern));
    }
    out
}

/// An id as the gateway makes them: letters and digits only (it goes into a URL path).
fn checked(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) || id.len() > 32 {
        anyhow::bail!("`{id}` is not an approval id (letters and digits, as the prompt shows)");
    }
    Ok(id)
}
