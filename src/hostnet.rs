//! The host namespace's own networks. A ferrynet subnet laid on top of one of them would give
//! the bridge the host's own address as its gateway and containers the addresses of the
//! host's neighbours, so it is refused before anything is created.

use ipnet::Ipv4Net;

use crate::netlink::{Handle, Link, NetlinkError};
use crate::network::{invalid, NetworkError};

/// Links whose addresses and routes are ferrynet's own: the network's bridge (an existing
/// network is no conflict with itself) and the agent's VXLAN device (it carries the host's
/// leased subnet's first address).
fn is_ours(link: &Link, own_bridge: &str) -> bool {
    link.name == own_bridge
        || (link.kind.as_deref() == Some("vxlan") && link.name.starts_with("ferry."))
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first of the host's connected routes or addresses that `subnet` overlaps, as an error
/// naming the interface, the route and the address; `None` when the subnet is free.
pub fn subnet_conflict(
    h: &mut Handle,
    subnet: Ipv4Net,
    own_bridge: &str,
) -> Result<Option<NetworkError>, NetlinkError> {
    let links = h.links()?;
    let foreign = |index: u32| {
        links
            .iter()
            .find(|l| l.index == index)
            .filter(|l| !is_ours(l, own_bridge))
            .map(|l| l.name.clone())
    };
    let addrs = h.addrs(None)?;
    let address_on = |index: u32| -> Option<Ipv4Net> {
        addrs
            .iter()
            .find(|a| a.index == index && overlaps(a.net.trunc(), subnet))
            .map(|a| a.net)
    };
    for (route, index) in h.connected_routes::<std::net::Ipv4Addr>()? {
        if !overlaps(route, subnet) {
            continue;
        }
        if let Some(ifname) = foreign(index) {
            let address = address_on(index)
                .map(|a| format!(", address {a}"))
                .unwrap_or_default();
            return Ok(Some(conflict(
                subnet,
                format!("the host's route {route} dev {ifname}{address}"),
            )));
        }
    }
    // Addresses without a connected route (a /32, `noprefixroute`).
    for a in &addrs {
        if subnet.contains(&a.net.addr()) {
            if let Some(ifname) = foreign(a.index) {
                return Ok(Some(conflict(
                    subnet,
                    format!("the host's address {} on {ifname}", a.net),
                )));
            }
        }
    }
    Ok(None)
}

fn conflict(subnet: Ipv4Net, what: String) -> NetworkError {
    invalid(
        "subnet",
        subnet,
        format!("overlaps {what}; pick a range the host does not use"),
    )
}
