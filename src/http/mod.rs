//! The HTTP server: hyper HTTP/1.1 on a small tokio runtime.
//!
//! hyper is used directly (no framework): the gateway has a handful of routes, and owning the
//! connection loop lets every limit be explicit: at most `MAX_CONNECTIONS` open connections,
//! request headers within `HEADER_TIMEOUT` (also the keep-alive idle limit), bodies within
//! `routes::MAX_BODY` and `routes::BODY_TIMEOUT`.

mod guard;
mod ratelimit;
mod reply;
mod routes;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use ratelimit::{FailureLimiter, Lockout};
pub use routes::{BODY_TIMEOUT, MAX_BODY};

use crate::config::{Config, DmPolicy, DmScope, SandboxMode};
use crate::pairing::{unix_now, ErrorMemo, Store};
use crate::paths::Paths;
use crate::sessions::Transcripts;
use crate::token::{bearer, TokenVerifier};

/// Open connections at most; further ones are closed on accept.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time a client has to send a request's headers (and the idle limit between requests).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the pairing counts in `/api/status` are re-read from the store.
const COUNTS_REFRESH: Duration = Duration::from_secs(1);

/// Everything a request handler needs, shared by all connections.
pub struct Gateway {
    pub config: Config,
    verifier: Option<TokenVerifier>,
    limiter: FailureLimiter,
    store: Store,
    /// Unreadable store files already logged (once per change of the file).
    store_errors: ErrorMemo,
    transcripts: Transcripts,
    started: Instant,
    local_addr: SocketAddr,
    pending: AtomicUsize,
    approved: AtomicUsize,
}

impl Gateway {
    pub fn new(config: Config, paths: &Paths, local_addr: SocketAddr) -> Self {
        Self {
            verifier: config
                .gateway
                .token
                .as_ref()
                .map(|t| TokenVerifier::new(&t.value)),
            limiter: FailureLimiter::new(config.gateway.rate_limit),
            store: Store::new(paths.credentials_dir()),
            store_errors: ErrorMemo::default(),
            transcripts: Transcripts::new(paths.sessions_dir()),
            started: Instant::now(),
            local_addr,
            pending: AtomicUsize::new(0),
            approved: AtomicUsize::new(0),
            config,
        }
    }

    fn bind_ip(&self) -> IpAddr {
        self.config.gateway.bind.ip()
    }

    /// Checks an `Authorization` header value; the error is the reason for the log line.
    fn authenticate(&self, header: Option<&[u8]>) -> Result<(), &'static str> {
        let Some(verifier) = &self.verifier else {
            return Err("no gateway token is configured, so the API is closed");
        };
        let header = header.ok_or("missing Authorization: Bearer token")?;
        let token = bearer(header).ok_or("Authorization is not a Bearer token")?;
        if verifier.verify(token) {
            Ok(())
        } else {
            Err("invalid token")
        }
    }

    fn refresh_counts(&self) {
        match self.store.counts(unix_now()) {
            Ok(counts) => {
                self.pending.store(counts.pending, Ordering::Relaxed);
                self.approved.store(counts.approved, Ordering::Relaxed);
                for e in self.store_errors.fresh(&counts.errors) {
                    tracing::error!("pairing channel left out of the counts: {e}");
                }
            }
            Err(e) => tracing::error!("cannot count pairing state: {e}"),
        }
    }

    fn status(&self) -> Status<'_> {
        let c = &self.config;
        Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            bind: self.local_addr,
            bind_mode: c.gateway.bind.name(),
            default_dm_policy: DmPolicy::Pairing,
            channels: c
                .channels
                .iter()
                .map(|(name, ch)| {
                    let policy = if ch.enabled {
                        ch.dm_policy
                    } else {
                        DmPolicy::Disabled
                    };
                    (name.as_str(), policy)
                })
                .collect(),
            dm_scope: c.dm_scope,
            sandbox: SandboxStatus {
                mode: c.sandbox_mode,
            },
            pairing: PairingStatus {
                pending: self.pending.load(Ordering::Relaxed),
                approved: self.approved.load(Ordering::Relaxed),
                auto_approve: c.auto_approve,
            },
        }
    }
}

/// The body of `GET /api/status`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    version: &'static str,
    uptime_seconds: u64,
    bind: SocketAddr,
    bind_mode: &'static str,
    /// The policy of channels not named in the config.
    default_dm_policy: DmPolicy,
    channels: BTreeMap<&'a str, DmPolicy>,
    dm_scope: DmScope,
    sandbox: SandboxStatus,
    pairing: PairingStatus,
}

#[derive(Serialize)]
struct SandboxStatus {
    mode: SandboxMode,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PairingStatus {
    pending: usize,
    approved: usize,
    auto_approve: bool,
}

/// Binds the configured address; `port_override` (0 = any free port) replaces
/// `gateway.port`.
pub async fn bind(config: &Config, port_override: Option<u16>) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::new(
        config.gateway.bind.ip(),
        port_override.unwrap_or(config.gateway.port),
    );
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr}: {e} (is another gateway running? change gateway.port)"
        )
    })
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    let refresher = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(COUNTS_REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let gw = gateway.clone();
                let _ = tokio::task::spawn_blocking(move || gw.refresh_counts()).await;
            }
        })
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                "refused connection from {}: {MAX_CONNECTIONS} open",
                peer.ip()
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let ip = peer.ip();
            let service = hyper::service::service_fn(move |req| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(routes::handle(gateway, ip, req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_BODY + 16 * 1024)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
    refresher.abort();
}

/// `clawfort gateway`: listens and serves until SIGINT or SIGTERM.
///
/// One tokio thread serves every connection: on the 2-core boxes the appliance targets it
/// measured faster than two workers (no cross-thread wake-ups), and it keeps idle memory
/// low. File work runs on at most four blocking threads.
/// `agent`, when configured, runs beside the HTTP server and stops with it.
pub fn run(
    config: Config,
    paths: &Paths,
    port_override: Option<u16>,
    agent: Option<crate::agent::service::Prepared>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(4)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = bind(&config, port_override).await?;
        let local = listener.local_addr()?;
        if !config.from_file {
            tracing::info!(
                "no config file at {}: using the secure defaults",
                paths.config.display()
            );
        }
        if config.gateway.token.is_none() {
            tracing::warn!(
                "no gateway token configured ({} or gateway.auth.token): every API request \
                 will be refused; make one with `clawfort token`",
                crate::config::TOKEN_ENV
            );
        }
        if rustix::process::geteuid().is_root() {
            tracing::warn!("running as root: run the gateway as an unprivileged user");
        }
        let gateway = Arc::new(Gateway::new(config, paths, local));
        gateway.refresh_counts();
        tracing::info!(
            "clawfort {} gateway listening on {local} (state {})",
            env!("CARGO_PKG_VERSION"),
            paths.state_dir.display()
        );
        let stop_agent = tokio_util::sync::CancellationToken::new();
        let agent = agent.map(|a| tokio::spawn(a.run(stop_agent.clone())));
        serve(listener, gateway, shutdown_signal()).await;
        stop_agent.cancel();
        if let Some(task) = agent {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        tracing::info!("gateway stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
