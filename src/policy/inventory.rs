//! The world policies act on: every endpoint (namespace, labels, named ports, addresses,
//! host) and every namespace's labels, cluster-wide. The store keeps the records; this module
//! gives them the meaning policies need (the implicit `kubernetes.io/metadata.name` label,
//! lookups by address) and kubectl's label-change syntax.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::model::{Labels, Protocol, DEFAULT_NAMESPACE};
use super::selector::{validate_label_key, validate_label_value};
use super::PolicyError;

/// Every namespace carries this label with its own name, as in Kubernetes (since 1.21), so
/// that a namespaceSelector can pick namespaces by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A port a pod names (a pod spec's `containerPort` with `name`), for policies' named ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: Protocol,
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.into()
}

/// One endpoint as the store keeps it (`endpoints/<id>`), written at attach/ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// The container id: the record's key.
    pub id: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The pod's name (CNI's K8S_POD_NAME) when known; the CLI falls back to the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named_ports: Vec<NamedPort>,
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// The node the endpoint runs on (the agent's node name).
    pub host: String,
}

impl EndpointRecord {
    /// The pod's name, or its id when it has none.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// The endpoint's address of the same family as `like`.
    pub fn address_like(&self, like: IpAddr) -> Option<IpAddr> {
        self.addresses
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == like.is_ipv4())
    }
}

/// Endpoints and namespaces, ready for evaluation.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    endpoints: BTreeMap<String, EndpointRecord>,
    /// With the implicit name label, and an entry for every namespace an endpoint uses.
    namespaces: BTreeMap<String, Labels>,
}

impl Inventory {
    /// `namespaces` as stored: name → the labels given with `namespace label`.
    pub fn new(
        endpoints: impl IntoIterator<Item = EndpointRecord>,
        namespaces: impl IntoIterator<Item = (String, Labels)>,
    ) -> Inventory {
        let endpoints: BTreeMap<String, EndpointRecord> =
            endpoints.into_iter().map(|e| (e.id.clone(), e)).collect();
        let mut namespaces: BTreeMap<String, Labels> = namespaces.into_iter().collect();
        for e in endpoints.values() {
            namespaces.entry(e.namespace.clone()).or_default();
        }
        for (name, labels) in namespaces.iter_mut() {
            labels.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
        }
        Inventory {
            endpoints,
            namespaces,
        }
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &EndpointRecord> {
        self.endpoints.values()
    }

    pub fn endpoint(&self, id: &str) -> Option<&EndpointRecord> {
        self.endpoints.get(id)
    }

    /// The endpoint called `name` (its pod name, else its id) in `namespace`.
    pub fn find(&self, namespace: &str, name: &str) -> Option<&EndpointRecord> {
        self.endpoints
            .values()
            .find(|e| e.namespace == namespace && e.display_name() == name)
            .or_else(|| {
                self.endpoints
                    .get(name)
                    .filter(|e| e.namespace == namespace)
            })
    }

    pub fn endpoint_by_address(&self, addr: IpAddr) -> Option<&EndpointRecord> {
        self.endpoints
            .values()
            .find(|e| e.addresses.contains(&addr))
    }

    /// A namespace's labels, the implicit name label included; a namespace nobody labelled
    /// or used still has that one.
    pub fn namespace_labels(&self, namespace: &str) -> &Labels {
        static EMPTY: std::sync::OnceLock<Labels> = std::sync::OnceLock::new();
        self.namespaces
            .get(namespace)
            .unwrap_or_else(|| EMPTY.get_or_init(Labels::new))
    }

    pub fn namespaces(&self) -> impl Iterator<Item = (&String, &Labels)> {
        self.namespaces.iter()
    }
}

/// One word of `namespace label` / `endpoint label`: `k=v` sets, `k-` removes (kubectl).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChange {
    Set(String, String),
    Remove(String),
}

impl LabelChange {
    pub fn parse(word: &str) -> Result<LabelChange, PolicyError> {
        let bad = |message: String| PolicyError::Label {
            word: word.to_string(),
            message,
        };
        let change = match word.split_once('=') {
            Some((k, v)) => {
                validate_label_value(v).map_err(bad)?;
                LabelChange::Set(k.to_string(), v.to_string())
            }
            None => match word.strip_suffix('-') {
                Some(k) => LabelChange::Remove(k.to_string()),
                None => return Err(bad("expected KEY=VALUE or KEY-".into())),
            },
        };
        let key = match &change {
            LabelChange::Set(k, _) | LabelChange::Remove(k) => k,
        };
        validate_label_key(key).map_err(bad)?;
        if key == NAMESPACE_NAME_LABEL {
            return Err(bad(format!(
                "{NAMESPACE_NAME_LABEL} is implicit (always the namespace's name)"
            )));
        }
        Ok(change)
    }

    pub fn apply_all(labels: &mut Labels, changes: &[LabelChange]) {
        for change in changes {
            match change {
                LabelChange::Set(k, v) => {
                    labels.insert(k.clone(), v.clone());
                }
                LabelChange::Remove(k) => {
                    labels.remove(k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_carry_their_name_label() {
        let ep = EndpointRecord {
            id: "c1".into(),
            namespace: "x".into(),
            name: None,
            labels: Labels::new(),
            named_ports: vec![],
            addresses: vec![],
            host: "h1".into(),
        };
        let inv = Inventory::new(
            [ep],
            [("y".to_string(), Labels::from([("ns".into(), "y".into())]))],
        );
        assert_eq!(inv.namespace_labels("x")[NAMESPACE_NAME_LABEL], "x");
        assert_eq!(inv.namespace_labels("y")[NAMESPACE_NAME_LABEL], "y");
        assert_eq!(inv.namespace_labels("y")["ns"], "y");
        assert!(inv.namespace_labels("nowhere").is_empty());
        assert_eq!(inv.find("x", "c1").unwrap().id, "c1");
        assert!(inv.find("y", "c1").is_none());
    }

    #[test]
    fn kubectl_label_syntax() {
        let changes: Vec<LabelChange> = ["env=prod", "tier-", "app.kubernetes.io/name=web"]
            .iter()
            .map(|w| LabelChange::parse(w).unwrap())
            .collect();
        let mut labels = Labels::from([("tier".into(), "db".into())]);
        LabelChange::apply_all(&mut labels, &changes);
        assert_eq!(
            labels,
            Labels::from([
                ("env".into(), "prod".into()),
                ("app.kubernetes.io/name".into(), "web".into())
            ])
        );
        assert!(LabelChange::parse("novalue").is_err());
        assert!(LabelChange::parse("a=b c").is_err());
        assert!(LabelChange::parse("kubernetes.io/metadata.name=x").is_err());
        // An empty value is a value (kubectl label k=).
        assert_eq!(
            LabelChange::parse("k=").unwrap(),
            LabelChange::Set("k".into(), String::new())
        );
    }
}
