//! How ferrynet's elements are laid out in nf_tables registers: interface names, addresses of
//! either family, published-port keys and data (concatenations padded to 4-byte registers).

use std::net::IpAddr;

use super::*;

pub(super) fn ifname_key(name: &str) -> Vec<u8> {
    let mut k = vec![0u8; 16];
    let b = name.as_bytes();
    k[..b.len().min(16)].copy_from_slice(&b[..b.len().min(16)]);
    k
}

pub(super) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The address at the start of `b`, of the family asked for.
pub(super) fn ip_from(b: &[u8], v6: bool) -> Option<IpAddr> {
    if v6 {
        let a: [u8; 16] = b.get(..16)?.try_into().ok()?;
        Some(a.into())
    } else {
        let a: [u8; 4] = b.get(..4)?.try_into().ok()?;
        Some(a.into())
    }
}

/// Whether a port lives in the IPv6 maps: its host address decides; without one, the family
/// asked for.
pub(super) fn port_is_v6(p: &PortMapping, v6: bool) -> bool {
    p.host_ip.map_or(v6, |ip| ip.is_ipv6())
}

/// The map a port lives in for one family, and its key: `proto . port` in `ports`/`ports6`,
/// or `host address . proto . port` in `ports_ip`/`ports_ip6`.
pub(super) fn port_key(p: &PortMapping, v6: bool) -> (Set, Vec<u8>) {
    let v6 = port_is_v6(p, v6);
    let h = p.host_port.to_be_bytes();
    let mut key = p.host_ip.map(ip_bytes).unwrap_or_default();
    key.extend_from_slice(&[p.protocol.number(), 0, 0, 0, h[0], h[1], 0, 0]);
    let (map, ..) = PORT_MAPS
        .iter()
        .find(|(_, with_ip, six)| *with_ip == p.host_ip.is_some() && *six == v6)
        .expect("four maps");
    (*map, key)
}

/// A port's element pointing at `target` (whose family must be the port's: see
/// [`port_elements`]); the data is `container ip . port`.
pub(super) fn port_element(p: &PortMapping, target: IpAddr) -> (Set, Element) {
    debug_assert!(p.host_ip.is_none_or(|ip| ip.is_ipv6() == target.is_ipv6()));
    let (map, key) = port_key(p, target.is_ipv6());
    let mut data = ip_bytes(target);
    let c = p.container_port.to_be_bytes();
    data.extend_from_slice(&[c[0], c[1], 0, 0]);
    (
        map,
        Element {
            key,
            data: Some(data),
            jump: None,
        },
    )
}

/// The elements publishing `ports` for a container with `addrs`: a port on one host address
/// in that address's family, any other in every family the container has.
pub(super) fn port_elements(
    addrs: EndpointAddrs,
    ports: &[PortMapping],
) -> Result<Vec<(Set, Element)>, FirewallError> {
    let mut out = Vec::new();
    for p in ports {
        let targets: Vec<IpAddr> = match p.host_ip {
            Some(ip) => vec![addrs.get(ip.is_ipv6()).ok_or(FirewallError::Family {
                port: *p,
                family: if ip.is_ipv6() { "IPv6" } else { "IPv4" },
            })?],
            None => [addrs.get(false), addrs.get(true)]
                .into_iter()
                .flatten()
                .collect(),
        };
        if targets.is_empty() {
            return Err(FirewallError::Family {
                port: *p,
                family: "IPv4 or IPv6",
            });
        }
        out.extend(targets.into_iter().map(|t| port_element(p, t)));
    }
    Ok(out)
}

/// Elements grouped by map, as one transaction wants them.
pub(super) fn by_map(elems: impl Iterator<Item = (Set, Element)>) -> Vec<(Set, Vec<Element>)> {
    let mut out: Vec<(Set, Vec<Element>)> =
        PORT_MAPS.iter().map(|(m, ..)| (*m, Vec::new())).collect();
    for (map, e) in elems {
        out.iter_mut()
            .find(|(m, _)| *m == map)
            .expect("known map")
            .1
            .push(e);
    }
    out
}

/// A port map's data: `container ip . port`.
pub(super) fn decode_target(d: &[u8], v6: bool) -> Option<(IpAddr, u16)> {
    let n = if v6 { 16 } else { 4 };
    let port = d.get(n..n + 2)?;
    Some((ip_from(d, v6)?, u16::from_be_bytes([port[0], port[1]])))
}

pub(super) fn decode_port(map: Set, e: &Element) -> Option<(PortMapping, IpAddr)> {
    let (_, with_ip, v6) = PORT_MAPS.iter().find(|(m, ..)| *m == map)?;
    let (host_ip, k) = if *with_ip {
        let n = if *v6 { 16 } else { 4 };
        (Some(ip_from(&e.key, *v6)?), e.key.get(n..)?)
    } else {
        (None, &e.key[..])
    };
    if k.len() < 6 {
        return None;
    }
    let (target, container_port) = decode_target(e.data.as_ref()?, *v6)?;
    Some((
        PortMapping {
            host_port: u16::from_be_bytes([k[4], k[5]]),
            container_port,
            protocol: Protocol::from_number(k[0])?,
            host_ip,
        },
        target,
    ))
}
