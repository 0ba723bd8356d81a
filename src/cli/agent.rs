//! `ferrynet agent`: the host agent in the foreground (as systemd and runtimes expect).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::agent::{self, AgentConfig};
use crate::cluster::{BackendKind, ClusterConfig};

#[derive(clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    store: super::store::StoreArgs,
    /// The cluster-wide container range: an IPv4 CIDR, and for a dual-stack cluster an IPv6
    /// one too (repeat the flag).
    #[arg(long, required = true)]
    cluster_cidr: Vec<IpNet>,
    /// The size of each host's IPv4 subnet.
    #[arg(long, default_value_t = 24)]
    subnet_len: u8,
    /// The size of each host's IPv6 subnet (dual-stack clusters).
    #[arg(long, default_value_t = crate::cluster::DEFAULT_SUBNET_LEN6)]
    subnet_len6: u8,
    /// vxlan (anywhere, 50 bytes of overhead), host-gw (direct routes on one L2 segment),
    /// or auto (host-gw where the peer is on this segment, VXLAN elsewhere).
    #[arg(long, default_value = "vxlan")]
    backend: BackendKind,
    /// The interface that reaches the other hosts (default: the default route's).
    #[arg(long)]
    iface: Option<String>,
    /// This host's address on the underlay (instead of --iface); repeat with an IPv6 address
    /// for host-gw and BGP over an IPv6 underlay [default IPv6: the uplink's first global one].
    #[arg(long)]
    public_ip: Vec<IpAddr>,
    /// Default: the hostname.
    #[arg(long)]
    node_name: Option<String>,
    /// Seconds (or Ns, Nm) before a silent host's subnet is freed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    lease_ttl: Duration,
    /// Where the CNI plugin's "subnet": "auto" reads this host's lease
    /// [default: RUN_DIR/subnet.env, i.e. /run/ferrynet/subnet.env].
    #[arg(long)]
    subnet_file: Option<PathBuf>,
    /// Give the subnet back on SIGTERM (otherwise it is kept for a restart).
    #[arg(long)]
    release_on_exit: bool,
    /// Log every packet denied by a network policy annotated ferrynet.io/log-drops: "true"
    /// (read from NFLOG; `ferrynet policy drops --follow` cannot read them meanwhile).
    #[arg(long)]
    log_drops: bool,
    /// VXLAN network identifier (the device is ferry.VNI).
    #[arg(long, default_value_t = 1)]
    vni: u32,
    /// VXLAN UDP port.
    #[arg(long, default_value_t = 8472)]
    vxlan_port: u16,
    /// The underlay family VXLAN runs over: ipv4, or ipv6 between the hosts' IPv6 addresses
    /// (70 bytes of overhead instead of 50; every host needs one). Cluster-wide.
    #[arg(long, default_value = "ipv4", value_parser = ["ipv4", "ipv6"])]
    vxlan_underlay: String,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9105).
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// This host's AS for BGP (backend bgp; with auto, turns BGP on) [default: 64512].
    #[arg(long, value_parser = crate::bgp::parse_asn)]
    bgp_as: Option<u32>,
    /// A BGP router or route reflector to peer with: IP[,AS] (without AS: this host's AS,
    /// iBGP). Repeatable. Turns the full mesh off unless --bgp-mesh on.
    #[arg(long = "bgp-peer")]
    bgp_peers: Vec<crate::bgp::BgpPeer>,
    /// A BGP session to every other host [default: on without --bgp-peer, off with it].
    #[arg(long, value_parser = ["on", "off"])]
    bgp_mesh: Option<String>,
    /// Seconds of silence before a BGP session, and the routes learned over it, are dropped.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u16).range(3..=65535))]
    bgp_hold_time: u16,
    /// Drive an already-running BIRD on this control socket instead of starting one: its
    /// configuration must `include "STATE_DIR/bird/ferrynet.conf";`.
    #[arg(long)]
    bird_socket: Option<PathBuf>,
    /// Log lines on stderr: text (for people) or json (one object a line, for log collectors).
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    log_format: crate::logging::LogFormat,
}

impl AgentArgs {
    /// BGP is on for backend bgp, and for auto when any BGP setting is given.
    fn bgp(&self, state: &crate::network::StateDir) -> Option<crate::bgp::BgpConfig> {
        let wanted = self.backend == BackendKind::Bgp
            || self.bgp_as.is_some()
            || !self.bgp_peers.is_empty()
            || self.bgp_mesh.is_some()
            || self.bird_socket.is_some();
        wanted.then(|| crate::bgp::BgpConfig {
            local_as: self.bgp_as.unwrap_or(crate::bgp::DEFAULT_AS),
            peers: self.bgp_peers.clone(),
            mesh: match self.bgp_mesh.as_deref() {
                Some(m) => m == "on",
                None => self.bgp_peers.is_empty(),
            },
            hold_time: self.bgp_hold_time,
            config_dir: state.root().join("bird"),
            socket: self
                .bird_socket
                .clone()
                .unwrap_or_else(|| state.run_dir().join("bird.ctl")),
            external: self.bird_socket.is_some(),
        })
    }
}

/// At most one value of each family for a repeatable flag.
fn one_per_family(values: &[IpNet], flag: &str) -> Result<(Option<Ipv4Net>, Option<Ipv6Net>)> {
    let (mut v4, mut v6) = (None, None);
    for v in values {
        let taken = match v {
            IpNet::V4(n) => v4.replace(*n).is_some(),
            IpNet::V6(n) => v6.replace(*n).is_some(),
        };
        if taken {
            anyhow::bail!(
                "{flag} {v}: a second value of the same family (give one IPv4 and one IPv6)"
            );
        }
    }
    Ok((v4, v6))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = match s.strip_suffix('m') {
        Some(n) => (n, 60),
        None => (s.strip_suffix('s').unwrap_or(s), 1),
    };
    n.parse::<u64>()
        .map(|n| Duration::from_secs(n * unit))
        .map_err(|_| format!("invalid duration {s:?} (expected e.g. 60s or 2m)"))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

pub fn run(a: AgentArgs, state: &crate::network::StateDir) -> Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    let bgp = a.bgp(state);
    if bgp.is_some() && !matches!(a.backend, BackendKind::Bgp | BackendKind::Auto) {
        anyhow::bail!("--bgp-* settings need --backend bgp or auto");
    }
    let node_name = a.node_name.unwrap_or_else(hostname);
    crate::logging::Logger::new("agent")
        .field("node", node_name.as_str())
        .init_stderr(a.log_format);
    let (network, network6) = one_per_family(&a.cluster_cidr, "--cluster-cidr")?;
    let network = network
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--cluster-cidr needs an IPv4 range (IPv6-only clusters are not supported yet)"
            )
        })?
        .trunc();
    let network6 = network6.map(|n| n.trunc());
    let ips: Vec<IpNet> = a.public_ip.iter().map(|ip| IpNet::from(*ip)).collect();
    let (public_ip, public_ip6) = one_per_family(&ips, "--public-ip")?;
    let (public_ip, public_ip6) = (public_ip.map(|n| n.addr()), public_ip6.map(|n| n.addr()));
    let cfg = AgentConfig {
        bgp,
        store: a.store.url(state),
        etcd_tls: a.store.tls(),
        prefix: a.store.etcd_prefix,
        cluster: ClusterConfig {
            subnet_len6: a.subnet_len6,
            network6,
            vxlan_ipv6_underlay: a.vxlan_underlay == "ipv6",
            ..ClusterConfig::v4(network, a.subnet_len, a.backend)
        },
        iface: a.iface,
        public_ip,
        public_ip6,
        node_name,
        lease_ttl: a.lease_ttl.max(Duration::from_secs(3)),
        subnet_file: a
            .subnet_file
            .unwrap_or_else(|| state.run_dir().join("subnet.env")),
        release_on_exit: a.release_on_exit,
        vni: a.vni,
        port: a.vxlan_port,
        resync: Duration::from_secs(30),
        metrics: a.metrics,
        state: Some(state.clone()),
        log_drops: a.log_drops,
    };
    agent::run(&cfg, &STOP)?;
    Ok(())
}
