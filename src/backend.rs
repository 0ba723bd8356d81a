//! The cross-host data plane: turns the set of peer leases into kernel state (routes, and for
//! VXLAN the device, FDB and neighbour entries) and reconciles: desired vs actual, only the
//! difference applied, only what ferrynet owns touched (routes carry rtm_protocol
//! PROTO_FERRYNET; FDB and neighbour entries live on ferrynet's VXLAN device). Nothing is ever
//! flushed on start or stop, so a restarted agent does not interrupt traffic. With BGP, BIRD
//! (driven through [`crate::bgp::Speaker`]) installs the routes and ferrynet installs none for
//! the peers it learned them for.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::bgp::{BgpError, MeshPeer, Speaker, PROTO_BIRD};
use crate::cluster::BackendKind;
use crate::family::Family;
use crate::netlink::{Handle, Mac, NeighbourOf, NetlinkError, RouteOf, VxlanSpec, PROTO_FERRYNET};

/// What VXLAN adds to each packet over an IPv4 underlay: outer IPv4 (20), UDP (8), VXLAN
/// (8) and the inner Ethernet header (14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// The same over an IPv6 underlay: the outer IPv6 header is 40 bytes.
pub const VXLAN6_OVERHEAD: u32 = 70;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{step}: {source}")]
    Netlink {
        step: String,
        #[source]
        source: NetlinkError,
    },
    #[error("bgp: {0}")]
    Bgp(#[from] BgpError),
}

fn step(s: impl Into<String>) -> impl FnOnce(NetlinkError) -> BackendError {
    let step = s.into();
    move |source| BackendError::Netlink { step, source }
}

/// A remote host, as its lease describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node: String,
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    /// Its IPv6 subnet (dual-stack clusters) and IPv6 underlay address, if any.
    pub subnet6: Option<Ipv6Net>,
    pub public_ip6: Option<Ipv6Addr>,
    pub vtep_mac: Option<Mac>,
    /// Its AS, when it speaks BGP.
    pub bgp_as: Option<u32>,
}

/// This host's side of the data plane.
#[derive(Debug, Clone)]
pub struct Local {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    pub subnet6: Option<Ipv6Net>,
    pub public_ip6: Option<Ipv6Addr>,
    pub uplink_index: u32,
    pub uplink_mtu: u32,
    pub vtep_mac: Mac,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub vxlan_peers: usize,
    pub direct_peers: usize,
    /// Peers whose subnet BGP routes (BIRD's kernel routes, not ferrynet's).
    pub bgp_peers: usize,
    /// The same for the peers' IPv6 subnets (dual-stack clusters).
    pub vxlan_peers6: usize,
    pub direct_peers6: usize,
    pub bgp_peers6: usize,
    /// Peers host-gw cannot reach directly (not on this L2 segment): never routed.
    pub refused: Vec<String>,
    pub changes: usize,
}

pub struct Dataplane {
    kind: BackendKind,
    local: Local,
    vni: u32,
    port: u16,
    vxlan_index: Option<u32>,
    speaker: Option<Speaker>,
    /// VXLAN over the IPv6 underlay (the hosts' IPv6 public addresses) instead of IPv4.
    underlay6: bool,
}

impl Dataplane {
    pub fn new(kind: BackendKind, local: Local, vni: u32, port: u16) -> Dataplane {
        Dataplane {
            kind,
            local,
            vni,
            port,
            vxlan_index: None,
            speaker: None,
            underlay6: false,
        }
    }

    /// VXLAN over the IPv6 underlay: every host needs an IPv6 public address.
    pub fn with_ipv6_underlay(mut self) -> Dataplane {
        self.underlay6 = true;
        self
    }

    /// The underlay address VXLAN sends to for `p`, in the tunnel's family.
    fn vtep_of(&self, p: &Peer) -> Option<IpAddr> {
        if self.underlay6 {
            p.public_ip6.map(IpAddr::V6)
        } else {
            Some(IpAddr::V4(p.public_ip))
        }
    }

    /// BGP through BIRD: required for `bgp`, preferred over the other paths by `auto`.
    pub fn with_speaker(mut self, speaker: Speaker) -> Dataplane {
        self.speaker = Some(speaker);
        self
    }

    pub fn speaker(&self) -> Option<&Speaker> {
        self.speaker.as_ref()
    }

    /// This host's lease changed (lost, and another subnet acquired): the VXLAN device's
    /// address and what BIRD announces follow at the next `setup` and `reconcile`.
    pub fn set_subnet(&mut self, subnet: Ipv4Net, subnet6: Option<Ipv6Net>) {
        self.local.subnet = subnet;
        self.local.subnet6 = subnet6;
        if let Some(s) = self.speaker.as_mut() {
            s.set_subnet(subnet, subnet6);
        }
    }

    fn uses_vxlan(&self) -> bool {
        matches!(self.kind, BackendKind::Vxlan | BackendKind::Auto)
    }

    pub fn vxlan_name(&self) -> String {
        format!("ferry.{}", self.vni)
    }

    /// The MTU containers should use: the uplink's, less VXLAN's overhead when it may be used.
    pub fn mtu(&self) -> u32 {
        if self.uses_vxlan() && self.underlay6 {
            self.local.uplink_mtu - VXLAN6_OVERHEAD
        } else if self.uses_vxlan() {
            self.local.uplink_mtu - VXLAN_OVERHEAD
        } else {
            self.local.uplink_mtu
        }
    }

    /// Creates (or adopts) the VXLAN device for vxlan and auto: learning off, a MAC derived
    /// from the node (stable across restarts, so peers' FDB entries stay right), the subnet's
    /// network address /32 (and the IPv6 subnet's first address /128, without DAD: both
    /// families cross the same tunnel, over the IPv4 underlay or the IPv6 one), up with no
    /// address of the kernel's own making.
    pub fn setup(&mut self, h: &mut Handle) -> Result<(), BackendError> {
        if !self.uses_vxlan() {
            return Ok(());
        }
        let name = self.vxlan_name();
        let link = match h
            .link_by_name(&name)
            .map_err(step("look up vxlan device"))?
        {
            Some(l) => l,
            None => {
                h.create_vxlan(&VxlanSpec {
                    name: &name,
                    vni: self.vni,
                    port: self.port,
                    local: match (self.underlay6, self.local.public_ip6) {
                        (true, Some(ip6)) => IpAddr::V6(ip6),
                        _ => IpAddr::V4(self.local.public_ip),
                    },
                    underlay_index: Some(self.local.uplink_index),
                    mac: Some(self.local.vtep_mac),
                    mtu: self.mtu(),
                })
                .map_err(step(format!("create {name}")))?;
                h.link_by_name(&name)
                    .map_err(step("look up vxlan device"))?
                    .ok_or_else(|| {
                        step("look up vxlan device")(NetlinkError::Malformed("vanished"))
                    })?
            }
        };
        let want = Ipv4Net::new(self.local.subnet.network(), 32).expect("valid prefix");
        for a in h
            .addrs(Some(link.index))
            .map_err(step("list vxlan addresses"))?
        {
            if a.net != want {
                h.del_addr(link.index, a.net)
                    .map_err(step("remove stale vxlan address"))?;
            }
        }
        match h.add_addr(link.index, want) {
            Err(e) if !e.is(libc::EEXIST) => return Err(step("add vxlan address")(e)),
            _ => {}
        }
        let want6 = self
            .local
            .subnet6
            .map(|s| Ipv6Net::new(s.network(), 128).expect("valid prefix"));
        for a in h
            .addrs6(Some(link.index))
            .map_err(step("list vxlan IPv6 addresses"))?
        {
            let link_local = a.net.addr().segments()[0] & 0xffc0 == 0xfe80;
            if Some(a.net) != want6 && !link_local {
                h.del_addr(link.index, a.net)
                    .map_err(step("remove stale vxlan IPv6 address"))?;
            }
        }
        if let Some(want6) = want6 {
            match h.add_addr(link.index, want6) {
                Err(e) if !e.is(libc::EEXIST) => return Err(step("add vxlan IPv6 address")(e)),
                _ => {}
            }
        }
        h.set_up_static(link.index, None)
            .map_err(step("set vxlan up"))?;
        self.vxlan_index = Some(link.index);
        Ok(())
    }

    /// Whether `ip` is on this host's L2 segment (the kernel routes it without a gateway).
    fn direct<A: Family>(&self, h: &mut Handle, ip: A) -> Result<Option<u32>, BackendError> {
        let r = h.route_to(ip).map_err(step(format!("route to {ip}")))?;
        Ok(match (r.gateway, r.oif) {
            (None, Some(oif)) => Some(oif),
            _ => None,
        })
    }

    /// Brings the kernel to the state `peers` call for, changing only what differs.
    pub fn reconcile(&mut self, h: &mut Handle, peers: &[Peer]) -> Result<Report, BackendError> {
        let mut report = Report::default();
        let mut want = Desired::default();
        let (bgp4, bgp6) = self.reconcile_bgp(h, peers)?;
        for p in peers {
            self.plan_v4(h, p, &bgp4, &mut want, &mut report)?;
            if let (Some(_), Some(subnet6)) = (self.local.subnet6, p.subnet6) {
                self.plan_v6(h, p, subnet6, &bgp6, &mut want, &mut report)?;
            }
        }
        self.apply(h, &want, &mut report)?;
        Ok(report)
    }

    /// How this peer's IPv4 subnet is reached: BGP, a direct route, or VXLAN.
    fn plan_v4(
        &self,
        h: &mut Handle,
        p: &Peer,
        bgp: &BTreeSet<Ipv4Net>,
        want: &mut Desired,
        report: &mut Report,
    ) -> Result<(), BackendError> {
        if self.kind == BackendKind::Bgp || bgp.contains(&p.subnet) {
            report.bgp_peers += 1;
            return Ok(());
        }
        let direct = match self.kind {
            BackendKind::Vxlan => None,
            _ => self.direct(h, p.public_ip)?,
        };
        match (self.kind, direct) {
            (BackendKind::HostGw | BackendKind::Auto, Some(oif)) => {
                report.direct_peers += 1;
                want.routes
                    .insert((p.subnet, Some(p.public_ip), Some(oif), false));
            }
            (BackendKind::HostGw, None) => report.refused.push(format!(
                "{} ({}): {} is not on this L2 segment, host-gw cannot route to it",
                p.node, p.subnet, p.public_ip
            )),
            _ => {
                let (Some(vx), Some(mac)) = (self.vxlan_index, p.vtep_mac) else {
                    report.refused.push(format!(
                        "{} ({}): no VTEP MAC in its lease",
                        p.node, p.subnet
                    ));
                    return Ok(());
                };
                let Some(vtep) = self.vtep_of(p) else {
                    report.refused.push(format!(
                        "{} ({}): no IPv6 underlay address in its lease, and VXLAN runs over IPv6",
                        p.node, p.subnet
                    ));
                    return Ok(());
                };
                report.vxlan_peers += 1;
                let gw = p.subnet.network();
                want.fdb.insert((mac.0, vtep));
                want.neigh.insert((gw, mac.0));
                want.routes.insert((p.subnet, Some(gw), Some(vx), true));
            }
        }
        Ok(())
    }

    /// How this peer's IPv6 subnet is reached: BGP, a direct route via its IPv6 underlay
    /// address, or VXLAN (over the tunnel's underlay family, whichever it is).
    fn plan_v6(
        &self,
        h: &mut Handle,
        p: &Peer,
        subnet6: Ipv6Net,
        bgp: &BTreeSet<Ipv6Net>,
        want: &mut Desired,
        report: &mut Report,
    ) -> Result<(), BackendError> {
        if self.kind == BackendKind::Bgp || bgp.contains(&subnet6) {
            report.bgp_peers6 += 1;
            return Ok(());
        }
        let direct = match (self.kind, p.public_ip6) {
            (BackendKind::Vxlan, _) | (_, None) => None,
            (_, Some(ip6)) => self.direct(h, ip6)?.map(|oif| (ip6, oif)),
        };
        match (self.kind, direct) {
            (BackendKind::HostGw | BackendKind::Auto, Some((ip6, oif))) => {
                report.direct_peers6 += 1;
                want.routes6.insert((subnet6, Some(ip6), Some(oif), false));
            }
            (BackendKind::HostGw, None) => report.refused.push(format!(
                "{} ({subnet6}): {} is not on this L2 segment, host-gw cannot route IPv6 to it",
                p.node,
                p.public_ip6
                    .map_or("no IPv6 underlay address".to_string(), |ip| ip.to_string())
            )),
            _ => {
                let (Some(vx), Some(mac), Some(vtep)) =
                    (self.vxlan_index, p.vtep_mac, self.vtep_of(p))
                else {
                    return Ok(());
                };
                report.vxlan_peers6 += 1;
                let gw = subnet6.network();
                want.fdb.insert((mac.0, vtep));
                want.neigh6.insert((gw, mac.0));
                want.routes6.insert((subnet6, Some(gw), Some(vx), true));
            }
        }
        Ok(())
    }

    /// Adds what is missing (FDB and neighbour entries before the routes that use them),
    /// then removes what no peer claims any more (routes first).
    fn apply(
        &self,
        h: &mut Handle,
        want: &Desired,
        report: &mut Report,
    ) -> Result<(), BackendError> {
        let Some(vx) = self.vxlan_index else {
            let actual = h.routes().map_err(step("list routes"))?;
            apply_routes(h, &want.routes, actual, report)?;
            let actual6 = h.routes6().map_err(step("list IPv6 routes"))?;
            return apply_routes(h, &want.routes6, actual6, report);
        };
        let have_fdb: BTreeSet<([u8; 6], IpAddr)> = h
            .fdb(vx)
            .map_err(step("list fdb"))?
            .into_iter()
            .map(|(m, ip)| (m.0, ip))
            .collect();
        for (mac, ip) in want.fdb.difference(&have_fdb) {
            h.append_fdb(vx, Mac(*mac), *ip)
                .map_err(step(format!("fdb {ip}")))?;
            report.changes += 1;
        }
        let have_neigh = neighbours_on(vx, h.neighbours(Some(vx)))?;
        add_neighbours(h, vx, &want.neigh, &have_neigh, report)?;
        let have_neigh6 = neighbours_on(vx, h.neighbours6(Some(vx)))?;
        add_neighbours(h, vx, &want.neigh6, &have_neigh6, report)?;
        let actual = h.routes().map_err(step("list routes"))?;
        apply_routes(h, &want.routes, actual, report)?;
        let actual6 = h.routes6().map_err(step("list IPv6 routes"))?;
        apply_routes(h, &want.routes6, actual6, report)?;
        remove_neighbours(h, vx, &want.neigh, &have_neigh, report)?;
        remove_neighbours(h, vx, &want.neigh6, &have_neigh6, report)?;
        for (mac, ip) in have_fdb.difference(&want.fdb) {
            h.del_fdb(vx, Mac(*mac), *ip)
                .map_err(step(format!("remove fdb {ip}")))?;
            report.changes += 1;
        }
        Ok(())
    }

    /// Hands the peers to BIRD; returns the subnets BGP routes in the kernel now, per family.
    fn reconcile_bgp(
        &mut self,
        h: &mut Handle,
        peers: &[Peer],
    ) -> Result<(BTreeSet<Ipv4Net>, BTreeSet<Ipv6Net>), BackendError> {
        let Some(speaker) = self.speaker.as_mut() else {
            return Ok(Default::default());
        };
        let mut mesh: Vec<MeshPeer> = Vec::new();
        if speaker.config().mesh {
            mesh = peers
                .iter()
                .filter_map(|p| {
                    Some(MeshPeer {
                        ip: p.public_ip,
                        asn: p.bgp_as?,
                        node: p.node.clone(),
                        ip6: p.public_ip6,
                    })
                })
                .collect();
            mesh.sort();
        }
        speaker.reconcile(&mesh)?;
        if self.kind == BackendKind::Bgp {
            // Every peer is BGP's: no need to look at which routes BIRD holds.
            return Ok(Default::default());
        }
        let v4 = h.routes().map_err(step("list routes"))?;
        let v6 = h.routes6().map_err(step("list IPv6 routes"))?;
        Ok((
            v4.into_iter()
                .filter(|r| r.protocol == PROTO_BIRD)
                .map(|r| r.dst)
                .collect(),
            v6.into_iter()
                .filter(|r| r.protocol == PROTO_BIRD)
                .map(|r| r.dst)
                .collect(),
        ))
    }
}

/// What the peers call for, per family.
#[derive(Default)]
struct Desired {
    routes: BTreeSet<RouteKey<Ipv4Addr>>,
    routes6: BTreeSet<RouteKey<Ipv6Addr>>,
    /// VTEP MAC -> the peer's underlay address of the tunnel's family (both families of
    /// container traffic cross the same tunnel).
    fdb: BTreeSet<([u8; 6], IpAddr)>,
    /// The peer's gateway address on the tunnel -> its VTEP MAC.
    neigh: BTreeSet<(Ipv4Addr, [u8; 6])>,
    neigh6: BTreeSet<(Ipv6Addr, [u8; 6])>,
}

fn neighbours_on<A: Family>(
    vx: u32,
    listed: Result<Vec<NeighbourOf<A>>, NetlinkError>,
) -> Result<BTreeSet<(A, [u8; 6])>, BackendError> {
    Ok(listed
        .map_err(step(format!("list neighbours of {vx}")))?
        .into_iter()
        .filter_map(|n| n.mac.map(|m| (n.ip, m.0)))
        .collect())
}

fn add_neighbours<A: Family>(
    h: &mut Handle,
    vx: u32,
    want: &BTreeSet<(A, [u8; 6])>,
    have: &BTreeSet<(A, [u8; 6])>,
    report: &mut Report,
) -> Result<(), BackendError> {
    for (ip, mac) in want.difference(have) {
        h.set_neighbour(vx, *ip, Mac(*mac))
            .map_err(step(format!("neighbour {ip}")))?;
        report.changes += 1;
    }
    Ok(())
}

fn remove_neighbours<A: Family>(
    h: &mut Handle,
    vx: u32,
    want: &BTreeSet<(A, [u8; 6])>,
    have: &BTreeSet<(A, [u8; 6])>,
    report: &mut Report,
) -> Result<(), BackendError> {
    for (ip, _) in have.difference(want) {
        // An entry whose MAC changed was replaced, not removed.
        if !want.iter().any(|(i, _)| i == ip) {
            h.del_neighbour(vx, *ip)
                .map_err(step(format!("remove neighbour {ip}")))?;
            report.changes += 1;
        }
    }
    Ok(())
}

/// Makes ferrynet's routes of one family (rtm_protocol PROTO_FERRYNET) equal `desired`.
fn apply_routes<A: Family>(
    h: &mut Handle,
    desired: &BTreeSet<RouteKey<A>>,
    actual: Vec<RouteOf<A>>,
    report: &mut Report,
) -> Result<(), BackendError> {
    let actual: BTreeSet<RouteKey<A>> = actual
        .iter()
        .filter(|r| r.protocol == PROTO_FERRYNET)
        .map(route_key)
        .collect();
    for r in desired.difference(&actual) {
        h.replace_route(&route_of(r))
            .map_err(step(format!("route {}", r.0)))?;
        report.changes += 1;
    }
    for r in actual.difference(desired) {
        // A replaced route (same destination, new path) is already gone.
        if desired.iter().any(|d| d.0 == r.0) {
            continue;
        }
        match h.del_route(&route_of(r)) {
            Err(e) if !e.is(libc::ESRCH) => return Err(step(format!("remove route {}", r.0))(e)),
            _ => report.changes += 1,
        }
    }
    Ok(())
}

/// A route as an ordered value: (dst, gateway, oif, onlink).
type RouteKey<A> = (<A as Family>::Net, Option<A>, Option<u32>, bool);

fn route_key<A: Family>(r: &RouteOf<A>) -> RouteKey<A> {
    (r.dst, r.gateway, r.oif, r.onlink)
}

fn route_of<A: Family>(k: &RouteKey<A>) -> RouteOf<A> {
    RouteOf {
        dst: k.0,
        gateway: k.1,
        oif: k.2,
        onlink: k.3,
        protocol: PROTO_FERRYNET,
    }
}
