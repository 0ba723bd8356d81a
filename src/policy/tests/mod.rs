//! Semantics tests on the Kubernetes conformance fixture: namespaces x, y, z (labelled
//! `ns=<name>`), pods a, b, c in each (`pod=<name>`, named ports `serve-{80,81}-{tcp,udp}`),
//! a and b on host h1, c on h2. Each test states who may reach whom with a plain closure
//! written from the Kubernetes rules, independent of the evaluator, and compares all 72
//! pod pairs (a pod to itself is always allowed and left out).

use std::net::IpAddr;

use super::model::PolicyType;
use super::*;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pod {
    ns: &'static str,
    name: &'static str,
}

fn v4(ns: &str, pod: &str) -> IpAddr {
    let n = NAMESPACES.iter().position(|x| *x == ns).unwrap() as u8;
    let p = PODS.iter().position(|x| *x == pod).unwrap() as u8;
    IpAddr::from([10, 0, n, p + 1])
}

fn v6(ns: &str, pod: &str) -> IpAddr {
    let IpAddr::V4(a) = v4(ns, pod) else {
        unreachable!()
    };
    let [_, _, n, p] = a.octets();
    IpAddr::from([0xfd00, 0, 0, 0, 0, 0, n as u16, p as u16])
}

fn fixture() -> Inventory {
    let mut endpoints = Vec::new();
    for ns in NAMESPACES {
        for pod in PODS {
            let named_ports = [80u16, 81]
                .iter()
                .flat_map(|port| {
                    [(Protocol::Tcp, "tcp"), (Protocol::Udp, "udp")].map(|(protocol, p)| {
                        NamedPort {
                            name: format!("serve-{port}-{p}"),
                            port: *port,
                            protocol,
                        }
                    })
                })
                .collect();
            endpoints.push(EndpointRecord {
                id: format!("{ns}-{pod}"),
                namespace: ns.into(),
                name: Some(pod.into()),
                labels: Labels::from([("pod".into(), pod.into())]),
                named_ports,
                addresses: vec![v4(ns, pod), v6(ns, pod)],
                host: if pod == "c" { "h2" } else { "h1" }.into(),
            });
        }
    }
    let namespaces =
        NAMESPACES.map(|ns| (ns.to_string(), Labels::from([("ns".into(), ns.into())])));
    Inventory::new(endpoints, namespaces)
}

fn pods() -> Vec<Pod> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |name| Pod { ns, name }))
        .collect()
}

fn policies(yaml: &str) -> PolicySet {
    PolicySet::new(parse_policies(yaml).unwrap_or_else(|e| panic!("{e}")))
}

fn verdict(set: &PolicySet, from: FlowEnd, to: FlowEnd, l4: L4) -> Verdict {
    evaluate(
        set,
        &fixture(),
        &Flow {
            src: from,
            dst: to,
            l4,
        },
    )
    .unwrap()
}

fn pod_end(p: Pod) -> FlowEnd {
    FlowEnd::Endpoint(format!("{}-{}", p.ns, p.name))
}

/// Fails with every pair where the evaluator and `expected` disagree.
fn check(yaml: &str, l4: L4, expected: impl Fn(Pod, Pod) -> bool) {
    let set = policies(yaml);
    let inventory = fixture();
    let mut wrong = Vec::new();
    for from in pods() {
        for to in pods() {
            if from == to {
                continue;
            }
            let flow = Flow {
                src: pod_end(from),
                dst: pod_end(to),
                l4,
            };
            let got = evaluate(&set, &inventory, &flow).unwrap().action == Action::Allow;
            if got != expected(from, to) {
                wrong.push(format!(
                    "{}/{} -> {}/{}: got {}",
                    from.ns,
                    from.name,
                    to.ns,
                    to.name,
                    if got { "allow" } else { "deny" }
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{l4}:\n{}", wrong.join("\n"));
}

fn np(namespace: &str, name: &str, spec: &str) -> String {
    format!("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}\n")
}

fn anp(name: &str, spec: &str) -> String {
    format!("---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n{spec}\n")
}

fn banp(spec: &str) -> String {
    format!("---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {{name: default}}\nspec:\n{spec}\n")
}

const TCP80: L4 = L4::Tcp(80);
const ALL_L4: [L4; 5] = [
    L4::Tcp(80),
    L4::Tcp(81),
    L4::Udp(80),
    L4::Udp(81),
    L4::Sctp(80),
];

#[test]
fn no_policy_allows_everything() {
    for l4 in ALL_L4.into_iter().chain([L4::Icmp]) {
        check("", l4, |_, _| true);
    }
}

#[test]
fn default_deny_ingress_egress_and_all() {
    let ingress = np("x", "deny", "  podSelector: {}\n  policyTypes: [Ingress]");
    check(&ingress, TCP80, |_, to| to.ns != "x");
    let egress = np("x", "deny", "  podSelector: {}\n  policyTypes: [Egress]");
    check(&egress, TCP80, |from, _| from.ns != "x");
    let all = np(
        "x",
        "deny",
        "  podSelector: {}\n  policyTypes: [Ingress, Egress]",
    );
    check(&all, L4::Udp(81), |from, to| from.ns != "x" && to.ns != "x");
    // `ingress: []` allows nothing, and policyTypes defaults to Ingress only.
    check(
        &np("x", "deny", "  podSelector: {}\n  ingress: []"),
        TCP80,
        |_, to| to.ns != "x",
    );
    // Egress rules without policyTypes isolate egress too (and ingress, always).
    let egress_rules = np(
        "x",
        "e",
        "  podSelector: {}\n  egress: [{to: [{podSelector: {}}]}]",
    );
    // x may send only to x, and x receives nothing: only traffic between y and z is left.
    check(&egress_rules, TCP80, |from, to| {
        to.ns != "x" && from.ns != "x"
    });
}

#[test]
fn pod_selector_alone_means_the_policys_namespace() {
    let p = np("x", "p", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]");
    check(&p, TCP80, |from, to| {
        !(to.ns == "x" && to.name == "a") || (from.ns == "x" && from.name == "b")
    });
}

#[test]
fn namespace_selector_alone_and_empty() {
    let p = np("x", "p", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]");
    check(&p, TCP80, |from, to| {
        !(to.ns == "x" && to.name == "a") || from.ns == "y"
    });
    let all = np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {}}]}]",
    );
    check(&all, TCP80, |_, _| true);
    // By the implicit name label.
    let named = np("x", "p", "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]}]");
    check(&named, TCP80, |from, to| to.ns != "x" || from.ns == "z");
}

#[test]
fn both_selectors_in_one_peer_are_anded_separate_peers_ored() {
    let and = np("x", "p", "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: b}}");
    check(&and, TCP80, |from, to| {
        to.ns != "x" || (from.ns == "y" && from.name == "b")
    });
    let or = np("x", "p", "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n    - podSelector: {matchLabels: {pod: b}}");
    check(&or, TCP80, |from, to| {
        to.ns != "x" || from.ns == "y" || (from.ns == "x" && from.name == "b")
    });
}

#[test]
fn match_expressions() {
    let p = np("x", "p", "  podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}\n  ingress:\n  - from:\n    - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [y]}]}\n      podSelector: {matchExpressions: [{key: pod, operator: Exists}]}");
    check(&p, TCP80, |from, to| {
        to.ns != "x" || to.name == "c" || from.ns != "y"
    });
    let none = np(
        "x",
        "p",
        "  podSelector: {matchExpressions: [{key: pod, operator: DoesNotExist}]}\n  ingress: []",
    );
    check(&none, TCP80, |_, _| true);
}

#[test]
fn ports_numbers_names_and_ranges() {
    let port80 = np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{port: 80}]}]",
    );
    for l4 in ALL_L4 {
        check(&port80, l4, |_, to| to.ns != "x" || l4 == L4::Tcp(80));
    }
    let named = np("x", "p", "  podSelector: {}\n  ingress: [{ports: [{port: serve-81-tcp}, {port: serve-80-udp, protocol: UDP}]}]");
    for l4 in ALL_L4 {
        check(&named, l4, |_, to| {
            to.ns != "x" || l4 == L4::Tcp(81) || l4 == L4::Udp(80)
        });
    }
    // A named port with the wrong protocol matches nothing.
    let mismatch = np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{port: serve-80-udp}]}]",
    );
    check(&mismatch, L4::Udp(80), |_, to| to.ns != "x");
    let range = np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{port: 81, endPort: 90}]}]",
    );
    for l4 in ALL_L4 {
        check(&range, l4, |_, to| to.ns != "x" || l4 == L4::Tcp(81));
    }
}

#[test]
fn named_ports_on_egress_resolve_on_the_destination() {
    let p = np(
        "x",
        "p",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{ports: [{port: serve-81-tcp}]}]",
    );
    check(&p, L4::Tcp(81), |_, _| true);
    check(&p, L4::Tcp(80), |from, _| from.ns != "x");
    // Outside the cluster's endpoints a name resolves to nothing.
    let set = policies(&p);
    let out = verdict(
        &set,
        FlowEnd::Endpoint("x-a".into()),
        FlowEnd::Address("192.0.2.1".parse().unwrap()),
        L4::Tcp(81),
    );
    assert_eq!(out.action, Action::Deny);
}

#[test]
fn stacked_policies_allow_their_union() {
    let yaml = np("x", "b", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]")
        + &np("x", "c", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: c}}}]}]");
    check(&yaml, TCP80, |from, to| {
        !(to.ns == "x" && to.name == "a") || (from.ns == "x" && from.name != "a")
    });
    // Allow-all beats deny-all whatever the order: there is no deny in NetworkPolicy.
    let yaml = np(
        "x",
        "deny",
        "  podSelector: {}\n  policyTypes: [Ingress, Egress]",
    ) + &np(
        "x",
        "allow",
        "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n  ingress: [{}]\n  egress: [{}]",
    );
    for l4 in ALL_L4.into_iter().chain([L4::Icmp]) {
        check(&yaml, l4, |_, _| true);
    }
}

#[test]
fn ip_blocks_with_except_and_egress_to_a_single_address() {
    // y's pods are 10.0.1.0/24: excepted here, allowed by nothing else.
    let p = np("x", "p", "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}}]}]");
    check(&p, TCP80, |from, to| to.ns != "x" || from.ns != "y");
    // except narrows only its own peer: another rule still allows y/b.
    let more = p.clone() + &np("x", "q", "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]}]");
    check(&more, TCP80, |from, to| {
        to.ns != "x" || from.ns != "y" || from.name == "b"
    });
    let one = np("x", "p", &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress: [{{to: [{{ipBlock: {{cidr: {}/32}}}}]}}]", v4("y", "b")));
    check(&one, TCP80, |from, to| {
        !(from.ns == "x" && from.name == "a") || (to.ns == "y" && to.name == "b")
    });
    // IPv6: the block matches the pods' IPv6 addresses on an IPv6 flow, not their IPv4 ones.
    let six = np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: \"fd00::1:0/112\"}}]}]",
    );
    let set = policies(&six);
    let from_y6 = verdict(
        &set,
        FlowEnd::Address(v6("y", "a")),
        FlowEnd::Address(v6("x", "a")),
        TCP80,
    );
    assert_eq!(from_y6.action, Action::Allow);
    let from_y4 = verdict(
        &set,
        FlowEnd::Address(v4("y", "a")),
        FlowEnd::Address(v4("x", "a")),
        TCP80,
    );
    assert_eq!(from_y4.action, Action::Deny);
    // An endpoint named by id takes the family of the other end.
    let by_id = verdict(
        &set,
        FlowEnd::Endpoint("y-a".into()),
        FlowEnd::Address(v6("x", "a")),
        TCP80,
    );
    assert_eq!(by_id.action, Action::Allow);
    let v4_block = policies(&np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}}]}]",
    ));
    let six_from_y = verdict(
        &v4_block,
        FlowEnd::Endpoint("y-a".into()),
        FlowEnd::Address(v6("x", "a")),
        TCP80,
    );
    assert_eq!(
        six_from_y.action,
        Action::Deny,
        "an IPv4 block never matches an IPv6 flow"
    );
    // And an outside address.
    let cidr = np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 192.0.2.0/24}}]}]",
    );
    let set = policies(&cidr);
    let outside = |a: &str| {
        verdict(
            &set,
            FlowEnd::Address(a.parse().unwrap()),
            FlowEnd::Endpoint("x-b".into()),
            TCP80,
        )
        .action
    };
    assert_eq!(outside("192.0.2.9"), Action::Allow);
    assert_eq!(outside("198.51.100.9"), Action::Deny);
}

#[test]
fn protocol_only_rules_keep_other_protocols_blocked() {
    let udp = np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{protocol: UDP}]}]",
    );
    check(&udp, L4::Udp(80), |_, _| true);
    check(&udp, L4::Udp(81), |_, _| true);
    check(&udp, L4::Tcp(80), |_, to| to.ns != "x");
    let sctp = np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{protocol: SCTP, port: 80}]}]",
    );
    check(&sctp, L4::Sctp(80), |_, _| true);
    check(&sctp, L4::Tcp(80), |_, to| to.ns != "x");
    check(&sctp, L4::Udp(80), |_, to| to.ns != "x");
}

#[test]
fn a_connection_needs_egress_at_the_source_and_ingress_at_the_destination() {
    let yaml = np("x", "out", "  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{namespaceSelector: {matchLabels: {ns: z}}}]}]")
        + &np("y", "in", "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}}]}]");
    check(&yaml, TCP80, |from, to| {
        (from.ns != "x" || to.ns == "z") && (to.ns != "y" || from.ns == "x")
    });
    let v = verdict(
        &policies(&yaml),
        FlowEnd::Endpoint("x-a".into()),
        FlowEnd::Endpoint("y-a".into()),
        TCP80,
    );
    assert_eq!(v.action, Action::Deny);
    assert_eq!(v.ingress.action, Action::Allow);
    let (side, decided) = v.deciding_side();
    assert_eq!(side, PolicyType::Egress);
    assert!(
        matches!(&decided.reason, Reason::Isolated { policies } if policies[0].short_name() == "x/out")
    );
}

#[test]
fn own_host_and_self_are_always_allowed() {
    let set = policies(&np(
        "x",
        "deny",
        "  podSelector: {}\n  policyTypes: [Ingress, Egress]",
    ));
    let host = |node: &str| FlowEnd::Host {
        node: node.into(),
        address: "10.200.0.11".parse().unwrap(),
    };
    let to_a = verdict(&set, host("h1"), FlowEnd::Endpoint("x-a".into()), TCP80);
    assert_eq!(
        (to_a.action, &to_a.ingress.reason),
        (Action::Allow, &Reason::OwnHost)
    );
    assert_eq!(
        verdict(&set, host("h2"), FlowEnd::Endpoint("x-a".into()), TCP80).action,
        Action::Deny
    );
    let own = verdict(
        &set,
        FlowEnd::Endpoint("x-a".into()),
        FlowEnd::Address(v4("x", "a")),
        TCP80,
    );
    assert_eq!(own.action, Action::Allow);
}

#[test]
fn icmp_matches_only_rules_without_ports() {
    let with_ports = np("x", "p", "  podSelector: {}\n  ingress: [{ports: [{protocol: TCP}, {protocol: UDP}, {protocol: SCTP}]}]");
    check(&with_ports, L4::Icmp, |_, to| to.ns != "x");
    let without = np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]",
    );
    check(&without, L4::Icmp, |from, to| {
        to.ns != "x" || from.ns == "y"
    });
}

mod tiers;
