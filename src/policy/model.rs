//! The policy objects as users write them, field for field: Kubernetes
//! `networking.k8s.io/v1` `NetworkPolicy` and `policy.networking.k8s.io/v1alpha1`
//! `AdminNetworkPolicy` / `BaselineAdminNetworkPolicy` (camelCase names as in the upstream
//! APIs, unknown fields refused so that a typo never silently widens a policy). What serde
//! cannot check is in `validate`; Kubernetes' defaulting (policyTypes, TCP) lives in methods
//! here, so that a stored object stays the one the user wrote.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use super::admin::*;

pub type Labels = BTreeMap<String, String>;

pub const NETWORK_POLICY_API: &str = "networking.k8s.io/v1";
pub const ADMIN_POLICY_API: &str = "policy.networking.k8s.io/v1alpha1";
pub const NETWORK_POLICY_KIND: &str = "NetworkPolicy";
pub const ADMIN_POLICY_KIND: &str = "AdminNetworkPolicy";
pub const BASELINE_POLICY_KIND: &str = "BaselineAdminNetworkPolicy";
/// Upstream allows exactly one BaselineAdminNetworkPolicy, and it has this name.
pub const BASELINE_POLICY_NAME: &str = "default";
/// Where a NetworkPolicy without `metadata.namespace` lives (as with kubectl).
pub const DEFAULT_NAMESPACE: &str = "default";

/// `ingress:` with nothing after it is YAML's null: it means the same as an absent field.
pub(super) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: Labels,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: Labels,
}

/// `metav1.LabelSelector`: `matchLabels` AND every `matchExpressions` entry; empty selects all.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub match_labels: Labels,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// The two directions a policy can isolate; the same words as [`PolicyType`], used where a
/// rule or a verdict is meant rather than a field of a NetworkPolicy.
pub type Direction = PolicyType;

impl fmt::Display for PolicyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyType::Ingress => "ingress",
            PolicyType::Egress => "egress",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// A port by number or by the name a pod gives it (Kubernetes' IntOrString). A string of
/// digits stays a name, as in Kubernetes (and then fails validation: names need a letter).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl Serialize for PortRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PortRef::Number(n) => s.serialize_u16(*n),
            PortRef::Name(name) => s.serialize_str(name),
        }
    }
}

impl<'de> Deserialize<'de> for PortRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PortRef, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PortRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number (1-65535) or a port name")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortRef, E> {
                u16::try_from(v)
                    .map(PortRef::Number)
                    .map_err(|_| E::custom(format!("{v} is not a port (1-65535)")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortRef, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("{v} is not a port (1-65535)"))),
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortRef, E> {
                Ok(PortRef::Name(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}

/// An address range. Host bits are dropped as Kubernetes' parser does (`10.0.0.1/24` is
/// `10.0.0.0/24`); a bare address without a prefix length is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr(pub IpNet);

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<IpNet>()
            .map(|net| Cidr(net.trunc()))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a CIDR (e.g. 10.0.0.0/16 or fd00::/64)"
                ))
            })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// ---- networking.k8s.io/v1 NetworkPolicy ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicy {
    pub metadata: ObjectMeta,
    pub spec: NetworkPolicySpec,
}

impl NetworkPolicy {
    /// `metadata.namespace`, `default` when absent (parsing fills it in).
    pub fn namespace(&self) -> &str {
        self.metadata
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE)
    }

    pub fn key(&self) -> PolicyKey {
        PolicyKey::Network {
            namespace: self.namespace().to_string(),
            name: self.metadata.name.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// Required, as in Kubernetes: an absent selector selecting every pod would surprise.
    pub pod_selector: LabelSelector,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub policy_types: Vec<PolicyType>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ingress: Vec<NetworkPolicyIngressRule>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub egress: Vec<NetworkPolicyEgressRule>,
}

impl NetworkPolicySpec {
    /// Whether the policy isolates the pods it selects in `direction`. With `policyTypes`
    /// absent or empty Kubernetes defaults to Ingress, plus Egress when there are egress
    /// rules (`egress: []` counts as none, as in Kubernetes' `len(spec.Egress) != 0`).
    pub fn isolates(&self, direction: Direction) -> bool {
        if self.policy_types.is_empty() {
            return match direction {
                PolicyType::Ingress => true,
                PolicyType::Egress => !self.egress.is_empty(),
            };
        }
        self.policy_types.contains(&direction)
    }

    /// The allow rules of one direction, as (peers, ports) pairs.
    pub fn rules(&self, direction: Direction) -> Vec<(&[NetworkPolicyPeer], &[NetworkPolicyPort])> {
        match direction {
            PolicyType::Ingress => self
                .ingress
                .iter()
                .map(|r| (r.from.as_slice(), r.ports.as_slice()))
                .collect(),
            PolicyType::Egress => self
                .egress
                .iter()
                .map(|r| (r.to.as_slice(), r.ports.as_slice()))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyIngressRule {
    /// Empty or absent: every source.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub from: Vec<NetworkPolicyPeer>,
    /// Empty or absent: every port and protocol.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<NetworkPolicyPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyEgressRule {
    /// Empty or absent: every destination.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub to: Vec<NetworkPolicyPeer>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<NetworkPolicyPort>,
}

/// Either selectors (both given: AND) or an ipBlock, never both.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpBlock {
    pub cidr: Cidr,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub except: Vec<Cidr>,
}

impl IpBlock {
    pub fn contains(&self, addr: std::net::IpAddr) -> bool {
        self.cidr.0.contains(&addr) && !self.except.iter().any(|e| e.0.contains(&addr))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Absent: every port of the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
}

impl NetworkPolicyPort {
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or(Protocol::Tcp)
    }
}

// ---- any of them ----

/// One policy object of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    Network(NetworkPolicy),
    Admin(AdminNetworkPolicy),
    Baseline(BaselineAdminNetworkPolicy),
}

/// How a policy is named: NetworkPolicies by namespace and name, the cluster-scoped admin
/// kinds by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind")]
pub enum PolicyKey {
    #[serde(rename = "NetworkPolicy")]
    Network { namespace: String, name: String },
    #[serde(rename = "AdminNetworkPolicy")]
    Admin { name: String },
    #[serde(rename = "BaselineAdminNetworkPolicy")]
    Baseline { name: String },
}

impl PolicyKey {
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyKey::Network { .. } => NETWORK_POLICY_KIND,
            PolicyKey::Admin { .. } => ADMIN_POLICY_KIND,
            PolicyKey::Baseline { .. } => BASELINE_POLICY_KIND,
        }
    }

    /// `NS/NAME` or `NAME`, as the CLI takes it.
    pub fn short_name(&self) -> String {
        match self {
            PolicyKey::Network { namespace, name } => format!("{namespace}/{name}"),
            PolicyKey::Admin { name } | PolicyKey::Baseline { name } => name.clone(),
        }
    }
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.short_name())
    }
}

impl Policy {
    pub fn key(&self) -> PolicyKey {
        match self {
            Policy::Network(p) => p.key(),
            Policy::Admin(p) => PolicyKey::Admin {
                name: p.metadata.name.clone(),
            },
            Policy::Baseline(p) => PolicyKey::Baseline {
                name: p.metadata.name.clone(),
            },
        }
    }

    pub fn api_version(&self) -> &'static str {
        match self {
            Policy::Network(_) => NETWORK_POLICY_API,
            Policy::Admin(_) | Policy::Baseline(_) => ADMIN_POLICY_API,
        }
    }

    /// The object as Kubernetes writes it (`apiVersion`, `kind`, `metadata`, `spec`); what
    /// the store keeps and `policy show` prints. `parse` reads it back.
    pub fn to_json(&self) -> serde_json::Value {
        let (metadata, spec) = match self {
            Policy::Network(p) => (to_value(&p.metadata), to_value(&p.spec)),
            Policy::Admin(p) => (to_value(&p.metadata), to_value(&p.spec)),
            Policy::Baseline(p) => (to_value(&p.metadata), to_value(&p.spec)),
        };
        serde_json::json!({
            "apiVersion": self.api_version(),
            "kind": self.key().kind(),
            "metadata": metadata,
            "spec": spec,
        })
    }
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("policy objects serialize")
}
