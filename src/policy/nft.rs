//! Policy as nftables: the whole policy state of one host rendered as the table `inet
//! ferrynet_policy`, applied by [`super::enforce`] in one transaction.
//!
//! Two base chains on the forward hook, egress first (priority -20, at the source's host)
//! then ingress (-15, at the destination's host). With the bridge's netfilter hooks (on by
//! default in every namespace here) bridged traffic between two ports of one bridge passes
//! them too, so one place covers same-bridge, routed, cross-host and published-port traffic.
//! Traffic from the host itself (OUTPUT) never passes: it is always allowed, as in
//! Kubernetes. Each base chain:
//! 1. `ct state established,related accept`: replies and the rest of allowed connections;
//! 2. the admin tier: every AdminNetworkPolicy rule in priority order (Allow = accept, Deny =
//!    drop, Pass = return, which skips the remaining admin rules);
//! 3. per-endpoint dispatch: a verdict map from each of this host's endpoints' addresses to
//!    the chain of its namespace, which jumps to each NetworkPolicy of the namespace isolating
//!    that direction (each returns unless the endpoint is its subject; an allow rule
//!    accepts), then drops what is isolated and was not allowed (the namespace's isolated
//!    set);
//! 4. the baseline tier (BaselineAdminNetworkPolicy: accept or drop), then the chain's accept.
//!
//! Sets: one per distinct selector and family (the addresses of every endpoint it matches,
//! on any host), one per named port and family of `address . protocol . port` (keyed by the
//! destination, which is where a named port resolves), ipBlocks as anonymous interval sets in
//! their rule with the except beside them. ICMP: a rule with ports never matches it; a rule
//! without ports matches every protocol.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

use super::compiled::{named_port_sets, selector_sets};
use super::eval::PolicySet;
use super::inventory::Inventory;
use super::model::{
    AdminAction, AdminPeers, AdminPort, AdminRuleView, Cidr, Direction, NetworkPolicyPeer,
    NetworkPolicyPort, PolicyType, PortRef, Protocol,
};
use super::selector::EndpointSelector;
use crate::util::fnv1a64;

pub const TABLE: &str = "ferrynet_policy";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}

impl Fam {
    fn ip(self) -> &'static str {
        match self {
            Fam::V4 => "ip",
            Fam::V6 => "ip6",
        }
    }
    fn suffix(self) -> &'static str {
        match self {
            Fam::V4 => "4",
            Fam::V6 => "6",
        }
    }
    fn has(self, ip: IpAddr) -> bool {
        ip.is_ipv4() == (self == Fam::V4)
    }
    fn addr_type(self) -> &'static str {
        match self {
            Fam::V4 => "ipv4_addr",
            Fam::V6 => "ipv6_addr",
        }
    }
}

const FAMILIES: [Fam; 2] = [Fam::V4, Fam::V6];

fn short(text: &str) -> String {
    format!("{:012x}", fnv1a64(text.as_bytes()) & 0xffff_ffff_ffff)
}

fn selector_set(s: &EndpointSelector, f: Fam) -> String {
    format!("@s_{}_{}", s.canonical().id(), f.suffix())
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// Which side of the packet a direction's peer is on, and its subject's.
fn sides(d: Direction) -> (&'static str, &'static str) {
    match d {
        PolicyType::Ingress => ("saddr", "daddr"),
        PolicyType::Egress => ("daddr", "saddr"),
    }
}

/// A peer as an nft match, or `None` when it cannot match in this family.
fn np_peer(peer: &NetworkPolicyPeer, ns: &str, d: Direction, f: Fam) -> Option<String> {
    let (side, _) = sides(d);
    if let Some(block) = &peer.ip_block {
        return cidr_match(&block.cidr, &block.except, side, f);
    }
    peer.selector(ns)
        .map(|s| format!("{} {side} {}", f.ip(), selector_set(&s, f)))
}

fn cidr_match(cidr: &Cidr, except: &[Cidr], side: &str, f: Fam) -> Option<String> {
    if !f.has(cidr.0.addr()) {
        return None;
    }
    let mut m = format!("{} {side} {}", f.ip(), cidr.0.trunc());
    let except: Vec<String> = except
        .iter()
        .filter(|e| f.has(e.0.addr()))
        .map(|e| e.0.trunc().to_string())
        .collect();
    if !except.is_empty() {
        let _ = write!(m, " {} {side} != {{ {} }}", f.ip(), except.join(", "));
    }
    Some(m)
}

/// A port as an nft match (`meta l4proto tcp th dport 80`, a range, a named port's set).
fn np_port(port: &NetworkPolicyPort, f: Fam) -> String {
    let p = proto(port.protocol());
    match (&port.port, port.end_port) {
        (None, _) => format!("meta l4proto {p}"),
        (Some(PortRef::Number(n)), None) => format!("meta l4proto {p} th dport {n}"),
        (Some(PortRef::Number(n)), Some(end)) => format!("meta l4proto {p} th dport {n}-{end}"),
        (Some(PortRef::Name(name)), _) => format!(
            "meta l4proto {p} {} daddr . meta l4proto . th dport @{}",
            f.ip(),
            named_set(name, f)
        ),
    }
}

fn admin_port(port: &AdminPort, f: Fam) -> Option<String> {
    if let Some(n) = &port.port_number {
        let p = proto(n.protocol.unwrap_or(Protocol::Tcp));
        return Some(format!("meta l4proto {p} th dport {}", n.port));
    }
    if let Some(r) = &port.port_range {
        let p = proto(r.protocol.unwrap_or(Protocol::Tcp));
        return Some(format!("meta l4proto {p} th dport {}-{}", r.start, r.end));
    }
    port.named_port.as_ref().map(|name| {
        format!(
            "{} daddr . meta l4proto . th dport @{}",
            f.ip(),
            named_set(name, f)
        )
    })
}

fn named_set(name: &str, f: Fam) -> String {
    format!("n_{}_{}", short(name), f.suffix())
}

/// Every combination of peer and port matches (`None` in a list: anything).
fn combine(peers: &[Option<String>], ports: &[Option<String>], verdict: &str) -> Vec<String> {
    let mut out = Vec::new();
    for peer in peers {
        for port in ports {
            let parts: Vec<&str> = [peer.as_deref(), port.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            out.push(format!("{} {verdict}", parts.join(" ")).trim().to_string());
        }
    }
    out
}

fn np_chain(ns: &str, key: &str, d: Direction) -> String {
    format!("p_{}_{}", short(&format!("{ns}/{key}")), dir(d))
}

fn ns_chain(ns: &str, d: Direction) -> String {
    format!("ns_{}_{}", short(ns), dir(d))
}

fn dir(d: Direction) -> &'static str {
    match d {
        PolicyType::Ingress => "ingress",
        PolicyType::Egress => "egress",
    }
}

fn admin_rules(
    rule: &AdminRuleView<'_>,
    subject: &EndpointSelector,
    d: Direction,
    f: Fam,
    baseline: bool,
) -> Vec<String> {
    let (peer_side, subject_side) = sides(d);
    let verdict = match rule.action {
        AdminAction::Allow => "accept",
        AdminAction::Deny => "drop",
        // Pass has no meaning in the baseline (validated away); in the admin tier it hands
        // the packet over to NetworkPolicy.
        AdminAction::Pass if baseline => "continue",
        AdminAction::Pass => "return",
    };
    let subject = format!("{} {subject_side} {}", f.ip(), selector_set(subject, f));
    let peers: Vec<Option<String>> = match rule.peers {
        AdminPeers::Ingress(from) => from
            .iter()
            .filter_map(|s| s.selector())
            .map(|s| Some(format!("{} {peer_side} {}", f.ip(), selector_set(&s, f))))
            .collect(),
        AdminPeers::Egress(to) => to
            .iter()
            .flat_map(|p| match (&p.networks, p.selector()) {
                (Some(nets), _) => nets
                    .iter()
                    .filter_map(|n| cidr_match(n, &[], peer_side, f))
                    .map(Some)
                    .collect::<Vec<_>>(),
                (None, Some(s)) => {
                    vec![Some(format!(
                        "{} {peer_side} {}",
                        f.ip(),
                        selector_set(&s, f)
                    ))]
                }
                (None, None) => Vec::new(),
            })
            .collect(),
    };
    let ports: Vec<Option<String>> = match rule.ports {
        None => vec![None],
        Some(ports) => ports
            .iter()
            .filter_map(|p| admin_port(p, f))
            .map(Some)
            .collect(),
    };
    combine(&peers, &ports, verdict)
        .into_iter()
        .map(|r| format!("{subject} {r}"))
        .collect()
}

/// The table for `policies` as they apply on the host of `local` (the endpoint ids whose
/// addresses dispatch here); `None` when there is no policy at all (no table is needed).
pub fn render(
    policies: &PolicySet,
    inventory: &Inventory,
    local: &BTreeSet<String>,
) -> Option<String> {
    if policies.network().is_empty() && policies.admin().is_empty() && policies.baseline().is_none()
    {
        return None;
    }
    let mut s = String::new();
    // Replaced whole in one transaction: add (so that delete never fails), delete, define.
    let _ = writeln!(
        s,
        "add table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{"
    );
    for set in selector_sets(policies, inventory) {
        for f in FAMILIES {
            let addrs: Vec<String> = set
                .addresses
                .iter()
                .filter(|a| f.has(**a))
                .map(|a| a.to_string())
                .collect();
            let _ = write!(
                s,
                "  set s_{}_{} {{ type {}; ",
                set.id,
                f.suffix(),
                f.addr_type()
            );
            if !addrs.is_empty() {
                let _ = write!(s, "elements = {{ {} }} ", addrs.join(", "));
            }
            s.push_str("}\n");
        }
    }
    for set in named_port_sets(policies, inventory) {
        for f in FAMILIES {
            let members: Vec<String> = set
                .members
                .iter()
                .filter(|m| f.has(m.address))
                .map(|m| format!("{} . {} . {}", m.address, proto(m.protocol), m.port))
                .collect();
            let _ = write!(
                s,
                "  set {} {{ type {} . inet_proto . inet_service; ",
                named_set(&set.name, f),
                f.addr_type()
            );
            if !members.is_empty() {
                let _ = write!(s, "elements = {{ {} }} ", members.join(", "));
            }
            s.push_str("}\n");
        }
    }
    // NetworkPolicies by namespace and direction: their chains, and each namespace's chain.
    let mut by_ns: BTreeMap<(String, Direction), Vec<String>> = BTreeMap::new();
    for p in policies.network() {
        let ns = p.namespace();
        let key = p.metadata.name.as_str();
        let subject = p.subject();
        for d in [PolicyType::Ingress, PolicyType::Egress] {
            if !p.spec.isolates(d) {
                continue;
            }
            let chain = np_chain(ns, key, d);
            let (_, subject_side) = sides(d);
            let _ = writeln!(s, "  chain {chain} {{");
            for f in FAMILIES {
                let _ = writeln!(
                    s,
                    "    meta nfproto ipv{} {} {subject_side} != {} return",
                    f.suffix(),
                    f.ip(),
                    selector_set(&subject, f)
                );
            }
            for (peers, ports) in p.spec.rules(d) {
                for f in FAMILIES {
                    let peers: Vec<Option<String>> = if peers.is_empty() {
                        vec![None]
                    } else {
                        peers
                            .iter()
                            .filter_map(|x| np_peer(x, ns, d, f))
                            .map(Some)
                            .collect()
                    };
                    let ports: Vec<Option<String>> = if ports.is_empty() {
                        vec![None]
                    } else {
                        ports.iter().map(|x| Some(np_port(x, f))).collect()
                    };
                    for rule in combine(&peers, &ports, "accept") {
                        let _ = writeln!(s, "    meta nfproto ipv{} {rule}", f.suffix());
                    }
                }
            }
            s.push_str("  }\n");
            by_ns.entry((ns.to_string(), d)).or_default().push(chain);
        }
    }
    for ((ns, d), chains) in &by_ns {
        let _ = writeln!(s, "  chain {} {{", ns_chain(ns, *d));
        for c in chains {
            let _ = writeln!(s, "    jump {c}");
        }
        // Isolated and not allowed: the union of the subjects of the namespace's policies.
        let (_, subject_side) = sides(*d);
        for p in policies
            .network()
            .iter()
            .filter(|p| p.namespace() == ns && p.spec.isolates(*d))
        {
            for f in FAMILIES {
                let _ = writeln!(
                    s,
                    "    {} {subject_side} {} drop",
                    f.ip(),
                    selector_set(&p.subject(), f)
                );
            }
        }
        s.push_str("  }\n");
    }
    // The admin and baseline tiers, per direction.
    for d in [PolicyType::Ingress, PolicyType::Egress] {
        for (tier, views, baseline) in [
            (
                "admin",
                policies
                    .admin()
                    .iter()
                    .map(|p| p.view())
                    .collect::<Vec<_>>(),
                false,
            ),
            (
                "baseline",
                policies.baseline().map(|p| p.view()).into_iter().collect(),
                true,
            ),
        ] {
            let _ = writeln!(s, "  chain {tier}_{} {{", dir(d));
            for view in &views {
                let Some(subject) = view.subject.selector() else {
                    continue;
                };
                for rule in view.rules(d) {
                    for f in FAMILIES {
                        for r in admin_rules(rule, &subject, d, f, baseline) {
                            let _ = writeln!(s, "    {r}");
                        }
                    }
                }
            }
            s.push_str("  }\n");
        }
    }
    // Dispatch: this host's endpoints, by address, to their namespace's chain.
    for d in [PolicyType::Ingress, PolicyType::Egress] {
        for f in FAMILIES {
            let elements: Vec<String> = inventory
                .endpoints()
                .filter(|e| local.contains(&e.id) && by_ns.contains_key(&(e.namespace.clone(), d)))
                .flat_map(|e| {
                    let chain = ns_chain(&e.namespace, d);
                    e.addresses
                        .iter()
                        .filter(|a| f.has(**a))
                        .map(move |a| format!("{a} : jump {chain}"))
                        .collect::<Vec<_>>()
                })
                .collect();
            let _ = write!(
                s,
                "  map to_{}{} {{ type {} : verdict; ",
                dir(d),
                f.suffix(),
                f.addr_type()
            );
            if !elements.is_empty() {
                let _ = write!(s, "elements = {{ {} }} ", elements.join(", "));
            }
            s.push_str("}\n");
        }
    }
    for (d, priority) in [(PolicyType::Egress, -20), (PolicyType::Ingress, -15)] {
        let (_, subject_side) = sides(d);
        let _ = writeln!(
            s,
            "  chain policy_{0} {{\n    type filter hook forward priority {priority}; policy accept;\n    ct state established,related accept\n    jump admin_{0}\n    ip {subject_side} vmap @to_{0}4\n    ip6 {subject_side} vmap @to_{0}6\n    jump baseline_{0}\n  }}",
            dir(d)
        );
    }
    s.push_str("}\n");
    Some(s)
}
