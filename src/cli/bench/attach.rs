//! The single-host rows: `ferrynet attach`/`detach` of n containers on one bridge, IPv4-only
//! and dual-stack interleaved, against the floor (the same netlink messages sent in-process,
//! plus a trivial process started the way ferrynet is), and `ferrynet trace` with every
//! container attached.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{cni, in_netns, progress, time_output, time_process, Scenario, BATCH, TRACE_RUNS};
use crate::bridge::Driver;
use crate::firewall::{Firewall, PortMapping, Protocol};
use crate::netlink::{Handle, Mac, Route, VethSpec};
use crate::netns::Netns;
use crate::network::{NetworkConfig, StateDir};

pub(super) struct ScenarioResult {
    pub(super) attach: Vec<Duration>,
    /// ferrynet attach on a dual-stack network (same IPv4 /16, plus an IPv6 /64).
    pub(super) dual_attach: Vec<Duration>,
    pub(super) floor_attach: Vec<Duration>,
    pub(super) detach: Vec<Duration>,
    pub(super) dual_detach: Vec<Duration>,
    pub(super) floor_detach: Vec<Duration>,
    /// `ferrynet trace` from the first container to the last, with all n attached.
    pub(super) trace: Vec<Duration>,
    /// A trivial process (/bin/true) started exactly as ferrynet is (fork, setns into the
    /// host, exec, from this process with every container namespace open), one per attach:
    /// the process-start part of the floor. Started with posix_spawn from a process with
    /// few descriptors it costs less, and the ratio would be unfair to ferrynet.
    pub(super) spawn: Vec<Duration>,
}

pub(super) fn scenario(n: usize, ports: bool) -> Result<ScenarioResult> {
    let label = if ports {
        "with a published port"
    } else {
        "no ports"
    };
    let state = std::env::temp_dir().join(format!("ferrynet-bench-{}", std::process::id()));
    let mut sc = Scenario {
        names: Vec::new(),
        state: state.clone(),
        run_dir: None,
    };
    progress(&format!(
        "{label}: creating 3 hosts and {} container namespaces",
        3 * n
    ));
    let mut make = |tag: String| sc.netns(&tag);
    let host_a = make("a".into())?;
    let host_b = make("b".into())?;
    let host_d = make("d".into())?;
    let cs_a = (0..n)
        .map(|i| make(format!("a{i}")))
        .collect::<Result<Vec<_>>>()?;
    let cs_b = (0..n)
        .map(|i| make(format!("b{i}")))
        .collect::<Result<Vec<_>>>()?;
    let cs_d = (0..n)
        .map(|i| make(format!("d{i}")))
        .collect::<Result<Vec<_>>>()?;

    // Runtime state on tmpfs, as in production (/run/ferrynet on a host whose /run is tmpfs;
    // where it is not, as in some sandboxes, /dev/shm stands in).
    let run_base = if crate::util::is_tmpfs(std::path::Path::new("/run")) {
        "/run"
    } else {
        "/dev/shm"
    };
    let run_dir = PathBuf::from(format!("{run_base}/ferrynet-bench-{}", std::process::id()));
    sc.run_dir = Some(run_dir.clone());
    let st = StateDir::with_run_dir(&state, &run_dir);
    let net = NetworkConfig::new("bench", &["10.90.0.0/16".parse()?], None, &[], 1500)?;
    host_a.run(|| -> Result<()> {
        st.insert(&net)?;
        Driver::new(st.clone()).ensure_network(&mut Handle::new()?, &net)?;
        Ok(())
    })??;
    // The dual-stack host: its own state, the same IPv4 /16 and an IPv6 /64 next to it.
    let st_d = StateDir::with_run_dir(state.join("ds"), run_dir.join("ds"));
    let dual_subnets = cni::DUAL_STACK_SUBNETS
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<ipnet::IpNet>, _>>()?;
    let net_d = NetworkConfig::new("bench", &dual_subnets, None, &[], 1500)?;
    host_d.run(|| -> Result<()> {
        st_d.insert(&net_d)?;
        Driver::new(st_d.clone()).ensure_network(&mut Handle::new()?, &net_d)?;
        Ok(())
    })??;
    // The floor's host: a bridge with the same properties, and the same table for ports.
    let floor_bridge = host_b.run(|| -> Result<u32> {
        let mut h = Handle::new()?;
        Ok(Driver::new(StateDir::new(state.join("floor"))).ensure_network(&mut h, &net)?)
    })??;

    let exe = std::env::current_exe()?;
    // `ferrynet ARGS` on the IPv4-only host, or on the dual-stack one.
    let ferrynet = |dual: bool, args: &[&str]| -> Result<(Duration, Vec<u8>)> {
        let (host, dir) = if dual {
            (&host_d, &st_d)
        } else {
            (&host_a, &st)
        };
        let mut cmd = Command::new(&exe);
        cmd.args(args)
            .env("FERRYNET_STATE_DIR", dir.root())
            .env("FERRYNET_RUN_DIR", dir.run_dir());
        time_output(in_netns(&mut cmd, host))
    };

    let mut r = ScenarioResult {
        attach: Vec::with_capacity(n),
        dual_attach: Vec::with_capacity(n),
        floor_attach: Vec::with_capacity(n),
        detach: Vec::with_capacity(n),
        dual_detach: Vec::with_capacity(n),
        floor_detach: Vec::with_capacity(n),
        trace: Vec::new(),
        spawn: Vec::with_capacity(n),
    };
    let port = |i: usize| PortMapping {
        host_port: 10000 + i as u16,
        container_port: 80,
        protocol: Protocol::Tcp,
        host_ip: None,
    };
    let mut floor_macs = Vec::with_capacity(n);
    for batch in 0..n / BATCH {
        // IPv4-only and dual-stack interleaved container by container (who goes first
        // alternating), so that drift within the batch hits both alike.
        for i in batch * BATCH..(batch + 1) * BATCH {
            for dual in [i % 2 == 1, i % 2 == 0] {
                let c = if dual { &cs_d[i] } else { &cs_a[i] };
                let path = c.path().to_string_lossy().into_owned();
                let p = port(i).to_string();
                let mut args = vec!["attach", &path, "--network", "bench"];
                if ports {
                    args.extend(["-p", &p]);
                }
                let (d, out) = ferrynet(dual, &args)?;
                if dual && i == 0 {
                    check_dual_stack_endpoint(&out)?;
                }
                if !dual {
                    r.spawn.push(time_process(in_netns(
                        &mut Command::new("/bin/true"),
                        &host_a,
                    ))?);
                }
                let times = if dual {
                    &mut r.dual_attach
                } else {
                    &mut r.attach
                };
                times.push(d);
            }
        }
        for (i, c) in cs_b.iter().enumerate().skip(batch * BATCH).take(BATCH) {
            let ip = ipnet::Ipv4Net::new(
                std::net::Ipv4Addr::from(u32::from(bench_gateway(&net)) + 1 + i as u32),
                16,
            )?;
            let (d, mac) = host_b.run(|| {
                floor_attach(
                    c,
                    floor_bridge,
                    i,
                    ip,
                    bench_gateway(&net),
                    ports.then(|| port(i)),
                )
            })??;
            r.floor_attach.push(d);
            floor_macs.push(mac);
        }
        progress(&format!("{label}: attached {}/{n}", (batch + 1) * BATCH));
    }
    // trace with every container attached: its cost must not grow with them.
    let name = |c: &Netns| {
        c.path()
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (first, last) = (name(&cs_a[0]), name(&cs_a[n - 1]));
    for _ in 0..TRACE_RUNS {
        let (d, out) = ferrynet(false, &["trace", &first, &last, "--json"])?;
        let t: serde_json::Value = serde_json::from_slice(&out)?;
        if t[0]["verdict"] != "delivered" {
            bail!("bench trace {first} → {last} was not delivered: {t}");
        }
        r.trace.push(d);
    }
    for batch in 0..n / BATCH {
        for i in batch * BATCH..(batch + 1) * BATCH {
            for dual in [i % 2 == 1, i % 2 == 0] {
                let c = if dual { &cs_d[i] } else { &cs_a[i] };
                let path = c.path().to_string_lossy().into_owned();
                let (d, _) = ferrynet(dual, &["detach", &path, "--network", "bench"])?;
                let times = if dual {
                    &mut r.dual_detach
                } else {
                    &mut r.detach
                };
                times.push(d);
            }
        }
        for (i, mac) in floor_macs
            .iter()
            .enumerate()
            .skip(batch * BATCH)
            .take(BATCH)
        {
            let ip = std::net::Ipv4Addr::from(u32::from(bench_gateway(&net)) + 1 + i as u32);
            let guard = floor_guard(i, *mac, ip);
            let d = host_b.run(|| floor_detach(i, &guard, ports.then(|| port(i))))??;
            r.floor_detach.push(d);
        }
        progress(&format!("{label}: detached {}/{n}", (batch + 1) * BATCH));
    }
    drop(sc);
    Ok(r)
}

/// The first dual-stack attach's endpoint (ferrynet attach prints it) has both addresses:
/// otherwise the dual-stack rows would measure an IPv4 attach.
fn check_dual_stack_endpoint(out: &[u8]) -> Result<()> {
    let ep: serde_json::Value =
        serde_json::from_slice(out).context("parse the endpoint ferrynet attach printed")?;
    if ep["ip"].is_null() || ep["ip6"].is_null() {
        bail!(
            "the dual-stack attach gave no address of one family: {}",
            String::from_utf8_lossy(out)
        );
    }
    Ok(())
}

fn floor_veth(i: usize) -> String {
    format!("fl{i}")
}

/// The same kernel work as an attach, in-process: veth with the peer in the container and the
/// host end on the bridge; inside: address, up, lo up, default route; host end up; and the
/// published port's map element.
fn floor_attach(
    c: &Netns,
    bridge: u32,
    i: usize,
    ip: ipnet::Ipv4Net,
    gw: std::net::Ipv4Addr,
    port: Option<PortMapping>,
) -> Result<(Duration, Mac)> {
    let t = Instant::now();
    let mut h = Handle::new()?;
    let host_name = floor_veth(i);
    let mac = Mac::random();
    h.create_veth(&VethSpec {
        host_name: &host_name,
        host_mac: None,
        peer_name: "eth0",
        peer_netns: c.fd(),
        peer_mac: Some(mac),
        mtu: 1500,
        master: Some(bridge),
        big_packets: None,
    })?;
    let host_index = c.run(|| -> Result<u32> {
        let mut h = Handle::new()?;
        let l = h.link_by_name("eth0")?.context("eth0")?;
        h.add_addr(l.index, ip)?;
        h.set_up_static(l.index, None)?;
        h.set_up(1)?;
        h.add_route(&Route {
            dst: "0.0.0.0/0".parse()?,
            gateway: Some(gw),
            oif: Some(l.index),
            onlink: false,
            protocol: crate::netlink::PROTO_BOOT,
        })?;
        l.peer_index.context("peer")
    })??;
    h.set_up_static(host_index, Some(true))?;
    // The anti-spoofing guard and the port, as ferrynet adds them: one transaction.
    let guard = floor_guard(i, mac, ip.addr());
    let ports: Vec<PortMapping> = port.into_iter().collect();
    Firewall::open()?.add_endpoint(Some(&guard), v4_only(ip.addr()), &ports)?;
    Ok((t.elapsed(), mac))
}

fn floor_guard(i: usize, mac: Mac, ip: std::net::Ipv4Addr) -> crate::firewall::PortGuard {
    crate::firewall::PortGuard {
        veth: floor_veth(i),
        mac,
        ip: Some(ip),
        ip6: Vec::new(),
    }
}

pub(super) fn v4_only(ip: std::net::Ipv4Addr) -> crate::firewall::EndpointAddrs {
    crate::firewall::EndpointAddrs {
        v4: Some(ip),
        v6: None,
    }
}

fn floor_detach(
    i: usize,
    guard: &crate::firewall::PortGuard,
    port: Option<PortMapping>,
) -> Result<Duration> {
    let t = Instant::now();
    let mut fw = Firewall::open()?;
    let ports: Vec<PortMapping> = port.into_iter().collect();
    let addrs = crate::firewall::EndpointAddrs {
        v4: guard.ip,
        v6: None,
    };
    fw.remove_endpoint(Some(guard), addrs, &ports)?;
    Handle::new()?.delete_link_by_name(&floor_veth(i))?;
    // Closed after the veth delete, as ferrynet does, so that both RCU waits overlap.
    drop(fw);
    Ok(t.elapsed())
}

/// The bench network's IPv4 gateway (the floor's addresses are counted from it).
fn bench_gateway(net: &NetworkConfig) -> std::net::Ipv4Addr {
    net.v4.expect("the bench network is IPv4").gateway
}
