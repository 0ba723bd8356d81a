//! Published ports as users write them: `[HOST_IP:]HOST:CONTAINER[/PROTO]`, with IPv6 host
//! addresses in brackets (Docker's syntax), and the protocols a port may use.

use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub(super) fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub(super) fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(format!(
                "unknown protocol {s:?} (expected tcp, udp or sctp)"
            )),
        }
    }
}

/// A published port: host_port on the host's addresses → the container's address and
/// container_port, in every family the container has an address of (or only in the family
/// of `host_ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Only on this host address (all of the host's addresses, of every family the endpoint
    /// has, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

impl std::str::FromStr for PortMapping {
    type Err = String;
    /// `[HOST_IP:]HOST:CONTAINER[/PROTO]` or `PORT[/PROTO]` (the same port on both sides); an
    /// IPv6 HOST_IP goes in brackets, as in Docker: `[fd00::1]:8080:80/tcp`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (spec, proto) = match s.split_once('/') {
            Some((p, proto)) => (p, proto.parse()?),
            None => (s, Protocol::Tcp),
        };
        let port = |p: &str| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("invalid port {p:?} in {s:?} (expected 1-65535)")),
            }
        };
        let (ip6, ports) = match spec.strip_prefix('[') {
            Some(rest) => {
                let (ip, ports) = rest.split_once("]:").ok_or_else(|| {
                    format!("invalid port mapping {s:?} (expected [IPV6]:HOST:CONTAINER)")
                })?;
                let ip: Ipv6Addr = ip
                    .parse()
                    .map_err(|_| format!("invalid IPv6 host address {ip:?} in {s:?}"))?;
                (Some(IpAddr::V6(ip)), ports)
            }
            None => (None, spec),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host_port, container_port) = match (ip6, parts.as_slice()) {
            (None, [p]) => (None, port(p)?, port(p)?),
            (ip6, [h, c]) => (ip6, port(h)?, port(c)?),
            (None, [ip, h, c]) => (
                Some(IpAddr::V4(ip.parse().map_err(|_| {
                    format!("invalid host address {ip:?} in {s:?} (an IPv6 one goes in brackets)")
                })?)),
                port(h)?,
                port(c)?,
            ),
            _ => {
                return Err(format!(
                    "invalid port mapping {s:?} (expected [HOST_IP:]HOST:CONTAINER[/PROTO], \
                     an IPv6 HOST_IP in brackets)"
                ))
            }
        };
        Ok(PortMapping {
            host_port,
            container_port,
            protocol: proto,
            host_ip,
        })
    }
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host_ip {
            Some(IpAddr::V4(ip)) => write!(f, "{ip}:")?,
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            None => {}
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}
