//! The nftables table ferrynet owns in a host namespace (`inet ferrynet`).
//!
//! The chains never change per container. Everything that varies lives in sets and maps:
//! - `bridges`, `bridge_pairs`: isolation — forwarding between two ferrynet bridges is
//!   dropped, within one bridge (hairpin through the host) accepted;
//! - `subnets`, `masq_subnets`: masquerade of traffic leaving the container subnets;
//! - `ports`: published ports, `proto . host port : container ip . container port`.
//!
//! The table and a network's elements are written by `nft -f` (once per network, on the
//! control path); a container's elements are one raw nf_tables netlink batch (data path).

mod nftnl;

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::netlink::NetlinkError;
pub use nftnl::{Element, Nftnl, Set, NFPROTO_BRIDGE, NFPROTO_INET};

pub const TABLE: &str = "ferrynet";
const PORTS_MAP: Set = Set {
    family: NFPROTO_INET,
    name: "ports",
};
const PORTS_IP_MAP: Set = Set {
    family: NFPROTO_INET,
    name: "ports_ip",
};
const PAIRS_SET: Set = Set {
    family: NFPROTO_INET,
    name: "bridge_pairs",
};
// Anti-spoofing, in the bridge family table: guarded ports, and each one's MAC and address.
const GUARDED_PORTS: Set = Set {
    family: NFPROTO_BRIDGE,
    name: "ports",
};
const PORT_MACS: Set = Set {
    family: NFPROTO_BRIDGE,
    name: "port_macs",
};
const PORT_IPS: Set = Set {
    family: NFPROTO_BRIDGE,
    name: "port_ips",
};

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("nftables: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("host port {port}/{proto} is already published")]
    PortTaken { port: u16, proto: Protocol },
    #[error("running nft: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft failed: {0}")]
    Nft(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(format!(
                "unknown protocol {s:?} (expected tcp, udp or sctp)"
            )),
        }
    }
}

/// A published port: host_port on the host's addresses → container_ip:container_port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Only on this host address (all of the host's addresses when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
}

impl std::str::FromStr for PortMapping {
    type Err = String;
    /// `[HOST_IP:]HOST:CONTAINER[/PROTO]` or `PORT[/PROTO]` (the same port on both sides).
    fn from_str(s: &str) -> Result<Self, String> {
        let (ports, proto) = match s.split_once('/') {
            Some((p, proto)) => (p, proto.parse()?),
            None => (s, Protocol::Tcp),
        };
        let port = |p: &str| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("invalid port {p:?} in {s:?} (expected 1-65535)")),
            }
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host_port, container_port) = match parts.as_slice() {
            [p] => (None, port(p)?, port(p)?),
            [h, c] => (None, port(h)?, port(c)?),
            [ip, h, c] => (
                Some(
                    ip.parse()
                        .map_err(|_| format!("invalid host address {ip:?} in {s:?}"))?,
                ),
                port(h)?,
                port(c)?,
            ),
            _ => {
                return Err(format!(
                    "invalid port mapping {s:?} (expected [HOST_IP:]HOST:CONTAINER[/PROTO])"
                ))
            }
        };
        Ok(PortMapping {
            host_port,
            container_port,
            protocol: proto,
            host_ip,
        })
    }
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

/// Anti-spoofing for one bridge port: frames entering from `veth` must come from `mac`, and
/// its IPv4 and ARP from `ip`; IPv6 from it is dropped (ferrynet networks are IPv4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGuard {
    pub veth: String,
    pub mac: crate::netlink::Mac,
    pub ip: Ipv4Addr,
}

impl PortGuard {
    fn elements(&self) -> [(Set, Vec<Element>); 3] {
        let port = ifname_key(&self.veth);
        let mut mac_key = port.clone();
        mac_key.extend_from_slice(&self.mac.0);
        mac_key.extend_from_slice(&[0, 0]);
        let mut ip_key = port.clone();
        ip_key.extend_from_slice(&self.ip.octets());
        let elem = |key| vec![Element { key, data: None }];
        [
            (GUARDED_PORTS, elem(port)),
            (PORT_MACS, elem(mac_key)),
            (PORT_IPS, elem(ip_key)),
        ]
    }
}

/// What a network contributes to the table.
#[derive(Debug, Clone)]
pub struct NetworkRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub masquerade: bool,
    pub isolate: bool,
}

fn ifname_key(name: &str) -> Vec<u8> {
    let mut k = vec![0u8; 16];
    let b = name.as_bytes();
    k[..b.len().min(16)].copy_from_slice(&b[..b.len().min(16)]);
    k
}

/// The map a port lives in, and its element: `proto . port` in `ports`, or
/// `host address . proto . port` in `ports_ip`; the data is `container ip . port`.
fn port_element(p: &PortMapping, ip: Ipv4Addr) -> (Set, Element) {
    let h = p.host_port.to_be_bytes();
    let c = p.container_port.to_be_bytes();
    let o = ip.octets();
    let mut key = Vec::with_capacity(12);
    if let Some(host_ip) = p.host_ip {
        key.extend_from_slice(&host_ip.octets());
    }
    key.extend_from_slice(&[p.protocol.number(), 0, 0, 0, h[0], h[1], 0, 0]);
    let map = if p.host_ip.is_some() {
        PORTS_IP_MAP
    } else {
        PORTS_MAP
    };
    (
        map,
        Element {
            key,
            data: Some(vec![o[0], o[1], o[2], o[3], c[0], c[1], 0, 0]),
        },
    )
}

/// Elements grouped by map, as one transaction wants them.
fn by_map(elems: impl Iterator<Item = (Set, Element)>) -> Vec<(Set, Vec<Element>)> {
    let mut out: Vec<(Set, Vec<Element>)> =
        vec![(PORTS_MAP, Vec::new()), (PORTS_IP_MAP, Vec::new())];
    for (map, e) in elems {
        out.iter_mut()
            .find(|(m, _)| *m == map)
            .expect("known map")
            .1
            .push(e);
    }
    out
}

fn decode_port(map: Set, e: &Element) -> Option<(PortMapping, Ipv4Addr)> {
    let d = e.data.as_ref()?;
    let (host_ip, k) = if map == PORTS_IP_MAP {
        let k = e.key.get(4..)?;
        (
            Some(Ipv4Addr::new(e.key[0], e.key[1], e.key[2], e.key[3])),
            k,
        )
    } else {
        (None, &e.key[..])
    };
    if k.len() < 6 || d.len() < 6 {
        return None;
    }
    let protocol = match k[0] {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        132 => Protocol::Sctp,
        _ => return None,
    };
    Some((
        PortMapping {
            host_port: u16::from_be_bytes([k[4], k[5]]),
            container_port: u16::from_be_bytes([d[4], d[5]]),
            protocol,
            host_ip,
        },
        Ipv4Addr::new(d[0], d[1], d[2], d[3]),
    ))
}

const TABLE_SCRIPT: &str = r#"
add table inet ferrynet
add set inet ferrynet bridges { type ifname; }
add set inet ferrynet bridge_pairs { type ifname . ifname; }
add set inet ferrynet subnets { type ipv4_addr; flags interval; }
add set inet ferrynet masq_subnets { type ipv4_addr; flags interval; }
add set inet ferrynet cluster_nets { type ipv4_addr; flags interval; }
add map inet ferrynet ports { type inet_proto . inet_service : ipv4_addr . inet_service; }
add map inet ferrynet ports_ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
add chain inet ferrynet prerouting { type nat hook prerouting priority dstnat; policy accept; }
add chain inet ferrynet output { type nat hook output priority -100; policy accept; }
add chain inet ferrynet postrouting { type nat hook postrouting priority srcnat; policy accept; }
add chain inet ferrynet forward { type filter hook forward priority filter; policy accept; }
flush chain inet ferrynet prerouting
flush chain inet ferrynet output
flush chain inet ferrynet postrouting
flush chain inet ferrynet forward
add rule inet ferrynet prerouting meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @ports_ip
add rule inet ferrynet prerouting meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @ports
add rule inet ferrynet output meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @ports_ip
add rule inet ferrynet output meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @ports
add rule inet ferrynet postrouting ct status dnat ip saddr @subnets masquerade
add rule inet ferrynet postrouting ct status dnat ip saddr 127.0.0.0/8 masquerade
add rule inet ferrynet postrouting ip saddr @masq_subnets ip daddr != @subnets ip daddr != @cluster_nets masquerade
add rule inet ferrynet forward ct state established,related accept
add rule inet ferrynet forward ct status dnat accept
add rule inet ferrynet forward iifname . oifname @bridge_pairs accept
add rule inet ferrynet forward iifname @bridges oifname @bridges drop
add table bridge ferrynet
add set bridge ferrynet ports { type ifname; }
add set bridge ferrynet port_macs { type ifname . ether_addr; }
add set bridge ferrynet port_ips { type ifname . ipv4_addr; }
add chain bridge ferrynet prerouting { type filter hook prerouting priority -300; policy accept; }
flush chain bridge ferrynet prerouting
add rule bridge ferrynet prerouting iifname != @ports accept
add rule bridge ferrynet prerouting iifname . ether saddr != @port_macs drop
add rule bridge ferrynet prerouting ether type ip6 drop
add rule bridge ferrynet prerouting ether type ip iifname . ip saddr != @port_ips drop
add rule bridge ferrynet prerouting ether type arp iifname . arp saddr ether != @port_macs drop
add rule bridge ferrynet prerouting ether type arp iifname . arp saddr ip != @port_ips drop
"#;

/// Runs an nft script in the calling thread's namespace (control path only).
fn run_nft(script: &str) -> Result<(), FirewallError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(FirewallError::Spawn)?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .map_err(FirewallError::Spawn)?;
    let out = child.wait_with_output().map_err(FirewallError::Spawn)?;
    if !out.status.success() {
        return Err(FirewallError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// ferrynet's table in the namespace this was opened in.
pub struct Firewall {
    nl: Nftnl,
}

impl Firewall {
    pub fn open() -> Result<Firewall, FirewallError> {
        Ok(Firewall {
            nl: Nftnl::open(TABLE)?,
        })
    }

    /// Makes sure the table exists and holds `net`'s elements. One netlink lookup when it
    /// does (the common case); otherwise one `nft` run, which is idempotent and atomic, so
    /// concurrent callers converge on the same table.
    pub fn ensure_network(&mut self, net: &NetworkRules) -> Result<(), FirewallError> {
        let pair = [ifname_key(&net.bridge), ifname_key(&net.bridge)].concat();
        let present = match self.nl.get(PAIRS_SET, &pair) {
            Ok(found) => found.is_some(),
            Err(e) if e.is(libc::ENOENT) => false,
            Err(e) => return Err(e.into()),
        };
        if present {
            return Ok(());
        }
        let mut script = String::new();
        if !self.nl.table_exists()? {
            script.push_str(TABLE_SCRIPT);
        }
        script.push_str(&network_elements("add", net));
        run_nft(&script)
    }

    /// Exempts the cluster range from masquerade: container-to-container traffic across hosts
    /// keeps its source address. Control path (the agent, once at start).
    pub fn ensure_cluster_range(&mut self, range: Ipv4Net) -> Result<(), FirewallError> {
        run_nft(&format!(
            "{TABLE_SCRIPT}\nadd element inet {TABLE} cluster_nets {{ {} }}\n",
            range.trunc()
        ))
    }

    /// Removes a network's elements (the table stays for the other networks).
    pub fn remove_network(&mut self, net: &NetworkRules) -> Result<(), FirewallError> {
        if !self.nl.table_exists()? {
            return Ok(());
        }
        // One element per run: a missing element must not stop the removal of the others.
        for line in network_elements("delete", net)
            .lines()
            .filter(|l| !l.is_empty())
        {
            let _ = run_nft(line);
        }
        Ok(())
    }

    /// Publishes ports for one container, atomically: all of them or none.
    pub fn add_ports(&mut self, ip: Ipv4Addr, ports: &[PortMapping]) -> Result<(), FirewallError> {
        self.add_endpoint(None, ip, ports)
    }

    /// A container's elements in one transaction: its anti-spoofing guard (the bridge port may
    /// only send from the container's MAC and address) and its published ports.
    pub fn add_endpoint(
        &mut self,
        guard: Option<&PortGuard>,
        ip: Ipv4Addr,
        ports: &[PortMapping],
    ) -> Result<(), FirewallError> {
        let mut changes = by_map(ports.iter().map(|p| port_element(p, ip)));
        if let Some(g) = guard {
            changes.extend(g.elements());
        }
        let result = match self.nl.add(&changes, true) {
            // A table made by an older ferrynet lacks a set: complete it (idempotent), retry.
            Err(e) if e.is(libc::ENOENT) => {
                run_nft(TABLE_SCRIPT)?;
                self.nl.add(&changes, true)
            }
            r => r,
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.is(libc::EEXIST) && !ports.is_empty() => {
                let taken = ports
                    .iter()
                    .find(|p| self.port_target(p).ok().flatten().is_some())
                    .unwrap_or(&ports[0]);
                Err(FirewallError::PortTaken {
                    port: taken.host_port,
                    proto: taken.protocol,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a container's guard and ports; missing elements are fine.
    pub fn remove_endpoint(
        &mut self,
        guard: Option<&PortGuard>,
        ip: Ipv4Addr,
        ports: &[PortMapping],
    ) -> Result<(), FirewallError> {
        self.remove_ports(ip, ports)?;
        if let Some(g) = guard {
            match self.nl.delete(&g.elements()) {
                Err(e) if !e.is(libc::ENOENT) => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether a port's guard is in place.
    pub fn has_guard(&mut self, g: &PortGuard) -> Result<bool, FirewallError> {
        let [(_, ports), (_, macs), (_, ips)] = g.elements();
        for (set, e) in [
            (GUARDED_PORTS, &ports[0]),
            (PORT_MACS, &macs[0]),
            (PORT_IPS, &ips[0]),
        ] {
            match self.nl.get(set, &e.key) {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(false),
                Err(e) if e.is(libc::ENOENT) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Every guarded port's name (for GC of ports whose veth is gone).
    pub fn guarded_ports(&mut self) -> Result<Vec<PortGuard>, FirewallError> {
        let dump = |nl: &mut Nftnl, set| match nl.dump(set) {
            Err(e) if e.is(libc::ENOENT) => Ok(Vec::new()),
            r => r,
        };
        let macs = dump(&mut self.nl, PORT_MACS)?;
        let ips = dump(&mut self.nl, PORT_IPS)?;
        let name = |k: &[u8]| crate::netlink::socket::attr_string(&k[..16.min(k.len())]);
        let mut out = Vec::new();
        for m in &macs {
            if m.key.len() < 22 {
                continue;
            }
            let veth = name(&m.key);
            let mac = crate::netlink::Mac(m.key[16..22].try_into().expect("6 bytes"));
            if let Some(i) = ips
                .iter()
                .find(|i| i.key.len() >= 20 && name(&i.key) == veth)
            {
                let ip = Ipv4Addr::new(i.key[16], i.key[17], i.key[18], i.key[19]);
                out.push(PortGuard { veth, mac, ip });
            }
        }
        Ok(out)
    }

    /// Unpublishes ports; missing ones are fine. Only removes a port still pointing at `ip`.
    pub fn remove_ports(
        &mut self,
        ip: Ipv4Addr,
        ports: &[PortMapping],
    ) -> Result<(), FirewallError> {
        if !self.nl.table_exists()? {
            return Ok(());
        }
        let mine: Vec<PortMapping> = ports
            .iter()
            .filter(|p| matches!(self.port_target(p), Ok(Some((t, _))) if t == ip))
            .copied()
            .collect();
        let changes = by_map(mine.iter().map(|p| port_element(p, ip)));
        Ok(self.nl.delete(&changes)?)
    }

    /// Every published port: (mapping, container address).
    pub fn ports(&mut self) -> Result<Vec<(PortMapping, Ipv4Addr)>, FirewallError> {
        if !self.nl.table_exists()? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for map in [PORTS_MAP, PORTS_IP_MAP] {
            let elems = match self.nl.dump(map) {
                Ok(e) => e,
                Err(e) if e.is(libc::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            out.extend(elems.iter().filter_map(|e| decode_port(map, e)));
        }
        Ok(out)
    }

    /// Where a published port points, if it is published.
    pub fn port_target(
        &mut self,
        p: &PortMapping,
    ) -> Result<Option<(Ipv4Addr, u16)>, FirewallError> {
        let (map, elem) = port_element(p, Ipv4Addr::UNSPECIFIED);
        match self.nl.get(map, &elem.key) {
            Ok(Some(d)) if d.len() >= 6 => Ok(Some((
                Ipv4Addr::new(d[0], d[1], d[2], d[3]),
                u16::from_be_bytes([d[4], d[5]]),
            ))),
            Ok(_) => Ok(None),
            Err(e) if e.is(libc::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn network_elements(verb: &str, net: &NetworkRules) -> String {
    let b = &net.bridge;
    let mut s = String::new();
    s.push_str(&format!(
        "{verb} element inet {TABLE} subnets {{ {} }}\n",
        net.subnet.trunc()
    ));
    if net.masquerade {
        s.push_str(&format!(
            "{verb} element inet {TABLE} masq_subnets {{ {} }}\n",
            net.subnet.trunc()
        ));
    }
    s.push_str(&format!(
        "{verb} element inet {TABLE} bridge_pairs {{ \"{b}\" . \"{b}\" }}\n"
    ));
    if net.isolate {
        s.push_str(&format!(
            "{verb} element inet {TABLE} bridges {{ \"{b}\" }}\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_port_mappings() {
        let p: PortMapping = "8080:80/tcp".parse().unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol),
            (8080, 80, Protocol::Tcp)
        );
        let p: PortMapping = "53/udp".parse().unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol),
            (53, 53, Protocol::Udp)
        );
        assert!("0:80".parse::<PortMapping>().is_err());
        assert!("80:70000".parse::<PortMapping>().is_err());
        assert!("80/icmp".parse::<PortMapping>().is_err());
    }

    #[test]
    fn port_element_encoding_matches_nft_registers() {
        let p: PortMapping = "53:5353/udp".parse().unwrap();
        let (map, e) = port_element(&p, Ipv4Addr::new(10, 90, 0, 3));
        assert_eq!(map, PORTS_MAP);
        assert_eq!(e.key, vec![17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(
            e.data.clone().unwrap(),
            vec![10, 90, 0, 3, 0x14, 0xe9, 0, 0]
        );
        assert_eq!(decode_port(map, &e), Some((p, Ipv4Addr::new(10, 90, 0, 3))));
        let p: PortMapping = "10.201.0.1:53:5353/udp".parse().unwrap();
        let (map, e) = port_element(&p, Ipv4Addr::new(10, 90, 0, 3));
        assert_eq!(map, PORTS_IP_MAP);
        assert_eq!(e.key, vec![10, 201, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(decode_port(map, &e), Some((p, Ipv4Addr::new(10, 90, 0, 3))));
        assert_eq!(p.to_string(), "10.201.0.1:53:5353/udp");
    }
}
