//! What the guest exposes to its network, seen from the namespace as any host on the LAN
//! would see it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::exec::{self, PortState};
use crate::Ctx;

/// Connection attempts in flight at once during the full scan.
const SCAN_CONCURRENCY: usize = 8192;
/// Ports whose attempt failed that the scan tries once more; more than that is no transient
/// failure, and the scan fails at once.
const RETRY_AT_MOST: usize = 1024;
/// Time a port gets to answer during the full scan.
const SCAN_TIMEOUT: Duration = Duration::from_secs(3);
/// Time each listening port gets in the targeted re-check (an overloaded TCG guest can be slow
/// to answer; a port really open must never be missed).
const RECHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Full TCP connect scan of ports 1-65535: only SSH (and the configured extra ports) may be
/// open; the gateway ports never. Every port the guest listens on (from `ss` inside) is then
/// re-checked one by one with a long timeout, so a slow answer cannot hide an exposed service.
pub fn tcp_port_scan(ctx: &Ctx) -> Result<String> {
    let testbed = &ctx.testbed;
    let allowed: BTreeSet<u16> = std::iter::once(testbed.expect.ssh_port)
        .chain(testbed.expect.extra_tcp_ports.iter().copied())
        .collect();
    let started = Instant::now();
    let source = testbed.sources.scanner;
    let guest = testbed.guest.address;
    let (states, retried, errors) = exec::in_netns(&testbed.netns, move || {
        raise_open_file_limit();
        exec::local_runtime().block_on(async move {
            let mut states = vec![PortState::Filtered; 65536];
            let first = scan(source, guest, 1..=u16::MAX, &mut states).await;
            // A port whose attempt failed is tried once more (a neighbour entry of a stalled
            // guest can fail for a moment); only a real answer the second time counts, and a
            // failure that hit many ports is not transient.
            let failed = first.ports();
            if failed.is_empty() || failed.len() > RETRY_AT_MOST || first.lost > 0 {
                return (states, 0, first);
            }
            let retried = failed.len();
            let second = scan(source, guest, failed.into_iter(), &mut states).await;
            (states, retried, second)
        })
    })?;
    ensure!(errors.is_empty(), "the scan is incomplete: {errors}");
    let open: BTreeSet<u16> = (1..=u16::MAX)
        .filter(|&port| states[usize::from(port)] == PortState::Open)
        .collect();
    let closed = states
        .iter()
        .filter(|&&state| state == PortState::Closed)
        .count();
    let scan_s = started.elapsed().as_secs_f64();

    // Every TCP listener that is not loopback-only, re-checked from outside.
    let listeners = ctx
        .admin
        .check_root("ss -Htln")
        .context("listing the guest's TCP listeners")?;
    let exposed_candidates: BTreeSet<u16> = listeners
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3))
        .filter(|local| !is_loopback_socket(local))
        .filter_map(|local| local.rsplit(':').next()?.parse().ok())
        .collect();
    let mut recheck = exposed_candidates.clone();
    recheck.extend([testbed.expect.gateway_port, testbed.expect.canvas_port]);
    let recheck_open: BTreeSet<u16> = exec::in_netns(&testbed.netns, move || {
        exec::local_runtime().block_on(async move {
            let mut open = BTreeSet::new();
            for port in recheck {
                let target = SocketAddrV4::new(guest, port);
                let state = exec::connect(source, target, RECHECK_TIMEOUT)
                    .await
                    .with_context(|| format!("the re-check of port {port} could not test it"))?;
                if state == PortState::Open {
                    open.insert(port);
                }
            }
            anyhow::Ok(open)
        })
    })??;
    let all_open: BTreeSet<u16> = open.union(&recheck_open).copied().collect();
    let unexpected: Vec<u16> = all_open.difference(&allowed).copied().collect();
    ensure!(
        unexpected.is_empty(),
        "ports open to the network besides {allowed:?}: {unexpected:?} (full scan found {open:?}, listeners not on loopback: {exposed_candidates:?})"
    );
    ensure!(
        all_open.contains(&testbed.expect.ssh_port),
        "SSH port {} is not reachable: the scan saw nothing open, so it proves nothing",
        testbed.expect.ssh_port
    );
    Ok(format!(
        "65535 ports in {scan_s:.0} s ({retried} retried after an error): open {all_open:?}, \
         {closed} refused, the rest filtered; \
         gateway ports {}/{} not reachable; non-loopback listeners {exposed_candidates:?}",
        testbed.expect.gateway_port, testbed.expect.canvas_port
    ))
}

/// Connects to each of `ports` of `guest` from `source`, [`SCAN_CONCURRENCY`] at a time,
/// filing each answer in `states`; returns the attempts that ended in an error.
async fn scan(
    source: std::net::Ipv4Addr,
    guest: std::net::Ipv4Addr,
    ports: impl Iterator<Item = u16>,
    states: &mut [PortState],
) -> ScanErrors {
    let mut errors = ScanErrors::default();
    let mut in_flight = tokio::task::JoinSet::new();
    for port in ports {
        if in_flight.len() >= SCAN_CONCURRENCY {
            if let Some(joined) = in_flight.join_next().await {
                errors.record(joined, states);
            }
        }
        in_flight.spawn(async move {
            let target = SocketAddrV4::new(guest, port);
            (port, exec::connect(source, target, SCAN_TIMEOUT).await)
        });
    }
    while let Some(joined) = in_flight.join_next().await {
        errors.record(joined, states);
    }
    errors
}

/// Connection attempts of the scan that ended in an error other than a refusal or a timeout:
/// their ports were never tested, so the scan cannot count them as filtered.
#[derive(Default)]
struct ScanErrors {
    /// Each distinct error, with the ports it hit.
    by_error: BTreeMap<String, Vec<u16>>,
    /// Attempts whose task panicked or was cancelled (their port is unknown).
    lost: usize,
}

impl ScanErrors {
    /// Files one finished attempt: its state, or its error.
    fn record(
        &mut self,
        joined: Result<(u16, std::io::Result<PortState>), tokio::task::JoinError>,
        states: &mut [PortState],
    ) {
        match joined {
            Ok((port, Ok(state))) => states[usize::from(port)] = state,
            Ok((port, Err(err))) => self.by_error.entry(err.to_string()).or_default().push(port),
            Err(_) => self.lost += 1,
        }
    }

    fn is_empty(&self) -> bool {
        self.by_error.is_empty() && self.lost == 0
    }

    /// Every port an error hit.
    fn ports(&self) -> Vec<u16> {
        self.by_error.values().flatten().copied().collect()
    }
}

/// How many ports of one error the message names.
const PORTS_SHOWN: usize = 5;

impl std::fmt::Display for ScanErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self
            .by_error
            .iter()
            .map(|(error, ports)| {
                let shown: Vec<String> =
                    ports.iter().take(PORTS_SHOWN).map(u16::to_string).collect();
                format!(
                    "{error} on {} port(s) ({}{})",
                    ports.len(),
                    shown.join(", "),
                    if ports.len() > PORTS_SHOWN {
                        ", ..."
                    } else {
                        ""
                    }
                )
            })
            .collect();
        if self.lost > 0 {
            parts.push(format!("{} attempt(s) lost with their task", self.lost));
        }
        write!(
            f,
            "connection attempts failed before testing their port (neither refused nor timed \
             out): {}",
            parts.join("; ")
        )
    }
}

/// `127.0.0.1:18789`, `[::1]:18789`, `127.0.0.53%lo:53` are loopback; `0.0.0.0:22`, `*:22`,
/// `[::]:22` are not.
fn is_loopback_socket(local: &str) -> bool {
    let host = local
        .rsplit_once(':')
        .map_or(local, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let host = host.split('%').next().unwrap_or(host);
    host.starts_with("127.") || host == "::1"
}

/// The scan holds thousands of sockets at once; the default soft limit is often 1024.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let current = getrlimit(Resource::Nofile);
    let wanted = (SCAN_CONCURRENCY as u64) * 2 + 256;
    let maximum = current.maximum.map_or(wanted, |max| max.max(wanted));
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(wanted),
            maximum: Some(maximum),
        },
    );
}

/// A port no egress rule opens, for the refused connection.
const UNLISTED_PORT: u16 = 8081;
/// HTTPS: refused too unless the image lists it, since the gateway's calls go through the
/// egress proxy and the service user itself needs no direct way out.
const HTTPS_PORT: u16 = 443;

/// The service user (the gateway, its tools, its rootless Docker) reaches the network only on
/// the egress ports (none by default: loopback only). Listeners in the namespace on an unlisted
/// port, on 443 and on an egress port: the admin reaches them (the path works), the service
/// user only the egress port.
pub fn service_user_egress_confined(ctx: &Ctx) -> Result<String> {
    let testbed = &ctx.testbed;
    let user = &testbed.service_user;
    let host = testbed.sources.scanner;
    let egress_ports = &testbed.expect.egress_tcp_ports;
    let allowed = egress_ports.first().copied();
    ensure!(
        !egress_ports.contains(&UNLISTED_PORT),
        "the image opens egress port {UNLISTED_PORT}, which this probe needs closed"
    );
    let mut refused_ports = vec![UNLISTED_PORT];
    if !egress_ports.contains(&HTTPS_PORT) {
        refused_ports.push(HTTPS_PORT);
    }
    // Sockets keep the namespace they were made in: bound there, they accept connections
    // (the kernel completes the handshake into the backlog) while this thread runs SSH.
    let bound: Vec<u16> = refused_ports.iter().copied().chain(allowed).collect();
    let listeners = exec::in_netns(&testbed.netns, move || -> std::io::Result<Vec<_>> {
        bound
            .iter()
            .map(|&port| std::net::TcpListener::bind((host, port)))
            .collect()
    })?
    .context("cannot listen in the test namespace")?;
    let connect = |port: u16| {
        format!("timeout 10 bash -c 'exec 3<>/dev/tcp/{host}/{port}' && echo connected")
    };
    let admin = ctx.admin.run(&connect(UNLISTED_PORT))?;
    ensure!(
        admin.stdout.contains("connected"),
        "the admin cannot reach {host}:{UNLISTED_PORT} either, so the probe proves nothing: {}",
        admin.stderr.trim()
    );
    let mut refusals = Vec::new();
    for port in &refused_ports {
        let refused = ctx
            .admin
            .sudo(&format!("runuser -u {user} -- {}", connect(*port)))?;
        ensure!(
            !refused.stdout.contains("connected"),
            "{user} reached port {port} of {host}: outbound traffic is not confined"
        );
        // Positive evidence that the firewall refused it (not a missing tool or a timeout):
        // bash's own connect error, and the rule's kernel log line.
        ensure!(
            refused.stderr.contains("connect"),
            "the connection as {user} to port {port} failed before connecting: {}",
            refused.stderr.trim()
        );
        refusals.push(format!(
            "{port} ({})",
            refused
                .stderr
                .trim()
                .lines()
                .last()
                .unwrap_or("no error text")
        ));
    }
    let logged = ctx
        .admin
        .sudo("journalctl -k --since=-120s --no-pager | grep -c 'clawfort egress refused'")?;
    ensure!(
        logged.stdout.trim().parse::<u32>().unwrap_or(0) > 0,
        "no `clawfort egress refused` line in the kernel log for the refused connections"
    );
    let mut detail = format!("{user} refused on ports {}", refusals.join(", "));
    if let Some(port) = allowed {
        let out = ctx
            .admin
            .sudo(&format!("runuser -u {user} -- {}", connect(port)))?;
        ensure!(
            out.stdout.contains("connected"),
            "{user} cannot reach egress port {port}: the rule blocks everything ({})",
            out.stderr.trim()
        );
        detail.push_str(&format!(", reaches port {port}"));
    }
    drop(listeners);
    Ok(detail)
}
