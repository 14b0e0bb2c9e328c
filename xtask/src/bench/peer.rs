//! `cargo xtask bench peer --binary PATH --peer-args '...'`: the figures any gateway binary
//! can be measured by, for a comparison with a peer (the issue names ZeroClaw and OpenClaw):
//! spawn to the first accepted TCP connection on `{port}`, and `VmRSS` / `VmHWM` after
//! `--idle-secs`, each the median of `--runs` fresh starts.
//!
//! The peer gets an empty `HOME` (`{home}`) and the fakes run in this process, so its
//! arguments can point a model provider at `{model}` and a Telegram channel at `{telegram}`
//! (the bot token is in `$BENCH_TELEGRAM_TOKEN`, the key in `$BENCH_API_KEY`); how a peer is
//! configured is the peer's business. Only the spawned process is measured: a peer that
//! forks helpers is reported with their number, not their memory.
//!
//! Without `--peer-args` the binary is taken for clawfort and started as
//! `--config {home}/openclaw.json gateway --port {port}` with a provider and a Telegram
//! channel configured against the fakes, so `bench peer` gives the same figures for
//! clawfort itself.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clawfort_fakes::model::{self, Canned};
use clawfort_fakes::telegram;
use serde_json::json;

use super::{free_port, load_average, rss_kib, spawn, wait_for_listen, RemoveOnDrop};

const BOT_TOKEN: &str = "123456789:AApeerTOKENpeerTOKENpeerTOKENpeer12";
const API_KEY: &str = "sk-bench-peer-0123456789abcdefghijklmnopq";

pub struct Options {
    args: Option<String>,
    idle: Duration,
    runs: usize,
}

impl From<&super::Args> for Options {
    fn from(args: &super::Args) -> Self {
        Self {
            args: args.peer_args.clone(),
            idle: Duration::from_secs(args.idle_secs),
            runs: args.runs,
        }
    }
}

struct RunFigures {
    /// Requests the peer made to the fake model and Bot API (did it use them?).
    model_calls: usize,
    telegram_calls: usize,
    listen_ms: f64,
    rss_kib: u64,
    hwm_kib: u64,
    children: usize,
}

pub fn run(binary: &Path, opts: &Options, json_out: bool) -> Result<()> {
    ensure!(opts.runs > 0, "--runs must be at least 1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let load_before = load_average();
    let mut runs = Vec::new();
    for n in 0..opts.runs {
        runs.push(one_run(binary, opts, &runtime).with_context(|| format!("run {}", n + 1))?);
    }
    let load_after = load_average();
    let median = |f: &dyn Fn(&RunFigures) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[(v.len() - 1) / 2]
    };
    let listen_ms = median(&|r| r.listen_ms);
    let rss_mib = median(&|r| r.rss_kib as f64 / 1024.0);
    let hwm_mib = median(&|r| r.hwm_kib as f64 / 1024.0);
    let children = runs.iter().map(|r| r.children).max().unwrap_or(0);
    if json_out {
        let report = json!({
            "binary": binary.display().to_string(),
            "args": opts.args,
            "idleSecs": opts.idle.as_secs(),
            "loadAverage": {"before": load_before, "after": load_after},
            "median": {"listenMs": listen_ms, "idleRssMiB": rss_mib, "idleHwmMiB": hwm_mib},
            "childProcesses": children,
            "runs": runs.iter().map(|r| json!({
                "modelCalls": r.model_calls, "telegramCalls": r.telegram_calls,
                "listenMs": r.listen_ms, "idleRssKiB": r.rss_kib, "idleHwmKiB": r.hwm_kib,
                "childProcesses": r.children,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "peer benchmark: {} ({} run(s), medians)",
        binary.display(),
        runs.len()
    );
    println!("  load average before: {load_before}; after: {load_after}");
    println!("  start to listening (TCP)   {listen_ms:>8.1} ms");
    println!(
        "  idle {} s                  VmRSS {rss_mib:.1} MiB, VmHWM {hwm_mib:.1} MiB",
        opts.idle.as_secs()
    );
    for (n, r) in runs.iter().enumerate() {
        println!(
            "  run {}: listen {:.1} ms, VmRSS {:.1} MiB, VmHWM {:.1} MiB; it called the fake \
             Bot API {} times, the fake model {} times",
            n + 1,
            r.listen_ms,
            r.rss_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0,
            r.telegram_calls,
            r.model_calls
        );
    }
    if children > 0 {
        println!("  note: it started {children} child process(es), not counted above");
    }
    Ok(())
}

fn one_run(binary: &Path, opts: &Options, rt: &tokio::runtime::Runtime) -> Result<RunFigures> {
    let canned = Canned {
        api_key: Some(API_KEY.to_owned()),
        ..Canned::new("Hello from the fake model.")
    };
    let model = rt.block_on(model::Fake::start(model::canned(canned)));
    let tg = rt.block_on(telegram::Fake::start(BOT_TOKEN));
    let home = std::env::temp_dir().join(format!(
        "clawfort-bench-peer-{}-{}",
        std::process::id(),
        free_port()?
    ));
    let _cleanup = RemoveOnDrop(home.clone());
    std::fs::create_dir_all(&home)?;
    let port = free_port()?;
    let template = match &opts.args {
        Some(args) => args.clone(),
        None => {
            clawfort_config(&home, &model, &tg)?;
            "--config {home}/openclaw.json gateway --port {port}".to_owned()
        }
    };
    let args: Vec<String> = template
        .split_whitespace()
        .map(|word| {
            word.replace("{port}", &port.to_string())
                .replace("{home}", &home.display().to_string())
                .replace("{model}", &model.url(""))
                .replace("{telegram}", &tg.api_root())
        })
        .collect();
    let started = Instant::now();
    let mut child = spawn(
        binary,
        args.iter().map(OsStr::new),
        &[
            ("HOME", home.as_os_str()),
            ("BENCH_TELEGRAM_TOKEN", OsStr::new(BOT_TOKEN)),
            ("BENCH_API_KEY", OsStr::new(API_KEY)),
        ],
    )?;
    let result = (|| {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listen = wait_for_listen(&mut child, addr, started)?;
        std::thread::sleep(opts.idle);
        ensure!(child.try_wait()?.is_none(), "the peer exited while idling");
        Ok(RunFigures {
            model_calls: model.seen().len(),
            telegram_calls: tg.all_calls().len(),
            listen_ms: listen.as_secs_f64() * 1000.0,
            rss_kib: rss_kib(child.id(), "VmRSS")?,
            hwm_kib: rss_kib(child.id(), "VmHWM")?,
            children: children(child.id()),
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The processes `pid` started (from `/proc/PID/task/*/children`).
fn children(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .map(|c| c.split_whitespace().count())
        .sum()
}

/// clawfort's state in `home`: a provider and a Telegram channel against the fakes.
fn clawfort_config(home: &Path, model: &model::Fake, tg: &telegram::Fake) -> Result<()> {
    std::fs::write(
        home.join(".env"),
        format!(
            "OPENCLAW_GATEWAY_TOKEN=bench-token-0123456789abcdef0123456789abcdef\n\
             FAKE_API_KEY={API_KEY}\nTELEGRAM_BOT_TOKEN={BOT_TOKEN}\n"
        ),
    )?;
    let config = json!({
        "models": {"providers": {"fake": {
            "api": "openai-completions", "baseUrl": model.url("/v1"), "apiKey": "${FAKE_API_KEY}",
            "models": [{"id": "m1", "contextWindow": 200000}],
        }}},
        "agents": {"defaults": {"model": "fake/m1"}},
        "channels": {"telegram": {
            "botToken": "${TELEGRAM_BOT_TOKEN}", "apiRoot": tg.api_root(), "dmPolicy": "pairing",
        }},
    });
    std::fs::write(home.join("openclaw.json"), config.to_string())?;
    Ok(())
}
