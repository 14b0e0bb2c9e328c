//! `cargo xtask bench agent`: the agent's figures against zero-latency fakes.
//!
//! The release gateway runs as a child process with a configured provider (the fake model
//! server) and Telegram channel (the fake Bot API), both served in this process by
//! `clawfort-fakes`. Per run, on one fresh gateway:
//!
//! 1. **idle**: start to listening (TCP accept) and to `/healthz` 200; then `VmRSS` and
//!    `VmHWM` after `--idle-secs` with Telegram long polling going on.
//! 2. **overhead per turn**: `--turns` messages, one at a time, from approved senders taking
//!    turns in conversations of `--conversation` messages (every turn reads its sender's
//!    whole history, so the figure depends on it), each pushed only when a `getUpdates` is
//!    waiting and `--gap-ms` after the previous reply. The fakes timestamp T0 (the `getUpdates` answer carrying the update leaves the
//!    fake), T1 (the model request has fully arrived), T2 (the model's answer leaves), T3
//!    (the `sendMessage` has fully arrived). Overhead = (T1 - T0) + (T3 - T2): all the
//!    gateway's own work (parse, journal, policy, transcript, prompt, ledger, reply), the
//!    model's and Telegram's time excluded. The long-poll wake-up (push to T0) is excluded
//!    because it happens inside the fake: a poll is already waiting when the update is
//!    pushed, so nothing of the gateway runs in between.
//! 3. **concurrent sessions**: `--sessions` approved senders each send `--messages`
//!    messages, all pushed at once, interleaved. The model answers `ack <token>` naming the
//!    newest message it was asked about, so every reply can be traced to its message: each
//!    chat must get exactly its own acks, each once; lost, duplicated, foreign and
//!    out-of-order replies are counted. Throughput: messages / (last reply - first push).
//!    The model calls in flight at once (from the fake's timestamps) show whether sessions
//!    run in parallel; `--model-latency-ms` makes that visible.
//! 4. `VmHWM` after all of it.
//!
//! `--runs` repeats the whole sequence on fresh gateways; the summary gives the median of
//! each figure over the runs and the load average before and after.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clawfort_fakes::model::{self, Canned, Reply, Seen};
use clawfort_fakes::telegram::{self, private_text};
use serde_json::{json, Value};

use super::{cpu_time, filesystem, load_average, Gateway, RemoveOnDrop};

/// The targets of issue 11.
const TARGET_P50_MS: f64 = 1.0;
const TARGET_P99_MS: f64 = 5.0;
const TARGET_IDLE_RSS_MIB: f64 = 12.0;

const BOT_TOKEN: &str = "123456789:AAbenchTOKENbenchTOKENbenchTOKEN12";
const API_KEY: &str = "sk-bench-0123456789abcdefghijklmnopqrstuv";
/// The first sender of the one-at-a-time turns.
const SEQUENTIAL_USER: i64 = 5_000_000;
/// The first of the concurrent senders.
const FIRST_SESSION_USER: i64 = 6_000_000;
/// How long any single wait may take before the run is declared broken.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// What the agent bench does; see the module doc.
pub struct Options {
    pub runs: usize,
    pub idle: Duration,
    pub warmup: usize,
    pub turns: usize,
    /// Turns per sender in the one-at-a-time phase, before the next sender takes over.
    pub conversation: usize,
    pub gap: Duration,
    pub sessions: usize,
    pub messages: usize,
    pub model_latency: Duration,
    /// `anthropic-messages` or `openai-completions`.
    pub api: String,
}

/// One run's figures.
struct RunFigures {
    listen_ms: f64,
    healthz_ms: f64,
    idle_rss_kib: u64,
    idle_hwm_kib: u64,
    idle_polls: usize,
    overhead_ms: Vec<f64>,
    /// T1 - T0 and T3 - T2 of each turn.
    before_model_ms: Vec<f64>,
    after_model_ms: Vec<f64>,
    end_to_end_ms: Vec<f64>,
    /// The gateway's CPU time over the one-at-a-time phase, per turn.
    cpu_per_turn_ms: f64,
    sessions: SessionFigures,
    hwm_after_kib: u64,
}

struct SessionFigures {
    expected: usize,
    delivered: usize,
    lost: usize,
    duplicated: usize,
    foreign: usize,
    out_of_order: usize,
    seconds: f64,
    per_sec: f64,
    max_in_flight: usize,
    /// The longest any sender waited, from the push, for their first reply.
    worst_first_reply_s: f64,
    /// The gateway's CPU time over the phase, per message.
    cpu_per_message_ms: f64,
}

/// Runs and reports the figures; whether every target was met.
pub fn run(binary: &Path, opts: &Options, json_out: bool) -> Result<bool> {
    ensure!(
        opts.api == "anthropic-messages" || opts.api == "openai-completions",
        "--api must be anthropic-messages or openai-completions, not {:?}",
        opts.api
    );
    ensure!(
        opts.runs > 0 && opts.turns > 0 && opts.conversation > 0,
        "--runs, --turns and --conversation must be at least 1"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let load_before = load_average();
    let mut runs = Vec::new();
    for n in 0..opts.runs {
        if !json_out {
            eprintln!("run {}/{} ...", n + 1, opts.runs);
        }
        runs.push(one_run(binary, opts, &runtime).with_context(|| format!("run {}", n + 1))?);
    }
    let load_after = load_average();
    let summary = Summary::of(&runs);
    let verdicts = summary.verdicts();
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&report(
                opts,
                &runs,
                &summary,
                &verdicts,
                [&load_before, &load_after]
            ))?
        );
    } else {
        print_text(
            opts,
            &runs,
            &summary,
            &verdicts,
            [&load_before, &load_after],
        );
    }
    Ok(verdicts.iter().all(|v| v.pass))
}

fn one_run(binary: &Path, opts: &Options, rt: &tokio::runtime::Runtime) -> Result<RunFigures> {
    let latency = opts.model_latency;
    let model = rt.block_on(model::Fake::start(move |n, seen| {
        Reply::After(latency, Box::new(ack(n, seen)))
    }));
    let tg = rt.block_on(telegram::Fake::start(BOT_TOKEN));

    let state = std::env::temp_dir().join(format!(
        "clawfort-bench-agent-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let _cleanup = RemoveOnDrop(state.clone());
    std::fs::create_dir_all(&state)?;
    std::fs::write(
        state.join(".env"),
        format!(
            "OPENCLAW_GATEWAY_TOKEN=bench-token-0123456789abcdef0123456789abcdef\n\
             FAKE_API_KEY={API_KEY}\nTELEGRAM_BOT_TOKEN={BOT_TOKEN}\n"
        ),
    )?;
    let mut gw = Gateway::start(binary, &state, &config(opts, &model, &tg))?;

    // 1. Idle, with the channel polling.
    wait(rt, "the gateway's first getUpdates", || {
        tg.waiting_polls() > 0
    })?;
    let polls_before = tg.calls("getUpdates").len();
    std::thread::sleep(opts.idle);
    let idle_rss_kib = gw.rss_kib("VmRSS")?;
    let idle_hwm_kib = gw.rss_kib("VmHWM")?;
    let idle_polls = tg.calls("getUpdates").len() - polls_before;

    // 2. One turn at a time.
    let mut overhead_ms = Vec::with_capacity(opts.turns);
    let mut end_to_end_ms = Vec::with_capacity(opts.turns);
    let (mut before_model_ms, mut after_model_ms) = (Vec::new(), Vec::new());
    let cpu_before = cpu_time(gw.child.id())?;
    for i in 0..opts.warmup + opts.turns {
        wait(rt, "a waiting getUpdates", || tg.waiting_polls() > 0)?;
        let token = format!("bench-seq-{i}");
        let asked = model.seen_count();
        let (user, k) = sequential_sender(opts, i);
        let update = tg.push(private_text(user, &format!("please {token}")));
        // Counted, not cloned: the check runs every 200 µs while the gateway works, on the
        // lock the fakes take to record (and timestamp) each call.
        wait(rt, "the reply", || tg.sent_count(user) > k)?;
        let sent = tg.sent_call(user, k).context("the reply vanished")?;
        ensure!(
            sent.body["text"] == format!("ack {token}"),
            "turn {i}: the reply was {}, not the model's ack of {token}",
            sent.body["text"]
        );
        let count = model.seen_count();
        ensure!(
            count == asked + 1,
            "turn {i}: {} model calls instead of one",
            count - asked
        );
        let call = model.seen_nth(asked).context("the model call vanished")?;
        let t0 = tg
            .delivered_at(update)
            .context("the update was never delivered")?;
        let (t1, t2, t3) = (call.at, call.answered.context("no model answer")?, sent.at);
        ensure!(
            t0 <= t1 && t1 <= t2 && t2 <= t3,
            "turn {i}: timestamps out of order"
        );
        if i >= opts.warmup {
            overhead_ms.push(ms((t1 - t0) + (t3 - t2)));
            before_model_ms.push(ms(t1 - t0));
            after_model_ms.push(ms(t3 - t2));
            end_to_end_ms.push(ms(t3 - t0));
        }
        std::thread::sleep(opts.gap);
    }

    let cpu_per_turn_ms =
        ms(cpu_time(gw.child.id())? - cpu_before) / (opts.warmup + opts.turns) as f64;

    // 3. Concurrent sessions.
    let cpu_before = cpu_time(gw.child.id())?;
    let mut sessions = concurrent_sessions(rt, opts, &model, &tg)?;
    sessions.cpu_per_message_ms =
        ms(cpu_time(gw.child.id())? - cpu_before) / sessions.expected as f64;
    let hwm_after_kib = gw.rss_kib("VmHWM")?;
    ensure!(
        gw.child.try_wait()?.is_none(),
        "the gateway exited during the run"
    );
    gw.stop();
    Ok(RunFigures {
        listen_ms: ms(gw.listen_time),
        healthz_ms: ms(gw.start_time),
        idle_rss_kib,
        idle_hwm_kib,
        idle_polls,
        overhead_ms,
        before_model_ms,
        after_model_ms,
        end_to_end_ms,
        cpu_per_turn_ms,
        sessions,
        hwm_after_kib,
    })
}

fn concurrent_sessions(
    rt: &tokio::runtime::Runtime,
    opts: &Options,
    model: &model::Fake,
    tg: &telegram::Fake,
) -> Result<SessionFigures> {
    let expected = opts.sessions * opts.messages;
    let first_call = model.seen_count();
    let replies_before = tg.calls("sendMessage").len();
    let sent_before = tg.sent_total();
    let users: Vec<i64> = (0..opts.sessions as i64)
        .map(|u| FIRST_SESSION_USER + u)
        .collect();
    let pushed = Instant::now();
    for k in 0..opts.messages {
        for &user in &users {
            tg.push(private_text(user, &format!("please bench-u{user}-m{k}")));
        }
    }
    let deadline = WAIT_LIMIT + opts.model_latency * expected as u32;
    wait_for(rt, deadline, "every session's replies", || {
        tg.sent_total() - sent_before >= expected
    })?;
    // Anything late (a duplicate) shows up here.
    std::thread::sleep(Duration::from_secs(1));
    let replies: Vec<_> = tg.calls("sendMessage")[replies_before..].to_vec();
    let last = replies.iter().map(|c| c.at).max().context("no replies")?;
    let seconds = (last - pushed).as_secs_f64();

    let (mut lost, mut duplicated, mut foreign, mut out_of_order) = (0, 0, 0, 0);
    let mut worst_first_reply = Duration::ZERO;
    for &user in &users {
        if let Some(first) = replies.iter().find(|c| c.body["chat_id"] == user) {
            worst_first_reply = worst_first_reply.max(first.at - pushed);
        }
        let acks: Vec<String> = replies
            .iter()
            .filter(|c| c.body["chat_id"] == user)
            .map(|c| c.body["text"].as_str().unwrap_or_default().to_owned())
            .collect();
        let mine = |k: usize| format!("ack bench-u{user}-m{k}");
        foreign += acks
            .iter()
            .filter(|a| !(0..opts.messages).any(|k| **a == mine(k)))
            .count();
        for k in 0..opts.messages {
            match acks.iter().filter(|a| **a == mine(k)).count() {
                0 => lost += 1,
                1 => {}
                n => duplicated += n - 1,
            }
        }
        let order: Vec<usize> = acks
            .iter()
            .filter_map(|a| (0..opts.messages).find(|&k| *a == mine(k)))
            .collect();
        out_of_order += order.windows(2).filter(|w| w[0] > w[1]).count();
    }
    let calls = &model.seen()[first_call..];
    Ok(SessionFigures {
        expected,
        delivered: replies.len(),
        lost,
        duplicated,
        foreign,
        out_of_order,
        seconds,
        per_sec: expected as f64 / seconds,
        max_in_flight: max_in_flight(calls),
        worst_first_reply_s: worst_first_reply.as_secs_f64(),
        cpu_per_message_ms: 0.0,
    })
}

/// The model's answer in the request's own API format: `ack <token>`, the token being the
/// last `bench-...` word of the request's messages, i.e. of the newest message (history
/// comes first; the system prompt and the tools' descriptions may name the bench's
/// directory, also `bench-...`).
fn ack(n: usize, seen: &Seen) -> Reply {
    let body = seen.json()["messages"].to_string();
    let token = body
        .rfind("bench-")
        .map(|at| {
            body[at..]
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
                .unwrap_or_default()
        })
        .unwrap_or("nothing");
    let canned = Canned {
        input_tokens: 1000,
        output_tokens: 20,
        ..Canned::new(&format!("ack {token}"))
    };
    if seen.path.ends_with("/v1/messages") {
        model::ok(model::anthropic_text(&canned, n))
    } else {
        model::ok(model::openai_text(&canned, n))
    }
}

/// The most model calls that were in progress at the same moment.
fn max_in_flight(calls: &[Seen]) -> usize {
    let mut events: Vec<(Instant, i32)> = Vec::new();
    for c in calls {
        events.push((c.at, 1));
        events.push((c.answered.unwrap_or(c.at), -1));
    }
    // At equal times an end comes before a start.
    events.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        max = max.max(now);
    }
    max as usize
}

/// The sender of one-at-a-time turn `i`, and how many turns that sender had before.
fn sequential_sender(opts: &Options, i: usize) -> (i64, usize) {
    (
        SEQUENTIAL_USER + (i / opts.conversation) as i64,
        i % opts.conversation,
    )
}

fn config(opts: &Options, model: &model::Fake, tg: &telegram::Fake) -> String {
    let base_url = match opts.api.as_str() {
        "openai-completions" => model.url("/v1"),
        _ => model.url(""),
    };
    let sequential = (opts.warmup + opts.turns).div_ceil(opts.conversation) as i64;
    let allow: Vec<i64> = (0..sequential)
        .map(|u| SEQUENTIAL_USER + u)
        .chain((0..opts.sessions as i64).map(|u| FIRST_SESSION_USER + u))
        .collect();
    json!({
        "models": {"providers": {"fake": {
            "api": opts.api, "baseUrl": base_url, "apiKey": "${FAKE_API_KEY}",
            "models": [{"id": "m1", "contextWindow": 200000, "maxTokens": 1024,
                        "cost": {"input": 3, "output": 15}}],
        }}},
        "agents": {"defaults": {"model": "fake/m1"}},
        "channels": {"telegram": {
            "botToken": "${TELEGRAM_BOT_TOKEN}", "apiRoot": tg.api_root(),
            "dmPolicy": "allowlist", "allowFrom": allow,
        }},
        "budget": {"dailyUsd": 100000},
    })
    .to_string()
}

/// Waits (checking every 200 µs, on the fakes' runtime) until `done`, at most
/// [`WAIT_LIMIT`].
fn wait(rt: &tokio::runtime::Runtime, what: &str, done: impl Fn() -> bool) -> Result<()> {
    wait_for(rt, WAIT_LIMIT, what, done)
}

fn wait_for(
    rt: &tokio::runtime::Runtime,
    limit: Duration,
    what: &str,
    done: impl Fn() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    rt.block_on(async {
        while !done() {
            if Instant::now() > deadline {
                bail!("timed out after {} s waiting for {what}", limit.as_secs());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        Ok(())
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Nearest-rank percentile of `values` (`p` in 0..=100).
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// The medians over the runs.
struct Summary {
    listen_ms: f64,
    healthz_ms: f64,
    idle_rss_mib: f64,
    idle_hwm_mib: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    end_to_end_p50_ms: f64,
    before_model_p50_ms: f64,
    after_model_p50_ms: f64,
    cpu_per_turn_ms: f64,
    cpu_per_message_ms: f64,
    worst_first_reply_s: f64,
    per_sec: f64,
    hwm_after_mib: f64,
    lost: usize,
    duplicated: usize,
    foreign: usize,
    out_of_order: usize,
    max_in_flight: usize,
}

impl Summary {
    fn of(runs: &[RunFigures]) -> Self {
        let med = |f: &dyn Fn(&RunFigures) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let mib = |kib: u64| kib as f64 / 1024.0;
        let sum = |f: &dyn Fn(&SessionFigures) -> usize| runs.iter().map(|r| f(&r.sessions)).sum();
        Self {
            listen_ms: med(&|r| r.listen_ms),
            healthz_ms: med(&|r| r.healthz_ms),
            idle_rss_mib: med(&|r| mib(r.idle_rss_kib)),
            idle_hwm_mib: med(&|r| mib(r.idle_hwm_kib)),
            p50_ms: med(&|r| percentile(&r.overhead_ms, 50.0)),
            p99_ms: med(&|r| percentile(&r.overhead_ms, 99.0)),
            max_ms: med(&|r| percentile(&r.overhead_ms, 100.0)),
            end_to_end_p50_ms: med(&|r| percentile(&r.end_to_end_ms, 50.0)),
            before_model_p50_ms: med(&|r| percentile(&r.before_model_ms, 50.0)),
            after_model_p50_ms: med(&|r| percentile(&r.after_model_ms, 50.0)),
            cpu_per_turn_ms: med(&|r| r.cpu_per_turn_ms),
            cpu_per_message_ms: med(&|r| r.sessions.cpu_per_message_ms),
            worst_first_reply_s: med(&|r| r.sessions.worst_first_reply_s),
            per_sec: med(&|r| r.sessions.per_sec),
            hwm_after_mib: med(&|r| mib(r.hwm_after_kib)),
            lost: sum(&|s| s.lost),
            duplicated: sum(&|s| s.duplicated),
            foreign: sum(&|s| s.foreign),
            out_of_order: sum(&|s| s.out_of_order),
            max_in_flight: runs
                .iter()
                .map(|r| r.sessions.max_in_flight)
                .max()
                .unwrap_or(0),
        }
    }

    fn verdicts(&self) -> Vec<Verdict> {
        vec![
            Verdict::new(
                "overhead per turn p50",
                format!("{:.3} ms < {TARGET_P50_MS} ms", self.p50_ms),
                self.p50_ms < TARGET_P50_MS,
            ),
            Verdict::new(
                "overhead per turn p99",
                format!("{:.3} ms < {TARGET_P99_MS} ms", self.p99_ms),
                self.p99_ms < TARGET_P99_MS,
            ),
            Verdict::new(
                "idle RSS with Telegram polling",
                format!("{:.1} MiB < {TARGET_IDLE_RSS_MIB} MiB", self.idle_rss_mib),
                self.idle_rss_mib < TARGET_IDLE_RSS_MIB,
            ),
            Verdict::new(
                "concurrent sessions: none lost, duplicated or misdelivered",
                format!(
                    "lost {}, duplicated {}, foreign {}",
                    self.lost, self.duplicated, self.foreign
                ),
                self.lost == 0 && self.duplicated == 0 && self.foreign == 0,
            ),
        ]
    }
}

struct Verdict {
    name: &'static str,
    detail: String,
    pass: bool,
}

impl Verdict {
    fn new(name: &'static str, detail: String, pass: bool) -> Self {
        Self { name, detail, pass }
    }
}

fn print_text(
    opts: &Options,
    runs: &[RunFigures],
    s: &Summary,
    verdicts: &[Verdict],
    load: [&str; 2],
) {
    println!(
        "clawfort agent benchmark (release build, zero-latency fakes in-process, {}; {} run(s); \
         medians over the runs)",
        opts.api,
        runs.len()
    );
    println!("  load average before: {}; after: {}", load[0], load[1]);
    let tmp = std::env::temp_dir();
    println!(
        "  state dirs under {} ({}; set TMPDIR to move them)",
        tmp.display(),
        filesystem(&tmp)
    );
    println!("  start to listening (TCP)      {:>9.1} ms", s.listen_ms);
    println!("  start to /healthz 200         {:>9.1} ms", s.healthz_ms);
    println!(
        "  idle {:>2} s, Telegram polling  VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        opts.idle.as_secs(),
        s.idle_rss_mib,
        s.idle_hwm_mib
    );
    println!(
        "  overhead per turn ({} turns, {} per sender)  p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms \
         (update to reply p50 {:.3} ms)",
        opts.turns, opts.conversation, s.p50_ms, s.p99_ms, s.max_ms, s.end_to_end_p50_ms
    );
    println!(
        "    of which update to model request p50 {:.3} ms, model answer to sendMessage p50 \
         {:.3} ms",
        s.before_model_p50_ms, s.after_model_p50_ms
    );
    println!(
        "    gateway CPU time per turn {:.3} ms (user + system, independent of the load)",
        s.cpu_per_turn_ms
    );
    println!(
        "  {} sessions x {} messages     {:.0} messages/s, lost {}, duplicated {}, foreign {}, \
         out of order {}, model calls in flight at most {}",
        opts.sessions,
        opts.messages,
        s.per_sec,
        s.lost,
        s.duplicated,
        s.foreign,
        s.out_of_order,
        s.max_in_flight
    );
    println!(
        "    gateway CPU time per message {:.3} ms; the longest wait for a first reply {:.2} s",
        s.cpu_per_message_ms, s.worst_first_reply_s
    );
    println!(
        "  VmHWM after all of it         {:>9.1} MiB",
        s.hwm_after_mib
    );
    for (n, r) in runs.iter().enumerate() {
        println!(
            "  run {}: listen {:.1} ms, idle VmRSS {:.1} MiB ({} getUpdates in {} s), p50 {:.3} \
             ms, p99 {:.3} ms, {:.0} msg/s in {:.2} s ({} of {} replies)",
            n + 1,
            r.listen_ms,
            r.idle_rss_kib as f64 / 1024.0,
            r.idle_polls,
            opts.idle.as_secs(),
            percentile(&r.overhead_ms, 50.0),
            percentile(&r.overhead_ms, 99.0),
            r.sessions.per_sec,
            r.sessions.seconds,
            r.sessions.delivered,
            r.sessions.expected,
        );
    }
    for v in verdicts {
        println!(
            "  {} {}: {}",
            if v.pass { "PASS" } else { "FAIL" },
            v.name,
            v.detail
        );
    }
}

fn report(
    opts: &Options,
    runs: &[RunFigures],
    s: &Summary,
    verdicts: &[Verdict],
    load: [&str; 2],
) -> Value {
    let runs: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "listenMs": r.listen_ms, "healthzMs": r.healthz_ms,
                "idleRssKiB": r.idle_rss_kib, "idleHwmKiB": r.idle_hwm_kib,
                "idleGetUpdates": r.idle_polls,
                "overheadP50Ms": percentile(&r.overhead_ms, 50.0),
                "overheadP99Ms": percentile(&r.overhead_ms, 99.0),
                "overheadMaxMs": percentile(&r.overhead_ms, 100.0),
                "updateToReplyP50Ms": percentile(&r.end_to_end_ms, 50.0),
                "updateToModelP50Ms": percentile(&r.before_model_ms, 50.0),
                "modelToReplyP50Ms": percentile(&r.after_model_ms, 50.0),
                "cpuPerTurnMs": r.cpu_per_turn_ms,
                "sessions": {
                    "expected": r.sessions.expected, "delivered": r.sessions.delivered,
                    "lost": r.sessions.lost, "duplicated": r.sessions.duplicated,
                    "foreign": r.sessions.foreign, "outOfOrder": r.sessions.out_of_order,
                    "seconds": r.sessions.seconds, "messagesPerSec": r.sessions.per_sec,
                    "maxModelCallsInFlight": r.sessions.max_in_flight,
                    "cpuPerMessageMs": r.sessions.cpu_per_message_ms,
                    "worstFirstReplySecs": r.sessions.worst_first_reply_s,
                },
                "hwmAfterKiB": r.hwm_after_kib,
                "overheadMs": r.overhead_ms,
            })
        })
        .collect();
    json!({
        "api": opts.api, "idleSecs": opts.idle.as_secs(), "turns": opts.turns,
        "conversation": opts.conversation,
        "sessions": opts.sessions, "messagesPerSession": opts.messages,
        "modelLatencyMs": ms(opts.model_latency),
        "loadAverage": {"before": load[0], "after": load[1]},
        "stateFilesystem": filesystem(&std::env::temp_dir()),
        "median": {
            "listenMs": s.listen_ms, "healthzMs": s.healthz_ms,
            "idleRssMiB": s.idle_rss_mib, "idleHwmMiB": s.idle_hwm_mib,
            "overheadP50Ms": s.p50_ms, "overheadP99Ms": s.p99_ms,
            "messagesPerSec": s.per_sec, "hwmAfterMiB": s.hwm_after_mib,
            "cpuPerTurnMs": s.cpu_per_turn_ms, "cpuPerMessageMs": s.cpu_per_message_ms,
        },
        "verdicts": verdicts.iter().map(|v| json!({"name": v.name, "detail": v.detail, "pass": v.pass})).collect::<Vec<_>>(),
        "runs": runs,
    })
}
