//! Enforcement on this host: the stored policies and namespaces, the store's endpoints and
//! this host's own (from their records), rendered by [`super::nft`] and applied as one
//! transaction. Run by the policy commands after every change, and by attach and detach
//! (CLI, CNI, Docker) while the table exists, so that a new endpoint is isolated from its
//! first packet (before attach returns).
//!
//! This first step re-renders the whole table on each change (one `nft -f`, a few ms):
//! simple and atomic, but its cost grows with endpoints and policies. The next step changes
//! only set and map elements for endpoints and labels, and only one policy's chain for a
//! policy change.

use std::collections::BTreeSet;

use super::inventory::Inventory;
use super::PolicySet;
use crate::cluster::{objects, Store};
use crate::firewall::{FirewallError, Nftnl};
use crate::network::StateDir;

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("policy store: {0}")]
    Store(#[from] crate::cluster::StoreError),
    #[error("this host's endpoints: {0}")]
    Endpoints(String),
    #[error("applying policy to nftables: {0}")]
    Firewall(#[from] FirewallError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The store attach and detach read: the embedded file store under the state directory
/// (the policy commands' default).
pub fn default_store(state: &StateDir) -> Result<Box<dyn Store>, crate::cluster::StoreError> {
    crate::cluster::open(&default_url(state), crate::cluster::DEFAULT_PREFIX, None)
}

/// This host's node name, as the agent defaults it.
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Where a host records that policies exist, so that attach and detach know to refresh
/// (a stat, before any store is read).
fn marker(state: &StateDir) -> std::path::PathBuf {
    state.run_dir().join("policy-enforced")
}

/// The stored policies, and the store's endpoints together with this host's own (from their
/// records, which win over a stored copy of the same id); also the ids of this host's.
pub fn load(
    state: &StateDir,
    store: &mut dyn Store,
) -> Result<(PolicySet, Inventory, BTreeSet<String>), EnforceError> {
    let policies = PolicySet::new(objects::list_policies(store)?);
    let local = crate::bridge::Driver::new(state.clone())
        .policy_records(&node_name())
        .map_err(|e| EnforceError::Endpoints(e.to_string()))?;
    let local_ids: BTreeSet<String> = local.iter().map(|r| r.id.clone()).collect();
    let mut endpoints = objects::list_endpoints(store)?;
    endpoints.retain(|e| !local_ids.contains(&e.id));
    endpoints.extend(local);
    let inventory = Inventory::new(endpoints, objects::list_namespaces(store)?);
    Ok((policies, inventory, local_ids))
}

/// Whether this host has policies to enforce (see [`refresh`]).
pub fn has_policies(state: &StateDir) -> bool {
    marker(state).exists()
}

/// Renders and applies the policy table of this host (in the calling thread's namespace).
/// No table without a policy, or without an endpoint on this host to apply one to. `url`
/// names `store`: kept in the marker, so that attach and detach read the same store.
pub fn refresh(state: &StateDir, store: &mut dyn Store, url: &str) -> Result<(), EnforceError> {
    let (policies, inventory, local_ids) = load(state, store)?;
    let marker = marker(state);
    if policies.network().is_empty() && policies.admin().is_empty() && policies.baseline().is_none()
    {
        let _ = std::fs::remove_file(&marker);
    } else {
        crate::util::ensure_dir(state.run_dir())
            .and_then(|_| std::fs::write(&marker, url.as_bytes()))
            .map_err(|source| EnforceError::Io {
                path: marker.clone(),
                source,
            })?;
    }
    if local_ids.is_empty() {
        if active()? {
            crate::firewall::run_nft(&format!("delete table inet {}\n", super::nft::TABLE))?;
        }
        return Ok(());
    }
    match super::nft::render(&policies, &inventory, &local_ids) {
        Some(script) => crate::firewall::run_nft(&script)?,
        None => {
            if active()? {
                crate::firewall::run_nft(&format!("delete table inet {}\n", super::nft::TABLE))?;
            }
        }
    }
    Ok(())
}

/// Whether this host enforces policy now (its table exists): one netlink request.
pub fn active() -> Result<bool, FirewallError> {
    Ok(Nftnl::open(super::nft::TABLE)?.table_exists()?)
}

/// After an endpoint came or went: re-applies the table if this host has policies, from the
/// store the last refresh used (etcd's TLS settings are not kept: such a host's agent
/// refreshes within a second instead).
pub fn refresh_if_active(state: &StateDir) -> Result<(), EnforceError> {
    let Ok(url) = std::fs::read_to_string(marker(state)) else {
        return Ok(());
    };
    let url = if url.is_empty() {
        default_url(state)
    } else {
        url
    };
    let mut store = crate::cluster::open(&url, crate::cluster::DEFAULT_PREFIX, None)?;
    refresh(state, store.as_mut(), &url)
}

/// The embedded file store under the state directory.
pub fn default_url(state: &StateDir) -> String {
    format!("file:{}", state.root().join("cluster.json").display())
}
