//! The admin tiers, label changes, flow parsing and the compiled view, on the fixture of
//! the parent module.

use super::*;
use crate::policy::model::PolicyType;

#[test]
fn admin_deny_overrides_a_network_policy_allow() {
    let yaml = anp("no-y", "  priority: 10\n  subject: {namespaces: {matchLabels: {ns: x}}}\n  ingress:\n  - {name: no-y, action: Deny, from: [{namespaces: {matchLabels: {ns: y}}}]}")
        + &np("x", "allow-all", "  podSelector: {}\n  ingress: [{}]");
    check(&yaml, TCP80, |from, to| !(to.ns == "x" && from.ns == "y"));
    let v = verdict(
        &policies(&yaml),
        FlowEnd::Endpoint("y-a".into()),
        FlowEnd::Endpoint("x-b".into()),
        TCP80,
    );
    let Reason::Admin { rule, priority } = &v.ingress.reason else {
        panic!("{v:?}")
    };
    assert_eq!(*priority, 10);
    assert_eq!(
        rule.to_string(),
        "AdminNetworkPolicy no-y ingress[0] \"no-y\""
    );
    // Allow overrides a NetworkPolicy deny.
    let yaml = anp("z-in", "  priority: 10\n  subject: {namespaces: {matchLabels: {ns: x}}}\n  ingress: [{action: Allow, from: [{namespaces: {matchLabels: {ns: z}}}]}]")
        + &np("x", "deny", "  podSelector: {}\n  ingress: []");
    check(&yaml, TCP80, |from, to| to.ns != "x" || from.ns == "z");
}

#[test]
fn admin_priorities_lower_first() {
    let deny = |prio: u32| {
        anp("deny", &format!("  priority: {prio}\n  subject: {{pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{pod: a}}}}}}}}\n  ingress: [{{action: Deny, from: [{{namespaces: {{}}}}]}}]"))
    };
    let allow = |prio: u32| {
        anp("allow", &format!("  priority: {prio}\n  subject: {{namespaces: {{}}}}\n  ingress: [{{action: Allow, from: [{{pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{pod: b}}}}}}}}]}}]"))
    };
    check(&(deny(10) + &allow(20)), TCP80, |_, to| to.name != "a");
    check(&(deny(20) + &allow(10)), TCP80, |from, to| {
        to.name != "a" || from.name == "b"
    });
}

#[test]
fn admin_pass_hands_over_to_network_policy() {
    let yaml = anp("pass-y", "  priority: 5\n  subject: {namespaces: {matchLabels: {ns: x}}}\n  ingress: [{name: to-np, action: Pass, from: [{namespaces: {matchLabels: {ns: y}}}]}]")
        + &anp("deny-all", "  priority: 10\n  subject: {namespaces: {matchLabels: {ns: x}}}\n  ingress: [{action: Deny, from: [{namespaces: {}}]}]")
        + &np("x", "only-b", "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}]}]");
    check(&yaml, TCP80, |from, to| {
        to.ns != "x" || (from.ns == "y" && from.name == "b")
    });
    let v = verdict(
        &policies(&yaml),
        FlowEnd::Endpoint("y-b".into()),
        FlowEnd::Endpoint("x-a".into()),
        TCP80,
    );
    assert_eq!(
        v.ingress.passed_by.as_ref().unwrap().name.as_deref(),
        Some("to-np")
    );
    assert!(matches!(v.ingress.reason, Reason::NetworkPolicy { .. }));
}

#[test]
fn baseline_decides_only_what_nothing_else_did() {
    let base = banp("  subject: {namespaces: {matchLabels: {ns: x}}}\n  ingress: [{action: Deny, from: [{namespaces: {}}]}]");
    check(&base, TCP80, |_, to| to.ns != "x");
    // A NetworkPolicy selecting x/a takes it out of the baseline's hands (its implicit deny
    // included); x/b and x/c stay with the baseline.
    let yaml = base.clone() + &np("x", "a-from-y", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]");
    check(&yaml, TCP80, |from, to| {
        to.ns != "x" || (to.name == "a" && from.ns == "y")
    });
    let set = policies(&yaml);
    let z_to_a = verdict(
        &set,
        FlowEnd::Endpoint("z-a".into()),
        FlowEnd::Endpoint("x-a".into()),
        TCP80,
    );
    assert!(matches!(z_to_a.ingress.reason, Reason::Isolated { .. }));
    let z_to_b = verdict(
        &set,
        FlowEnd::Endpoint("z-a".into()),
        FlowEnd::Endpoint("x-b".into()),
        TCP80,
    );
    assert!(matches!(z_to_b.ingress.reason, Reason::Baseline { .. }));
    // An admin Pass lands in the baseline when no NetworkPolicy applies.
    let passed = base + &anp("pass", "  priority: 1\n  subject: {namespaces: {}}\n  ingress: [{action: Pass, from: [{namespaces: {}}]}]");
    check(&passed, TCP80, |_, to| to.ns != "x");
}

#[test]
fn admin_ports_networks_and_egress() {
    let yaml = anp("egress", "  priority: 1\n  subject: {namespaces: {matchLabels: {ns: x}}}\n  egress:\n  - {action: Allow, to: [{networks: [192.0.2.0/24]}]}\n  - {action: Deny, to: [{namespaces: {}}], ports: [{namedPort: serve-81-tcp}, {portRange: {protocol: UDP, start: 80, end: 81}}]}\n  - {action: Deny, to: [{networks: [0.0.0.0/0]}]}");
    let set = policies(&yaml);
    for l4 in ALL_L4 {
        // Named TCP 81 and UDP 80-81 to pods are denied, the rest reaches the catch-all
        // network deny (pods have addresses too); outside 192.0.2.0/24 is allowed.
        check(&yaml, l4, |from, _| from.ns != "x");
    }
    let out = |a: &str, l4| {
        verdict(
            &set,
            FlowEnd::Endpoint("x-a".into()),
            FlowEnd::Address(a.parse().unwrap()),
            l4,
        )
        .action
    };
    assert_eq!(out("192.0.2.5", L4::Tcp(81)), Action::Allow);
    assert_eq!(out("198.51.100.5", L4::Tcp(80)), Action::Deny);
    // A port-limited admin rule does not touch ICMP.
    let ports_only = anp("p", "  priority: 1\n  subject: {namespaces: {}}\n  ingress: [{action: Deny, from: [{namespaces: {}}], ports: [{portNumber: {port: 80}}]}]");
    check(&ports_only, L4::Icmp, |_, _| true);
    check(&ports_only, L4::Tcp(80), |_, _| false);
    check(&ports_only, L4::Udp(80), |_, _| true);
}

#[test]
fn label_changes_move_endpoints_in_and_out() {
    let set = policies(&np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {env: prod}}}]}]",
    ));
    let mut inventory = fixture();
    let flow = Flow {
        src: FlowEnd::Endpoint("y-a".into()),
        dst: FlowEnd::Endpoint("x-a".into()),
        l4: TCP80,
    };
    assert_eq!(
        evaluate(&set, &inventory, &flow).unwrap().action,
        Action::Deny
    );
    let namespaces: Vec<(String, Labels)> = inventory
        .namespaces()
        .map(|(n, l)| {
            let mut l = l.clone();
            if n == "y" {
                LabelChange::apply_all(&mut l, &[LabelChange::parse("env=prod").unwrap()]);
            }
            (n.clone(), l)
        })
        .collect();
    inventory = Inventory::new(
        inventory.endpoints().cloned().collect::<Vec<_>>(),
        namespaces,
    );
    assert_eq!(
        evaluate(&set, &inventory, &flow).unwrap().action,
        Action::Allow
    );
}

#[test]
fn unknown_endpoints_are_errors() {
    let flow = Flow {
        src: FlowEnd::Endpoint("nope".into()),
        dst: FlowEnd::Endpoint("x-a".into()),
        l4: TCP80,
    };
    assert_eq!(
        evaluate(&PolicySet::default(), &fixture(), &flow),
        Err(PolicyError::UnknownEndpoint("nope".into()))
    );
}

#[test]
fn flows_parse_their_layer_four() {
    assert_eq!("80/tcp".parse::<L4>(), Ok(L4::Tcp(80)));
    assert_eq!("53/UDP".parse::<L4>(), Ok(L4::Udp(53)));
    assert_eq!("9".parse::<L4>(), Ok(L4::Tcp(9)));
    assert_eq!("icmp".parse::<L4>(), Ok(L4::Icmp));
    assert!("0/tcp".parse::<L4>().is_err());
    assert!("80/gre".parse::<L4>().is_err());
    assert_eq!(L4::Sctp(9).to_string(), "9/sctp");
}

#[test]
fn compiled_view_shares_one_set_per_distinct_selector() {
    let yaml = np("x", "one", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [z, y]}]}}]}]")
        + &np("x", "two", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [y, z, y]}]}}, {ipBlock: {cidr: 192.0.2.0/24}}]}]")
        + &anp("adm", "  priority: 1\n  subject: {namespaces: {matchLabels: {ns: x}}}\n  egress: [{action: Deny, to: [{networks: [192.0.2.0/24]}, {pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {}}}]}]");
    let sets = selector_sets(&policies(&yaml), &fixture());
    // x/pod=a (both subjects), ns In [y z] (both peers), ns=x (the admin subject and peer).
    assert_eq!(sets.len(), 3, "{sets:#?}");
    let peer = sets
        .iter()
        .find(|s| s.used_by.len() == 2 && s.members.len() == 6)
        .expect("shared peer set");
    assert_eq!(peer.members, ["y-a", "y-b", "y-c", "z-a", "z-b", "z-c"]);
    assert_eq!(peer.addresses.len(), 12);
    assert!(peer
        .used_by
        .iter()
        .all(|u| matches!(u, SelectorUse::Peer { .. })));
    let subject = sets
        .iter()
        .find(|s| s.selector.namespaces == NamespaceScope::Named("x".into()))
        .unwrap();
    assert_eq!(subject.members, ["x-a"]);
    assert_eq!(subject.used_by.len(), 2);
    let admin = sets
        .iter()
        .find(|s| s.used_by.len() == 2 && s.members.len() == 3)
        .unwrap();
    assert!(admin
        .used_by
        .iter()
        .any(|u| matches!(u, SelectorUse::Subject { .. })));
    assert!(admin
        .used_by
        .iter()
        .any(|u| matches!(u, SelectorUse::Peer { peer: 1, .. })));
}

#[test]
fn endpoint_dispatch_lists_applying_policies_in_evaluation_order() {
    let yaml = anp("late", "  priority: 50\n  subject: {namespaces: {matchLabels: {ns: x}}}\n  ingress: [{action: Deny, from: [{namespaces: {}}]}]")
        + &anp("early", "  priority: 1\n  subject: {namespaces: {}}\n  ingress: [{action: Allow, from: [{namespaces: {}}]}]\n  egress: [{action: Allow, to: [{namespaces: {}}]}]")
        + &np("x", "deny", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]")
        + &banp("  subject: {namespaces: {matchLabels: {ns: x}}}\n  egress: [{action: Deny, to: [{networks: [0.0.0.0/0]}]}]");
    let map = endpoint_policies(&policies(&yaml), &fixture());
    let names = |keys: &[PolicyKey]| keys.iter().map(|k| k.short_name()).collect::<Vec<_>>();
    let xa = &map["x-a"];
    assert_eq!(names(&xa.ingress), ["early", "late", "x/deny"]);
    assert_eq!(
        names(xa.direction(PolicyType::Egress)),
        ["early", "default"]
    );
    assert_eq!(names(&map["x-b"].ingress), ["early", "late"]);
    assert_eq!(names(&map["y-a"].ingress), ["early"]);
    assert!(map["y-a"].egress.iter().all(|k| k.short_name() == "early"));
    // With no policy at all, no endpoint needs dispatch.
    assert!(endpoint_policies(&PolicySet::default(), &fixture()).is_empty());
}

#[test]
fn named_port_sets_hold_every_endpoint_naming_the_port() {
    let yaml = np("x", "p", "  podSelector: {}\n  ingress: [{ports: [{port: serve-80-tcp}, {port: serve-81-udp, protocol: UDP}]}]\n  egress: [{ports: [{port: serve-80-tcp}]}]")
        + &anp("a", "  priority: 1\n  subject: {namespaces: {}}\n  ingress: [{action: Deny, from: [{namespaces: {}}], ports: [{namedPort: serve-81-udp}]}]");
    let sets = named_port_sets(&policies(&yaml), &fixture());
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["serve-80-tcp", "serve-81-udp"]);
    // Nine pods with an IPv4 and an IPv6 address each.
    assert_eq!(sets[0].members.len(), 18);
    assert!(sets[0]
        .members
        .iter()
        .all(|m| m.protocol == Protocol::Tcp && m.port == 80));
    assert!(sets[1]
        .members
        .iter()
        .all(|m| m.protocol == Protocol::Udp && m.port == 81));
    assert_eq!(sets[0].used_by.len(), 2, "ingress[0] and egress[0] of x/p");
    assert_eq!(sets[1].used_by.len(), 2, "x/p and the admin policy");
    // Set ids are stable and ignore the order of a selector's expressions.
    let ids = |yaml: &str| {
        selector_sets(&policies(yaml), &fixture())
            .into_iter()
            .map(|s| s.id)
            .collect::<Vec<_>>()
    };
    let one = np("x", "p", "  podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}, {key: t, operator: Exists}]}");
    let two = np("x", "p", "  podSelector: {matchExpressions: [{key: t, operator: Exists}, {key: pod, operator: In, values: [b, a]}]}");
    assert_eq!(ids(&one), ids(&two));
    assert_eq!(ids(&one)[0].len(), 16);
}
