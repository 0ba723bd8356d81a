//! The two address families behind one trait, so that code whose behaviour is the same for
//! IPv4 and IPv6 (address pools, reservations, range arithmetic) is written once, typed, and
//! never mixes families. Where the families differ it says so here: IPv4 keeps its broadcast
//! address out of a pool, IPv6 has none (only the subnet-router anycast address, the
//! subnet's first, is kept out, as for IPv4's network address).

use std::fmt::{Debug, Display};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub trait Family:
    Copy
    + Eq
    + Ord
    + Hash
    + Debug
    + Display
    + FromStr
    + Send
    + Sync
    + Into<IpAddr>
    + Serialize
    + DeserializeOwned
    + 'static
{
    type Net: Copy
        + Eq
        + Ord
        + Hash
        + Debug
        + Display
        + FromStr
        + Send
        + Sync
        + Into<IpNet>
        + Serialize
        + DeserializeOwned
        + 'static;

    /// "IPv4" or "IPv6", for messages.
    const NAME: &'static str;
    /// The kernel's address family (AF_INET, AF_INET6).
    const AF: u8;
    /// The widest prefix.
    const MAX_PREFIX: u8;
    /// The prefix lengths a container network may have: long enough to hold a gateway and
    /// containers, short enough to be one host's (see the implementations for the choice).
    const SUBNET_PREFIXES: std::ops::RangeInclusive<u8>;
    /// Ranges a container network must not touch, with what they are: they would route the
    /// host's own traffic into a bridge.
    const RESERVED: &'static [(&'static str, &'static str)];

    /// The address in network byte order.
    fn bytes(self) -> Vec<u8>;
    /// An address from network byte order (`None` when `b` is too short).
    fn from_bytes(b: &[u8]) -> Option<Self>;

    fn to_bits(self) -> u128;
    fn from_bits(bits: u128) -> Self;
    fn network(net: Self::Net) -> Self;
    /// The address a CIDR was written with (host bits and all).
    fn addr(net: Self::Net) -> Self;
    /// The subnet's last address (IPv4: the broadcast address).
    fn last(net: Self::Net) -> Self;
    fn prefix_len(net: Self::Net) -> u8;
    fn with_prefix(ip: Self, prefix_len: u8) -> Self::Net;

    fn contains(net: Self::Net, ip: Self) -> bool {
        (Self::network(net)..=Self::last(net)).contains(&ip)
    }

    /// The first and last address a host may use: not the network address, and for IPv4 not
    /// the broadcast address (/31 and /32 have neither).
    fn usable(net: Self::Net) -> (Self, Self);

    /// The address `n` after `ip`, wrapping inside the family.
    fn offset(ip: Self, n: u128) -> Self {
        Self::from_bits(ip.to_bits().wrapping_add(n))
    }
}

impl Family for Ipv4Addr {
    type Net = Ipv4Net;
    const NAME: &'static str = "IPv4";
    const AF: u8 = libc::AF_INET as u8;
    const MAX_PREFIX: u8 = 32;
    /// /30: a gateway and one container.
    const SUBNET_PREFIXES: std::ops::RangeInclusive<u8> = 1..=30;
    const RESERVED: &'static [(&'static str, &'static str)] = &[
        ("0.0.0.0/8", "\"this network\" (0.0.0.0/8)"),
        ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
        ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
        ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
        ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
    ];

    fn bytes(self) -> Vec<u8> {
        self.octets().to_vec()
    }
    fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: [u8; 4] = b.get(..4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    }

    fn to_bits(self) -> u128 {
        u32::from(self) as u128
    }
    fn from_bits(bits: u128) -> Self {
        Ipv4Addr::from(bits as u32)
    }
    fn network(net: Ipv4Net) -> Self {
        net.network()
    }
    fn addr(net: Ipv4Net) -> Self {
        net.addr()
    }
    fn last(net: Ipv4Net) -> Self {
        net.broadcast()
    }
    fn prefix_len(net: Ipv4Net) -> u8 {
        net.prefix_len()
    }
    fn with_prefix(ip: Self, prefix_len: u8) -> Ipv4Net {
        Ipv4Net::new(ip, prefix_len).expect("prefix length of an IPv4 subnet")
    }
    fn usable(net: Ipv4Net) -> (Self, Self) {
        let (first, last) = (net.network(), net.broadcast());
        if net.prefix_len() >= 31 {
            (first, last)
        } else {
            (Self::offset(first, 1), Self::from_bits(last.to_bits() - 1))
        }
    }
}

impl Family for Ipv6Addr {
    type Net = Ipv6Net;
    const NAME: &'static str = "IPv6";
    const AF: u8 = libc::AF_INET6 as u8;
    const MAX_PREFIX: u8 = 128;
    /// /120 keeps 255 usable addresses (a host network smaller than IPv4's usual /24 is a
    /// mistake, not a saving: IPv6 addresses are not scarce); /48 is a whole site's prefix,
    /// the most any one host network can sensibly claim.
    const SUBNET_PREFIXES: std::ops::RangeInclusive<u8> = 48..=120;
    const RESERVED: &'static [(&'static str, &'static str)] = &[
        (
            "::/8",
            "the unspecified, loopback and IPv4-mapped addresses (::/8)",
        ),
        ("fe80::/10", "link-local (fe80::/10)"),
        ("ff00::/8", "multicast (ff00::/8)"),
    ];

    fn bytes(self) -> Vec<u8> {
        self.octets().to_vec()
    }
    fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: [u8; 16] = b.get(..16)?.try_into().ok()?;
        Some(Ipv6Addr::from(b))
    }

    fn to_bits(self) -> u128 {
        u128::from(self)
    }
    fn from_bits(bits: u128) -> Self {
        Ipv6Addr::from(bits)
    }
    fn network(net: Ipv6Net) -> Self {
        net.network()
    }
    fn addr(net: Ipv6Net) -> Self {
        net.addr()
    }
    fn last(net: Ipv6Net) -> Self {
        net.broadcast()
    }
    fn prefix_len(net: Ipv6Net) -> u8 {
        net.prefix_len()
    }
    fn with_prefix(ip: Self, prefix_len: u8) -> Ipv6Net {
        Ipv6Net::new(ip, prefix_len).expect("prefix length of an IPv6 subnet")
    }
    fn usable(net: Ipv6Net) -> (Self, Self) {
        let first = net.network();
        if net.prefix_len() >= 127 {
            (first, net.broadcast())
        } else {
            (Self::offset(first, 1), net.broadcast())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_ranges_per_family() {
        let v4: Ipv4Net = "10.90.0.0/24".parse().unwrap();
        assert_eq!(
            Ipv4Addr::usable(v4),
            ("10.90.0.1".parse().unwrap(), "10.90.0.254".parse().unwrap())
        );
        let v6: Ipv6Net = "fd00:90::/64".parse().unwrap();
        assert_eq!(
            Ipv6Addr::usable(v6),
            (
                "fd00:90::1".parse().unwrap(),
                "fd00:90::ffff:ffff:ffff:ffff".parse().unwrap()
            )
        );
        assert!(Ipv6Addr::contains(v6, "fd00:90::5".parse().unwrap()));
        assert!(!Ipv6Addr::contains(v6, "fd00:91::5".parse().unwrap()));
        assert_eq!(
            Ipv6Addr::offset("fd00:90::ffff".parse().unwrap(), 1),
            "fd00:90::1:0".parse::<Ipv6Addr>().unwrap()
        );
    }
}
