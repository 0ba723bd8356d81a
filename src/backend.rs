//! The cross-host data plane: turns the set of peer leases into kernel state (routes, and for
//! VXLAN the device, FDB and neighbour entries) and reconciles: desired vs actual, only the
//! difference applied, only what ferrynet owns touched (routes carry rtm_protocol
//! PROTO_FERRYNET; FDB and neighbour entries live on ferrynet's VXLAN device). Nothing is ever
//! flushed on start or stop, so a restarted agent does not interrupt traffic. With BGP, BIRD
//! (driven through [`crate::bgp::Speaker`]) installs the routes and ferrynet installs none for
//! the peers it learned them for.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::bgp::{BgpError, MeshPeer, Speaker, PROTO_BIRD};
use crate::cluster::BackendKind;
use crate::netlink::{Handle, Mac, NetlinkError, Route, VxlanSpec, PROTO_FERRYNET};

pub const VXLAN_OVERHEAD: u32 = 50;

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
    pub vtep_mac: Option<Mac>,
    /// Its AS, when it speaks BGP.
    pub bgp_as: Option<u32>,
}

/// This host's side of the data plane.
#[derive(Debug, Clone)]
pub struct Local {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
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
    pub fn set_subnet(&mut self, subnet: Ipv4Net) {
        self.local.subnet = subnet;
        if let Some(s) = self.speaker.as_mut() {
            s.set_subnet(subnet);
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
        if self.uses_vxlan() {
            self.local.uplink_mtu - VXLAN_OVERHEAD
        } else {
            self.local.uplink_mtu
        }
    }

    /// Creates (or adopts) the VXLAN device for vxlan and auto: learning off, a MAC derived
    /// from the node (stable across restarts, so peers' FDB entries stay right), the subnet's
    /// network address /32, up.
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
                    local: self.local.public_ip,
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
        h.set_up(link.index).map_err(step("set vxlan up"))?;
        self.vxlan_index = Some(link.index);
        Ok(())
    }

    /// Whether `ip` is on this host's L2 segment (the kernel routes it without a gateway).
    fn direct(&self, h: &mut Handle, ip: Ipv4Addr) -> Result<Option<u32>, BackendError> {
        let r = h.route_to(ip).map_err(step(format!("route to {ip}")))?;
        Ok(match (r.gateway, r.oif) {
            (None, Some(oif)) => Some(oif),
            _ => None,
        })
    }

    /// Brings the kernel to the state `peers` call for, changing only what differs.
    pub fn reconcile(&mut self, h: &mut Handle, peers: &[Peer]) -> Result<Report, BackendError> {
        let mut report = Report::default();
        let mut routes = BTreeSet::new();
        let mut fdb = BTreeSet::new();
        let mut neigh = BTreeSet::new();
        let bgp_routed = self.reconcile_bgp(h, peers)?;
        for p in peers {
            if self.kind == BackendKind::Bgp || bgp_routed.contains(&p.subnet) {
                report.bgp_peers += 1;
                continue;
            }
            let direct = match self.kind {
                BackendKind::Vxlan => None,
                _ => self.direct(h, p.public_ip)?,
            };
            match (self.kind, direct) {
                (BackendKind::HostGw | BackendKind::Auto, Some(oif)) => {
                    report.direct_peers += 1;
                    routes.insert(route_key(&Route {
                        dst: p.subnet,
                        gateway: Some(p.public_ip),
                        oif: Some(oif),
                        onlink: false,
                        protocol: PROTO_FERRYNET,
                    }));
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
                        continue;
                    };
                    report.vxlan_peers += 1;
                    let gw = p.subnet.network();
                    fdb.insert((mac.0, p.public_ip));
                    neigh.insert((gw, mac.0));
                    routes.insert(route_key(&Route {
                        dst: p.subnet,
                        gateway: Some(gw),
                        oif: Some(vx),
                        onlink: true,
                        protocol: PROTO_FERRYNET,
                    }));
                }
            }
        }

        // Add what is missing: FDB and neighbour entries before the routes that use them.
        if let Some(vx) = self.vxlan_index {
            let have_fdb: BTreeSet<([u8; 6], Ipv4Addr)> = h
                .fdb(vx)
                .map_err(step("list fdb"))?
                .into_iter()
                .map(|(m, ip)| (m.0, ip))
                .collect();
            for (mac, ip) in fdb.difference(&have_fdb) {
                h.append_fdb(vx, Mac(*mac), *ip)
                    .map_err(step(format!("fdb {ip}")))?;
                report.changes += 1;
            }
            let have_neigh: BTreeSet<(Ipv4Addr, [u8; 6])> = h
                .neighbours(Some(vx))
                .map_err(step("list neighbours"))?
                .into_iter()
                .filter_map(|n| n.mac.map(|m| (n.ip, m.0)))
                .collect();
            for (ip, mac) in neigh.difference(&have_neigh) {
                h.set_neighbour(vx, *ip, Mac(*mac))
                    .map_err(step(format!("neighbour {ip}")))?;
                report.changes += 1;
            }
            self.apply_routes(h, &routes, &mut report)?;
            // Then remove what no peer claims any more, routes first.
            for (ip, mac) in have_neigh.difference(&neigh) {
                if !neigh.iter().any(|(i, _)| i == ip) {
                    h.del_neighbour(vx, *ip)
                        .map_err(step(format!("remove neighbour {ip}")))?;
                    report.changes += 1;
                }
                let _ = mac;
            }
            for (mac, ip) in have_fdb.difference(&fdb) {
                h.del_fdb(vx, Mac(*mac), *ip)
                    .map_err(step(format!("remove fdb {ip}")))?;
                report.changes += 1;
            }
        } else {
            self.apply_routes(h, &routes, &mut report)?;
        }
        Ok(report)
    }

    /// Hands the peers to BIRD; returns the subnets BGP routes in the kernel now.
    fn reconcile_bgp(
        &mut self,
        h: &mut Handle,
        peers: &[Peer],
    ) -> Result<BTreeSet<Ipv4Net>, BackendError> {
        let Some(speaker) = self.speaker.as_mut() else {
            return Ok(BTreeSet::new());
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
                    })
                })
                .collect();
            mesh.sort();
        }
        speaker.reconcile(&mesh)?;
        if self.kind == BackendKind::Bgp {
            // Every peer is BGP's: no need to look at which routes BIRD holds.
            return Ok(BTreeSet::new());
        }
        Ok(h.routes()
            .map_err(step("list routes"))?
            .into_iter()
            .filter(|r| r.protocol == PROTO_BIRD)
            .map(|r| r.dst)
            .collect())
    }

    fn apply_routes(
        &self,
        h: &mut Handle,
        desired: &BTreeSet<RouteKey>,
        report: &mut Report,
    ) -> Result<(), BackendError> {
        let actual: BTreeSet<RouteKey> = h
            .routes()
            .map_err(step("list routes"))?
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
                Err(e) if !e.is(libc::ESRCH) => {
                    return Err(step(format!("remove route {}", r.0))(e))
                }
                _ => report.changes += 1,
            }
        }
        Ok(())
    }
}

/// A route as an ordered value: (dst, gateway, oif, onlink).
type RouteKey = (Ipv4Net, Option<Ipv4Addr>, Option<u32>, bool);

fn route_key(r: &Route) -> RouteKey {
    (r.dst, r.gateway, r.oif, r.onlink)
}

fn route_of(k: &RouteKey) -> Route {
    Route {
        dst: k.0,
        gateway: k.1,
        oif: k.2,
        onlink: k.3,
        protocol: PROTO_FERRYNET,
    }
}
