//! Subnet leases: which host owns which subnet of the cluster range. A [`Store`] keeps them
//! (etcd for real clusters, [`FileStore`] by default); this module also holds the rules that
//! do not depend on the store: which subnets exist, which one a node gets, which leases are
//! valid enough to route to. Next to the leases the store keeps the objects network policy
//! needs, cluster-wide ([`Collection`]; typed access and the layout in [`objects`]).

pub mod conformance;
mod etcd;
mod file;
pub mod objects;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

pub use etcd::{EtcdStore, EtcdTls};
pub use file::FileStore;

use crate::family::Family;
use crate::netlink::Mac;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unreachable: {0}")]
    Unreachable(String),
    #[error("no free subnet of /{len} left in {network}")]
    Exhausted { network: Ipv4Net, len: u8 },
    #[error(
        "node name {node:?} is already used by a live lease from {other_ip} (this node is {ip})"
    )]
    DuplicateNode {
        node: String,
        other_ip: Ipv4Addr,
        ip: Ipv4Addr,
    },
    #[error("the cluster was created with {existing}; this agent was started with {requested}")]
    ConfigMismatch { existing: String, requested: String },
    #[error("lease for {0} is gone (expired or taken over)")]
    LeaseLost(Ipv4Net),
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    #[error("invalid store address {0:?} (expected file:PATH or etcd://HOST:PORT)")]
    BadUrl(String),
    #[error("no {0}")]
    NotFound(String),
    #[error("invalid object name {0:?} (segments of [A-Za-z0-9_.-] separated by '/')")]
    BadObjectName(String),
    #[error("{0}")]
    Invalid(String),
}

/// The kinds of object kept beside the leases, each under its own key prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Collection {
    Policies,
    Namespaces,
    Endpoints,
}

impl Collection {
    /// The key segment under the store's prefix (etcd) or the section of the file.
    pub fn dir(self) -> &'static str {
        match self {
            Collection::Policies => "policies",
            Collection::Namespaces => "namespaces",
            Collection::Endpoints => "endpoints",
        }
    }
}

/// One collection's objects at one revision: name → JSON text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Objects {
    pub revision: u64,
    pub items: std::collections::BTreeMap<String, String>,
}

/// What an object update does with the current value (`None`: absent): the new value, or
/// `None` to delete it. An error leaves the object as it was.
pub type ObjectChange<'a> = dyn FnMut(Option<&str>) -> Result<Option<String>, StoreError> + 'a;

/// Object names are path-like (`networkpolicy/x/web`) and become etcd keys and file-store
/// entries: no empty segment, no `.` or `..`, only characters that need no escaping.
pub fn check_object_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 512
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadObjectName(name.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    #[default]
    Vxlan,
    HostGw,
    Auto,
    /// Routes announced over BGP by BIRD (see `crate::bgp`).
    Bgp,
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vxlan" => Ok(BackendKind::Vxlan),
            "host-gw" => Ok(BackendKind::HostGw),
            "auto" => Ok(BackendKind::Auto),
            "bgp" => Ok(BackendKind::Bgp),
            _ => Err(format!(
                "unknown backend {s:?} (expected vxlan, host-gw, auto or bgp)"
            )),
        }
    }
}

/// `<prefix>/config`: written by the first agent, checked by every later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub network: Ipv4Net,
    pub subnet_len: u8,
    pub backend: BackendKind,
    /// The IPv6 cluster range of a dual-stack cluster. Each host's IPv6 subnet is the one
    /// with the same index as its IPv4 subnet, so that the IPv4 lease's uniqueness (what the
    /// stores guarantee atomically) is the IPv6 subnet's too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network6: Option<Ipv6Net>,
    #[serde(default = "default_len6")]
    pub subnet_len6: u8,
    /// VXLAN between the hosts' IPv6 underlay addresses instead of their IPv4 ones (70 bytes
    /// of overhead instead of 50). Cluster-wide: every tunnel end must speak the same family.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vxlan_ipv6_underlay: bool,
}

pub const DEFAULT_SUBNET_LEN6: u8 = 64;

fn default_len6() -> u8 {
    DEFAULT_SUBNET_LEN6
}

impl ClusterConfig {
    /// An IPv4-only cluster.
    pub fn v4(network: Ipv4Net, subnet_len: u8, backend: BackendKind) -> ClusterConfig {
        ClusterConfig {
            network,
            subnet_len,
            backend,
            network6: None,
            subnet_len6: DEFAULT_SUBNET_LEN6,
            vxlan_ipv6_underlay: false,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.subnet_len <= self.network.prefix_len() || self.subnet_len > 30 {
            return Err(format!(
                "subnet length /{} must be longer than the cluster range's /{} and at most /30",
                self.subnet_len,
                self.network.prefix_len()
            ));
        }
        if let Some(net6) = self.network6 {
            let (len6, limits) = (self.subnet_len6, Ipv6Addr::SUBNET_PREFIXES);
            if len6 <= net6.prefix_len() || !limits.contains(&len6) {
                return Err(format!(
                    "--subnet-len6 /{len6} must be longer than the IPv6 cluster range's /{} and between /{} and /{}",
                    net6.prefix_len(),
                    limits.start(),
                    limits.end()
                ));
            }
            let (bits4, bits6) = (
                self.subnet_len - self.network.prefix_len(),
                len6 - net6.prefix_len(),
            );
            if bits6 < bits4 {
                return Err(format!(
                    "--cluster-cidr {net6} holds 2^{bits6} subnets of /{len6}, fewer than the 2^{bits4} /{} of {}: every host's IPv4 subnet needs an IPv6 one",
                    self.subnet_len, self.network
                ));
            }
        }
        Ok(())
    }

    /// The IPv6 subnet that goes with an IPv4 subnet of this cluster (same index in each
    /// range); `None` on an IPv4-only cluster or for a subnet outside the range.
    pub fn subnet6_for(&self, subnet: Ipv4Net) -> Option<Ipv6Net> {
        let net6 = self.network6?;
        if subnet.prefix_len() != self.subnet_len || !self.network.contains(&subnet) {
            return None;
        }
        let index = (u32::from(subnet.network()) - u32::from(self.network.network()))
            >> (32 - self.subnet_len);
        let base = u128::from(net6.network()) + ((index as u128) << (128 - self.subnet_len6));
        Ipv6Net::new(Ipv6Addr::from(base), self.subnet_len6).ok()
    }

    /// Every subnet a host may lease. The first one is skipped (as Flannel does), so that the
    /// range's network address never doubles as a host's.
    pub fn subnets(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.network
            .subnets(self.subnet_len)
            .into_iter()
            .flatten()
            .skip(1)
    }
}

/// What a host publishes about itself with its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    pub node: String,
    pub public_ip: Ipv4Addr,
    /// The host's IPv6 underlay address, when it has one (host-gw and BGP route IPv6 via it;
    /// VXLAN carries IPv6 over the IPv4 underlay without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip6: Option<Ipv6Addr>,
    #[serde(default)]
    pub backend: BackendKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<Mac>,
    /// This host's AS when it speaks BGP (backend bgp, or auto with BGP configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_as: Option<u32>,
}

/// `<prefix>/subnets/<ip>-<len>` (keyed by the IPv4 subnet; a dual-stack cluster's lease
/// carries the host's IPv6 subnet in the same record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub subnet: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    #[serde(flatten)]
    pub attrs: LeaseAttrs,
    /// Unix seconds after which the lease is void unless renewed.
    pub expires: u64,
}

/// All leases at one revision of the store.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: u64,
    pub leases: Vec<Lease>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The shared semantics of every store. Implementations are blocking; the agent runs them on
/// its own thread.
pub trait Store: Send {
    /// Writes `requested` if the store has no configuration yet; returns the configuration in
    /// force (an error if it differs).
    fn init_config(&mut self, requested: &ClusterConfig) -> Result<ClusterConfig, StoreError>;
    /// Takes a subnet for `attrs.node`: its current lease if it has one, else `preferred` if
    /// free, else the first free subnet. Atomic against other agents.
    fn acquire(
        &mut self,
        config: &ClusterConfig,
        attrs: &LeaseAttrs,
        preferred: Option<Ipv4Net>,
        ttl: Duration,
    ) -> Result<Lease, StoreError>;
    /// Extends a lease; [`StoreError::LeaseLost`] if it is gone.
    fn renew(&mut self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError>;
    fn release(&mut self, lease: &Lease) -> Result<(), StoreError>;
    /// Live leases.
    fn list(&mut self) -> Result<Snapshot, StoreError>;
    /// Blocks until the store's revision differs from `revision` or `timeout` passes.
    fn wait_for_change(&mut self, revision: u64, timeout: Duration)
        -> Result<Snapshot, StoreError>;

    /// Every object of a collection.
    fn list_objects(&mut self, collection: Collection) -> Result<Objects, StoreError>;
    /// Read-modify-write of one object, atomic against every other writer: `change` sees the
    /// current value and returns the new one (it may run more than once when another writer
    /// wins a race). Returns the value written (`None`: the object is now absent).
    fn update_object(
        &mut self,
        collection: Collection,
        name: &str,
        change: &mut ObjectChange<'_>,
    ) -> Result<Option<String>, StoreError>;

    fn get_object(
        &mut self,
        collection: Collection,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        check_object_name(name)?;
        Ok(self.list_objects(collection)?.items.remove(name))
    }

    fn put_object(
        &mut self,
        collection: Collection,
        name: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        self.update_object(collection, name, &mut |_| Ok(Some(value.to_string())))?;
        Ok(())
    }

    /// Whether the object existed.
    fn delete_object(&mut self, collection: Collection, name: &str) -> Result<bool, StoreError> {
        let mut existed = false;
        self.update_object(collection, name, &mut |current| {
            existed = current.is_some();
            Ok(None)
        })?;
        Ok(existed)
    }
}

pub const DEFAULT_PREFIX: &str = "/ferrynet";

/// Opens `file:PATH` or `etcd://HOST:PORT[,HOST:PORT...]` (keys under `prefix`; over TLS
/// when `tls` is given).
pub fn open(url: &str, prefix: &str, tls: Option<&EtcdTls>) -> Result<Box<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("file:") {
        return Ok(Box::new(FileStore::new(path)));
    }
    if let Some(rest) = url.strip_prefix("etcd://") {
        let endpoints: Vec<String> = rest
            .split(',')
            .filter(|e| !e.is_empty())
            .map(|e| {
                let scheme = if tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", e.trim_end_matches('/'))
            })
            .collect();
        if endpoints.is_empty() {
            return Err(StoreError::BadUrl(url.to_string()));
        }
        return Ok(Box::new(EtcdStore::connect(&endpoints, prefix, tls)?));
    }
    Err(StoreError::BadUrl(url.to_string()))
}

fn check_config(
    existing: ClusterConfig,
    requested: &ClusterConfig,
) -> Result<ClusterConfig, StoreError> {
    if existing == *requested {
        return Ok(existing);
    }
    let show = |c: &ClusterConfig| {
        let v6 = c
            .network6
            .map(|n| format!(" --cluster-cidr {n} --subnet-len6 {}", c.subnet_len6))
            .unwrap_or_default();
        let underlay = if c.vxlan_ipv6_underlay {
            " --vxlan-underlay ipv6"
        } else {
            ""
        };
        format!(
            "--cluster-cidr {} --subnet-len {}{v6} --backend {:?}{underlay}",
            c.network, c.subnet_len, c.backend
        )
    };
    Err(StoreError::ConfigMismatch {
        existing: show(&existing),
        requested: show(requested),
    })
}

/// Picks a subnet for a node among `taken` ones (shared by every store).
pub fn pick_subnet(
    config: &ClusterConfig,
    live: &[Lease],
    attrs: &LeaseAttrs,
    preferred: Option<Ipv4Net>,
) -> Result<Ipv4Net, StoreError> {
    if let Some(mine) = live.iter().find(|l| l.attrs.node == attrs.node) {
        if mine.attrs.public_ip != attrs.public_ip {
            return Err(StoreError::DuplicateNode {
                node: attrs.node.clone(),
                other_ip: mine.attrs.public_ip,
                ip: attrs.public_ip,
            });
        }
        return Ok(mine.subnet);
    }
    let free = |s: &Ipv4Net| !live.iter().any(|l| l.subnet == *s);
    if let Some(p) = preferred {
        if config.subnets().any(|s| s == p) && free(&p) {
            return Ok(p);
        }
    }
    config.subnets().find(free).ok_or(StoreError::Exhausted {
        network: config.network,
        len: config.subnet_len,
    })
}

/// Whether a lease read from the store is safe to route to: inside the cluster range with the
/// cluster's subnet length, not ours, and its public address outside the cluster range. A
/// corrupted or hostile value must never make the agent route the host's own networks away.
pub fn routable(config: &ClusterConfig, own: Option<&Lease>, lease: &Lease) -> Result<(), String> {
    if lease.subnet.prefix_len() != config.subnet_len || !config.network.contains(&lease.subnet) {
        return Err(format!(
            "subnet {} is not a /{} of {}",
            lease.subnet, config.subnet_len, config.network
        ));
    }
    if lease.subnet != lease.subnet.trunc() {
        return Err(format!("subnet {} has host bits set", lease.subnet));
    }
    if config.network.contains(&lease.attrs.public_ip) || lease.attrs.public_ip.is_unspecified() {
        return Err(format!(
            "public address {} is inside the cluster range",
            lease.attrs.public_ip
        ));
    }
    if let (Some(subnet6), Some(_)) = (lease.subnet6, config.network6) {
        if Some(subnet6) != config.subnet6_for(lease.subnet) {
            return Err(format!(
                "IPv6 subnet {subnet6} is not the one of {} in {}",
                lease.subnet,
                config.network6.expect("checked")
            ));
        }
    }
    if let (Some(ip6), Some(net6)) = (lease.attrs.public_ip6, config.network6) {
        if net6.contains(&ip6) || ip6.is_unspecified() || ip6.is_loopback() {
            return Err(format!(
                "public address {ip6} is inside the IPv6 cluster range"
            ));
        }
    }
    if let Some(own) = own {
        if own.subnet == lease.subnet || own.attrs.public_ip == lease.attrs.public_ip {
            return Err("it is this host's own lease".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ClusterConfig {
        ClusterConfig::v4("10.244.0.0/16".parse().unwrap(), 24, BackendKind::Vxlan)
    }

    fn lease(subnet: &str, node: &str, ip: [u8; 4]) -> Lease {
        Lease {
            subnet: subnet.parse().unwrap(),
            subnet6: None,
            attrs: LeaseAttrs {
                node: node.into(),
                public_ip: Ipv4Addr::from(ip),
                public_ip6: None,
                backend: BackendKind::Vxlan,
                vtep_mac: None,
                bgp_as: None,
            },
            expires: u64::MAX,
        }
    }

    #[test]
    fn picks_existing_preferred_or_first_free() {
        let c = cfg();
        let live = vec![lease("10.244.1.0/24", "a", [10, 200, 0, 11])];
        let b = lease("10.244.9.0/24", "b", [10, 200, 0, 12]).attrs;
        assert_eq!(
            pick_subnet(&c, &live, &live[0].attrs, None).unwrap(),
            live[0].subnet
        );
        assert_eq!(
            pick_subnet(&c, &live, &b, None).unwrap().to_string(),
            "10.244.2.0/24"
        );
        assert_eq!(
            pick_subnet(&c, &live, &b, Some("10.244.9.0/24".parse().unwrap()))
                .unwrap()
                .to_string(),
            "10.244.9.0/24"
        );
        let dup = lease("10.244.9.0/24", "a", [10, 200, 0, 99]).attrs;
        assert!(matches!(
            pick_subnet(&c, &live, &dup, None),
            Err(StoreError::DuplicateNode { .. })
        ));
        let tiny = ClusterConfig {
            network: "10.244.0.0/23".parse().unwrap(),
            ..c
        };
        let full = vec![lease("10.244.1.0/24", "a", [10, 200, 0, 11])];
        assert!(matches!(
            pick_subnet(&tiny, &full, &b, None),
            Err(StoreError::Exhausted { .. })
        ));
    }

    #[test]
    fn refuses_hostile_leases() {
        let c = cfg();
        let own = lease("10.244.1.0/24", "a", [10, 200, 0, 11]);
        assert!(routable(
            &c,
            Some(&own),
            &lease("10.244.2.0/24", "b", [10, 200, 0, 12])
        )
        .is_ok());
        assert!(routable(
            &c,
            Some(&own),
            &lease("10.200.0.0/24", "b", [10, 200, 0, 12])
        )
        .is_err());
        assert!(routable(
            &c,
            Some(&own),
            &lease("10.244.0.0/16", "b", [10, 200, 0, 12])
        )
        .is_err());
        assert!(routable(
            &c,
            Some(&own),
            &lease("10.244.3.0/24", "b", [10, 244, 5, 1])
        )
        .is_err());
        assert!(routable(
            &c,
            Some(&own),
            &lease("10.244.1.0/24", "b", [10, 200, 0, 13])
        )
        .is_err());
        assert!(routable(&c, Some(&own), &lease("10.244.4.0/24", "b", [0, 0, 0, 0])).is_err());
    }

    #[test]
    fn ipv6_subnets_follow_the_ipv4_index() {
        let c = ClusterConfig {
            network6: Some("fd00:244::/56".parse().unwrap()),
            ..cfg()
        };
        c.validate().unwrap();
        assert_eq!(
            c.subnet6_for("10.244.1.0/24".parse().unwrap())
                .unwrap()
                .to_string(),
            "fd00:244:0:1::/64"
        );
        assert_eq!(
            c.subnet6_for("10.244.255.0/24".parse().unwrap())
                .unwrap()
                .to_string(),
            "fd00:244:0:ff::/64"
        );
        assert!(c.subnet6_for("10.245.1.0/24".parse().unwrap()).is_none());
        let small = ClusterConfig {
            network6: Some("fd00:244::/60".parse().unwrap()),
            ..cfg()
        };
        assert!(small.validate().unwrap_err().contains("fewer than"));
        let long = ClusterConfig {
            subnet_len6: 124,
            ..c
        };
        assert!(long.validate().unwrap_err().contains("--subnet-len6"));
        // A lease whose IPv6 subnet does not go with its IPv4 one is not routed.
        let mut l = lease("10.244.2.0/24", "b", [10, 200, 0, 12]);
        l.subnet6 = c.subnet6_for(l.subnet);
        assert!(routable(&c, None, &l).is_ok());
        l.subnet6 = Some("fd00:244:0:9::/64".parse().unwrap());
        assert!(routable(&c, None, &l).is_err());
        l.subnet6 = c.subnet6_for(l.subnet);
        l.attrs.public_ip6 = Some("fd00:244:0:3::1".parse().unwrap());
        assert!(routable(&c, None, &l).is_err());
    }
}
