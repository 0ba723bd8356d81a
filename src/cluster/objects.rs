//! Network policy's objects in the cluster store, typed: policies, namespace labels and
//! endpoint records. They are cluster-wide because a selector in one host's policy matches
//! pods on every host.
//!
//! Layout (etcd keys under the prefix, default `/ferrynet`, beside `<prefix>/subnets/`; the
//! file store keeps the same names in the `objects` section of its JSON file):
//!
//! | key | value |
//! |---|---|
//! | `<prefix>/policies/networkpolicy/<namespace>/<name>` | the NetworkPolicy as Kubernetes writes it (apiVersion, kind, metadata, spec) |
//! | `<prefix>/policies/adminnetworkpolicy/<name>` | an AdminNetworkPolicy, likewise |
//! | `<prefix>/policies/baselineadminnetworkpolicy/default` | the BaselineAdminNetworkPolicy |
//! | `<prefix>/namespaces/<name>` | `{"labels": {...}}` (the implicit `kubernetes.io/metadata.name` is not stored) |
//! | `<prefix>/endpoints/<container id>` | [`EndpointRecord`]: namespace, name, labels, named ports, addresses, host |
//!
//! Every write is one object, atomic (etcd: a transaction on the key's revision; file store:
//! under its lock). Label changes are read-modify-write on that one object, so two hosts
//! labelling the same namespace at once both land. Stored policies are parsed and validated
//! again on reading, like a file: a record that no longer passes is an error naming its key,
//! never a policy that allows more.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Collection, Store, StoreError};
use crate::policy::{
    self, EndpointRecord, Inventory, LabelChange, Labels, Policy, PolicyKey, PolicySet,
};

/// The stored name of a policy within [`Collection::Policies`].
pub fn policy_object_name(key: &PolicyKey) -> String {
    match key {
        PolicyKey::Network { namespace, name } => format!("networkpolicy/{namespace}/{name}"),
        PolicyKey::Admin { name } => format!("adminnetworkpolicy/{name}"),
        PolicyKey::Baseline { name } => format!("baselineadminnetworkpolicy/{name}"),
    }
}

fn corrupt(collection: Collection, name: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{}/{name}: {e}", collection.dir()))
}

fn policy_from_text(name: &str, text: &str) -> Result<Policy, StoreError> {
    let value = serde_json::from_str(text).map_err(|e| corrupt(Collection::Policies, name, e))?;
    policy::policy_from_value(value, name).map_err(|e| corrupt(Collection::Policies, name, e))
}

/// Creates or replaces the policy.
pub fn put_policy(store: &mut dyn Store, p: &Policy) -> Result<(), StoreError> {
    let text = p.to_json().to_string();
    store.put_object(Collection::Policies, &policy_object_name(&p.key()), &text)
}

pub fn get_policy(store: &mut dyn Store, key: &PolicyKey) -> Result<Option<Policy>, StoreError> {
    let name = policy_object_name(key);
    store
        .get_object(Collection::Policies, &name)?
        .map(|text| policy_from_text(&name, &text))
        .transpose()
}

/// Whether it existed.
pub fn delete_policy(store: &mut dyn Store, key: &PolicyKey) -> Result<bool, StoreError> {
    store.delete_object(Collection::Policies, &policy_object_name(key))
}

pub fn list_policies(store: &mut dyn Store) -> Result<Vec<Policy>, StoreError> {
    let objects = store.list_objects(Collection::Policies)?;
    objects
        .items
        .iter()
        .map(|(name, text)| policy_from_text(name, text))
        .collect()
}

/// The policy a user names: `NS/NAME` is a NetworkPolicy; a bare `NAME` is the
/// AdminNetworkPolicy of that name, else the BaselineAdminNetworkPolicy of that name.
pub fn find_policy(store: &mut dyn Store, text: &str) -> Result<Option<Policy>, StoreError> {
    if let Some((namespace, name)) = text.split_once('/') {
        let key = PolicyKey::Network {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        return get_policy(store, &key);
    }
    let name = text.to_string();
    if let Some(p) = get_policy(store, &PolicyKey::Admin { name: name.clone() })? {
        return Ok(Some(p));
    }
    get_policy(store, &PolicyKey::Baseline { name })
}

/// `namespaces/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    #[serde(default)]
    pub labels: Labels,
}

/// Every labelled namespace → its labels (without the implicit name label).
pub fn list_namespaces(store: &mut dyn Store) -> Result<BTreeMap<String, Labels>, StoreError> {
    let objects = store.list_objects(Collection::Namespaces)?;
    objects
        .items
        .into_iter()
        .map(|(name, text)| {
            let record: NamespaceRecord = serde_json::from_str(&text)
                .map_err(|e| corrupt(Collection::Namespaces, &name, e))?;
            Ok((name, record.labels))
        })
        .collect()
}

/// Applies kubectl-style label changes to a namespace (created on first use); returns its
/// labels after the change.
pub fn label_namespace(
    store: &mut dyn Store,
    namespace: &str,
    changes: &[LabelChange],
) -> Result<Labels, StoreError> {
    policy::validate::namespace_name("namespace", namespace)
        .map_err(|e| StoreError::Invalid(format!("{}: {}", e.path, e.message)))?;
    let written = store.update_object(Collection::Namespaces, namespace, &mut |current| {
        let mut record: NamespaceRecord = match current {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| corrupt(Collection::Namespaces, namespace, e))?,
            None => NamespaceRecord::default(),
        };
        LabelChange::apply_all(&mut record.labels, changes);
        Ok(Some(serde_json::to_string(&record).expect("serializable")))
    })?;
    let record: NamespaceRecord = serde_json::from_str(&written.unwrap_or_default())
        .map_err(|e| corrupt(Collection::Namespaces, namespace, e))?;
    Ok(record.labels)
}

fn endpoint_from_text(id: &str, text: &str) -> Result<EndpointRecord, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(Collection::Endpoints, id, e))
}

/// Creates or replaces an endpoint's record (attach/ADD).
pub fn put_endpoint(store: &mut dyn Store, e: &EndpointRecord) -> Result<(), StoreError> {
    let text = serde_json::to_string(e).expect("serializable");
    store.put_object(Collection::Endpoints, &e.id, &text)
}

pub fn get_endpoint(store: &mut dyn Store, id: &str) -> Result<Option<EndpointRecord>, StoreError> {
    store
        .get_object(Collection::Endpoints, id)?
        .map(|text| endpoint_from_text(id, &text))
        .transpose()
}

/// Whether it existed (detach/DEL).
pub fn delete_endpoint(store: &mut dyn Store, id: &str) -> Result<bool, StoreError> {
    store.delete_object(Collection::Endpoints, id)
}

pub fn list_endpoints(store: &mut dyn Store) -> Result<Vec<EndpointRecord>, StoreError> {
    let objects = store.list_objects(Collection::Endpoints)?;
    objects
        .items
        .iter()
        .map(|(id, text)| endpoint_from_text(id, text))
        .collect()
}

/// Applies label changes to a running endpoint; [`StoreError::NotFound`] if it has no record.
pub fn label_endpoint(
    store: &mut dyn Store,
    id: &str,
    changes: &[LabelChange],
) -> Result<EndpointRecord, StoreError> {
    let written = store.update_object(Collection::Endpoints, id, &mut |current| {
        let text = current.ok_or_else(|| StoreError::NotFound(format!("endpoint {id}")))?;
        let mut record = endpoint_from_text(id, text)?;
        LabelChange::apply_all(&mut record.labels, changes);
        Ok(Some(serde_json::to_string(&record).expect("serializable")))
    })?;
    endpoint_from_text(id, &written.unwrap_or_default())
}

/// Everything evaluation needs, read from the store.
pub fn load(store: &mut dyn Store) -> Result<(PolicySet, Inventory), StoreError> {
    let policies = PolicySet::new(list_policies(store)?);
    let inventory = Inventory::new(list_endpoints(store)?, list_namespaces(store)?);
    Ok((policies, inventory))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FileStore;

    struct TempStore(std::path::PathBuf);

    impl Drop for TempStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_file(self.0.with_extension("lock"));
        }
    }

    fn temp_store() -> (TempStore, FileStore) {
        let mut r = [0u8; 4];
        crate::util::fill_random(&mut r);
        let path =
            std::env::temp_dir().join(format!("ferrynet-objects-{}.json", u32::from_ne_bytes(r)));
        (TempStore(path.clone()), FileStore::new(&path))
    }

    #[test]
    fn policies_namespaces_and_endpoints_round_trip() {
        let (_guard, mut store) = temp_store();
        let s: &mut dyn Store = &mut store;
        let yaml = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: x}\nspec: {podSelector: {}}\n---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: web}\nspec: {priority: 3, subject: {namespaces: {}}}\n";
        for p in policy::parse_policies(yaml).unwrap() {
            put_policy(s, &p).unwrap();
        }
        assert_eq!(list_policies(s).unwrap().len(), 2);
        let found = find_policy(s, "x/web").unwrap().unwrap();
        assert!(matches!(found, Policy::Network(_)));
        assert!(matches!(
            find_policy(s, "web").unwrap(),
            Some(Policy::Admin(_))
        ));
        assert!(find_policy(s, "y/web").unwrap().is_none());
        assert!(delete_policy(s, &found.key()).unwrap());
        assert_eq!(list_policies(s).unwrap().len(), 1);

        let set = |w: &str| LabelChange::parse(w).unwrap();
        let labels = label_namespace(s, "x", &[set("env=prod"), set("team=a")]).unwrap();
        assert_eq!(labels.len(), 2);
        let labels = label_namespace(s, "x", &[set("team-")]).unwrap();
        assert_eq!(labels, Labels::from([("env".into(), "prod".into())]));
        assert!(label_namespace(s, "Bad_NS", &[]).is_err());

        let record = EndpointRecord {
            id: "c1".into(),
            namespace: "x".into(),
            name: Some("a".into()),
            labels: Labels::new(),
            named_ports: vec![],
            addresses: vec!["10.0.0.1".parse().unwrap()],
            host: "h1".into(),
        };
        put_endpoint(s, &record).unwrap();
        let labelled = label_endpoint(s, "c1", &[set("pod=a")]).unwrap();
        assert_eq!(labelled.labels["pod"], "a");
        assert_eq!(get_endpoint(s, "c1").unwrap().unwrap(), labelled);
        assert!(matches!(
            label_endpoint(s, "c9", &[set("pod=a")]),
            Err(StoreError::NotFound(_))
        ));
        let (policies, inventory) = load(s).unwrap();
        assert_eq!(policies.admin().len(), 1);
        assert_eq!(inventory.namespace_labels("x")["env"], "prod");
        assert!(delete_endpoint(s, "c1").unwrap());
        assert!(list_endpoints(s).unwrap().is_empty());
    }

    #[test]
    fn a_stored_policy_that_no_longer_validates_is_an_error_not_a_policy() {
        let (_guard, mut store) = temp_store();
        let s: &mut dyn Store = &mut store;
        let bad = r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"w","namespace":"x"},"spec":{"podSelector":{},"ingress":[{"ports":[{"port":80,"endPort":70}]}]}}"#;
        s.put_object(Collection::Policies, "networkpolicy/x/w", bad)
            .unwrap();
        let err = list_policies(s).unwrap_err().to_string();
        assert!(
            err.contains("policies/networkpolicy/x/w") && err.contains("70 is below port 80"),
            "{err}"
        );
    }
}
