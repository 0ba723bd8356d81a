//! Network definitions: what `ferrynet network create` records, and the names and checks
//! every other module relies on (validation lives here so that it happens before any change).
//! [`state`] keeps them on disk (and says where endpoints and reservations live).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::family::Family;

mod state;

pub use state::{StateDir, DEFAULT_RUN_DIR};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/ferrynet";
pub const DEFAULT_MTU: u32 = 1500;
pub const MIN_MTU: u32 = 576;
pub const MAX_MTU: u32 = 65535;
/// `mtu` of a network that names none (a CNI configuration without `"mtu"`): its bridge's,
/// which is the default route's interface's when the bridge is created. Decided by the
/// driver, so that no container's ADD or DEL reads the routing table for it.
pub const MTU_OF_BRIDGE: u32 = 0;

/// The smallest MTU an IPv6 network may have (IPv6 is removed from a smaller link).
pub const MIN_MTU_V6: u32 = 1280;

/// The subnet's first host address: the default gateway.
pub fn first_host<A: Family>(subnet: A::Net) -> A {
    A::offset(A::network(subnet), 1)
}

/// A container subnet of either family: a prefix length in the family's limits, no host
/// bits, and nowhere near the ranges the host needs for itself.
pub fn validate_subnet<A: Family>(subnet: A::Net) -> Result<(), NetworkError> {
    let len = A::prefix_len(subnet);
    if len == 0 {
        return Err(invalid(
            "subnet",
            subnet,
            "is the whole address space; a container network needs its own range (e.g. 10.90.0.0/24 or fd00:90::/64)",
        ));
    }
    let (min, max) = (*A::SUBNET_PREFIXES.start(), *A::SUBNET_PREFIXES.end());
    if len > max {
        return Err(invalid(
            "subnet",
            subnet,
            format!("needs a prefix of /{max} or shorter"),
        ));
    }
    if len < min {
        return Err(invalid(
            "subnet",
            subnet,
            format!("is wider than /{min}, more than one host's network"),
        ));
    }
    if A::addr(subnet) != A::network(subnet) {
        return Err(invalid(
            "subnet",
            subnet,
            format!(
                "has host bits set; did you mean {}?",
                A::with_prefix(A::network(subnet), len)
            ),
        ));
    }
    for (range, what) in A::RESERVED {
        let range: A::Net = range.parse().ok().expect("valid constant");
        if A::contains(range, A::network(subnet)) || A::contains(subnet, A::network(range)) {
            return Err(invalid("subnet", subnet, format!("overlaps {what}")));
        }
    }
    Ok(())
}

/// Whether two subnets share an address (never across families).
pub fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A bridge name: an interface name that is not one ferrynet reserves for its other devices
/// (`ferry.VNI` is the agent's VXLAN device, `vf…` are host-side veths).
pub fn validate_bridge_name(name: &str) -> Result<(), NetworkError> {
    validate_ifname("bridge", name)?;
    let vxlan_like = name
        .strip_prefix("ferry.")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if vxlan_like {
        return Err(invalid(
            "bridge",
            name,
            "is the name of ferrynet's VXLAN device (ferry.VNI)",
        ));
    }
    if name.starts_with("vf") && name.len() == 14 {
        return Err(invalid(
            "bridge",
            name,
            "looks like a ferrynet host veth (vf + 12 hex digits)",
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid {field} {value:?}: {why}")]
    Invalid {
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("network {0:?} not found")]
    NotFound(String),
    #[error("network {0:?} already exists")]
    Exists(String),
    #[error("subnet {subnet} overlaps network {other:?} ({other_subnet})")]
    Overlap {
        subnet: IpNet,
        other: String,
        other_subnet: IpNet,
    },
    #[error("bridge {bridge:?} is already used by network {other:?}")]
    BridgeTaken { bridge: String, other: String },
    #[error("state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub fn invalid(field: &'static str, value: impl ToString, why: impl ToString) -> NetworkError {
    NetworkError::Invalid {
        field,
        value: value.to_string(),
        why: why.to_string(),
    }
}

/// One family's addressing on a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyConfig<A: Family> {
    pub subnet: A::Net,
    /// The bridge's address in this family, and the containers' next hop.
    pub gateway: A,
    /// Narrow the addresses handed out to [range_start, range_end].
    pub range_start: Option<A>,
    pub range_end: Option<A>,
}

impl<A: Family> FamilyConfig<A> {
    /// `subnet` with its first address as the gateway, the whole subnet handed out.
    pub fn new(subnet: A::Net, gateway: Option<A>) -> FamilyConfig<A> {
        FamilyConfig {
            subnet,
            gateway: gateway.unwrap_or_else(|| first_host(subnet)),
            range_start: None,
            range_end: None,
        }
    }

    /// The gateway address with the subnet's prefix, as it sits on the bridge.
    pub fn gateway_net(&self) -> A::Net {
        A::with_prefix(self.gateway, A::prefix_len(self.subnet))
    }

    /// Whether `ip` may be a host's address here: inside, not the network address, and for
    /// IPv4 not the broadcast address.
    pub fn is_host(&self, ip: A) -> bool {
        let (first, last) = A::usable(self.subnet);
        (first..=last).contains(&ip)
    }

    /// The same checks in both families; the subnet's limits are the family's.
    fn validate(&self) -> Result<(), NetworkError> {
        validate_subnet::<A>(self.subnet)?;
        let subnet = self.subnet;
        if !self.is_host(self.gateway) {
            return Err(invalid(
                "gateway",
                self.gateway,
                format!("is not a host address of {subnet}"),
            ));
        }
        for (field, ip) in [
            ("rangeStart", self.range_start),
            ("rangeEnd", self.range_end),
        ] {
            if let Some(ip) = ip.filter(|ip| !self.is_host(*ip)) {
                return Err(invalid(
                    field,
                    ip,
                    format!("is not a host address of {subnet}"),
                ));
            }
        }
        if let (Some(start), Some(end)) = (self.range_start, self.range_end) {
            if start > end {
                return Err(invalid(
                    "rangeEnd",
                    end,
                    format!("comes before rangeStart {start}"),
                ));
            }
        }
        Ok(())
    }
}

/// A network: a bridge and its addressing in one or both families (dual-stack, IPv4-only or
/// IPv6-only). On disk the IPv4 fields keep their names from before IPv6 (`subnet`,
/// `gateway`, ...) and the IPv6 ones carry a 6 (`subnet6`, `gateway6`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "NetworkRecord", into = "NetworkRecord")]
pub struct NetworkConfig {
    pub name: String,
    pub bridge: String,
    pub v4: Option<FamilyConfig<Ipv4Addr>>,
    pub v6: Option<FamilyConfig<Ipv6Addr>>,
    pub mtu: u32,
    /// Masquerade traffic leaving the subnets to the host's uplink address.
    pub masquerade: bool,
    /// Drop forwarding between this network and other isolated ferrynet networks.
    pub isolate: bool,
    /// Hairpin mode on the bridge ports (a container reaching its own published port).
    pub hairpin: bool,
    /// Containers may send only from their own MAC and addresses (anti-spoofing on the port).
    pub anti_spoof: bool,
    /// The gateway addresses sit on the bridge (the CNI bridge plugin's `isGateway`).
    pub gateway_on_bridge: bool,
    /// Containers' veth pairs take and build packets of up to [`BIG_TCP_SIZE`] (BIG TCP),
    /// IPv4 and IPv6. Off by default: see [`BIG_TCP_SIZE`].
    pub big_tcp: bool,
}

/// The GSO/GRO size of a network's veth pairs with `big_tcp`: 192 KiB (as Cilium's BIG TCP;
/// the kernel's default is 64 KiB). A TCP stream between two containers of the bridge then
/// moves three times fewer packets through the veths and the bridge (measured: single
/// stream 2.3x a raw veth pair). But a container's socket sizes its packets by its own
/// `eth0`, and a device on the way that takes less — a host uplink left at 64 KiB — must
/// segment each one in software, down to single MTU-sized packets: cross-host throughput
/// then falls to a sixth, and IPv6's jumbo packets barely pass. So only for networks whose
/// containers talk among themselves, or whose uplinks take the same size.
pub const BIG_TCP_SIZE: u32 = 196_608;

/// [`NetworkConfig`] as stored and printed: flat, every field named.
#[derive(Serialize, Deserialize)]
struct NetworkRecord {
    name: String,
    bridge: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subnet: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range_start: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range_end: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subnet6: Option<Ipv6Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range6_start: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range6_end: Option<Ipv6Addr>,
    mtu: u32,
    #[serde(default = "yes")]
    masquerade: bool,
    #[serde(default = "yes")]
    isolate: bool,
    #[serde(default = "yes")]
    hairpin: bool,
    #[serde(default = "yes")]
    anti_spoof: bool,
    #[serde(default = "yes")]
    gateway_on_bridge: bool,
    #[serde(default)]
    big_tcp: bool,
}

fn family_from_record<A: Family>(
    subnet: Option<A::Net>,
    gateway: Option<A>,
    range_start: Option<A>,
    range_end: Option<A>,
) -> Option<FamilyConfig<A>> {
    subnet.map(|subnet| FamilyConfig {
        range_start,
        range_end,
        ..FamilyConfig::new(subnet, gateway)
    })
}

impl From<NetworkRecord> for NetworkConfig {
    fn from(r: NetworkRecord) -> NetworkConfig {
        NetworkConfig {
            v4: family_from_record(r.subnet, r.gateway, r.range_start, r.range_end),
            v6: family_from_record(r.subnet6, r.gateway6, r.range6_start, r.range6_end),
            name: r.name,
            bridge: r.bridge,
            mtu: r.mtu,
            masquerade: r.masquerade,
            isolate: r.isolate,
            hairpin: r.hairpin,
            anti_spoof: r.anti_spoof,
            gateway_on_bridge: r.gateway_on_bridge,
            big_tcp: r.big_tcp,
        }
    }
}

impl From<NetworkConfig> for NetworkRecord {
    fn from(n: NetworkConfig) -> NetworkRecord {
        NetworkRecord {
            subnet: n.v4.map(|f| f.subnet),
            gateway: n.v4.map(|f| f.gateway),
            range_start: n.v4.and_then(|f| f.range_start),
            range_end: n.v4.and_then(|f| f.range_end),
            subnet6: n.v6.map(|f| f.subnet),
            gateway6: n.v6.map(|f| f.gateway),
            range6_start: n.v6.and_then(|f| f.range_start),
            range6_end: n.v6.and_then(|f| f.range_end),
            name: n.name,
            bridge: n.bridge,
            mtu: n.mtu,
            masquerade: n.masquerade,
            isolate: n.isolate,
            hairpin: n.hairpin,
            anti_spoof: n.anti_spoof,
            gateway_on_bridge: n.gateway_on_bridge,
            big_tcp: n.big_tcp,
        }
    }
}

fn yes() -> bool {
    true
}

/// Linux interface names: 1–15 bytes, no '/', ':' or whitespace, not "." or "..".
pub fn validate_ifname(field: &'static str, name: &str) -> Result<(), NetworkError> {
    let why = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 15 {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is not a valid interface name")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        Some("must not contain '/', ':', whitespace or control characters")
    } else {
        None
    };
    match why {
        Some(w) => Err(invalid(field, name, w)),
        None => Ok(()),
    }
}

/// Names of networks and containers: `[A-Za-z0-9][A-Za-z0-9_.-]*` (the CNI container id
/// pattern), so they are safe in file names.
pub fn validate_id(field: &'static str, id: &str) -> Result<(), NetworkError> {
    let mut chars = id.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && id.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            id,
            "must match [A-Za-z0-9][A-Za-z0-9_.-]* (at most 128 characters)",
        ))
    }
}

impl NetworkConfig {
    /// Builds and validates a definition from the subnets and gateways a user gives (at most
    /// one of each family), filling the defaults a user expects: bridge `ferry-NAME`, each
    /// family's gateway = its subnet's first address.
    pub fn new(
        name: &str,
        subnets: &[IpNet],
        bridge: Option<&str>,
        gateways: &[IpAddr],
        mtu: u32,
    ) -> Result<NetworkConfig, NetworkError> {
        let (mut v4, mut v6) = (None, None);
        for subnet in subnets {
            let taken = match subnet {
                IpNet::V4(s) => v4.replace(*s).is_some(),
                IpNet::V6(s) => v6.replace(*s).is_some(),
            };
            if taken {
                return Err(invalid(
                    "subnet",
                    subnet,
                    "is a second subnet of the same family; give at most one IPv4 and one IPv6 subnet",
                ));
            }
        }
        if v4.is_none() && v6.is_none() {
            return Err(invalid(
                "subnet",
                "",
                "is required (an IPv4 and/or an IPv6 CIDR)",
            ));
        }
        let (mut gw4, mut gw6) = (None, None);
        for gw in gateways {
            let (taken, has_family) = match gw {
                IpAddr::V4(g) => (gw4.replace(*g).is_some(), v4.is_some()),
                IpAddr::V6(g) => (gw6.replace(*g).is_some(), v6.is_some()),
            };
            if taken {
                return Err(invalid(
                    "gateway",
                    gw,
                    "is a second gateway of the same family",
                ));
            }
            if !has_family {
                return Err(invalid(
                    "gateway",
                    gw,
                    "has no subnet of its family on this network",
                ));
            }
        }
        let net = NetworkConfig {
            name: name.to_string(),
            bridge: bridge
                .map(str::to_string)
                .unwrap_or(format!("ferry-{name}")),
            v4: v4.map(|s| FamilyConfig::new(s, gw4)),
            v6: v6.map(|s| FamilyConfig::new(s, gw6)),
            mtu,
            masquerade: true,
            isolate: true,
            hairpin: true,
            anti_spoof: true,
            gateway_on_bridge: true,
            big_tcp: false,
        };
        net.validate().map_err(|e| match e {
            NetworkError::Invalid { field: "bridge", value, why }
                if bridge.is_none() && value.len() > 15 =>
            {
                invalid(
                    "bridge",
                    value,
                    format!("{why}; the default is ferry-NAME, pick a shorter network name or pass --bridge"),
                )
            }
            e => e,
        })?;
        Ok(net)
    }

    /// Every check a definition must pass before anything is changed for it, whichever entry
    /// point built it (`network create`, a CNI configuration, the demo).
    pub fn validate(&self) -> Result<(), NetworkError> {
        validate_id("network name", &self.name)?;
        validate_bridge_name(&self.bridge)?;
        if self.v4.is_none() && self.v6.is_none() {
            return Err(invalid(
                "subnet",
                "",
                "is required (an IPv4 and/or an IPv6 CIDR)",
            ));
        }
        if let Some(f) = &self.v4 {
            f.validate()?;
        }
        if let Some(f) = &self.v6 {
            f.validate()?;
        }
        let min = if self.v6.is_some() {
            MIN_MTU_V6
        } else {
            MIN_MTU
        };
        if self.mtu != MTU_OF_BRIDGE && !(min..=MAX_MTU).contains(&self.mtu) {
            let why = if self.v6.is_some() {
                format!("must be between {min} and {MAX_MTU} (IPv6 needs at least {MIN_MTU_V6})")
            } else {
                format!("must be between {min} and {MAX_MTU}")
            };
            return Err(invalid("mtu", self.mtu, why));
        }
        Ok(())
    }

    /// The subnets, IPv4 first.
    pub fn subnets(&self) -> Vec<IpNet> {
        let v4 = self.v4.map(|f| IpNet::V4(f.subnet));
        let v6 = self.v6.map(|f| IpNet::V6(f.subnet));
        v4.into_iter().chain(v6).collect()
    }

    /// The gateways, IPv4 first.
    pub fn gateways(&self) -> Vec<IpAddr> {
        let v4 = self.v4.map(|f| IpAddr::V4(f.gateway));
        let v6 = self.v6.map(|f| IpAddr::V6(f.gateway));
        v4.into_iter().chain(v6).collect()
    }

    /// Whether `ip` lies in one of the network's subnets.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => self.v4.is_some_and(|f| f.subnet.contains(&ip)),
            IpAddr::V6(ip) => self.v6.is_some_and(|f| f.subnet.contains(&ip)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn new(name: &str, subnets: &[&str]) -> Result<NetworkConfig, NetworkError> {
        NetworkConfig::new(name, &nets(subnets), None, &[], 1500)
    }

    #[test]
    fn validates_names_and_subnets() {
        let n = new("blue", &["10.90.0.0/24"]).unwrap();
        assert_eq!(n.bridge, "ferry-blue");
        assert_eq!(n.v4.unwrap().gateway, Ipv4Addr::new(10, 90, 0, 1));
        assert!(n.v6.is_none());
        assert!(new("a-very-long-name", &["10.90.0.0/24"])
            .unwrap_err()
            .to_string()
            .contains("bridge"));
        assert!(new("x", &["10.90.0.1/24"]).is_err());
        assert!(new("x", &["10.90.0.0/31"]).is_err());
        assert!(new("../x", &["10.90.0.0/24"]).is_err());
        assert!(validate_ifname("ifname", "eth0").is_ok());
        assert!(validate_ifname("ifname", "0123456789abcdef").is_err());
        assert!(validate_ifname("ifname", "a b").is_err());
        assert!(validate_ifname("ifname", "..").is_err());
    }

    #[test]
    fn dual_stack_and_ipv6_only_networks() {
        let n = new("blue", &["10.90.0.0/24", "fd00:90::/64"]).unwrap();
        assert_eq!(
            n.v6.unwrap().gateway,
            "fd00:90::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(n.subnets().len(), 2);
        let six = new("six", &["fd00:91::/64"]).unwrap();
        assert!(six.v4.is_none());
        // The record keeps the IPv4 names of before and adds the IPv6 ones.
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(json["subnet"], "10.90.0.0/24");
        assert_eq!(json["subnet6"], "fd00:90::/64");
        assert_eq!(json["gateway6"], "fd00:90::1");
        let back: NetworkConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, n);
        let old: NetworkConfig = serde_json::from_str(
            r#"{"name":"old","bridge":"ferry-old","subnet":"10.9.0.0/24","gateway":"10.9.0.1","mtu":1500}"#,
        )
        .unwrap();
        assert!(old.v4.is_some() && old.v6.is_none() && old.masquerade);
    }

    #[test]
    fn refuses_bad_ipv6_networks_naming_the_field() {
        for (subnets, needle) in [
            (
                &["fd00:90::/64", "fd00:91::/64"][..],
                "second subnet of the same family",
            ),
            (&["fe80::/64"][..], "link-local"),
            (&["ff05::/64"][..], "multicast"),
            (&["::/0"][..], "whole address space"),
            (&["::ffff:10.0.0.0/104"][..], "IPv4-mapped"),
            (&["fd00:90::/124"][..], "/120 or shorter"),
            (&["fd00::/40"][..], "wider than /48"),
            (&["fd00:90::1/64"][..], "host bits"),
        ] {
            let e = new("six", subnets).unwrap_err().to_string();
            assert!(
                e.contains("invalid subnet") && e.contains(needle),
                "{subnets:?}: {e}"
            );
        }
        let gw = |g: &str| {
            NetworkConfig::new(
                "six",
                &nets(&["10.9.0.0/24"]),
                None,
                &[g.parse().unwrap()],
                1500,
            )
            .unwrap_err()
            .to_string()
        };
        assert!(gw("fd00:90::1").contains("has no subnet of its family"));
        let e = NetworkConfig::new(
            "six",
            &nets(&["fd00:90::/64"]),
            None,
            &["fd00:91::1".parse().unwrap()],
            1500,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid gateway \"fd00:91::1\""), "{e}");
        let e = NetworkConfig::new("six", &nets(&["fd00:90::/64"]), None, &[], 1200)
            .unwrap_err()
            .to_string();
        assert!(e.contains("IPv6 needs at least 1280"), "{e}");
    }
}
