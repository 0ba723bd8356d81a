//! Network definitions: what `ferrynet network create` records, and the names and checks
//! every other module relies on (validation lives here so that it happens before any change).

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::util::{create_exclusive, ensure_dir, remove_if_exists, FileLock};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/ferrynet";
pub const DEFAULT_MTU: u32 = 1500;
pub const MIN_MTU: u32 = 576;
pub const MAX_MTU: u32 = 65535;

/// Ranges that can never be a container network: "this network", loopback, link-local,
/// multicast and the reserved block up to the limited broadcast address. A subnet touching
/// one would route the host's own traffic into a bridge.
const SPECIAL_V4: [(&str, &str); 5] = [
    ("0.0.0.0/8", "\"this network\" (0.0.0.0/8)"),
    ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
    ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
    ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
    ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
];

/// The subnet's first host address: the default gateway.
pub fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

/// A container subnet: /30 or shorter (room for a gateway and a container), no host bits,
/// and nowhere near the ranges the host needs for itself.
pub fn validate_subnet(subnet: Ipv4Net) -> Result<(), NetworkError> {
    if subnet.prefix_len() == 0 {
        return Err(invalid(
            "subnet",
            subnet,
            "is the whole address space; a container network needs its own range (e.g. 10.90.0.0/24)",
        ));
    }
    if subnet.prefix_len() > 30 {
        return Err(invalid(
            "subnet",
            subnet,
            "needs a prefix of /30 or shorter",
        ));
    }
    if subnet.addr() != subnet.network() {
        return Err(invalid(
            "subnet",
            subnet,
            format!("has host bits set; did you mean {}?", subnet.trunc()),
        ));
    }
    for (range, what) in SPECIAL_V4 {
        let range: Ipv4Net = range.parse().expect("valid constant");
        if range.contains(&subnet.network()) || subnet.contains(&range.network()) {
            return Err(invalid("subnet", subnet, format!("overlaps {what}")));
        }
    }
    Ok(())
}

/// A bridge name: an interface name that is not one ferrynet reserves for its other devices
/// (`ferry.VNI` is the agent's VXLAN device, `vf…` are host-side veths).
pub fn validate_bridge_name(name: &str) -> Result<(), NetworkError> {
    validate_ifname("bridge", name)?;
    let vxlan_like = name
        .strip_prefix("ferry.")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if vxlan_like {
        return Err(invalid(
            "bridge",
            name,
            "is the name of ferrynet's VXLAN device (ferry.VNI)",
        ));
    }
    if name.starts_with("vf") && name.len() == 14 {
        return Err(invalid(
            "bridge",
            name,
            "looks like a ferrynet host veth (vf + 12 hex digits)",
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid {field} {value:?}: {why}")]
    Invalid {
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("network {0:?} not found")]
    NotFound(String),
    #[error("network {0:?} already exists")]
    Exists(String),
    #[error("subnet {subnet} overlaps network {other:?} ({other_subnet})")]
    Overlap {
        subnet: Ipv4Net,
        other: String,
        other_subnet: Ipv4Net,
    },
    #[error("bridge {bridge:?} is already used by network {other:?}")]
    BridgeTaken { bridge: String, other: String },
    #[error("state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub fn invalid(field: &'static str, value: impl ToString, why: impl ToString) -> NetworkError {
    NetworkError::Invalid {
        field,
        value: value.to_string(),
        why: why.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub name: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    /// Masquerade traffic leaving the subnet to the host's uplink address.
    #[serde(default = "yes")]
    pub masquerade: bool,
    /// Drop forwarding between this network and other isolated ferrynet networks.
    #[serde(default = "yes")]
    pub isolate: bool,
    /// Hairpin mode on the bridge ports (a container reaching its own published port).
    #[serde(default = "yes")]
    pub hairpin: bool,
    /// Containers may send only from their own MAC and address (anti-spoofing on the port).
    #[serde(default = "yes")]
    pub anti_spoof: bool,
    /// The gateway address sits on the bridge (the CNI bridge plugin's `isGateway`).
    #[serde(default = "yes")]
    pub gateway_on_bridge: bool,
    /// Narrow the addresses handed out to [range_start, range_end].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<Ipv4Addr>,
}

fn yes() -> bool {
    true
}

/// Linux interface names: 1–15 bytes, no '/', ':' or whitespace, not "." or "..".
pub fn validate_ifname(field: &'static str, name: &str) -> Result<(), NetworkError> {
    let why = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 15 {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is not a valid interface name")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        Some("must not contain '/', ':', whitespace or control characters")
    } else {
        None
    };
    match why {
        Some(w) => Err(invalid(field, name, w)),
        None => Ok(()),
    }
}

/// Names of networks and containers: `[A-Za-z0-9][A-Za-z0-9_.-]*` (the CNI container id
/// pattern), so they are safe in file names.
pub fn validate_id(field: &'static str, id: &str) -> Result<(), NetworkError> {
    let mut chars = id.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && id.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            id,
            "must match [A-Za-z0-9][A-Za-z0-9_.-]* (at most 128 characters)",
        ))
    }
}

impl NetworkConfig {
    /// Builds and validates a definition, filling the defaults a user expects: bridge
    /// `ferry-NAME`, gateway = the subnet's first address.
    pub fn new(
        name: &str,
        subnet: Ipv4Net,
        bridge: Option<&str>,
        gateway: Option<Ipv4Addr>,
        mtu: u32,
    ) -> Result<NetworkConfig, NetworkError> {
        let net = NetworkConfig {
            name: name.to_string(),
            bridge: bridge
                .map(str::to_string)
                .unwrap_or(format!("ferry-{name}")),
            subnet,
            gateway: gateway.unwrap_or(first_host(subnet)),
            mtu,
            masquerade: true,
            isolate: true,
            hairpin: true,
            anti_spoof: true,
            gateway_on_bridge: true,
            range_start: None,
            range_end: None,
        };
        net.validate().map_err(|e| match e {
            NetworkError::Invalid { field: "bridge", value, why }
                if bridge.is_none() && value.len() > 15 =>
            {
                invalid(
                    "bridge",
                    value,
                    format!("{why}; the default is ferry-NAME, pick a shorter network name or pass --bridge"),
                )
            }
            e => e,
        })?;
        Ok(net)
    }

    /// Every check a definition must pass before anything is changed for it, whichever entry
    /// point built it (`network create`, a CNI configuration, the demo).
    pub fn validate(&self) -> Result<(), NetworkError> {
        validate_id("network name", &self.name)?;
        validate_bridge_name(&self.bridge)?;
        validate_subnet(self.subnet)?;
        let subnet = self.subnet;
        let is_host = |ip: Ipv4Addr| {
            subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast()
        };
        if !is_host(self.gateway) {
            return Err(invalid(
                "gateway",
                self.gateway,
                format!("is not a host address of {subnet}"),
            ));
        }
        for (field, ip) in [
            ("rangeStart", self.range_start),
            ("rangeEnd", self.range_end),
        ] {
            if let Some(ip) = ip.filter(|ip| !is_host(*ip)) {
                return Err(invalid(
                    field,
                    ip,
                    format!("is not a host address of {subnet}"),
                ));
            }
        }
        if let (Some(start), Some(end)) = (self.range_start, self.range_end) {
            if start > end {
                return Err(invalid(
                    "rangeEnd",
                    end,
                    format!("comes before rangeStart {start}"),
                ));
            }
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(invalid(
                "mtu",
                self.mtu,
                format!("must be between {MIN_MTU} and {MAX_MTU}"),
            ));
        }
        Ok(())
    }

    /// The gateway address with the subnet's prefix, as it sits on the bridge.
    pub fn gateway_net(&self) -> Ipv4Net {
        Ipv4Net::new(self.gateway, self.subnet.prefix_len()).expect("valid prefix")
    }
}

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
            if other.subnet.contains(&net.subnet.network())
                || net.subnet.contains(&other.subnet.network())
            {
                return Err(NetworkError::Overlap {
                    subnet: net.subnet,
                    other: other.name,
                    other_subnet: other.subnet,
                });
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_names_and_subnets() {
        let s: Ipv4Net = "10.90.0.0/24".parse().unwrap();
        let n = NetworkConfig::new("blue", s, None, None, 1500).unwrap();
        assert_eq!(n.bridge, "ferry-blue");
        assert_eq!(n.gateway, Ipv4Addr::new(10, 90, 0, 1));
        assert!(NetworkConfig::new("a-very-long-name", s, None, None, 1500)
            .unwrap_err()
            .to_string()
            .contains("bridge"));
        assert!(
            NetworkConfig::new("x", "10.90.0.1/24".parse().unwrap(), None, None, 1500).is_err()
        );
        assert!(
            NetworkConfig::new("x", "10.90.0.0/31".parse().unwrap(), None, None, 1500).is_err()
        );
        assert!(NetworkConfig::new("../x", s, None, None, 1500).is_err());
        assert!(validate_ifname("ifname", "eth0").is_ok());
        assert!(validate_ifname("ifname", "0123456789abcdef").is_err());
        assert!(validate_ifname("ifname", "a b").is_err());
        assert!(validate_ifname("ifname", "..").is_err());
    }

    #[test]
    fn refuses_overlapping_subnets() {
        let mut r = [0u8; 4];
        crate::util::fill_random(&mut r);
        let root = std::env::temp_dir().join(format!("ferrynet-net-{}", u32::from_ne_bytes(r)));
        let st = StateDir::new(&root);
        let a = NetworkConfig::new("a", "10.90.0.0/24".parse().unwrap(), None, None, 1500).unwrap();
        st.insert(&a).unwrap();
        let b =
            NetworkConfig::new("b", "10.90.0.128/25".parse().unwrap(), None, None, 1500).unwrap();
        assert!(matches!(st.insert(&b), Err(NetworkError::Overlap { .. })));
        assert!(matches!(st.insert(&a), Err(NetworkError::Exists(_))));
        assert_eq!(st.list().unwrap(), vec![a]);
        fs::remove_dir_all(root).unwrap();
    }
}
