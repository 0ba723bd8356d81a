//! `ferrynet demo`: a throwaway host namespace with an uplink to a `world` namespace, a
//! network, two containers, and the checks that show how packets flow — printed as it goes.
//! Everything lives in namespaces named `ferrynet-demo-*`; the root namespace is untouched.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::agent::AgentConfig;
use crate::bridge::{AddressRequest, AttachRequest, Driver, Endpoint, RouteSpec};
use crate::cluster::{BackendKind, ClusterConfig};
use crate::firewall::PortMapping;
use crate::netlink::{Handle, Mac, VethSpec};
use crate::netns::{self, Netns};
use crate::network::{NetworkConfig, StateDir};
use crate::probe::{fetch, greeting, Server};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Keep the namespaces and state for exploration instead of cleaning up.
    #[arg(long)]
    keep: bool,
}

const HOST: &str = "ferrynet-demo-host";
const WORLD: &str = "ferrynet-demo-world";
const C1: &str = "ferrynet-demo-c1";
const C2: &str = "ferrynet-demo-c2";
const HOST_B: &str = "ferrynet-demo-host-b";
const FABRIC: &str = "ferrynet-demo-fabric";
const C3: &str = "ferrynet-demo-c3";
const C4: &str = "ferrynet-demo-c4";
const ALL: [&str; 8] = [C1, C2, C3, C4, WORLD, HOST, HOST_B, FABRIC];
const HOST_UPLINK: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const WORLD_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);

/// Removes the demo's namespaces and state when dropped (unless told to keep them).
struct Cleanup {
    state: PathBuf,
    keep: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.keep {
            println!(
                "\nkept: namespaces {}; state {}",
                ALL.join(" "),
                self.state.display()
            );
            println!(
                "explore with: ip netns exec {HOST} ferrynet network inspect demo (FERRYNET_STATE_DIR={})",
                self.state.display()
            );
            println!(
                "remove with:  for n in {}; do ip netns del $n; done",
                ALL.join(" ")
            );
            return;
        }
        for n in ALL {
            let _ = netns::delete_named(n);
        }
        let _ = std::fs::remove_dir_all(&self.state);
        println!("\ncleaned up: namespaces and state removed");
    }
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn check(ok: bool, what: &str) -> Result<()> {
    println!("  {} {what}", if ok { "ok  " } else { "FAIL" });
    if !ok {
        bail!("demo check failed: {what}");
    }
    Ok(())
}

pub fn run(a: DemoArgs) -> Result<()> {
    for n in ALL {
        if netns::named_exists(n) {
            bail!("namespace {n} exists (a kept demo?): remove it with `ip netns del {n}`");
        }
    }
    let state = std::env::temp_dir().join(format!("ferrynet-demo-{}", std::process::id()));
    let _cleanup = Cleanup {
        state: state.clone(),
        keep: a.keep,
    };
    step("topology: a host namespace, its uplink to a 'world' namespace, two containers");
    let host = Netns::open(&netns::create_named(HOST)?)?;
    let world = Netns::open(&netns::create_named(WORLD)?)?;
    let c1 = Netns::open(&netns::create_named(C1)?)?;
    let c2 = Netns::open(&netns::create_named(C2)?)?;
    host.run(|| build_uplink(&world))??;
    println!("  {HOST}: uplink0 {HOST_UPLINK}/24  <->  {WORLD}: wan0 {WORLD_IP}/24");

    let st = StateDir::new(&state);
    let driver = Driver::new(st.clone());
    let net = NetworkConfig::new("demo", &["10.90.0.0/24".parse()?], None, &[], 1500)?;
    step("ferrynet network create demo --subnet 10.90.0.0/24");
    host.run(|| -> Result<()> {
        st.insert(&net)?;
        driver.ensure_network(&mut Handle::new()?, &net)?;
        Ok(())
    })??;
    println!(
        "  bridge {} with gateway {}/24, masquerade and isolation in nftables table inet ferrynet",
        net.bridge,
        net.gateways()[0]
    );

    step("ferrynet attach: c1 (publishing 8080 -> 80) and c2");
    let attach = |ns: &Netns, ports: Vec<PortMapping>| -> Result<Endpoint> {
        let req = AttachRequest {
            netns: ns.path().to_path_buf(),
            container_id: ns
                .path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            ifname: "eth0".into(),
            address: AddressRequest::default(),
            mac: None,
            ports,
            routes: RouteSpec::defaults(),
            identity: None,
        };
        Ok(host.run(|| driver.attach(&net, &req))??)
    };
    let ep1 = attach(
        &c1,
        vec!["8080:80/tcp".parse().map_err(anyhow::Error::msg)?],
    )?;
    let ep2 = attach(&c2, vec![])?;
    for ep in [&ep1, &ep2] {
        println!(
            "  {:<18} eth0 {} mac {}  <-veth->  host {} (ifindex {})",
            ep.container_id,
            ep.ip.unwrap(),
            ep.mac,
            ep.host_veth,
            ep.host_ifindex.unwrap()
        );
    }

    step("the veth pairing (ip link / brctl show)");
    for (ns, ep) in [(&c1, &ep1), (&c2, &ep2)] {
        // iflink, read over netlink: /sys shows the namespace sysfs was mounted in, not ours.
        let eth0 = ns.run(|| Handle::new().and_then(|mut h| h.link_by_name("eth0")))??;
        let iflink = eth0
            .and_then(|l| l.peer_index)
            .map(|i| i.to_string())
            .unwrap_or_default();
        let master = host.run(|| -> Result<Option<u32>> {
            let mut h = Handle::new()?;
            Ok(h.link_by_name(&ep.host_veth)?.and_then(|l| l.master))
        })??;
        let bridge = host.run(|| Handle::new().and_then(|mut h| h.link_by_name(&net.bridge)))??;
        check(
            iflink.trim() == ep.host_ifindex.unwrap().to_string(),
            &format!(
                "{}: /sys/class/net/eth0/iflink = {} = ifindex of host veth {}",
                ep.container_id,
                iflink.trim(),
                ep.host_veth
            ),
        )?;
        check(
            master.is_some() && master == bridge.map(|b| b.index),
            &format!("{} is a port of bridge {}", ep.host_veth, net.bridge),
        )?;
    }

    step("same host: c1 -> c2 over the bridge (ARP, then L2 switching)");
    let ip2 = ep2.ip.unwrap().addr();
    let _c2_server = Server::start(&c2, Ipv4Addr::UNSPECIFIED, 7000, "c2")?;
    let reply = fetch(&c1, ip2, 7000)?;
    check(
        reply == Some(greeting("c2")),
        &format!("c1 connects to {ip2}:7000 and c2 answers"),
    )?;
    let neigh = c1.run(|| Handle::new().and_then(|mut h| h.neighbours(None)))??;
    let learned = neigh.iter().find(|n| n.ip == ip2);
    check(
        learned.and_then(|n| n.mac) == Some(ep2.mac),
        &format!("c1's ARP table (ip neigh): {ip2} lladdr {}", ep2.mac),
    )?;

    step("to the outside: c1 -> world, masqueraded to the host's uplink address");
    let world_server = Server::start(&world, WORLD_IP, 80, "world")?;
    let reply = fetch(&c1, WORLD_IP, 80)?;
    check(
        reply == Some(greeting("world")),
        &format!("c1 reaches {WORLD_IP}:80 through the host"),
    )?;
    let seen = world_server.peers();
    check(
        seen.first() == Some(&HOST_UPLINK.into()),
        &format!(
            "the world server saw source {} (the host's uplink), not c1's {}",
            fmt_peers(&seen),
            ep1.ip.unwrap().addr()
        ),
    )?;

    step("published port: world -> host:8080 -> c1:80 (DNAT)");
    let c1_server = Server::start(&c1, Ipv4Addr::UNSPECIFIED, 80, "c1")?;
    let reply = fetch(&world, HOST_UPLINK, 8080)?;
    check(
        reply == Some(greeting("c1")),
        &format!("world connects to {HOST_UPLINK}:8080 and c1 answers"),
    )?;
    let reply = fetch(&c2, HOST_UPLINK, 8080)?;
    check(
        reply == Some(greeting("c1")),
        "hairpin: c2 reaches c1 through the host's published port",
    )?;
    drop(c1_server);

    step("ferrynet detach");
    for ep in [&ep1, &ep2] {
        host.run(|| driver.detach(&net, &ep.container_id, &ep.ifname))??;
        println!(
            "  detached {} ({} deleted, {} released)",
            ep.container_id,
            ep.host_veth,
            ep.ip.unwrap().addr()
        );
    }
    if !a.keep {
        host.run(|| driver.remove_network(&net))??;
    }
    cross_host(&host, &state)?;
    println!("\nall checks passed");
    Ok(())
}

/// Connects `host` and a second host over a fabric with the agent (VXLAN, embedded store),
/// attaches a pod on each, and shows the cross-host path.
fn cross_host(host_a: &Netns, state: &std::path::Path) -> Result<()> {
    step("two hosts on a fabric (10.200.0.0/24), each running `ferrynet agent --backend vxlan --store file:...`");
    let fabric = Netns::open(&netns::create_named(FABRIC)?)?;
    let host_b = Netns::open(&netns::create_named(HOST_B)?)?;
    let fab0 = fabric.run(|| -> Result<u32> {
        let mut h = Handle::new()?;
        h.create_bridge("fab0", 1500, Mac::from_seed("fab0"))?;
        let l = h.link_by_name("fab0")?.context("fab0 vanished")?;
        h.set_up(l.index)?;
        Ok(l.index)
    })??;
    for (ns, ip, port) in [
        (host_a, "10.200.0.11/24", "pa"),
        (&host_b, "10.200.0.12/24", "pb"),
    ] {
        fabric.run(|| -> Result<()> {
            let mut h = Handle::new()?;
            h.create_veth(&VethSpec {
                host_name: port,
                host_mac: None,
                peer_name: "eth0",
                peer_netns: ns.fd(),
                peer_mac: None,
                mtu: 1500,
                master: Some(fab0),
                big_packets: None,
            })?;
            let l = h.link_by_name(port)?.context("fabric port vanished")?;
            h.set_up(l.index)?;
            Ok(())
        })??;
        ns.run(|| -> Result<()> {
            let mut h = Handle::new()?;
            let l = h.link_by_name("eth0")?.context("eth0 vanished")?;
            h.add_addr(l.index, ip.parse::<ipnet::IpNet>()?)?;
            h.set_up(l.index)?;
            h.set_up(1)?;
            Ok(())
        })??;
        println!("  {}: eth0 {ip}", ns.path().display());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let store = state.join("cluster.json");
    let mut agents = Vec::new();
    for (path, node) in [
        (host_a.path().to_path_buf(), "host-a"),
        (host_b.path().to_path_buf(), "host-b"),
    ] {
        let cfg = AgentConfig {
            store: format!("file:{}", store.display()),
            prefix: crate::cluster::DEFAULT_PREFIX.into(),
            etcd_tls: None,
            cluster: ClusterConfig::v4("10.244.0.0/16".parse()?, 24, BackendKind::Vxlan),
            iface: Some("eth0".into()),
            public_ip: None,
            public_ip6: None,
            node_name: node.into(),
            lease_ttl: Duration::from_secs(60),
            subnet_file: state.join(node).join("subnet.env"),
            release_on_exit: true,
            vni: 1,
            port: 8472,
            resync: Duration::from_secs(30),
            state: None,
            log_drops: false,
            metrics: None,
            bgp: None,
        };
        let stop = stop.clone();
        agents.push(std::thread::spawn(move || -> Result<()> {
            Netns::open(&path)?.run(|| crate::agent::run(&cfg, &stop))??;
            Ok(())
        }));
    }
    let result = pods_across(host_a, &host_b, state);
    stop.store(true, Ordering::SeqCst);
    for a in agents {
        a.join()
            .map_err(|_| anyhow::anyhow!("agent thread panicked"))??;
    }
    result
}

fn read_lease(path: &std::path::Path) -> Option<(ipnet::Ipv4Net, u32)> {
    let text = std::fs::read_to_string(path).ok()?;
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    Some((
        get("FERRYNET_SUBNET=")?.parse().ok()?,
        get("FERRYNET_MTU=")?.parse().ok()?,
    ))
}

fn pods_across(host_a: &Netns, host_b: &Netns, state: &std::path::Path) -> Result<()> {
    let mut pods = Vec::new();
    for (host, node, pod) in [(host_a, "host-a", C3), (host_b, "host-b", C4)] {
        let file = state.join(node).join("subnet.env");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (subnet, mtu) = loop {
            if let Some(l) = read_lease(&file) {
                break l;
            }
            if std::time::Instant::now() > deadline {
                bail!("the agent on {node} leased no subnet");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        println!(
            "  {node} leased {subnet} (pod MTU {mtu}, written to {})",
            file.display()
        );
        let net = NetworkConfig::new("pods", &[subnet.into()], Some("fypods0"), &[], mtu)?;
        let driver = Driver::new(StateDir::new(state.join(node)));
        let ns = Netns::open(&netns::create_named(pod)?)?;
        let req = AttachRequest::simple(ns.path(), pod);
        let ep = host.run(|| driver.attach(&net, &req))??;
        println!("  {pod} on {node}: eth0 {}", ep.ip.unwrap());
        pods.push((ns, ep));
    }

    step("cross-host: c3 (host A) -> c4 (host B) through the VXLAN overlay");
    let (c3, ep3) = &pods[0];
    let (c4, ep4) = &pods[1];
    let ip4 = ep4.ip.unwrap().addr();
    let server = Server::start(c4, Ipv4Addr::UNSPECIFIED, 7000, "c4")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let r = fetch(c3, ip4, 7000)?;
        if r.is_some() || std::time::Instant::now() > deadline {
            break r;
        }
    };
    check(
        reply == Some(greeting("c4")),
        &format!("c3 connects to {ip4}:7000 on the other host"),
    )?;
    check(
        server.peers().first() == ep3.ip.map(|n| n.addr().into()).as_ref(),
        &format!(
            "c4 sees c3's own address {} (no masquerade inside the cluster)",
            ep3.ip.unwrap().addr()
        ),
    )?;

    step("what carries it, on host A (ip route show proto 211 / bridge fdb / ip neigh on ferry.1)");
    host_a.run(|| -> Result<()> {
        let mut h = Handle::new()?;
        let vx = h.link_by_name("ferry.1")?.context("ferry.1 missing")?;
        for r in h
            .routes()?
            .iter()
            .filter(|r| r.protocol == crate::netlink::PROTO_FERRYNET)
        {
            println!(
                "  route {} via {} dev ferry.1 onlink",
                r.dst,
                r.gateway.map(|g| g.to_string()).unwrap_or_default()
            );
        }
        for (mac, ip) in h.fdb(vx.index)? {
            println!("  fdb   {mac} dst {ip} (host B's VTEP) permanent");
        }
        for n in h.neighbours(Some(vx.index))? {
            println!(
                "  neigh {} lladdr {} permanent",
                n.ip,
                n.mac.map(|m| m.to_string()).unwrap_or_default()
            );
        }
        Ok(())
    })??;
    Ok(())
}

fn fmt_peers(p: &[std::net::IpAddr]) -> String {
    p.first().map(|i| i.to_string()).unwrap_or("nothing".into())
}

/// Inside the host namespace: a veth to the world namespace, addresses, up.
fn build_uplink(world: &Netns) -> Result<()> {
    let mut h = Handle::new()?;
    h.create_veth(&VethSpec {
        host_name: "uplink0",
        host_mac: None,
        peer_name: "wan0",
        peer_netns: world.fd(),
        peer_mac: None,
        mtu: 1500,
        master: None,
        big_packets: None,
    })?;
    let up = h.link_by_name("uplink0")?.context("uplink0 vanished")?;
    h.add_addr(up.index, "10.201.0.1/24".parse::<ipnet::IpNet>()?)?;
    h.set_up(up.index)?;
    h.set_up(1)?;
    world.run(|| -> Result<()> {
        let mut w = Handle::new()?;
        let wan = w.link_by_name("wan0")?.context("wan0 vanished")?;
        w.add_addr(wan.index, "10.201.0.2/24".parse::<ipnet::IpNet>()?)?;
        w.set_up(wan.index)?;
        w.set_up(1)?;
        // The world knows no route to the containers: only masquerade lets them talk to it.
        Ok(())
    })??;
    Ok(())
}
