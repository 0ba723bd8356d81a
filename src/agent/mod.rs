//! The host agent: lease this host's subnet, publish how to reach it, and keep the data plane
//! in line with every other host's lease. It survives store outages by keeping the data plane
//! as it is and retrying; it never flushes anything on start or stop.
//!
//! [`run`] reads as its steps: check everything, acquire the lease, set up the data plane,
//! serve metrics, then reconcile until stopped ([`reconcile`]) and leave.

mod policy;
mod reconcile;
mod uplink;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use tracing::{info, warn};

use crate::backend::{Dataplane, Local, Peer};
use crate::bgp::{BgpConfig, Site, Speaker};
use crate::cluster::{self, BackendKind, ClusterConfig, Lease, LeaseAttrs, Store, StoreError};
use crate::firewall::{Firewall, FirewallError};
use crate::metrics::Metrics;
use crate::netlink::{Handle, Mac, NetlinkError};
use reconcile::Reconciler;
use uplink::{find_uplink6, preflight, Uplink};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Uplink(String),
    #[error("netlink: {0}")]
    Netlink(#[from] NetlinkError),
    /// `--log-drops` cannot read the drop log.
    #[error("--log-drops: NFLOG group {group}: {source}")]
    DropLog {
        group: u16,
        #[source]
        source: NetlinkError,
    },
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub store: String,
    /// Key prefix in etcd.
    pub prefix: String,
    pub etcd_tls: Option<cluster::EtcdTls>,
    pub cluster: ClusterConfig,
    pub iface: Option<String>,
    pub public_ip: Option<Ipv4Addr>,
    /// This host's IPv6 underlay address (dual-stack clusters) [default: the uplink's first
    /// global IPv6 address, if it has one].
    pub public_ip6: Option<Ipv6Addr>,
    pub node_name: String,
    pub lease_ttl: Duration,
    pub subnet_file: PathBuf,
    pub release_on_exit: bool,
    pub vni: u32,
    pub port: u16,
    /// Full reconcile even without a change in the store.
    pub resync: Duration,
    /// Serve Prometheus metrics here.
    pub metrics: Option<std::net::SocketAddr>,
    /// Speak BGP through BIRD (backend bgp, or auto preferring BGP routes where they exist).
    pub bgp: Option<BgpConfig>,
    /// The host's ferrynet state: its endpoints are published for network policy and its
    /// policy table is kept current (`None`: no policy, as in the bench's labs).
    pub state: Option<crate::network::StateDir>,
    /// Log every packet denied by a policy that logs its drops (NFLOG group
    /// [`crate::policy::droplog::LOG_GROUP`]).
    pub log_drops: bool,
}

/// The agent; returns when `stop` is set (SIGTERM), or on an error at start.
pub fn run(cfg: &AgentConfig, stop: &AtomicBool) -> Result<(), AgentError> {
    // Everything that can be refused is, before the store or the kernel is touched.
    let mut h = Handle::new()?;
    let uplink = preflight(cfg, &mut h)?;
    let mut store = cluster::open(&cfg.store, &cfg.prefix, cfg.etcd_tls.as_ref())?;
    let cluster = join_cluster(cfg, &mut *store)?;
    let (attrs, lease) = acquire_lease(cfg, &mut h, &mut *store, &cluster, &uplink)?;
    let dataplane = set_up_dataplane(cfg, &mut h, &cluster, &uplink, &attrs, &lease)?;
    let metrics = serve_metrics(cfg, &lease)?;
    if cfg.log_drops {
        policy::log_drops()?;
    }
    let mut agent = Reconciler::new(cfg, store, cluster, attrs, lease, dataplane, h, metrics);
    agent.run_until(stop)?;
    agent.leave();
    info!("stopped; the data plane is left as it is");
    Ok(())
}

/// Writes the cluster's configuration if this is the first agent, else checks ours against it.
fn join_cluster(cfg: &AgentConfig, store: &mut dyn Store) -> Result<ClusterConfig, AgentError> {
    let cluster = store.init_config(&cfg.cluster)?;
    if cluster.backend == BackendKind::Bgp && cfg.bgp.is_none() {
        return Err(AgentError::Uplink(
            "the cluster's backend is bgp: this agent needs its BGP settings".into(),
        ));
    }
    Ok(cluster)
}

/// This host's lease: its previous subnet if it has one (by node name, then by subnet file),
/// else the first free one; published with how to reach this host.
fn acquire_lease(
    cfg: &AgentConfig,
    h: &mut Handle,
    store: &mut dyn Store,
    cluster: &ClusterConfig,
    uplink: &Uplink,
) -> Result<(LeaseAttrs, Lease), AgentError> {
    let public_ip6 = match (cluster.network6, cluster.vxlan_ipv6_underlay) {
        (None, false) => None,
        _ => find_uplink6(h, cfg, uplink.index)?,
    };
    let attrs = LeaseAttrs {
        node: cfg.node_name.clone(),
        public_ip: uplink.ip,
        public_ip6,
        backend: cluster.backend,
        vtep_mac: Some(vtep_mac(cfg)),
        bgp_as: cfg.bgp.as_ref().map(|b| b.local_as),
    };
    let preferred = read_subnet_file(&cfg.subnet_file);
    let lease = store.acquire(cluster, &attrs, preferred, cfg.lease_ttl)?;
    info!(
        "node {} ({}) leased {} of {} [{:?}]",
        cfg.node_name,
        uplink.ip,
        leased(&lease),
        cluster.network,
        cluster.backend
    );
    Ok((attrs, lease))
}

/// The VTEP's MAC, derived from the node: stable across restarts, so peers' FDB entries stay
/// right.
fn vtep_mac(cfg: &AgentConfig) -> Mac {
    Mac::from_seed(&format!("ferrynet-vtep/{}", cfg.node_name))
}

/// The VXLAN device and BIRD as the backend needs them, forwarding, the cluster ranges'
/// masquerade exemption, and the subnet file the CNI plugin reads.
fn set_up_dataplane(
    cfg: &AgentConfig,
    h: &mut Handle,
    cluster: &ClusterConfig,
    uplink: &Uplink,
    attrs: &LeaseAttrs,
    lease: &Lease,
) -> Result<Dataplane, AgentError> {
    let mut dataplane = Dataplane::new(
        cluster.backend,
        Local {
            subnet: lease.subnet,
            public_ip: uplink.ip,
            subnet6: lease.subnet6,
            public_ip6: attrs.public_ip6,
            uplink_index: uplink.index,
            uplink_mtu: uplink.mtu,
            vtep_mac: vtep_mac(cfg),
        },
        cfg.vni,
        cfg.port,
    );
    if cluster.vxlan_ipv6_underlay {
        dataplane = dataplane.with_ipv6_underlay();
    }
    if let Some(bgp) = &cfg.bgp {
        let name = h
            .link_by_index(uplink.index)?
            .map(|l| l.name)
            .ok_or_else(|| AgentError::Uplink(format!("ifindex {} vanished", uplink.index)))?;
        let site = Site {
            node: cfg.node_name.clone(),
            address: uplink.ip,
            uplink: name,
            subnet: lease.subnet,
            cluster: cluster.network,
            address6: attrs.public_ip6,
            subnet6: lease.subnet6,
            cluster6: cluster.network6,
        };
        dataplane = dataplane.with_speaker(Speaker::new(bgp.clone(), site));
    }
    dataplane.setup(h)?;
    if !h.ipv4_forwarding()? {
        crate::netns::write_sysctl("net/ipv4/ip_forward", "1").map_err(|source| {
            AgentError::Io {
                path: "/proc/sys/net/ipv4/ip_forward".into(),
                source,
            }
        })?;
    }
    if cluster.network6.is_some() && !h.ipv6_forwarding()? {
        crate::netns::enable_ipv6_forwarding().map_err(|source| AgentError::Io {
            path: "/proc/sys/net/ipv6/conf/all/forwarding".into(),
            source,
        })?;
    }
    let mut fw = Firewall::open()?;
    fw.ensure_cluster_range(cluster.network)?;
    if let Some(range6) = cluster.network6 {
        fw.ensure_cluster_range6(range6)?;
    }
    write_subnet_file(cfg, lease, dataplane.mtu())?;
    Ok(dataplane)
}

/// The metrics, served on `--metrics` if given.
fn serve_metrics(cfg: &AgentConfig, lease: &Lease) -> Result<Arc<Metrics>, AgentError> {
    let metrics = Arc::new(Metrics::default());
    metrics.store_up.store(1, Ordering::Relaxed);
    if let Ok(mut s) = metrics.subnet.lock() {
        *s = leased(lease);
    }
    if let Ok(mut s) = metrics.policy_state.lock() {
        s.clone_from(&cfg.state);
    }
    if let Some(addr) = cfg.metrics {
        let bound =
            crate::metrics::serve(addr, metrics.clone()).map_err(|source| AgentError::Io {
                path: format!("metrics listener {addr}").into(),
                source,
            })?;
        info!("metrics on http://{bound}/metrics");
    }
    Ok(metrics)
}

fn read_subnet_file(path: &std::path::Path) -> Option<Ipv4Net> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("FERRYNET_SUBNET="))
        .and_then(|v| v.trim().parse::<Ipv4Net>().ok())
}

fn write_subnet_file(cfg: &AgentConfig, lease: &Lease, mtu: u32) -> Result<(), AgentError> {
    let mut text = format!(
        "FERRYNET_NETWORK={}\nFERRYNET_SUBNET={}\n",
        cfg.cluster.network, lease.subnet
    );
    if let (Some(net6), Some(subnet6)) = (cfg.cluster.network6, lease.subnet6) {
        text.push_str(&format!(
            "FERRYNET_NETWORK6={net6}\nFERRYNET_SUBNET6={subnet6}\n"
        ));
    }
    text.push_str(&format!("FERRYNET_MTU={mtu}\nFERRYNET_IPMASQ=true\n"));
    let io = |source| AgentError::Io {
        path: cfg.subnet_file.clone(),
        source,
    };
    if let Some(dir) = cfg.subnet_file.parent() {
        crate::util::ensure_dir(dir).map_err(io)?;
    }
    crate::util::write_atomic(&cfg.subnet_file, text.as_bytes()).map_err(io)
}

/// The leases worth routing to; anything malformed or hostile is logged and skipped.
fn peers_of(cluster: &ClusterConfig, own: &Lease, leases: &[Lease]) -> Vec<Peer> {
    leases
        .iter()
        .filter(|l| l.attrs.node != own.attrs.node)
        .filter(|l| match cluster::routable(cluster, Some(own), l) {
            Ok(()) => true,
            Err(why) => {
                warn!("ignoring lease {} of {}: {why}", l.subnet, l.attrs.node);
                false
            }
        })
        .map(|l| Peer {
            node: l.attrs.node.clone(),
            subnet: l.subnet,
            public_ip: l.attrs.public_ip,
            // The IPv6 subnet only where this cluster has IPv6 (routable checked it).
            subnet6: cluster.network6.and(l.subnet6),
            public_ip6: l.attrs.public_ip6,
            vtep_mac: l.attrs.vtep_mac,
            bgp_as: l.attrs.bgp_as,
        })
        .collect()
}

/// A lease's subnets as the logs and metrics show them: `10.244.1.0/24,fd00:244:0:1::/64`.
fn leased(lease: &Lease) -> String {
    match lease.subnet6 {
        Some(s6) => format!("{},{s6}", lease.subnet),
        None => lease.subnet.to_string(),
    }
}
