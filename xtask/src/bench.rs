//! `cargo xtask bench gateway|agent|peer|exec|sandbox [--json]`: performance figures.
//!
//! `gateway` (this file): builds the release binary, starts it on a free loopback port with a
//! throw-away state dir, and measures: time from spawn to the first 200 from `/healthz`
//! (polled every 0.5 ms), idle RSS (VmRSS after a settle), then `wrk -t2 -c32` against
//! `/healthz`, authorised `/api/status`, and rejected `/api/status` twice: with the default
//! failure limiter (the first 10 failures are 401, the rest 429 during the lockout) and with
//! the limiter off (every request is a rejected token check). Auth failures are counted from
//! the gateway's log: its `auth failure from` lines plus the counts in its `N further auth
//! failures ... suppressed` summaries; wrk gives the total. Last, `/healthz` again while a
//! hostile client keeps `HOSTILE` connections open (half slowloris, half pipelining requests
//! whose answers it never reads), reopening every one the gateway closes.
//!
//! `agent` ([`agent`]): the agent's figures against zero-latency fakes (overhead per turn,
//! idle RSS with Telegram polling, concurrent sessions). `peer` ([`peer`]): start to
//! listening and idle RSS of any binary, for a comparison with a peer gateway. `exec` and
//! `sandbox` ([`example`]): `exec` of `true` through the `exec` tool on the host under
//! Landlock, and in the Docker sandbox. Results go into BENCHMARKS.md by hand.

mod agent;
mod example;
mod peer;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use xshell::{cmd, Shell};

#[derive(clap::Args)]
pub struct Args {
    /// What to benchmark: `gateway` (HTTP throughput), `agent` (turn overhead, idle RSS with
    /// Telegram polling, concurrent sessions), `peer` (start and idle RSS of `--binary`) or
    /// `exec` (host exec of `true` under Landlock) or `sandbox` (exec of `true` in the Docker
    /// sandbox, and container creation; needs root and the sandbox test's packages and user).
    #[arg(default_value = "gateway", value_parser = ["gateway", "agent", "peer", "exec", "sandbox"])]
    pub target: String,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Commands measured, after 20 unmeasured (exec: default 500; sandbox: default 100).
    #[arg(long)]
    pub execs: Option<usize>,
    /// Seconds per wrk run (gateway).
    #[arg(long, default_value_t = 10)]
    pub duration: u32,
    /// Benchmark this binary instead of building the release gateway: an older clawfort
    /// build for an A/B run (gateway, agent), or any peer gateway (peer, with --peer-args).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Exit non-zero when a target is missed (agent, exec, sandbox); without it the bench
    /// only reports PASS/FAIL.
    #[arg(long)]
    pub check: bool,
    /// Repeat the measurement on fresh processes and report the medians (agent, peer).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seconds the process idles before its RSS is read (agent, peer).
    #[arg(long, default_value_t = 10)]
    pub idle_secs: u64,
    /// Turns measured one at a time for the overhead figure, after 20 unmeasured (agent).
    #[arg(long, default_value_t = 500)]
    pub turns: usize,
    /// Turns per sender in the overhead phase: the length of each conversation, whose whole
    /// history every turn reads (agent).
    #[arg(long, default_value_t = 20)]
    pub conversation: usize,
    /// Pause between one reply and the next message, in ms (agent).
    #[arg(long, default_value_t = 10)]
    pub gap_ms: u64,
    /// Distinct approved senders writing at once (agent).
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// Messages each of those senders sends (agent).
    #[arg(long, default_value_t = 5)]
    pub messages: usize,
    /// The fake model's thinking time per call, in ms (agent; 0 measures the gateway alone,
    /// more shows whether sessions run in parallel).
    #[arg(long, default_value_t = 0)]
    pub model_latency_ms: u64,
    /// The provider API the gateway is configured with (agent).
    #[arg(long, default_value = "openai-completions",
          value_parser = ["openai-completions", "anthropic-messages"])]
    pub api: String,
    /// The peer's command line after the binary (peer). Placeholders: `{port}` (a free
    /// loopback port it must listen on), `{home}` (its empty HOME), `{model}` and
    /// `{telegram}` (base URLs of the fake model and Bot API, bot token in
    /// `$BENCH_TELEGRAM_TOKEN`, API key in `$BENCH_API_KEY`).
    #[arg(long, allow_hyphen_values = true)]
    pub peer_args: Option<String>,
}

/// One wrk run.
struct Load {
    name: &'static str,
    requests: u64,
    per_sec: f64,
    non_2xx: u64,
    /// Auth failures, from the gateway log (rejected runs only).
    unauthorized: Option<u64>,
}

/// Connections the slow-client run keeps open.
const HOSTILE: usize = 1000;

/// Runs the benchmark; fails only with `--check` and a missed target (after the report).
pub fn run(args: Args) -> Result<ExitCode> {
    let sh = Shell::new()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives one level below the project root")?
        .to_path_buf();
    sh.change_dir(&root);
    if args.target == "peer" {
        let binary = args.binary.clone().context(
            "`bench peer` needs --binary PATH (and --peer-args for a non-clawfort peer)",
        )?;
        peer::run(&binary, &peer::Options::from(&args), args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let tool = match args.target.as_str() {
        "exec" => Some((&example::EXEC, 500)),
        "sandbox" => Some((&example::SANDBOX, 100)),
        _ => None,
    };
    if let Some((example, default_runs)) = tool {
        let runs = args.execs.unwrap_or(default_runs);
        let met = example::run(&sh, &target_dir, example, runs, args.json)?;
        return Ok(if args.check && !met {
            eprintln!("the target was missed (see FAIL above)");
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    if args.target == "gateway" {
        crate::image::host_tools::ensure(crate::image::host_tools::BENCH_TOOLS)?;
    }
    let binary = match args.binary {
        Some(ref binary) => binary.clone(),
        None => {
            cmd!(sh, "cargo build --release --quiet -p clawfort").run()?;
            target_dir.join("release/clawfort")
        }
    };
    if args.target == "agent" {
        let options = agent::Options {
            runs: args.runs,
            idle: Duration::from_secs(args.idle_secs),
            warmup: 20,
            turns: args.turns,
            conversation: args.conversation,
            gap: Duration::from_millis(args.gap_ms),
            sessions: args.sessions,
            messages: args.messages,
            model_latency: Duration::from_millis(args.model_latency_ms),
            api: args.api.clone(),
        };
        let all_met = agent::run(&binary, &options, args.json)?;
        return Ok(if args.check && !all_met {
            eprintln!("a target was missed (see FAIL above)");
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }

    let state = std::env::temp_dir().join(format!("clawfort-bench-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(state.clone());
    std::fs::create_dir_all(&state)?;
    let token = "bench-token-0123456789abcdef0123456789abcdef";
    std::fs::write(
        state.join(".env"),
        format!("OPENCLAW_GATEWAY_TOKEN={token}\n"),
    )?;

    // Run 1: default configuration.
    let mut gw = Gateway::start(&binary, &state, "{}")?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss_kib = gw.rss_kib("VmRSS")?;
    let d = args.duration;
    let healthz = wrk(&sh, "healthz", gw.port, "/healthz", None, d)?;
    let authorised = wrk(
        &sh,
        "status, authorised",
        gw.port,
        "/api/status",
        Some(token),
        d,
    )?;
    let before = gw.auth_failures()?;
    let mut rejected = wrk(
        &sh,
        "status, rejected (limiter on)",
        gw.port,
        "/api/status",
        Some("wrong-token"),
        d,
    )?;
    rejected.unauthorized = Some(gw.auth_failures()? - before);
    let peak_rss_kib = gw.rss_kib("VmHWM")?;
    let start = gw.start_time;
    gw.stop();

    // Run 2: limiter off, so every rejected request does the full token check and logs.
    let gw = Gateway::start(
        &binary,
        &state,
        "{ gateway: { auth: { rateLimit: { maxAttempts: 0 } } } }",
    )?;
    let before = gw.auth_failures()?;
    let mut unlimited = wrk(
        &sh,
        "status, rejected (limiter off)",
        gw.port,
        "/api/status",
        Some("wrong-token"),
        d,
    )?;
    unlimited.unauthorized = Some(gw.auth_failures()? - before);
    drop(gw);

    // Run 3: /healthz while a hostile client holds HOSTILE connections.
    let gw = Gateway::start(&binary, &state, "{}")?;
    let hostile = Hostile::start(gw.port);
    std::thread::sleep(Duration::from_secs(1));
    let under_attack = wrk(
        &sh,
        "healthz, 1000 hostile conns",
        gw.port,
        "/healthz",
        None,
        d,
    )?;
    let reopened = hostile.stop();
    drop(gw);

    let loads = [healthz, authorised, rejected, unlimited, under_attack];
    if args.json {
        let loads: Vec<_> = loads
            .iter()
            .map(|l| {
                serde_json::json!({
                    "name": l.name, "requests": l.requests, "requestsPerSec": l.per_sec,
                    "non2xx": l.non_2xx, "unauthorized401": l.unauthorized,
                })
            })
            .collect();
        let report = serde_json::json!({
            "startToHealthzMs": start.as_secs_f64() * 1000.0,
            "idleRssKiB": idle_rss_kib,
            "peakRssKiB": peak_rss_kib,
            "wrk": format!("wrk -t2 -c32 -d{d}s"),
            "loads": loads,
            "hostileReopened": reopened,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("clawfort gateway benchmark (release build, loopback, wrk -t2 -c32 -d{d}s)");
    println!(
        "  start to first /healthz 200   {:>10.1} ms",
        start.as_secs_f64() * 1000.0
    );
    println!(
        "  idle RSS                      {:>10.1} MiB",
        idle_rss_kib as f64 / 1024.0
    );
    println!(
        "  peak RSS (after load)         {:>10.1} MiB",
        peak_rss_kib as f64 / 1024.0
    );
    println!(
        "  {:<32} {:>10} {:>10} {:>8} {:>8}",
        "load", "req/s", "requests", "non-2xx", "failures"
    );
    for l in &loads {
        let unauthorized = l.unauthorized.map_or("-".to_string(), |n| n.to_string());
        println!(
            "  {:<32} {:>10.0} {:>10} {:>8} {:>8}",
            l.name, l.per_sec, l.requests, l.non_2xx, unauthorized
        );
    }
    println!("  hostile connections the gateway closed (and the client reopened): {reopened}");
    Ok(ExitCode::SUCCESS)
}

/// A client holding `HOSTILE` connections to the gateway: even ones send a request's first
/// header line and stop (slowloris), odd ones pipeline 100 requests and never read. A
/// connection the gateway closes is reopened at once.
struct Hostile {
    stop: Arc<AtomicBool>,
    reopened: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Hostile {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let reopened = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, reopened) = (stop.clone(), reopened.clone());
            std::thread::spawn(move || {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let pipelined = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(100);
                let open = |n: usize| -> Option<TcpStream> {
                    let mut s = TcpStream::connect(addr).ok()?;
                    s.set_nonblocking(true).ok()?;
                    let request: &[u8] = if n.is_multiple_of(2) {
                        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    } else {
                        pipelined.as_bytes()
                    };
                    let _ = s.write(request);
                    Some(s)
                };
                let mut conns: Vec<Option<TcpStream>> = (0..HOSTILE).map(open).collect();
                let mut probe = [0u8; 1];
                while !stop.load(Ordering::Relaxed) {
                    for (n, conn) in conns.iter_mut().enumerate() {
                        // Peeking reads nothing: the answers stay unread.
                        let closed = match conn {
                            Some(s) => {
                                matches!(s.peek(&mut probe), Ok(0))
                                    || matches!(s.peek(&mut probe), Err(e) if e.kind() != std::io::ErrorKind::WouldBlock)
                            }
                            None => true,
                        };
                        if closed {
                            *conn = open(n);
                            reopened.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Self {
            stop,
            reopened,
            thread,
        }
    }

    /// Stops the client; returns how many connections it had to reopen.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.reopened.load(Ordering::Relaxed)
    }
}

/// A running release gateway.
struct Gateway {
    child: Child,
    port: u16,
    /// Spawn to the first accepted TCP connection.
    listen_time: Duration,
    /// Spawn to the first `/healthz` 200.
    start_time: Duration,
    state: PathBuf,
}

impl Gateway {
    fn start(binary: &Path, state: &Path, config: &str) -> Result<Self> {
        std::fs::write(state.join("openclaw.json"), config)?;
        let port = free_port()?;
        let started = Instant::now();
        let config_path = state.join("openclaw.json");
        let port_arg = port.to_string();
        let args: [&OsStr; 5] = [
            "--config".as_ref(),
            config_path.as_ref(),
            "gateway".as_ref(),
            "--port".as_ref(),
            port_arg.as_ref(),
        ];
        let child = spawn(binary, args, &[])?;
        let mut gw = Self {
            child,
            port,
            listen_time: Duration::ZERO,
            start_time: Duration::ZERO,
            state: state.to_path_buf(),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        gw.listen_time = wait_for_listen(&mut gw.child, addr, started)?;
        while !healthz_ok(addr) {
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "the gateway did not serve /healthz within 10 s"
            );
            if let Some(status) = gw.child.try_wait()? {
                bail!("the gateway exited during start: {status}");
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        gw.start_time = started.elapsed();
        Ok(gw)
    }

    fn rss_kib(&self, field: &str) -> Result<u64> {
        rss_kib(self.child.id(), field)
    }

    /// Auth failures in the gateway's log file so far: one per `auth failure from` line plus
    /// the count of each `N further auth failures ... suppressed` summary. Waits for the
    /// summary of the current window first.
    fn auth_failures(&self) -> Result<u64> {
        std::thread::sleep(Duration::from_secs(3));
        let log = std::fs::read_to_string(self.state.join("logs/gateway.log")).unwrap_or_default();
        Ok(log
            .lines()
            .map(|l| {
                if l.contains("auth failure from") {
                    1
                } else if let Some((before, _)) = l.split_once(" further auth failures from") {
                    before
                        .rsplit(' ')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0)
                } else {
                    0
                }
            })
            .sum())
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `field` (`VmRSS`, `VmHWM`) of process `pid`, in KiB.
fn rss_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// The CPU time process `pid` has used so far (user + system, every thread, exited ones
/// included; in clock ticks, usually 10 ms, so only a difference over many turns is exact).
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: the fields start after the last `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("cannot read /proc/{pid}/stat: {stat}"))
    };
    // After the name: state (0), ..., utime (11), stime (12).
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(
        total as f64 / rustix::param::clock_ticks_per_second() as f64,
    ))
}

/// Starts `binary` with `args` and extra `env`, output discarded, outside any journal.
fn spawn<'a>(
    binary: &Path,
    args: impl IntoIterator<Item = &'a OsStr>,
    env: &[(&str, &OsStr)],
) -> Result<Child> {
    // tidy: spawn (the measured gateway serves the load and is killed by pid)
    Command::new(binary)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

/// Polls `addr` every 0.5 ms (at most 10 s) until a TCP connection is accepted; the time
/// from `started`.
fn wait_for_listen(child: &mut Child, addr: SocketAddr, started: Instant) -> Result<Duration> {
    while TcpStream::connect(addr).is_err() {
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "nothing listened on {addr} within 10 s"
        );
        if let Some(status) = child.try_wait()? {
            bail!("the process exited during start: {status}");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(started.elapsed())
}

/// The load average (1, 5, 15 minutes) from `/proc/loadavg`, for the report.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The file system `path` is on, by name where it is a common one (the agent's figures
/// depend on its fsync latency).
fn filesystem(path: &Path) -> String {
    match rustix::fs::statfs(path).map(|s| s.f_type as u64) {
        Ok(0x0102_1994) => "tmpfs".into(),
        Ok(0xEF53) => "ext2/3/4".into(),
        Ok(0x9123_683E) => "btrfs".into(),
        Ok(0x5846_5342) => "xfs".into(),
        Ok(other) => format!("file system type {other:#x}"),
        Err(e) => format!("unknown file system ({e})"),
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn healthz_ok(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
}

fn wrk(
    sh: &Shell,
    name: &'static str,
    port: u16,
    path: &str,
    token: Option<&str>,
    secs: u32,
) -> Result<Load> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let duration = format!("{secs}s");
    let header = token.map(|t| format!("Authorization: Bearer {t}"));
    let header_args: Vec<&str> = match &header {
        Some(h) => vec!["-H", h],
        None => vec![],
    };
    let out = cmd!(sh, "wrk -t2 -c32 -d{duration} {header_args...} {url}")
        .quiet()
        .read()?;
    let number_after = |marker: &str| -> Option<f64> {
        let line = out.lines().find(|l| l.contains(marker))?;
        line.split_whitespace().find_map(|w| w.parse::<f64>().ok())
    };
    let requests = out
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("cannot read the request count from wrk:\n{out}"))?;
    Ok(Load {
        name,
        requests,
        per_sec: number_after("Requests/sec:")
            .with_context(|| format!("cannot read Requests/sec from wrk:\n{out}"))?,
        non_2xx: number_after("Non-2xx").map_or(0, |n| n as u64),
        unauthorized: None,
    })
}
