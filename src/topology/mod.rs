//! `ferrynet topology`: what `trace` walks, all at once — per host namespace its bridges with
//! their gateway addresses, each port with its container, namespace and addresses, its VXLAN
//! devices and their peers, its routes to other hosts by backend, its published ports. Read
//! from the kernel (links, addresses, routes, FDB, nftables elements); ferrynet's records
//! only name the network a bridge belongs to.

mod svg;

use std::net::IpAddr;

use serde::Serialize;

pub use svg::svg;

use crate::netlink::{Link, PROTO_FERRYNET};
use crate::network::StateDir;
use crate::trace::{nl, Hosts, TraceError};

const PROTO_BIRD: u8 = 12;

#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    pub hosts: Vec<HostTopology>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostTopology {
    pub name: String,
    /// The host's own addresses outside its bridges (its uplinks).
    pub addresses: Vec<String>,
    pub bridges: Vec<BridgeTopology>,
    pub vxlan: Vec<VxlanTopology>,
    pub routes: Vec<PeerRoute>,
    pub published: Vec<Published>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BridgeTopology {
    pub name: String,
    pub ifindex: u32,
    /// The ferrynet network on this bridge, when this host's records know it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    pub addresses: Vec<String>,
    pub mtu: u32,
    pub ports: Vec<PortTopology>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortTopology {
    pub veth: String,
    pub ifindex: u32,
    /// The container's namespace name, when it is under /run/netns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    pub addresses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VxlanTopology {
    pub name: String,
    pub ifindex: u32,
    pub mtu: u32,
    /// (VTEP MAC, remote address) of every FDB entry.
    pub peers: Vec<VxlanPeer>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VxlanPeer {
    pub mac: String,
    pub vtep: String,
    /// The host namespace holding the VTEP address, when it is one of those shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerRoute {
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    pub dev: String,
    /// vxlan, host-gw or bgp.
    pub backend: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub host_port: u16,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    pub target: IpAddr,
    pub target_port: u16,
}

fn addresses_of(hosts: &mut Hosts, view: usize) -> Result<Vec<(u32, String)>, TraceError> {
    let v = &mut hosts.views[view];
    let mut out: Vec<(u32, String)> =
        v.h.addrs(None)
            .map_err(nl("addresses"))?
            .into_iter()
            .map(|a| (a.index, a.net.to_string()))
            .collect();
    out.extend(
        v.h.addrs6(None)
            .map_err(nl("addresses"))?
            .into_iter()
            .filter(|a| !a.net.addr().is_unicast_link_local())
            .map(|a| (a.index, a.net.to_string())),
    );
    Ok(out)
}

fn port(hosts: &mut Hosts, view: usize, l: &Link) -> Result<PortTopology, TraceError> {
    let mut p = PortTopology {
        veth: l.name.clone(),
        ifindex: l.index,
        container: None,
        netns: None,
        ifname: None,
        addresses: Vec::new(),
        mac: None,
    };
    let Some(mut c) = hosts.container_on_port(view, l, None)? else {
        return Ok(p);
    };
    p.container = Some(c.name.clone());
    p.netns = Some(c.path.display().to_string());
    if let Some(index) = l.peer_index {
        if let Some(inner) = c.h.link_by_index(index).map_err(nl("link"))? {
            p.ifname = Some(inner.name.clone());
            p.mac = inner.mac.map(|m| m.to_string());
        }
        p.addresses =
            c.h.addrs(Some(index))
                .map_err(nl("addresses"))?
                .into_iter()
                .map(|a| a.net.to_string())
                .collect();
        p.addresses.extend(
            c.h.addrs6(Some(index))
                .map_err(nl("addresses"))?
                .into_iter()
                .filter(|a| !a.net.addr().is_unicast_link_local())
                .map(|a| a.net.to_string()),
        );
    }
    Ok(p)
}

fn host(hosts: &mut Hosts, view: usize) -> Result<HostTopology, TraceError> {
    let links = hosts.views[view].h.links().map_err(nl("links"))?;
    let addrs = addresses_of(hosts, view)?;
    let networks = if view == 0 {
        hosts.state.list().unwrap_or_default()
    } else {
        Vec::new()
    };
    let kind = |l: &Link, k: &str| l.kind.as_deref() == Some(k);
    let mut bridges = Vec::new();
    for b in links.iter().filter(|l| kind(l, "bridge")) {
        let mut ports = Vec::new();
        for l in links.iter().filter(|l| l.master == Some(b.index)) {
            ports.push(port(hosts, view, l)?);
        }
        bridges.push(BridgeTopology {
            name: b.name.clone(),
            ifindex: b.index,
            network: networks
                .iter()
                .find(|n| n.bridge == b.name)
                .map(|n| n.name.clone()),
            addresses: addrs
                .iter()
                .filter(|(i, _)| *i == b.index)
                .map(|(_, a)| a.clone())
                .collect(),
            mtu: b.mtu,
            ports,
        });
    }
    let mut vxlan = Vec::new();
    for d in links.iter().filter(|l| kind(l, "vxlan")) {
        let fdb = hosts.views[view].h.fdb(d.index).map_err(nl("fdb"))?;
        let mut peers = Vec::new();
        for (mac, vtep) in fdb {
            let host = hosts
                .host_owning(vtep)?
                .map(|(i, _)| hosts.views[i].name.clone());
            peers.push(VxlanPeer {
                mac: mac.to_string(),
                vtep: vtep.to_string(),
                host,
            });
        }
        vxlan.push(VxlanTopology {
            name: d.name.clone(),
            ifindex: d.index,
            mtu: d.mtu,
            peers,
        });
    }
    let name_of = |i: Option<u32>| {
        i.and_then(|i| links.iter().find(|l| l.index == i))
            .map(|l| l.name.clone())
            .unwrap_or_default()
    };
    let backend = |protocol: u8, dev: &str| {
        if protocol == PROTO_BIRD {
            "bgp"
        } else if links
            .iter()
            .any(|l| l.name == dev && l.kind.as_deref() == Some("vxlan"))
        {
            "vxlan"
        } else {
            "host-gw"
        }
    };
    let v = &mut hosts.views[view];
    // (destination, gateway, interface, owner) of both families' routes to other hosts.
    let v4 = v.h.routes().map_err(nl("routes"))?.into_iter().map(|r| {
        (
            r.dst.to_string(),
            r.gateway.map(|g| g.to_string()),
            r.oif,
            r.protocol,
        )
    });
    let v6 = v.h.routes6().map_err(nl("routes"))?.into_iter().map(|r| {
        (
            r.dst.to_string(),
            r.gateway.map(|g| g.to_string()),
            r.oif,
            r.protocol,
        )
    });
    let routes = v4
        .chain(v6)
        .filter(|(.., p)| *p == PROTO_FERRYNET || *p == PROTO_BIRD)
        .map(|(dst, via, oif, protocol)| {
            let dev = name_of(oif);
            PeerRoute {
                dst,
                via,
                backend: backend(protocol, &dev).into(),
                dev,
            }
        })
        .collect();
    let mut published = Vec::new();
    if let Some(fw) = v.fw.as_mut() {
        for (p, target) in fw.ports()? {
            published.push(Published {
                host_port: p.host_port,
                protocol: p.protocol.to_string(),
                host_ip: p.host_ip,
                target,
                target_port: p.container_port,
            });
        }
    }
    let bridge_or_vxlan: Vec<u32> = links
        .iter()
        .filter(|l| kind(l, "bridge") || kind(l, "vxlan") || l.name == "lo")
        .map(|l| l.index)
        .collect();
    Ok(HostTopology {
        name: v.name.clone(),
        addresses: addrs
            .into_iter()
            .filter(|(i, _)| !bridge_or_vxlan.contains(i))
            .map(|(i, a)| format!("{a} dev {}", name_of(Some(i))))
            .collect(),
        bridges,
        vxlan,
        routes,
        published,
    })
}

/// Every host namespace's picture: the local one first, then `peers`.
pub fn gather(peers: &[std::path::PathBuf], state: &StateDir) -> Result<Topology, TraceError> {
    let mut hosts = Hosts::open(peers, None, state.clone())?;
    let mut out = Vec::new();
    for i in 0..hosts.views.len() {
        out.push(host(&mut hosts, i)?);
    }
    Ok(Topology { hosts: out })
}

fn with_brackets(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    }
}

/// `ADDR:PORT`, IPv6 in brackets.
pub fn socket(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// The text form: a tree per host.
pub fn render(t: &Topology) -> String {
    let mut s = String::new();
    for h in &t.hosts {
        s.push_str(&format!("{}  {}\n", h.name, h.addresses.join(", ")));
        let mut items: Vec<Vec<String>> = Vec::new();
        for b in &h.bridges {
            let mut lines = vec![format!(
                "bridge {}{}  {}  mtu {}",
                b.name,
                b.network
                    .as_ref()
                    .map(|n| format!(" [network {n}]"))
                    .unwrap_or_default(),
                b.addresses.join(" "),
                b.mtu
            )];
            for p in &b.ports {
                lines.push(match &p.container {
                    Some(c) => format!(
                        "{} → {c} {} {}",
                        p.veth,
                        p.ifname.as_deref().unwrap_or("?"),
                        p.addresses.join(" ")
                    ),
                    None => format!("{} (no container namespace found)", p.veth),
                });
            }
            items.push(lines);
        }
        for v in &h.vxlan {
            let mut lines = vec![format!("vxlan {}  mtu {}", v.name, v.mtu)];
            for p in &v.peers {
                lines.push(format!(
                    "{} → {}{}",
                    p.mac,
                    p.vtep,
                    p.host
                        .as_ref()
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default()
                ));
            }
            items.push(lines);
        }
        for r in &h.routes {
            items.push(vec![format!(
                "route {}{} dev {} ({})",
                r.dst,
                r.via
                    .as_ref()
                    .map(|v| format!(" via {v}"))
                    .unwrap_or_default(),
                r.dev,
                r.backend
            )]);
        }
        for p in &h.published {
            items.push(vec![format!(
                "published {}{}/{} → {}",
                p.host_ip
                    .map(|i| format!("{}:", with_brackets(i)))
                    .unwrap_or_default(),
                p.host_port,
                p.protocol,
                socket(p.target, p.target_port)
            )]);
        }
        for (i, lines) in items.iter().enumerate() {
            let last = i + 1 == items.len();
            s.push_str(&format!(
                "{} {}\n",
                if last { "└─" } else { "├─" },
                lines[0]
            ));
            for (j, l) in lines[1..].iter().enumerate() {
                let end = j + 2 == lines.len();
                s.push_str(&format!(
                    "{}  {} {l}\n",
                    if last { " " } else { "│" },
                    if end { "└─" } else { "├─" }
                ));
            }
        }
        s.push('\n');
    }
    s
}
