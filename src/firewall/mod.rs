//! The nftables tables ferrynet owns in a host namespace: `inet ferrynet` (NAT, isolation)
//! and `bridge ferrynet` (anti-spoofing), for IPv4 and IPv6 alike.
//!
//! The chains never change per container. Everything that varies lives in sets and maps, one
//! per family where the key holds an address:
//! - `bridges`, `bridge_pairs`: isolation — forwarding between two ferrynet bridges is
//!   dropped, within one bridge (hairpin through the host) accepted. Interface-based, so it
//!   covers both families;
//! - `subnets`/`subnets6`, `masq_subnets`/`masq_subnets6`, `cluster_nets`/`cluster_nets6`:
//!   masquerade of traffic leaving the container subnets (not towards other containers);
//! - `ports`/`ports6` (`proto . host port : container ip . container port`) and
//!   `ports_ip`/`ports_ip6` (the same, keyed by one host address too): published ports;
//! - in the bridge table, per guarded bridge port: its MAC, its IPv4 address, whether it may
//!   speak IPv6 at all and with which addresses (see [`PortGuard`]).
//!
//! The table and a network's elements are written by `nft -f` (once per network, on the
//! control path); a container's elements are one raw nf_tables netlink batch (data path).
//! The table script is idempotent: re-running it completes a table made by an older
//! ferrynet, which is how an upgrade gets the IPv6 objects.
//!
//! Debian 12's `nft` 1.0.6 segfaults on the JSON form of the `dnat ... map` rules, so the
//! script is text, and elements are read back over netlink rather than through `nft -j`.

mod encoding;
mod nftnl;
mod port;
mod query;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::netlink::NetlinkError;
use encoding::*;
pub use nftnl::{Element, Nftnl, Set, NFPROTO_BRIDGE, NFPROTO_INET};
pub use port::{PortMapping, Protocol};
pub use query::{GuardVerdict, Isolation};

pub const TABLE: &str = "ferrynet";
/// The chain the table script added last (see [`Firewall::ensure_network`]).
const NEWEST_CHAIN: &str = "output";
const PORTS_MAP: Set = Set {
    family: NFPROTO_INET,
    name: "ports",
};
const PORTS_IP_MAP: Set = Set {
    family: NFPROTO_INET,
    name: "ports_ip",
};
const PORTS6_MAP: Set = Set {
    family: NFPROTO_INET,
    name: "ports6",
};
const PORTS_IP6_MAP: Set = Set {
    family: NFPROTO_INET,
    name: "ports_ip6",
};
/// The four port maps: (map, keyed by a host address, IPv6).
const PORT_MAPS: [(Set, bool, bool); 4] = [
    (PORTS_MAP, false, false),
    (PORTS_IP_MAP, true, false),
    (PORTS6_MAP, false, true),
    (PORTS_IP6_MAP, true, true),
];
const PAIRS_SET: Set = Set {
    family: NFPROTO_INET,
    name: "bridge_pairs",
};
// Anti-spoofing, in the bridge family table: guarded ports, and each one's MAC and addresses.
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
/// Guarded ports that may send IPv6 at all.
const GUARDED_PORTS6: Set = Set {
    family: NFPROTO_BRIDGE,
    name: "ports6",
};
const PORT_IPS6: Set = Set {
    family: NFPROTO_BRIDGE,
    name: "port_ips6",
};
/// The same elements as `port_ips6` and `port_macs`, in sets typed for the raw payload
/// matches on ND fields: nft 1.0.6 has no `icmpv6 taddr` and refuses to look a raw field up
/// in a set typed `ifname . ipv6_addr` ("datatype mismatch"), but accepts a set declared
/// `typeof iifname . @th,64,128`. The bytes are identical; only nft's type check differs.
const ND_TARGETS: Set = Set {
    family: NFPROTO_BRIDGE,
    name: "nd_targets",
};
const ND_MACS: Set = Set {
    family: NFPROTO_BRIDGE,
    name: "nd_macs",
};

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("nftables: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("host port {port}/{proto} is already published")]
    PortTaken { port: u16, proto: Protocol },
    #[error("published port {port} needs an {family} address in the container, which has none")]
    Family {
        port: PortMapping,
        /// "IPv4", "IPv6", or "IPv4 or IPv6" (a port on all host addresses, no address).
        family: &'static str,
    },
    #[error("running nft: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft failed: {0}")]
    Nft(String),
}

/// A container's addresses, one per family (ports and guards are per family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointAddrs {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl EndpointAddrs {
    fn get(self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.v6.map(IpAddr::V6)
        } else {
            self.v4.map(IpAddr::V4)
        }
    }
}

/// Anti-spoofing for one bridge port: frames entering from `veth` must come from `mac`; its
/// IPv4 and ARP from `ip`, its IPv6 from one of `ip6`. Without `ip` the port may send no
/// IPv4 or ARP at all, with `ip6` empty no IPv6 at all.
///
/// For IPv6 the rules also keep a container from being the others' router or neighbour
/// impostor: no router advertisements or redirects; neighbour advertisements only for its
/// own addresses and with its own MAC in the target link-layer option; neighbour and router
/// solicitations only with its own MAC in the source link-layer option. The unspecified
/// source `::` is allowed only for what a node sends before it has an address: MLD reports
/// and duplicate-address-detection solicitations (for one of its own addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGuard {
    pub veth: String,
    pub mac: crate::netlink::Mac,
    pub ip: Option<Ipv4Addr>,
    /// The container's IPv6 addresses, including its link-local one.
    pub ip6: Vec<Ipv6Addr>,
}

impl PortGuard {
    /// Every element of the guard, by set: `port . value` keys (ifname is 16 bytes; a MAC is
    /// 6 bytes padded to a 4-byte register, addresses need no padding).
    fn elements(&self) -> Vec<(Set, Vec<Element>)> {
        let port = ifname_key(&self.veth);
        let elem = |value: &[u8]| Element {
            key: [&port[..], value].concat(),
            data: None,
            jump: None,
        };
        let mac = [&self.mac.0[..], &[0, 0]].concat();
        let mut out = vec![
            (GUARDED_PORTS, vec![elem(&[])]),
            (PORT_MACS, vec![elem(&mac)]),
            (
                PORT_IPS,
                self.ip.iter().map(|ip| elem(&ip.octets())).collect(),
            ),
        ];
        if !self.ip6.is_empty() {
            // One element per distinct address: a duplicate would fail the exclusive add.
            let mut ip6 = self.ip6.clone();
            ip6.sort();
            ip6.dedup();
            let addrs: Vec<Element> = ip6.iter().map(|ip| elem(&ip.octets())).collect();
            out.push((GUARDED_PORTS6, vec![elem(&[])]));
            out.push((ND_TARGETS, addrs.clone()));
            out.push((PORT_IPS6, addrs));
            out.push((ND_MACS, vec![elem(&mac)]));
        }
        out
    }
}

/// What a network contributes to the table.
#[derive(Debug, Clone)]
pub struct NetworkRules {
    pub bridge: String,
    pub subnet: Option<Ipv4Net>,
    pub subnet6: Option<Ipv6Net>,
    pub masquerade: bool,
    pub isolate: bool,
}

/// The whole table, idempotent (`add` of an existing object is a no-op; the chains are
/// flushed and refilled in the same transaction, so no packet sees them empty).
///
/// NAT. A published port is a DNAT from the host's addresses (`fib daddr type local`) or one
/// of them (`ports_ip*`), in prerouting (from outside and from containers) and output (from
/// the host itself). Hairpin — a container reaching a published port of its own network —
/// is masqueraded so the reply comes back through the host. IPv4 also serves the host's
/// 127.0.0.1 (with `route_localnet` on the bridge, masqueraded). IPv6 cannot: the kernel has
/// no `route_localnet` for IPv6 and drops a packet from ::1 that leaves the host, so a
/// connection to [::1]:PORT is not DNATed at all (`ip6 daddr != ::1`): it is refused by the
/// host's own stack at once instead of hanging on a dropped SYN. Published IPv6 ports are
/// reachable from the host's own non-loopback addresses.
///
/// Anti-spoofing (bridge family: with br_netfilter the `inet` hooks see the bridge, not the
/// port, as iifname). Only guarded ports are checked; their frames must carry the port's
/// MAC. IPv6 is checked in `guard6`, with no accept anywhere before its drops:
/// - a port not in `ports6` sends no IPv6;
/// - the source must be one of the port's addresses, or `::` for MLD reports and
///   duplicate-address-detection NS (whose target must then be one of the port's addresses:
///   else a container could fail another's DAD);
/// - no router advertisements or redirects (a container must not become the others' router);
///   router solicitations, MLD and Packet Too Big pass;
/// - NA: the target (ICMPv6 offset 8) must be one of the port's addresses; its first option,
///   if any, must be the target link-layer address (type 2, offset 24) carrying the port's
///   MAC (offset 26). Linux uses the first option of a type and ignores unknown ones, so
///   requiring the first option to be the link-layer one leaves no other place to hide one;
/// - NS (not DAD) and RS likewise for the source link-layer option (type 1, offset 24 in an
///   NS, 8 in an RS). A DAD NS carries no such option (a nonce instead), and receivers
///   ignore it there.
///
/// Router advertisements never reach a container, whoever sends them (a container of a
/// network without anti-spoofing, a radvd on the host's side of the bridge): the bridge's
/// forward and output hooks drop them towards every ferrynet port (`vf` + 12 hex digits), so
/// no container takes a default route or a SLAAC address from one. This replaces an
/// `accept_ra=0` write per container, which cost ~0.25 ms of each attach.
///
/// The ND field matches are raw (`@th,...`): nft 1.0.6 has no `icmpv6 taddr`. A field the
/// packet is too short for does not match, so an NA without options passes the option
/// checks. Fragmented ND is dropped by Linux receivers (RFC 6980), so it needs no rule.
const TABLE_SCRIPT: &str = r#"
add table inet ferrynet
add set inet ferrynet bridges { type ifname; }
add set inet ferrynet bridge_pairs { type ifname . ifname; }
add set inet ferrynet subnets { type ipv4_addr; flags interval; }
add set inet ferrynet masq_subnets { type ipv4_addr; flags interval; }
add set inet ferrynet cluster_nets { type ipv4_addr; flags interval; }
add set inet ferrynet subnets6 { type ipv6_addr; flags interval; }
add set inet ferrynet masq_subnets6 { type ipv6_addr; flags interval; }
add set inet ferrynet cluster_nets6 { type ipv6_addr; flags interval; }
add map inet ferrynet ports { type inet_proto . inet_service : ipv4_addr . inet_service; }
add map inet ferrynet ports_ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
add map inet ferrynet ports6 { type inet_proto . inet_service : ipv6_addr . inet_service; }
add map inet ferrynet ports_ip6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; }
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
add rule inet ferrynet prerouting meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @ports_ip6
add rule inet ferrynet prerouting meta nfproto ipv6 fib daddr type local dnat ip6 to meta l4proto . th dport map @ports6
add rule inet ferrynet output meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @ports_ip
add rule inet ferrynet output meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @ports
add rule inet ferrynet output meta nfproto ipv6 ip6 daddr != ::1 dnat ip6 to ip6 daddr . meta l4proto . th dport map @ports_ip6
add rule inet ferrynet output meta nfproto ipv6 ip6 daddr != ::1 fib daddr type local dnat ip6 to meta l4proto . th dport map @ports6
add rule inet ferrynet postrouting ct status dnat ip saddr @subnets masquerade
add rule inet ferrynet postrouting ct status dnat ip saddr 127.0.0.0/8 masquerade
add rule inet ferrynet postrouting ip saddr @masq_subnets ip daddr != @subnets ip daddr != @cluster_nets masquerade
add rule inet ferrynet postrouting ct status dnat ip6 saddr @subnets6 masquerade
add rule inet ferrynet postrouting ip6 saddr @masq_subnets6 ip6 daddr != @subnets6 ip6 daddr != @cluster_nets6 masquerade
add rule inet ferrynet forward ct state established,related accept
add rule inet ferrynet forward ct status dnat accept
add rule inet ferrynet forward iifname . oifname @bridge_pairs accept
add rule inet ferrynet forward iifname @bridges oifname @bridges drop
add table bridge ferrynet
add set bridge ferrynet ports { type ifname; }
add set bridge ferrynet port_macs { type ifname . ether_addr; }
add set bridge ferrynet port_ips { type ifname . ipv4_addr; }
add set bridge ferrynet ports6 { type ifname; }
add set bridge ferrynet port_ips6 { type ifname . ipv6_addr; }
add set bridge ferrynet nd_targets { typeof iifname . @th,64,128; }
add set bridge ferrynet nd_macs { typeof iifname . @th,208,48; }
add chain bridge ferrynet prerouting { type filter hook prerouting priority -300; policy accept; }
add chain bridge ferrynet guard6
add chain bridge ferrynet forward { type filter hook forward priority -300; policy accept; }
add chain bridge ferrynet output { type filter hook output priority -300; policy accept; }
flush chain bridge ferrynet prerouting
flush chain bridge ferrynet guard6
flush chain bridge ferrynet forward
flush chain bridge ferrynet output
add rule bridge ferrynet forward ether type ip6 icmpv6 type nd-router-advert oifname "vf*" drop
add rule bridge ferrynet output ether type ip6 icmpv6 type nd-router-advert oifname "vf*" drop
add rule bridge ferrynet prerouting iifname != @ports accept
add rule bridge ferrynet prerouting iifname . ether saddr != @port_macs drop
add rule bridge ferrynet prerouting ether type ip6 jump guard6
add rule bridge ferrynet prerouting ether type ip iifname . ip saddr != @port_ips drop
add rule bridge ferrynet prerouting ether type arp iifname . arp saddr ether != @port_macs drop
add rule bridge ferrynet prerouting ether type arp iifname . arp saddr ip != @port_ips drop
add rule bridge ferrynet guard6 iifname != @ports6 drop
add rule bridge ferrynet guard6 iifname . ip6 saddr != @port_ips6 ip6 saddr != :: drop
add rule bridge ferrynet guard6 ip6 saddr :: meta l4proto != ipv6-icmp drop
add rule bridge ferrynet guard6 ip6 saddr :: icmpv6 type != { mld-listener-report, mld2-listener-report, nd-neighbor-solicit } drop
add rule bridge ferrynet guard6 icmpv6 type nd-neighbor-solicit ip6 saddr :: iifname . @th,64,128 != @nd_targets drop
add rule bridge ferrynet guard6 icmpv6 type { nd-router-advert, nd-redirect } drop
add rule bridge ferrynet guard6 icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @nd_targets drop
add rule bridge ferrynet guard6 icmpv6 type nd-neighbor-advert @th,192,8 != 2 drop
add rule bridge ferrynet guard6 icmpv6 type nd-neighbor-advert iifname . @th,208,48 != @nd_macs drop
add rule bridge ferrynet guard6 icmpv6 type nd-neighbor-solicit ip6 saddr != :: @th,192,8 != 1 drop
add rule bridge ferrynet guard6 icmpv6 type nd-neighbor-solicit ip6 saddr != :: iifname . @th,208,48 != @nd_macs drop
add rule bridge ferrynet guard6 icmpv6 type nd-router-solicit @th,64,8 != 1 drop
add rule bridge ferrynet guard6 icmpv6 type nd-router-solicit iifname . @th,80,48 != @nd_macs drop
"#;

/// Runs an nft script in the calling thread's namespace (control path only).
pub(crate) fn run_nft(script: &str) -> Result<(), FirewallError> {
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

    /// Makes sure the table exists and holds `net`'s elements (both families'). One netlink
    /// lookup when it does (the common case); otherwise one `nft` run of the table script and
    /// the elements, which is idempotent and atomic, so concurrent callers converge on the
    /// same table, and a table made by an older ferrynet gains the objects it lacks.
    pub fn ensure_network(&mut self, net: &NetworkRules) -> Result<(), FirewallError> {
        let pair = [ifname_key(&net.bridge), ifname_key(&net.bridge)].concat();
        let present = match self.nl.get(PAIRS_SET, &pair) {
            Ok(found) => found.is_some(),
            Err(e) if e.is(libc::ENOENT) => false,
            Err(e) => return Err(e.into()),
        };
        // The newest object of the script: a table made by an older ferrynet lacks it, and
        // running the (idempotent) script completes that table.
        if present && self.nl.chain_exists(NFPROTO_BRIDGE, NEWEST_CHAIN)? {
            return Ok(());
        }
        run_nft(&format!("{TABLE_SCRIPT}{}", network_elements("add", net)))
    }

    /// Exempts the cluster range from masquerade: container-to-container traffic across hosts
    /// keeps its source address. Control path (the agent, once at start).
    pub fn ensure_cluster_range(&mut self, range: Ipv4Net) -> Result<(), FirewallError> {
        run_nft(&format!(
            "{TABLE_SCRIPT}\nadd element inet {TABLE} cluster_nets {{ {} }}\n",
            range.trunc()
        ))
    }

    /// [`Firewall::ensure_cluster_range`] for the IPv6 cluster range.
    pub fn ensure_cluster_range6(&mut self, range: Ipv6Net) -> Result<(), FirewallError> {
        run_nft(&format!(
            "{TABLE_SCRIPT}\nadd element inet {TABLE} cluster_nets6 {{ {} }}\n",
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
    pub fn add_ports(
        &mut self,
        addrs: EndpointAddrs,
        ports: &[PortMapping],
    ) -> Result<(), FirewallError> {
        self.add_endpoint(None, addrs, ports)
    }

    /// A container's elements in one transaction: its anti-spoofing guard (the bridge port may
    /// only send from the container's MAC and addresses) and its published ports — one
    /// element per family the container has for a port on all host addresses, one in the
    /// host address's family for a port on one. Fails with [`FirewallError::Family`] (and
    /// changes nothing) for a port whose family the container has no address of.
    pub fn add_endpoint(
        &mut self,
        guard: Option<&PortGuard>,
        addrs: EndpointAddrs,
        ports: &[PortMapping],
    ) -> Result<(), FirewallError> {
        let mut changes = by_map(port_elements(addrs, ports)?.into_iter());
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
            Err(e) if e.is(libc::EEXIST) => {
                let taken = ports.iter().find(|p| {
                    [false, true]
                        .into_iter()
                        .any(|v6| matches!(self.port_target(p, v6), Ok(Some(_))))
                });
                match taken {
                    Some(p) => Err(FirewallError::PortTaken {
                        port: p.host_port,
                        proto: p.protocol,
                    }),
                    None => Err(e.into()),
                }
            }
            r => Ok(r?),
        }
    }

    /// Removes a container's guard and ports; missing elements are fine.
    pub fn remove_endpoint(
        &mut self,
        guard: Option<&PortGuard>,
        addrs: EndpointAddrs,
        ports: &[PortMapping],
    ) -> Result<(), FirewallError> {
        self.remove_ports(addrs, ports)?;
        if let Some(g) = guard {
            match self.nl.delete(&g.elements()) {
                Err(e) if !e.is(libc::ENOENT) => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether a port's guard is in place: every element of it.
    pub fn has_guard(&mut self, g: &PortGuard) -> Result<bool, FirewallError> {
        for (set, elems) in g.elements() {
            for e in &elems {
                match self.nl.get(set, &e.key) {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(false),
                    Err(e) if e.is(libc::ENOENT) => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(true)
    }

    /// Every guarded port, as far as the sets tell (for GC of ports whose veth is gone): its
    /// MAC, its IPv4 address from `port_ips`, its IPv6 addresses from `port_ips6`.
    pub fn guarded_ports(&mut self) -> Result<Vec<PortGuard>, FirewallError> {
        let mut dump = |set| match self.nl.dump(set) {
            Err(e) if e.is(libc::ENOENT) => Ok(Vec::new()),
            r => r,
        };
        let macs = dump(PORT_MACS)?;
        let ips = dump(PORT_IPS)?;
        let ips6 = dump(PORT_IPS6)?;
        let name = |k: &[u8]| crate::netlink::socket::attr_string(&k[..16.min(k.len())]);
        let mut guards = BTreeMap::new();
        for m in macs.iter().filter(|m| m.key.len() >= 22) {
            let veth = name(&m.key);
            let mac = crate::netlink::Mac(m.key[16..22].try_into().expect("6 bytes"));
            guards.insert(
                veth.clone(),
                PortGuard {
                    veth,
                    mac,
                    ip: None,
                    ip6: Vec::new(),
                },
            );
        }
        for i in ips.iter().filter(|i| i.key.len() >= 20) {
            if let (Some(g), Some(IpAddr::V4(ip))) =
                (guards.get_mut(&name(&i.key)), ip_from(&i.key[16..], false))
            {
                g.ip = Some(ip);
            }
        }
        for i in ips6.iter().filter(|i| i.key.len() >= 32) {
            if let (Some(g), Some(IpAddr::V6(ip))) =
                (guards.get_mut(&name(&i.key)), ip_from(&i.key[16..], true))
            {
                g.ip6.push(ip);
            }
        }
        Ok(guards
            .into_values()
            .map(|mut g| {
                g.ip6.sort();
                g
            })
            .collect())
    }

    /// Removes every anti-spoofing element, in every per-port set, of the ports `gone` says
    /// have vanished — also the pieces of a guard that no longer has its MAC element (left by
    /// a removal racing an attach of the same endpoint), which [`Firewall::guarded_ports`]
    /// cannot see. Returns those ports' names. GC only.
    pub fn remove_stray_port_elements(
        &mut self,
        mut gone: impl FnMut(&str) -> bool,
    ) -> Result<Vec<String>, FirewallError> {
        let name = |k: &[u8]| crate::netlink::socket::attr_string(&k[..16.min(k.len())]);
        let mut verdicts: BTreeMap<String, bool> = BTreeMap::new();
        let mut doomed = Vec::new();
        for set in [
            GUARDED_PORTS,
            PORT_MACS,
            PORT_IPS,
            GUARDED_PORTS6,
            PORT_IPS6,
            ND_TARGETS,
            ND_MACS,
        ] {
            let elems = match self.nl.dump(set) {
                Err(e) if e.is(libc::ENOENT) => continue,
                r => r?,
            };
            let stray: Vec<Element> = elems
                .into_iter()
                .filter(|e| {
                    let veth = name(&e.key);
                    *verdicts.entry(veth.clone()).or_insert_with(|| gone(&veth))
                })
                .map(|e| Element {
                    key: e.key,
                    data: None,
                    jump: None,
                })
                .collect();
            if !stray.is_empty() {
                doomed.push((set, stray));
            }
        }
        if !doomed.is_empty() {
            self.nl.delete(&doomed)?;
        }
        Ok(verdicts
            .into_iter()
            .filter_map(|(veth, gone)| gone.then_some(veth))
            .collect())
    }

    /// Unpublishes ports; missing ones are fine. Only removes an element still pointing at
    /// the container's address of its family (the port may belong to another container by
    /// now).
    pub fn remove_ports(
        &mut self,
        addrs: EndpointAddrs,
        ports: &[PortMapping],
    ) -> Result<(), FirewallError> {
        if !self.nl.table_exists()? {
            return Ok(());
        }
        let mut mine = Vec::new();
        for p in ports {
            let families: &[bool] = match p.host_ip {
                Some(ip) => &[ip.is_ipv6()],
                None => &[false, true],
            };
            for &v6 in families {
                let Some(ip) = addrs.get(v6) else { continue };
                if matches!(self.port_target(p, v6), Ok(Some((t, _))) if t == ip) {
                    mine.push(port_element(p, ip));
                }
            }
        }
        Ok(self.nl.delete(&by_map(mine.into_iter()))?)
    }

    /// Every published port element: (mapping, container address). A port published in both
    /// families appears once per family, with `host_ip` None in both.
    pub fn ports(&mut self) -> Result<Vec<(PortMapping, IpAddr)>, FirewallError> {
        if !self.nl.table_exists()? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (map, ..) in PORT_MAPS {
            let elems = match self.nl.dump(map) {
                Ok(e) => e,
                Err(e) if e.is(libc::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            out.extend(elems.iter().filter_map(|e| decode_port(map, e)));
        }
        Ok(out)
    }

    /// Where a published port points in one family, if it is published there: `v6` false
    /// looks in `ports`/`ports_ip`, true in `ports6`/`ports_ip6` (a `host_ip` decides the
    /// family by itself).
    pub fn port_target(
        &mut self,
        p: &PortMapping,
        v6: bool,
    ) -> Result<Option<(IpAddr, u16)>, FirewallError> {
        let (map, key) = port_key(p, v6);
        match self.nl.get(map, &key) {
            Ok(Some(d)) => Ok(decode_target(&d, port_is_v6(p, v6))),
            Ok(None) => Ok(None),
            Err(e) if e.is(libc::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn network_elements(verb: &str, net: &NetworkRules) -> String {
    let b = &net.bridge;
    let mut s = String::new();
    let mut subnet = |set: &str, subnet: String| {
        s.push_str(&format!(
            "{verb} element inet {TABLE} {set} {{ {subnet} }}\n"
        ));
    };
    if let Some(n) = net.subnet {
        subnet("subnets", n.trunc().to_string());
        if net.masquerade {
            subnet("masq_subnets", n.trunc().to_string());
        }
    }
    if let Some(n) = net.subnet6 {
        subnet("subnets6", n.trunc().to_string());
        if net.masquerade {
            subnet("masq_subnets6", n.trunc().to_string());
        }
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
    use crate::netlink::Mac;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_port_mappings() {
        let p: PortMapping = "8080:80/tcp".parse().unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol, p.host_ip),
            (8080, 80, Protocol::Tcp, None)
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
    fn parses_and_displays_host_addresses_of_both_families() {
        let p: PortMapping = "10.201.0.1:8080:80/udp".parse().unwrap();
        assert_eq!(p.host_ip, Some(IpAddr::V4(Ipv4Addr::new(10, 201, 0, 1))));
        assert_eq!(p.to_string(), "10.201.0.1:8080:80/udp");
        let p: PortMapping = "[fd00::1]:8080:80/tcp".parse().unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol, p.host_ip),
            (8080, 80, Protocol::Tcp, Some(IpAddr::V6(v6("fd00::1"))))
        );
        assert_eq!(p.to_string(), "[fd00::1]:8080:80/tcp");
        let p: PortMapping = "[::ffff:10.0.0.1]:53:53".parse().unwrap();
        assert_eq!(p.to_string(), "[::ffff:10.0.0.1]:53:53/tcp");
        assert_eq!(p.to_string().parse::<PortMapping>(), Ok(p));
        for bad in [
            "fd00::1:8080:80",  // IPv6 without brackets
            "[fd00::1]:8080",   // one port after an address
            "[fd00::1]8080:80", // no colon after the bracket
            "[fd00::1:8080:80", // unclosed
            "[10.0.0.1]:80:80", // brackets are for IPv6
            "[fd00::zz]:80:80",
            "fd00::1]:80:80",
            "10.0.0.300:80:80",
            "[fe80::1%eth0]:80:80",
        ] {
            assert!(bad.parse::<PortMapping>().is_err(), "{bad}");
        }
    }

    #[test]
    fn port_mappings_keep_their_serde_shape() {
        let p: PortMapping = "8080:80/tcp".parse().unwrap();
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"host_port": 8080, "container_port": 80, "protocol": "tcp"})
        );
        let p: PortMapping = "[fd00::1]:8080:80/udp".parse().unwrap();
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(json["host_ip"], "fd00::1");
        assert_eq!(serde_json::from_value::<PortMapping>(json).unwrap(), p);
        // A record written before IPv6: host_ip is an IPv4 string.
        let old: PortMapping = serde_json::from_str(
            r#"{"host_port": 53, "container_port": 53, "protocol": "udp", "host_ip": "10.0.0.1"}"#,
        )
        .unwrap();
        assert_eq!(old.host_ip, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
    }

    #[test]
    fn port_element_encoding_matches_nft_registers() {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 90, 0, 3));
        let p: PortMapping = "53:5353/udp".parse().unwrap();
        let (map, e) = port_element(&p, ip);
        assert_eq!(map, PORTS_MAP);
        assert_eq!(e.key, vec![17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(
            e.data.clone().unwrap(),
            vec![10, 90, 0, 3, 0x14, 0xe9, 0, 0]
        );
        assert_eq!(decode_port(map, &e), Some((p, ip)));
        let p: PortMapping = "10.201.0.1:53:5353/udp".parse().unwrap();
        let (map, e) = port_element(&p, ip);
        assert_eq!(map, PORTS_IP_MAP);
        assert_eq!(e.key, vec![10, 201, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(decode_port(map, &e), Some((p, ip)));
        assert_eq!(p.to_string(), "10.201.0.1:53:5353/udp");
    }

    /// The layouts `nft --debug=netlink add element` shows for the IPv6 maps: an address is
    /// 16 bytes (four full registers), so only the 2-byte fields are padded.
    #[test]
    fn ipv6_port_element_encoding_matches_nft_registers() {
        let ip = IpAddr::V6(v6("fd10::3"));
        let fd10_3 = [0xfd, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
        // nft: "ports6: element 00000011 00003500 : 000010fd 00000000 00000000 03000000 0000e914"
        let p: PortMapping = "53:5353/udp".parse().unwrap();
        let (map, e) = port_element(&p, ip);
        assert_eq!(map, PORTS6_MAP);
        assert_eq!(e.key, vec![17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(
            e.data.clone().unwrap(),
            [&fd10_3[..], &[0x14, 0xe9, 0, 0]].concat()
        );
        assert_eq!(decode_port(map, &e), Some((p, ip)));
        assert_eq!(port_key(&p, true), (PORTS6_MAP, e.key.clone()));
        assert_eq!(port_key(&p, false).0, PORTS_MAP);
        assert_eq!(
            decode_target(e.data.as_ref().unwrap(), true),
            Some((ip, 5353))
        );
        // nft: "ports_ip6: element 000000fd 00000000 00000000 01000000 00000006 00005000 :
        //       000010fd 00000000 00000000 02000000 0000901f"
        let p: PortMapping = "[fd00::1]:80:8080/tcp".parse().unwrap();
        let ip = IpAddr::V6(v6("fd10::2"));
        let (map, e) = port_element(&p, ip);
        assert_eq!(map, PORTS_IP6_MAP);
        let fd00_1 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(e.key, [&fd00_1[..], &[6, 0, 0, 0, 0, 80, 0, 0]].concat());
        let mut fd10_2 = fd10_3;
        fd10_2[15] = 2;
        assert_eq!(
            e.data.clone().unwrap(),
            [&fd10_2[..], &[0x1f, 0x90, 0, 0]].concat()
        );
        assert_eq!(decode_port(map, &e), Some((p, ip)));
        // The host address decides the family, whatever is asked.
        assert_eq!(port_key(&p, false), (PORTS_IP6_MAP, e.key.clone()));
        // Truncated or foreign elements decode to nothing rather than to garbage.
        let short = Element {
            key: e.key[..20].to_vec(),
            data: e.data.clone(),
            jump: None,
        };
        assert_eq!(decode_port(PORTS_IP6_MAP, &short), None);
        let v4_data = Element {
            key: vec![17, 0, 0, 0, 0, 53, 0, 0],
            data: Some(vec![10, 90, 0, 3, 0x14, 0xe9, 0, 0]),
            jump: None,
        };
        assert_eq!(decode_port(PORTS6_MAP, &v4_data), None);
        assert_eq!(decode_port(PAIRS_SET, &v4_data), None);
    }

    #[test]
    fn a_port_gets_one_element_per_family_the_endpoint_has() {
        let (a4, a6) = (Ipv4Addr::new(10, 90, 0, 3), v6("fd10::3"));
        let dual = EndpointAddrs {
            v4: Some(a4),
            v6: Some(a6),
        };
        let only4 = EndpointAddrs {
            v4: Some(a4),
            v6: None,
        };
        let only6 = EndpointAddrs {
            v4: None,
            v6: Some(a6),
        };
        let all: PortMapping = "8080:80".parse().unwrap();
        let on4: PortMapping = "10.201.0.1:8081:80".parse().unwrap();
        let on6: PortMapping = "[fd00::1]:8082:80".parse().unwrap();
        let maps = |addrs, ports: &[PortMapping]| -> Vec<(&str, IpAddr)> {
            port_elements(addrs, ports)
                .unwrap()
                .iter()
                .map(|(m, e)| {
                    let (_, target) = decode_port(*m, e).unwrap();
                    (m.name, target)
                })
                .collect()
        };
        assert_eq!(
            maps(dual, &[all, on4, on6]),
            vec![
                ("ports", a4.into()),
                ("ports6", a6.into()),
                ("ports_ip", a4.into()),
                ("ports_ip6", a6.into()),
            ]
        );
        assert_eq!(maps(only4, &[all]), vec![("ports", a4.into())]);
        assert_eq!(maps(only6, &[all]), vec![("ports6", a6.into())]);
        let family = |addrs, p| match port_elements(addrs, &[p]) {
            Err(FirewallError::Family { family, .. }) => family,
            other => panic!("{other:?}"),
        };
        assert_eq!(family(only4, on6), "IPv6");
        assert_eq!(family(only6, on4), "IPv4");
        assert_eq!(family(EndpointAddrs::default(), all), "IPv4 or IPv6");
        let msg = port_elements(only4, &[on6]).unwrap_err().to_string();
        assert!(
            msg.contains("[fd00::1]:8082:80/tcp") && msg.contains("IPv6"),
            "{msg}"
        );
        // Grouped for one transaction: every map present, in a fixed order.
        let grouped = by_map(port_elements(dual, &[all]).unwrap().into_iter());
        let sizes: Vec<(&str, usize)> = grouped.iter().map(|(m, e)| (m.name, e.len())).collect();
        assert_eq!(
            sizes,
            vec![
                ("ports", 1),
                ("ports_ip", 0),
                ("ports6", 1),
                ("ports_ip6", 0)
            ]
        );
    }

    fn by_set(elems: &[(Set, Vec<Element>)]) -> Vec<(u8, &str, Vec<Vec<u8>>)> {
        elems
            .iter()
            .map(|(s, e)| (s.family, s.name, e.iter().map(|e| e.key.clone()).collect()))
            .collect()
    }

    #[test]
    fn an_ipv4_guard_has_the_elements_it_always_had() {
        let g = PortGuard {
            veth: "vf1".into(),
            mac: Mac([2, 0x11, 0x22, 0x33, 0x44, 0x55]),
            ip: Some(Ipv4Addr::new(10, 90, 0, 3)),
            ip6: Vec::new(),
        };
        let port = ifname_key("vf1");
        assert_eq!(port, b"vf1\0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec());
        let cat = |v: &[u8]| [&port[..], v].concat();
        assert_eq!(
            by_set(&g.elements()),
            vec![
                (NFPROTO_BRIDGE, "ports", vec![port.clone()]),
                (
                    NFPROTO_BRIDGE,
                    "port_macs",
                    vec![cat(&[2, 0x11, 0x22, 0x33, 0x44, 0x55, 0, 0])]
                ),
                (NFPROTO_BRIDGE, "port_ips", vec![cat(&[10, 90, 0, 3])]),
            ]
        );
        // No IPv4 address: the port is guarded, but may send no IPv4 or ARP.
        let none = PortGuard { ip: None, ..g };
        assert_eq!(
            by_set(&none.elements())[2],
            (NFPROTO_BRIDGE, "port_ips", vec![])
        );
    }

    /// `nft --debug=netlink add element bridge t port_ips6 { "vf1" . fd10::2 }` shows
    /// `00316676 00000000 00000000 00000000 000010fd 00000000 00000000 02000000`, and the same
    /// bytes for `nd_targets { "vf1" . 0xfd10...02 }`; `nd_macs` as `port_macs`.
    #[test]
    fn a_dual_stack_guard_adds_its_ipv6_elements() {
        let g = PortGuard {
            veth: "vf1".into(),
            mac: Mac([2, 0x11, 0x22, 0x33, 0x44, 0x55]),
            ip: Some(Ipv4Addr::new(10, 90, 0, 3)),
            ip6: vec![v6("fd10::2"), v6("fe80::11:22ff:fe33:4455"), v6("fd10::2")],
        };
        let port = ifname_key("vf1");
        let cat = |v: &[u8]| [&port[..], v].concat();
        let fd10_2 = cat(&v6("fd10::2").octets());
        assert_eq!(
            &fd10_2[16..],
            &[0xfd, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
        );
        let ll = cat(&v6("fe80::11:22ff:fe33:4455").octets());
        let mac = cat(&[2, 0x11, 0x22, 0x33, 0x44, 0x55, 0, 0]);
        let elems = g.elements();
        assert_eq!(
            by_set(&elems)[3..],
            [
                (NFPROTO_BRIDGE, "ports6", vec![port.clone()]),
                (
                    NFPROTO_BRIDGE,
                    "nd_targets",
                    vec![fd10_2.clone(), ll.clone()]
                ),
                (NFPROTO_BRIDGE, "port_ips6", vec![fd10_2, ll]),
                (NFPROTO_BRIDGE, "nd_macs", vec![mac]),
            ]
        );
        assert!(elems.iter().flat_map(|(_, e)| e).all(|e| e.data.is_none()));
        // IPv6-only: no IPv4 element, all the IPv6 ones.
        let only6 = PortGuard {
            ip: None,
            ..g.clone()
        };
        let sets: Vec<(&str, usize)> = only6
            .elements()
            .iter()
            .map(|(s, e)| (s.name, e.len()))
            .collect();
        assert_eq!(
            sets,
            vec![
                ("ports", 1),
                ("port_macs", 1),
                ("port_ips", 0),
                ("ports6", 1),
                ("nd_targets", 2),
                ("port_ips6", 2),
                ("nd_macs", 1),
            ]
        );
    }

    #[test]
    fn network_elements_cover_both_families() {
        let net = NetworkRules {
            bridge: "ferry0".into(),
            subnet: Some("10.90.0.1/24".parse().unwrap()),
            subnet6: Some("fd10::1/64".parse().unwrap()),
            masquerade: true,
            isolate: true,
        };
        assert_eq!(
            network_elements("add", &net),
            "add element inet ferrynet subnets { 10.90.0.0/24 }\n\
             add element inet ferrynet masq_subnets { 10.90.0.0/24 }\n\
             add element inet ferrynet subnets6 { fd10::/64 }\n\
             add element inet ferrynet masq_subnets6 { fd10::/64 }\n\
             add element inet ferrynet bridge_pairs { \"ferry0\" . \"ferry0\" }\n\
             add element inet ferrynet bridges { \"ferry0\" }\n"
        );
        let only6 = NetworkRules {
            subnet: None,
            masquerade: false,
            isolate: false,
            ..net
        };
        assert_eq!(
            network_elements("delete", &only6),
            "delete element inet ferrynet subnets6 { fd10::/64 }\n\
             delete element inet ferrynet bridge_pairs { \"ferry0\" . \"ferry0\" }\n"
        );
    }

    /// Every set and map the code names is declared by the script, in the right table.
    #[test]
    fn the_script_declares_every_set_the_code_uses() {
        for set in [
            PORTS_MAP,
            PORTS_IP_MAP,
            PORTS6_MAP,
            PORTS_IP6_MAP,
            PAIRS_SET,
            GUARDED_PORTS,
            PORT_MACS,
            PORT_IPS,
            GUARDED_PORTS6,
            PORT_IPS6,
            ND_TARGETS,
            ND_MACS,
        ] {
            let family = if set.family == NFPROTO_BRIDGE {
                "bridge"
            } else {
                "inet"
            };
            let decl = |kind| format!("add {kind} {family} {TABLE} {} {{", set.name);
            assert!(
                TABLE_SCRIPT.contains(&decl("set")) || TABLE_SCRIPT.contains(&decl("map")),
                "{family} {}",
                set.name
            );
        }
        // No accept for IPv6 before its drops: the only chain IPv6 reaches is guard6, which
        // has none.
        let guard6: Vec<&str> = TABLE_SCRIPT
            .lines()
            .filter(|l| l.starts_with("add rule bridge ferrynet guard6"))
            .collect();
        assert!(guard6.len() > 5 && guard6.iter().all(|l| l.ends_with(" drop")));
    }
}
