//! Which destinations `web_fetch` may connect to: public unicast addresses only.
//!
//! The model chooses the URL, and a page it reads may choose it too (prompt injection), so
//! the tool must not become a way into the machine's own network: its loopback services,
//! the LAN, the cloud metadata endpoint. The check runs on the addresses a name resolves
//! to, and the connection then goes to exactly the address checked (see the caller), so a
//! name that resolves once to a public and once to a private address (DNS rebinding) gains
//! nothing. IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are
//! judged by that IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where the tool may connect: public addresses, plus exact extra addresses a test names.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    extra: Vec<IpAddr>,
}

impl AddressPolicy {
    /// Public unicast addresses only: what the gateway uses.
    pub fn public_only() -> Self {
        Self::default()
    }

    /// Also allows exactly `extra` (no network around them). For tests, whose servers can
    /// only listen on loopback: they listen on e.g. `127.0.0.2` and allow that alone, so
    /// every other loopback address stays refused. No config key reaches this.
    pub fn allowing(extra: &[IpAddr]) -> Self {
        Self {
            extra: extra.to_vec(),
        }
    }

    /// `Err` with what kind of address `ip` is, when the tool must not connect to it.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.extra.contains(&ip) {
            return Ok(());
        }
        match forbidden(ip) {
            Some(kind) => Err(kind),
            None => Ok(()),
        }
    }
}

/// What `ip` is when it is not a public unicast address.
fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let kind = if ip.is_unspecified() || a == 0 {
        "an unspecified (0.0.0.0/8) address"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if ip.is_private() {
        "a private (RFC 1918) address"
    } else if a == 100 && (b & 0xc0) == 64 {
        "a carrier-grade NAT (100.64.0.0/10) address"
    } else if ip.is_link_local() {
        "a link-local address (169.254.0.0/16, where cloud metadata services listen)"
    } else if ip.is_broadcast() {
        "the broadcast address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if a >= 240 {
        "a reserved (240.0.0.0/4) address"
    } else if ip.is_documentation() {
        "a documentation address"
    } else if a == 192 && b == 0 && c == 0 {
        "an IETF protocol (192.0.0.0/24) address"
    } else if a == 198 && (b & 0xfe) == 18 {
        "a benchmarking (198.18.0.0/15) address"
    } else {
        return None;
    };
    Some(kind)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return forbidden_v4(v4);
    }
    let segments = ip.segments();
    let kind = if ip.is_unspecified() {
        "the unspecified address (::)"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if ip.is_unique_local() {
        "a unique-local (fc00::/7) address"
    } else if ip.is_unicast_link_local() {
        "a link-local (fe80::/10) address"
    } else if (segments[0] & 0xffc0) == 0xfec0 {
        "a site-local (fec0::/10) address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
        "a documentation (2001:db8::/32) address"
    } else if segments[0] == 0x2001 && segments[1] == 0 {
        "a Teredo (2001::/32) address, whose IPv4 end cannot be checked"
    } else if segments[..4] == [0x0100, 0, 0, 0] {
        "a discard (100::/64) address"
    } else if segments[..3] == [0x0064, 0xff9b, 0x0001] {
        "a local-use NAT64 (64:ff9b:1::/48) address"
    } else if segments[0] == 0 {
        // Every public IPv6 unicast address lies in 2000::/3; ::/16 holds only the special
        // forms handled above and reserved space.
        "a reserved (::/16) address"
    } else {
        return None;
    };
    Some(kind)
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped `::ffff:a.b.c.d`,
/// IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:aabb:ccdd::/48`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = || Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low()),
        // `::` and `::1` are themselves, not 0.0.0.0 and 0.0.0.1.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => Some(low()),
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(low()),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))),
        _ => None,
    }
}

/// Why a host name is refused before it is even resolved: names that by convention mean
/// this machine, the LAN or a cloud's metadata service. The address check would refuse most
/// of them too; this names the reason plainly, and covers a resolver that answers such a
/// name with a public address of a LAN's choosing.
pub fn forbidden_name(host: &str) -> Option<&'static str> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let under = |zone: &str| host == zone || host.ends_with(&format!(".{zone}"));
    let kind = if under("localhost") {
        "names this machine"
    } else if ["metadata", "metadata.google.internal", "instance-data"].contains(&host.as_str())
        || under("metadata.goog")
    {
        "names a cloud metadata service"
    } else if ["local", "internal", "lan", "home.arpa", "intranet", "corp"]
        .iter()
        .any(|zone| under(zone))
    {
        "is a LAN name"
    } else if !host.contains('.') {
        "has no dot, so the resolver's search domains would make it a LAN name"
    } else {
        return None;
    };
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> bool {
        AddressPolicy::public_only()
            .check(text.parse().unwrap())
            .is_err()
    }

    #[test]
    fn internal_addresses_are_refused() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.0.170",
            "198.18.0.1",
            "192.0.2.1",
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::10.1.2.3",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "100::1",
            "::2:3:4:5",
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "169.253.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
            "2002:101:101::1",
        ] {
            assert!(!refused(ip), "{ip} is public");
        }
    }

    #[test]
    fn a_test_allows_exact_addresses_only() {
        let policy = AddressPolicy::allowing(&["127.0.0.2".parse().unwrap()]);
        assert!(policy.check("127.0.0.2".parse().unwrap()).is_ok());
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_err());
        assert!(policy.check("::ffff:127.0.0.2".parse().unwrap()).is_err());
    }

    #[test]
    fn internal_names_are_refused() {
        for name in [
            "localhost",
            "LOCALHOST.",
            "api.localhost",
            "metadata",
            "metadata.google.internal",
            "printer.local",
            "nas.home.arpa",
            "router",
            "instance-data",
        ] {
            assert!(forbidden_name(name).is_some(), "{name}");
        }
        for name in ["example.com", "docs.rs", "localhost.example.com"] {
            assert!(forbidden_name(name).is_none(), "{name}");
        }
    }
}
