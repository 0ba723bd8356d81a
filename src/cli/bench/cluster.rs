//! The cross-host lab (host namespaces on a fabric bridge, in-process agents, pods in their
//! leased subnets) and the control-plane numbers measured on it: convergence of a new host's
//! subnet on 20 other agents, and the agent's resident memory at rest and with 1,000 peer
//! leases. The data-plane rows measured on it are in `throughput`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{progress, Scenario};
use crate::agent::AgentConfig;
use crate::bgp::{BgpConfig, DEFAULT_AS, PROTO_BIRD};
use crate::bridge::{AttachRequest, Driver};
use crate::cluster::{BackendKind, ClusterConfig};
use crate::netlink::{Handle, Mac, VethSpec, PROTO_FERRYNET};
use crate::netns::Netns;
use crate::network::{NetworkConfig, StateDir};

/// A throwaway topology: namespaces, a fabric, in-process agents; all removed on drop.
pub(super) struct Lab {
    sc: Scenario,
    fabric: Netns,
    fab0: u32,
    stop: Arc<AtomicBool>,
    agents: Vec<std::thread::JoinHandle<()>>,
    store: PathBuf,
    /// Pid files of the BIRDs the bgp agents started (daemons: stopped on drop).
    birds: Vec<PathBuf>,
    /// Hosts with an IPv6 underlay address too, agents of a dual-stack cluster.
    dual_stack: bool,
    /// The prefix length of each host's lease (24: 254 pods a host).
    pub(super) subnet_len: u8,
}

pub(super) struct Pod {
    pub(super) ns: Netns,
    pub(super) ip: Ipv4Addr,
    pub(super) ip6: Ipv6Addr,
}

/// Host `i`'s IPv6 underlay address (its IPv4 one is 10.200.10.(i+2)).
pub(super) fn host_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, i as u16 + 2)
}

impl Lab {
    pub(super) fn new(tag: &str) -> Result<Lab> {
        let dir = std::env::temp_dir().join(format!("ferrynet-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut sc = Scenario {
            names: Vec::new(),
            state: dir.clone(),
            run_dir: None,
        };
        let fabric = sc.netns(&format!("{tag}f"))?;
        let fab0 = fabric.run(|| -> Result<u32> {
            let mut h = Handle::new()?;
            h.create_bridge("fab0", 1500, Mac::from_seed("fab0"))?;
            let l = h.link_by_name("fab0")?.context("fab0")?;
            h.set_up(l.index)?;
            Ok(l.index)
        })??;
        Ok(Lab {
            sc,
            fabric,
            fab0,
            stop: Arc::new(AtomicBool::new(false)),
            agents: Vec::new(),
            store: dir.join("cluster.json"),
            birds: Vec::new(),
            dual_stack: false,
            subnet_len: 24,
        })
    }

    /// A lab whose hosts and agents are dual-stack.
    pub(super) fn dual(tag: &str) -> Result<Lab> {
        let mut lab = Lab::new(tag)?;
        lab.dual_stack = true;
        Ok(lab)
    }

    pub(super) fn netns(&mut self, tag: &str) -> Result<Netns> {
        self.sc.netns(tag)
    }

    /// A host on the fabric with `eth0` = 10.200.x.y/16.
    pub(super) fn host(&mut self, tag: &str, i: usize) -> Result<Netns> {
        let ns = self.netns(tag)?;
        let port = format!("p{i}");
        let fab0 = self.fab0;
        self.fabric.run(|| -> Result<()> {
            let mut h = Handle::new()?;
            h.create_veth(&VethSpec {
                host_name: &port,
                host_mac: None,
                peer_name: "eth0",
                peer_netns: ns.fd(),
                peer_mac: None,
                mtu: 1500,
                master: Some(fab0),
                big_packets: None,
            })?;
            let l = h.link_by_name(&port)?.context("port")?;
            h.set_up(l.index)?;
            Ok(())
        })??;
        let ip = Ipv4Addr::new(10, 200, (10 + i / 250) as u8, (i % 250 + 2) as u8);
        let dual = self.dual_stack;
        ns.run(|| -> Result<()> {
            let mut h = Handle::new()?;
            let l = h.link_by_name("eth0")?.context("eth0")?;
            h.add_addr(l.index, ipnet::Ipv4Net::new(ip, 16)?)?;
            if dual {
                h.add_addr(l.index, ipnet::Ipv6Net::new(host_ip6(i), 64)?)?;
            }
            h.set_up(l.index)?;
            h.set_up(1)?;
            Ok(())
        })??;
        Ok(ns)
    }

    fn subnet_file(&self, node: &str) -> PathBuf {
        self.sc.state.join(node).join("subnet.env")
    }

    pub(super) fn start_agent(&mut self, host: &Netns, node: &str, backend: BackendKind) {
        self.start_agent_with(host, node, backend, false)
    }

    /// The host's ferrynet state directory (its endpoints' records).
    pub(super) fn node_state(&self, node: &str) -> StateDir {
        StateDir::new(self.sc.state.join(node))
    }

    /// The cluster store's URL.
    pub(super) fn store_url(&self) -> String {
        format!("file:{}", self.store.display())
    }

    /// An agent for `node` on `host`; with `policy`, it also enforces network policy for
    /// the endpoints of the node's state directory.
    pub(super) fn start_agent_with(
        &mut self,
        host: &Netns,
        node: &str,
        backend: BackendKind,
        policy: bool,
    ) {
        let node_dir = self.sc.state.join(node);
        let bgp = (backend == BackendKind::Bgp).then(|| BgpConfig {
            local_as: DEFAULT_AS,
            peers: Vec::new(),
            mesh: true,
            hold_time: 9,
            config_dir: node_dir.join("bird"),
            socket: node_dir.join("bird.ctl"),
            external: false,
        });
        if bgp.is_some() {
            self.birds.push(node_dir.join("bird/bird.pid"));
        }
        let cfg = AgentConfig {
            store: format!("file:{}", self.store.display()),
            prefix: crate::cluster::DEFAULT_PREFIX.into(),
            etcd_tls: None,
            // Dual-stack: the IPv6 rows run over the same hosts and agents.
            cluster: ClusterConfig {
                network6: self
                    .dual_stack
                    .then(|| "fd00:64::/48".parse().expect("valid")),
                ..ClusterConfig::v4(
                    "10.64.0.0/10".parse().expect("valid"),
                    self.subnet_len,
                    backend,
                )
            },
            iface: Some("eth0".into()),
            public_ip: None,
            public_ip6: None,
            node_name: node.into(),
            lease_ttl: Duration::from_secs(120),
            subnet_file: self.subnet_file(node),
            release_on_exit: false,
            vni: 1,
            port: 8472,
            resync: Duration::from_secs(30),
            state: policy.then(|| StateDir::new(node_dir.clone())),
            log_drops: false,
            metrics: None,
            bgp,
        };
        let (stop, path) = (self.stop.clone(), host.path().to_path_buf());
        self.agents.push(std::thread::spawn(move || {
            if let Ok(ns) = Netns::open(&path) {
                let _ = ns.run(|| crate::agent::run(&cfg, &stop));
            }
        }));
    }

    fn lease(&self, node: &str) -> Result<(ipnet::Ipv4Net, Option<ipnet::Ipv6Net>, u32)> {
        let file = self.subnet_file(node);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
                let s6 = get("FERRYNET_SUBNET6=");
                if let (Some(s), Some(m), true) = (
                    get("FERRYNET_SUBNET="),
                    get("FERRYNET_MTU="),
                    s6.is_some() || !self.dual_stack,
                ) {
                    let s6 = s6.map(str::parse).transpose()?;
                    return Ok((s.parse()?, s6, m.parse()?));
                }
            }
            if Instant::now() > end {
                bail!("agent {node} leased nothing");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A pod on `host` in its leased subnets (both families in a dual-stack lab).
    pub(super) fn pod(&mut self, host: &Netns, node: &str, tag: &str) -> Result<Pod> {
        self.pod_as(host, node, tag, None)
    }

    /// [`Lab::pod`] with BIG TCP on its veth pair (`network create --big-tcp`).
    pub(super) fn big_tcp_pod(&mut self, host: &Netns, node: &str, tag: &str) -> Result<Pod> {
        self.attach_pod(host, node, tag, None, true)
    }

    /// [`Lab::pod`] with an identity for network policy.
    pub(super) fn pod_as(
        &mut self,
        host: &Netns,
        node: &str,
        tag: &str,
        identity: Option<crate::policy::Identity>,
    ) -> Result<Pod> {
        self.attach_pod(host, node, tag, identity, false)
    }

    fn attach_pod(
        &mut self,
        host: &Netns,
        node: &str,
        tag: &str,
        identity: Option<crate::policy::Identity>,
        big_tcp: bool,
    ) -> Result<Pod> {
        let (subnet, subnet6, mtu) = self.lease(node)?;
        let mut subnets: Vec<ipnet::IpNet> = vec![subnet.into()];
        subnets.extend(subnet6.map(ipnet::IpNet::from));
        let net = NetworkConfig {
            big_tcp,
            ..NetworkConfig::new("pods", &subnets, Some("fypods0"), &[], mtu)?
        };
        let driver = Driver::new(StateDir::new(self.sc.state.join(node)));
        let ns = self.netns(tag)?;
        let req = AttachRequest {
            identity,
            ..AttachRequest::simple(ns.path(), tag)
        };
        let ep = host.run(|| driver.attach(&net, &req))??;
        Ok(Pod {
            ns,
            ip: ep.ip.expect("allocated").addr(),
            ip6: ep.ip6.map(|n| n.addr()).unwrap_or(Ipv6Addr::UNSPECIFIED),
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for a in self.agents.drain(..) {
            let _ = a.join();
        }
        // They are daemons, not children: wait for them to go before the state is removed.
        let pids: Vec<i32> = self
            .birds
            .iter()
            .filter_map(|p| crate::util::read_pid_file(p))
            .collect();
        for &pid in &pids {
            // SAFETY: a plain kill of the BIRD this lab started.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let end = Instant::now() + Duration::from_secs(5);
        while pids.iter().copied().any(crate::util::process_running) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Convergence: 20 agents run; new hosts join one at a time; for each, the time from its
/// lease being written to its route on every other agent's host.
pub fn convergence(agents: usize, joins: usize, backend: BackendKind) -> Result<Vec<Duration>> {
    progress(&format!(
        "convergence ({backend:?}): {agents} agents, {joins} hosts joining"
    ));
    let (tag, proto) = match backend {
        BackendKind::Bgp => ("cb", PROTO_BIRD),
        _ => ("cv", PROTO_FERRYNET),
    };
    let mut lab = Lab::new(tag)?;
    let mut hosts = Vec::new();
    for i in 0..agents {
        let h = lab.host(&format!("{tag}{i}"), i + 1)?;
        lab.start_agent(&h, &format!("n{i}"), backend);
        hosts.push(h);
    }
    for i in 0..agents {
        lab.lease(&format!("n{i}"))?;
    }
    let mut handles: Vec<Handle> = hosts
        .iter()
        .map(|h| h.run(Handle::new))
        .collect::<Result<Result<Vec<_>, _>, _>>()??;
    let mut samples = Vec::new();
    for j in 0..joins {
        let node = format!("j{j}");
        let h = lab.host(&format!("{tag}j{j}"), agents + j + 1)?;
        lab.start_agent(&h, &node, backend);
        let (subnet, ..) = lab.lease(&node)?;
        let t0 = Instant::now();
        let mut pending: Vec<usize> = (0..agents).collect();
        let end = t0 + Duration::from_secs(60);
        while !pending.is_empty() && Instant::now() < end {
            pending.retain(|&i| {
                let has = handles[i]
                    .routes()
                    .map(|rs| rs.iter().any(|r| r.protocol == proto && r.dst == subnet))
                    .unwrap_or(false);
                if has {
                    samples.push(t0.elapsed());
                }
                !has
            });
            std::thread::sleep(Duration::from_millis(2));
        }
        if !pending.is_empty() {
            bail!("{} agents never routed {subnet}", pending.len());
        }
    }
    Ok(samples)
}

/// The agent as a process: resident memory at rest (no peers) and with 1,000 peer leases.
pub fn agent_rss() -> Result<(u64, u64)> {
    progress("agent memory: at rest and with 1,000 peer leases");
    let mut lab = Lab::new("rss")?;
    let h = lab.host("rssh", 1)?;
    let exe = std::env::current_exe()?;
    let store = lab.store.clone();
    let run = |store: &Path| -> Result<Child> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", h.path().display()))
            .arg(&exe)
            .args(["agent", "--store", &format!("file:{}", store.display())])
            .args([
                "--cluster-cidr",
                "10.64.0.0/10",
                "--backend",
                "vxlan",
                "--iface",
                "eth0",
            ])
            .args(["--node-name", "rss", "--subnet-file"])
            .arg(lab.subnet_file("rss"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Ok(cmd.spawn()?)
    };
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    };
    let mut child = run(&store)?;
    lab.lease("rss")?;
    std::thread::sleep(Duration::from_secs(2));
    let at_rest = rss(child.id());
    // 1,000 peers appear in the store.
    let mut s = crate::cluster::FileStore::new(&store);
    use crate::cluster::Store;
    let cfg = ClusterConfig::v4("10.64.0.0/10".parse()?, 24, BackendKind::Vxlan);
    for i in 0..1000u32 {
        let attrs = crate::cluster::LeaseAttrs {
            node: format!("peer{i}"),
            public_ip: Ipv4Addr::new(10, 201, (i / 250) as u8, (i % 250 + 1) as u8),
            backend: BackendKind::Vxlan,
            vtep_mac: Some(Mac::from_seed(&format!("peer{i}"))),
            bgp_as: None,
            public_ip6: None,
        };
        s.acquire(&cfg, &attrs, None, Duration::from_secs(600))?;
    }
    let vx = h.run(|| -> Result<u32> {
        Ok(Handle::new()?
            .link_by_name("ferry.1")?
            .context("ferry.1")?
            .index)
    })??;
    let end = Instant::now() + Duration::from_secs(60);
    while h.run(|| {
        Handle::new()
            .and_then(|mut hd| hd.fdb(vx))
            .map(|f| f.len())
            .unwrap_or(0)
    })? < 1000
    {
        if Instant::now() > end {
            bail!("the agent did not program 1,000 peers");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let loaded = rss(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Ok((at_rest, loaded))
}
