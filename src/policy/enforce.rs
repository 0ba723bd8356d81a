//! Enforcement on this host: the stored policies and namespaces, the store's endpoints and
//! this host's own (from their records), built by [`super::nft`] and applied as the
//! difference from what the kernel holds, in one transaction. Run by the policy commands
//! after every change and by the agent when the store changes.
//!
//! Attach and detach (CLI, CNI, Docker) take the per-endpoint path instead: the plan (the
//! policies' selectors, named ports and dispatching namespaces, kept beside the table by
//! every refresh) says which sets and maps the endpoint belongs in, and one nf_tables
//! transaction adds or removes its elements — no store read, no chain touched, no `nft`
//! process, and nothing that grows with the number of endpoints. So a new endpoint is
//! isolated from its first packet (before attach returns).
//!
//! A lock serialises both paths on one host: a refresh reads the records, the kernel's
//! elements and writes its changes while no endpoint changes its elements.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::inventory::{EndpointRecord, Inventory};
use super::nft::TABLE;
use super::plan::Plan;
use super::ruleset::{Elem, Ruleset, SetKind, Structure};
use super::{EndpointSelector, Labels, PolicySet};
use crate::cluster::{objects, Store};
use crate::firewall::{Element, FirewallError, Nftnl, NFPROTO_INET};
use crate::network::StateDir;
use crate::util::FileLock;

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("policy store: {0}")]
    Store(#[from] crate::cluster::StoreError),
    #[error("this host's endpoints: {0}")]
    Endpoints(String),
    #[error("applying policy to nftables: {0}")]
    Firewall(#[from] FirewallError),
    #[error("policy table: {0}")]
    Netlink(#[from] crate::netlink::NetlinkError),
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

/// This host's node name, as the agent defaults it: the UTS namespace's host name, by
/// uname(2) (a read under /proc/sys walks a path whose cost grows with the namespaces).
pub fn node_name() -> String {
    // SAFETY: uname fills the zeroed struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "localhost".into();
    }
    // SAFETY: nodename is NUL-terminated by the kernel.
    let name = unsafe { std::ffi::CStr::from_ptr(u.nodename.as_ptr()) };
    name.to_string_lossy().into_owned()
}

/// The plan of this host's policies (see [`Plan`]): present exactly while policies exist.
fn plan_path(state: &StateDir) -> PathBuf {
    state.run_dir().join("policy-plan.json")
}

/// The structure of the table as last applied, with the table's handle then.
fn structure_path(state: &StateDir) -> PathBuf {
    state.run_dir().join("policy-table.json")
}

#[derive(Serialize, Deserialize)]
struct Applied {
    handle: u64,
    structure: Structure,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EnforceError + '_ {
    move |source| EnforceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn lock(state: &StateDir) -> Result<FileLock, EnforceError> {
    let p = state.run_dir().join("policy.lock");
    FileLock::acquire(&p).map_err(io(&p))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), EnforceError> {
    let data = serde_json::to_vec(value).expect("serializable");
    crate::util::ensure_dir(path.parent().expect("in the run directory"))
        .and_then(|_| crate::util::write_atomic(path, &data))
        .map_err(io(path))
}

fn remove(path: &Path) -> Result<(), EnforceError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// The stored policies, and the store's endpoints together with this host's own (from their
/// records, which win over a stored copy of the same id); also the ids of this host's.
pub fn load(
    state: &StateDir,
    store: &mut dyn Store,
) -> Result<(PolicySet, Inventory, BTreeSet<String>), EnforceError> {
    let (policies, inventory, local, _) = load_all(state, store)?;
    Ok((policies, inventory, local))
}

type Loaded = (
    PolicySet,
    Inventory,
    BTreeSet<String>,
    BTreeMap<String, Labels>,
);

fn load_all(state: &StateDir, store: &mut dyn Store) -> Result<Loaded, EnforceError> {
    let policies = PolicySet::new(objects::list_policies(store)?);
    let local = crate::bridge::Driver::new(state.clone())
        .policy_records(&node_name())
        .map_err(|e| EnforceError::Endpoints(e.to_string()))?;
    let local_ids: BTreeSet<String> = local.iter().map(|r| r.id.clone()).collect();
    let mut endpoints = objects::list_endpoints(store)?;
    endpoints.retain(|e| !local_ids.contains(&e.id));
    endpoints.extend(local);
    let namespaces = objects::list_namespaces(store)?;
    let inventory = Inventory::new(endpoints, namespaces.clone());
    Ok((policies, inventory, local_ids, namespaces))
}

/// Whether this host has policies to enforce (see [`refresh`]): one stat.
pub fn has_policies(state: &StateDir) -> bool {
    plan_path(state).exists()
}

/// Brings this host's policy table (in the calling thread's namespace) in line with the
/// store: only what changed, in one transaction. No table without a policy, or without an
/// endpoint on this host to apply one to. `url` names `store`: kept in the plan, so that
/// the per-endpoint path can refresh from the same store when it must.
pub fn refresh(state: &StateDir, store: &mut dyn Store, url: &str) -> Result<(), EnforceError> {
    let _lock = lock(state)?;
    refresh_locked(state, store, url)
}

fn refresh_locked(state: &StateDir, store: &mut dyn Store, url: &str) -> Result<(), EnforceError> {
    let (policies, inventory, local_ids, namespaces) = load_all(state, store)?;
    let Some(plan) = Plan::new(&policies, namespaces, url) else {
        remove(&plan_path(state))?;
        return remove_table(state);
    };
    write_json(&plan_path(state), &plan)?;
    if local_ids.is_empty() {
        return remove_table(state);
    }
    apply(
        state,
        &super::nft::build(&policies, &plan, &inventory, &local_ids),
    )
}

fn remove_table(state: &StateDir) -> Result<(), EnforceError> {
    if active()? {
        crate::firewall::run_nft(&format!("delete table inet {TABLE}\n"))?;
    }
    remove(&structure_path(state))
}

/// Applies `desired` as changes to the table last applied, if the kernel still has that
/// table (same handle) and its elements read back; else replaces the table whole.
fn apply(state: &StateDir, desired: &Ruleset) -> Result<(), EnforceError> {
    let mut nl = Nftnl::open(TABLE)?;
    let handle = nl.table_handle()?;
    let applied: Option<Applied> = read_json(&structure_path(state));
    let script = match applied.filter(|a| Some(a.handle) == handle) {
        Some(applied) => match kernel_elements(&mut nl, &applied.structure)? {
            Some(kernel) => desired.script_changes(&applied.structure, &kernel),
            None => desired.script_whole(),
        },
        None => desired.script_whole(),
    };
    if !script.is_empty() {
        crate::firewall::run_nft(&script)?;
    }
    let handle = nl.table_handle()?.unwrap_or_default();
    write_json(
        &structure_path(state),
        &Applied {
            handle,
            structure: desired.structure(),
        },
    )
}

/// Every element of every set of `structure`, as the kernel holds them; `None` if one is
/// missing or holds an element ferrynet would not write.
fn kernel_elements(
    nl: &mut Nftnl,
    structure: &Structure,
) -> Result<Option<BTreeMap<String, BTreeSet<Elem>>>, EnforceError> {
    let mut out = BTreeMap::new();
    for (name, kind) in &structure.sets {
        let elements = match nl.dump_named(NFPROTO_INET, name) {
            Ok(e) => e,
            Err(e) if e.is(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let decoded: Option<BTreeSet<Elem>> =
            elements.iter().map(|e| Elem::decode(*kind, e)).collect();
        match decoded {
            Some(d) => out.insert(name.clone(), d),
            None => return Ok(None),
        };
    }
    Ok(Some(out))
}

/// Whether this host enforces policy now (its table exists): one netlink request.
pub fn active() -> Result<bool, FirewallError> {
    Ok(Nftnl::open(TABLE)?.table_exists()?)
}

/// An endpoint of this host came (`added`) or went: its elements, in one transaction, when
/// this host has policies. A table not made yet (the host's first endpoint) or a plan that
/// cannot be read is made by a whole refresh from the store instead (etcd's TLS settings
/// are not kept: such a host's agent refreshes within a second instead).
/// `endpoint` is asked for only then (one stat decides, for a host without policies).
pub fn endpoint_changed(
    state: &StateDir,
    endpoint: impl FnOnce() -> EndpointRecord,
    added: bool,
) -> Result<(), EnforceError> {
    let plan_file = plan_path(state);
    if !plan_file.exists() {
        return Ok(());
    }
    let endpoint = &endpoint();
    let _lock = lock(state)?;
    let plan: Option<Plan> = read_json(&plan_file);
    if let Some(plan) = &plan {
        let changes = if added {
            let inventory = Inventory::new(
                [endpoint.clone()],
                plan.namespaces.iter().map(|(k, v)| (k.clone(), v.clone())),
            );
            grouped(plan.endpoint_elements(&inventory, endpoint, true))
        } else {
            every_place(plan, endpoint)
        };
        let (adds, removes) = if added {
            (changes, Vec::new())
        } else {
            (Vec::new(), changes)
        };
        match Nftnl::open(TABLE)?.update_named(NFPROTO_INET, &adds, &removes) {
            Ok(()) => return Ok(()),
            // No table yet (or it was removed): a refresh makes it.
            Err(e) if e.is(libc::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
    } else if !plan_file.exists() {
        return Ok(());
    }
    let url = plan.map(|p| p.store).unwrap_or_else(|| default_url(state));
    let mut store = crate::cluster::open(&url, crate::cluster::DEFAULT_PREFIX, None)?;
    refresh_locked(state, store.as_mut(), &url)
}

fn grouped(elements: Vec<(String, SetKind, Elem)>) -> Vec<(String, Vec<Element>)> {
    let mut by_set: BTreeMap<String, Vec<Element>> = BTreeMap::new();
    for (set, _, e) in elements {
        by_set.entry(set).or_default().push(e.encode());
    }
    by_set.into_iter().collect()
}

/// Every element `endpoint` could have, whatever its labels were when it was added: its
/// addresses in every selector set, its named ports in every named-port set, and its
/// dispatch and drop entries (removing a missing element is not an error).
fn every_place(plan: &Plan, endpoint: &EndpointRecord) -> Vec<(String, Vec<Element>)> {
    let mut everywhere = plan.clone();
    everywhere.selectors = plan
        .selectors
        .iter()
        .map(|(id, _)| (id.clone(), EndpointSelector::everything()))
        .collect();
    everywhere.dispatch = plan
        .dispatch
        .iter()
        .map(|(_, d)| (endpoint.namespace.clone(), *d))
        .collect();
    let inventory = Inventory::new([endpoint.clone()], []);
    grouped(everywhere.endpoint_elements(&inventory, endpoint, true))
}

/// The embedded file store under the state directory.
pub fn default_url(state: &StateDir) -> String {
    format!("file:{}", state.root().join("cluster.json").display())
}
