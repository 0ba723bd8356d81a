//! A fuzz pass over network policy: rounds of random policy documents (NetworkPolicies with
//! random selectors, expressions, peers, ipBlocks, ports, endPorts, named ports and types,
//! sometimes an AdminNetworkPolicy) applied to one host with four pods; every flow between
//! them is probed with a real connection and compared with `ferrynet policy eval` — what
//! the kernel lets through must be exactly what the policy says (the evaluator itself is
//! held to Kubernetes' semantics by the conformance matrix, tests/netpol_matrix.rs). A
//! failure prints the seed (FERRYNET_FUZZ_SEED reproduces it) and the round's policies.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const ROUNDS: usize = 25;
const PORTS: [u16; 2] = [80, 81];

struct Pod {
    ns: Ns,
    namespace: &'static str,
    ip: String,
    _servers: Vec<Server>,
}

fn label_selector(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 => json!({}),
        1 => json!({"matchLabels": {"pod": rng.pick(&["a", "b"])}}),
        2 => {
            json!({"matchExpressions": [{"key": "pod", "operator": "In", "values": [rng.pick(&["a", "b"])]}]})
        }
        3 => {
            json!({"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": [rng.pick(&["a", "b"])]}]})
        }
        4 => {
            json!({"matchExpressions": [{"key": "tier", "operator": rng.pick(&["Exists", "DoesNotExist"])}]})
        }
        _ => json!({"matchLabels": {"tier": "web"}}),
    }
}

fn namespace_selector(rng: &mut Rng) -> Value {
    match rng.below(3) {
        0 => json!({}),
        _ => json!({"matchLabels": {"ns": rng.pick(&["x", "y"])}}),
    }
}

fn peer(rng: &mut Rng, pods: &[Pod]) -> Value {
    match rng.below(5) {
        0 => json!({"podSelector": label_selector(rng)}),
        1 => json!({"namespaceSelector": namespace_selector(rng)}),
        2 => {
            json!({"podSelector": label_selector(rng), "namespaceSelector": namespace_selector(rng)})
        }
        3 => json!({"ipBlock": {"cidr": format!("{}/32", rng.pick(pods).ip)}}),
        _ => {
            json!({"ipBlock": {"cidr": "10.90.0.0/24", "except": [format!("{}/32", rng.pick(pods).ip)]}})
        }
    }
}

fn ports(rng: &mut Rng) -> Option<Value> {
    match rng.below(7) {
        0 | 1 => None,
        2 => Some(json!([{"port": *rng.pick(&PORTS)}])),
        3 => Some(json!([{"protocol": "UDP"}])),
        4 => Some(json!([{"port": 80, "endPort": 81}])),
        5 => Some(json!([{"port": rng.pick(&["serve-80-tcp", "serve-81-tcp"])}])),
        _ => Some(json!([{"protocol": "TCP", "port": 81}, {"protocol": "UDP", "port": 80}])),
    }
}

fn rules(rng: &mut Rng, pods: &[Pod], peers_key: &str) -> Value {
    let rules: Vec<Value> = (0..rng.below(3))
        .map(|_| {
            let mut rule = json!({});
            if rng.chance(75) {
                let peers: Vec<Value> = (0..rng.below(3)).map(|_| peer(rng, pods)).collect();
                rule[peers_key] = json!(peers);
            }
            if let Some(p) = ports(rng) {
                rule["ports"] = p;
            }
            rule
        })
        .collect();
    json!(rules)
}

fn network_policy(rng: &mut Rng, pods: &[Pod], name: &str) -> Value {
    let mut spec = json!({"podSelector": label_selector(rng)});
    if rng.chance(70) {
        spec["ingress"] = rules(rng, pods, "from");
    }
    if rng.chance(50) {
        spec["egress"] = rules(rng, pods, "to");
    }
    if rng.chance(50) {
        let types: &[&[&str]] = &[&["Ingress"], &["Egress"], &["Ingress", "Egress"]];
        spec["policyTypes"] = json!(rng.pick(types));
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": rng.pick(&["x", "y"])},
        "spec": spec,
    })
}

fn admin_policy(rng: &mut Rng, name: &str) -> Value {
    let action = *rng.pick(&["Allow", "Deny", "Pass"]);
    let mut rule = json!({
        "action": action,
        "from": [{"namespaces": namespace_selector(rng)}],
    });
    if rng.chance(50) {
        rule["ports"] = json!([{"portNumber": {"protocol": "TCP", "port": *rng.pick(&PORTS)}}]);
    }
    json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": "AdminNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "priority": rng.below(100),
            "subject": {"namespaces": namespace_selector(rng)},
            "ingress": [rule],
        },
    })
}

fn connects(from: &Ns, ip: &str, port: u16) -> bool {
    let addr = SocketAddr::new(ip.parse().unwrap(), port);
    from.run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(400)).is_ok())
}

/// `NS/NAME` or `NAME`, as `policy rm` takes it.
fn policy_ref(p: &Value) -> String {
    match p["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{ns}/{}", p["metadata"]["name"].as_str().unwrap()),
        None => p["metadata"]["name"].as_str().unwrap().to_string(),
    }
}

#[test]
fn random_policies_are_enforced_exactly_as_evaluated() {
    let seed = std::env::var("FERRYNET_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let mut rng = Rng(seed);
    let host = Host::new();
    host.create_network("blue", "10.90.0.0/24");
    let mut pods = Vec::new();
    for (namespace, name) in [("x", "a"), ("x", "b"), ("y", "a"), ("y", "b")] {
        let label = format!("pod={name}");
        let mut args = vec![
            "--namespace",
            namespace,
            "--label",
            &label,
            "--port-name",
            "serve-80-tcp=80/tcp",
            "--port-name",
            "serve-81-tcp=81/tcp",
        ];
        if (namespace, name) == ("x", "a") {
            args.extend(["--label", "tier=web"]);
        }
        let (ns, ep) = host.container("blue", &args);
        let ip = endpoint_ip(&ep).to_string();
        let servers = PORTS
            .into_iter()
            .map(|port| server(&ns, Ipv4Addr::UNSPECIFIED, port, "pod"))
            .collect();
        pods.push(Pod {
            ns,
            namespace,
            ip,
            _servers: servers,
        });
    }
    host.ferrynet(&["namespace", "label", "x", "ns=x"]);
    host.ferrynet(&["namespace", "label", "y", "ns=y"]);

    let file = host.state.join("round.json");
    let mut applied: Vec<String> = Vec::new();
    let (mut rounds, mut refused, mut denied, mut probed) = (0, 0, 0, 0);
    for round in 0..ROUNDS {
        let docs: Vec<Value> = (0..1 + rng.below(3))
            .map(|k| {
                let name = format!("r{round}-{k}");
                if rng.chance(20) {
                    admin_policy(&mut rng, &name)
                } else {
                    network_policy(&mut rng, &pods, &name)
                }
            })
            .collect();
        for p in applied.drain(..) {
            host.ferrynet(&["policy", "rm", &p]);
        }
        std::fs::write(
            &file,
            serde_json::to_string(&json!({"kind": "List", "items": docs})).unwrap(),
        )
        .unwrap();
        // A document the validator refuses is part of the fuzz too: nothing is stored then.
        let out = host.try_ferrynet(&["policy", "apply", "-f", file.to_str().unwrap()]);
        if !out.status.success() {
            refused += 1;
            continue;
        }
        rounds += 1;
        applied = docs.iter().map(policy_ref).collect();

        // Every flow between two different pods, on each port: probed all at once.
        let mut flows = Vec::new();
        for i in 0..pods.len() {
            for j in 0..pods.len() {
                if i != j {
                    for port in PORTS {
                        flows.push((i, j, port));
                    }
                }
            }
        }
        let observed: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = flows
                .iter()
                .map(|&(i, j, port)| {
                    let (from, to) = (&pods[i], &pods[j]);
                    s.spawn(move || connects(&from.ns, &to.ip, port))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut wrong = Vec::new();
        for (&(i, j, port), got) in flows.iter().zip(observed) {
            let (from, to) = (&pods[i], &pods[j]);
            let verdict: Value = serde_json::from_str(&host.ferrynet(&[
                "policy",
                "eval",
                "--from",
                &format!("{}/{}", from.namespace, from.ns.name),
                "--to",
                &format!("{}/{}", to.namespace, to.ns.name),
                "--port",
                &format!("{port}/tcp"),
                "--json",
            ]))
            .unwrap();
            let allowed = verdict["action"] == "Allow";
            probed += 1;
            denied += usize::from(!allowed);
            if allowed != got {
                wrong.push(format!(
                    "{}/{} -> {}/{} {port}/tcp: evaluated {}, observed {}",
                    from.namespace,
                    i,
                    to.namespace,
                    j,
                    if allowed { "allow" } else { "deny" },
                    if got { "connected" } else { "no answer" }
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "seed {seed} round {round}:\n  {}\npolicies:\n{}",
            wrong.join("\n  "),
            serde_json::to_string_pretty(&docs).unwrap()
        );
    }
    eprintln!(
        "seed {seed}: {rounds} rounds enforced, {refused} refused by validation; {probed} flows probed, {denied} of them denied"
    );
    // A pass that never denied, or never applied, tested nothing.
    assert!(rounds >= ROUNDS / 2 && denied > 0 && denied < probed);
}
