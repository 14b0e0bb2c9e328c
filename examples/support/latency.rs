//! Latency figures for the measuring programs of `cargo xtask bench` (included with `#[path]`).

use std::time::Instant;

/// Min, p50, p90, p99 in milliseconds of `runs` sequential calls, after 20 warm-ups.
pub async fn measure<F, Fut>(runs: usize, mut once: F) -> [f64; 4]
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
    summary(ms)
}

/// Min, p50, p90, p99 of `ms` (not empty).
pub fn summary(mut ms: Vec<f64>) -> [f64; 4] {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    [ms[0], at(0.5), at(0.9), at(0.99)]
}

/// The figures as the bench's JSON reports them.
pub fn figures(ms: [f64; 4]) -> serde_json::Value {
    serde_json::json!({"min": ms[0], "p50": ms[1], "p90": ms[2], "p99": ms[3]})
}
