//! Applying the new settings: the gateway reads its config only at start, and the egress
//! proxy (when installed) reads its allow list, the providers' and Telegram's hosts as setup
//! just wrote them from the config, at start too. So, as root on a machine whose systemd runs `clawfort.service`, both are
//! restarted, and the gateway's `/healthz` is polled until it answers.

use std::time::Duration;

use crate::audit::command::{self, Outcome};
use crate::audit::installation::UNIT;
use crate::config::Config;
use crate::gateway_client::GatewayClient;

/// The egress proxy's unit, restarted with the gateway when it is installed.
pub use crate::audit::installation::EGRESS_UNIT;
/// How long the gateway may take to answer `/healthz` after its restart.
pub const HEALTH_WAIT: Duration = Duration::from_secs(20);
/// `systemctl restart` waits for the old process to stop (the unit allows it 15 s).
const RESTART_LIMIT: Duration = Duration::from_secs(60);

/// What the restart did.
#[derive(Debug, Clone)]
pub struct Restarted {
    pub units: Vec<String>,
}

/// Restarts the egress proxy (if installed) and the gateway, then waits for `/healthz` on
/// the address `config` gives. An error says what failed and how to look.
pub async fn restart(config: &Config) -> anyhow::Result<Restarted> {
    let (units, outcome) = tokio::task::spawn_blocking(|| {
        let mut units = Vec::new();
        if unit_installed(EGRESS_UNIT) {
            units.push(EGRESS_UNIT.to_owned());
        }
        units.push(UNIT.to_owned());
        let mut args = vec!["restart"];
        args.extend(units.iter().map(String::as_str));
        let outcome = command::run_within("systemctl", &args, RESTART_LIMIT);
        (units, outcome)
    })
    .await?;
    match outcome {
        Outcome::Ran { ok: true, .. } => {}
        Outcome::Ran { stderr, .. } => anyhow::bail!(
            "`systemctl restart {}` failed: {}; see `journalctl -u {UNIT}`",
            units.join(" "),
            stderr.trim()
        ),
        Outcome::Missing => anyhow::bail!("systemctl is not installed, so nothing was restarted"),
        Outcome::Failed(why) => anyhow::bail!("{why}"),
    }
    let client = GatewayClient::new(config);
    anyhow::ensure!(
        client.wait_healthy(HEALTH_WAIT).await,
        "the gateway did not answer on {} within {} s after its restart; see `clawfort logs` \
         or `journalctl -u {UNIT}`",
        client.addr(),
        HEALTH_WAIT.as_secs()
    );
    Ok(Restarted { units })
}

/// Whether systemd knows `unit` (`LoadState=loaded`).
fn unit_installed(unit: &str) -> bool {
    matches!(
        command::run("systemctl", &["show", unit, "--property", "LoadState"]),
        Outcome::Ran { ok: true, stdout, .. } if stdout.trim() == "LoadState=loaded"
    )
}
