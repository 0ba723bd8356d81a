//! The bridge driver: attach a container namespace to a network's bridge, detach it, and keep
//! the network's host-side state (bridge, gateway address, sysctls, firewall elements).
//!
//! Two jobs, one module each: [`network`] keeps a network's host side (bridge, gateway,
//! forwarding, the network's firewall elements); [`endpoint`] runs an endpoint's lifecycle
//! (attach, detach, check, GC), with [`container`] doing its part inside the container's
//! namespace. This module holds the types they share.

mod container;
mod endpoint;
mod network;

pub use endpoint::GcReport;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::failpoint;
use crate::firewall::{FirewallError, NetworkRules, PortMapping};
use crate::ipam::{Ipam, IpamError, Pool};
use crate::netlink::{Handle, Mac, NetlinkError};
use crate::netns::NetnsError;
use crate::network::{NetworkConfig, NetworkError, StateDir};
use crate::util::fnv1a64;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error("{step}: {source}")]
    Netlink {
        step: &'static str,
        #[source]
        source: NetlinkError,
    },
    #[error("container {container_id:?} already has interface {ifname:?} on network {network:?}")]
    AlreadyAttached {
        network: String,
        container_id: String,
        ifname: String,
    },
    #[error("interface {ifname:?} already exists in {netns}")]
    IfnameTaken { ifname: String, netns: PathBuf },
    #[error("state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Failpoint(#[from] failpoint::Triggered),
    #[error("detach finished with errors: {0}")]
    Detach(String),
}

fn nl(step: &'static str) -> impl FnOnce(NetlinkError) -> DriverError {
    move |source| DriverError::Netlink { step, source }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DriverError + '_ {
    move |source| DriverError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the container's address comes from.
#[derive(Debug, Clone)]
pub enum AddressRequest {
    /// ferrynet's IPAM picks one (or reserves the one given).
    Allocate(Option<Ipv4Addr>),
    /// Already allocated elsewhere (an IPAM plugin); ferrynet only configures it.
    External(Ipv4Net),
}

/// A route inside the container: `dst` via `gw`, or via the network's gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub dst: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<Ipv4Addr>,
}

impl RouteSpec {
    pub fn default_route() -> RouteSpec {
        RouteSpec {
            dst: Ipv4Net::default(),
            gw: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub netns: PathBuf,
    pub container_id: String,
    pub ifname: String,
    pub address: AddressRequest,
    pub mac: Option<Mac>,
    pub ports: Vec<PortMapping>,
    /// Routes inside the container (usually just the default route via the gateway).
    pub routes: Vec<RouteSpec>,
}

impl AttachRequest {
    /// `eth0` with the next free address, a default route via the gateway, no ports.
    pub fn simple(netns: &Path, container_id: &str) -> AttachRequest {
        AttachRequest {
            netns: netns.to_path_buf(),
            container_id: container_id.to_string(),
            ifname: "eth0".into(),
            address: AddressRequest::Allocate(None),
            mac: None,
            ports: Vec::new(),
            routes: vec![RouteSpec::default_route()],
        }
    }
}

/// One container interface on a network. On disk it is the plan, written once before the
/// first kernel change; the ifindexes are known only after the change and are reported live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: PathBuf,
    pub host_veth: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifindex: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_ifindex: Option<u32>,
    pub ip: Option<Ipv4Net>,
    pub gateway: Ipv4Addr,
    pub mac: Mac,
    /// The host end's MAC (chosen by ferrynet, so it is known without asking the kernel).
    #[serde(default)]
    pub host_mac: Mac,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_mac: Option<Mac>,
    pub ports: Vec<PortMapping>,
    pub routes: Vec<RouteSpec>,
    /// Whether the address belongs to ferrynet's IPAM (and must be released on detach).
    pub ipam: bool,
}

/// The host-side veth name: derived from the endpoint's identity, so that cleanup finds it
/// even when the record of it was never completed.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    let h = fnv1a64(format!("{network}\0{container_id}\0{ifname}").as_bytes());
    format!("vf{:012x}", h & 0xffff_ffff_ffff)
}

pub fn endpoint_key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}:{ifname}")
}

/// The MTU of the interface holding the default route, or 1500.
pub fn default_mtu() -> u32 {
    let probe = || -> Result<Option<u32>, NetlinkError> {
        let mut h = Handle::new()?;
        let oif = h
            .routes()?
            .into_iter()
            .find(|r| r.dst.prefix_len() == 0)
            .and_then(|r| r.oif);
        match oif {
            Some(i) => Ok(h.link_by_index(i)?.map(|l| l.mtu)),
            None => Ok(None),
        }
    };
    probe()
        .ok()
        .flatten()
        .unwrap_or(crate::network::DEFAULT_MTU)
}

/// The addresses a network hands out.
pub fn pool_of(net: &NetworkConfig) -> Pool<Ipv4Addr> {
    let mut pool = Pool::new(net.subnet, Some(net.gateway));
    if let Some(start) = net.range_start {
        pool.start = pool.start.max(start);
    }
    if let Some(end) = net.range_end {
        pool.end = pool.end.min(end);
    }
    pool
}

pub struct Driver {
    state: StateDir,
}

impl Driver {
    pub fn new(state: StateDir) -> Driver {
        Driver { state }
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    fn ipam(&self, net: &NetworkConfig) -> Ipam<Ipv4Addr> {
        Ipam::new(&self.state.ipam_dir(&net.name), pool_of(net))
    }

    fn record_path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.state
            .endpoints_dir(network)
            .join(format!("{}.json", endpoint_key(container_id, ifname)))
    }

    fn rules(net: &NetworkConfig) -> NetworkRules {
        NetworkRules {
            bridge: net.bridge.clone(),
            subnet: net.subnet,
            masquerade: net.masquerade,
            isolate: net.isolate,
        }
    }
}
