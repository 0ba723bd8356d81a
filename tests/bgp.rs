//! The bgp backend: every host's agent drives its own BIRD (Debian's bird2), announcing its
//! subnet; routers in the tests are namespaces running their own BIRD. No encapsulation:
//! learned routes are plain kernel routes with protocol "bird".

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

/// A BIRD started by the test in a router namespace (killed with the namespace).
struct RouterBird {
    dir: PathBuf,
}

impl RouterBird {
    /// `neighbors`: (address, AS, route-reflector client).
    fn start(router: &Ns, id: &str, asn: u32, neighbors: &[(&str, u32, bool)]) -> RouterBird {
        let dir = std::env::temp_dir().join(format!("ferrynet-test-bird-{}", router.name));
        std::fs::create_dir_all(&dir).unwrap();
        let mut conf = format!(
            "router id {id};\nprotocol device {{ }}\nprotocol direct {{ ipv4; }}\n\
             protocol kernel {{ ipv4 {{ import none; export where source = RTS_BGP; }}; }}\n\
             template bgp host {{ local as {asn}; hold time 6; keepalive time 2;\n\
             connect retry time 5; error wait time 1, 10; graceful restart off;\n\
             ipv4 {{ import all; export all; }}; }}\n"
        );
        for (i, (ip, their_as, rr)) in neighbors.iter().enumerate() {
            let rr = if *rr { "rr client;" } else { "" };
            conf.push_str(&format!(
                "protocol bgp h{i} from host {{ neighbor {ip} as {their_as}; {rr} }}\n"
            ));
        }
        let path = dir.join("bird.conf");
        std::fs::write(&path, conf).unwrap();
        router.exec(&[
            "bird",
            "-c",
            path.to_str().unwrap(),
            "-s",
            dir.join("bird.ctl").to_str().unwrap(),
        ]);
        RouterBird { dir }
    }
}

impl Drop for RouterBird {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kernel routes for `subnet` (either family) in `ns`, as `ip -j route` objects.
fn routes_to(ns: &Ns, subnet: &str) -> Vec<serde_json::Value> {
    let family = if subnet.contains(':') { "-6" } else { "-4" };
    let out = ns.exec(&["ip", "-j", family, "route", "show", subnet]);
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap_or_default()
}

/// Waits until `ns` has a BIRD route to `subnet` via `gateway`.
fn learns(ns: &Ns, subnet: &str, gateway: &str, secs: u64) -> bool {
    eventually(secs, || {
        routes_to(ns, subnet)
            .iter()
            .any(|r| r["protocol"] == "bird" && r["gateway"] == gateway)
    })
}

fn forgets(ns: &Ns, subnet: &str, secs: u64) -> bool {
    eventually(secs, || {
        !routes_to(ns, subnet)
            .iter()
            .any(|r| r["protocol"] == "bird")
    })
}

fn no_vxlan(host: &Host) -> bool {
    !sh(&mut host.ns.cmd(&["ip", "link", "show", "ferry.1"]))
        .status
        .success()
}

fn bird_pid(host: &Host) -> String {
    std::fs::read_to_string(host.state.join("bird/bird.pid"))
        .unwrap()
        .trim()
        .to_string()
}

/// How many BIRD processes run in `host`'s namespace.
fn birds_in(host: &Host) -> usize {
    let out = ok(std::process::Command::new("ip").args(["netns", "pids", &host.ns.name]));
    out.split_whitespace()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "bird")
        })
        .count()
}

fn bgp_status(host: &Host) -> serde_json::Value {
    serde_json::from_str(&host.ferrynet(&["bgp", "status", "--json"])).unwrap()
}

fn all_ping(pods: &[(Ns, Ipv4Addr)]) {
    for (from, _) in pods {
        for (_, to) in pods {
            assert!(
                eventually(30, || from.ping(&to.to_string())),
                "{} cannot reach {to}",
                from.name
            );
        }
    }
}

fn store_of(f: &Fabric) -> PathBuf {
    std::env::temp_dir().join(format!("ferrynet-cluster-{}.json", f.ns.name))
}

/// `n` hosts on `fabric` at 10.200.0.(11 + i), each running an agent with backend bgp.
fn bgp_hosts(
    fabric: &Fabric,
    store: &StoreFile,
    n: usize,
    extra: &[&str],
) -> (Vec<Host>, Vec<Agent>) {
    let hosts: Vec<Host> = (0..n).map(|_| Host::new()).collect();
    let agents = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            fabric.plug(h, &format!("10.200.0.{}", 11 + i), &format!("p{i}"));
            Agent::start(h, &store.0, "bgp", &format!("node{i}"), extra)
        })
        .collect();
    (hosts, agents)
}

struct StoreFile(PathBuf);

impl Drop for StoreFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("lock"));
    }
}

/// Hosts in different ASes on two fabrics speak eBGP to a top-of-rack router (a namespace
/// running BIRD): pods on both fabrics talk unencapsulated, the router holds every host's
/// subnet, a leaving host's subnet disappears, a new host's appears.
#[test]
fn ebgp_to_a_top_of_rack_router_across_two_fabrics() {
    let f1 = Fabric::new();
    let f2 = Fabric::new();
    let r = router(&[(&f1, "10.200.0.1/24"), (&f2, "10.210.0.1/24")]);
    let _bird = RouterBird::start(
        &r,
        "10.200.0.1",
        65000,
        &[
            ("10.200.0.11", 65011, false),
            ("10.200.0.12", 65012, false),
            ("10.210.0.13", 65013, false),
            ("10.210.0.14", 65014, false),
        ],
    );
    let store = StoreFile(store_of(&f1));
    let hosts: Vec<Host> = (0..4).map(|_| Host::new()).collect();
    let start = |i: usize| {
        let (_, gw) = plug_routed(&f1, &f2, &hosts[i], i);
        let asn = format!("{}", 65011 + i);
        let peer = format!("{gw},65000");
        Agent::start(
            &hosts[i],
            &store.0,
            "bgp",
            &format!("node{i}"),
            &[
                "--bgp-as",
                &asn,
                "--bgp-peer",
                &peer,
                "--bgp-hold-time",
                "6",
                "--release-on-exit",
            ],
        )
    };
    let mut agents: Vec<Agent> = (0..3).map(start).collect();
    let subnets: Vec<String> = hosts[..3].iter().map(leased_subnet).collect();
    let addresses = ["10.200.0.11", "10.200.0.12", "10.210.0.13"];
    for (s, ip) in subnets.iter().zip(addresses) {
        assert!(learns(&r, s, ip, 30), "the router learns {s} via {ip}");
    }
    // h0 reaches h2 (other fabric) through the router, with no VXLAN device anywhere.
    assert!(learns(&hosts[0].ns, &subnets[2], "10.200.0.1", 30));
    assert!(learns(&hosts[2].ns, &subnets[0], "10.210.0.1", 30));
    assert!(hosts[..3].iter().all(no_vxlan), "no encapsulation");
    let pods = pods_on(&hosts[..3]);
    all_ping(&pods);
    let mtu = pods[0].0.exec(&["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1500", "no encapsulation overhead");

    let status = bgp_status(&hosts[0]);
    let session = &status["sessions"][0];
    assert_eq!(session["name"], "peer_10_200_0_1");
    assert_eq!(session["bgp_state"], "Established");
    assert_eq!(session["neighbor_as"], 65000);
    assert_eq!(status["announced"], serde_json::json!([subnets[0]]));
    let learned: Vec<&str> = status["learned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prefix"].as_str().unwrap())
        .collect();
    assert!(learned.contains(&subnets[1].as_str()) && learned.contains(&subnets[2].as_str()));
    let table = hosts[0].ferrynet(&["bgp", "status"]);
    assert!(
        table.contains("Established") && table.contains(&subnets[2]),
        "{table}"
    );

    // h2 leaves (its agent stops with --release-on-exit): gone from the router and from h0
    // within the hold time.
    agents[2].stop();
    assert!(
        forgets(&r, &subnets[2], 10),
        "the router forgets {}",
        subnets[2]
    );
    assert!(forgets(&hosts[0].ns, &subnets[2], 10));
    // A new host on the second fabric appears everywhere.
    agents.push(start(3));
    let s3 = leased_subnet(&hosts[3]);
    assert!(learns(&r, &s3, "10.210.0.14", 30));
    assert!(learns(&hosts[0].ns, &s3, "10.200.0.1", 30));
    let p3 = Ns::new("c");
    let ip3 = ip_of(&cni_add(&hosts[3], &p3, &pod_conf(&hosts[3])));
    assert!(eventually(30, || pods[0].0.ping(&ip3.to_string())));
}

/// One AS, one fabric, no router: every host peers with every other (the default), learns
/// every subnet with the owning host as next hop; an agent killed and restarted leaves BIRD,
/// its routes and the traffic alone; a dead host's routes go within the hold time.
#[test]
fn ibgp_full_mesh_survives_an_agent_restart() {
    let fabric = Fabric::new();
    let store = StoreFile(store_of(&fabric));
    let extra = ["--bgp-hold-time", "6"];
    let (hosts, mut agents) = bgp_hosts(&fabric, &store, 3, &extra);
    let subnets: Vec<String> = hosts.iter().map(leased_subnet).collect();
    for (i, h) in hosts.iter().enumerate() {
        for (j, s) in subnets.iter().enumerate() {
            if i != j {
                let gw = format!("10.200.0.{}", 11 + j);
                assert!(learns(&h.ns, s, &gw, 30), "host {i} learns {s} via {gw}");
            }
        }
    }
    assert!(hosts.iter().all(no_vxlan));
    let status = bgp_status(&hosts[0]);
    assert_eq!(status["sessions"].as_array().unwrap().len(), 2, "{status}");
    assert_eq!(status["sessions"][0]["description"], "node1");

    let (a, b, target) = pod_pair(&hosts[0], &hosts[1]);
    // trace names the BIRD route and follows the packet onto host 1, into b.
    let out = hosts[0].ferrynet(&[
        "trace",
        &a.name,
        &target,
        "--host",
        &hosts[1].ns.name,
        "--json",
    ]);
    let t: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = &t[0];
    assert_eq!(t["verdict"], "delivered", "{t:#}");
    assert_eq!(t["to"], format!("{} eth0", b.name));
    let host_route = t["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["at"] == hosts[0].ns.name.as_str() && h["kind"] == "route")
        .unwrap();
    assert_eq!(host_route["facts"]["protocol"], "bird (BGP)", "{t:#}");
    assert_eq!(host_route["facts"]["gateway"], "10.200.0.12");

    let pid = bird_pid(&hosts[1]);
    let ping = ContinuousPing::start(&a, &target, "0.01");
    std::thread::sleep(Duration::from_millis(500));
    let mut child = agents[1].child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    agents[1] = Agent::start(&hosts[1], &store.0, "bgp", "node1", &extra);
    std::thread::sleep(Duration::from_millis(1500));
    let (sent, received) = ping.stop();
    assert!(sent > 100, "the ping ran ({sent} sent)");
    assert!(sent - received <= 1, "lost {} of {sent}", sent - received);
    assert_eq!(bird_pid(&hosts[1]), pid, "the restarted agent adopted BIRD");
    assert!(a.ping(&target));

    // Host 2 dies (agent and BIRD killed): its routes go when the session's hold time ends.
    if let Some(mut c) = agents[2].child.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    unsafe {
        libc::kill(bird_pid(&hosts[2]).parse().unwrap(), libc::SIGKILL);
    }
    assert!(forgets(&hosts[0].ns, &subnets[2], 12));
    assert!(forgets(&hosts[1].ns, &subnets[2], 12));
}

/// One AS, hosts peering only with a route reflector (a BIRD namespace on the fabric): each
/// host learns the others' subnets with the owning host, not the reflector, as next hop.
#[test]
fn ibgp_through_a_route_reflector() {
    let fabric = Fabric::new();
    let r = router(&[(&fabric, "10.200.0.1/24")]);
    let _bird = RouterBird::start(
        &r,
        "10.200.0.1",
        64512,
        &[("10.200.0.11", 64512, true), ("10.200.0.12", 64512, true)],
    );
    let store = StoreFile(store_of(&fabric));
    let (hosts, _agents) = bgp_hosts(&fabric, &store, 2, &["--bgp-peer", "10.200.0.1"]);
    let s0 = leased_subnet(&hosts[0]);
    let s1 = leased_subnet(&hosts[1]);
    assert!(learns(&hosts[0].ns, &s1, "10.200.0.12", 30));
    assert!(learns(&hosts[1].ns, &s0, "10.200.0.11", 30));
    let status = bgp_status(&hosts[0]);
    assert_eq!(status["sessions"].as_array().unwrap().len(), 1, "no mesh");
    let (a, _b, target) = pod_pair(&hosts[0], &hosts[1]);

    // BIRD dies on host 0: its agent starts a new one, which learns the routes again.
    let old = bird_pid(&hosts[0]);
    unsafe {
        libc::kill(old.parse().unwrap(), libc::SIGKILL);
    }
    assert!(eventually(10, || std::fs::read_to_string(
        hosts[0].state.join("bird/bird.pid")
    )
    .is_ok_and(|p| p.trim() != old)));
    assert!(learns(&hosts[0].ns, &s1, "10.200.0.12", 30));
    assert!(eventually(30, || a.ping(&target)));
}

/// With --bird-socket the agent drives a BIRD it did not start (one whose configuration
/// includes ferrynet's fragment) and never starts its own.
#[test]
fn an_existing_bird_is_driven_not_started() {
    let fabric = Fabric::new();
    let store = StoreFile(store_of(&fabric));
    let (hosts, _agents) = bgp_hosts(&fabric, &store, 1, &[]);
    let own = Host::new();
    fabric.plug(&own, "10.200.0.20", "pown");
    let dir = own.state.join("bird");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = own.state.join("operator-bird.ctl");
    let main = own.state.join("operator-bird.conf");
    std::fs::write(
        &main,
        format!(
            "router id 10.200.0.20;\nprotocol device {{ }}\ninclude \"{}\";\n",
            dir.join("ferrynet.conf").display()
        ),
    )
    .unwrap();
    // The agent writes its fragment first (and reports BIRD missing until it runs).
    let _agent = Agent::start(
        &own,
        &store.0,
        "bgp",
        "operator",
        &["--bird-socket", socket.to_str().unwrap()],
    );
    assert!(eventually(10, || dir.join("ferrynet.conf").exists()));
    own.ns.exec(&[
        "bird",
        "-c",
        main.to_str().unwrap(),
        "-s",
        socket.to_str().unwrap(),
    ]);
    let theirs = leased_subnet(&hosts[0]);
    assert!(learns(&own.ns, &theirs, "10.200.0.11", 30));
    assert!(learns(
        &hosts[0].ns,
        &leased_subnet(&own),
        "10.200.0.20",
        30
    ));
    assert_eq!(birds_in(&own), 1, "the agent started no BIRD of its own");
    let status: serde_json::Value = serde_json::from_str(&own.ferrynet(&[
        "bgp",
        "status",
        "--json",
        "--socket",
        socket.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(status["sessions"][0]["bgp_state"], "Established");
}

/// auto with BGP on some hosts: BGP routes where a session exists, VXLAN to a host without
/// BGP behind a router.
#[test]
fn auto_prefers_bgp_and_falls_back_to_vxlan() {
    let f1 = Fabric::new();
    let f2 = Fabric::new();
    let _r = router(&[(&f1, "10.200.0.1/24"), (&f2, "10.210.0.1/24")]);
    let store = StoreFile(store_of(&f1));
    let hosts: Vec<Host> = (0..3).map(|_| Host::new()).collect();
    let mut agents = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        plug_routed(&f1, &f2, h, i);
        let extra: &[&str] = if i < 2 { &["--bgp-as", "64512"] } else { &[] };
        agents.push(Agent::start(
            h,
            &store.0,
            "auto",
            &format!("node{i}"),
            extra,
        ));
    }
    let s1 = leased_subnet(&hosts[1]);
    let s2 = leased_subnet(&hosts[2]);
    assert!(learns(&hosts[0].ns, &s1, "10.200.0.12", 30));
    // Once BGP routes it, ferrynet's own route for that subnet is gone.
    assert!(eventually(40, || routes_to(&hosts[0].ns, &s1).len() == 1));
    let far = routes_to(&hosts[0].ns, &s2);
    assert_eq!(far.len(), 1, "{far:?}");
    assert_eq!(far[0]["dev"], "ferry.1", "VXLAN to the host without BGP");
    let pods = pods_on(&hosts);
    all_ping(&pods);
}

/// The host's leased IPv6 subnet, from the subnet file the agent writes (None: no IPv6).
fn leased_subnet6(host: &Host) -> Option<String> {
    std::fs::read_to_string(subnet_file(host))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("FERRYNET_SUBNET6=").map(str::to_string))
}

/// A container on `host` through the CNI plugin (`"subnet": "auto"`): its IPv4 and IPv6
/// addresses.
fn dual_pod(host: &Host) -> (Ns, String, String) {
    let ns = Ns::new("c");
    let result = cni_add(host, &ns, &pod_conf(host));
    let addrs: Vec<String> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| {
            ip["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let v4 = addrs.iter().find(|a| !a.contains(':')).cloned();
    let v6 = addrs.iter().find(|a| a.contains(':')).cloned();
    let (Some(v4), Some(v6)) = (v4, v6) else {
        panic!("a dual-stack pod has both families: {result}");
    };
    (ns, v4, v6)
}

/// A dual-stack cluster on one fabric whose hosts have IPv4 and IPv6 underlay addresses: the
/// full mesh's IPv4 sessions carry both families (one session per peer), every host learns
/// the others' IPv6 subnets with their IPv6 underlay addresses as next hops (`proto bird`),
/// and pods reach each other over IPv6 (also a 1,400-byte probe that must not be
/// fragmented: no encapsulation) as over IPv4.
#[test]
fn dual_stack_mesh_carries_ipv6_over_the_same_sessions() {
    let fabric = Fabric::new();
    let store = StoreFile(store_of(&fabric));
    let hosts: Vec<Host> = (0..3).map(|_| Host::new()).collect();
    let v4 = |i: usize| format!("10.200.0.{}", 11 + i);
    let v6 = |i: usize| format!("fd00:200::{}", 11 + i);
    let _agents: Vec<Agent> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            fabric.plug(h, &v4(i), &format!("p{i}"));
            h.ns.exec(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{}/64", v6(i)),
                "dev",
                "eth0",
                "nodad",
            ]);
            Agent::start(
                h,
                &store.0,
                "bgp",
                &format!("node{i}"),
                &[
                    "--cluster-cidr",
                    "fd00:244::/56",
                    "--public-ip",
                    &v4(i),
                    "--public-ip",
                    &v6(i),
                ],
            )
        })
        .collect();
    let subnets: Vec<String> = hosts.iter().map(leased_subnet).collect();
    let subnets6: Vec<String> = hosts
        .iter()
        .map(|h| leased_subnet6(h).expect("an IPv6 subnet in the subnet file"))
        .collect();
    for s in &subnets6 {
        let net: ipnet::Ipv6Net = s.parse().unwrap();
        let cluster: ipnet::Ipv6Net = "fd00:244::/56".parse().unwrap();
        assert!(cluster.contains(&net) && net.prefix_len() == 64, "{s}");
    }
    for (i, h) in hosts.iter().enumerate() {
        for j in (0..hosts.len()).filter(|&j| j != i) {
            assert!(
                learns(&h.ns, &subnets[j], &v4(j), 30),
                "host {i} learns {} via {}",
                subnets[j],
                v4(j)
            );
            assert!(
                learns(&h.ns, &subnets6[j], &v6(j), 30),
                "host {i} learns {} via {}",
                subnets6[j],
                v6(j)
            );
        }
        // `ip -6 route show proto bird`: exactly the others' IPv6 subnets, via their IPv6
        // underlay addresses, on the uplink.
        let bird6: Vec<serde_json::Value> = serde_json::from_str(
            &h.ns
                .exec(&["ip", "-j", "-6", "route", "show", "proto", "bird"]),
        )
        .unwrap();
        let mut got: Vec<(String, String, String)> = bird6
            .iter()
            .map(|r| {
                (
                    r["dst"].as_str().unwrap_or("").to_string(),
                    r["gateway"].as_str().unwrap_or("").to_string(),
                    r["dev"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        got.sort();
        let mut want: Vec<(String, String, String)> = (0..hosts.len())
            .filter(|&j| j != i)
            .map(|j| (subnets6[j].clone(), v6(j), "eth0".to_string()))
            .collect();
        want.sort();
        assert_eq!(got, want, "host {i}: ip -6 route show proto bird");
    }
    assert!(hosts.iter().all(no_vxlan), "no encapsulation");

    // One session per peer (over IPv4), each with both families up.
    let status = bgp_status(&hosts[0]);
    let sessions = status["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{status}");
    for s in sessions {
        assert_eq!(s["bgp_state"], "Established", "{s}");
        assert!(!s["neighbor"].as_str().unwrap().contains(':'), "{s}");
        let families: Vec<(&str, &str)> = s["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["family"].as_str().unwrap(), c["state"].as_str().unwrap()))
            .collect();
        assert_eq!(families, [("ipv4", "UP"), ("ipv6", "UP")], "{s}");
        assert_eq!(s["channels"][1]["next_hop"], v6(0), "{s}");
        assert_eq!(s["channels"][1]["exported"], 1, "{s}");
    }
    assert_eq!(
        status["announced"],
        serde_json::json!([subnets[0], subnets6[0]])
    );
    let learned: Vec<(&str, &str)> = status["learned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["prefix"].as_str().unwrap(), r["via"].as_str().unwrap()))
        .collect();
    for j in 1..hosts.len() {
        let (via4, via6) = (v4(j), v6(j));
        assert!(
            learned.contains(&(subnets6[j].as_str(), via6.as_str())),
            "{learned:?}"
        );
        assert!(
            learned.contains(&(subnets[j].as_str(), via4.as_str())),
            "{learned:?}"
        );
    }
    let table = hosts[0].ferrynet(&["bgp", "status"]);
    assert!(
        table.contains("ipv4 1/1, ipv6 1/1") && table.contains(&subnets6[0]),
        "{table}"
    );

    let since = |h: &Host| -> Vec<String> {
        bgp_status(h)["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("{} {}", s["name"], s["since"]))
            .collect()
    };
    let sessions_before: Vec<Vec<String>> = hosts.iter().map(since).collect();

    // Pods: every one reaches every other over both families, and a 1,400-byte IPv6 packet
    // goes through whole (1352 bytes of ICMPv6 payload + 8 + 40; no fragmentation allowed).
    let pods: Vec<(Ns, String, String)> = hosts.iter().map(dual_pod).collect();
    let mtu = pods[0].0.exec(&["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1500", "no encapsulation overhead");
    for (i, (from, _, _)) in pods.iter().enumerate() {
        for (j, (_, to4, to6)) in pods.iter().enumerate() {
            assert!(
                eventually(30, || from.ping(to6)),
                "pod {i} cannot reach pod {j} at {to6}"
            );
            assert!(
                eventually(30, || from.ping(to4)),
                "pod {i} cannot reach pod {j} at {to4}"
            );
            if i != j {
                let probe = sh(&mut from.cmd(&[
                    "ping", "-6", "-M", "do", "-s", "1352", "-c", "2", "-i", "0.2", "-W", "1",
                    "-q", to6,
                ]));
                assert!(
                    probe.status.success(),
                    "pod {i} -> {to6}, 1,400 bytes unfragmented: {}{}",
                    String::from_utf8_lossy(&probe.stdout),
                    String::from_utf8_lossy(&probe.stderr)
                );
            }
        }
    }
    // Pod to pod across hosts keeps its IPv6 source address (the IPv6 cluster range is not
    // masqueraded), as IPv4 does.
    let to: std::net::Ipv6Addr = pods[1].2.parse().unwrap();
    let from: std::net::Ipv6Addr = pods[0].2.parse().unwrap();
    let srv = server(&pods[1].0, to, 8080, "pod1");
    assert_eq!(
        fetch(&pods[0].0, to, 8080).as_deref(),
        Some("hello from pod1\n")
    );
    assert_eq!(srv.peers(), vec![std::net::IpAddr::V6(from)]);

    // BIRD was not reconfigured into new sessions meanwhile (IPv6 is in the first
    // configuration, and an unchanged lease set leaves it alone).
    let sessions_after: Vec<Vec<String>> = hosts.iter().map(since).collect();
    assert_eq!(sessions_before, sessions_after, "sessions restarted");
}
