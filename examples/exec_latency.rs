//! Latency of one confined host `exec` of `true` (`/bin/sh -c true` under Landlock, rlimits,
//! a clean environment and its own process group), against the same command spawned
//! unconfined, both through tokio on one runtime. Run as the service user (root is refused):
//!
//! ```text
//! cargo build --release --example exec_latency
//! setpriv --reuid=65534 --regid=65534 --clear-groups target/release/examples/exec_latency 500
//! ```
//!
//! Prints min, p50, p90 and p99 over N runs (default 500) after 20 unmeasured ones.

use std::time::{Duration, Instant};

use clawfort::confine::{self, Ending, Policy};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().nth(1).map_or(Ok(500), |n| n.parse())?;
    let support = confine::available().map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let policy =
        Policy::new(&dir.path().join("workspace"), &[], &[]).map_err(anyhow::Error::msg)?;
    policy.ensure_workspace().map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cancel = CancellationToken::new();
    let confined = rt.block_on(measure(runs, || async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let out = confine::run(&policy, "true", policy.workspace(), deadline, &cancel).await;
        assert_eq!(out.map(|o| o.ending), Ok(Ending::Exited(0)));
    }));
    let plain = rt.block_on(measure(runs, || async {
        let status = tokio::process::Command::new("/bin/sh")
            .args(["-c", "true"])
            .status()
            .await;
        assert!(status.is_ok_and(|s| s.success()));
    }));
    println!("host exec of `true`, {runs} runs, {}", support.describe());
    for (name, figures) in [("confined", confined), ("unconfined spawn", plain)] {
        println!(
            "{name:>17}: min {:.2} ms  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms",
            figures[0], figures[1], figures[2], figures[3]
        );
    }
    Ok(())
}

/// Min, p50, p90, p99 in milliseconds of `runs` sequential calls, after 20 warm-ups.
async fn measure<F, Fut>(runs: usize, mut once: F) -> [f64; 4]
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..20 {
        once().await;
    }
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        once().await;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    [ms[0], at(0.5), at(0.9), at(0.99)]
}
