//! Nothing machine-specific is baked into the image: two boots of the same image have different
//! SSH host keys, machine-ids and gateway tokens. Secrets are compared as hashes, never shown.
//!
//! The second boot exists only for this comparison, and a first boot keeps a guest busy for
//! minutes after SSH answers (rootless Docker's first start, the integrity baseline) on the
//! same two host cores as the guest under test. So its identity is read in the background as soon as it has
//! one ([`PeerCapture::start`], when the suite starts) and the second boot is powered off right
//! after; the probe, in its place in the list, compares.

use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::ssh::Session;
use crate::testbed::Testbed;
use crate::Ctx;

/// How long the second guest may still need to boot, and then to write its gateway token, once
/// the suite starts. It boots under emulation on the two cores the guest under test and the
/// port scans also use: one CI run saw it reach cloud-init's network stage 190 s after
/// power-on (40 s alone), and another never answered within 300 s. The suite itself takes about
/// 480 s before this probe's turn, so a longer bound costs nothing when the peer is on time.
const PEER_WAIT: Duration = Duration::from_secs(600);

/// Serial console lines quoted when the second boot never answers: enough to show how far it got.
const SERIAL_TAIL_LINES: usize = 4;

/// The second boot's identity, being read in the background.
pub struct PeerCapture(Mutex<Option<JoinHandle<Result<Captured>>>>);

/// What the background thread read, and how long the second boot took to answer SSH.
struct Captured {
    identity: Identity,
    ssh_after: Duration,
}

impl PeerCapture {
    /// Starts reading the second boot's identity when the testbed has one and this run compares
    /// it (a later run on the same testbed finds it powered off); the thread powers it off once
    /// it has read it.
    pub fn start(testbed: &Testbed) -> Self {
        let selected = testbed.only.is_empty()
            || testbed
                .only
                .iter()
                .any(|name| name == "first_boot_identity_unique");
        let handle = (testbed.peer.is_some() && selected).then(|| {
            let testbed = testbed.clone();
            std::thread::spawn(move || capture(&testbed))
        });
        Self(Mutex::new(handle))
    }

    /// The identity read in the background (waiting for it if it is still being read).
    fn take(&self) -> Result<Captured> {
        let handle = self
            .0
            .lock()
            .map_err(|_| anyhow::anyhow!("the second boot's capture lock is poisoned"))?
            .take()
            .context("no second boot of the image in the testbed")?;
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("reading the second boot's identity panicked"))?
    }
}

/// Waits for the second boot's SSH and gateway token, reads its identity, powers it off.
fn capture(testbed: &Testbed) -> Result<Captured> {
    let peer = testbed.peer.as_ref().context("no second boot")?;
    let started = Instant::now();
    let deadline = started + PEER_WAIT;
    let session = loop {
        match Session::open(testbed, peer) {
            Ok(session) => break session,
            Err(err) if Instant::now() > deadline => {
                return Err(err.context(format!(
                    "the second boot ({}) never accepted SSH within {} s; the last lines of its \
                     serial console {}:\n{}",
                    peer.address,
                    PEER_WAIT.as_secs(),
                    peer.serial_log.display(),
                    serial_tail(&peer.serial_log)
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_secs(5)),
        }
    };
    let ssh_after = started.elapsed();
    // First boot's setup writes the token just before the gateway starts; bounded.
    let env = format!("/home/{}/.openclaw/.env", testbed.service_user);
    let left = deadline.saturating_duration_since(Instant::now()).as_secs();
    let written = session.sudo_with(
        &format!(
            "for i in $(seq 1 {left}); do grep -q '^OPENCLAW_GATEWAY_TOKEN=.' {env} && exit 0; \
             sleep 1; done; exit 1"
        ),
        Duration::from_secs(left + 30),
    )?;
    ensure!(
        written.success,
        "the second boot wrote no gateway token to {env} within {} s",
        PEER_WAIT.as_secs()
    );
    let identity = identity(testbed, &session)?;
    // Its part is done: the guest under test gets the host's cores back. The connection drops
    // as the guest goes down, so the outcome is not checked.
    let _ = session.sudo_with("systemctl poweroff --no-block", Duration::from_secs(30));
    Ok(Captured {
        identity,
        ssh_after,
    })
}

/// The console's last lines with terminal control sequences dropped, or why there are none.
fn serial_tail(path: &std::path::Path) -> String {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(err) => return format!("(unreadable: {err})"),
    };
    let lines: Vec<String> = text
        .lines()
        .map(|line| line.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|line| !line.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return "(empty: the firmware never wrote to it)".to_owned();
    }
    lines[lines.len().saturating_sub(SERIAL_TAIL_LINES)..].join("\n")
}

pub fn first_boot_identity_unique(ctx: &Ctx) -> Result<String> {
    let Captured {
        identity: theirs,
        ssh_after,
    } = ctx.peer.take()?;
    let mine = identity(&ctx.testbed, &ctx.admin)?;
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
        "{} host keys, machine-id and token all differ between two boots (the second boot \
         answered SSH {:.0} s into the suite, of {} s allowed, and was read and powered off in \
         the background)",
        mine.host_keys.len(),
        ssh_after.as_secs_f64(),
        PEER_WAIT.as_secs()
    ))
}

pub struct Identity {
    host_keys: Vec<String>,
    machine_id: Vec<String>,
    token: Vec<String>,
}

fn identity(testbed: &Testbed, session: &Session) -> Result<Identity> {
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
    let token = crate::probes::gateway::gateway_token(testbed, session)?;
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
