//! The reference evaluation: whether one flow (source, destination, protocol and port) is
//! allowed, and which policy rule decided it (what `trace` and drop logs name). The nftables
//! rules must agree with this on every flow; tests compare against it.
//!
//! A connection needs the egress side (at the source, when it is an endpoint) and the
//! ingress side (at the destination, when it is an endpoint) to allow it; replies of an
//! allowed connection ride conntrack and are not evaluated. Each side walks the tiers:
//! 1. AdminNetworkPolicy, lowest `priority` first (equal priorities by name, so the order is
//!    always the same; upstream leaves it undefined): the first rule that matches decides —
//!    Allow or Deny — or with Pass skips the remaining admin policies.
//! 2. NetworkPolicy: if any policy selecting the endpoint isolates that direction, only the
//!    union of their rules allows (no match: denied, and the baseline is not consulted).
//! 3. BaselineAdminNetworkPolicy: the first matching rule decides.
//! 4. Nothing applies: allowed.
//!
//! Fixed exceptions: traffic from an endpoint's own host to it is always allowed (kubelet
//! health checks), and so is an endpoint's traffic to itself (it never leaves its namespace,
//! so no host rule could see it).
//!
//! ICMP (Kubernetes leaves it undefined): a rule that lists ports matches only TCP, UDP or
//! SCTP to those ports, never ICMP; a rule without ports matches every protocol, ICMP
//! included. So an isolated endpoint answers ping only where some rule allows the peer on
//! all ports.

use std::net::IpAddr;

pub use super::flow::*;
use super::inventory::{EndpointRecord, Inventory};
use super::model::*;
use super::PolicyError;

/// Every policy in force, in evaluation order.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    admin: Vec<AdminNetworkPolicy>,
    network: Vec<NetworkPolicy>,
    baseline: Option<BaselineAdminNetworkPolicy>,
}

impl PolicySet {
    pub fn new(policies: impl IntoIterator<Item = Policy>) -> PolicySet {
        let mut set = PolicySet::default();
        for p in policies {
            match p {
                Policy::Network(p) => set.network.push(p),
                Policy::Admin(p) => set.admin.push(p),
                Policy::Baseline(p) => set.baseline = Some(p),
            }
        }
        set.admin.sort_by(|a, b| {
            (a.spec.priority, &a.metadata.name).cmp(&(b.spec.priority, &b.metadata.name))
        });
        set.network.sort_by_key(NetworkPolicy::key);
        set
    }

    /// Admin policies in evaluation order.
    pub fn admin(&self) -> &[AdminNetworkPolicy] {
        &self.admin
    }

    /// NetworkPolicies by namespace and name.
    pub fn network(&self) -> &[NetworkPolicy] {
        &self.network
    }

    pub fn baseline(&self) -> Option<&BaselineAdminNetworkPolicy> {
        self.baseline.as_ref()
    }
}

/// A flow end once looked up.
#[derive(Debug, Clone, Copy)]
enum End<'a> {
    Pod {
        endpoint: &'a EndpointRecord,
        address: Option<IpAddr>,
    },
    Outside {
        address: IpAddr,
        host: Option<&'a str>,
    },
}

impl<'a> End<'a> {
    fn endpoint(self) -> Option<&'a EndpointRecord> {
        match self {
            End::Pod { endpoint, .. } => Some(endpoint),
            End::Outside { .. } => None,
        }
    }

    fn address(self) -> Option<IpAddr> {
        match self {
            End::Pod { address, .. } => address,
            End::Outside { address, .. } => Some(address),
        }
    }
}

fn explicit_address(end: &FlowEnd) -> Option<IpAddr> {
    match end {
        FlowEnd::Endpoint(_) => None,
        FlowEnd::Address(a) | FlowEnd::Host { address: a, .. } => Some(*a),
    }
}

fn resolve<'a>(
    end: &'a FlowEnd,
    other: Option<IpAddr>,
    inventory: &'a Inventory,
) -> Result<End<'a>, PolicyError> {
    Ok(match end {
        FlowEnd::Endpoint(id) => {
            let endpoint = inventory
                .endpoint(id)
                .ok_or_else(|| PolicyError::UnknownEndpoint(id.clone()))?;
            // Of the other end's family; an endpoint without one has no address in this
            // flow (an IPv4 ipBlock must not match an IPv6 flow).
            let address = match other {
                Some(o) => endpoint.address_like(o),
                None => endpoint.addresses.first().copied(),
            };
            End::Pod { endpoint, address }
        }
        FlowEnd::Address(a) => match inventory.endpoint_by_address(*a) {
            Some(endpoint) => End::Pod {
                endpoint,
                address: Some(*a),
            },
            None => End::Outside {
                address: *a,
                host: None,
            },
        },
        FlowEnd::Host { node, address } => End::Outside {
            address: *address,
            host: Some(node),
        },
    })
}

/// The verdict on `flow` under `policies` (see the module's comment for the rules).
pub fn evaluate(
    policies: &PolicySet,
    inventory: &Inventory,
    flow: &Flow,
) -> Result<Verdict, PolicyError> {
    let src = resolve(&flow.src, explicit_address(&flow.dst), inventory)?;
    let dst = resolve(&flow.dst, explicit_address(&flow.src), inventory)?;
    let ctx = Context {
        inventory,
        l4: flow.l4,
        dst,
    };
    if let (Some(s), Some(d)) = (src.endpoint(), dst.endpoint()) {
        if s.id == d.id {
            let same = SideVerdict::new(Action::Allow, Reason::SameEndpoint);
            return Ok(Verdict {
                action: Action::Allow,
                egress: same.clone(),
                ingress: same,
            });
        }
    }
    let egress = match src.endpoint() {
        Some(subject) => ctx.side(policies, PolicyType::Egress, subject, dst),
        None => SideVerdict::new(Action::Allow, Reason::NotAnEndpoint),
    };
    let ingress = match (dst.endpoint(), src) {
        (
            Some(subject),
            End::Outside {
                host: Some(node), ..
            },
        ) if node == subject.host => SideVerdict::new(Action::Allow, Reason::OwnHost),
        (Some(subject), _) => ctx.side(policies, PolicyType::Ingress, subject, src),
        (None, _) => SideVerdict::new(Action::Allow, Reason::NotAnEndpoint),
    };
    let action = if egress.action == Action::Allow && ingress.action == Action::Allow {
        Action::Allow
    } else {
        Action::Deny
    };
    Ok(Verdict {
        action,
        egress,
        ingress,
    })
}

/// What every rule match needs besides the rule: named ports resolve on the destination.
struct Context<'a> {
    inventory: &'a Inventory,
    l4: L4,
    dst: End<'a>,
}

impl Context<'_> {
    /// One side: `subject` is the endpoint whose policies apply, `peer` the other end.
    fn side(
        &self,
        policies: &PolicySet,
        direction: Direction,
        subject: &EndpointRecord,
        peer: End<'_>,
    ) -> SideVerdict {
        let mut passed_by = None;
        for anp in policies.admin() {
            let Some((rule, action)) =
                self.first_admin_match(&anp.view(), direction, subject, peer)
            else {
                continue;
            };
            let action = match action {
                AdminAction::Allow => Action::Allow,
                AdminAction::Deny => Action::Deny,
                AdminAction::Pass => {
                    passed_by = Some(rule);
                    break;
                }
            };
            let priority = anp.spec.priority;
            return SideVerdict::new(action, Reason::Admin { rule, priority });
        }
        let mut verdict = self
            .network_policies(policies, direction, subject, peer)
            .or_else(|| self.baseline(policies, direction, subject, peer))
            .unwrap_or_else(|| SideVerdict::new(Action::Allow, Reason::NoPolicy));
        verdict.passed_by = passed_by;
        verdict
    }

    /// `None` when no NetworkPolicy isolates `subject` in `direction`.
    fn network_policies(
        &self,
        policies: &PolicySet,
        direction: Direction,
        subject: &EndpointRecord,
        peer: End<'_>,
    ) -> Option<SideVerdict> {
        let isolating: Vec<&NetworkPolicy> = policies
            .network()
            .iter()
            .filter(|p| p.spec.isolates(direction) && p.subject().matches(subject, self.inventory))
            .collect();
        if isolating.is_empty() {
            return None;
        }
        for p in &isolating {
            let namespace = p.namespace();
            for (index, (peers, ports)) in p.spec.rules(direction).into_iter().enumerate() {
                let peer_ok = peers.is_empty()
                    || peers
                        .iter()
                        .any(|x| self.network_peer_matches(x, namespace, peer));
                let port_ok =
                    ports.is_empty() || ports.iter().any(|x| self.network_port_matches(x));
                if peer_ok && port_ok {
                    let rule = RuleRef::new(&p.key(), direction, index, None);
                    return Some(SideVerdict::new(
                        Action::Allow,
                        Reason::NetworkPolicy { rule },
                    ));
                }
            }
        }
        let policies = isolating.iter().map(|p| p.key()).collect();
        Some(SideVerdict::new(
            Action::Deny,
            Reason::Isolated { policies },
        ))
    }

    fn baseline(
        &self,
        policies: &PolicySet,
        direction: Direction,
        subject: &EndpointRecord,
        peer: End<'_>,
    ) -> Option<SideVerdict> {
        let banp = policies.baseline()?;
        let (rule, action) = self.first_admin_match(&banp.view(), direction, subject, peer)?;
        let action = match action {
            AdminAction::Deny => Action::Deny,
            // Baseline rules are Allow or Deny (Pass is refused when parsing).
            AdminAction::Allow | AdminAction::Pass => Action::Allow,
        };
        Some(SideVerdict::new(action, Reason::Baseline { rule }))
    }

    /// The first rule of an admin policy selecting `subject` that matches the flow.
    fn first_admin_match(
        &self,
        policy: &AdminPolicyView<'_>,
        direction: Direction,
        subject: &EndpointRecord,
        peer: End<'_>,
    ) -> Option<(RuleRef, AdminAction)> {
        if !selects(policy.subject.selector(), subject, self.inventory) {
            return None;
        }
        let (index, rule) = policy
            .rules(direction)
            .iter()
            .enumerate()
            .find(|(_, r)| self.admin_rule_matches(r, peer))?;
        let rule_ref = RuleRef::new(&policy.key, direction, index, rule.name);
        Some((rule_ref, rule.action))
    }

    fn network_peer_matches(
        &self,
        peer: &NetworkPolicyPeer,
        namespace: &str,
        end: End<'_>,
    ) -> bool {
        if let Some(block) = &peer.ip_block {
            return end.address().is_some_and(|a| block.contains(a));
        }
        end.endpoint()
            .is_some_and(|e| selects(peer.selector(namespace), e, self.inventory))
    }

    fn network_port_matches(&self, port: &NetworkPolicyPort) -> bool {
        let Some((protocol, number)) = self.l4.port() else {
            return false;
        };
        if port.protocol() != protocol {
            return false;
        }
        match &port.port {
            None => true,
            Some(PortRef::Number(start)) => {
                (*start..=port.end_port.unwrap_or(*start)).contains(&number)
            }
            Some(PortRef::Name(name)) => self.named_port_matches(name, protocol, number),
        }
    }

    fn admin_rule_matches(&self, rule: &AdminRuleView<'_>, peer: End<'_>) -> bool {
        let peer_ok = match rule.peers {
            AdminPeers::Ingress(from) => from.iter().any(|s| {
                peer.endpoint()
                    .is_some_and(|e| selects(s.selector(), e, self.inventory))
            }),
            AdminPeers::Egress(to) => to.iter().any(|p| match &p.networks {
                Some(networks) => peer
                    .address()
                    .is_some_and(|a| networks.iter().any(|n| n.0.contains(&a))),
                None => peer
                    .endpoint()
                    .is_some_and(|e| selects(p.selector(), e, self.inventory)),
            }),
        };
        let ports_ok = match rule.ports {
            None => true,
            Some(ports) => ports.iter().any(|p| self.admin_port_matches(p)),
        };
        peer_ok && ports_ok
    }

    fn admin_port_matches(&self, port: &AdminPort) -> bool {
        let Some((protocol, number)) = self.l4.port() else {
            return false;
        };
        if let Some(p) = &port.port_number {
            return p.protocol.unwrap_or(Protocol::Tcp) == protocol && p.port == number;
        }
        if let Some(name) = &port.named_port {
            return self.named_port_matches(name, protocol, number);
        }
        if let Some(r) = &port.port_range {
            return r.protocol.unwrap_or(Protocol::Tcp) == protocol
                && (r.start..=r.end).contains(&number);
        }
        false
    }

    /// A named port resolves on the destination endpoint, for egress rules too; to an
    /// outside address it never matches.
    fn named_port_matches(&self, name: &str, protocol: Protocol, number: u16) -> bool {
        self.dst.endpoint().is_some_and(|e| {
            e.named_ports
                .iter()
                .any(|p| p.name == name && p.protocol == protocol && p.port == number)
        })
    }
}

/// A selector that could not be built (an invalid object) selects nothing, so that a bad
/// record can never widen what a policy allows.
fn selects(
    selector: Option<super::selector::EndpointSelector>,
    endpoint: &EndpointRecord,
    inventory: &Inventory,
) -> bool {
    selector.is_some_and(|s| s.matches(endpoint, inventory))
}
