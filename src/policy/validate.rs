//! The checks Kubernetes' API server makes on policy objects that serde's typing cannot
//! express, each failing with the field's path and the value at fault
//! (`spec.ingress[0].ports[1].endPort: 70 is below port 80`). Only the first problem is
//! reported: one clear message beats a page of consequences.

use super::model::*;
use super::selector::{validate_label_key, validate_label_value};

/// A problem at one field of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

type Checked = Result<(), FieldError>;

fn fail(path: impl Into<String>, message: impl Into<String>) -> Checked {
    Err(FieldError {
        path: path.into(),
        message: message.into(),
    })
}

/// Upstream's limit on rules per direction and peers or ports per rule of admin policies.
const MAX_ADMIN_ITEMS: usize = 100;

pub fn network_policy(p: &NetworkPolicy) -> Checked {
    object_name("metadata.name", &p.metadata.name)?;
    if let Some(ns) = &p.metadata.namespace {
        namespace_name("metadata.namespace", ns)?;
    }
    labels("metadata.labels", &p.metadata.labels)?;
    let spec = &p.spec;
    selector("spec.podSelector", &spec.pod_selector)?;
    for (i, t) in spec.policy_types.iter().enumerate() {
        if spec.policy_types[..i].contains(t) {
            return fail(
                format!("spec.policyTypes[{i}]"),
                format!("{t:?} is repeated"),
            );
        }
    }
    for (i, rule) in spec.ingress.iter().enumerate() {
        let at = format!("spec.ingress[{i}]");
        peers(&format!("{at}.from"), &rule.from)?;
        ports(&format!("{at}.ports"), &rule.ports)?;
    }
    for (i, rule) in spec.egress.iter().enumerate() {
        let at = format!("spec.egress[{i}]");
        peers(&format!("{at}.to"), &rule.to)?;
        ports(&format!("{at}.ports"), &rule.ports)?;
    }
    Ok(())
}

pub fn admin_policy(p: &AdminNetworkPolicy) -> Checked {
    cluster_scoped(&p.metadata)?;
    let spec = &p.spec;
    if spec.priority > 1000 {
        return fail(
            "spec.priority",
            format!("{} is out of range (0-1000)", spec.priority),
        );
    }
    admin_selection("spec.subject", &spec.subject)?;
    admin_rules(&spec.rules(PolicyType::Ingress), "spec.ingress")?;
    admin_rules(&spec.rules(PolicyType::Egress), "spec.egress")
}

pub fn baseline_policy(p: &BaselineAdminNetworkPolicy) -> Checked {
    cluster_scoped(&p.metadata)?;
    if p.metadata.name != BASELINE_POLICY_NAME {
        return fail(
            "metadata.name",
            format!(
                "{:?}: the one BaselineAdminNetworkPolicy of a cluster must be named {BASELINE_POLICY_NAME:?}",
                p.metadata.name
            ),
        );
    }
    let spec = &p.spec;
    admin_selection("spec.subject", &spec.subject)?;
    admin_rules(&spec.rules(PolicyType::Ingress), "spec.ingress")?;
    admin_rules(&spec.rules(PolicyType::Egress), "spec.egress")
}

fn cluster_scoped(meta: &ObjectMeta) -> Checked {
    object_name("metadata.name", &meta.name)?;
    if let Some(ns) = &meta.namespace {
        return fail(
            "metadata.namespace",
            format!("{ns:?}: admin policies are cluster-scoped (remove the namespace)"),
        );
    }
    labels("metadata.labels", &meta.labels)
}

/// A DNS subdomain, as Kubernetes object names: also what keeps them safe as store keys.
pub fn object_name(path: &str, name: &str) -> Checked {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(dns_label_ok)
        && !name.contains('/');
    if ok {
        Ok(())
    } else {
        fail(
            path,
            format!("{name:?} is not a valid name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253)"),
        )
    }
}

/// A DNS label, as Kubernetes namespace names.
pub fn namespace_name(path: &str, name: &str) -> Checked {
    if dns_label_ok(name) {
        Ok(())
    } else {
        fail(
            path,
            format!("{name:?} is not a valid namespace (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63)"),
        )
    }
}

fn dns_label_ok(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || c == '-')
}

fn labels(path: &str, labels: &Labels) -> Checked {
    for (k, v) in labels {
        validate_label_key(k).or_else(|m| fail(format!("{path}[{k:?}]"), m))?;
        validate_label_value(v).or_else(|m| fail(format!("{path}[{k:?}]"), m))?;
    }
    Ok(())
}

pub fn selector(path: &str, s: &LabelSelector) -> Checked {
    labels(&format!("{path}.matchLabels"), &s.match_labels)?;
    for (i, e) in s.match_expressions.iter().enumerate() {
        let at = format!("{path}.matchExpressions[{i}]");
        validate_label_key(&e.key).or_else(|m| fail(format!("{at}.key"), m))?;
        match e.operator {
            SelectorOperator::In | SelectorOperator::NotIn if e.values.is_empty() => {
                return fail(
                    format!("{at}.values"),
                    format!("operator {:?} needs at least one value", e.operator),
                );
            }
            SelectorOperator::Exists | SelectorOperator::DoesNotExist if !e.values.is_empty() => {
                return fail(
                    format!("{at}.values"),
                    format!("operator {:?} takes no values", e.operator),
                );
            }
            _ => {}
        }
        for (j, v) in e.values.iter().enumerate() {
            validate_label_value(v).or_else(|m| fail(format!("{at}.values[{j}]"), m))?;
        }
    }
    Ok(())
}

fn peers(path: &str, peers: &[NetworkPolicyPeer]) -> Checked {
    for (i, peer) in peers.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let has_selector = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
        match (&peer.ip_block, has_selector) {
            (None, false) => {
                return fail(
                    at,
                    "a peer needs podSelector, namespaceSelector or ipBlock",
                )
            }
            (Some(_), true) => {
                return fail(
                    at,
                    "ipBlock cannot be combined with podSelector or namespaceSelector (use separate peers)",
                )
            }
            (Some(block), false) => ip_block(&format!("{at}.ipBlock"), block)?,
            (None, true) => {
                if let Some(s) = &peer.pod_selector {
                    selector(&format!("{at}.podSelector"), s)?;
                }
                if let Some(s) = &peer.namespace_selector {
                    selector(&format!("{at}.namespaceSelector"), s)?;
                }
            }
        }
    }
    Ok(())
}

fn ip_block(path: &str, block: &IpBlock) -> Checked {
    let cidr = block.cidr.0;
    for (i, except) in block.except.iter().enumerate() {
        let inside = cidr.contains(&except.0) && except.0.prefix_len() > cidr.prefix_len();
        if !inside {
            return fail(
                format!("{path}.except[{i}]"),
                format!("{except} is not strictly inside cidr {cidr}"),
            );
        }
    }
    Ok(())
}

fn ports(path: &str, ports: &[NetworkPolicyPort]) -> Checked {
    for (i, p) in ports.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match &p.port {
            Some(PortRef::Number(0)) => return fail(format!("{at}.port"), "0 is not a port"),
            Some(PortRef::Name(name)) => port_name(&format!("{at}.port"), name)?,
            _ => {}
        }
        let Some(end) = p.end_port else { continue };
        match &p.port {
            None => {
                return fail(
                    format!("{at}.endPort"),
                    format!("{end} needs a numeric port to start the range"),
                )
            }
            Some(PortRef::Name(name)) => {
                return fail(
                    format!("{at}.endPort"),
                    format!("{end} needs a numeric port, not the named port {name:?}"),
                )
            }
            Some(PortRef::Number(start)) if end < *start => {
                return fail(
                    format!("{at}.endPort"),
                    format!("{end} is below port {start}"),
                )
            }
            Some(PortRef::Number(_)) => {}
        }
    }
    Ok(())
}

/// An IANA service name, as Kubernetes container port names: at most 15 characters of
/// lowercase letters, digits and single inner '-', with at least one letter.
pub fn port_name(path: &str, name: &str) -> Checked {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        fail(
            path,
            format!("{name:?} is not a port name (at most 15 lowercase letters, digits and inner '-', with a letter)"),
        )
    }
}

fn admin_selection(path: &str, s: &AdminSelection) -> Checked {
    match (&s.namespaces, &s.pods) {
        (Some(ns), None) => selector(&format!("{path}.namespaces"), ns),
        (None, Some(pods)) => namespaced_pods(&format!("{path}.pods"), pods),
        _ => fail(path, "needs exactly one of namespaces or pods"),
    }
}

fn namespaced_pods(path: &str, pods: &NamespacedPods) -> Checked {
    selector(
        &format!("{path}.namespaceSelector"),
        &pods.namespace_selector,
    )?;
    selector(&format!("{path}.podSelector"), &pods.pod_selector)
}

fn admin_rules(rules: &[AdminRuleView<'_>], path: &str) -> Checked {
    if rules.len() > MAX_ADMIN_ITEMS {
        return fail(
            path,
            format!("{} rules, more than {MAX_ADMIN_ITEMS}", rules.len()),
        );
    }
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if rule.name.is_some_and(|n| n.len() > 100) {
            return fail(format!("{at}.name"), "longer than 100 characters");
        }
        match rule.peers {
            AdminPeers::Ingress(from) => {
                admin_list_size(&format!("{at}.from"), from.len())?;
                for (j, peer) in from.iter().enumerate() {
                    admin_selection(&format!("{at}.from[{j}]"), peer)?;
                }
            }
            AdminPeers::Egress(to) => {
                admin_list_size(&format!("{at}.to"), to.len())?;
                for (j, peer) in to.iter().enumerate() {
                    admin_egress_peer(&format!("{at}.to[{j}]"), peer)?;
                }
            }
        }
        if let Some(ports) = rule.ports {
            admin_list_size(&format!("{at}.ports"), ports.len())?;
            for (j, port) in ports.iter().enumerate() {
                admin_port(&format!("{at}.ports[{j}]"), port)?;
            }
        }
    }
    Ok(())
}

fn admin_list_size(path: &str, len: usize) -> Checked {
    match len {
        0 => fail(path, "needs at least one entry"),
        n if n > MAX_ADMIN_ITEMS => fail(path, format!("{n} entries, more than {MAX_ADMIN_ITEMS}")),
        _ => Ok(()),
    }
}

fn admin_egress_peer(path: &str, peer: &AdminEgressPeer) -> Checked {
    if peer.nodes.is_some() {
        return fail(
            format!("{path}.nodes"),
            "node peers are not supported (hosts carry no labels): use networks with the hosts' addresses",
        );
    }
    match (&peer.namespaces, &peer.pods, &peer.networks) {
        (Some(ns), None, None) => selector(&format!("{path}.namespaces"), ns),
        (None, Some(pods), None) => namespaced_pods(&format!("{path}.pods"), pods),
        (None, None, Some(networks)) => {
            admin_list_size(&format!("{path}.networks"), networks.len())
        }
        _ => fail(path, "needs exactly one of namespaces, pods or networks"),
    }
}

fn admin_port(path: &str, port: &AdminPort) -> Checked {
    match (&port.port_number, &port.named_port, &port.port_range) {
        (Some(n), None, None) if n.port == 0 => {
            fail(format!("{path}.portNumber.port"), "0 is not a port")
        }
        (Some(_), None, None) => Ok(()),
        (None, Some(name), None) => port_name(&format!("{path}.namedPort"), name),
        (None, None, Some(range)) => {
            if range.start == 0 {
                fail(format!("{path}.portRange.start"), "0 is not a port")
            } else if range.end < range.start {
                fail(
                    format!("{path}.portRange.end"),
                    format!("{} is below start {}", range.end, range.start),
                )
            } else {
                Ok(())
            }
        }
        _ => fail(
            path,
            "needs exactly one of portNumber, namedPort or portRange",
        ),
    }
}
