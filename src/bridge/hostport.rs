//! Published ports whose host port ferrynet chooses, as Docker's own bridge does for `-p 80`
//! (Docker sends HostPort 0: a port of the ephemeral range), `-p 8000-8010:80` (one port of
//! that range) and `-P`. The choice follows moby's portallocator: per host address and
//! protocol, the next free port after the last one chosen, wrapping around the range. Free
//! means published by no endpoint on the host: the kernel's published-port maps are the one
//! place every endpoint's ports meet (all networks, CLI and Docker alike), and the choice is
//! recorded with the endpoint before its element is added ([`Driver::set_ports`]), so a
//! restarted plugin keeps it. Two callers choosing at once cannot both win a port: adding an
//! element that exists fails (EEXIST) and the loser chooses again.

use std::collections::HashMap;
use std::net::IpAddr;

use super::{Driver, DriverError, Endpoint};
use crate::firewall::{Firewall, FirewallError, PortMapping, Protocol};
use crate::network::{invalid, NetworkConfig};

/// How often a port lost to another caller is chosen again (moby's bridge tries 10 times).
const ATTEMPTS: usize = 10;

/// A port to publish on a host port from `host_ports` (inclusive; one port: that port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRequest {
    pub container_port: u16,
    pub protocol: Protocol,
    /// As [`PortMapping::host_ip`]: None is every host address.
    pub host_ip: Option<IpAddr>,
    pub host_ports: (u16, u16),
}

impl PortRequest {
    fn fixed(&self) -> Option<PortMapping> {
        let (first, last) = self.host_ports;
        (first == last).then_some(self.mapping(first))
    }

    fn mapping(&self, host_port: u16) -> PortMapping {
        PortMapping {
            host_port,
            container_port: self.container_port,
            protocol: self.protocol,
            host_ip: self.host_ip,
        }
    }

    /// Whether `p` is this request's port with its host port in the range.
    fn takes(&self, p: &PortMapping) -> bool {
        let (first, last) = self.host_ports;
        p.container_port == self.container_port
            && p.protocol == self.protocol
            && p.host_ip == self.host_ip
            && (first..=last).contains(&p.host_port)
    }
}

impl std::fmt::Display for PortRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (first, last) = self.host_ports;
        match self.host_ip {
            Some(IpAddr::V4(ip)) => write!(f, "{ip}:")?,
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            None => {}
        }
        match first == last {
            true => write!(f, "{first}")?,
            false => write!(f, "{first}-{last}")?,
        }
        write!(f, ":{}/{}", self.container_port, self.protocol)
    }
}

/// Whether two published ports would claim the same host port: same protocol and port, on
/// the same host address or one of them on all of them.
fn overlap(a: &PortMapping, b: &PortMapping) -> bool {
    a.protocol == b.protocol
        && a.host_port == b.host_port
        && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
}

/// The last host port chosen per (host address, protocol, range), as moby's portallocator
/// keeps it: the next choice starts after it, so a port just given back is not reused at
/// once (its clients' conntrack entries may still point at the old container). In memory, as
/// Docker's is: after a restart the choice starts at the range's beginning again.
#[derive(Debug, Default)]
pub struct HostPorts {
    last: HashMap<(Option<IpAddr>, Protocol, u16, u16), u16>,
}

impl HostPorts {
    /// The next port of `r`'s range after the last one chosen for which `free` holds, or
    /// None when none does.
    fn choose(&mut self, r: &PortRequest, free: impl Fn(u16) -> bool) -> Option<u16> {
        let (first, last) = r.host_ports;
        let key = (r.host_ip, r.protocol, first, last);
        let mut port = *self.last.get(&key).unwrap_or(&last);
        for _ in first..=last {
            port = if port >= last { first } else { port + 1 };
            if free(port) {
                self.last.insert(key, port);
                return Some(port);
            }
        }
        None
    }
}

impl Driver {
    /// [`Driver::set_ports`] for requests whose host port may be a range: a request the
    /// endpoint already has a port for (a repeated call) keeps it, the others get the next
    /// free port of their range (fixed ports first, so that a choice never takes one of
    /// them). Fails, changing nothing, when a range has no free port left.
    pub fn publish(
        &self,
        net: &NetworkConfig,
        container_id: &str,
        ifname: &str,
        requests: &[PortRequest],
        chosen: &mut HostPorts,
    ) -> Result<Endpoint, DriverError> {
        let ep = self.existing(net, container_id, ifname)?;
        let fixed: Vec<PortMapping> = requests.iter().filter_map(PortRequest::fixed).collect();
        let ranged: Vec<&PortRequest> = requests.iter().filter(|r| r.fixed().is_none()).collect();
        if ranged.is_empty() {
            return self.set_ports(net, container_id, ifname, &fixed);
        }
        // Ports lost to a concurrent caller since the table was read.
        let mut lost: Vec<PortMapping> = Vec::new();
        for _ in 0..ATTEMPTS {
            let mut taken: Vec<PortMapping> = Firewall::open()?
                .ports()?
                .into_iter()
                .map(|(p, _)| p)
                .chain(ep.ports.iter().copied())
                .chain(lost.iter().copied())
                .collect();
            let mut ports = fixed.clone();
            let mut picked = Vec::new();
            for r in &ranged {
                let kept = ep
                    .ports
                    .iter()
                    .find(|p| r.takes(p) && !ports.iter().any(|q| overlap(p, q)));
                let p = match kept {
                    Some(p) => *p,
                    None => {
                        let free = |port: u16| {
                            let p = r.mapping(port);
                            !ports.iter().chain(&taken).any(|q| overlap(&p, q))
                        };
                        let port = chosen.choose(r, free).ok_or_else(|| {
                            invalid(
                                "publish",
                                r,
                                format!(
                                    "no free host port left in {}-{}",
                                    r.host_ports.0, r.host_ports.1
                                ),
                            )
                        })?;
                        picked.push(r.mapping(port));
                        r.mapping(port)
                    }
                };
                taken.push(p);
                ports.push(p);
            }
            match self.set_ports(net, container_id, ifname, &ports) {
                Err(DriverError::Firewall(FirewallError::PortTaken { port, proto }))
                    if picked
                        .iter()
                        .any(|p| p.host_port == port && p.protocol == proto) =>
                {
                    tracing::info!(port, %proto, "host port taken meanwhile: choosing again");
                    lost.extend(
                        picked
                            .iter()
                            .filter(|p| p.host_port == port && p.protocol == proto),
                    );
                }
                Ok(ep) => {
                    for p in &picked {
                        tracing::info!(
                            endpoint = container_id,
                            port = %p,
                            "host port chosen"
                        );
                    }
                    return Ok(ep);
                }
                Err(e) => return Err(e),
            }
        }
        Err(invalid(
            "publish",
            ranged[0],
            format!("every host port chosen was taken meanwhile ({ATTEMPTS} attempts)"),
        )
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(first: u16, last: u16) -> PortRequest {
        PortRequest {
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: None,
            host_ports: (first, last),
        }
    }

    #[test]
    fn choices_go_round_the_range() {
        let mut c = HostPorts::default();
        let r = req(100, 103);
        assert_eq!(c.choose(&r, |_| true), Some(100));
        assert_eq!(c.choose(&r, |_| true), Some(101));
        // 102 busy: skipped; then around to the start.
        assert_eq!(c.choose(&r, |p| p != 102), Some(103));
        assert_eq!(c.choose(&r, |_| true), Some(100));
        assert_eq!(c.choose(&r, |_| false), None);
        // Another protocol keeps its own place.
        let udp = PortRequest {
            protocol: Protocol::Udp,
            ..r
        };
        assert_eq!(c.choose(&udp, |_| true), Some(100));
        // A range reaching 65535 wraps without overflowing.
        let top = req(65534, 65535);
        assert_eq!(c.choose(&top, |_| true), Some(65534));
        assert_eq!(c.choose(&top, |_| true), Some(65535));
        assert_eq!(c.choose(&top, |_| true), Some(65534));
    }

    #[test]
    fn overlaps_per_address_and_protocol() {
        let all = req(8080, 8080).mapping(8080);
        let on = |ip: &str| PortMapping {
            host_ip: Some(ip.parse().unwrap()),
            ..all
        };
        assert!(overlap(&all, &on("10.0.0.1")));
        assert!(overlap(&on("10.0.0.1"), &on("10.0.0.1")));
        assert!(!overlap(&on("10.0.0.1"), &on("10.0.0.2")));
        let udp = PortMapping {
            protocol: Protocol::Udp,
            ..all
        };
        assert!(!overlap(&all, &udp));
        assert_eq!(req(49153, 65535).to_string(), "49153-65535:80/tcp");
    }
}
