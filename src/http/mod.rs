//! The HTTP server: hyper HTTP/1.1 on a small tokio runtime.
//!
//! hyper is used directly (no framework): the gateway has a handful of routes, and owning the
//! connection loop lets every limit be explicit: admission, the connection caps and the
//! per-connection deadlines in `conn`, bodies within `routes::MAX_BODY` and
//! `routes::BODY_TIMEOUT`, failed authentications in `ratelimit`, log volume in `loglimit`.

mod client;
mod conn;
mod guard;
mod loglimit;
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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

pub use conn::{HEADER_TIMEOUT, LIFETIME, MAX_CONNECTIONS, MAX_PER_CLIENT, WRITE_TIMEOUT};
pub use routes::{BODY_TIMEOUT, MAX_BODY};

pub use conn::Activity;
use conn::{Busy, Deadlines, WriteDeadline};
use loglimit::{Kind, LogLimiter};
use ratelimit::{FailureLimiter, Scope};

use crate::agent::AgentHandle;
use crate::config::{Config, DmPolicy, DmScope, SandboxMode};
use crate::pairing::{unix_now, ErrorMemo, Store};
use crate::paths::Paths;
use crate::sessions::Transcripts;
use crate::token::{bearer, TokenVerifier};

/// How often the pairing counts in `/api/status` are re-read from the store.
const COUNTS_REFRESH: Duration = Duration::from_secs(1);

/// Everything a request handler needs, shared by all connections.
pub struct Gateway {
    pub config: Config,
    verifier: Option<TokenVerifier>,
    limiter: FailureLimiter,
    logs: LogLimiter,
    conns: Arc<conn::Table>,
    deadlines: Deadlines,
    store: Store,
    /// Unreadable store files already logged (once per change of the file).
    store_errors: ErrorMemo,
    transcripts: Transcripts,
    started: Instant,
    local_addr: SocketAddr,
    pending: AtomicUsize,
    approved: AtomicUsize,
    /// The agent, when one is configured (`POST /api/agent/stop-all`).
    agent: Option<AgentHandle>,
    /// The exec approvals, when the agent's `exec` tool may ask (`/api/approvals`).
    approvals: Option<crate::approvals::Approvals>,
    /// Where a pairing request through `/api/messages` is recorded as a security event.
    events: crate::events::Events,
    /// The agent's live status, when an agent is configured.
    agent_status: Option<Arc<crate::agent::status::AgentStatus>>,
    redactor: crate::redact::Redactor,
}

impl Gateway {
    /// The configured token is kept only as the verifier's digest: its plaintext is taken out
    /// of the config the gateway holds, which every handler reads.
    pub fn new(mut config: Config, paths: &Paths, local_addr: SocketAddr) -> Self {
        let token = config.gateway.token.take();
        Self {
            verifier: token.map(|t| TokenVerifier::new(&t.value)),
            limiter: FailureLimiter::new(config.gateway.rate_limit),
            logs: LogLimiter::default(),
            conns: Arc::default(),
            deadlines: Deadlines::from_env(),
            store: Store::new(paths.credentials_dir()),
            store_errors: ErrorMemo::default(),
            transcripts: Transcripts::new(paths.sessions_dir()),
            started: Instant::now(),
            local_addr,
            pending: AtomicUsize::new(0),
            approved: AtomicUsize::new(0),
            agent: None,
            approvals: None,
            events: crate::events::Events::default(),
            agent_status: None,
            redactor: crate::redact::Redactor::default(),
            config,
        }
    }

    /// The gateway with the agent it runs beside, for the agent's API routes.
    pub fn with_agent(mut self, agent: Option<AgentHandle>) -> Self {
        self.agent = agent;
        self
    }

    /// The gateway recording security events in `events`.
    pub fn with_events(mut self, events: crate::events::Events) -> Self {
        self.events = events;
        self
    }

    /// The gateway answering `approvals` over `/api/approvals`.
    pub fn with_approvals(mut self, approvals: Option<crate::approvals::Approvals>) -> Self {
        self.approvals = approvals;
        self
    }

    /// The same gateway writing transcripts through `redactor` (the one of `clawfort
    /// gateway`; [`Gateway::new`] redacts the key shapes only).
    pub fn with_redactor(mut self, redactor: crate::redact::Redactor) -> Self {
        self.transcripts = self.transcripts.with_redactor(redactor.clone());
        self.redactor = redactor;
        self
    }

    /// The same gateway showing `agent` in `/api/status`.
    pub fn with_agent_status(mut self, agent: Arc<crate::agent::status::AgentStatus>) -> Self {
        self.agent_status = Some(agent);
        self
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

    /// Logs (rate-limited) and counts a failed authentication.
    fn auth_failed(&self, ip: IpAddr, reason: &str) {
        if self.logs.allow(Kind::AuthFailure, ip) {
            tracing::warn!("auth failure from {ip}: {reason}");
        }
        if let Some(lockout) = self.limiter.record_failure(ip) {
            let who = match lockout.scope {
                Scope::Client(key) => format!("{ip} (client {key})"),
                Scope::Everyone => format!("every client (the last failure from {ip})"),
            };
            tracing::warn!(
                "auth lockout for {who}: {} failures; refused for {} s",
                lockout.failures,
                lockout.secs
            );
        }
    }

    /// Logs (rate-limited) a request or connection refused before authentication.
    fn log_refusal(&self, ip: IpAddr, reason: &str) {
        if self.logs.allow(Kind::Refusal, ip) {
            tracing::warn!("refused request from {ip}: {reason}");
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
            agent: self.agent_status.as_ref().map(|a| {
                // Nothing in it should be secret; the redactor makes sure.
                let mut snapshot = a.snapshot();
                self.redactor.redact_json(&mut snapshot);
                snapshot
            }),
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
    /// `null` without an agent (no `agents.defaults.model`).
    agent: Option<serde_json::Value>,
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
                gateway.logs.flush();
                let gw = gateway.clone();
                let _ = tokio::task::spawn_blocking(move || gw.refresh_counts()).await;
            }
        })
    };
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
        let ip = peer.ip();
        let (slot, evicted) = match gateway.conns.admit(client::ClientKey::of(ip)) {
            Ok(admitted) => admitted,
            Err(conn::Full) => {
                // One small write into a fresh socket's empty buffer: it cannot block, and
                // if it fails the client gets the close it would have got anyway.
                let _ = stream.try_write(conn::FULL_RESPONSE);
                gateway.log_refusal(ip, "every connection slot is busy");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let io = WriteDeadline::new(stream, gateway.deadlines.write);
            let activity = slot.activity.clone();
            serve_connection(gateway, io, ip, activity, evicted).await;
            drop(slot);
        });
    }
    refresher.abort();
}

/// Serves one HTTP/1.1 connection from `ip` over `io` until it ends, `evicted` resolves (the
/// connection is dropped: closed) or its lifetime is over (it is closed gracefully after the
/// answer in progress). Requests get the gateway's header deadline and buffer limit and are
/// noted in `activity` (which eviction reads). The fuzz target drives this too.
pub async fn serve_connection<I>(
    gateway: Arc<Gateway>,
    io: I,
    ip: IpAddr,
    activity: Arc<Activity>,
    evicted: impl Future,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let lifetime = gateway.deadlines.lifetime;
    let service = hyper::service::service_fn(move |req| {
        let gateway = gateway.clone();
        let busy = Busy::enter(&activity);
        async move {
            let reply = routes::handle(gateway, ip, req).await;
            drop(busy);
            Ok::<_, Infallible>(reply)
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_BODY + 16 * 1024)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // Biased: the connection is polled first and no random branch order is drawn per wake-up.
    tokio::select! {
        biased;
        _ = connection.as_mut() => {}
        _ = evicted => {}
        () = tokio::time::sleep(lifetime) => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(conn::CLOSE_GRACE, connection).await;
        }
    }
}

/// `clawfort gateway`: listens and serves until SIGINT or SIGTERM.
///
/// One tokio thread serves every connection: on the 2-core boxes the appliance targets it
/// measured faster than two workers (no cross-thread wake-ups), and it keeps idle memory
/// low. File work runs on at most four blocking threads.
/// `agent`, when configured, runs beside the HTTP server and stops with it. `redactor`
/// scrubs what the webhook channel writes to transcripts.
pub fn run(
    config: Config,
    paths: &Paths,
    port_override: Option<u16>,
    agent: Option<crate::agent::service::Prepared>,
    redactor: crate::redact::Redactor,
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
        raise_file_limit();
        let events = agent.as_ref().map_or_else(Default::default, |a| a.events());
        let (stop_events, events_task) = start_events(paths, &events, agent.as_ref(), &redactor);
        let handle = agent.as_ref().map(crate::agent::service::Prepared::handle);
        let mut gateway = Gateway::new(config, paths, local)
            .with_events(events)
            .with_agent(handle)
            .with_redactor(redactor);
        if let Some(agent) = &agent {
            gateway = gateway
                .with_agent_status(agent.status())
                .with_approvals(agent.approvals());
        }
        let gateway = Arc::new(gateway);
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
        stop_events.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), events_task).await;
        if let Err(e) = crate::events::marker::end(&paths.state_dir) {
            tracing::warn!("cannot remove the running marker: {e}; the next start reports a crash");
        }
        tracing::info!("gateway stopped");
        Ok(())
    })
}

/// Starts the security events pipeline ([`crate::events`]): the owner is sent the events
/// when the agent has a channel. Marks the gateway as running before it serves (the marker
/// synced on the pipeline's task, so the disk flushes do not delay the first request), and
/// records a restart after a crash when the previous run left its mark.
fn start_events(
    paths: &Paths,
    events: &crate::events::Events,
    agent: Option<&crate::agent::service::Prepared>,
    redactor: &crate::redact::Redactor,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    use crate::events::{marker, Event, Pipeline};
    let marked = match marker::begin(&paths.state_dir) {
        Ok(crashed) => {
            if crashed {
                events.record(Event::GatewayCrashRestart);
            }
            true
        }
        Err(e) => {
            tracing::warn!(
                "cannot write the running marker in {}: {e}; a crash of this run will not be \
                 reported at the next start",
                paths.state_dir.display()
            );
            false
        }
    };
    let notices = agent.and_then(|a| a.owner_notices());
    let stop = tokio_util::sync::CancellationToken::new();
    let pipeline = Pipeline::new(paths.clone(), redactor.clone());
    let run = {
        let (stop, events) = (stop.clone(), events.clone());
        let state_dir = paths.state_dir.clone();
        async move {
            let dir = state_dir.clone();
            let sync = move || if marked { marker::sync(&dir) } else { Ok(()) };
            if let Ok(Err(e)) = tokio::task::spawn_blocking(sync).await {
                tracing::warn!(
                    "cannot sync the running marker in {}: {e}; a crash after a power cut \
                     may go unreported",
                    state_dir.display()
                );
            }
            pipeline.run(&events, notices, stop).await
        }
    };
    (stop, tokio::spawn(run))
}

/// Raises the soft open-files limit so the connection table fits: systemd's default soft
/// limit (1024) is below `MAX_CONNECTIONS` plus the listener and files, and at that limit
/// `accept` fails, which would refuse even `/healthz`.
fn raise_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    const WANTED: u64 = (MAX_CONNECTIONS as u64) * 2 + 64;
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|current| current < WANTED) {
        let raised = limit.maximum.map_or(WANTED, |max| max.min(WANTED));
        let new = rustix::process::Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, new) {
            tracing::warn!("cannot raise the open-files limit to {raised}: {e}");
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvSource;

    #[test]
    fn the_gateway_keeps_only_the_digest_of_its_token() {
        let token = "ab".repeat(32);
        let env = EnvSource::fixed([(crate::config::TOKEN_ENV.to_owned(), token.clone())]);
        let config = Config::parse("{}", &env).unwrap();
        assert!(config.gateway.token.is_some());
        let dir = tempfile::tempdir().unwrap();
        let gateway = Gateway::new(
            config,
            &Paths::in_dir(dir.path()),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        );
        assert!(gateway.config.gateway.token.is_none());
        let header = format!("Bearer {token}");
        assert_eq!(gateway.authenticate(Some(header.as_bytes())), Ok(()));
        assert_eq!(
            gateway.authenticate(Some(b"Bearer not-the-token")),
            Err("invalid token")
        );
    }
}
