//! Questions `ferrynet trace` asks of the table: what the rules would do to one packet,
//! answered by looking up the one element each rule consults (never by listing a set).

use std::net::IpAddr;

use super::*;
use crate::netlink::Mac;

/// What the bridge table's anti-spoofing does to a frame entering from a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardVerdict {
    /// The port is not guarded (not a ferrynet container port, or anti-spoofing is off).
    Unguarded,
    Pass,
    /// `iifname . ether saddr != @port_macs drop`
    WrongMac,
    /// `iifname . ip saddr != @port_ips drop` (or its IPv6 rule).
    WrongSource,
    /// `iifname != @ports6 drop`: the port may send no IPv6.
    NoIpv6,
}

/// What the `inet` forward chain's isolation rules do to a packet between two interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// `iifname . oifname @bridge_pairs accept`: within one network.
    SameNetwork,
    /// `iifname @bridges oifname @bridges drop`: between two isolated ferrynet networks.
    Isolated,
    /// Neither rule matches.
    NotApplicable,
}

impl Firewall {
    fn has(&mut self, set: Set, key: &[u8]) -> Result<bool, FirewallError> {
        match self.nl.get(set, key) {
            Ok(found) => Ok(found.is_some()),
            Err(e) if e.is(libc::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether ferrynet's table exists in this namespace at all.
    pub fn exists(&mut self) -> Result<bool, FirewallError> {
        Ok(self.nl.table_exists()?)
    }

    /// The anti-spoofing verdict for a frame from `veth` with source `mac` and `src`.
    pub fn guard_verdict(
        &mut self,
        veth: &str,
        mac: Mac,
        src: IpAddr,
    ) -> Result<GuardVerdict, FirewallError> {
        let port = ifname_key(veth);
        let key = |value: &[u8]| [&port[..], value].concat();
        if !self.has(GUARDED_PORTS, &port)? {
            return Ok(GuardVerdict::Unguarded);
        }
        if !self.has(PORT_MACS, &key(&[&mac.0[..], &[0, 0]].concat()))? {
            return Ok(GuardVerdict::WrongMac);
        }
        Ok(match src {
            IpAddr::V4(a) if !self.has(PORT_IPS, &key(&a.octets()))? => GuardVerdict::WrongSource,
            IpAddr::V6(_) if !self.has(GUARDED_PORTS6, &port)? => GuardVerdict::NoIpv6,
            IpAddr::V6(a) if !self.has(PORT_IPS6, &key(&a.octets()))? => GuardVerdict::WrongSource,
            _ => GuardVerdict::Pass,
        })
    }

    /// The isolation verdict for a packet forwarded from `iif` to `oif`.
    pub fn isolation(&mut self, iif: &str, oif: &str) -> Result<Isolation, FirewallError> {
        let pair = [ifname_key(iif), ifname_key(oif)].concat();
        if self.has(PAIRS_SET, &pair)? {
            return Ok(Isolation::SameNetwork);
        }
        let bridges = Set {
            family: NFPROTO_INET,
            name: "bridges",
        };
        if self.has(bridges, &ifname_key(iif))? && self.has(bridges, &ifname_key(oif))? {
            return Ok(Isolation::Isolated);
        }
        Ok(Isolation::NotApplicable)
    }

    /// Whether the postrouting chain masquerades a packet from `src` to `dst` that was not
    /// DNATed: the source is in a masqueraded subnet, the destination in no container subnet
    /// and outside the cluster range.
    pub fn masquerades(&mut self, src: IpAddr, dst: IpAddr) -> Result<bool, FirewallError> {
        let set = |name| Set {
            family: NFPROTO_INET,
            name,
        };
        let (masq, subnets, cluster) = if src.is_ipv6() {
            ("masq_subnets6", "subnets6", "cluster_nets6")
        } else {
            ("masq_subnets", "subnets", "cluster_nets")
        };
        Ok(self.has(set(masq), &ip_bytes(src))?
            && !self.has(set(subnets), &ip_bytes(dst))?
            && !self.has(set(cluster), &ip_bytes(dst))?)
    }

    /// Whether `src` is in a container subnet (a DNATed packet from one is masqueraded: the
    /// hairpin rule).
    pub fn in_container_subnet(&mut self, src: IpAddr) -> Result<bool, FirewallError> {
        let name = if src.is_ipv6() { "subnets6" } else { "subnets" };
        self.has(
            Set {
                family: NFPROTO_INET,
                name,
            },
            &ip_bytes(src),
        )
    }
}
