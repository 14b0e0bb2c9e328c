//! `clawfort egress`: the appliance's only way out to the network.
//!
//! The gateway's unit may reach loopback only (`IPAddressAllow=localhost`), so that
//! nothing running in it (the agent's model calls, whatever a prompt talks it into) can
//! reach an arbitrary host. Its outgoing HTTP goes through this HTTP CONNECT proxy instead,
//! on a Unix socket that systemd hands over (`clawfort-egress.socket`), running as its own
//! unprivileged identity. The proxy opens a tunnel only to the `host:port` pairs the
//! owner's config names ([`allow`]) and answers anything else with a clear HTTP error and
//! one rate-limited log line. TLS runs end to end through the tunnel, between the gateway
//! and the real host: the proxy never sees a key, a token or a message.
//!
//! Everything a client controls is bounded: the request head's size and the time to send
//! it, the number of connections, the time to reach the destination, and a tunnel's idle
//! time.

mod allow;
mod handshake;
mod listen;
mod loglimit;
mod tunnel;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

pub use allow::{AllowList, Target};
use handshake::Refusal;
use loglimit::RefusalLog;

/// The proxy's bounds. Tests may lower (never raise) some of them through
/// `CLAWFORT_TEST_EGRESS_HANDSHAKE_MS`, `CLAWFORT_TEST_EGRESS_IDLE_MS` and
/// `CLAWFORT_TEST_EGRESS_MAX_CONNECTIONS`.
#[derive(Debug, Clone)]
struct Limits {
    /// Largest request head (request line and headers).
    max_head: usize,
    /// Time a client has to send its whole request head.
    handshake: Duration,
    /// Time to resolve and connect to the destination.
    connect: Duration,
    /// A tunnel in which nothing moved either way for this long is closed. Longer than a
    /// provider's whole request time (120 s) and Telegram's long poll, which are silent
    /// while the other side thinks.
    idle: Duration,
    /// Connections at once, tunnels and handshakes together; more are answered 503.
    max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head: 8 * 1024,
            handshake: Duration::from_secs(10),
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(300),
            max_connections: 256,
        }
    }
}

impl Limits {
    fn from_env() -> Self {
        fn lower(name: &str) -> Option<u64> {
            std::env::var(name).ok()?.parse().ok()
        }
        let mut limits = Self::default();
        if let Some(ms) = lower("CLAWFORT_TEST_EGRESS_HANDSHAKE_MS") {
            limits.handshake = limits.handshake.min(Duration::from_millis(ms));
        }
        if let Some(ms) = lower("CLAWFORT_TEST_EGRESS_IDLE_MS") {
            limits.idle = limits.idle.min(Duration::from_millis(ms));
        }
        if let Some(n) = lower("CLAWFORT_TEST_EGRESS_MAX_CONNECTIONS") {
            limits.max_connections = limits.max_connections.min(n as usize);
        }
        limits
    }
}

/// A refusal's answer that a client does not read in this time is dropped.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// `clawfort egress`: reads the allow list from `config`, takes the listening socket from
/// systemd (or binds `listen`), and serves until killed.
pub fn run(config: &Path, listen: Option<&Path>) -> anyhow::Result<()> {
    init_logging();
    let allow = AllowList::from_file(config)?;
    if allow.is_empty() {
        tracing::warn!(
            "egress: {} names no destination (models.providers.*.baseUrl, \
             channels.telegram): every CONNECT will be refused",
            config.display()
        );
    } else {
        let list: Vec<String> = allow.iter().map(Target::to_string).collect();
        tracing::info!(
            "egress: allowing {} (from {})",
            list.join(", "),
            config.display()
        );
    }
    let listener = listen::listener(listen)?;
    match listen {
        Some(path) => tracing::info!("egress: listening on {}", path.display()),
        None => tracing::info!("egress: listening on the socket from systemd"),
    }
    // Name lookups run on tokio's blocking pool: bounded, so a burst of new tunnels queues
    // instead of running into the unit's TasksMax.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()?;
    runtime.block_on(async move {
        let listener = UnixListener::from_std(listener)?;
        serve(listener, allow, Limits::from_env()).await;
        Ok(())
    })
}

/// Under systemd (`JOURNAL_STREAM` set) lines go to the journal, else to stderr. The proxy
/// has no state directory and writes no file.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(journald.with_filter(tracing_subscriber::filter::LevelFilter::INFO))
                .try_init();
            return;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

struct Shared {
    allow: AllowList,
    limits: Limits,
    log: RefusalLog,
    next_id: AtomicU64,
}

/// Accepts connections forever.
async fn serve(listener: UnixListener, allow: AllowList, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let shared = Arc::new(Shared {
        allow,
        limits,
        log: RefusalLog::default(),
        next_id: AtomicU64::new(1),
    });
    let flusher = shared.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(loglimit::WINDOW);
        loop {
            tick.tick().await;
            flusher.log.flush();
        }
    });
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait instead of spinning.
                tracing::warn!("egress: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Answered without a task: a fresh socket's buffer takes the few bytes at once.
            let refusal = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{} connections are open already",
                    shared.limits.max_connections
                ),
            );
            shared
                .log
                .refused(&format!("egress: refused: {}", refusal.why));
            let _ = stream.try_write(&refusal.response());
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            handle(stream, &shared).await;
            drop(slot);
        });
    }
}

async fn handle(mut client: UnixStream, shared: &Shared) {
    let limits = &shared.limits;
    // Which process asked (the gateway, or a tool it runs), for the log. Its uid would be
    // the overflow id here: the unit's user namespace maps only the proxy's own.
    let pid = client
        .peer_cred()
        .ok()
        .and_then(|cred| cred.pid())
        .map_or_else(|| "?".to_owned(), |pid| pid.to_string());
    let read = handshake::read_connect(&mut client, limits.max_head);
    let request = match tokio::time::timeout(limits.handshake, read).await {
        Ok(request) => request,
        Err(_) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "no complete request within {} s",
                limits.handshake.as_secs_f64()
            ),
        )),
    };
    let connect = match request {
        Ok(None) => return,
        Ok(Some(connect)) if shared.allow.allows(&connect.target) => connect,
        Ok(Some(connect)) => {
            let refusal = Refusal::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{} is not in the allow list; add it to the config (a \
                     models.providers.*.baseUrl or channels.telegram.apiRoot) and restart \
                     clawfort-egress",
                    connect.target
                ),
            );
            return refuse(client, shared, refusal, &pid).await;
        }
        Err(refusal) => return refuse(client, shared, refusal, &pid).await,
    };
    let target = connect.target;
    let upstream = match tunnel::open(&target, limits.connect).await {
        Ok(upstream) => upstream,
        Err(refusal) => return refuse(client, shared, refusal, &pid).await,
    };
    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
    if !matches!(
        tokio::time::timeout(ANSWER_TIMEOUT, client.write_all(established)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let peer = upstream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    tracing::info!("egress: tunnel {id} to {target} ({peer}) opened for client pid {pid}");
    let started = Instant::now();
    let summary = tunnel::relay(client, upstream, &connect.early, limits.idle).await;
    tracing::info!(
        "egress: tunnel {id} to {target} {} after {:.1} s: {} bytes sent, {} bytes received",
        summary.end,
        started.elapsed().as_secs_f64(),
        summary.sent,
        summary.received
    );
}

/// Answers `refusal`, logs it within the budget, and closes.
async fn refuse(mut client: UnixStream, shared: &Shared, refusal: Refusal, pid: &str) {
    shared.log.refused(&format!(
        "egress: refused ({}): {} (client pid {pid})",
        refusal.status.as_u16(),
        refusal.why
    ));
    let answer = async {
        client.write_all(&refusal.response()).await?;
        client.shutdown().await
    };
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, answer).await;
}
