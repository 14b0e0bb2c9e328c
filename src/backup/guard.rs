//! Backups and restores run only while no gateway writes the state directory: a backup
//! taken mid-write could hold half a transcript, and a restore swapped in under a running
//! gateway would be overwritten by what it still holds in memory.
//!
//! Two signs of a running gateway: the crash marker (`gateway.running`) naming a live
//! process, which every gateway writes, and, for the installation `clawfort.service` runs,
//! the unit being active (it may be starting and not have written the marker yet).

use std::process::{Command, Stdio};

use crate::events::marker;
use crate::target::Target;

/// How to stop the gateway, for the refusals.
const STOP: &str = "stop it first (on the appliance: sudo systemctl stop clawfort; a gateway \
                    you started by hand: stop that process), then run this again";

/// An error when a gateway runs on `target`'s installation.
pub fn refuse_if_running(target: &Target) -> anyhow::Result<()> {
    let state_dir = &target.paths.state_dir;
    if let Some(pid) = marker::live_pid(state_dir) {
        anyhow::bail!(
            "the gateway is running on {} (process {pid}, per {}): {STOP}. If no gateway \
             runs, the marker is stale: remove it",
            state_dir.display(),
            state_dir.join(marker::FILE_NAME).display()
        );
    }
    if target.service.is_some() && service_active() {
        anyhow::bail!("clawfort.service is active: {STOP}");
    }
    Ok(())
}

/// Whether systemd reports `clawfort.service` active or on its way there ("activating",
/// "reloading"): only "inactive", "failed" or no unit at all count as stopped. Without
/// systemd (a test, a container) there is no service to ask.
fn service_active() -> bool {
    let Ok(out) = Command::new("systemctl")
        .args(["is-active", "clawfort.service"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    let state = String::from_utf8_lossy(&out.stdout);
    !matches!(state.trim(), "inactive" | "failed" | "unknown" | "")
}
