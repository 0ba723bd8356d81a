//! Following one packet: out of a container (its route, its neighbour, its veth), across a
//! bridge (anti-spoofing, the FDB), through a host's routing decision (published ports,
//! isolation, masquerade), over VXLAN or a direct route to a peer host, and into the
//! destination container. Each step asks the kernel one question and records the answer
//! as a [`Hop`]; the first step that cannot carry the packet ends the walk with a drop.

mod bridge;
mod container;
mod host;

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::hosts::{Container, Hosts};
use super::probe;
use super::{nl, Hop, HopKind, Proto, Spec, Target, Trace, TraceError, TraceRequest, Verdict};
use crate::firewall::{GuardVerdict, Isolation, PortMapping, Protocol};
use crate::netlink::{
    nud_name, Link, Mac, NetlinkError, RouteAnswer, RouteQuery, PROTO_FERRYNET, RTN_LOCAL,
};

/// BIRD's routes (`proto bird`).
const PROTO_BIRD: u8 = 12;
/// A path longer than this is a loop.
const MAX_HOPS: usize = 64;

/// Where a walk ends.
enum End {
    Delivered(String),
    Dropped(String),
}

/// One end, resolved.
enum Endpoint {
    Container(Box<Container>),
    /// An address outside every container this trace can see.
    Outside(IpAddr),
    /// The host the command runs in.
    Host,
}

struct Walk<'a> {
    hosts: &'a mut Hosts,
    hops: Vec<Hop>,
    inconsistencies: Vec<String>,
    src: Option<IpAddr>,
    dst: IpAddr,
    proto: Proto,
    port: Option<u16>,
    size: Option<u32>,
    /// The source as it left its sender (before any masquerade).
    first_src: Option<IpAddr>,
}

fn facts(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn family_of(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        4
    } else {
        6
    }
}

fn arp(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "ARP"
    } else {
        "NDP"
    }
}

/// What a sender asks its neighbours when it lacks an entry.
fn ask(ip: IpAddr) -> String {
    if ip.is_ipv4() {
        format!("an ARP request who-has {ip}")
    } else {
        format!("a neighbour solicitation for {ip}")
    }
}

fn protocol_name(p: u8) -> String {
    match p {
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        PROTO_BIRD => "bird (BGP)".into(),
        PROTO_FERRYNET => "ferrynet agent".into(),
        p => p.to_string(),
    }
}

fn describe_route(dst: IpAddr, r: &RouteAnswer, oif: &str) -> String {
    let mut s = match r.gateway {
        Some(gw) => format!("{dst} via {gw} dev {oif}"),
        None => format!("{dst} dev {oif}"),
    };
    if let Some(src) = r.prefsrc {
        s.push_str(&format!(" src {src}"));
    }
    if let Some(m) = r.matched {
        s.push_str(&format!(
            " (table entry {m}, proto {})",
            protocol_name(r.protocol)
        ));
    }
    s
}

fn route_error(e: &NetlinkError) -> String {
    match e.errno() {
        Some(libc::ENETUNREACH) => "network unreachable".into(),
        Some(libc::EHOSTUNREACH) => "no route to host".into(),
        Some(libc::EACCES) => "prohibited by a route".into(),
        Some(libc::EINVAL) => "invalid (martian source or forwarding off)".into(),
        _ => e.to_string(),
    }
}

impl<'a> Walk<'a> {
    fn hop(&mut self, at: &str, kind: HopKind, object: String, note: Option<String>, f: Value) {
        self.hops.push(Hop {
            at: at.to_string(),
            kind,
            object,
            note,
            facts: facts(f),
        });
    }

    fn mtu_check(&mut self, at: &str, link: &Link) -> Option<End> {
        match self.size {
            Some(size) if link.mtu < size => Some(End::Dropped(format!(
                "{at} {}: MTU {} is smaller than the packet's {size} bytes",
                link.name, link.mtu
            ))),
            _ => None,
        }
    }
}

/// The address of `c` in `family` (its record's, else the kernel's on its interface).
fn container_addr(c: &mut Container, family: u8) -> Result<Option<IpAddr>, TraceError> {
    if let Some(r) = &c.record {
        let a = match family {
            4 => r.ip.map(|n| IpAddr::V4(n.addr())),
            _ => r.ip6.map(|n| IpAddr::V6(n.addr())),
        };
        if a.is_some() {
            return Ok(a);
        }
    }
    let ifname = c
        .record
        .as_ref()
        .map_or("eth0", |r| r.ifname.as_str())
        .to_string();
    let Some(link) = c.h.link_by_name(&ifname).map_err(nl("link"))? else {
        return Ok(None);
    };
    Ok(match family {
        4 => {
            c.h.addrs(Some(link.index))
                .map_err(nl("addresses"))?
                .first()
                .map(|a| IpAddr::V4(a.net.addr()))
        }
        _ => {
            c.h.addrs6(Some(link.index))
                .map_err(nl("addresses"))?
                .iter()
                .find(|a| !a.net.addr().is_unicast_link_local())
                .map(|a| IpAddr::V6(a.net.addr()))
        }
    })
}

/// An end as written: a source address is a container when ferrynet's IPAM says so (a
/// destination address needs no owner: the walk finds who answers for it).
fn resolve(hosts: &mut Hosts, s: &Spec, source: bool) -> Result<Endpoint, TraceError> {
    Ok(match &s.target {
        Target::Name(n) => Endpoint::Container(Box::new(hosts.container(n)?)),
        Target::Ip(ip) if source => match hosts.container_by_ip(*ip)? {
            Some(c) => Endpoint::Container(Box::new(c)),
            None => Endpoint::Outside(*ip),
        },
        Target::Ip(ip) => Endpoint::Outside(*ip),
        Target::Host => Endpoint::Host,
    })
}

/// The host's own address in a family: the source of its route towards `towards`, else its
/// first global address outside ferrynet's bridges.
fn host_addr(hosts: &mut Hosts, family: u8) -> Result<Option<IpAddr>, TraceError> {
    let v = &mut hosts.views[0];
    let links = v.h.links().map_err(nl("links"))?;
    let skip: Vec<u32> = links
        .iter()
        .filter(|l| {
            l.kind.as_deref() == Some("bridge")
                || l.kind.as_deref() == Some("vxlan")
                || l.name == "lo"
        })
        .map(|l| l.index)
        .collect();
    Ok(match family {
        4 => {
            v.h.addrs(None)
                .map_err(nl("addresses"))?
                .iter()
                .find(|a| !skip.contains(&a.index))
                .map(|a| IpAddr::V4(a.net.addr()))
        }
        _ => {
            v.h.addrs6(None)
                .map_err(nl("addresses"))?
                .iter()
                .find(|a| !skip.contains(&a.index) && !a.net.addr().is_unicast_link_local())
                .map(|a| IpAddr::V6(a.net.addr()))
        }
    })
}

pub fn run(hosts: &mut Hosts, req: &TraceRequest) -> Result<Vec<Trace>, TraceError> {
    let mut from = resolve(hosts, &req.from, true)?;
    let mut to = resolve(hosts, &req.to, false)?;
    let families: Vec<u8> = match (&to, req.family) {
        (Endpoint::Outside(ip), _) => vec![family_of(*ip)],
        (_, Some(f)) => vec![f],
        _ => vec![4, 6],
    };
    let mut out = Vec::new();
    for family in families {
        if req.family.is_some_and(|f| f != family) {
            continue;
        }
        let dst = match &mut to {
            Endpoint::Outside(ip) => Some(*ip),
            Endpoint::Container(c) => container_addr(c, family)?,
            Endpoint::Host => host_addr(hosts, family)?,
        };
        let src = match &mut from {
            Endpoint::Outside(ip) => Some(*ip).filter(|ip| family_of(*ip) == family),
            Endpoint::Container(c) => container_addr(c, family)?,
            Endpoint::Host => None,
        };
        let Some(dst) = dst else { continue };
        if matches!(from, Endpoint::Container(_) | Endpoint::Outside(_)) && src.is_none() {
            continue;
        }
        // A container's source is what its kernel picks (read on the way).
        let src = src.filter(|_| !matches!(from, Endpoint::Container(_)));
        let proto = req.to.proto.unwrap_or(Proto::Icmp);
        let mut w = Walk {
            hosts,
            hops: Vec::new(),
            inconsistencies: Vec::new(),
            src,
            dst,
            proto,
            port: req.to.port,
            size: req.size,
            first_src: src,
        };
        let end = match &mut from {
            Endpoint::Container(c) => w.out_of_container(c)?,
            Endpoint::Outside(ip) => {
                // From outside: the packet arrives where the host would send a reply.
                let r = w.hosts.views[0].h.route_get(&RouteQuery {
                    dst: *ip,
                    src: None,
                    iif: None,
                });
                match r.ok().and_then(|r| r.oif) {
                    Some(i) => {
                        let name = w.hosts.views[0]
                            .link(i)?
                            .map(|l| l.name)
                            .unwrap_or_default();
                        let at = w.hosts.views[0].name.clone();
                        w.hop(
                            &at,
                            HopKind::Interface,
                            format!("arrives on {name} from {ip}"),
                            None,
                            json!({"ifindex": i}),
                        );
                        w.route_in_host(0, Some(i), &name)?
                    }
                    None => End::Dropped(format!(
                        "{}: no route back to {ip}: nothing from it would be accepted",
                        w.hosts.views[0].name
                    )),
                }
            }
            Endpoint::Host => w.route_in_host(0, None, "host")?,
        };
        let verdict = match end {
            End::Delivered(to) => Verdict::Delivered { to },
            End::Dropped(reason) => Verdict::Dropped {
                hop: w.hops.len().saturating_sub(1),
                reason,
            },
        };
        let src = w.first_src;
        let (hops, inconsistencies) = (w.hops, w.inconsistencies);
        let mut trace = Trace {
            from: spec_name(&req.from),
            to: spec_name(&req.to),
            family,
            proto,
            port: req.to.port,
            src,
            dst,
            hops,
            verdict,
            inconsistencies,
            probe: None,
        };
        let host_name = hosts.views[0].name.clone();
        let from_host = matches!(from, Endpoint::Host);
        super::policy::apply(&hosts.state, &host_name, from_host, &mut trace);
        if req.probe {
            let sender = match &from {
                Endpoint::Container(c) => probe::Sender::Namespace(&c.ns),
                Endpoint::Outside(ip) => probe::Sender::Outside(*ip),
                Endpoint::Host => probe::Sender::Host,
            };
            trace.probe = Some(probe::run(hosts, sender, &trace)?);
        }
        out.push(trace);
    }
    if out.is_empty() {
        return Err(TraceError::BadTarget(format!(
            "{} and {} share no address family{}",
            spec_name(&req.from),
            spec_name(&req.to),
            req.family
                .map(|f| format!(" (asked: IPv{f})"))
                .unwrap_or_default()
        )));
    }
    Ok(out)
}

fn spec_name(s: &Spec) -> String {
    let base = match &s.target {
        Target::Name(n) => n.clone(),
        Target::Ip(ip) if ip.is_ipv6() && s.port.is_some() => format!("[{ip}]"),
        Target::Ip(ip) => ip.to_string(),
        Target::Host => "host".into(),
    };
    match (s.port, s.proto) {
        (Some(p), Some(proto)) => format!("{base}:{p}/{proto}"),
        _ => base,
    }
}
