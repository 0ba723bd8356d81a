//! `ferrynet trace`: the hops it names are the objects the kernel holds, and when something
//! is broken the verdict names the break.

mod common;

use serde_json::Value;

use common::*;

fn trace(host: &Host, args: &[&str]) -> (Vec<Value>, bool) {
    let mut a = vec!["trace"];
    a.extend_from_slice(args);
    a.push("--json");
    let out = host.try_ferrynet(&a);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let traces: Vec<Value> = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "trace {args:?}: {e}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (traces, out.status.success())
}

fn text(host: &Host, args: &[&str]) -> String {
    let mut a = vec!["trace"];
    a.extend_from_slice(args);
    String::from_utf8_lossy(&host.try_ferrynet(&a).stdout).into_owned()
}

fn hops<'a>(t: &'a Value, kind: &str) -> Vec<&'a Value> {
    t["hops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == kind)
        .collect()
}

fn reason(t: &Value) -> String {
    assert_eq!(t["verdict"], "dropped", "{t:#}");
    t["reason"].as_str().unwrap().to_string()
}

fn delivered_to(t: &Value) -> String {
    assert_eq!(t["verdict"], "delivered", "{t:#}");
    t["to"].as_str().unwrap().to_string()
}

/// `ip -j link show` in `ns`, as JSON.
fn links(ns: &Ns) -> Vec<Value> {
    serde_json::from_str(&ns.exec(&["ip", "-j", "-d", "link", "show"])).unwrap()
}

fn link_named<'a>(links: &'a [Value], name: &str) -> &'a Value {
    links
        .iter()
        .find(|l| l["ifname"] == name)
        .unwrap_or_else(|| panic!("no link {name}"))
}

fn iflink(c: &Ns) -> u64 {
    c.exec(&["cat", "/sys/class/net/eth0/iflink"])
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn same_host_paths_name_the_kernels_objects() {
    let host = Host::new();
    let world = World::attach_to(&host);
    host.ferrynet(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.90.0.0/24",
        "--subnet",
        "fd00:90::/64",
    ]);
    host.create_network("red", "10.91.0.0/24");
    let (c1, _) = host.container("blue", &[]);
    let (c2, _) = host.container("blue", &["-p", "8080:80"]);
    let (c3, _) = host.container("red", &[]);

    // c1 → c2, both families: the veth is the one whose ifindex is c1's iflink, its master is
    // the network's bridge, and the packet ends on c2's eth0.
    let (ts, ok) = trace(&host, &[&c1.name, &c2.name]);
    assert!(ok);
    assert_eq!(ts.len(), 2, "one trace per family");
    let host_links = links(&host.ns);
    for t in &ts {
        let veth = hops(t, "veth")[0];
        assert_eq!(
            veth["facts"]["ifindex"].as_u64(),
            Some(iflink(&c1)),
            "{t:#}"
        );
        let l = link_named(&host_links, veth["facts"]["ifname"].as_str().unwrap());
        assert_eq!(l["master"], "ferry-blue");
        assert_eq!(hops(t, "bridge-port")[0]["facts"]["bridge"], "ferry-blue");
        let route = hops(t, "route")[0];
        assert_eq!(route["facts"]["oif"].as_u64(), Some(2), "{t:#}");
        assert_eq!(delivered_to(t), format!("{} eth0", c2.name));
        let delivery = hops(t, "delivery")[0];
        assert_eq!(delivery["facts"]["ifindex"].as_u64(), Some(2));
    }
    let veth = hops(&ts[0], "veth")[0]["facts"]["ifname"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ts[0]["dst"], "10.90.0.3");
    assert_eq!(ts[1]["dst"], "fd00:90::3");
    // After a packet, the neighbour entry and the FDB entry the kernel learned are named.
    assert!(c1.ping("10.90.0.3"));
    let (ts, _) = trace(&host, &[&c1.name, "10.90.0.3"]);
    let t = &ts[0];
    let c2_mac = c2.exec(&["cat", "/sys/class/net/eth0/address"]);
    let neigh = hops(t, "neighbour")[0];
    assert_eq!(neigh["facts"]["mac"], c2_mac.trim());
    let fdb = hops(t, "fdb")[0];
    assert_eq!(fdb["facts"]["mac"], c2_mac.trim());
    let c2_port = c2.exec(&["cat", "/sys/class/net/eth0/iflink"]);
    assert_eq!(
        fdb["facts"]["port_ifindex"].as_u64(),
        c2_port.trim().parse::<u64>().ok()
    );

    // Between networks: isolation.
    let (ts, ok) = trace(&host, &[&c1.name, &c3.name]);
    assert!(!ok, "a dropped trace exits 1");
    assert!(
        reason(&ts[0]).contains("isolation between networks"),
        "{:#}",
        ts[0]
    );

    // The probe: one real packet, the rule that dropped it, and no trace rule left behind.
    let (ts, _) = trace(&host, &[&c1.name, &c3.name, "--probe"]);
    let p = &ts[0]["probe"];
    assert_eq!(p["arrived"], false, "{p:#}");
    assert_eq!(p["agrees"], true);
    assert_eq!(p["verdict"], "drop");
    let last = p["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["chain"], "forward", "{p:#}");
    assert!(
        last["rule"].as_str().unwrap().contains("@bridges"),
        "the isolation rule: {last:#}"
    );
    let (ts, ok) = trace(&host, &[&c1.name, &c2.name, "--probe", "--family", "4"]);
    assert!(ok);
    assert_eq!(ts[0]["probe"]["arrived"], true, "{:#}", ts[0]);
    assert_eq!(ts[0]["probe"]["agrees"], true);
    let (ts, _) = trace(&host, &["10.201.0.2", "host:8080", "--probe"]);
    let p = &ts[0]["probe"];
    assert_eq!(
        p["arrived"], true,
        "an answer (RST: nothing listens): {p:#}"
    );
    assert!(
        p["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["rule"].as_str().is_some_and(|r| r.contains("@ports"))),
        "the DNAT rule: {p:#}"
    );
    assert!(!host.ns.exec(&["nft", "list", "ruleset"]).contains("probe_"));

    // To the outside: masqueraded to the uplink's address.
    let (ts, _) = trace(&host, &[&c1.name, "10.201.0.2:80/tcp"]);
    let nat = hops(&ts[0], "nat");
    assert_eq!(nat[0]["facts"]["masquerade"], world.host_ip.to_string());
    assert!(delivered_to(&ts[0]).contains("uplink0"));

    // From the outside through the published port, and hairpin from c1.
    for from in ["10.201.0.2", c1.name.as_str()] {
        let (ts, ok) = trace(&host, &[from, "host:8080"]);
        assert!(ok, "{ts:#?}");
        let nat = hops(&ts[0], "nat");
        assert_eq!(nat[0]["facts"]["dnat"], "10.90.0.3", "{:#}", ts[0]);
        assert_eq!(delivered_to(&ts[0]), format!("{} eth0", c2.name));
    }

    // The text form reads top-down and ends with the verdict.
    let t = text(&host, &[&c1.name, &c2.name, "--family", "4"]);
    assert!(
        t.starts_with(&format!("trace {} → {}", c1.name, c2.name)),
        "{t}"
    );
    assert!(t.contains("verdict: delivered to"), "{t}");

    // Breaks, one at a time, each named by the verdict.
    // A forged source: the container's address changed behind ferrynet's back.
    c1.exec(&["ip", "addr", "del", "10.90.0.2/24", "dev", "eth0"]);
    c1.exec(&["ip", "addr", "add", "10.90.0.77/24", "dev", "eth0"]);
    let (ts, _) = trace(&host, &[&c1.name, &c2.name, "--family", "4"]);
    assert!(reason(&ts[0]).contains("anti-spoofing"), "{:#}", ts[0]);
    assert!(
        ts[0]["inconsistencies"][0]
            .as_str()
            .unwrap()
            .contains("10.90.0.77"),
        "{:#}",
        ts[0]
    );
    c1.exec(&["ip", "addr", "del", "10.90.0.77/24", "dev", "eth0"]);
    c1.exec(&["ip", "addr", "add", "10.90.0.2/24", "dev", "eth0"]);
    c1.exec(&["ip", "route", "replace", "default", "via", "10.90.0.1"]);
    // An MTU too small for the size asked.
    let (ts, _) = trace(
        &host,
        &[&c1.name, &c2.name, "--family", "4", "--size", "1600"],
    );
    assert!(reason(&ts[0]).contains("MTU 1500"), "{:#}", ts[0]);
    // A veth taken off the bridge.
    host.ns.exec(&["ip", "link", "set", &veth, "nomaster"]);
    let (ts, _) = trace(&host, &[&c1.name, &c2.name, "--family", "4"]);
    assert!(
        reason(&ts[0]).contains("not a port of any bridge"),
        "{:#}",
        ts[0]
    );
    // No route in the container.
    host.ns
        .exec(&["ip", "link", "set", &veth, "master", "ferry-blue"]);
    c1.exec(&["ip", "route", "del", "default"]);
    let (ts, _) = trace(&host, &[&c1.name, "10.201.0.2"]);
    assert!(reason(&ts[0]).contains("unreachable"), "{:#}", ts[0]);

    // The topology names every container, in every form.
    let svg_path = host.state.join("topology.svg");
    let json = host.ferrynet(&["topology", "--json", "--svg", svg_path.to_str().unwrap()]);
    let topo: Value = serde_json::from_str(&json).unwrap();
    let bridges = topo["hosts"][0]["bridges"].as_array().unwrap();
    let blue = bridges.iter().find(|b| b["name"] == "ferry-blue").unwrap();
    assert_eq!(blue["network"], "blue");
    let names: Vec<&str> = blue["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["container"].as_str())
        .collect();
    assert!(names.contains(&c1.name.as_str()) && names.contains(&c2.name.as_str()));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the SVG parses");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    for c in [&c1, &c2, &c3] {
        assert!(texts.contains(&c.name.as_str()), "{} in the SVG", c.name);
    }
    let tree = host.ferrynet(&["topology"]);
    assert!(
        tree.contains("published 8080/tcp → [fd00:90::3]:80"),
        "{tree}"
    );

    // Bad ends are refused by name.
    let out = host.try_ferrynet(&["trace", "nosuchcontainer", &c2.name]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no container \"nosuchcontainer\""));
}

/// A cluster of two hosts; the trace follows the packet onto the peer host.
fn two_hosts(backend: &str) -> (Fabric, Vec<Host>, Vec<Agent>, std::path::PathBuf) {
    let fabric = Fabric::new();
    let store = std::env::temp_dir().join(format!("ferrynet-trace-{}.json", fabric.ns.name));
    let hosts: Vec<Host> = (0..2).map(|_| Host::new()).collect();
    let mut agents = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        fabric.plug(h, &format!("10.200.0.{}", 11 + i), &format!("p{i}"));
        agents.push(Agent::start(h, &store, backend, &format!("node{i}"), &[]));
    }
    (fabric, hosts, agents, store)
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("lock"));
    }
}

fn cross_host(backend: &str) {
    let (_fabric, hosts, mut agents, store) = two_hosts(backend);
    let _store = RemoveOnDrop(store.clone());
    let (a, b, b_ip) = pod_pair(&hosts[0], &hosts[1]);
    assert!(
        eventually(10, || a.ping(&b_ip)),
        "{backend}: pods reach each other"
    );
    // The agents stop (their routes stay): what the trace sees is then what the test does.
    for ag in &mut agents {
        ag.stop();
    }
    let store_url = format!("file:{}", store.display());
    let args = [
        a.name.as_str(),
        b_ip.as_str(),
        "--host",
        hosts[1].ns.name.as_str(),
        "--store",
        store_url.as_str(),
    ];
    let (ts, ok) = trace(&hosts[0], &args);
    assert!(ok, "{ts:#?}");
    let t = &ts[0];
    assert_eq!(delivered_to(t), format!("{} eth0", b.name));
    let at: Vec<&str> = t["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["at"].as_str().unwrap())
        .collect();
    assert!(at.contains(&hosts[1].ns.name.as_str()), "{t:#}");
    let route = hops(t, "route")
        .into_iter()
        .find(|h| h["at"] == hosts[0].ns.name.as_str())
        .unwrap()
        .clone();
    assert!(
        route["note"].as_str().unwrap_or_default().contains("node1"),
        "the route names the lease's node: {route:#}"
    );
    if backend == "vxlan" {
        let vx = hops(t, "vxlan");
        assert_eq!(vx[0]["facts"]["vtep"], "10.200.0.12", "{t:#}");
        // Break the permanent neighbour of the VXLAN path.
        let gw = route["facts"]["gateway"].as_str().unwrap().to_string();
        let dev = hosts[0]
            .ns
            .exec(&["ip", "-o", "link", "show", "type", "vxlan"])
            .split(": ")
            .nth(1)
            .unwrap()
            .to_string();
        hosts[0].ns.exec(&["ip", "neigh", "del", &gw, "dev", &dev]);
        let (ts, _) = trace(&hosts[0], &args);
        assert!(reason(&ts[0]).contains("no neighbour entry"), "{:#}", ts[0]);
    } else {
        assert_eq!(route["facts"]["gateway"], "10.200.0.12", "{route:#}");
    }
    // The topology joins the two hosts: the peer route, and for VXLAN the peer's VTEP.
    let topo: Value = serde_json::from_str(&hosts[0].ferrynet(&[
        "topology",
        "--json",
        "--host",
        &hosts[1].ns.name,
    ]))
    .unwrap();
    let h0 = &topo["hosts"][0];
    assert!(
        h0["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["backend"] == backend),
        "{h0:#}"
    );
    if backend == "vxlan" {
        assert_eq!(
            h0["vxlan"][0]["peers"][0]["host"],
            hosts[1].ns.name.as_str()
        );
    }
    let h1_ports = topo["hosts"][1]["bridges"][0]["ports"].as_array().unwrap();
    assert!(h1_ports.iter().any(|p| p["container"] == b.name.as_str()));

    // Delete the route to the peer's subnet: nothing carries the packet any more.
    let subnet = route["facts"]["matched"].as_str().unwrap().to_string();
    hosts[0].ns.exec(&["ip", "route", "del", &subnet]);
    let (ts, _) = trace(&hosts[0], &args);
    let r = reason(&ts[0]);
    assert!(
        r.contains("no route") || r.contains("unreachable"),
        "{:#}",
        ts[0]
    );
}

#[test]
fn a_vxlan_path_is_followed_onto_the_peer_host() {
    cross_host("vxlan");
}

#[test]
fn a_host_gw_path_is_followed_onto_the_peer_host() {
    cross_host("host-gw");
}
