//! Which clients count as one for the connection cap, the failure limiter and log throttling.
//!
//! An attacker who controls a range of source addresses must gain nothing by rotating through
//! it, so the key is the smallest unit an attacker cannot cheaply multiply:
//! - every loopback address (all of 127.0.0.0/8 and `::1`) is ONE client: any local process
//!   may bind any of them, and on the appliance the owner arrives there too, through the SSH
//!   tunnel. The address says nothing about who is calling, so loopback protections must not
//!   refuse a correct token (see `ratelimit`).
//! - an IPv6 address counts by its /64: one subscriber usually holds a whole /64.
//! - an IPv4 address (and an IPv4-mapped IPv6 one) counts by itself.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Loopback,
    V4([u8; 4]),
    /// The first 64 bits of the address.
    V6Prefix(u64),
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        if ip.is_loopback() {
            return Self::Loopback;
        }
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => Self::V6Prefix((v6.to_bits() >> 64) as u64),
        }
    }

    pub fn is_loopback(self) -> bool {
        self == Self::Loopback
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loopback => f.write_str("loopback (127.0.0.0/8, ::1)"),
            Self::V4(o) => write!(f, "{}.{}.{}.{}", o[0], o[1], o[2], o[3]),
            Self::V6Prefix(p) => write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(*p) << 64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    #[test]
    fn rotating_inside_a_key_stays_one_client() {
        assert_eq!(key("127.0.0.1"), key("127.45.6.7"));
        assert_eq!(key("127.0.0.1"), key("::1"));
        assert_eq!(key("::ffff:127.0.0.9"), ClientKey::Loopback);
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }
}
