//! The measuring half of `cargo xtask bench sandbox` (which builds it in release and runs it
//! as root): `exec` of `true` in the Docker sandbox through [`Sandbox::run`] (the code the
//! `exec` tool calls: bollard over the rootless daemon's socket, exec create, start with the
//! output attached, inspect), in a warm container of one scope; and the first command of a
//! fresh scope, which creates and starts its container.
//!
//! The daemon is the sandbox test's (`tests/sandbox/daemon.rs`: a rootless dockerd of the
//! test user `clawfort-sbx-test`, busybox imported as its image), so this needs root, the
//! packages `cargo xtask ci` installs, and that user.
//!
//! `sandbox_latency [RUNS]` prints one JSON object: per measure, min, p50, p90 and p99 in
//! milliseconds (warm: RUNS calls, default 100, after 20 unmeasured; creation: 10 scopes,
//! one after another, each container removed before the next is made).

#[path = "../tests/sandbox/daemon.rs"]
mod daemon;
#[path = "support/latency.rs"]
mod latency;

use std::time::Duration;

use clawfort::config::{DmScope, SandboxConfig, SandboxScope};
use clawfort::confine::Ending;
use clawfort::sandbox::Sandbox;
use clawfort::sessions::{direct_key, SessionKey};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Fresh scopes measured for container creation.
const CREATIONS: usize = 10;

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().nth(1).map_or(Ok(100), |n| n.parse())?;
    anyhow::ensure!(runs > 0, "RUNS must be 1 or more");
    let d = daemon::Daemon::start().map_err(|why| anyhow::anyhow!("no test daemon: {why}"))?;
    let sandbox = Sandbox::new(
        SandboxConfig {
            image: daemon::IMAGE.to_owned(),
            // A container per session, so that a new session is a new container.
            scope: SandboxScope::Session,
            ..SandboxConfig::default()
        },
        d.socket.clone(),
        &d.base.path().join("agent"),
        &d.base.path().join("state"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let session = |peer: String| direct_key(DmScope::PerChannelPeer, "telegram", "default", &peer);
    let once = |key: SessionKey| {
        let sandbox = &sandbox;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let outcome = sandbox
                .run(&key, "true", None, deadline, &CancellationToken::new())
                .await
                .unwrap_or_else(|e| panic!("exec of true in the sandbox: {e}"));
            assert_eq!(
                outcome.ending,
                Ending::Exited(0),
                "{}",
                String::from_utf8_lossy(&outcome.output)
            );
        }
    };
    let warm = rt.block_on(latency::measure(runs, || once(session("warm".into()))));
    // Each new scope's container is removed after it is measured: many at once would
    // measure the host's process count, not the creation (see `container::create_body`).
    let created = rt.block_on(async {
        let mut ms = Vec::with_capacity(CREATIONS);
        for scope in 0..CREATIONS {
            sandbox.remove_all().await;
            let started = Instant::now();
            once(session(format!("new-{scope}"))).await;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        sandbox.remove_all().await;
        latency::summary(ms)
    });
    let report = serde_json::json!({
        "runs": runs,
        "warmExec": latency::figures(warm),
        "firstCommand": latency::figures(created),
    });
    println!("{report}");
    Ok(())
}
