//! A simulated cluster: hosts (namespaces) on a fabric, each running `ferrynet agent` with the
//! embedded file store, containers attached through the CNI plugin with "subnet": "auto".

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use common::*;

struct Cluster {
    hosts: Vec<Host>,
    agents: Vec<Agent>,
    _fabric: Fabric,
    store: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.agents.clear();
        let _ = std::fs::remove_file(&self.store);
        let _ = std::fs::remove_file(self.store.with_extension("lock"));
    }
}

fn cluster(n: usize, backend: &str) -> Cluster {
    let fabric = Fabric::new();
    let store = std::env::temp_dir().join(format!("ferrynet-cluster-{}.json", fabric.ns.name));
    let hosts: Vec<Host> = (0..n).map(|_| Host::new()).collect();
    let mut agents = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        fabric.plug(h, &format!("10.200.0.{}", 11 + i), &format!("p{i}"));
        agents.push(Agent::start(h, &store, backend, &format!("node{i}"), &[]));
    }
    Cluster {
        hosts,
        agents,
        _fabric: fabric,
        store,
    }
}

/// Two containers per host; every container pings every other; a TCP peer on the last host
/// sees the client's own address; the first host's container reaches the world masqueraded.
fn full_mesh(backend: &str) {
    let c = cluster(3, backend);
    let subnets: Vec<String> = c.hosts.iter().map(leased_subnet).collect();
    let mut unique = subnets.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "distinct subnets: {subnets:?}");

    let mut pods = Vec::new();
    for h in &c.hosts {
        for _ in 0..2 {
            let ns = Ns::new("c");
            let r = cni_add(h, &ns, &pod_conf(h));
            pods.push((ns, ip_of(&r)));
        }
    }
    for (from, _) in &pods {
        for (_, to) in &pods {
            assert!(
                eventually(10, || from.ping(&to.to_string())),
                "{backend}: {} cannot reach {to}",
                from.name
            );
        }
    }
    // The MTU is right: a 1,400-byte payload crosses with "don't fragment" (VXLAN's 50 bytes
    // of overhead are taken off the pods' MTU), and a bulk transfer gets through.
    let (from, _) = &pods[0];
    let (_, far) = &pods[5];
    let big = sh(&mut from.cmd(&[
        "ping",
        "-c1",
        "-W2",
        "-s",
        "1400",
        "-M",
        "do",
        &far.to_string(),
    ]));
    assert!(
        big.status.success(),
        "{backend}: 1,400-byte ping: {}",
        String::from_utf8_lossy(&big.stdout)
    );
    let (far_ns, _) = &pods[5];
    let mut iperf_server = far_ns
        .cmd(&["iperf3", "-s", "-1", "-B", &far.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let bulk = sh(&mut from.cmd(&["iperf3", "-c", &far.to_string(), "-n", "20M", "-J"]));
    let _ = iperf_server.kill();
    let _ = iperf_server.wait();
    assert!(
        bulk.status.success(),
        "{backend}: bulk transfer: {}",
        String::from_utf8_lossy(&bulk.stdout)
    );
    let mtu = from.exec(&["cat", "/sys/class/net/eth0/mtu"]);
    let expected = if backend == "host-gw" { "1500" } else { "1450" };
    assert_eq!(mtu.trim(), expected, "{backend}: pod MTU");
    // No masquerade inside the cluster.
    let (server_ns, server_ip) = &pods[5];
    let server = server(server_ns, Ipv4Addr::UNSPECIFIED, 7000, "c");
    let (client, client_ip) = &pods[0];
    assert_eq!(
        fetch(client, *server_ip, 7000),
        Some("hello from c\n".into())
    );
    assert_eq!(
        server.peers(),
        vec![std::net::IpAddr::from(*client_ip)],
        "the server sees the client's own address"
    );
    // The world, behind host 0, sees host 0's address.
    let world = World::attach_to(&c.hosts[0]);
    let ws = common::server(&world.ns, world.ip, 80, "world");
    assert_eq!(
        fetch(client, world.ip, 80),
        Some("hello from world\n".into())
    );
    assert_eq!(ws.peers(), vec![std::net::IpAddr::from(world.host_ip)]);
}

#[test]
fn vxlan_full_mesh() {
    full_mesh("vxlan");
}

#[test]
fn host_gw_full_mesh() {
    full_mesh("host-gw");
}

#[test]
fn auto_full_mesh() {
    full_mesh("auto");
}

#[test]
fn a_departed_host_is_unrouted_and_a_new_one_routed() {
    let mut c = cluster(2, "vxlan");
    let gone = leased_subnet(&c.hosts[1]);
    let routes = |h: &Host| h.ns.exec(&["ip", "route", "show", "proto", "211"]);
    assert!(eventually(10, || routes(&c.hosts[0]).contains(&gone)));
    // Host 1 leaves gracefully with --release-on-exit: its lease goes with it.
    c.agents[1].stop();
    // (Its subnet file goes too, so that start() waits for the restarted agent's lease.)
    std::fs::remove_file(subnet_file(&c.hosts[1])).unwrap();
    let store = c.store.clone();
    c.agents[1] = Agent::start(
        &c.hosts[1],
        &store,
        "vxlan",
        "node1",
        &["--release-on-exit"],
    );
    assert_eq!(leased_subnet(&c.hosts[1]), gone);
    c.agents[1].stop();
    let leases = std::fs::read_to_string(&c.store).unwrap();
    assert!(!leases.contains(&gone.replace('/', "-")), "{leases}");
    assert!(
        eventually(10, || !routes(&c.hosts[0]).contains(&gone)),
        "route to the departed host's subnet is gone: {}",
        routes(&c.hosts[0])
    );
    let fdb = c.hosts[0]
        .ns
        .exec(&["bridge", "fdb", "show", "dev", "ferry.1"]);
    assert!(!fdb.contains("10.200.0.12"), "{fdb}");
    // A new host joins and is routed from the first.
    let h = Host::new();
    c._fabric.plug(&h, "10.200.0.20", "p9");
    let store = c.store.clone();
    c.agents
        .push(Agent::start(&h, &store, "vxlan", "node9", &[]));
    let new_subnet = leased_subnet(&h);
    assert!(eventually(10, || routes(&c.hosts[0]).contains(&new_subnet)));
    c.hosts.push(h);
}

/// A lease taken over by another node in the store (split brain, an operator's mistake): the
/// agent acquires another subnet and republishes it — subnet file, VXLAN address, peers' routes
/// — so new containers on that host are reachable again.
#[test]
fn a_lost_lease_is_replaced_and_republished() {
    let c = cluster(2, "vxlan");
    let before = leased_subnet(&c.hosts[1]);
    {
        let _lock = ferrynet::util::FileLock::acquire(&c.store.with_extension("lock")).unwrap();
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&c.store).unwrap()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let lease = &mut v["subnets"][before.replace('/', "-")];
        lease["node"] = "intruder".into();
        lease["expires"] = (now + 3600).into();
        v["revision"] = (v["revision"].as_u64().unwrap() + 1).into();
        ferrynet::util::write_atomic(&c.store, &serde_json::to_vec(&v).unwrap()).unwrap();
    }
    assert!(
        eventually(15, || leased_subnet(&c.hosts[1]) != before),
        "host 1 never moved off {before}"
    );
    let after: ipnet::Ipv4Net = leased_subnet(&c.hosts[1]).parse().unwrap();
    let vtep = c.hosts[1]
        .ns
        .exec(&["ip", "-4", "-o", "addr", "show", "dev", "ferry.1"]);
    assert!(
        vtep.contains(&format!("{}/32", after.network())),
        "VXLAN address follows: {vtep}"
    );
    let a = Ns::new("c");
    let b = Ns::new("c");
    cni_add(&c.hosts[0], &a, &pod_conf(&c.hosts[0]));
    let target = ip_of(&cni_add(&c.hosts[1], &b, &pod_conf(&c.hosts[1])));
    assert!(after.contains(&target), "{target} in {after}");
    assert!(eventually(15, || a.ping(&target.to_string())));
}

#[test]
fn a_restarted_agent_keeps_its_subnet_and_the_traffic() {
    let mut c = cluster(2, "vxlan");
    let before = leased_subnet(&c.hosts[1]);
    let a = Ns::new("c");
    let b = Ns::new("c");
    cni_add(&c.hosts[0], &a, &pod_conf(&c.hosts[0]));
    let rb = cni_add(&c.hosts[1], &b, &pod_conf(&c.hosts[1]));
    let target = ip_of(&rb).to_string();
    assert!(eventually(10, || a.ping(&target)));
    // kill -9 and restart under a continuous ping at 100 packets/s: nothing is flushed on
    // either side, so at most one packet may be lost.
    let ping = ContinuousPing::start(&a, &target, "0.01");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut child = c.agents[1].child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let store = c.store.clone();
    c.agents[1] = Agent::start(&c.hosts[1], &store, "vxlan", "node1", &[]);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let (sent, received) = ping.stop();
    assert!(sent > 100, "the ping ran ({sent} sent)");
    assert!(
        sent - received <= 1,
        "lost {} of {sent} packets across the restart",
        sent - received
    );
    assert_eq!(
        leased_subnet(&c.hosts[1]),
        before,
        "the same subnet comes back"
    );
    assert!(a.ping(&target));
}

/// Two fabrics joined by a router namespace: hosts 0 and 1 on 10.200.0.0/24, host 2 on
/// 10.210.0.0/24, each with a default route via the router.
fn routed_cluster(backend: &str) -> (Cluster, Fabric, Ns) {
    let f1 = Fabric::new();
    let f2 = Fabric::new();
    let router = router(&[(&f1, "10.200.0.1/24"), (&f2, "10.210.0.1/24")]);
    let store = std::env::temp_dir().join(format!("ferrynet-cluster-{}.json", f1.ns.name));
    let hosts: Vec<Host> = (0..3).map(|_| Host::new()).collect();
    let mut agents = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        plug_routed(&f1, &f2, h, i);
        let metrics: &[&str] = if i == 0 {
            &["--metrics", "127.0.0.1:9105"]
        } else {
            &[]
        };
        agents.push(Agent::start(
            h,
            &store,
            backend,
            &format!("node{i}"),
            metrics,
        ));
    }
    let c = Cluster {
        hosts,
        agents,
        _fabric: f1,
        store,
    };
    (c, f2, router)
}

#[test]
fn vxlan_crosses_a_router() {
    let (c, _f2, _router) = routed_cluster("vxlan");
    let pods = pods_on(&c.hosts);
    for (from, _) in &pods {
        for (_, to) in &pods {
            assert!(
                eventually(10, || from.ping(&to.to_string())),
                "{} -> {to}",
                from.name
            );
        }
    }
}

#[test]
fn host_gw_refuses_peers_behind_a_router() {
    let (c, _f2, _router) = routed_cluster("host-gw");
    let pods = pods_on(&c.hosts);
    // Same segment: routed directly.
    assert!(eventually(10, || pods[0].0.ping(&pods[1].1.to_string())));
    // Across the router: refused, with a log line, never a broken route.
    let far = leased_subnet(&c.hosts[2]);
    let routes = c.hosts[0].ns.exec(&["ip", "route", "show", "proto", "211"]);
    assert!(!routes.contains(&far), "{routes}");
    let log = std::fs::read_to_string(c.hosts[0].state.join("agent-node0.log")).unwrap();
    assert!(
        eventually(5, || std::fs::read_to_string(
            c.hosts[0].state.join("agent-node0.log")
        )
        .unwrap()
        .contains("not on this L2 segment")),
        "{log}"
    );
    assert!(!pods[0].0.ping(&pods[2].1.to_string()));
    // ... and counted in the metrics.
    let metrics = c.hosts[0].ns.run(|| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:9105").unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    assert!(metrics.contains("ferrynet_peers_refused 1"), "{metrics}");
    assert!(
        metrics.contains("ferrynet_peers{family=\"ipv4\",path=\"direct\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ferrynet_store_up 1"), "{metrics}");
}

#[test]
fn auto_picks_direct_routes_or_vxlan_per_peer() {
    let (c, _f2, _router) = routed_cluster("auto");
    let pods = pods_on(&c.hosts);
    for (from, _) in &pods {
        for (_, to) in &pods {
            assert!(
                eventually(10, || from.ping(&to.to_string())),
                "{} -> {to}",
                from.name
            );
        }
    }
    let routes = c.hosts[0].ns.exec(&["ip", "route", "show", "proto", "211"]);
    let near = leased_subnet(&c.hosts[1]);
    let far = leased_subnet(&c.hosts[2]);
    let line = |s: &str| {
        routes
            .lines()
            .find(|l| l.starts_with(s))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line(&near).contains("via 10.200.0.12 dev eth0"), "{routes}");
    assert!(line(&far).contains("dev ferry.1"), "{routes}");
}

#[test]
fn agents_racing_on_an_empty_store_get_distinct_subnets() {
    let fabric = Fabric::new();
    let store = std::env::temp_dir().join(format!("ferrynet-race-{}.json", fabric.ns.name));
    let hosts: Vec<Host> = (0..5).map(|_| Host::new()).collect();
    for (i, h) in hosts.iter().enumerate() {
        fabric.plug(h, &format!("10.200.0.{}", 11 + i), &format!("p{i}"));
    }
    // All five start at once.
    let agents: Vec<Agent> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let store = &store;
                s.spawn(move || Agent::start(h, store, "vxlan", &format!("racer{i}"), &[]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut subnets: Vec<String> = hosts.iter().map(leased_subnet).collect();
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), 5, "{subnets:?}");
    drop(agents);
    let _ = std::fs::remove_file(&store);
    let _ = std::fs::remove_file(store.with_extension("lock"));
}

#[test]
fn an_expired_peer_loses_its_routes_and_nothing_else() {
    let mut c = cluster(3, "vxlan");
    let routes = |h: &Host| h.ns.exec(&["ip", "route", "show", "proto", "211"]);
    let (s1, s2) = (leased_subnet(&c.hosts[1]), leased_subnet(&c.hosts[2]));
    assert!(eventually(10, || {
        let r = routes(&c.hosts[0]);
        r.contains(&s1) && r.contains(&s2)
    }));
    // Host 2 dies without a word (kill -9): its 6 s lease runs out.
    let mut child = c.agents[2].child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        eventually(15, || !routes(&c.hosts[0]).contains(&s2)),
        "the expired peer's route is gone: {}",
        routes(&c.hosts[0])
    );
    assert!(
        routes(&c.hosts[0]).contains(&s1),
        "the live peer's route stays"
    );
    let fdb = c.hosts[0]
        .ns
        .exec(&["bridge", "fdb", "show", "dev", "ferry.1"]);
    assert!(
        fdb.contains("10.200.0.12") && !fdb.contains("10.200.0.13"),
        "{fdb}"
    );
}

#[test]
fn an_agent_crashing_while_it_reconciles_does_not_disturb_traffic() {
    let mut c = cluster(2, "vxlan");
    let a = Ns::new("c");
    let b = Ns::new("c");
    cni_add(&c.hosts[0], &a, &pod_conf(&c.hosts[0]));
    let rb = cni_add(&c.hosts[1], &b, &pod_conf(&c.hosts[1]));
    let target = ip_of(&rb).to_string();
    assert!(eventually(10, || a.ping(&target)));
    let ping = ContinuousPing::start(&a, &target, "0.01");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let store = c.store.clone();
    // Restarted with a crash injected into its reconcile: it aborts (like kill -9) midway.
    c.agents[0].stop();
    let mut crashing = Agent::start_with_env(
        &c.hosts[0],
        &store,
        "vxlan",
        "node0",
        &[],
        &[("FERRYNET_FAILPOINT", "agent.reconcile")],
    );
    let mut child = crashing.child.take().unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.code().is_none(),
        "the agent aborted at the failpoint"
    );
    // A clean restart converges again.
    c.agents[0] = Agent::start(&c.hosts[0], &store, "vxlan", "node0", &[]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (sent, received) = ping.stop();
    assert!(sent > 50, "{sent}");
    assert!(sent - received <= 1, "lost {} of {sent}", sent - received);
}

#[test]
fn an_agent_with_bad_settings_stops_before_touching_the_store_or_the_host() {
    let fabric = Fabric::new();
    let host = Host::new();
    fabric.plug(&host, "10.200.0.11", "p1");
    host.ns
        .exec(&["ip", "route", "add", "default", "via", "10.200.0.1"]);
    let store = host.state.join("cluster.json");
    let store_arg = format!("file:{}", store.display());
    let base = ["agent", "--store", &store_arg, "--backend", "vxlan"];
    for (extra, expect) in [
        (
            &["--cluster-cidr", "10.200.0.0/16"][..],
            "invalid --cluster-cidr \"10.200.0.0/16\": overlaps the host's route 10.200.0.0/24 dev eth0",
        ),
        (&["--cluster-cidr", "0.0.0.0/0"][..], "is the whole address space"),
        (&["--cluster-cidr", "127.0.0.0/8"][..], "loopback"),
        (
            &["--cluster-cidr", "10.244.0.0/16", "--subnet-len", "12"][..],
            "subnet length /12 must be longer",
        ),
        (&["--cluster-cidr", "10.244.0.0/16", "--vni", "16777216"][..], "invalid --vni"),
        (&["--cluster-cidr", "10.244.0.0/16", "--vxlan-port", "0"][..], "invalid --vxlan-port"),
        (
            &["--cluster-cidr", "10.244.0.0/16", "--public-ip", "10.9.9.9"][..],
            "no interface has --public-ip 10.9.9.9",
        ),
        (
            &["--cluster-cidr", "10.244.0.0/16", "--node-name", "../h1"][..],
            "invalid --node-name",
        ),
        (
            &["--cluster-cidr", "10.244.0.0/16", "--vxlan-underlay", "ipv6"][..],
            "--vxlan-underlay ipv6 needs an IPv6 address on the uplink",
        ),
    ] {
        let before = host.snapshot();
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let out = host.try_ferrynet(&args);
        assert!(!out.status.success(), "{extra:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{extra:?}: expected {expect:?} in {err}");
        assert!(!store.exists(), "{extra:?} wrote the store");
        assert_eq!(host.snapshot(), before, "{extra:?} changed the host");
    }
}

/// Hosts with an IPv4 and an IPv6 underlay address, agents leasing both families.
fn dual_cluster(n: usize, backend: &str, more: &[&str]) -> Cluster {
    let fabric = Fabric::new();
    let store = std::env::temp_dir().join(format!("ferrynet-cluster-{}.json", fabric.ns.name));
    let hosts: Vec<Host> = (0..n).map(|_| Host::new()).collect();
    let mut agents = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        fabric.plug(h, &format!("10.200.0.{}", 11 + i), &format!("p{i}"));
        let ip6 = format!("fd00:200::{}", 11 + i);
        h.ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{ip6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        let mut extra = vec!["--cluster-cidr", "fd00:244::/56", "--public-ip", &ip6];
        extra.extend_from_slice(more);
        agents.push(Agent::start(
            h,
            &store,
            backend,
            &format!("node{i}"),
            &extra,
        ));
    }
    Cluster {
        hosts,
        agents,
        _fabric: fabric,
        store,
    }
}

fn ip6_of(result: &serde_json::Value) -> std::net::Ipv6Addr {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no IPv6 address in {result}"))
}

/// Pods on every host reach each other over IPv6 with their own source address, with
/// full-size packets (a 1,400-byte don't-fragment probe) and a bulk transfer.
fn dual_stack_mesh(backend: &str, route: impl Fn(usize) -> String) {
    dual_stack_mesh_with(backend, &[], route);
}

fn dual_stack_mesh_with(backend: &str, more: &[&str], route: impl Fn(usize) -> String) -> Cluster {
    let c = dual_cluster(2, backend, more);
    for h in &c.hosts {
        let env = std::fs::read_to_string(subnet_file(h)).unwrap();
        assert!(env.contains("FERRYNET_SUBNET6=fd00:244:"), "{env}");
    }
    let pods: Vec<(Ns, std::net::Ipv6Addr)> = c
        .hosts
        .iter()
        .map(|h| {
            let ns = Ns::new("c");
            let r = cni_add(h, &ns, &pod_conf(h));
            (ns, ip6_of(&r))
        })
        .collect();
    let (a, a6) = &pods[0];
    let (b, b6) = &pods[1];
    assert!(
        eventually(30, || a.ping(&b6.to_string())),
        "{backend}: pod on host 0 cannot reach {b6}"
    );
    assert!(b.ping(&a6.to_string()), "{backend}: and back");
    let mut big = a.cmd(&[
        "ping",
        "-6",
        "-c1",
        "-W2",
        "-M",
        "do",
        "-s",
        "1352",
        &b6.to_string(),
    ]);
    assert!(
        sh(&mut big).status.success(),
        "{backend}: a 1,400-byte IPv6 packet does not fit the path"
    );
    // The peer sees the pod's own address: IPv6 inside the cluster is not masqueraded.
    let srv = server(b, *b6, 7000, "b");
    assert_eq!(fetch(a, *b6, 7000), Some("hello from b\n".into()));
    assert_eq!(srv.peers(), vec![std::net::IpAddr::V6(*a6)]);
    drop(srv);
    let iperf = b
        .cmd(&["iperf3", "-s", "-1", "-B", &b6.to_string()])
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(iperf);
    assert!(eventually(5, || sh(&mut a.cmd(&[
        "iperf3",
        "-6",
        "-c",
        &b6.to_string(),
        "-n",
        "4M"
    ]))
    .status
    .success()));
    let routes = c.hosts[0]
        .ns
        .exec(&["ip", "-6", "route", "show", "proto", "211"]);
    assert!(routes.contains(&route(1)), "{backend}: {routes}");
    c
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dual_stack_pods_over_vxlan() {
    // IPv6 crosses the VXLAN tunnel over the IPv4 underlay.
    dual_stack_mesh("vxlan", |_| "dev ferry.1".to_string());
}

#[test]
fn dual_stack_pods_over_vxlan_on_an_ipv6_underlay() {
    let c = dual_stack_mesh_with("vxlan", &["--vxlan-underlay", "ipv6"], |_| {
        "dev ferry.1".to_string()
    });
    // The tunnel runs between the hosts' IPv6 addresses, and costs 70 bytes, not 50.
    let h0 = &c.hosts[0].ns;
    let dev = h0.exec(&["ip", "-d", "link", "show", "ferry.1"]);
    assert!(dev.contains("local fd00:200::11"), "{dev}");
    assert!(dev.contains("mtu 1430"), "{dev}");
    let fdb = h0.exec(&["bridge", "fdb", "show", "dev", "ferry.1"]);
    assert!(fdb.contains("dst fd00:200::12"), "{fdb}");
    let env = std::fs::read_to_string(subnet_file(&c.hosts[0])).unwrap();
    assert!(env.contains("FERRYNET_MTU=1430"), "{env}");
    // IPv4 pods cross the IPv6 tunnel too, full-size.
    let a = Ns::new("c");
    let b = Ns::new("c");
    cni_add(&c.hosts[0], &a, &pod_conf(&c.hosts[0]));
    let b4 = ip_of(&cni_add(&c.hosts[1], &b, &pod_conf(&c.hosts[1]))).to_string();
    assert!(
        eventually(10, || a.ping(&b4)),
        "IPv4 over the IPv6 underlay"
    );
    let big = sh(&mut a.cmd(&["ping", "-c1", "-W2", "-M", "do", "-s", "1372", &b4]));
    assert!(big.status.success(), "a 1,400-byte IPv4 packet fits");
}

#[test]
fn dual_stack_pods_over_host_gw() {
    dual_stack_mesh("host-gw", |i| format!("via fd00:200::{} dev eth0", 11 + i));
}

#[test]
fn dual_stack_pods_over_auto() {
    dual_stack_mesh("auto", |i| format!("via fd00:200::{} dev eth0", 11 + i));
}
