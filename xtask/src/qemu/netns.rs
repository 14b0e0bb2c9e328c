//! A private network for guests: a network namespace with a bridge, one tap device per guest
//! and a DHCP server, so the guest is reached as a real host on a LAN would be (every port it
//! exposes is visible), while no packet ever leaves the namespace.
//!
//! The namespace side holds several addresses on purpose: the firewall rate-limits and
//! fail2ban bans per source address, so each kind of client (admin, scanner, attacker, ...)
//! gets its own and one cannot lock out another.
//!
//! The network is dual-stack as a real LAN is: dnsmasq also sends IPv6 router adverts for a
//! unique local prefix ([`ULA_PREFIX`]), so a guest has a SLAAC address there besides its
//! link-local one, and each namespace-side IPv4 address has its IPv6 twin ([`ula_twin`]).
//! What the guest exposes over IPv6 is then scanned as its IPv4 side is.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use super::cleanup::{self, Registration};

/// The bridge inside the namespace; taps are its ports, the host-side addresses live on it.
const BRIDGE: &str = "br0";
const PREFIX_LEN: u8 = 24;
/// The private network's IPv6 prefix: a unique local /64 (RFC 4193) no real network routes.
pub const ULA_PREFIX: Ipv6Addr = Ipv6Addr::new(0xfd77, 0x77, 0, 0, 0, 0, 0, 0);
pub const ULA_PREFIX_LEN: u8 = 64;

/// The IPv6 address a namespace-side IPv4 address also has: its last octet in [`ULA_PREFIX`]
/// (10.77.0.2 is also fd77:77::2).
pub fn ula_twin(address: Ipv4Addr) -> Ipv6Addr {
    let [a, b, c, d, ..] = ULA_PREFIX.segments();
    Ipv6Addr::new(a, b, c, d, 0, 0, 0, address.octets()[3].into())
}

/// A guest's place on the private network: its tap device, MAC and the address DHCP gives it.
#[derive(Debug, Clone)]
pub struct GuestLink {
    pub tap: String,
    pub mac: String,
    pub address: Ipv4Addr,
}

pub struct PrivateNetwork {
    name: String,
    dnsmasq: Option<(Child, Registration)>,
    guests: Vec<GuestLink>,
    teardown: Option<Registration>,
}

impl PrivateNetwork {
    /// Creates namespace `name` with `host_addresses` on the bridge and one tap per guest in
    /// `guests`, and starts dnsmasq handing each guest's MAC its fixed address. `work_dir`
    /// receives the lease file and dnsmasq's log.
    pub fn create(
        sh: &Shell,
        name: &str,
        host_addresses: &[Ipv4Addr],
        guests: &[GuestLink],
        work_dir: &Path,
    ) -> Result<PrivateNetwork> {
        if cmd!(sh, "ip netns list")
            .read()?
            .lines()
            .any(|line| line.split_whitespace().next() == Some(name))
        {
            bail!("network namespace {name} already exists (a previous run was killed hard?): remove it with `ip netns delete {name}`");
        }
        cmd!(sh, "ip netns add {name}").run()?;
        let teardown = cleanup::on_exit(format!("network namespace {name}"), {
            let name = name.to_owned();
            move || delete_namespace(&name)
        });
        let mut network = PrivateNetwork {
            name: name.to_owned(),
            dnsmasq: None,
            guests: guests.to_vec(),
            teardown: Some(teardown),
        };
        network.configure(sh, host_addresses)?;
        network.start_dhcp(work_dir)?;
        Ok(network)
    }

    fn configure(&self, sh: &Shell, host_addresses: &[Ipv4Addr]) -> Result<()> {
        let ns = &self.name;
        cmd!(sh, "ip -n {ns} link set lo up").run()?;
        cmd!(
            sh,
            "ip -n {ns} link add {BRIDGE} type bridge stp_state 0 forward_delay 0"
        )
        .run()?;
        for address in host_addresses {
            let cidr = format!("{address}/{PREFIX_LEN}");
            cmd!(sh, "ip -n {ns} addr add {cidr} dev {BRIDGE}").run()?;
            // No duplicate address detection: the namespace is new, and a tentative address
            // cannot be bound for the first second.
            let cidr6 = format!("{}/{ULA_PREFIX_LEN}", ula_twin(*address));
            cmd!(sh, "ip -n {ns} addr add {cidr6} dev {BRIDGE} nodad").run()?;
        }
        cmd!(sh, "ip -n {ns} link set {BRIDGE} up").run()?;
        for guest in &self.guests {
            let tap = &guest.tap;
            cmd!(sh, "ip -n {ns} tuntap add dev {tap} mode tap").run()?;
            cmd!(sh, "ip -n {ns} link set {tap} master {BRIDGE} up").run()?;
        }
        Ok(())
    }

    /// The bridge's interface index in the namespace: the scope of the guests' link-local
    /// addresses as seen from the namespace side.
    pub fn bridge_index(&self, sh: &Shell) -> Result<u32> {
        let ns = &self.name;
        let shown = cmd!(sh, "ip -n {ns} -j link show dev {BRIDGE}").read()?;
        let links: serde_json::Value = serde_json::from_str(&shown)
            .with_context(|| format!("unreadable `ip -j link show {BRIDGE}` output: {shown}"))?;
        links[0]["ifindex"]
            .as_u64()
            .and_then(|index| u32::try_from(index).ok())
            .with_context(|| format!("no interface index for {BRIDGE} in namespace {ns}: {shown}"))
    }

    /// dnsmasq as a DHCPv4 server and IPv6 router advertiser (stateless: the guests make their
    /// own addresses in [`ULA_PREFIX`]), with no DNS (`--port=0`), bound to the bridge.
    fn start_dhcp(&mut self, work_dir: &Path) -> Result<()> {
        let lease_file = work_dir.join("dnsmasq.leases");
        let log_file = work_dir.join("dnsmasq.log");
        let Some(first) = self.guests.first() else {
            return Ok(());
        };
        // tidy: spawn (dnsmasq serves the whole run and is killed by pid)
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &self.name,
                "dnsmasq",
                "--keep-in-foreground",
            ])
            .args(["--port=0", "--no-resolv", "--no-hosts", "--bind-interfaces"])
            .arg(format!("--interface={BRIDGE}"))
            .arg(format!(
                "--dhcp-range={},static,255.255.255.0,1h",
                first.address
            ))
            .arg("--dhcp-authoritative")
            .arg("--enable-ra")
            .arg(format!(
                "--dhcp-range={ULA_PREFIX},ra-only,{ULA_PREFIX_LEN}"
            ))
            .arg(format!("--dhcp-leasefile={}", lease_file.display()))
            .arg(format!("--log-facility={}", log_file.display()))
            .arg("--log-dhcp")
            .arg("--pid-file=")
            .arg("--user=root")
            .stdin(Stdio::null());
        for guest in &self.guests {
            command.arg(format!("--dhcp-host={},{}", guest.mac, guest.address));
        }
        eprintln!("$ {command:?}");
        let child = command
            .spawn()
            .context("cannot start dnsmasq (install `dnsmasq-base`) in the test namespace")?;
        let pid = child.id();
        let registration = cleanup::on_exit(format!("dnsmasq (pid {pid})"), move || {
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        });
        self.dnsmasq = Some((child, registration));
        // dnsmasq reports bad options by exiting at once.
        std::thread::sleep(Duration::from_millis(300));
        if let Some(status) = self
            .dnsmasq
            .as_mut()
            .and_then(|(child, _)| child.try_wait().ok().flatten())
        {
            bail!(
                "dnsmasq exited with {status} in namespace {}: see {}",
                self.name,
                log_file.display()
            );
        }
        Ok(())
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        // tidy: spawn (a process inside the namespace; callers spawn it, pipe its stdin and bound it with timeout)
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for PrivateNetwork {
    fn drop(&mut self) {
        if let Some((mut dnsmasq, registration)) = self.dnsmasq.take() {
            let _ = dnsmasq.kill();
            let _ = dnsmasq.wait();
            registration.disarm();
        }
        // Runs `delete_namespace`: the taps and the bridge go with the namespace.
        drop(self.teardown.take());
    }
}

fn delete_namespace(name: &str) {
    let deleted = Shell::new().and_then(|sh| cmd!(sh, "ip netns delete {name}").quiet().run());
    if deleted.is_err() {
        eprintln!("warning: could not delete network namespace {name}; remove it with `ip netns delete {name}`");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_address_has_its_twin_in_the_unique_local_prefix() {
        assert_eq!(
            ula_twin(Ipv4Addr::new(10, 77, 0, 2)),
            "fd77:77::2".parse::<Ipv6Addr>().unwrap()
        );
        assert!(ULA_PREFIX.is_unique_local());
    }
}
