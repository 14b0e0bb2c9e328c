//! What the guest exposes to its network, seen from the namespace as any host on the LAN
//! would see it: over IPv4, and over IPv6 at its address in the network's unique local prefix
//! and at its link-local address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tokio::sync::Semaphore;

use crate::exec::{self, PortState};
use crate::Ctx;

/// Connection attempts in flight at once, over all the addresses scanned together (fewer when
/// the open-file limit is lower: see [`socket_budget`]). More makes a loaded TCG guest drop
/// SYNs: with three times as many, a scan at load 11 missed a listener the re-check then found.
const SCAN_CONCURRENCY: usize = 8192;
/// Ports whose attempt failed that the scan tries once more; more than that is no transient
/// failure, and the scan fails at once.
const RETRY_AT_MOST: usize = 1024;
/// Time a port gets to answer during the full scan.
const SCAN_TIMEOUT: Duration = Duration::from_secs(3);
/// Time each listening port gets in the targeted re-check (an overloaded TCG guest can be slow
/// to answer; a port really open must never be missed).
const RECHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// One address of the guest a scan covers, and the namespace-side address it is scanned from.
#[derive(Debug, Clone, Copy)]
struct ScanPath {
    /// "IPv4", "IPv6 ULA" or "IPv6 link-local": how messages name the path.
    family: &'static str,
    source: SocketAddr,
    guest: IpAddr,
    /// The bridge's interface index for a link-local guest address, else 0.
    scope: u32,
}

impl ScanPath {
    fn target(&self, port: u16) -> SocketAddr {
        match self.guest {
            IpAddr::V4(address) => SocketAddr::from((address, port)),
            IpAddr::V6(address) => SocketAddrV6::new(address, port, 0, self.scope).into(),
        }
    }
}

impl std::fmt::Display for ScanPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.family, self.guest)
    }
}

/// Every address the guest is reachable at from the LAN: its IPv4 address, each address it
/// made in the network's unique local prefix from the router adverts, and its link-local
/// address. A guest without IPv6 addresses fails the probe: its IPv6 side then was not scanned,
/// and a scan that did not happen proves nothing.
fn scan_paths(ctx: &Ctx) -> Result<Vec<ScanPath>> {
    let testbed = &ctx.testbed;
    let lan = &testbed.ipv6;
    let shown = ctx
        .admin
        .check("ip -j -6 addr show")
        .context("listing the guest's IPv6 addresses")?;
    let addresses = guest_ipv6_addresses(&shown)?;
    let in_prefix = |address: &Ipv6Addr| {
        let mask = u128::MAX << (128 - u32::from(lan.prefix_len));
        u128::from(*address) & mask == u128::from(lan.prefix) & mask
    };
    let ula: Vec<Ipv6Addr> = addresses.iter().copied().filter(in_prefix).collect();
    let link_local = addresses
        .iter()
        .copied()
        .find(Ipv6Addr::is_unicast_link_local);
    ensure!(
        !ula.is_empty(),
        "the guest has no address in the network's prefix {}/{}: it did not configure IPv6 \
         from the router adverts, so its IPv6 side could not be scanned (`ip -6 addr`: {})",
        lan.prefix,
        lan.prefix_len,
        shown.trim()
    );
    let Some(link_local) = link_local else {
        bail!(
            "the guest has no IPv6 link-local address, so it could not be scanned there \
             (`ip -6 addr`: {})",
            shown.trim()
        );
    };
    let mut paths = vec![ScanPath {
        family: "IPv4",
        source: SocketAddr::from((testbed.sources.scanner, 0)),
        guest: testbed.guest.address.into(),
        scope: 0,
    }];
    paths.extend(ula.into_iter().map(|address| ScanPath {
        family: "IPv6 ULA",
        source: SocketAddr::from((testbed.sources.scanner_v6, 0)),
        guest: address.into(),
        scope: 0,
    }));
    // Bound to no address on the bridge, the kernel picks the bridge's own link-local one.
    paths.push(ScanPath {
        family: "IPv6 link-local",
        source: SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, lan.bridge_index).into(),
        guest: link_local.into(),
        scope: lan.bridge_index,
    });
    Ok(paths)
}

/// The IPv6 addresses of the guest's interfaces other than loopback, from `ip -j -6 addr show`;
/// addresses still being checked for duplicates (or found duplicate) are left out.
fn guest_ipv6_addresses(shown: &str) -> Result<Vec<Ipv6Addr>> {
    let interfaces: serde_json::Value = serde_json::from_str(shown.trim())
        .with_context(|| format!("unreadable `ip -j -6 addr show` output: {shown}"))?;
    let mut addresses = Vec::new();
    for interface in interfaces.as_array().into_iter().flatten() {
        if interface["ifname"] == "lo" {
            continue;
        }
        for info in interface["addr_info"].as_array().into_iter().flatten() {
            if info.get("tentative").is_some() || info.get("dadfailed").is_some() {
                continue;
            }
            if let Some(address) = info["local"].as_str().and_then(|a| a.parse().ok()) {
                addresses.push(address);
            }
        }
    }
    Ok(addresses)
}

/// The full scan of one path: every port once, and the ports whose attempt failed once more
/// (a neighbour entry of a stalled guest can fail for a moment); only a real answer the second
/// time counts, and a failure that hit many ports is not transient.
async fn scan_path(path: ScanPath, budget: Arc<Semaphore>) -> (Vec<PortState>, usize, ScanErrors) {
    let mut states = vec![PortState::Filtered; 65536];
    let first = scan(path, 1..=u16::MAX, &mut states, &budget).await;
    let failed = first.ports();
    if failed.is_empty() || failed.len() > RETRY_AT_MOST || first.lost > 0 {
        return (states, 0, first);
    }
    let retried = failed.len();
    let second = scan(path, failed.into_iter(), &mut states, &budget).await;
    (states, retried, second)
}

/// Full TCP connect scan of ports 1-65535 of each address the guest has on the LAN (IPv4, its
/// unique local IPv6 addresses, its link-local one), all at once: only SSH (and the configured
/// extra ports) may be open; the gateway ports never. Every port the guest listens on (from
/// `ss` inside) is then re-checked one by one on each address with a long timeout, so a slow
/// answer cannot hide an exposed service.
pub fn tcp_port_scan(ctx: &Ctx) -> Result<String> {
    let testbed = &ctx.testbed;
    let allowed: BTreeSet<u16> = std::iter::once(testbed.expect.ssh_port)
        .chain(testbed.expect.extra_tcp_ports.iter().copied())
        .collect();
    let paths = scan_paths(ctx)?;
    let started = Instant::now();
    let scanned = paths.clone();
    let (sockets, results) = exec::in_netns(&testbed.netns, move || {
        let sockets = socket_budget();
        let budget = Arc::new(Semaphore::new(sockets));
        let results = exec::local_runtime().block_on(async move {
            let mut scans = tokio::task::JoinSet::new();
            for (index, path) in scanned.into_iter().enumerate() {
                let budget = Arc::clone(&budget);
                scans.spawn(async move { (index, scan_path(path, budget).await) });
            }
            let mut results = Vec::new();
            while let Some(joined) = scans.join_next().await {
                results.push(joined);
            }
            results
        });
        (sockets, results)
    })?;
    let mut by_path = BTreeMap::new();
    for joined in results {
        let (index, (states, retried, errors)) =
            joined.context("a scan's task panicked or was cancelled")?;
        let path = paths[index];
        ensure!(
            errors.is_empty(),
            "the scan of {path} is incomplete: {errors}"
        );
        by_path.insert(index, (states, retried));
    }
    let scan_s = started.elapsed().as_secs_f64();

    // Every TCP listener that is not loopback-only, re-checked from outside on every path.
    let exposed_candidates = non_loopback_ports(ctx, "ss -Htln", "TCP listeners")?;
    let mut recheck = exposed_candidates.clone();
    recheck.extend([testbed.expect.gateway_port, testbed.expect.canvas_port]);
    let rechecked_paths = paths.clone();
    let recheck_open: Vec<BTreeSet<u16>> = exec::in_netns(&testbed.netns, move || {
        exec::local_runtime().block_on(async move {
            let mut open_by_path = Vec::new();
            for path in rechecked_paths {
                let mut open = BTreeSet::new();
                for &port in &recheck {
                    let state = exec::connect(path.source, path.target(port), RECHECK_TIMEOUT)
                        .await
                        .with_context(|| {
                            format!("the re-check of port {port} on {path} could not test it")
                        })?;
                    if state == PortState::Open {
                        open.insert(port);
                    }
                }
                open_by_path.push(open);
            }
            anyhow::Ok(open_by_path)
        })
    })??;

    let mut unexpected = Vec::new();
    let mut found = Vec::new();
    let mut unreachable_ssh = Vec::new();
    let mut summary = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        let (states, retried) = &by_path[&index];
        let mut open: BTreeSet<u16> = (1..=u16::MAX)
            .filter(|&port| states[usize::from(port)] == PortState::Open)
            .collect();
        found.push(format!("{path} {open:?}"));
        open.extend(&recheck_open[index]);
        let closed = states.iter().filter(|&&s| s == PortState::Closed).count();
        unexpected.extend(
            open.difference(&allowed)
                .map(|port| format!("{} {port}", path.family)),
        );
        if !open.contains(&testbed.expect.ssh_port) {
            unreachable_ssh.push(path.to_string());
        }
        summary.push(format!(
            "{path}: open {open:?}, {closed} refused ({retried} retried after an error)"
        ));
    }
    ensure!(
        unexpected.is_empty(),
        "ports open to the network besides {allowed:?}: {} (full scans found {}; listeners not \
         on loopback: {exposed_candidates:?})",
        unexpected.join(", "),
        found.join(", ")
    );
    ensure!(
        unreachable_ssh.is_empty(),
        "SSH port {} is not reachable on {}: the scan saw nothing open there, so it proves \
         nothing",
        testbed.expect.ssh_port,
        unreachable_ssh.join(", ")
    );
    Ok(format!(
        "65535 ports on {} addresses in {scan_s:.0} s ({sockets} sockets at once), the rest \
         filtered: {}; gateway ports \
         {}/{} not reachable; non-loopback listeners {exposed_candidates:?}",
        paths.len(),
        summary.join("; "),
        testbed.expect.gateway_port,
        testbed.expect.canvas_port
    ))
}

/// UDP ports every UDP scan tries besides the guest's own UDP sockets: services a Debian host
/// may run that must never answer on a LAN (DNS, DHCP server and client, TFTP, portmap, NTP,
/// NetBIOS, SNMP, IKE, syslog, DHCPv6 client and server, SSDP, mDNS, LLMNR, memcached).
const UDP_WELL_KNOWN: &[u16] = &[
    53, 67, 68, 69, 111, 123, 137, 161, 500, 514, 546, 547, 1900, 5353, 5355, 11211,
];
/// The guest's kernel sends one peer a burst of six ICMP errors, then one a second
/// (`net.ipv4.icmp_ratelimit`, and IPv6's likewise); datagrams to one path go out no faster,
/// so every refusal the firewall sends comes back.
const UDP_PACE: Duration = Duration::from_millis(1100);
/// Time a datagram's refusal gets to come back before the datagram is sent once more.
const UDP_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What came back for a datagram sent to a UDP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UdpState {
    /// An ICMP port-unreachable: the firewall's reject (or no socket behind a missing firewall).
    Refused,
    /// Nothing, twice: something took the datagram, since the firewall refuses every UDP port
    /// it does not open.
    Silent,
    /// A datagram came back: a service answered.
    Answered,
}

/// UDP ports of every address the guest has on the LAN: each port the guest has a UDP socket
/// on (from `ss` inside, loopback excluded), the well-known service ports and the gateway's
/// ports must be refused with an ICMP port-unreachable (the firewall's reject) unless the
/// image opens them. A datagram that comes back, or that twice gets no answer at all, reached
/// something past the firewall. Pacing keeps the guest's ICMP rate limit from hiding a
/// refusal. (A drop-everything firewall would look silent too and fail here: the appliance's
/// promise is to answer like a host without listeners, at a bounded rate.)
pub fn udp_port_scan(ctx: &Ctx) -> Result<String> {
    let testbed = &ctx.testbed;
    let allowed: BTreeSet<u16> = testbed.expect.extra_udp_ports.iter().copied().collect();
    let guest_sockets = non_loopback_ports(ctx, "ss -Huln", "UDP sockets")?;
    let ports: Vec<u16> = UDP_WELL_KNOWN
        .iter()
        .copied()
        .chain(guest_sockets.iter().copied())
        .chain([testbed.expect.gateway_port, testbed.expect.canvas_port])
        .collect::<BTreeSet<u16>>()
        .difference(&allowed)
        .copied()
        .collect();
    let paths = scan_paths(ctx)?;
    let started = Instant::now();
    let (scanned, scanned_ports) = (paths.clone(), ports.clone());
    let results = exec::in_netns(&testbed.netns, move || {
        exec::local_runtime().block_on(async move {
            let mut scans = tokio::task::JoinSet::new();
            for (index, path) in scanned.into_iter().enumerate() {
                let ports = scanned_ports.clone();
                scans.spawn(async move {
                    let mut states = Vec::new();
                    for port in ports {
                        let state = udp_probe(path, port).await.map_err(|err| {
                            anyhow::anyhow!("the datagram to UDP port {port} on {path} failed before any answer: {err}")
                        });
                        states.push((port, state));
                        tokio::time::sleep(UDP_PACE).await;
                    }
                    (index, states)
                });
            }
            let mut results = Vec::new();
            while let Some(joined) = scans.join_next().await {
                results.push(joined);
            }
            results
        })
    })?;
    let mut reached = Vec::new();
    let mut summary = Vec::new();
    for joined in results {
        let (index, states) = joined.context("a UDP scan's task panicked or was cancelled")?;
        let path = paths[index];
        let before = reached.len();
        for (port, state) in states {
            match state? {
                UdpState::Refused => {}
                UdpState::Silent => reached.push(format!("{} {port}", path.family)),
                UdpState::Answered => reached.push(format!("{} {port} (answered)", path.family)),
            }
        }
        if reached.len() == before {
            summary.push(path.to_string());
        }
    }
    ensure!(
        reached.is_empty(),
        "UDP ports reachable past the firewall (no port-unreachable came back): {} (the guest's \
         UDP sockets not on loopback: {guest_sockets:?})",
        reached.join(", ")
    );
    Ok(format!(
        "{} UDP ports {ports:?} refused on {} in {:.0} s; the guest's UDP sockets not on loopback: \
         {guest_sockets:?}",
        ports.len(),
        summary.join(", "),
        started.elapsed().as_secs_f64()
    ))
}

/// Sends one datagram to `port` (twice if nothing comes back) from a socket connected to it,
/// which the kernel then tells of an ICMP port-unreachable as a refused `recv`.
async fn udp_probe(path: ScanPath, port: u16) -> std::io::Result<UdpState> {
    let socket = tokio::net::UdpSocket::bind(path.source).await?;
    socket.connect(path.target(port)).await?;
    let mut answer = [0u8; 512];
    for _ in 0..2 {
        socket.send(b"clawfort e2e: is anybody there?\n").await?;
        match tokio::time::timeout(UDP_ANSWER_TIMEOUT, socket.recv(&mut answer)).await {
            Ok(Ok(_)) => return Ok(UdpState::Answered),
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Ok(UdpState::Refused)
            }
            Ok(Err(err)) => return Err(err),
            Err(_elapsed) => tokio::time::sleep(UDP_PACE).await,
        }
    }
    Ok(UdpState::Silent)
}

/// Connects to each of `ports` of the path's guest address, as many at a time as `budget`
/// (shared by the scans running at once) allows, filing each answer in `states`; returns the
/// attempts that ended in an error.
async fn scan(
    path: ScanPath,
    ports: impl Iterator<Item = u16>,
    states: &mut [PortState],
    budget: &Arc<Semaphore>,
) -> ScanErrors {
    let mut errors = ScanErrors::default();
    let mut in_flight = tokio::task::JoinSet::new();
    for port in ports {
        while let Some(joined) = in_flight.try_join_next() {
            errors.record(joined, states);
        }
        let permit = Arc::clone(budget)
            .acquire_owned()
            .await
            .expect("the scan's semaphore is never closed");
        in_flight.spawn(async move {
            let _permit = permit;
            let target = path.target(port);
            (port, exec::connect(path.source, target, SCAN_TIMEOUT).await)
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

/// The local ports of the guest's sockets `ss` lists (`ss -Htln`, `ss -Huln`: local address in
/// the fourth column) that are bound beyond loopback.
fn non_loopback_ports(ctx: &Ctx, ss: &str, what: &str) -> Result<BTreeSet<u16>> {
    let listed = ctx
        .admin
        .check_root(ss)
        .with_context(|| format!("listing the guest's {what}"))?;
    Ok(listed
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3))
        .filter(|local| !is_loopback_socket(local))
        .filter_map(|local| local.rsplit(':').next()?.parse().ok())
        .collect())
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

/// Descriptors kept free of the scans' sockets (the runtime, SSH, stdio).
const RESERVED_FILES: u64 = 512;

/// How many sockets the scans running at once may hold together: [`SCAN_CONCURRENCY`], as far
/// as the open-file limit allows after raising it (the soft limit to the hard one, the hard
/// one too where the process may). Fewer sockets only make the scans slower.
fn socket_budget() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let wanted = SCAN_CONCURRENCY as u64 + RESERVED_FILES;
    let current = getrlimit(Resource::Nofile);
    let raised = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(wanted),
            maximum: Some(current.maximum.map_or(wanted, |max| max.max(wanted))),
        },
    );
    if raised.is_err() {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: current.maximum,
                maximum: current.maximum,
            },
        );
    }
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let usable = usize::try_from(limit.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    SCAN_CONCURRENCY.min(usable).max(1)
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
