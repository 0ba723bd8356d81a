//! Network policy on an agent's host: while the cluster has policies, this host's endpoints
//! (from their own records) are published to the store for the other hosts' selectors, and
//! this host's policy table is refreshed whenever the store (policies, namespaces, other
//! hosts' endpoints) or this host's endpoints change. Endpoint changes are seen by the modification times of the
//! endpoint record directories (a few stats per pass, not a read of every record).

use std::path::PathBuf;
use std::time::SystemTime;

use tracing::warn;

use crate::cluster::{objects, Store};
use crate::network::StateDir;
use crate::policy::droplog::DropLog;
use crate::policy::enforce;

pub(super) struct PolicySync {
    state: StateDir,
    node: String,
    /// The store's URL (see [`enforce::refresh`]).
    url: String,
    /// What the last pass saw: the store revision and the record directories' mtimes.
    seen: Option<(u64, Vec<(PathBuf, SystemTime)>)>,
    last_error: Option<String>,
    /// Whether the cluster had policies at the last pass.
    enforcing: bool,
}

impl PolicySync {
    pub(super) fn new(state: StateDir, node: &str, url: &str) -> PolicySync {
        PolicySync {
            state,
            node: node.to_string(),
            url: url.to_string(),
            seen: None,
            last_error: None,
            enforcing: false,
        }
    }

    /// Whether the cluster had policies at the last pass (then this host's endpoints are
    /// published, and worth looking at often).
    pub(super) fn enforcing(&self) -> bool {
        self.enforcing
    }

    fn directories(&self) -> Vec<(PathBuf, SystemTime)> {
        let root = self.state.run_dir().join("endpoints");
        let mut out: Vec<(PathBuf, SystemTime)> = std::fs::read_dir(&root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.path(), e.metadata().ok()?.modified().ok()?)))
            .collect();
        out.sort();
        out
    }

    /// One pass, when something changed since the last: publish, then enforce.
    pub(super) fn run(&mut self, store: &mut dyn Store, revision: u64) {
        let looked = SystemTime::now();
        let dirs = self.directories();
        if self.seen.as_ref() == Some(&(revision, dirs.clone())) {
            return;
        }
        match self.sync(store) {
            Ok(()) => {
                // A directory changed within a clock tick of the look may change again
                // with the same mtime, after the records were read: look again next pass.
                self.seen = settled(&dirs, looked).then_some((revision, dirs));
                if self.last_error.take().is_some() {
                    tracing::info!("network policy in force again");
                }
            }
            Err(e) => {
                if self.last_error.as_deref() != Some(e.as_str()) {
                    warn!("network policy: {e}; retrying");
                    self.last_error = Some(e);
                }
            }
        }
    }

    /// Publishes and enforces only while the cluster has policies: a cluster without them
    /// sees no endpoint records written at all.
    fn sync(&mut self, store: &mut dyn Store) -> Result<(), String> {
        let policies = objects::list_policies(store).map_err(|e| e.to_string())?;
        self.enforcing = !policies.is_empty();
        if policies.is_empty() {
            if enforce::has_policies(&self.state) {
                enforce::refresh(&self.state, store, &self.url).map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        let local = crate::bridge::Driver::new(self.state.clone())
            .policy_records(&self.node)
            .map_err(|e| e.to_string())?;
        let stored = objects::list_endpoints(store).map_err(|e| e.to_string())?;
        for r in &local {
            if !stored.iter().any(|s| s == r) {
                objects::put_endpoint(store, r).map_err(|e| e.to_string())?;
            }
        }
        for s in stored.iter().filter(|s| s.host == self.node) {
            if !local.iter().any(|r| r.id == s.id) {
                objects::delete_endpoint(store, &s.id).map_err(|e| e.to_string())?;
            }
        }
        enforce::refresh(&self.state, store, &self.url).map_err(|e| e.to_string())
    }
}

/// How long after a change a directory's mtime is trusted to show the next one: file times
/// come from the kernel's coarse clock (a scheduler tick, up to 10 ms) on kernels before
/// 6.13's fine-grained timestamps, so two changes within one tick can share an mtime.
const MTIME_GRAIN: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether every directory's mtime is older than `looked` by more than [`MTIME_GRAIN`].
fn settled(dirs: &[(PathBuf, SystemTime)], looked: SystemTime) -> bool {
    dirs.iter().all(|(_, mtime)| {
        looked
            .duration_since(*mtime)
            .is_ok_and(|age| age > MTIME_GRAIN)
    })
}

/// Logs every denied packet of a policy that logs its drops, from a thread of its own (it
/// ends with the process). The group is bound here, so that a reader already holding it is
/// an error at start.
pub(super) fn log_drops() -> Result<(), super::AgentError> {
    let mut log = DropLog::open().map_err(|source| super::AgentError::DropLog {
        group: crate::policy::droplog::LOG_GROUP,
        source,
    })?;
    std::thread::spawn(move || loop {
        let next = std::time::Instant::now() + std::time::Duration::from_secs(1);
        match log.until(next) {
            Ok(drops) => {
                for d in drops {
                    tracing::info!(drop = %d, "network policy denied a packet");
                }
            }
            Err(e) => {
                warn!("--log-drops: {e}; no more drops are logged");
                return;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_directory_changed_within_the_clock_grain_is_looked_at_again() {
        let now = SystemTime::now();
        let dir = |age: Duration| (PathBuf::from("/x"), now - age);
        assert!(settled(&[dir(Duration::from_millis(500))], now));
        assert!(settled(&[], now));
        assert!(!settled(
            &[
                dir(Duration::from_millis(500)),
                dir(Duration::from_millis(3))
            ],
            now
        ));
        // An mtime after the look (a change while looking, or a clock step) is not settled.
        assert!(!settled(
            &[(PathBuf::from("/x"), now + Duration::from_millis(5))],
            now
        ));
    }
}
