//! The uplink (the interface and addresses that reach the other hosts) and every check of
//! the agent's settings against themselves and the host, made before anything changes.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{AgentConfig, AgentError};
use crate::netlink::Handle;
use crate::network::NetworkError;

/// What reaches the other hosts.
#[derive(Debug, Clone, Copy)]
pub struct Uplink {
    pub index: u32,
    pub ip: Ipv4Addr,
    pub mtu: u32,
}

/// The interface and address that reach the other hosts: `--public-ip`, `--iface`, or the
/// default route's interface.
fn find_uplink(h: &mut Handle, cfg: &AgentConfig) -> Result<Uplink, AgentError> {
    let addrs = h.addrs(None)?;
    let (index, ip) = if let Some(ip) = cfg.public_ip {
        let a = addrs
            .iter()
            .find(|a| a.net.addr() == ip)
            .ok_or_else(|| AgentError::Uplink(format!("no interface has --public-ip {ip}")))?;
        (a.index, ip)
    } else {
        let index = match &cfg.iface {
            Some(name) => {
                h.link_by_name(name)?
                    .ok_or_else(|| {
                        AgentError::Uplink(format!("--iface {name}: no such interface"))
                    })?
                    .index
            }
            None => h
                .routes()?
                .into_iter()
                .find(|r| r.dst.prefix_len() == 0)
                .and_then(|r| r.oif)
                .ok_or_else(|| {
                    AgentError::Uplink("no default route: pass --iface or --public-ip".into())
                })?,
        };
        let a = addrs.iter().find(|a| a.index == index).ok_or_else(|| {
            AgentError::Uplink(format!("the uplink (ifindex {index}) has no IPv4 address"))
        })?;
        (index, a.net.addr())
    };
    let mtu = h
        .link_by_index(index)?
        .map(|l| l.mtu)
        .ok_or_else(|| AgentError::Uplink(format!("ifindex {index} vanished")))?;
    Ok(Uplink { index, ip, mtu })
}

/// This host's IPv6 underlay address: `--public-ip` of IPv6 (which must be one of the host's
/// addresses), else the uplink's first global IPv6 address; `None` without one (VXLAN still
/// carries IPv6; host-gw and BGP cannot route IPv6 to this host).
pub(super) fn find_uplink6(
    h: &mut Handle,
    cfg: &AgentConfig,
    uplink_index: u32,
) -> Result<Option<Ipv6Addr>, AgentError> {
    let addrs = h.addrs6(None)?;
    if let Some(ip) = cfg.public_ip6 {
        return match addrs.iter().any(|a| a.net.addr() == ip) {
            true => Ok(Some(ip)),
            false => Err(AgentError::Uplink(format!(
                "no interface has --public-ip {ip}"
            ))),
        };
    }
    Ok(addrs
        .iter()
        .filter(|a| a.index == uplink_index)
        .map(|a| a.net.addr())
        .find(|ip| ip.segments()[0] & 0xffc0 != 0xfe80))
}

/// The checks of the agent's settings against themselves and the host, with no change made:
/// returns the uplink.
pub(super) fn preflight(cfg: &AgentConfig, h: &mut Handle) -> Result<Uplink, AgentError> {
    let invalid = |e: NetworkError| AgentError::Uplink(e.to_string());
    let range_error = |e: NetworkError| match e {
        NetworkError::Invalid { value, why, .. } => {
            AgentError::Uplink(format!("invalid --cluster-cidr {value:?}: {why}"))
        }
        e => invalid(e),
    };
    let range = cfg.cluster.network;
    crate::network::validate_subnet::<Ipv4Addr>(range).map_err(range_error)?;
    if let Some(range6) = cfg.cluster.network6 {
        // The IPv6 cluster range is wider than one host's network: only its kind is checked.
        if let Err(e) = crate::network::validate_subnet::<Ipv6Addr>(range6) {
            if !e.to_string().contains("wider than") {
                return Err(range_error(e));
            }
        }
    }
    cfg.cluster
        .validate()
        .map_err(|e| AgentError::Uplink(format!("invalid cluster configuration: {e}")))?;
    crate::network::validate_id("--node-name", &cfg.node_name).map_err(invalid)?;
    if cfg.vni > MAX_VNI {
        return Err(AgentError::Uplink(format!(
            "invalid --vni {}: a VXLAN network identifier has 24 bits (at most {MAX_VNI})",
            cfg.vni
        )));
    }
    if cfg.port == 0 {
        return Err(AgentError::Uplink(
            "invalid --vxlan-port 0: must be between 1 and 65535".into(),
        ));
    }
    let uplink = find_uplink(h, cfg)?;
    // The cluster range must not sit on the host's own networks (the underlay above all);
    // ferrynet's own bridges and VXLAN device may carry parts of it.
    let ours = |l: &crate::netlink::Link| {
        crate::hostnet::is_ferrynet_bridge(l) || crate::hostnet::is_ferrynet_vxlan(l)
    };
    if let Some(e) = crate::hostnet::subnet_conflict::<Ipv4Addr>(h, "--cluster-cidr", range, &ours)?
    {
        return Err(invalid(e));
    }
    if let Some(range6) = cfg.cluster.network6 {
        if let Some(e) =
            crate::hostnet::subnet_conflict::<Ipv6Addr>(h, "--cluster-cidr", range6, &ours)?
        {
            return Err(invalid(e));
        }
    }
    if cfg.cluster.vxlan_ipv6_underlay && find_uplink6(h, cfg, uplink.index)?.is_none() {
        return Err(AgentError::Uplink(
            "--vxlan-underlay ipv6 needs an IPv6 address on the uplink (or --public-ip with one)"
                .into(),
        ));
    }
    Ok(uplink)
}

/// The largest VXLAN network identifier (24 bits).
const MAX_VNI: u32 = (1 << 24) - 1;
