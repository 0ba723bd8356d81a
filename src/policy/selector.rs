//! Label selectors and what they select. A [`LabelSelector`] matches a label set
//! (`matchLabels` AND every `matchExpressions` entry; empty matches everything). An
//! [`EndpointSelector`] is the one shape every subject and peer of every policy kind reduces
//! to — which namespaces, then which pods in them — so that evaluation has one matching rule
//! and the nftables step one address set per distinct selector.

use serde::{Deserialize, Serialize};

use super::inventory::{EndpointRecord, Inventory};
use super::model::{
    AdminEgressPeer, AdminSelection, LabelSelector, LabelSelectorRequirement, Labels,
    NetworkPolicy, NetworkPolicyPeer, SelectorOperator,
};

impl LabelSelector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| e.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// The same selection written one way: expressions and their values sorted, repeats
    /// dropped (so that selectors that differ only in order share one address set).
    pub fn canonical(&self) -> LabelSelector {
        let mut expressions: Vec<LabelSelectorRequirement> = self
            .match_expressions
            .iter()
            .map(|e| {
                let mut values = e.values.clone();
                values.sort();
                values.dedup();
                LabelSelectorRequirement {
                    key: e.key.clone(),
                    operator: e.operator,
                    values,
                }
            })
            .collect();
        expressions.sort();
        expressions.dedup();
        LabelSelector {
            match_labels: self.match_labels.clone(),
            match_expressions: expressions,
        }
    }
}

impl LabelSelectorRequirement {
    /// Kubernetes' meaning: `NotIn` also matches a pod without the key at all.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

/// Which namespaces a selector looks in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NamespaceScope {
    /// One namespace by name: a NetworkPolicy's own (its podSelector, and peers with a
    /// podSelector alone).
    Named(String),
    /// Namespaces whose labels match.
    Selected(LabelSelector),
}

/// Pods by namespace and labels: a policy's subject or one of its peers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSelector {
    pub namespaces: NamespaceScope,
    pub pods: LabelSelector,
}

impl EndpointSelector {
    pub fn new(namespaces: NamespaceScope, pods: LabelSelector) -> EndpointSelector {
        EndpointSelector { namespaces, pods }
    }

    /// Every endpoint of every namespace.
    pub fn everything() -> EndpointSelector {
        EndpointSelector::new(
            NamespaceScope::Selected(LabelSelector::default()),
            LabelSelector::default(),
        )
    }

    pub fn matches(&self, endpoint: &EndpointRecord, inventory: &Inventory) -> bool {
        let namespace_ok = match &self.namespaces {
            NamespaceScope::Named(name) => endpoint.namespace == *name,
            NamespaceScope::Selected(sel) => {
                sel.matches(inventory.namespace_labels(&endpoint.namespace))
            }
        };
        namespace_ok && self.pods.matches(&endpoint.labels)
    }

    /// A short stable name: a hash of the canonical form, the same on every host and across
    /// versions of the policy that keep the selector (for set names in the data plane).
    pub fn id(&self) -> String {
        let text = serde_json::to_string(&self.canonical()).expect("serializable");
        format!("{:016x}", crate::util::fnv1a64(text.as_bytes()))
    }

    /// The form used as a key for shared address sets.
    pub fn canonical(&self) -> EndpointSelector {
        EndpointSelector {
            namespaces: match &self.namespaces {
                NamespaceScope::Named(n) => NamespaceScope::Named(n.clone()),
                NamespaceScope::Selected(s) => NamespaceScope::Selected(s.canonical()),
            },
            pods: self.pods.canonical(),
        }
    }
}

impl NetworkPolicy {
    /// The pods the policy applies to: its podSelector, in its own namespace.
    pub fn subject(&self) -> EndpointSelector {
        EndpointSelector::new(
            NamespaceScope::Named(self.namespace().to_string()),
            self.spec.pod_selector.clone(),
        )
    }
}

impl NetworkPolicyPeer {
    /// A selector peer: podSelector alone looks in the policy's own namespace,
    /// namespaceSelector alone takes every pod of the namespaces it selects, both together
    /// are ANDed. `None` for an ipBlock peer.
    pub fn selector(&self, policy_namespace: &str) -> Option<EndpointSelector> {
        if self.ip_block.is_some() {
            return None;
        }
        let namespaces = match &self.namespace_selector {
            Some(sel) => NamespaceScope::Selected(sel.clone()),
            None if self.pod_selector.is_some() => {
                NamespaceScope::Named(policy_namespace.to_string())
            }
            None => return None,
        };
        let pods = self.pod_selector.clone().unwrap_or_default();
        Some(EndpointSelector::new(namespaces, pods))
    }
}

impl AdminSelection {
    /// `namespaces`: every pod in them; `pods`: the pods selected in the namespaces selected.
    /// `None` unless exactly one is given.
    pub fn selector(&self) -> Option<EndpointSelector> {
        match (&self.namespaces, &self.pods) {
            (Some(ns), None) => Some(EndpointSelector::new(
                NamespaceScope::Selected(ns.clone()),
                LabelSelector::default(),
            )),
            (None, Some(pods)) => Some(EndpointSelector::new(
                NamespaceScope::Selected(pods.namespace_selector.clone()),
                pods.pod_selector.clone(),
            )),
            _ => None,
        }
    }
}

impl AdminEgressPeer {
    /// As [`AdminSelection::selector`]; `None` for a `networks` (or `nodes`) peer.
    pub fn selector(&self) -> Option<EndpointSelector> {
        if self.networks.is_some() || self.nodes.is_some() {
            return None;
        }
        AdminSelection {
            namespaces: self.namespaces.clone(),
            pods: self.pods.clone(),
        }
        .selector()
    }
}

/// A label key as Kubernetes takes it: an optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 letters, digits, `-`, `_`, `.`, starting and ending alphanumeric.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    if prefix_ok && !name.is_empty() && label_chars_ok(name) {
        Ok(())
    } else {
        Err(format!("{key:?} is not a valid label key ([prefix/]name, name at most 63 letters, digits, '-', '_', '.')"))
    }
}

/// A label value: empty, or like a key's name part.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || label_chars_ok(value) {
        Ok(())
    } else {
        Err(format!("{value:?} is not a valid label value (at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit)"))
    }
}

fn label_chars_ok(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let all = LabelSelector::default();
        assert!(all.is_empty());
        assert!(all.matches(&Labels::new()));
        assert!(all.matches(&labels(&[("pod", "a")])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let sel = LabelSelector {
            match_labels: labels(&[("pod", "a")]),
            match_expressions: vec![expr("tier", SelectorOperator::In, &["web", "db"])],
        };
        assert!(sel.matches(&labels(&[("pod", "a"), ("tier", "web")])));
        assert!(!sel.matches(&labels(&[("pod", "a")])));
        assert!(!sel.matches(&labels(&[("pod", "b"), ("tier", "web")])));
    }

    #[test]
    fn operators_have_kubernetes_meaning() {
        let l = labels(&[("pod", "a")]);
        let none = Labels::new();
        let not_in = expr("pod", SelectorOperator::NotIn, &["b"]);
        assert!(not_in.matches(&l));
        assert!(not_in.matches(&none), "NotIn matches an absent key");
        assert!(!expr("pod", SelectorOperator::NotIn, &["a"]).matches(&l));
        assert!(!expr("pod", SelectorOperator::In, &["b"]).matches(&none));
        assert!(expr("pod", SelectorOperator::Exists, &[]).matches(&l));
        assert!(!expr("pod", SelectorOperator::Exists, &[]).matches(&none));
        assert!(expr("pod", SelectorOperator::DoesNotExist, &[]).matches(&none));
        assert!(!expr("pod", SelectorOperator::DoesNotExist, &[]).matches(&l));
    }

    #[test]
    fn canonical_form_ignores_order_and_repeats() {
        let a = LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![
                expr("x", SelectorOperator::In, &["2", "1", "1"]),
                expr("a", SelectorOperator::Exists, &[]),
            ],
        };
        let b = LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![
                expr("a", SelectorOperator::Exists, &[]),
                expr("x", SelectorOperator::In, &["1", "2"]),
            ],
        };
        assert_eq!(a.canonical(), b.canonical());
    }

    #[test]
    fn label_syntax() {
        assert!(validate_label_key("pod").is_ok());
        assert!(validate_label_key("kubernetes.io/metadata.name").is_ok());
        assert!(validate_label_key("").is_err());
        assert!(validate_label_key("-x").is_err());
        assert!(validate_label_key("Bad_Prefix/x").is_err());
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("web-1").is_ok());
        assert!(validate_label_value("a b").is_err());
    }
}
