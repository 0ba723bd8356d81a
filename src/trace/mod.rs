//! `ferrynet trace`: the path a packet takes, hop by hop, read from the kernel as it is now.
//!
//! Every hop is the kernel's own answer to one question — the route it picks (RTM_GETROUTE,
//! also as a forwarded packet with its incoming interface), the neighbour entry for the next
//! hop, the bridge port its FDB sends a MAC to, the VXLAN FDB entry, the nftables element a
//! rule looks up — never a reimplementation of routing. ferrynet's records only name things
//! (which container a namespace is) and are checked against the kernel: where they disagree
//! the trace says so. Each question is a single lookup, so a trace costs the same on a host
//! with one container or a thousand.
//!
//! [`hosts`] finds the namespaces involved (the host the command runs in, peer hosts given
//! with `--host`, containers by id, namespace name or address); [`walk`] follows the packet;
//! [`render`] prints it.

mod hosts;
mod policy;
mod probe;
mod render;
mod walk;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;

use crate::network::StateDir;

pub use hosts::{HostView, Hosts};
pub use probe::{ProbeEvent, ProbeReport};
pub use render::render;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{0}")]
    BadTarget(String),
    #[error("no container {0:?}: not a container id, a namespace under /run/netns, or an address of a container")]
    UnknownContainer(String),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: crate::netlink::NetlinkError,
    },
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error(transparent)]
    Firewall(#[from] crate::firewall::FirewallError),
    #[error("lease store: {0}")]
    Store(String),
    #[error("--probe: {0}")]
    Probe(String),
}

pub(crate) fn nl(
    what: impl Into<String>,
) -> impl FnOnce(crate::netlink::NetlinkError) -> TraceError {
    let what = what.into();
    move |source| TraceError::Netlink { what, source }
}

/// The transport a trace follows: ICMP echo without a port, TCP by default with one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Icmp,
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Icmp => "icmp",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// What one end of a trace names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A container id or a namespace name (resolved against records and /run/netns).
    Name(String),
    /// An address: a container's, or one outside.
    Ip(IpAddr),
    /// `host`: the host's own address (with a port: a published port).
    Host,
}

/// One end as written: `c1`, `10.90.0.3`, `10.90.0.3:80/tcp`, `[fd00::3]:53/udp`,
/// `host:8080`, `c2:80/udp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub target: Target,
    pub port: Option<u16>,
    pub proto: Option<Proto>,
}

impl FromStr for Spec {
    type Err = TraceError;

    fn from_str(s: &str) -> Result<Spec, TraceError> {
        let bad = |why: &str| TraceError::BadTarget(format!("{s:?}: {why}"));
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if !s.contains(':') && s.contains(['/', ' ']) {
            return Err(bad("not a container id, namespace name or address"));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Spec {
                target: Target::Ip(ip),
                port: None,
                proto: None,
            });
        }
        let (rest, proto) = match s.rsplit_once('/') {
            Some((r, "tcp")) => (r, Some(Proto::Tcp)),
            Some((r, "udp")) => (r, Some(Proto::Udp)),
            Some((_, p)) => return Err(bad(&format!("protocol {p:?} is not tcp or udp"))),
            None => (s, None),
        };
        let (name, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, port) = v6
                .split_once("]:")
                .ok_or_else(|| bad("write an IPv6 address with a port as [ADDR]:PORT"))?;
            (addr, Some(port))
        } else {
            match rest.rsplit_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad(&format!("port {p:?} is not 1-65535"))),
                Ok(p) => Some(p),
            },
            None => None,
        };
        if proto.is_some() && port.is_none() {
            return Err(bad("a protocol needs a port"));
        }
        let target = if name == "host" {
            Target::Host
        } else if let Ok(ip) = name.parse::<IpAddr>() {
            Target::Ip(ip)
        } else if name.is_empty() || name.contains(['/', ' ']) {
            return Err(bad("not a container id, namespace name or address"));
        } else {
            Target::Name(name.to_string())
        };
        Ok(Spec {
            target,
            port,
            proto: proto.or(port.map(|_| Proto::Tcp)),
        })
    }
}

/// What to trace, and where to look.
#[derive(Debug, Clone)]
pub struct TraceRequest {
    pub from: Spec,
    pub to: Spec,
    /// Only this family (4 or 6); every family both ends have otherwise.
    pub family: Option<u8>,
    /// A packet size to check against every MTU on the way.
    pub size: Option<u32>,
    /// Peer host namespaces (`--host`): a name under /run/netns or a path.
    pub hosts: Vec<PathBuf>,
    /// The lease store (`file:PATH`, `etcd://...`), to name the hosts subnets belong to.
    pub store: Option<String>,
    /// Also send one real packet and report the rules it met.
    pub probe: bool,
}

/// Which kind of kernel object a hop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HopKind {
    Interface,
    Route,
    Neighbour,
    Veth,
    BridgePort,
    Fdb,
    Filter,
    Nat,
    Vxlan,
    Underlay,
    Delivery,
}

impl fmt::Display for HopKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HopKind::Interface => "interface",
            HopKind::Route => "route",
            HopKind::Neighbour => "neighbour",
            HopKind::Veth => "veth",
            HopKind::BridgePort => "bridge port",
            HopKind::Fdb => "fdb",
            HopKind::Filter => "filter",
            HopKind::Nat => "nat",
            HopKind::Vxlan => "vxlan",
            HopKind::Underlay => "underlay",
            HopKind::Delivery => "delivery",
        })
    }
}

/// One step of the path: where it happens, which kernel object carries the packet, and the
/// evidence read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// The namespace: a container's name, `host`, or a peer host's name.
    pub at: String,
    pub kind: HopKind,
    /// The object, as `ip`/`bridge`/`nft` would show it.
    pub object: String,
    /// What the kernel said about it, when there is more to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Structured facts for machines (ifindex, MAC, addresses ...).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub facts: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// Reached the destination (a container's interface, or the host's uplink towards an
    /// address outside every namespace the trace can see).
    Delivered { to: String },
    /// Stopped: at which hop (index into `hops`) and why.
    Dropped { hop: usize, reason: String },
}

/// The answer for one family.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub from: String,
    pub to: String,
    pub family: u8,
    pub proto: Proto,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub src: Option<IpAddr>,
    pub dst: IpAddr,
    pub hops: Vec<Hop>,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Where ferrynet's records and the kernel disagree, or the kernel's state is not what
    /// a working path needs, also off this packet's path.
    pub inconsistencies: Vec<String>,
    /// What one real packet met (`--probe`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeReport>,
}

/// Traces `req` for every family it applies to.
pub fn trace(req: &TraceRequest, state: &StateDir) -> Result<Vec<Trace>, TraceError> {
    let mut hosts = Hosts::open(&req.hosts, req.store.as_deref(), state.clone())?;
    walk::run(&mut hosts, req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Spec {
        s.parse().unwrap()
    }

    #[test]
    fn ends_parse_as_users_write_them() {
        assert_eq!(spec("c1").target, Target::Name("c1".into()));
        assert_eq!(spec("c1").port, None);
        let s = spec("10.201.0.2:80/tcp");
        assert_eq!(s.target, Target::Ip("10.201.0.2".parse().unwrap()));
        assert_eq!((s.port, s.proto), (Some(80), Some(Proto::Tcp)));
        let s = spec("[fd00::3]:53/udp");
        assert_eq!(s.target, Target::Ip("fd00::3".parse().unwrap()));
        assert_eq!((s.port, s.proto), (Some(53), Some(Proto::Udp)));
        assert_eq!(
            spec("fd00::3").target,
            Target::Ip("fd00::3".parse().unwrap())
        );
        let s = spec("host:8080");
        assert_eq!(
            (s.target, s.port, s.proto),
            (Target::Host, Some(8080), Some(Proto::Tcp))
        );
        let s = spec("c2:81/udp");
        assert_eq!(s.target, Target::Name("c2".into()));
        assert_eq!(s.proto, Some(Proto::Udp));
    }

    #[test]
    fn bad_ends_say_what_is_wrong() {
        for (s, why) in [
            ("", "empty"),
            ("c1:0", "not 1-65535"),
            ("c1:http", "not 1-65535"),
            ("c1:80/sctp", "not tcp or udp"),
            ("[fd00::1]80", "[ADDR]:PORT"),
            ("/tmp/x", "not a container id"),
        ] {
            let e = s.parse::<Spec>().unwrap_err().to_string();
            assert!(e.contains(why), "{s:?}: {e}");
        }
    }
}
