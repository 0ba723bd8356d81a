//! The cross-host numbers: TCP throughput over ferrynet's data plane as a ratio of the raw
//! path in the same run (iperf3), convergence of a new host's subnet on 20 other agents, and
//! the agent's resident memory at rest and with 1,000 peer leases.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{kernel_path, progress, Scenario};
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
    ip6: Ipv6Addr,
}

/// The addresses one family's rows measure between: from pod A to `far_pod` (on host B) and
/// `near_pod` (on host A), host A to `far_host`, veth end to `veth_peer`.
struct Paths {
    far_pod: IpAddr,
    near_pod: IpAddr,
    far_host: IpAddr,
    veth_peer: IpAddr,
    /// What the rows' names gain: "" for IPv4, " (IPv6)".
    suffix: &'static str,
    streams: &'static [u32],
}

/// Host `i`'s IPv6 underlay address (its IPv4 one is 10.200.10.(i+2)).
fn host_ip6(i: usize) -> Ipv6Addr {
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
    fn dual(tag: &str) -> Result<Lab> {
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

    fn start_agent(&mut self, host: &Netns, node: &str, backend: BackendKind) {
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
    fn pod(&mut self, host: &Netns, node: &str, tag: &str) -> Result<Pod> {
        self.pod_as(host, node, tag, None)
    }

    /// [`Lab::pod`] with BIG TCP on its veth pair (`network create --big-tcp`).
    fn big_tcp_pod(&mut self, host: &Netns, node: &str, tag: &str) -> Result<Pod> {
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

/// The cross-host rows' reference.
const RAW_UNDERLAY: &str = "raw underlay (two plain namespaces)";

/// iperf3 for 2 s from `client` to `server_ip` (a server in `server`); Gbit/s received.
fn iperf(server: &Netns, client: &Netns, server_ip: IpAddr, streams: u32) -> Result<f64> {
    iperf_on(server, client, server_ip, streams, IPERF_PORT)
}

/// iperf3's own port.
pub(super) const IPERF_PORT: u16 = 5201;

/// [`iperf`] with the server on `port`.
pub(super) fn iperf_on(
    server: &Netns,
    client: &Netns,
    server_ip: IpAddr,
    streams: u32,
    port: u16,
) -> Result<f64> {
    let spawn_in = |ns: &Netns, args: &[String]| -> Result<Child> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", ns.path().display()))
            .arg("iperf3")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd.spawn().context("run iperf3 (apt-get install iperf3)")
    };
    let mut srv = spawn_in(
        server,
        &[
            "-s".into(),
            "-1".into(),
            "-B".into(),
            server_ip.to_string(),
            "-p".into(),
            port.to_string(),
        ],
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let args: Vec<String> = [
        "-c",
        &server_ip.to_string(),
        "-t",
        "2",
        "-J",
        "-P",
        &streams.to_string(),
        "-p",
        &port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = spawn_in(client, &args)?.wait_with_output()?;
    let _ = srv.kill();
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 output")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 reported no throughput")?;
    Ok(bps / 1e9)
}

pub struct RttRow {
    pub path: String,
    pub us: f64,
    pub reference: String,
    pub reference_us: f64,
}

/// Average round trip of 50 pings (every 10 ms) from `from` to `ip`, in microseconds.
fn rtt_us(from: &Netns, ip: IpAddr) -> Result<f64> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", from.path().display()))
        .args(["ping", "-q", "-c", "50", "-i", "0.01", &ip.to_string()])
        .output()
        .context("run ping")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // rtt min/avg/max/mdev = 0.041/0.052/0.080/0.008 ms
    let avg = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .context("ping printed no round-trip times")?;
    Ok(avg * 1000.0)
}

pub struct ThroughputRow {
    pub path: String,
    pub streams: u32,
    pub gbps: f64,
    pub reference: String,
    pub reference_gbps: f64,
}

/// Same-host pod to pod vs a raw veth pair; cross-host host-gw and vxlan vs the raw underlay.
/// Measures `reference` and `candidate` alternately, `rounds` times each, so that the
/// machine's drift (2 vCPUs shared with other work swing single runs by 20%) hits both;
/// returns the medians.
fn alternate(
    rounds: usize,
    mut reference: impl FnMut() -> Result<f64>,
    mut candidate: impl FnMut() -> Result<f64>,
) -> Result<(f64, f64)> {
    let m = alternate_all(rounds, &mut [&mut reference, &mut candidate])?;
    Ok((m[0], m[1]))
}

/// [`alternate`] over any number of paths, measured in turn each round; their medians.
fn alternate_all(rounds: usize, paths: &mut [&mut dyn FnMut() -> Result<f64>]) -> Result<Vec<f64>> {
    let mut samples = vec![Vec::new(); paths.len()];
    for _ in 0..rounds.max(1) {
        for (path, s) in paths.iter_mut().zip(&mut samples) {
            s.push(path()?);
        }
    }
    Ok(samples.iter_mut().map(|s| median(s)).collect())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `rounds`: how many alternating measurements of each path (medians are reported). Every
/// path is measured in both families over the same hosts, agents and pods: IPv4 with one
/// and four streams, IPv6 with one (the 4-stream references are bimodal here anyway).
pub fn throughput(rounds: usize) -> Result<(Vec<ThroughputRow>, Vec<RttRow>)> {
    progress("throughput: raw veth pair, same-host pods, raw underlay, host-gw, vxlan and bgp pods, IPv4 and IPv6");
    let mut rows = Vec::new();
    let mut rtts = Vec::new();
    // A raw veth pair between two namespaces.
    let mut lab = Lab::new("tp")?;
    let (a, b) = (lab.netns("tpva")?, lab.netns("tpvb")?);
    let (veth_ip, veth_ip6): (Ipv4Addr, Ipv6Addr) = ("10.199.0.2".parse()?, "fd00:199::2".parse()?);
    a.run(|| -> Result<()> {
        let mut h = Handle::new()?;
        h.create_veth(&VethSpec {
            host_name: "v0",
            host_mac: None,
            peer_name: "v1",
            peer_netns: b.fd(),
            peer_mac: None,
            mtu: 1500,
            master: None,
            big_packets: None,
        })?;
        let l = h.link_by_name("v0")?.context("v0")?;
        h.add_addr(l.index, "10.199.0.1/24".parse::<ipnet::Ipv4Net>()?)?;
        h.add_addr(l.index, "fd00:199::1/64".parse::<ipnet::Ipv6Net>()?)?;
        h.set_up(l.index)?;
        h.set_up(1)?;
        Ok(())
    })??;
    b.run(|| -> Result<()> {
        let mut h = Handle::new()?;
        let l = h.link_by_name("v1")?.context("v1")?;
        h.add_addr(l.index, "10.199.0.2/24".parse::<ipnet::Ipv4Net>()?)?;
        h.add_addr(l.index, "fd00:199::2/64".parse::<ipnet::Ipv6Net>()?)?;
        h.set_up(l.index)?;
        h.set_up(1)?;
        Ok(())
    })??;
    for backend in [BackendKind::HostGw, BackendKind::Vxlan, BackendKind::Bgp] {
        let (tag, name, proto) = match backend {
            BackendKind::HostGw => ("hg", "host-gw", PROTO_FERRYNET),
            BackendKind::Bgp => ("bg", "bgp (BIRD, full mesh)", PROTO_BIRD),
            _ => ("vx", "vxlan", PROTO_FERRYNET),
        };
        let mut lab2 = Lab::dual(tag)?;
        let ha = lab2.host(&format!("{tag}a"), 1)?;
        let hb = lab2.host(&format!("{tag}b"), 2)?;
        lab2.start_agent(&ha, "a", backend);
        lab2.start_agent(&hb, "b", backend);
        let pa = lab2.pod(&ha, "a", &format!("{tag}pa"))?;
        let pa2 = lab2.pod(&ha, "a", &format!("{tag}pa2"))?;
        let pb = lab2.pod(&hb, "b", &format!("{tag}pb"))?;
        // The cross-host reference: two plain namespaces on the same fabric (no agent, no
        // ferrynet table), not the agent hosts themselves.
        let ra = lab2.host(&format!("{tag}ra"), 3)?;
        let rb = lab2.host(&format!("{tag}rb"), 4)?;
        // The same pod path built with the kernel alone, for the backends that have one.
        let kernel = match backend {
            BackendKind::HostGw => Some((kernel_path::Shape::Routed, "bridges and routes")),
            BackendKind::Vxlan => Some((kernel_path::Shape::Vxlan, "bridges and VXLAN")),
            _ => None,
        }
        .map(|(shape, what)| -> Result<_> {
            Ok((
                kernel_path::build(&mut lab2, &format!("{tag}k"), 5, shape)?,
                what,
            ))
        })
        .transpose()?;
        // Two more on host A's bridge with BIG TCP (the same-host rows only: see
        // crate::network::BIG_TCP_SIZE for why not across hosts).
        let big = if backend == BackendKind::HostGw {
            Some((
                lab2.big_tcp_pod(&ha, "a", &format!("{tag}pg"))?,
                lab2.big_tcp_pod(&ha, "a", &format!("{tag}pg2"))?,
            ))
        } else {
            None
        };
        // Wait until host A routes to host B's pods in both families (a BGP session takes
        // a few seconds).
        let end = Instant::now() + Duration::from_secs(30);
        let routed = || {
            ha.run(|| -> Result<bool> {
                let mut h = Handle::new()?;
                let v4 = h
                    .routes()?
                    .iter()
                    .any(|r| r.protocol == proto && r.dst.contains(&pb.ip));
                let v6 = h
                    .routes6()?
                    .iter()
                    .any(|r| r.protocol == proto && r.dst.contains(&pb.ip6));
                Ok(v4 && v6)
            })
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or(false)
        };
        while !routed() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        let families = [
            Paths {
                far_pod: pb.ip.into(),
                near_pod: pa2.ip.into(),
                far_host: Ipv4Addr::new(10, 200, 10, 6).into(),
                veth_peer: veth_ip.into(),
                suffix: "",
                streams: &[1, 4],
            },
            Paths {
                far_pod: pb.ip6.into(),
                near_pod: pa2.ip6.into(),
                far_host: host_ip6(4).into(),
                veth_peer: veth_ip6.into(),
                suffix: " (IPv6)",
                streams: &[1],
            },
        ];
        for f in families {
            let (ipb, ipa2, underlay_b, veth, family) =
                (f.far_pod, f.near_pod, f.far_host, f.veth_peer, f.suffix);
            // Latency: 50 pings, average RTT, pod path vs the raw path.
            rtts.push(RttRow {
                path: format!("cross-host pod to pod, {name}{family}"),
                us: rtt_us(&pa.ns, ipb)?,
                reference: RAW_UNDERLAY.into(),
                reference_us: rtt_us(&ra, underlay_b)?,
            });
            if backend == BackendKind::HostGw {
                rtts.push(RttRow {
                    path: format!("same-host pod to pod (bridge){family}"),
                    us: rtt_us(&pa.ns, ipa2)?,
                    reference: "raw veth pair".into(),
                    reference_us: rtt_us(&a, veth)?,
                });
            }
            for &streams in f.streams {
                let kernel_here = kernel.as_ref().filter(|_| family.is_empty());
                let m = alternate_all(
                    rounds,
                    &mut [
                        &mut || iperf(&rb, &ra, underlay_b, streams),
                        &mut || iperf(&pb.ns, &pa.ns, ipb, streams),
                        &mut || match kernel_here {
                            Some((k, _)) => iperf(&k.pod_b, &k.pod_a, k.far_pod, streams),
                            None => Ok(0.0),
                        },
                    ],
                )?;
                rows.push(ThroughputRow {
                    path: format!("cross-host pod to pod, {name}{family}"),
                    streams,
                    gbps: m[1],
                    reference: RAW_UNDERLAY.into(),
                    reference_gbps: m[0],
                });
                if let Some((_, what)) = kernel_here {
                    rows.push(ThroughputRow {
                        path: format!("the same path with the kernel alone ({what}, no ferrynet)"),
                        streams,
                        gbps: m[2],
                        reference: RAW_UNDERLAY.into(),
                        reference_gbps: m[0],
                    });
                }
                if backend == BackendKind::HostGw {
                    let (raw, same) = alternate(
                        rounds,
                        || iperf(&b, &a, veth, streams),
                        || iperf(&pa2.ns, &pa.ns, ipa2, streams),
                    )?;
                    rows.push(ThroughputRow {
                        path: format!("same-host pod to pod (bridge){family}"),
                        streams,
                        gbps: same,
                        reference: "raw veth pair".into(),
                        reference_gbps: raw,
                    });
                }
                if let Some((g, g2)) = &big {
                    let ip: IpAddr = if family.is_empty() {
                        g2.ip.into()
                    } else {
                        g2.ip6.into()
                    };
                    let (raw, same) = alternate(
                        rounds,
                        || iperf(&b, &a, veth, streams),
                        || iperf(&g2.ns, &g.ns, ip, streams),
                    )?;
                    rows.push(ThroughputRow {
                        path: format!("same-host pod to pod (bridge, --big-tcp){family}"),
                        streams,
                        gbps: same,
                        reference: "raw veth pair".into(),
                        reference_gbps: raw,
                    });
                }
            }
        }
    }
    drop(lab);
    Ok((rows, rtts))
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
