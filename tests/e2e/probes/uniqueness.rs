//! Nothing machine-specific is baked into the image: two boots of the same image have different
//! SSH host keys, machine-ids and gateway tokens. Secrets are compared as hashes, never shown.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::ssh::Session;
use crate::Ctx;

/// How long the second guest may still need to boot when this probe starts.
const PEER_WAIT: Duration = Duration::from_secs(300);

pub fn first_boot_identity_unique(ctx: &Ctx) -> Result<String> {
    let peer = ctx
        .testbed
        .peer
        .as_ref()
        .context("no second boot of the image in the testbed")?;
    let deadline = Instant::now() + PEER_WAIT;
    let peer_session = loop {
        match Session::open(&ctx.testbed, peer) {
            Ok(session) => break session,
            Err(err) if Instant::now() > deadline => {
                return Err(err.context(format!(
                    "the second boot ({}) never accepted SSH",
                    peer.address
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_secs(5)),
        }
    };
    let mine = identity(ctx, &ctx.admin)?;
    let theirs = identity(ctx, &peer_session)?;
    let mut shared = Vec::new();
    for (what, a, b) in [
        ("SSH host keys", &mine.host_keys, &theirs.host_keys),
        ("machine-id", &mine.machine_id, &theirs.machine_id),
        ("gateway token", &mine.token, &theirs.token),
    ] {
        if a.iter().any(|item| b.contains(item)) {
            shared.push(what);
        }
    }
    ensure!(shared.is_empty(), "both boots share: {}", shared.join(", "));
    Ok(format!(
        "{} host keys, machine-id and token all differ between two boots",
        mine.host_keys.len()
    ))
}

struct Identity {
    host_keys: Vec<String>,
    machine_id: Vec<String>,
    token: Vec<String>,
}

fn identity(ctx: &Ctx, session: &Session) -> Result<Identity> {
    let keys = session.check_root("cat /etc/ssh/ssh_host_*_key.pub")?;
    let host_keys: Vec<String> = keys
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(str::to_owned)
        .collect();
    if host_keys.is_empty() {
        bail!("{} has no SSH host keys", session.guest.name);
    }
    let machine_id = session.check("cat /etc/machine-id")?.trim().to_owned();
    ensure!(
        machine_id.len() == 32 && machine_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{} has no initialised machine-id (`{machine_id}`)",
        session.guest.name
    );
    let token = crate::probes::gateway::gateway_token(ctx, session)?;
    Ok(Identity {
        host_keys,
        machine_id: vec![machine_id],
        token: vec![hex_sha256(&token)],
    })
}

fn hex_sha256(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
