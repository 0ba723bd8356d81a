//! The host namespace's own networks. A ferrynet subnet laid on top of one of them would give
//! the bridge the host's own address as its gateway and containers the addresses of the
//! host's neighbours, so it is refused before anything is created. The same check in both
//! families.

use crate::family::Family;
use crate::netlink::{Handle, Link, Mac, NetlinkError};
use crate::network::{invalid, NetworkError};

/// The agent's VXLAN device: it carries the host's leased subnet's first address.
pub fn is_ferrynet_vxlan(link: &Link) -> bool {
    link.kind.as_deref() == Some("vxlan") && link.name.starts_with("ferry.")
}

/// A bridge ferrynet made: its MAC is derived from its name.
pub fn is_ferrynet_bridge(link: &Link) -> bool {
    link.kind.as_deref() == Some("bridge") && link.mac == Some(Mac::from_seed(&link.name))
}

/// What a network's subnet may overlap: its own bridge (an existing network is no conflict
/// with itself) and the agent's VXLAN device.
pub fn owned_by_network(own_bridge: &str) -> impl Fn(&Link) -> bool + '_ {
    move |link| link.name == own_bridge || is_ferrynet_vxlan(link)
}

fn overlaps<A: Family>(a: A::Net, b: A::Net) -> bool {
    A::contains(a, A::network(b)) || A::contains(b, A::network(a))
}

/// The first of the host's connected routes or addresses that `subnet` overlaps, on a link
/// that `ours` does not claim, as an error for `field` naming the interface, the route and
/// the address; `None` when the subnet is free.
pub fn subnet_conflict<A: Family>(
    h: &mut Handle,
    field: &'static str,
    subnet: A::Net,
    ours: impl Fn(&Link) -> bool,
) -> Result<Option<NetworkError>, NetlinkError> {
    let links = h.links()?;
    let foreign = |index: u32| {
        links
            .iter()
            .find(|l| l.index == index)
            .filter(|l| !ours(l))
            .map(|l| l.name.clone())
    };
    let addrs = h.addrs_of::<A>(None)?;
    let address_on = |index: u32| -> Option<A::Net> {
        addrs
            .iter()
            .find(|(i, a)| *i == index && overlaps::<A>(*a, subnet))
            .map(|(_, a)| *a)
    };
    for (route, index) in h.connected_routes::<A>()? {
        if !overlaps::<A>(route, subnet) {
            continue;
        }
        if let Some(ifname) = foreign(index) {
            let address = address_on(index)
                .map(|a| format!(", address {a}"))
                .unwrap_or_default();
            return Ok(Some(conflict(
                field,
                subnet,
                format!("the host's route {route} dev {ifname}{address}"),
            )));
        }
    }
    // Addresses without a connected route (a /32, `noprefixroute`).
    for (index, a) in &addrs {
        if A::contains(subnet, A::addr(*a)) {
            if let Some(ifname) = foreign(*index) {
                return Ok(Some(conflict(
                    field,
                    subnet,
                    format!("the host's address {a} on {ifname}"),
                )));
            }
        }
    }
    Ok(None)
}

fn conflict(field: &'static str, subnet: impl std::fmt::Display, what: String) -> NetworkError {
    invalid(
        field,
        subnet,
        format!("overlaps {what}; pick a range the host does not use"),
    )
}
