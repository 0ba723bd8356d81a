//! Where ferrynet keeps its state, and the network definitions' persistence: load, list,
//! insert (after the checks against the other networks), remove, copy under a new name.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::util::{create_exclusive, ensure_dir, remove_if_exists, FileLock};

/// Where ferrynet keeps its state. Network definitions are configuration and persist
/// (`/var/lib/ferrynet`); endpoints and IPAM reservations describe running containers and live
/// on tmpfs (`/run/ferrynet`): they vanish on reboot exactly when the namespaces they describe
/// do, and they cost no disk I/O on the attach path (ext4 inode allocation made attach slow and
/// noisy here).
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    run: PathBuf,
}

pub const DEFAULT_RUN_DIR: &str = "/run/ferrynet";

impl StateDir {
    /// Everything under one directory: configuration in ROOT, runtime state in ROOT/run.
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        let root = root.into();
        StateDir {
            run: root.join("run"),
            root,
        }
    }

    pub fn with_run_dir(root: impl Into<PathBuf>, run: impl Into<PathBuf>) -> StateDir {
        StateDir {
            root: root.into(),
            run: run.into(),
        }
    }

    /// From explicit choices (flags or `FERRYNET_STATE_DIR` / `FERRYNET_RUN_DIR`): with neither,
    /// the system defaults; with only a state directory, everything under it (so that two
    /// instances never share runtime state by accident).
    pub fn resolve(state: Option<PathBuf>, run: Option<PathBuf>) -> StateDir {
        match (state, run) {
            (None, None) => StateDir::with_run_dir(DEFAULT_STATE_DIR, DEFAULT_RUN_DIR),
            (Some(s), None) => StateDir::new(s),
            (s, Some(r)) => StateDir::with_run_dir(s.unwrap_or(DEFAULT_STATE_DIR.into()), r),
        }
    }

    /// [`StateDir::resolve`] from the environment.
    pub fn from_env() -> StateDir {
        let var = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        StateDir::resolve(var("FERRYNET_STATE_DIR"), var("FERRYNET_RUN_DIR"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn run_dir(&self) -> &Path {
        &self.run
    }

    fn networks_dir(&self) -> PathBuf {
        self.root.join("networks")
    }

    fn network_file(&self, name: &str) -> PathBuf {
        self.networks_dir().join(format!("{name}.json"))
    }

    pub fn endpoints_dir(&self, network: &str) -> PathBuf {
        self.run.join("endpoints").join(network)
    }

    pub fn ipam_dir(&self, network: &str) -> PathBuf {
        self.run.join("ipam").join(network)
    }

    fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T, NetworkError> {
        r.map_err(|source| NetworkError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Serializes network creation and removal (overlap checks need a stable view).
    pub fn lock_networks(&self) -> Result<FileLock, NetworkError> {
        let p = self.root.join("networks.lock");
        Self::io(&p, FileLock::acquire(&p))
    }

    pub fn load(&self, name: &str) -> Result<NetworkConfig, NetworkError> {
        validate_id("network name", name)?;
        let p = self.network_file(name);
        let data = match fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NetworkError::NotFound(name.to_string()))
            }
            Err(e) => return Self::io(&p, Err(e)),
        };
        serde_json::from_slice(&data).map_err(|source| NetworkError::Corrupt { path: p, source })
    }

    pub fn list(&self) -> Result<Vec<NetworkConfig>, NetworkError> {
        let dir = self.networks_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Self::io(&dir, Err(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_suffix(".json") {
                if !n.starts_with('.') {
                    out.push(self.load(n)?);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Records a new network after checking it against the others. Caller holds the lock.
    pub fn insert(&self, net: &NetworkConfig) -> Result<(), NetworkError> {
        self.check_new(net)?;
        let dir = self.networks_dir();
        Self::io(&dir, ensure_dir(&dir))?;
        let p = self.network_file(&net.name);
        let data = serde_json::to_vec_pretty(net).expect("serializable");
        match create_exclusive(&p, &data) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(NetworkError::Exists(net.name.clone()))
            }
            r => Self::io(&p, r),
        }
    }

    /// Whether `net` may join the recorded networks: a new name, its own subnet and bridge.
    pub fn check_new(&self, net: &NetworkConfig) -> Result<(), NetworkError> {
        for other in self.list()? {
            if other.name == net.name {
                return Err(NetworkError::Exists(net.name.clone()));
            }
            for subnet in net.subnets() {
                if let Some(other_subnet) =
                    other.subnets().into_iter().find(|o| overlaps(*o, subnet))
                {
                    return Err(NetworkError::Overlap {
                        subnet,
                        other: other.name,
                        other_subnet,
                    });
                }
            }
            if other.bridge == net.bridge {
                return Err(NetworkError::BridgeTaken {
                    bridge: net.bridge.clone(),
                    other: other.name,
                });
            }
        }
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Result<(), NetworkError> {
        let p = self.network_file(name);
        Self::io(&p, remove_if_exists(&p)).map(|_| ())
    }

    /// Records network `old` under the name `new` too (the same network: bridge, subnets and
    /// all): the first half of a rename, which [`StateDir::remove`] of `old` completes once
    /// nothing refers to `old` any more. Only for a network without endpoints or reservations
    /// (their paths hold the name): refused otherwise. A copy left by an interrupted rename
    /// is taken as done. Caller holds the lock.
    pub fn copy_as(&self, old: &str, new: &str) -> Result<NetworkConfig, NetworkError> {
        validate_id("network name", new)?;
        let mut net = self.load(old)?;
        for dir in [self.endpoints_dir(old), self.ipam_dir(old)] {
            if dir.exists() {
                return Err(invalid(
                    "rename of network",
                    old,
                    format!("it has had endpoints ({} exists)", dir.display()),
                ));
            }
        }
        net.name = new.to_string();
        match self.load(new) {
            Ok(other) if other == net => return Ok(net),
            Ok(_) => return Err(NetworkError::Exists(new.to_string())),
            Err(NetworkError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let p = self.network_file(new);
        let data = serde_json::to_vec_pretty(&net).expect("serializable");
        match create_exclusive(&p, &data) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(NetworkError::Exists(new.to_string()))
            }
            r => Self::io(&p, r).map(|()| net),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state directory of its own, removed also when an assertion fails.
    struct TempRoot(PathBuf);

    impl TempRoot {
        fn new() -> TempRoot {
            let mut r = [0u8; 4];
            crate::util::fill_random(&mut r);
            TempRoot(std::env::temp_dir().join(format!("ferrynet-state-{}", u32::from_ne_bytes(r))))
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn new(name: &str, subnets: &[&str]) -> Result<NetworkConfig, NetworkError> {
        let nets: Vec<IpNet> = subnets.iter().map(|s| s.parse().unwrap()).collect();
        NetworkConfig::new(name, &nets, None, &[], 1500)
    }

    #[test]
    fn refuses_overlapping_subnets() {
        let root = TempRoot::new();
        let st = StateDir::new(&root.0);
        let a = new("a", &["10.90.0.0/24", "fd00:90::/64"]).unwrap();
        st.insert(&a).unwrap();
        let b = new("b", &["10.90.0.128/25"]).unwrap();
        assert!(matches!(st.insert(&b), Err(NetworkError::Overlap { .. })));
        let c = new("c", &["fd00:90::/80"]).unwrap();
        assert!(matches!(st.insert(&c), Err(NetworkError::Overlap { .. })));
        assert!(matches!(st.insert(&a), Err(NetworkError::Exists(_))));
        assert_eq!(st.list().unwrap(), vec![a]);
    }

    #[test]
    fn copies_an_empty_network_under_a_new_name() {
        let root = TempRoot::new();
        let st = StateDir::new(&root.0);
        let a = new("a1b2c3", &["10.90.0.0/24"]).unwrap();
        st.insert(&a).unwrap();
        let blue = st.copy_as("a1b2c3", "blue").unwrap();
        assert_eq!(
            (blue.name.as_str(), blue.bridge.as_str()),
            ("blue", a.bridge.as_str())
        );
        // Again (an interrupted rename): done already.
        assert_eq!(st.copy_as("a1b2c3", "blue").unwrap(), blue);
        st.remove("a1b2c3").unwrap();
        assert_eq!(st.list().unwrap(), vec![blue]);
        // Not onto another network, not once endpoints have been.
        st.insert(&new("red", &["10.91.0.0/24"]).unwrap()).unwrap();
        assert!(matches!(
            st.copy_as("blue", "red"),
            Err(NetworkError::Exists(_))
        ));
        fs::create_dir_all(st.ipam_dir("blue")).unwrap();
        assert!(st.copy_as("blue", "green").is_err());
    }
}
