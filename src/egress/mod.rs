//! `clawfort egress`: the appliance's only way out to the network.
//!
//! The gateway's unit may reach loopback only (`IPAddressAllow=localhost`), so that
//! nothing running in it (the agent's model calls, whatever a prompt talks it into) can
//! reach an arbitrary host. Its outgoing HTTP goes through this HTTP CONNECT proxy instead,
//! on a Unix socket that systemd hands over (`clawfort-egress.socket`), running as its own
//! unprivileged identity. The proxy opens a tunnel only to the `host:port` pairs the
//! owner's config names ([`allow`]), as root wrote them into a file the gateway cannot
//! change ([`allow_file`], `clawfort egress sync`: [`sync`]), and answers anything else with
//! a clear HTTP error and one rate-limited log line. TLS runs end to end through the tunnel, between the gateway
//! and the real host: the proxy never sees a key, a token or a message.
//!
//! Everything a client controls is bounded: the request head's size and the time to send
//! it, the number of connections, the time to reach the destination, and a tunnel's idle
//! time.

mod allow;
pub mod allow_file;
mod handshake;
mod listen;
mod loglimit;
pub mod sync;
mod tunnel;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::config::EnvSource;

pub use allow::{AllowList, Diff, Target};
use handshake::Refusal;
use loglimit::RefusalLog;
pub use sync::SyncArgs;

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

/// Where the proxy takes its allow list from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// The root-owned allow file (`--allow-file`, the appliance's unit).
    AllowFile(&'a Path),
    /// Derived from an `openclaw.json` at start (no `--allow-file`: a proxy run by hand, for
    /// a gateway of the same user).
    Config(&'a Path),
}

impl Source<'_> {
    /// Reads the allow list, logging what it allows; also returns the fix a 403 names.
    fn load(self) -> anyhow::Result<(AllowList, String)> {
        match self {
            Source::AllowFile(path) => {
                let fix = format!(
                    "name it in openclaw.json (a models.providers.*.baseUrl or \
                     channels.telegram.apiRoot), then run `sudo clawfort egress sync`, which \
                     writes {} and restarts clawfort-egress",
                    path.display()
                );
                let allow = match allow_file::read(path)? {
                    Some(allow) if !allow.is_empty() => {
                        tracing::info!(
                            "egress: allowing {} (from {})",
                            allow.describe(),
                            path.display()
                        );
                        return Ok((allow, fix));
                    }
                    Some(allow) => {
                        tracing::warn!(
                            "egress: {} allows no destination: every CONNECT will be refused",
                            path.display()
                        );
                        allow
                    }
                    None => {
                        tracing::warn!(
                            "egress: there is no allow file {}: every CONNECT will be refused",
                            path.display()
                        );
                        AllowList::default()
                    }
                };
                tracing::warn!(
                    "egress: to let the agent reach its model provider and Telegram, name them \
                     in openclaw.json and run `sudo clawfort egress sync` (`sudo clawfort \
                     setup` does it too)"
                );
                Ok((allow, fix))
            }
            Source::Config(config) => {
                let allow = AllowList::from_config_file(config, &EnvSource::default())?;
                if allow.is_empty() {
                    tracing::warn!(
                        "egress: {} names no destination (models.providers.*.baseUrl, \
                         channels.telegram): every CONNECT will be refused",
                        config.display()
                    );
                } else {
                    tracing::info!(
                        "egress: allowing {} (from {})",
                        allow.describe(),
                        config.display()
                    );
                }
                let fix = "add it to the config (a models.providers.*.baseUrl or \
                           channels.telegram.apiRoot) and restart the proxy"
                    .to_owned();
                Ok((allow, fix))
            }
        }
    }
}

/// `clawfort egress`: reads the allow list from `source`, takes the listening socket from
/// systemd (or binds `listen`), and serves until killed.
pub fn run(source: Source, listen: Option<&Path>) -> anyhow::Result<()> {
    crate::logging::init_service();
    let (allow, fix) = source.load()?;
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
        serve(listener, allow, fix, Limits::from_env()).await;
        Ok(())
    })
}

struct Shared {
    allow: AllowList,
    /// What a refused destination's 403 tells the client to do.
    fix: String,
    limits: Limits,
    log: RefusalLog,
    next_id: AtomicU64,
}

/// Accepts connections forever.
async fn serve(listener: UnixListener, allow: AllowList, fix: String, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let shared = Arc::new(Shared {
        allow,
        fix,
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
                    "{} is not in the allow list; {}",
                    connect.target, shared.fix
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
