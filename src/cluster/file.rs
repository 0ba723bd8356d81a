//! The embedded store: one JSON file, changed under a file lock and replaced atomically, for
//! hosts that share a filesystem (one machine's namespaces, the demo, tests). Same semantics as
//! etcd: create-if-absent, leases that expire by timestamp, a revision that every change bumps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{
    check_config, check_object_name, now_secs, pick_subnet, ClusterConfig, Collection, Lease,
    LeaseAttrs, ObjectChange, Objects, Snapshot, Store, StoreError,
};
use crate::util::{read_if_exists, write_atomic, FileLock};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<ClusterConfig>,
    /// Keyed like etcd: `<ip>-<len>`.
    #[serde(default)]
    subnets: BTreeMap<String, Lease>,
    /// `Collection::dir()` → object name → the object (kept as JSON, not as a string of it,
    /// so that the file stays readable).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    objects: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

fn key(subnet: &Ipv4Net) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix_len())
}

pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: impl AsRef<Path>) -> FileStore {
        FileStore {
            path: path.as_ref().to_path_buf(),
        }
    }

    fn read(&self) -> Result<Contents, StoreError> {
        match read_if_exists(&self.path) {
            Ok(None) => Ok(Contents::default()),
            Ok(Some(data)) => serde_json::from_slice(&data)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", self.path.display()))),
            Err(e) => Err(StoreError::Unreachable(format!(
                "{}: {e}",
                self.path.display()
            ))),
        }
    }

    /// Read-modify-write under the lock; `f` returns what the caller gets back.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut Contents) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let unreachable =
            |e: std::io::Error| StoreError::Unreachable(format!("{}: {e}", self.path.display()));
        let lock_path = self.path.with_extension("lock");
        let _lock = FileLock::acquire(&lock_path).map_err(unreachable)?;
        let mut contents = self.read()?;
        let out = f(&mut contents)?;
        contents.revision += 1;
        let data = serde_json::to_vec_pretty(&contents).expect("serializable");
        write_atomic(&self.path, &data).map_err(unreachable)?;
        Ok(out)
    }

    fn snapshot(contents: &Contents) -> Snapshot {
        let now = now_secs();
        Snapshot {
            revision: contents.revision,
            leases: contents
                .subnets
                .values()
                .filter(|l| l.expires > now)
                .cloned()
                .collect(),
        }
    }
}

impl Store for FileStore {
    fn init_config(&mut self, requested: &ClusterConfig) -> Result<ClusterConfig, StoreError> {
        if let Some(existing) = self.read()?.config {
            return check_config(existing, requested);
        }
        self.update(|c| match c.config {
            Some(existing) => check_config(existing, requested),
            None => {
                c.config = Some(*requested);
                Ok(*requested)
            }
        })
    }

    fn acquire(
        &mut self,
        config: &ClusterConfig,
        attrs: &LeaseAttrs,
        preferred: Option<Ipv4Net>,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        self.update(|c| {
            let now = now_secs();
            c.subnets.retain(|_, l| l.expires > now);
            let live: Vec<Lease> = c.subnets.values().cloned().collect();
            let subnet = pick_subnet(config, &live, attrs, preferred)?;
            let lease = Lease {
                subnet,
                subnet6: config.subnet6_for(subnet),
                attrs: attrs.clone(),
                expires: now + ttl.as_secs().max(1),
            };
            c.subnets.insert(key(&subnet), lease.clone());
            Ok(lease)
        })
    }

    fn renew(&mut self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        self.update(|c| match c.subnets.get_mut(&key(&lease.subnet)) {
            Some(l) if l.attrs == lease.attrs && l.expires > now_secs() => {
                l.expires = now_secs() + ttl.as_secs().max(1);
                Ok(l.clone())
            }
            _ => Err(StoreError::LeaseLost(lease.subnet)),
        })
    }

    fn release(&mut self, lease: &Lease) -> Result<(), StoreError> {
        self.update(|c| {
            if c.subnets
                .get(&key(&lease.subnet))
                .is_some_and(|l| l.attrs == lease.attrs)
            {
                c.subnets.remove(&key(&lease.subnet));
            }
            Ok(())
        })
    }

    fn list(&mut self) -> Result<Snapshot, StoreError> {
        Ok(Self::snapshot(&self.read()?))
    }

    fn wait_for_change(
        &mut self,
        revision: u64,
        timeout: Duration,
    ) -> Result<Snapshot, StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            let contents = self.read()?;
            if contents.revision != revision || Instant::now() >= deadline {
                return Ok(Self::snapshot(&contents));
            }
            std::thread::sleep(Duration::from_millis(50).min(deadline - Instant::now()));
        }
    }

    fn list_objects(&mut self, collection: Collection) -> Result<Objects, StoreError> {
        let contents = self.read()?;
        let items = contents
            .objects
            .get(collection.dir())
            .map(|objects| {
                objects
                    .iter()
                    .map(|(name, value)| (name.clone(), value.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Objects {
            revision: contents.revision,
            items,
        })
    }

    fn update_object(
        &mut self,
        collection: Collection,
        name: &str,
        change: &mut ObjectChange<'_>,
    ) -> Result<Option<String>, StoreError> {
        check_object_name(name)?;
        self.update(|c| {
            let objects = c.objects.entry(collection.dir().to_string()).or_default();
            let current = objects.get(name).map(|v| v.to_string());
            let new = change(current.as_deref())?;
            match &new {
                Some(text) => {
                    let value = serde_json::from_str(text).map_err(|e| {
                        StoreError::Invalid(format!("{}/{name}: not JSON: {e}", collection.dir()))
                    })?;
                    objects.insert(name.to_string(), value);
                }
                None => {
                    objects.remove(name);
                }
            }
            if objects.is_empty() {
                c.objects.remove(collection.dir());
            }
            Ok(new)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passes_the_store_conformance_suite() {
        let mut r = [0u8; 4];
        crate::util::fill_random(&mut r);
        let path =
            std::env::temp_dir().join(format!("ferrynet-store-{}.json", u32::from_ne_bytes(r)));
        crate::cluster::conformance::lease_semantics(&mut super::FileStore::new(&path));
        crate::cluster::conformance::object_semantics(&mut super::FileStore::new(&path));
        std::fs::remove_file(&path).unwrap();
        let _ = std::fs::remove_file(path.with_extension("lock"));
    }
}
