//! `policy.networking.k8s.io/v1alpha1` `AdminNetworkPolicy` and `BaselineAdminNetworkPolicy`
//! as upstream defines them (sigs.k8s.io/network-policy-api): a subject, ordered rules with
//! an action, peers by namespace or pod selectors (egress also by `networks`), ports by
//! number, name or range. Re-exported by `model`, next to NetworkPolicy.

use serde::{Deserialize, Serialize};

use super::model::{
    null_as_default, Cidr, Direction, LabelSelector, ObjectMeta, PolicyKey, PolicyType, Protocol,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminNetworkPolicy {
    pub metadata: ObjectMeta,
    pub spec: AdminNetworkPolicySpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminNetworkPolicySpec {
    /// 0 (first) to 1000.
    pub priority: u32,
    pub subject: AdminSelection,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ingress: Vec<AdminIngressRule<AdminAction>>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub egress: Vec<AdminEgressRule<AdminAction>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaselineAdminNetworkPolicy {
    pub metadata: ObjectMeta,
    pub spec: BaselineAdminNetworkPolicySpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaselineAdminNetworkPolicySpec {
    pub subject: AdminSelection,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ingress: Vec<AdminIngressRule<BaselineAction>>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub egress: Vec<AdminEgressRule<BaselineAction>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AdminAction {
    Allow,
    Deny,
    /// Skip the remaining admin policies: NetworkPolicy (then the baseline) decides.
    Pass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BaselineAction {
    Allow,
    Deny,
}

impl From<BaselineAction> for AdminAction {
    fn from(a: BaselineAction) -> AdminAction {
        match a {
            BaselineAction::Allow => AdminAction::Allow,
            BaselineAction::Deny => AdminAction::Deny,
        }
    }
}

/// A subject or an ingress peer: exactly one of `namespaces` (every pod in them) or `pods`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminSelection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPods>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacedPods {
    pub namespace_selector: LabelSelector,
    pub pod_selector: LabelSelector,
}

/// An egress peer: exactly one of `namespaces`, `pods` or `networks` (CIDRs, which match pod
/// addresses too).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminEgressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPods>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<Cidr>>,
    /// Upstream's node peer: read so that validation can say why it is refused (hosts carry
    /// no labels here yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminIngressRule<A> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: A,
    /// At least one peer (upstream's minItems 1).
    pub from: Vec<AdminSelection>,
    /// Absent: every port and protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AdminPort>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminEgressRule<A> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: A,
    pub to: Vec<AdminEgressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AdminPort>>,
}

/// Exactly one of the three, as upstream's `AdminNetworkPolicyPort`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<AdminPortNumber>,
    /// A name of the destination pod's ports (its protocol is the pod's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<AdminPortRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminPortNumber {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminPortRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    pub start: u16,
    pub end: u16,
}

/// One admin rule seen without its direction's field names, so that evaluation and the
/// compiled view walk ingress and egress rules of both admin kinds with one piece of code.
#[derive(Debug, Clone, Copy)]
pub struct AdminRuleView<'a> {
    pub name: Option<&'a str>,
    pub action: AdminAction,
    pub peers: AdminPeers<'a>,
    pub ports: Option<&'a [AdminPort]>,
}

#[derive(Debug, Clone, Copy)]
pub enum AdminPeers<'a> {
    Ingress(&'a [AdminSelection]),
    Egress(&'a [AdminEgressPeer]),
}

fn ingress_views<A: Copy + Into<AdminAction>>(
    rules: &[AdminIngressRule<A>],
) -> Vec<AdminRuleView<'_>> {
    rules
        .iter()
        .map(|r| AdminRuleView {
            name: r.name.as_deref(),
            action: r.action.into(),
            peers: AdminPeers::Ingress(&r.from),
            ports: r.ports.as_deref(),
        })
        .collect()
}

fn egress_views<A: Copy + Into<AdminAction>>(
    rules: &[AdminEgressRule<A>],
) -> Vec<AdminRuleView<'_>> {
    rules
        .iter()
        .map(|r| AdminRuleView {
            name: r.name.as_deref(),
            action: r.action.into(),
            peers: AdminPeers::Egress(&r.to),
            ports: r.ports.as_deref(),
        })
        .collect()
}

impl AdminNetworkPolicySpec {
    pub fn rules(&self, direction: Direction) -> Vec<AdminRuleView<'_>> {
        match direction {
            PolicyType::Ingress => ingress_views(&self.ingress),
            PolicyType::Egress => egress_views(&self.egress),
        }
    }
}

impl BaselineAdminNetworkPolicySpec {
    pub fn rules(&self, direction: Direction) -> Vec<AdminRuleView<'_>> {
        match direction {
            PolicyType::Ingress => ingress_views(&self.ingress),
            PolicyType::Egress => egress_views(&self.egress),
        }
    }
}

/// An admin policy of either kind, as evaluation and the compiled view walk it.
#[derive(Debug, Clone)]
pub struct AdminPolicyView<'a> {
    pub key: PolicyKey,
    pub subject: &'a AdminSelection,
    pub ingress: Vec<AdminRuleView<'a>>,
    pub egress: Vec<AdminRuleView<'a>>,
}

impl AdminPolicyView<'_> {
    pub fn rules(&self, direction: Direction) -> &[AdminRuleView<'_>] {
        match direction {
            PolicyType::Ingress => &self.ingress,
            PolicyType::Egress => &self.egress,
        }
    }
}

impl AdminNetworkPolicy {
    pub fn view(&self) -> AdminPolicyView<'_> {
        AdminPolicyView {
            key: PolicyKey::Admin {
                name: self.metadata.name.clone(),
            },
            subject: &self.spec.subject,
            ingress: self.spec.rules(PolicyType::Ingress),
            egress: self.spec.rules(PolicyType::Egress),
        }
    }
}

impl BaselineAdminNetworkPolicy {
    pub fn view(&self) -> AdminPolicyView<'_> {
        AdminPolicyView {
            key: PolicyKey::Baseline {
                name: self.metadata.name.clone(),
            },
            subject: &self.spec.subject,
            ingress: self.spec.rules(PolicyType::Ingress),
            egress: self.spec.rules(PolicyType::Egress),
        }
    }
}
