//! An endpoint's part inside the container's namespace (run there on a dedicated thread).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv6Net};

use super::{nl, DriverError, Endpoint, RouteSpec};
use crate::netlink::{Handle, NetlinkError, Route, Route6, PROTO_BOOT};

/// The next hop of a container route: its own, or the gateway of its destination's family.
/// `None` when the endpoint has no address of that family (attach drops such routes).
pub(super) fn next_hop(ep: &Endpoint, r: &RouteSpec) -> Option<IpAddr> {
    r.gw.or(match r.dst {
        IpNet::V4(_) => ep.gateway.map(IpAddr::V4),
        IpNet::V6(_) => ep.gateway6.map(IpAddr::V6),
    })
}

/// Inside the container's namespace: addresses (IPv6 ones, the link-local first, without
/// DAD, so they are usable the moment attach returns), up with no address of the kernel's
/// own making, lo up, routes. Returns (container ifindex, host veth ifindex).
/// Returns the container interface's index, its peer's, and the netlink handle of the
/// container's namespace (it stays bound to that namespace after the thread leaves it).
pub(super) fn configure_container(ep: &Endpoint) -> Result<(u32, u32, Handle), DriverError> {
    let mut h = Handle::new().map_err(nl("open netlink in container"))?;
    let link = h
        .link_by_name(&ep.ifname)
        .map_err(nl("look up container interface"))?
        .ok_or_else(|| {
            nl("look up container interface")(NetlinkError::Malformed("interface vanished"))
        })?;
    let host_index =
        link.peer_index
            .ok_or(nl("look up container interface")(NetlinkError::Malformed(
                "veth without peer",
            )))?;
    if let Some(ip) = ep.ip {
        h.add_addr(link.index, ip)
            .map_err(nl("add container address"))?;
    }
    if let (Some(ip6), Some(ll)) = (ep.ip6, ep.link_local()) {
        let ll = Ipv6Net::new(ll, 64).expect("valid prefix");
        h.add_addr(link.index, ll)
            .map_err(nl("add container link-local address"))?;
        h.add_addr(link.index, ip6)
            .map_err(nl("add container IPv6 address"))?;
    }
    // No kernel-made link-local address: an IPv4 network's container has no IPv6 at all (no
    // DAD, no multicast on the bridge); an IPv6 one only the addresses above. addr_gen_mode
    // none does not stop SLAAC: that no router advertisement ever reaches a container is the
    // bridge table's job (see the firewall's table script), which costs no per-container
    // sysctl write.
    h.set_up_static(link.index, None)
        .map_err(nl("set container interface up"))?;
    h.set_up(1).map_err(nl("set lo up"))?;
    for r in &ep.routes {
        let added = match (r.dst, next_hop(ep, r)) {
            (IpNet::V4(dst), Some(IpAddr::V4(gw))) => h.add_route(&Route {
                dst,
                gateway: Some(gw),
                oif: Some(link.index),
                onlink: false,
                protocol: PROTO_BOOT,
            }),
            (IpNet::V6(dst), Some(IpAddr::V6(gw))) => h.add_route(&Route6 {
                dst,
                gateway: Some(gw),
                oif: Some(link.index),
                onlink: false,
                protocol: PROTO_BOOT,
            }),
            _ => continue,
        };
        match added {
            Err(e) if !e.is(libc::EEXIST) => return Err(nl("add container route")(e)),
            _ => {}
        }
    }
    Ok((link.index, host_index, h))
}

/// Inside the container's namespace: what [`Driver::verify`](super::Driver::verify) checks
/// there.
pub(super) fn verify_container(ep: &Endpoint) -> Result<Vec<String>, NetlinkError> {
    let mut h = Handle::new()?;
    let mut problems = Vec::new();
    let ifname = &ep.ifname;
    let Some(link) = h.link_by_name(ifname)? else {
        return Ok(vec![format!("{ifname} is missing in the container")]);
    };
    if link.mac != Some(ep.mac) {
        problems.push(format!(
            "{ifname} has MAC {:?}, expected {}",
            link.mac, ep.mac
        ));
    }
    if !link.up {
        problems.push(format!("{ifname} is down"));
    }
    if let Some(ip) = ep.ip {
        if !h.addrs(Some(link.index))?.iter().any(|a| a.net == ip) {
            problems.push(format!("{ifname} lacks address {ip}"));
        }
    }
    if let Some(ip6) = ep.ip6 {
        let present = h.addrs6(Some(link.index))?;
        match present.iter().find(|a| a.net == ip6) {
            None => problems.push(format!("{ifname} lacks address {ip6}")),
            Some(a) if a.tentative => problems.push(format!("{ifname}'s {ip6} is tentative")),
            Some(_) => {}
        }
    }
    let (v4, v6) = (h.routes()?, h.routes6()?);
    for r in &ep.routes {
        let gw = next_hop(ep, r);
        let present = match (r.dst, gw) {
            (IpNet::V4(dst), Some(IpAddr::V4(gw))) => {
                v4.iter().any(|p| p.dst == dst && p.gateway == Some(gw))
            }
            (IpNet::V6(dst), Some(IpAddr::V6(gw))) => {
                v6.iter().any(|p| p.dst == dst && p.gateway == Some(gw))
            }
            _ => continue,
        };
        if !present {
            let via = gw.map(|g| g.to_string()).unwrap_or_default();
            problems.push(format!("route {} via {via} is missing", r.dst));
        }
    }
    Ok(problems)
}
