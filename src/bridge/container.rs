//! An endpoint's part inside the container's namespace (run there on a dedicated thread).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{nl, DriverError, RouteSpec};
use crate::netlink::{Handle, Mac, NetlinkError, Route};

/// Inside the container's namespace: disable IPv6 DAD noise, address, up, lo up, routes.
/// Returns (container ifindex, host veth ifindex).
pub(super) fn configure_container(
    ifname: &str,
    ip: Ipv4Net,
    gateway: Ipv4Addr,
    routes: &[RouteSpec],
) -> Result<(u32, u32), DriverError> {
    let mut h = Handle::new().map_err(nl("open netlink in container"))?;
    let link = h
        .link_by_name(ifname)
        .map_err(nl("look up container interface"))?
        .ok_or_else(|| {
            nl("look up container interface")(NetlinkError::Malformed("interface vanished"))
        })?;
    let host_index =
        link.peer_index
            .ok_or(nl("look up container interface")(NetlinkError::Malformed(
                "veth without peer",
            )))?;
    h.add_addr(link.index, ip)
        .map_err(nl("add container address"))?;
    // An IPv4 network: no IPv6 addresses, so no DAD wait and no multicast on the bridge.
    h.set_up_ipv4_only(link.index, None)
        .map_err(nl("set container interface up"))?;
    h.set_up(1).map_err(nl("set lo up"))?;
    for r in routes {
        let route = Route {
            dst: r.dst,
            gateway: Some(r.gw.unwrap_or(gateway)),
            oif: Some(link.index),
            onlink: false,
            protocol: crate::netlink::PROTO_BOOT,
        };
        match h.add_route(&route) {
            Err(e) if !e.is(libc::EEXIST) => return Err(nl("add container route")(e)),
            _ => {}
        }
    }
    Ok((link.index, host_index))
}

/// Inside the container's namespace: what [`Driver::verify`] checks there.
pub(super) fn verify_container(
    ifname: &str,
    ip: Option<Ipv4Net>,
    mac: Mac,
    routes: &[RouteSpec],
    gateway: Ipv4Addr,
) -> Result<Vec<String>, NetlinkError> {
    let mut h = Handle::new()?;
    let mut problems = Vec::new();
    let Some(link) = h.link_by_name(ifname)? else {
        return Ok(vec![format!("{ifname} is missing in the container")]);
    };
    if link.mac != Some(mac) {
        problems.push(format!("{ifname} has MAC {:?}, expected {mac}", link.mac));
    }
    if !link.up {
        problems.push(format!("{ifname} is down"));
    }
    if let Some(ip) = ip {
        if !h.addrs(Some(link.index))?.iter().any(|a| a.net == ip) {
            problems.push(format!("{ifname} lacks address {ip}"));
        }
    }
    let present = h.routes()?;
    for r in routes {
        let gw = r.gw.unwrap_or(gateway);
        if !present
            .iter()
            .any(|p| p.dst == r.dst && p.gateway == Some(gw))
        {
            problems.push(format!("route {} via {gw} is missing", r.dst));
        }
    }
    Ok(problems)
}
