//! The bridge driver: attach a container namespace to a network's bridge, detach it, and keep
//! the network's host-side state (bridge, gateway address, sysctls, firewall elements).
//!
//! Two jobs, one module each: [`network`] keeps a network's host side (bridge, gateway,
//! forwarding, the network's firewall elements); [`endpoint`] runs an endpoint's lifecycle
//! (attach, detach, check, GC), with [`container`] doing its part inside the container's
//! namespace. This module holds the types they share.

mod container;
mod docker;
mod endpoint;
mod hostport;
mod identity;
mod network;

pub use docker::{mac_of_ipv4, PrepareRequest};
pub use endpoint::GcReport;
pub use hostport::{HostPorts, PortRequest};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::failpoint;
use crate::family::Family;
use crate::firewall::{EndpointAddrs, FirewallError, NetworkRules, PortMapping};
use crate::ipam::{Ipam, IpamError, Pool};
use crate::netlink::{Handle, Mac, NetlinkError};
use crate::netns::NetnsError;
use crate::network::{FamilyConfig, NetworkConfig, NetworkError, StateDir};
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
    #[error(transparent)]
    Policy(#[from] crate::policy::enforce::EnforceError),
    #[error("container {container_id:?} has no interface {ifname:?} on network {network:?}")]
    NoEndpoint {
        network: String,
        container_id: String,
        ifname: String,
    },
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

/// Where one family's address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<A: Family> {
    /// ferrynet's IPAM picks one (or reserves the one given).
    Allocate(Option<A>),
    /// Already allocated elsewhere (an IPAM plugin); ferrynet only configures it.
    External(A::Net),
}

impl<A: Family> Source<A> {
    /// The address the request insists on, if any.
    fn given(&self) -> Option<A> {
        match self {
            Source::Allocate(ip) => *ip,
            Source::External(net) => Some(A::addr(*net)),
        }
    }
}

/// The container's addresses: every family the network has gets one, from ferrynet's IPAM
/// unless the request says otherwise. Asking for an address of a family the network lacks
/// is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRequest {
    pub v4: Source<Ipv4Addr>,
    pub v6: Source<Ipv6Addr>,
}

impl Default for AddressRequest {
    fn default() -> AddressRequest {
        AddressRequest {
            v4: Source::Allocate(None),
            v6: Source::Allocate(None),
        }
    }
}

impl AddressRequest {
    /// Static addresses (at most one per family), the rest allocated.
    pub fn with_ips(ips: &[IpAddr]) -> Result<AddressRequest, NetworkError> {
        let mut req = AddressRequest::default();
        for ip in ips {
            let taken = match ip {
                IpAddr::V4(v4) => matches!(
                    std::mem::replace(&mut req.v4, Source::Allocate(Some(*v4))),
                    Source::Allocate(Some(_))
                ),
                IpAddr::V6(v6) => matches!(
                    std::mem::replace(&mut req.v6, Source::Allocate(Some(*v6))),
                    Source::Allocate(Some(_))
                ),
            };
            if taken {
                return Err(crate::network::invalid(
                    "ip",
                    ip,
                    "is a second address of the same family; give at most one IPv4 and one IPv6 address",
                ));
            }
        }
        Ok(req)
    }
}

/// A route inside the container: `dst` via `gw`, or via the network's gateway of the
/// destination's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

impl RouteSpec {
    /// The default routes of both families; attach keeps those of the families the network
    /// has.
    pub fn defaults() -> Vec<RouteSpec> {
        vec![
            RouteSpec {
                dst: IpNet::V4(Ipv4Net::default()),
                gw: None,
            },
            RouteSpec {
                dst: IpNet::V6(Ipv6Net::default()),
                gw: None,
            },
        ]
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
    /// Routes inside the container (usually the default routes via the gateways).
    pub routes: Vec<RouteSpec>,
    /// Namespace, labels and named ports for network policy (checked before any change).
    pub identity: Option<crate::policy::Identity>,
}

impl AttachRequest {
    /// `eth0` with the next free addresses, default routes via the gateways, no ports.
    pub fn simple(netns: &Path, container_id: &str) -> AttachRequest {
        AttachRequest {
            netns: netns.to_path_buf(),
            container_id: container_id.to_string(),
            ifname: "eth0".into(),
            address: AddressRequest::default(),
            mac: None,
            ports: Vec::new(),
            routes: RouteSpec::defaults(),
            identity: None,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    pub mac: Mac,
    /// The host end's MAC (chosen by ferrynet, so it is known without asking the kernel).
    #[serde(default)]
    pub host_mac: Mac,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_mac: Option<Mac>,
    pub ports: Vec<PortMapping>,
    pub routes: Vec<RouteSpec>,
    /// Whether the IPv4 address belongs to ferrynet's IPAM (and must be released on detach).
    pub ipam: bool,
    /// The same for the IPv6 address.
    #[serde(default)]
    pub ipam6: bool,
    /// Who the endpoint is for network policy (namespace, labels, named ports), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<crate::policy::Identity>,
}

impl Endpoint {
    /// The container's link-local address (IPv6 networks only): derived from its MAC, added
    /// by ferrynet without DAD, the only other IPv6 source the port may use.
    pub fn link_local(&self) -> Option<Ipv6Addr> {
        self.ip6.map(|_| self.mac.link_local())
    }

    /// The addresses the firewall's elements point at.
    pub fn addrs(&self) -> EndpointAddrs {
        EndpointAddrs {
            v4: self.ip.map(|n| n.addr()),
            v6: self.ip6.map(|n| n.addr()),
        }
    }
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
    match Handle::new() {
        Ok(mut h) => default_mtu_in(&mut h),
        Err(_) => crate::network::DEFAULT_MTU,
    }
}

/// [`default_mtu`] over an open handle. It reads the whole routing table (one route per peer
/// host on an agent's host): call it when a bridge is created, never per container.
pub fn default_mtu_in(h: &mut Handle) -> u32 {
    let mut probe = || -> Result<Option<u32>, NetlinkError> {
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

/// The addresses one family of a network hands out.
pub fn pool_of<A: Family>(f: &FamilyConfig<A>) -> Pool<A> {
    let mut pool = Pool::new(f.subnet, Some(f.gateway));
    if let Some(start) = f.range_start {
        pool.start = pool.start.max(start);
    }
    if let Some(end) = f.range_end {
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

    /// The network's IPv4 reservations. Also for a network without IPv4 (now): releasing and
    /// collecting go by key and need no pool, so a configuration that changed between attach
    /// and detach still gives back what attach took.
    fn ipam4(&self, net: &NetworkConfig) -> Ipam<Ipv4Addr> {
        let pool = net
            .v4
            .map_or(Pool::new(Ipv4Net::default(), None), |f| pool_of(&f));
        Ipam::new(&self.state.ipam_dir(&net.name), pool)
    }

    /// The network's IPv6 reservations, in their own directory inside the IPv4 one.
    fn ipam6(&self, net: &NetworkConfig) -> Ipam<Ipv6Addr> {
        let pool = net
            .v6
            .map_or(Pool::new(Ipv6Net::default(), None), |f| pool_of(&f));
        Ipam::new(&self.state.ipam_dir(&net.name).join("v6"), pool)
    }

    fn record_path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.state
            .endpoints_dir(network)
            .join(format!("{}.json", endpoint_key(container_id, ifname)))
    }

    fn rules(net: &NetworkConfig) -> NetworkRules {
        NetworkRules {
            bridge: net.bridge.clone(),
            subnet: net.v4.map(|f| f.subnet),
            subnet6: net.v6.map(|f| f.subnet),
            masquerade: net.masquerade,
            isolate: net.isolate,
        }
    }
}
