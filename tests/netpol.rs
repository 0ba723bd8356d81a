//! Network policy enforced on one host: pods in namespaces x and y on one bridge, TCP
//! servers on 80 and 81 in each, policies applied with the CLI; every expectation is probed
//! with a real connection (a dropped SYN times out; an allowed one is answered).

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// Whether a TCP connection from `from` to `ip:port` is answered within half a second.
fn connects(from: &Ns, ip: &str, port: u16) -> bool {
    let addr = SocketAddr::new(ip.parse().unwrap(), port);
    from.run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok())
}

/// A UDP echo server on `port` in `ns`, stopped on drop.
struct UdpEcho(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl UdpEcho {
    fn start(ns: &Ns, port: u16) -> UdpEcho {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (netns, flag) = (ns.open(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            netns
                .run_here(|| {
                    let sock = std::net::UdpSocket::bind(("0.0.0.0", port)).unwrap();
                    sock.set_read_timeout(Some(Duration::from_millis(100)))
                        .unwrap();
                    ready_tx.send(()).unwrap();
                    let mut buf = [0u8; 64];
                    while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                        if let Ok((n, from)) = sock.recv_from(&mut buf) {
                            let _ = sock.send_to(&buf[..n], from);
                        }
                    }
                })
                .unwrap();
        });
        ready_rx.recv().unwrap();
        UdpEcho(stop)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Whether a UDP datagram from `from` to `ip:port` is echoed within half a second.
fn echoes(from: &Ns, ip: &str, port: u16) -> bool {
    let addr = SocketAddr::new(ip.parse().unwrap(), port);
    from.run(move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        sock.send_to(b"ping", addr).unwrap();
        let mut buf = [0u8; 8];
        sock.recv_from(&mut buf).is_ok()
    })
}

fn apply(host: &Host, name: &str, yaml: &str) {
    let path = host.state.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    host.ferrynet(&["policy", "apply", "-f", path.to_str().unwrap()]);
}

struct Pod {
    ns: Ns,
    ip: String,
    _servers: Vec<Server>,
}

fn pod(host: &Host, extra: &[&str]) -> Pod {
    let (ns, ep) = host.container("blue", extra);
    let ip = endpoint_ip(&ep).to_string();
    let servers = [80, 81]
        .into_iter()
        .map(|port| server(&ns, Ipv4Addr::UNSPECIFIED, port, "pod"))
        .collect();
    Pod {
        ns,
        ip,
        _servers: servers,
    }
}

#[test]
fn network_policy_is_enforced_on_one_host() {
    let host = Host::new();
    host.create_network("blue", "10.90.0.0/24");
    let xa = pod(
        &host,
        &[
            "--namespace",
            "x",
            "--label",
            "pod=a",
            "--port-name",
            "serve-81-tcp=81/tcp",
        ],
    );
    let xb = pod(&host, &["--namespace", "x", "--label", "pod=b"]);
    let ya = pod(&host, &["--namespace", "y", "--label", "pod=a"]);
    host.ferrynet(&["namespace", "label", "x", "ns=x"]);
    host.ferrynet(&["namespace", "label", "y", "ns=y"]);
    assert!(connects(&ya.ns, &xa.ip, 80), "no policy: open");

    // Default deny ingress in x: nothing reaches x's pods, also from the same bridge; x's
    // pods still reach out (egress is not isolated) and their replies come back.
    apply(
        &host,
        "deny",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-ingress, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    );
    assert!(!connects(&ya.ns, &xa.ip, 80), "deny: y -> x/a");
    assert!(
        !connects(&xb.ns, &xa.ip, 80),
        "deny: same bridge, same namespace"
    );
    assert!(
        connects(&xa.ns, &ya.ip, 80),
        "x/a -> y/a is egress, not isolated"
    );

    // Allow from namespace y on port 80, and from x/b on the named port serve-81-tcp.
    apply(
        &host,
        "allow",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n    ports: [{port: 80}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-b-named, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {pod: b}}}]\n    ports: [{port: serve-81-tcp}]\n",
    );
    assert!(connects(&ya.ns, &xa.ip, 80), "allow-y on 80");
    assert!(!connects(&ya.ns, &xa.ip, 81), "allow-y is port 80 only");
    assert!(connects(&xb.ns, &xa.ip, 81), "the named port, from x/b");
    assert!(!connects(&xb.ns, &xa.ip, 80), "x/b has only the named port");
    // trace names the policy that decides, and drops where policy drops.
    let to81 = format!("{}:81/tcp", xa.ip);
    let out = host.try_ferrynet(&["trace", &ya.ns.name, &to81, "--family", "4"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("network policy (ingress") && text.contains("isolated by"),
        "{text}"
    );
    let to80 = format!("{}:80/tcp", xa.ip);
    let text = host.ferrynet(&["trace", &ya.ns.name, &to80, "--family", "4"]);
    assert!(text.contains("allow: NetworkPolicy x/allow-y"), "{text}");

    // Egress isolation in y: y/a reaches nobody, then again once the policy is gone.
    apply(
        &host,
        "egress",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-egress, namespace: y}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n",
    );
    assert!(
        !connects(&ya.ns, &xa.ip, 80),
        "egress of y/a denied at its source"
    );
    host.ferrynet(&["policy", "rm", "y/deny-egress"]);
    assert!(connects(&ya.ns, &xa.ip, 80), "egress policy removed");

    // An admin Deny beats the NetworkPolicy allow.
    apply(
        &host,
        "anp",
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: no-y-to-x}\nspec:\n  priority: 10\n  subject: {namespaces: {matchLabels: {ns: x}}}\n  ingress:\n  - action: Deny\n    from: [{namespaces: {matchLabels: {ns: y}}}]\n",
    );
    assert!(!connects(&ya.ns, &xa.ip, 80), "admin deny first");
    host.ferrynet(&["policy", "rm", "no-y-to-x"]);
    assert!(connects(&ya.ns, &xa.ip, 80), "admin policy removed");

    // A pod attached after the policies is isolated from its first packet.
    let xc = pod(&host, &["--namespace", "x", "--label", "pod=c"]);
    assert!(
        !connects(&ya.ns, &xc.ip, 80),
        "a new pod of x is isolated at once"
    );
    // A label change: x/b becomes pod=a, which allow-y selects.
    assert!(!connects(&ya.ns, &xb.ip, 80));
    host.ferrynet(&["endpoint", "label", &xb.ns.name, "pod=a"]);
    assert!(
        connects(&ya.ns, &xb.ip, 80),
        "relabelled x/b is allowed from y on 80"
    );

    // Every policy gone: the table goes too, and everything is open again.
    for p in ["x/deny-ingress", "x/allow-y", "x/allow-b-named"] {
        host.ferrynet(&["policy", "rm", p]);
    }
    assert!(!host
        .ns
        .exec(&["nft", "list", "tables"])
        .contains("ferrynet_policy"));
    assert!(connects(&ya.ns, &xc.ip, 80));

    // ipBlock with except: the bridge's /24 is allowed to x/a on 80, but for x/b's address.
    apply(
        &host,
        "block",
        &format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: from-block, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from: [{{ipBlock: {{cidr: 10.90.0.0/24, except: [{}/32]}}}}]\n    ports: [{{port: 80}}]\n", xb.ip),
    );
    assert!(connects(&ya.ns, &xa.ip, 80), "inside the block");
    assert!(!connects(&xb.ns, &xa.ip, 80), "the except");
    assert!(!connects(&ya.ns, &xa.ip, 81), "the block is port 80 only");
    host.ferrynet(&["policy", "rm", "x/from-block"]);
    assert!(connects(&xb.ns, &xa.ip, 80));

    // A UDP-only rule keeps TCP on the same port blocked.
    let _echo = UdpEcho::start(&xa.ns, 80);
    assert!(echoes(&ya.ns, &xa.ip, 80), "UDP open before the policy");
    apply(
        &host,
        "udp",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: udp-only, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{protocol: UDP, port: 80}]\n",
    );
    assert!(echoes(&ya.ns, &xa.ip, 80), "UDP 80 allowed");
    assert!(!connects(&ya.ns, &xa.ip, 80), "TCP 80 stays blocked");
    host.ferrynet(&["policy", "rm", "x/udp-only"]);
}

/// Two hosts with agents on one store: a policy on one host selects pods of the other by
/// their labels (the agents publish their endpoints and keep each host's table current).
#[test]
fn a_policy_selects_pods_on_another_host() {
    let fabric = Fabric::new();
    let store = std::env::temp_dir().join(format!("ferrynet-netpol-{}.json", fabric.ns.name));
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_file(self.0.with_extension("lock"));
        }
    }
    let _store = RemoveOnDrop(store.clone());
    let hosts: Vec<Host> = (0..2).map(|_| Host::new()).collect();
    let mut agents = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        fabric.plug(h, &format!("10.200.0.{}", 11 + i), &format!("p{i}"));
        // Host 1's agent exports the policy counters and logs the drops of policies that
        // ask for it.
        let extra: &[&str] = if i == 1 {
            &["--metrics", "127.0.0.1:9107", "--log-drops"]
        } else {
            &[]
        };
        agents.push(Agent::start(
            h,
            &store,
            "host-gw",
            &format!("node{i}"),
            extra,
        ));
    }
    let labelled = |h: &Host, role: &str| {
        let ns = Ns::new("c");
        let mut conf = pod_conf(h);
        conf["args"] = serde_json::json!({"cni": {"labels": [{"key": "role", "value": role}]}});
        let ip = ip_of(&cni_add(h, &ns, &conf)).to_string();
        (ns, ip)
    };
    let (web, web_ip) = labelled(&hosts[1], "web");
    let _srv = server(&web, Ipv4Addr::UNSPECIFIED, 80, "web");
    let (good, _) = labelled(&hosts[0], "client");
    let (bad, _) = labelled(&hosts[0], "other");
    assert!(
        eventually(10, || connects(&bad, &web_ip, 80)),
        "routed, no policy yet"
    );

    let store_arg = format!("file:{}", store.display());
    let path = hosts[1].state.join("allow.yaml");
    std::fs::write(
        &path,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: clients-only, namespace: default}\nspec:\n  podSelector: {matchLabels: {role: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n    ports: [{port: 80}]\n",
    )
    .unwrap();
    hosts[1].ferrynet(&[
        "policy",
        "apply",
        "-f",
        path.to_str().unwrap(),
        "--store",
        &store_arg,
    ]);
    assert!(
        eventually(10, || connects(&good, &web_ip, 80)),
        "the client on the other host is allowed once its agent published it"
    );
    assert!(!connects(&bad, &web_ip, 80), "the other pod is not");
    let metrics = hosts[1].ns.run(|| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:9107").unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    });
    assert!(
        metrics.contains("ferrynet_policy_rule_packets_total{rule=\"NetworkPolicy default/clients-only ingress[0]\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("address=\"{web_ip}\",direction=\"ingress\"}}")),
        "{metrics}"
    );
    // A label change on host 0 reaches host 1's table.
    hosts[0].ferrynet(&[
        "endpoint",
        "label",
        &bad.name,
        "role=client",
        "--store",
        &store_arg,
    ]);
    assert!(
        eventually(10, || connects(&bad, &web_ip, 80)),
        "relabelled on the other host"
    );
    drop(agents);
}

/// Every chain of the policy table → the handles of its rules (a chain rewritten gets new
/// ones; elements added or removed leave them).
fn rule_handles(host: &Host) -> std::collections::BTreeMap<String, Vec<u64>> {
    let text = host
        .ns
        .exec(&["nft", "-j", "list", "table", "inet", "ferrynet_policy"]);
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for item in doc["nftables"].as_array().unwrap() {
        if let Some(c) = item.get("chain") {
            out.entry(c["name"].as_str().unwrap().into()).or_default();
        }
        if let Some(r) = item.get("rule") {
            out.entry(r["chain"].as_str().unwrap().into())
                .or_default()
                .push(r["handle"].as_u64().unwrap());
        }
    }
    out
}

#[test]
fn pods_and_labels_change_elements_and_a_policy_change_only_its_chain() {
    let host = Host::new();
    host.create_network("blue", "10.90.0.0/24");
    let xa = pod(&host, &["--namespace", "x", "--label", "pod=a"]);
    let ya = pod(&host, &["--namespace", "y", "--label", "pod=a"]);
    host.ferrynet(&["namespace", "label", "y", "ns=y"]);
    let allow = |ports: &str| {
        format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: allow-y, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}]\n    ports: [{ports}]\n")
    };
    apply(
        &host,
        "deny",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-ingress, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    );
    apply(&host, "allow", &allow("{port: 80}"));
    assert!(connects(&ya.ns, &xa.ip, 80));
    let before = rule_handles(&host);

    // A new pod: isolated at once, by elements only.
    let xc = pod(&host, &["--namespace", "x", "--label", "pod=c"]);
    assert!(!connects(&ya.ns, &xc.ip, 80), "new pod isolated");
    assert_eq!(rule_handles(&host), before, "a new pod rewrote a chain");
    // A label change: elements only.
    host.ferrynet(&["endpoint", "label", &xc.ns.name, "pod=a"]);
    assert!(connects(&ya.ns, &xc.ip, 80), "relabelled pod allowed");
    assert_eq!(
        rule_handles(&host),
        before,
        "a label change rewrote a chain"
    );
    // A policy change: only that policy's chain.
    apply(&host, "allow", &allow("{port: 80}, {port: 81}"));
    assert!(connects(&ya.ns, &xa.ip, 81), "the new port");
    let after = rule_handles(&host);
    let changed: Vec<&String> = after
        .iter()
        .filter(|(chain, handles)| before.get(*chain) != Some(*handles))
        .map(|(chain, _)| chain)
        .collect();
    assert_eq!(changed.len(), 1, "only allow-y's chain: {changed:?}");
    assert!(changed[0].starts_with("p_") && changed[0].ends_with("_ingress"));
    // A pod going away takes its elements: its address is in no set any more.
    let path = xc.ns.path();
    host.ferrynet(&["detach", path.to_str().unwrap(), "--network", "blue"]);
    let listing = host
        .ns
        .exec(&["nft", "list", "table", "inet", "ferrynet_policy"]);
    assert!(!listing.contains(&xc.ip), "{listing}");
    assert_eq!(rule_handles(&host), after);
}

#[test]
fn denied_packets_show_in_the_counters_and_the_drop_log() {
    let host = Host::new();
    host.create_network("blue", "10.90.0.0/24");
    let xa = pod(&host, &["--namespace", "x", "--label", "pod=a"]);
    let ya = pod(&host, &["--namespace", "y", "--label", "pod=a"]);
    host.ferrynet(&["namespace", "label", "y", "ns=y"]);
    apply(
        &host,
        "policies",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny-ingress\n  namespace: x\n  annotations: {ferrynet.io/log-drops: \"true\"}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-y, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n    ports: [{port: 80}]\n",
    );
    // The log reader first (it must hold the group before the packets come).
    let mut follow =
        host.ferrynet_cmd(&["policy", "drops", "--follow", "--seconds", "4", "--json"]);
    let reader = follow
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Reap(Option<std::process::Child>);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut reader = Reap(Some(reader));
    // It says when it holds the group.
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(reader.0.as_mut().unwrap().stderr.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert!(ready.contains("NFLOG group"), "{ready}");
    assert!(connects(&ya.ns, &xa.ip, 80), "allowed");
    assert!(!connects(&ya.ns, &xa.ip, 81), "denied");
    let out = reader.0.take().unwrap().wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let logged: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        logged
            .iter()
            .any(|d| d["by"] == "NetworkPolicy x/deny-ingress ingress"
                && d["destination"] == xa.ip.as_str()
                && d["port"] == 81),
        "{text} {} {}",
        String::from_utf8_lossy(&out.stderr),
        host.ns
            .exec(&["nft", "list", "table", "inet", "ferrynet_policy"])
    );
    assert!(
        !logged.iter().any(|d| d["port"] == 80),
        "an allowed packet is not logged: {text}"
    );

    // The counters: the allow rule counted the allowed SYN, the isolation the denied ones,
    // and the drop counter of x/a's address.
    let rows: serde_json::Value =
        serde_json::from_str(&host.ferrynet(&["policy", "ls", "--json"])).unwrap();
    let row = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    assert!(
        row("allow-y")["counters"]["allowed"]["packets"]
            .as_u64()
            .unwrap()
            >= 1,
        "{rows}"
    );
    assert!(
        row("deny-ingress")["counters"]["denied"]["packets"]
            .as_u64()
            .unwrap()
            >= 1,
        "{rows}"
    );
    let drops: serde_json::Value =
        serde_json::from_str(&host.ferrynet(&["policy", "drops", "--json"])).unwrap();
    let mine = drops
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["address"] == xa.ip.as_str() && d["direction"] == "Ingress")
        .unwrap_or_else(|| panic!("{drops}"));
    assert!(mine["packets"].as_u64().unwrap() >= 1, "{drops}");
    assert!(
        mine["endpoint"].as_str().unwrap().starts_with("x/"),
        "{drops}"
    );
    let table = host.ferrynet(&["policy", "ls"]);
    assert!(table.contains("DROPPED"), "{table}");
}
