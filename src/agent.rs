//! The host agent: lease this host's subnet, publish how to reach it, and keep the data plane
//! in line with every other host's lease. It survives store outages by keeping the data plane
//! as it is and retrying; it never flushes anything on start or stop.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tracing::{info, warn};

use crate::backend::{Dataplane, Local, Peer};
use crate::bgp::{BgpConfig, Site, Speaker};
use crate::cluster::{self, BackendKind, ClusterConfig, Lease, LeaseAttrs, Store, StoreError};
use crate::firewall::{Firewall, FirewallError};
use crate::metrics::Metrics;
use crate::netlink::{Handle, Mac, NetlinkError};
use crate::network::NetworkError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Uplink(String),
    #[error("netlink: {0}")]
    Netlink(#[from] NetlinkError),
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
}

/// The interface and address that reach the other hosts: `--public-ip`, `--iface`, or the
/// default route's interface.
fn find_uplink(h: &mut Handle, cfg: &AgentConfig) -> Result<(u32, Ipv4Addr, u32), AgentError> {
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
    Ok((index, ip, mtu))
}

/// This host's IPv6 underlay address: `--public-ip` of IPv6 (which must be one of the host's
/// addresses), else the uplink's first global IPv6 address; `None` without one (VXLAN still
/// carries IPv6; host-gw and BGP cannot route IPv6 to this host).
fn find_uplink6(
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

/// The checks of the agent's settings against themselves and the host, with no change made:
/// returns the uplink (ifindex, address, MTU).
fn preflight(cfg: &AgentConfig, h: &mut Handle) -> Result<(u32, Ipv4Addr, u32), AgentError> {
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
    Ok(uplink)
}

/// The largest VXLAN network identifier (24 bits).
const MAX_VNI: u32 = (1 << 24) - 1;

/// The agent's loop; returns when `stop` is set (SIGTERM), or on an error at start.
pub fn run(cfg: &AgentConfig, stop: &AtomicBool) -> Result<(), AgentError> {
    // Everything that can be refused is, before the store or the kernel is touched.
    let mut h = Handle::new()?;
    let (uplink_index, public_ip, uplink_mtu) = preflight(cfg, &mut h)?;
    let mut store = cluster::open(&cfg.store, &cfg.prefix, cfg.etcd_tls.as_ref())?;
    let cluster = store.init_config(&cfg.cluster)?;
    if cluster.backend == BackendKind::Bgp && cfg.bgp.is_none() {
        return Err(AgentError::Uplink(
            "the cluster's backend is bgp: this agent needs its BGP settings".into(),
        ));
    }
    let public_ip6 = match cluster.network6 {
        Some(_) => find_uplink6(&mut h, cfg, uplink_index)?,
        None => None,
    };
    let vtep_mac = Mac::from_seed(&format!("ferrynet-vtep/{}", cfg.node_name));
    let attrs = LeaseAttrs {
        node: cfg.node_name.clone(),
        public_ip,
        public_ip6,
        backend: cluster.backend,
        vtep_mac: Some(vtep_mac),
        bgp_as: cfg.bgp.as_ref().map(|b| b.local_as),
    };
    let preferred = read_subnet_file(&cfg.subnet_file);
    let mut lease = store.acquire(&cluster, &attrs, preferred, cfg.lease_ttl)?;
    info!(
        "node {} ({public_ip}) leased {} of {} [{:?}]",
        cfg.node_name,
        leased(&lease),
        cluster.network,
        cluster.backend
    );

    let mut dataplane = Dataplane::new(
        cluster.backend,
        Local {
            subnet: lease.subnet,
            public_ip,
            subnet6: lease.subnet6,
            public_ip6,
            uplink_index,
            uplink_mtu,
            vtep_mac,
        },
        cfg.vni,
        cfg.port,
    );
    if let Some(bgp) = &cfg.bgp {
        let uplink = h
            .link_by_index(uplink_index)?
            .map(|l| l.name)
            .ok_or_else(|| AgentError::Uplink(format!("ifindex {uplink_index} vanished")))?;
        let site = Site {
            node: cfg.node_name.clone(),
            address: public_ip,
            uplink,
            subnet: lease.subnet,
            cluster: cluster.network,
            address6: public_ip6,
            subnet6: lease.subnet6,
            cluster6: cluster.network6,
        };
        dataplane = dataplane.with_speaker(Speaker::new(bgp.clone(), site));
    }
    dataplane.setup(&mut h)?;
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
    drop(fw);
    write_subnet_file(cfg, &lease, dataplane.mtu())?;

    let metrics = std::sync::Arc::new(Metrics::default());
    metrics.store_up.store(1, Ordering::Relaxed);
    if let Ok(mut s) = metrics.subnet.lock() {
        *s = leased(&lease);
    }
    if let Some(addr) = cfg.metrics {
        let bound =
            crate::metrics::serve(addr, metrics.clone()).map_err(|source| AgentError::Io {
                path: format!("metrics listener {addr}").into(),
                source,
            })?;
        info!("metrics on http://{bound}/metrics");
    }

    // auto hands a peer to BGP once BIRD has a route for it: look often, BIRD's routes come
    // and go without the store changing.
    let resync_every = if cluster.backend == BackendKind::Auto && dataplane.speaker().is_some() {
        cfg.resync.min(Duration::from_secs(2))
    } else {
        cfg.resync
    };
    let renew_every = cfg.lease_ttl / 3;
    let mut renew_at = Instant::now() + renew_every;
    let mut resync_at = Instant::now();
    let mut revision = u64::MAX;
    let mut backoff = Duration::from_millis(200);
    let mut store_ok = true;
    let mut last_refused = Vec::new();
    // The same failure repeating (e.g. an external BIRD that is down) is logged once.
    let mut last_error: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        let wait =
            Duration::from_millis(500).min(renew_at.saturating_duration_since(Instant::now()));
        let snapshot = match store.wait_for_change(revision, wait) {
            Ok(s) => {
                metrics.store_up.store(1, Ordering::Relaxed);
                if !store_ok {
                    info!("store reachable again");
                    store_ok = true;
                    backoff = Duration::from_millis(200);
                }
                s
            }
            Err(e) => {
                if store_ok {
                    warn!("{e}; keeping the data plane as it is and retrying");
                    store_ok = false;
                }
                sleep_unless(stop, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if Instant::now() >= renew_at && crate::failpoint::hit("agent.renew").is_ok() {
            match renew_or_reacquire(&mut *store, &cluster, &attrs, &lease, cfg.lease_ttl) {
                Ok(l) => {
                    metrics.lease_renewals.fetch_add(1, Ordering::Relaxed);
                    if l.subnet != lease.subnet {
                        warn!(
                            "lease on {} lost; now holding {}: republishing",
                            lease.subnet, l.subnet
                        );
                        if let Err(e) = move_to(cfg, &mut h, &mut dataplane, &l, &metrics) {
                            warn!("moving to {}: {e}; retrying", l.subnet);
                        }
                        revision = u64::MAX;
                    }
                    lease = l;
                    renew_at = Instant::now() + renew_every;
                }
                Err(e) => warn!("renewing the lease: {e}; retrying"),
            }
        }
        if dataplane.speaker().is_some_and(|s| !s.alive()) {
            if revision != u64::MAX {
                warn!("BIRD is not running; starting it again");
            }
            revision = u64::MAX;
        }
        if snapshot.revision == revision && Instant::now() < resync_at {
            continue;
        }
        let peers = peers_of(&cluster, &lease, &snapshot.leases);
        let reconciled = crate::failpoint::hit("agent.reconcile")
            .map_err(|e| e.to_string())
            .and_then(|_| {
                dataplane
                    .reconcile(&mut h, &peers)
                    .map_err(|e| e.to_string())
            });
        match reconciled {
            Ok(report) => {
                if last_error.take().is_some() {
                    info!("reconciled again");
                }
                metrics.reconciles.fetch_add(1, Ordering::Relaxed);
                metrics
                    .peers_vxlan
                    .store(report.vxlan_peers as u64, Ordering::Relaxed);
                metrics
                    .peers_direct
                    .store(report.direct_peers as u64, Ordering::Relaxed);
                metrics
                    .peers_bgp
                    .store(report.bgp_peers as u64, Ordering::Relaxed);
                metrics
                    .peers_refused
                    .store(report.refused.len() as u64, Ordering::Relaxed);
                metrics
                    .dataplane_changes
                    .fetch_add(report.changes as u64, Ordering::Relaxed);
                revision = snapshot.revision;
                resync_at = Instant::now() + resync_every;
                if report.changes > 0 {
                    info!(
                        "{} peers ({} via vxlan, {} direct, {} via bgp): {} changes",
                        peers.len(),
                        report.vxlan_peers,
                        report.direct_peers,
                        report.bgp_peers,
                        report.changes
                    );
                }
                if report.refused != last_refused {
                    for r in &report.refused {
                        warn!("refused peer {r}");
                    }
                    last_refused = report.refused;
                }
            }
            Err(e) => {
                metrics.reconcile_errors.fetch_add(1, Ordering::Relaxed);
                if last_error.as_deref() != Some(e.as_str()) {
                    warn!("reconcile failed: {e}; retrying");
                    last_error = Some(e);
                }
                revision = u64::MAX;
                h = Handle::new()?;
                sleep_unless(stop, Duration::from_millis(200));
            }
        }
    }
    if cfg.release_on_exit {
        match store.release(&lease) {
            Ok(()) => info!("released {}", lease.subnet),
            Err(e) => warn!("releasing {}: {e}", lease.subnet),
        }
        // Leaving for good: BIRD closes its sessions, so peers drop this host's routes now.
        if let Some(s) = dataplane.speaker() {
            match s.shutdown() {
                Ok(()) => info!("BIRD stopped"),
                Err(e) => warn!("stopping BIRD: {e}"),
            }
        }
    }
    info!("stopped; the data plane is left as it is");
    Ok(())
}

/// Points everything at a new subnet: the VXLAN device's address, the subnet file the CNI
/// plugin reads (new containers), what BIRD announces (next reconcile), the metrics.
/// Containers already running keep their addresses in the old subnet, which is no longer
/// routed to this host: they need to be recreated, as with any lost lease.
fn move_to(
    cfg: &AgentConfig,
    h: &mut Handle,
    dataplane: &mut Dataplane,
    lease: &Lease,
    metrics: &Metrics,
) -> Result<(), AgentError> {
    dataplane.set_subnet(lease.subnet, lease.subnet6);
    dataplane.setup(h)?;
    write_subnet_file(cfg, lease, dataplane.mtu())?;
    if let Ok(mut s) = metrics.subnet.lock() {
        *s = leased(lease);
    }
    Ok(())
}

fn renew_or_reacquire(
    store: &mut dyn Store,
    cluster: &ClusterConfig,
    attrs: &LeaseAttrs,
    lease: &Lease,
    ttl: Duration,
) -> Result<Lease, StoreError> {
    match store.renew(lease, ttl) {
        Err(StoreError::LeaseLost(_)) => store.acquire(cluster, attrs, Some(lease.subnet), ttl),
        r => r,
    }
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

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
}
