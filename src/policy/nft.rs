//! Policy as nftables: the policy state of one host as the table `inet ferrynet_policy`
//! ([`Ruleset`]), which [`super::enforce`] applies as the difference from what the kernel has.
//!
//! Two base chains on the forward hook, egress first (priority -20, at the source's host)
//! then ingress (-15, at the destination's host). With the bridge's netfilter hooks (on by
//! default in every namespace here) bridged traffic between two ports of one bridge passes
//! them too, so one place covers same-bridge, routed, cross-host and published-port traffic.
//! Traffic from the host itself (OUTPUT) never passes: it is always allowed, as in
//! Kubernetes. Each base chain:
//! 1. `ct state established,related accept`: replies and the rest of allowed connections;
//! 2. the admin tier: every AdminNetworkPolicy rule in priority order (Allow = accept, Deny =
//!    deny, Pass = return, which skips the remaining admin rules) — one chain, since Pass
//!    must leave the whole tier;
//! 3. per-endpoint dispatch: a verdict map from each of this host's endpoints' addresses to
//!    the chain of its namespace, which jumps to each NetworkPolicy of the namespace isolating
//!    that direction (one chain per policy and direction: each returns unless the endpoint is
//!    its subject; an allow rule accepts), then denies what is isolated and was not allowed;
//! 4. the baseline tier (BaselineAdminNetworkPolicy: accept or deny), for this host's own
//!    endpoints only (a packet on its way to, or from, an endpoint of another host has not
//!    met that endpoint's NetworkPolicy tier here: its host decides), then the chain's accept.
//!
//! Every deny goes to `deny_<direction>`, which counts the drop per endpoint (a set of this
//! host's endpoints with a counter per element) and drops; a policy annotated
//! `ferrynet.io/log-drops: "true"` first logs the packet to NFLOG group [`LOG_GROUP`] with a
//! prefix naming the policy (and rule). Every allow rule counts its packets, with a comment
//! naming its policy, direction and rule.
//!
//! Sets: one per distinct selector and family (the addresses of every endpoint it matches,
//! on any host), one per named port and family of `address . protocol . port` (keyed by the
//! destination, which is where a named port resolves), ipBlocks as anonymous interval sets in
//! their rule with the except beside them. A new pod, a label change or a pod on another host
//! changes only elements; a policy change rewrites the chains of that policy (and its
//! namespace's dispatch chain when it comes or goes). ICMP: a rule with ports never matches
//! it; a rule without ports matches every protocol.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::eval::PolicySet;
use super::inventory::Inventory;
use super::model::{
    AdminAction, AdminPeers, AdminPort, AdminRuleView, Cidr, Direction, NetworkPolicyPeer,
    NetworkPolicyPort, ObjectMeta, PolicyKey, PolicyType, PortRef, Protocol,
};
use super::plan::Plan;
use super::ruleset::{protocol_name as proto, Chain, Fam, Ruleset, SetKind, FAMILIES};
use super::selector::EndpointSelector;
use crate::util::fnv1a64;

pub use super::ruleset::TABLE;

/// The NFLOG group denied packets of policies with `ferrynet.io/log-drops` go to (read by
/// `ferrynet policy drops` and the agent's `--log-drops`).
pub const LOG_GROUP: u16 = 2811;

/// The annotation that turns on drop logging for a policy.
pub const LOG_ANNOTATION: &str = "ferrynet.io/log-drops";

pub(super) const DIRECTIONS: [Direction; 2] = [PolicyType::Ingress, PolicyType::Egress];

fn short(text: &str) -> String {
    format!("{:012x}", fnv1a64(text.as_bytes()) & 0xffff_ffff_ffff)
}

pub(super) fn selector_set_name(id: &str, f: Fam) -> String {
    format!("s_{id}_{}", f.suffix())
}

fn selector_set(s: &EndpointSelector, f: Fam) -> String {
    format!("@{}", selector_set_name(&s.canonical().id(), f))
}

pub(super) fn dispatch_map(d: Direction, f: Fam) -> String {
    format!("to_{}{}", dir(d), f.suffix())
}

pub(super) fn drops_set(d: Direction, f: Fam) -> String {
    format!("drops_{}{}", dir(d), f.suffix())
}

/// This host's endpoints' addresses: the baseline tier decides only for them (on the other
/// side's host a packet has not met the NetworkPolicy tier of its endpoint).
pub(super) fn local_set(f: Fam) -> String {
    format!("local{}", f.suffix())
}

fn deny_chain(d: Direction) -> String {
    format!("deny_{}", dir(d))
}

/// The comment of an allow rule, which `policy ls` reads its counter by.
pub fn rule_comment(key: &PolicyKey, d: Direction, index: usize) -> String {
    format!("{key} {d}[{index}]")
}

/// The comment of a NetworkPolicy's isolation rule in its namespace's chain (what no rule
/// allowed), for its counter.
pub fn isolation_comment(key: &PolicyKey, d: Direction) -> String {
    format!("{key} {d} isolation")
}

fn logs(meta: &ObjectMeta) -> bool {
    meta.annotations.get(LOG_ANNOTATION).map(String::as_str) == Some("true")
}

/// A deny: to the deny chain, logged first when the policy asks for it.
fn deny(d: Direction, log_prefix: Option<String>) -> String {
    match log_prefix {
        Some(prefix) => format!(
            "log prefix \"{prefix}: \" group {LOG_GROUP} goto {}",
            deny_chain(d)
        ),
        None => format!("goto {}", deny_chain(d)),
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

pub(super) fn named_set(name: &str, f: Fam) -> String {
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

pub(super) fn ns_chain(ns: &str, d: Direction) -> String {
    format!("ns_{}_{}", short(ns), dir(d))
}

fn dir(d: Direction) -> &'static str {
    match d {
        PolicyType::Ingress => "ingress",
        PolicyType::Egress => "egress",
    }
}

/// One admin rule as nft rules (every peer × port); `comment` names it for its counter.
fn admin_rules(
    rule: &AdminRuleView<'_>,
    subject: &EndpointSelector,
    d: Direction,
    f: Fam,
    (baseline, comment, log): (bool, &str, bool),
) -> Vec<String> {
    let (peer_side, subject_side) = sides(d);
    let verdict = match rule.action {
        AdminAction::Allow => "accept".to_string(),
        AdminAction::Deny => deny(d, log.then(|| comment.to_string())),
        // Pass has no meaning in the baseline (validated away); in the admin tier it hands
        // the packet over to NetworkPolicy.
        AdminAction::Pass if baseline => "continue".to_string(),
        AdminAction::Pass => "return".to_string(),
    };
    let verdict = format!("counter {verdict} comment \"{comment}\"");
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
    combine(&peers, &ports, &verdict)
        .into_iter()
        .map(|r| format!("{subject} {r}"))
        .collect()
}

/// A NetworkPolicy isolating its namespace's endpoints in one direction.
struct Isolating {
    chain: String,
    subject: EndpointSelector,
    log: bool,
    key: PolicyKey,
}

fn chain(rules: Vec<String>) -> Chain {
    Chain { hook: None, rules }
}

/// The table for `policies` (summarised by `plan`) as they apply on the host of `local`
/// (the endpoint ids whose addresses dispatch here).
pub fn build(
    policies: &PolicySet,
    plan: &Plan,
    inventory: &Inventory,
    local: &BTreeSet<String>,
) -> Ruleset {
    let mut r = Ruleset::default();
    // Every set exists even while empty: rules refer to them, and the per-endpoint path
    // only adds elements.
    for f in FAMILIES {
        for (id, _) in &plan.selectors {
            r.set(
                selector_set_name(id, f),
                SetKind::Addresses {
                    fam: f,
                    counter: false,
                },
            );
        }
        for name in &plan.named_ports {
            r.set(named_set(name, f), SetKind::NamedPorts { fam: f });
        }
        r.set(
            local_set(f),
            SetKind::Addresses {
                fam: f,
                counter: false,
            },
        );
        for d in DIRECTIONS {
            r.set(dispatch_map(d, f), SetKind::Dispatch { fam: f });
            r.set(
                drops_set(d, f),
                SetKind::Addresses {
                    fam: f,
                    counter: true,
                },
            );
        }
    }
    for e in inventory.endpoints() {
        for (set, kind, elem) in plan.endpoint_elements(inventory, e, local.contains(&e.id)) {
            r.set(set, kind).insert(elem);
        }
    }
    // NetworkPolicies by namespace and direction: their chains, and each namespace's chain.
    let mut by_ns: BTreeMap<(String, Direction), Vec<Isolating>> = BTreeMap::new();
    for p in policies.network() {
        let ns = p.namespace();
        let key = p.key();
        let subject = p.subject();
        for d in DIRECTIONS {
            if !p.spec.isolates(d) {
                continue;
            }
            let name = np_chain(ns, &p.metadata.name, d);
            let (_, subject_side) = sides(d);
            let mut rules = Vec::new();
            for f in FAMILIES {
                rules.push(format!(
                    "meta nfproto ipv{} {} {subject_side} != {} return",
                    f.suffix(),
                    f.ip(),
                    selector_set(&subject, f)
                ));
            }
            for (index, (peers, ports)) in p.spec.rules(d).into_iter().enumerate() {
                let verdict = format!(
                    "counter accept comment \"{}\"",
                    rule_comment(&key, d, index)
                );
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
                    for rule in combine(&peers, &ports, &verdict) {
                        rules.push(format!("meta nfproto ipv{} {rule}", f.suffix()));
                    }
                }
            }
            r.chains.insert(name.clone(), chain(rules));
            by_ns
                .entry((ns.to_string(), d))
                .or_default()
                .push(Isolating {
                    chain: name,
                    subject: subject.clone(),
                    log: logs(&p.metadata),
                    key: key.clone(),
                });
        }
    }
    for ((ns, d), policies) in &by_ns {
        let mut rules: Vec<String> = policies
            .iter()
            .map(|p| format!("jump {}", p.chain))
            .collect();
        // Isolated and not allowed: the union of the subjects of the namespace's policies.
        // The first that selects the endpoint counts the denial; those that log come
        // first, so that a logging policy isolating the endpoint is the one named.
        let (_, subject_side) = sides(*d);
        let (logging, quiet): (Vec<&Isolating>, Vec<&Isolating>) =
            policies.iter().partition(|p| p.log);
        for p in logging.into_iter().chain(quiet) {
            for f in FAMILIES {
                rules.push(format!(
                    "{} {subject_side} {} counter {} comment \"{}\"",
                    f.ip(),
                    selector_set(&p.subject, f),
                    deny(*d, p.log.then(|| format!("{} {d}", p.key))),
                    isolation_comment(&p.key, *d)
                ));
            }
        }
        r.chains.insert(ns_chain(ns, *d), chain(rules));
    }
    // The admin and baseline tiers, per direction.
    for d in DIRECTIONS {
        let admin = policies
            .admin()
            .iter()
            .map(|p| (p.view(), logs(&p.metadata), false));
        let baseline = policies
            .baseline()
            .map(|p| (p.view(), logs(&p.metadata), true));
        let mut tiers: [Vec<String>; 2] = Default::default();
        for (view, log, is_baseline) in admin.chain(baseline) {
            let Some(subject) = view.subject.selector() else {
                continue;
            };
            for (index, rule) in view.rules(d).iter().enumerate() {
                let comment = rule_comment(&view.key, d, index);
                for f in FAMILIES {
                    tiers[usize::from(is_baseline)].extend(admin_rules(
                        rule,
                        &subject,
                        d,
                        f,
                        (is_baseline, &comment, log),
                    ));
                }
            }
        }
        let [admin, baseline] = tiers;
        r.chains.insert(format!("admin_{}", dir(d)), chain(admin));
        r.chains
            .insert(format!("baseline_{}", dir(d)), chain(baseline));
        let (_, subject_side) = sides(d);
        r.chains.insert(
            deny_chain(d),
            chain(vec![
                format!("ip {subject_side} @{}", drops_set(d, Fam::V4)),
                format!("ip6 {subject_side} @{}", drops_set(d, Fam::V6)),
                "counter drop".to_string(),
            ]),
        );
    }
    for (d, priority) in [(PolicyType::Egress, -20), (PolicyType::Ingress, -15)] {
        let (_, subject_side) = sides(d);
        let name = dir(d);
        r.chains.insert(
            format!("policy_{name}"),
            Chain {
                hook: Some(format!(
                    "type filter hook forward priority {priority}; policy accept;"
                )),
                rules: vec![
                    "ct state established,related accept".into(),
                    format!("jump admin_{name}"),
                    format!("ip {subject_side} vmap @{}", dispatch_map(d, Fam::V4)),
                    format!("ip6 {subject_side} vmap @{}", dispatch_map(d, Fam::V6)),
                    format!(
                        "ip {subject_side} @{} jump baseline_{name}",
                        local_set(Fam::V4)
                    ),
                    format!(
                        "ip6 {subject_side} @{} jump baseline_{name}",
                        local_set(Fam::V6)
                    ),
                ],
            },
        );
    }
    r
}
