//! The data-plane rows: TCP throughput (iperf3) and round trips (ping) over ferrynet's pod
//! paths, each measured in alternation with its reference path in the same run: a raw veth
//! pair for the same-host rows; two plain namespaces on the fabric, and the same pod path
//! built with the kernel alone, for the cross-host ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::cluster::{host_ip6, Lab};
use super::{kernel_path, progress};
use crate::bgp::PROTO_BIRD;
use crate::cluster::BackendKind;
use crate::netlink::{Handle, VethSpec, PROTO_FERRYNET};
use crate::netns::Netns;

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
                let mut reference = || iperf(&rb, &ra, underlay_b, streams);
                let mut pods = || iperf(&pb.ns, &pa.ns, ipb, streams);
                let kernel_alone =
                    |k: &kernel_path::KernelPath| iperf(&k.pod_b, &k.pod_a, k.far_pod, streams);
                let m = match kernel_here {
                    Some((k, _)) => alternate_all(
                        rounds,
                        &mut [&mut reference, &mut pods, &mut || kernel_alone(k)],
                    )?,
                    None => alternate_all(rounds, &mut [&mut reference, &mut pods])?,
                };
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
