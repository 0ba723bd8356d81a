//! The compiled view the nftables step renders: every distinct selector used anywhere (a
//! policy's subject, or a peer of one of its rules), the endpoints it matches now, and who
//! uses it. One address set per entry can then be shared by every rule that names the same
//! selector; a new pod or a label change changes set members, never a rule. Likewise one
//! set per named port a rule uses, of (address, protocol, port) for every endpoint that
//! names a port so, and the policies each endpoint dispatches to. Plain data: no nftables
//! types here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use super::eval::{PolicySet, RuleRef};
use super::inventory::{EndpointRecord, Inventory};
use super::model::{
    AdminPeers, AdminRuleView, Direction, PolicyKey, PolicyType, PortRef, Protocol,
};
use super::selector::EndpointSelector;

/// Where a selector is used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase", tag = "as")]
pub enum SelectorUse {
    /// The endpoints a policy applies to (its podSelector or admin subject).
    Subject { policy: PolicyKey },
    /// Peer number `peer` of a rule.
    Peer { rule: RuleRef, peer: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelectorSet {
    /// A stable name for the set: the same selector has the same id on every host and
    /// across restarts ([`EndpointSelector::id`]).
    pub id: String,
    /// In canonical form: selectors that differ only in the order of their expressions or
    /// values are one entry.
    pub selector: EndpointSelector,
    /// Endpoint ids, sorted.
    pub members: Vec<String>,
    /// Every address of the members, sorted (both families).
    pub addresses: Vec<IpAddr>,
    /// Sorted.
    pub used_by: Vec<SelectorUse>,
}

/// The distinct selectors of `policies`, in canonical order, with their members in
/// `inventory`.
pub fn selector_sets(policies: &PolicySet, inventory: &Inventory) -> Vec<SelectorSet> {
    let mut uses: BTreeMap<EndpointSelector, Vec<SelectorUse>> = BTreeMap::new();
    let mut add = |selector: Option<EndpointSelector>, used: SelectorUse| {
        if let Some(s) = selector {
            uses.entry(s.canonical()).or_default().push(used);
        }
    };
    for p in policies.network() {
        let policy = p.key();
        add(
            Some(p.subject()),
            SelectorUse::Subject {
                policy: policy.clone(),
            },
        );
        for direction in [PolicyType::Ingress, PolicyType::Egress] {
            for (index, (peers, _)) in p.spec.rules(direction).into_iter().enumerate() {
                for (peer, x) in peers.iter().enumerate() {
                    let rule = RuleRef::new(&policy, direction, index, None);
                    add(x.selector(p.namespace()), SelectorUse::Peer { rule, peer });
                }
            }
        }
    }
    let admin = policies.admin().iter().map(|p| p.view());
    let baseline = policies.baseline().map(|p| p.view());
    for view in admin.chain(baseline) {
        let policy = &view.key;
        add(
            view.subject.selector(),
            SelectorUse::Subject {
                policy: policy.clone(),
            },
        );
        for direction in [PolicyType::Ingress, PolicyType::Egress] {
            for (index, rule) in view.rules(direction).iter().enumerate() {
                for (peer, selector) in admin_peer_selectors(rule).into_iter().enumerate() {
                    let rule = RuleRef::new(policy, direction, index, rule.name);
                    add(selector, SelectorUse::Peer { rule, peer });
                }
            }
        }
    }
    uses.into_iter()
        .map(|(selector, mut used_by)| {
            used_by.sort();
            let matching: Vec<_> = inventory
                .endpoints()
                .filter(|e| selector.matches(e, inventory))
                .collect();
            let mut addresses: Vec<IpAddr> = matching
                .iter()
                .flat_map(|e| e.addresses.iter().copied())
                .collect();
            addresses.sort();
            addresses.dedup();
            SelectorSet {
                id: selector.id(),
                members: matching.iter().map(|e| e.id.clone()).collect(),
                selector,
                addresses,
                used_by,
            }
        })
        .collect()
}

/// Each peer's selector in peer order (`None` for a `networks` peer).
fn admin_peer_selectors(rule: &AdminRuleView<'_>) -> Vec<Option<EndpointSelector>> {
    match rule.peers {
        AdminPeers::Ingress(from) => from.iter().map(|s| s.selector()).collect(),
        AdminPeers::Egress(to) => to.iter().map(|p| p.selector()).collect(),
    }
}

/// The policies that apply to one endpoint in each direction, in evaluation order (admin by
/// priority, the NetworkPolicies that isolate it, the baseline): what its entry in a
/// per-endpoint verdict map dispatches to. A NetworkPolicy without rules is listed too (it
/// isolates); an admin policy without rules in a direction is not (it decides nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EndpointPolicies {
    pub ingress: Vec<PolicyKey>,
    pub egress: Vec<PolicyKey>,
}

impl EndpointPolicies {
    pub fn direction(&self, direction: Direction) -> &[PolicyKey] {
        match direction {
            PolicyType::Ingress => &self.ingress,
            PolicyType::Egress => &self.egress,
        }
    }
}

/// Endpoint id → the policies applying to it; endpoints no policy applies to are left out.
pub fn endpoint_policies(
    policies: &PolicySet,
    inventory: &Inventory,
) -> BTreeMap<String, EndpointPolicies> {
    let mut out = BTreeMap::new();
    for endpoint in inventory.endpoints() {
        let mut applying = EndpointPolicies::default();
        for direction in [PolicyType::Ingress, PolicyType::Egress] {
            let list = match direction {
                PolicyType::Ingress => &mut applying.ingress,
                PolicyType::Egress => &mut applying.egress,
            };
            let admin = policies.admin().iter().map(|p| p.view());
            for view in admin {
                if admin_applies(&view, direction, endpoint, inventory) {
                    list.push(view.key.clone());
                }
            }
            for p in policies.network() {
                if p.spec.isolates(direction) && p.subject().matches(endpoint, inventory) {
                    list.push(p.key());
                }
            }
            if let Some(view) = policies.baseline().map(|p| p.view()) {
                if admin_applies(&view, direction, endpoint, inventory) {
                    list.push(view.key.clone());
                }
            }
        }
        if applying != EndpointPolicies::default() {
            out.insert(endpoint.id.clone(), applying);
        }
    }
    out
}

fn admin_applies(
    view: &super::model::AdminPolicyView<'_>,
    direction: Direction,
    endpoint: &EndpointRecord,
    inventory: &Inventory,
) -> bool {
    !view.rules(direction).is_empty()
        && view
            .subject
            .selector()
            .is_some_and(|s| s.matches(endpoint, inventory))
}

/// One endpoint's port of a given name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct NamedPortMember {
    pub address: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

/// A port name some rule uses, and where it resolves. Names are unique within a pod, and
/// the protocol is part of each member, so a rule matching `(daddr, l4proto, dport)` in
/// this set gets Kubernetes' meaning for NetworkPolicy (the rule's protocol must be the
/// pod's) and for admin policies (the pod's protocol) alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedPortSet {
    pub name: String,
    /// Sorted: every address of every endpoint naming a port so.
    pub members: Vec<NamedPortMember>,
    /// Sorted.
    pub used_by: Vec<RuleRef>,
}

/// The named ports of `policies`' rules, by name, with their members in `inventory`.
pub fn named_port_sets(policies: &PolicySet, inventory: &Inventory) -> Vec<NamedPortSet> {
    let mut uses: BTreeMap<String, Vec<RuleRef>> = BTreeMap::new();
    for p in policies.network() {
        for direction in [PolicyType::Ingress, PolicyType::Egress] {
            for (index, (_, ports)) in p.spec.rules(direction).into_iter().enumerate() {
                for port in ports {
                    if let Some(PortRef::Name(name)) = &port.port {
                        let rule = RuleRef::new(&p.key(), direction, index, None);
                        uses.entry(name.clone()).or_default().push(rule);
                    }
                }
            }
        }
    }
    let admin = policies.admin().iter().map(|p| p.view());
    for view in admin.chain(policies.baseline().map(|p| p.view())) {
        for direction in [PolicyType::Ingress, PolicyType::Egress] {
            for (index, rule) in view.rules(direction).iter().enumerate() {
                for port in rule.ports.unwrap_or_default() {
                    if let Some(name) = &port.named_port {
                        let rule = RuleRef::new(&view.key, direction, index, rule.name);
                        uses.entry(name.clone()).or_default().push(rule);
                    }
                }
            }
        }
    }
    uses.into_iter()
        .map(|(name, mut used_by)| {
            used_by.sort();
            used_by.dedup();
            let mut members: Vec<NamedPortMember> = inventory
                .endpoints()
                .flat_map(|e| {
                    let named = e.named_ports.iter().filter(|p| p.name == name);
                    named.flat_map(|p| {
                        e.addresses.iter().map(|address| NamedPortMember {
                            address: *address,
                            protocol: p.protocol,
                            port: p.port,
                        })
                    })
                })
                .collect();
            members.sort();
            members.dedup();
            NamedPortSet {
                name,
                members,
                used_by,
            }
        })
        .collect()
}
