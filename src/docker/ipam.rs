//! Docker's IPAM remote driver protocol (`docker network create --ipam-driver ferrynet`),
//! served by ferrynet's own IPAM: a pool is a subnet (optionally narrowed by `--ip-range`),
//! its addresses are reservations in an [`Ipam`] directory, the same crash-safe files the
//! networks' endpoints use. `--ipam-opt subnet=auto` is this host's subnet as the agent leased
//! it (the `subnet.env` it writes, which the CNI plugin's `"subnet": "auto"` reads too), so
//! containers of Docker hosts in one cluster get addresses the agents route between hosts.
//!
//! A pool's record (subnet, range, gateway) is configuration and lives under the state root:
//! Docker never replays RequestPool. Container addresses are runtime state (the run dir), like
//! endpoints. Errors go in the protocol's `"Error"` field (not the network driver's `"Err"`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::family::Family;
use crate::ipam::{Ipam, Pool};
use crate::network::{overlaps, validate_id, StateDir};
use crate::util::{create_exclusive, ensure_dir, read_if_exists, remove_if_exists, write_atomic};

/// What Docker asks for a gateway's address with (RequestAddress's Options).
const GATEWAY_REQUEST: &str = "com.docker.network.gateway";

#[derive(Debug, Deserialize)]
pub struct RequestPoolRequest {
    #[serde(rename = "Pool", default)]
    pub pool: String,
    #[serde(rename = "SubPool", default)]
    pub sub_pool: String,
    #[serde(rename = "Options", default)]
    pub options: Option<Map<String, Value>>,
    #[serde(rename = "V6", default)]
    pub v6: bool,
}

#[derive(Debug, Deserialize)]
pub struct PoolRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// RequestAddress and ReleaseAddress.
#[derive(Debug, Deserialize)]
pub struct AddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Options", default)]
    pub options: Option<Map<String, Value>>,
}

/// One pool handed to Docker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerPool {
    pub id: String,
    pub subnet: IpNet,
    /// `--ip-range`: where addresses Docker does not name come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// `--ipam-opt subnet=auto`: the agent's lease for this host.
    #[serde(default)]
    pub auto: bool,
}

pub struct DockerIpam {
    state: StateDir,
    /// The agent's subnet.env (`ferrynet agent --subnet-file`).
    subnet_file: PathBuf,
}

type Reply = Result<Value, String>;

impl DockerIpam {
    pub fn new(state: StateDir, subnet_file: PathBuf) -> DockerIpam {
        DockerIpam { state, subnet_file }
    }

    pub fn call(&self, method: &str, body: &[u8]) -> Option<Reply> {
        Some(match method {
            "IpamDriver.GetCapabilities" => Ok(json!({
                "RequiresMACAddress": false,
                "RequiresRequestReplay": false,
            })),
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": "local",
                "GlobalDefaultAddressSpace": "global",
            })),
            "IpamDriver.RequestPool" => {
                super::plugin::parse(body).and_then(|r| self.request_pool(r))
            }
            "IpamDriver.ReleasePool" => {
                super::plugin::parse(body).and_then(|r| self.release_pool(r))
            }
            "IpamDriver.RequestAddress" => {
                super::plugin::parse(body).and_then(|r| self.request_address(r))
            }
            "IpamDriver.ReleaseAddress" => {
                super::plugin::parse(body).and_then(|r| self.release_address(r))
            }
            _ => return None,
        })
    }

    fn pools_dir(&self) -> PathBuf {
        self.state.root().join("docker").join("pools")
    }

    fn pool_path(&self, id: &str) -> Result<PathBuf, String> {
        validate_id("pool id", id).map_err(|e| e.to_string())?;
        Ok(self.pools_dir().join(format!("{id}.json")))
    }

    /// Where a pool's address reservations are.
    fn addresses_dir(&self, id: &str) -> PathBuf {
        self.state.run_dir().join("docker-ipam").join(id)
    }

    fn pool(&self, id: &str) -> Result<DockerPool, String> {
        let p = self.pool_path(id)?;
        let data = read_if_exists(&p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .ok_or_else(|| format!("pool {id} is not a pool of this ferrynet IPAM driver"))?;
        serde_json::from_slice(&data).map_err(|e| format!("{}: {e}", p.display()))
    }

    fn pools(&self) -> Result<Vec<DockerPool>, String> {
        let dir = self.pools_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json").filter(|n| !n.starts_with('.')) {
                out.push(self.pool(id)?);
            }
        }
        Ok(out)
    }

    fn request_pool(&self, r: RequestPoolRequest) -> Reply {
        let family = if r.v6 { "IPv6" } else { "IPv4" };
        let mut auto = false;
        for (key, value) in r.options.iter().flatten() {
            match (key.as_str(), value.as_str()) {
                ("subnet", Some("auto")) => auto = true,
                ("subnet", _) => {
                    return Err(format!(
                        "invalid --ipam-opt subnet={value}: ferrynet takes subnet=auto (this host's leased subnet) or --subnet"
                    ))
                }
                (k, _) if k.starts_with("com.docker.") => {}
                (k, _) => {
                    return Err(format!(
                        "unknown --ipam-opt {k}: ferrynet takes subnet=auto"
                    ))
                }
            }
        }
        let subnet: IpNet = match (r.pool.as_str(), auto) {
            ("", true) => self.leased(r.v6)?,
            ("", false) => {
                return Err(format!(
                    "no {family} --subnet: give one, or --ipam-opt subnet=auto for this host's leased subnet"
                ))
            }
            (_, true) => {
                return Err("--subnet and --ipam-opt subnet=auto exclude each other".into())
            }
            (s, false) => s
                .parse()
                .map_err(|_| format!("invalid --subnet {s:?}"))?,
        };
        if subnet.addr().is_ipv6() != r.v6 {
            return Err(format!("--subnet {subnet} is not an {family} subnet"));
        }
        let subnet = subnet.trunc();
        let range = match r.sub_pool.as_str() {
            "" => None,
            s => {
                let range: IpNet = s.parse().map_err(|_| format!("invalid --ip-range {s:?}"))?;
                if !subnet.contains(&range) {
                    return Err(format!(
                        "--ip-range {range} is not inside --subnet {subnet}"
                    ));
                }
                Some(range.trunc())
            }
        };
        for other in self.pools()? {
            if overlaps(other.subnet, subnet) {
                return Err(format!(
                    "subnet {subnet} overlaps {} of another Docker network",
                    other.subnet
                ));
            }
        }
        for net in self.state.list().map_err(|e| e.to_string())? {
            if let Some(o) = net.subnets().into_iter().find(|o| overlaps(*o, subnet)) {
                return Err(format!(
                    "subnet {subnet} overlaps network {:?} ({o})",
                    net.name
                ));
            }
        }
        let pool = DockerPool {
            id: pool_id(subnet),
            subnet,
            range,
            gateway: None,
            auto,
        };
        let dir = self.pools_dir();
        let p = self.pool_path(&pool.id)?;
        let data = serde_json::to_vec_pretty(&pool).expect("serializable");
        ensure_dir(&dir)
            .and_then(|()| create_exclusive(&p, &data))
            .map_err(|e| format!("{}: {e}", p.display()))?;
        tracing::info!(pool = pool.id.as_str(), auto, "pool requested");
        Ok(json!({ "PoolID": pool.id, "Pool": subnet.to_string(), "Data": {} }))
    }

    /// This host's leased subnet of a family, from the agent's subnet.env.
    fn leased(&self, v6: bool) -> Result<IpNet, String> {
        let path = &self.subnet_file;
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "--ipam-opt subnet=auto, but no subnet is leased ({}: {e}); is the ferrynet agent running?",
                path.display()
            )
        })?;
        leased_subnet(&text, v6).ok_or_else(|| {
            format!(
                "--ipam-opt subnet=auto: {} leases no {} subnet",
                path.display(),
                if v6 { "IPv6" } else { "IPv4" }
            )
        })
    }

    /// Replaces a pool's record atomically.
    fn save(&self, pool: &DockerPool) -> Result<(), String> {
        let p = self.pool_path(&pool.id)?;
        let data = serde_json::to_vec_pretty(pool).expect("serializable");
        write_atomic(&p, &data).map_err(|e| format!("{}: {e}", p.display()))
    }

    /// At start-up: releases the addresses of each pool that the daemon's network of that
    /// subnet does not use (a call cut short between Docker's RequestAddress and its
    /// CreateEndpoint). In use: the containers' addresses, the auxiliary ones, the gateway. A
    /// pool without a Docker network is left alone (`docker network rm` releases it).
    pub fn collect_garbage(&self, networks: &[Value]) {
        let Ok(pools) = self.pools() else {
            return;
        };
        for pool in pools {
            let Some(used) = used_addresses(networks, pool.subnet) else {
                continue;
            };
            let dir = self.addresses_dir(&pool.id);
            let released = match pool.subnet {
                IpNet::V4(s) => gc::<std::net::Ipv4Addr>(&dir, &pool, s, &used),
                IpNet::V6(s) => gc::<std::net::Ipv6Addr>(&dir, &pool, s, &used),
            };
            match released {
                Ok(r) if r.is_empty() => {}
                Ok(r) => {
                    tracing::info!(pool = pool.id.as_str(), released = ?r, "released addresses Docker no longer has")
                }
                Err(e) => tracing::warn!(
                    pool = pool.id.as_str(),
                    error = e.as_str(),
                    "address garbage collection failed"
                ),
            }
        }
    }

    fn release_pool(&self, r: PoolRequest) -> Reply {
        let p = self.pool_path(&r.pool_id)?;
        let dir = self.addresses_dir(&r.pool_id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("{}: {e}", dir.display()))
            }
            _ => {}
        }
        remove_if_exists(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(json!({}))
    }

    fn request_address(&self, r: AddressRequest) -> Reply {
        let mut pool = self.pool(&r.pool_id)?;
        let wanted: Option<IpAddr> = match r.address.as_str() {
            "" => None,
            a => Some(
                a.parse::<IpNet>()
                    .map(|n| n.addr())
                    .or_else(|_| a.parse())
                    .map_err(|_| format!("invalid address {a:?}"))?,
            ),
        };
        let gateway = r
            .options
            .as_ref()
            .and_then(|o| o.get("RequestAddressType"))
            .and_then(Value::as_str)
            == Some(GATEWAY_REQUEST);
        let ip = if gateway {
            // The gateway is the pool's, not a reservation: the pool keeps it out.
            let ip = wanted.unwrap_or_else(|| first_host(pool.subnet));
            check_in(&pool, ip)?;
            pool.gateway = Some(ip);
            self.save(&pool)?;
            ip
        } else {
            let dir = self.addresses_dir(&pool.id);
            let ip = match (pool.subnet, wanted) {
                (IpNet::V4(s), w) => allocate::<std::net::Ipv4Addr>(&dir, &pool, s, w)?,
                (IpNet::V6(s), w) => allocate::<std::net::Ipv6Addr>(&dir, &pool, s, w)?,
            };
            // A crash here leaves a reservation Docker never heard of: the GC's.
            crate::failpoint::hit("docker.address").map_err(|e| e.to_string())?;
            ip
        };
        Ok(json!({
            "Address": format!("{ip}/{}", pool.subnet.prefix_len()),
            "Data": {},
        }))
    }

    fn release_address(&self, r: AddressRequest) -> Reply {
        let mut pool = self.pool(&r.pool_id)?;
        let ip: IpAddr = r
            .address
            .parse::<IpNet>()
            .map(|n| n.addr())
            .or_else(|_| r.address.parse())
            .map_err(|_| format!("invalid address {:?}", r.address))?;
        if pool.gateway == Some(ip) {
            pool.gateway = None;
            return self.save(&pool).map(|()| json!({}));
        }
        let dir = self.addresses_dir(&pool.id);
        match (pool.subnet, ip) {
            (IpNet::V4(s), IpAddr::V4(ip)) => release(&dir, &pool, s, ip)?,
            (IpNet::V6(s), IpAddr::V6(ip)) => release(&dir, &pool, s, ip)?,
            _ => return Err(format!("address {ip} is not of pool {}", pool.subnet)),
        }
        Ok(json!({}))
    }
}

/// A pool's id: its subnet in characters a file name and Docker both take.
fn pool_id(subnet: IpNet) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix_len()).replace(':', "_")
}

fn first_host(subnet: IpNet) -> IpAddr {
    match subnet {
        IpNet::V4(s) => IpAddr::V4(crate::network::first_host(s)),
        IpNet::V6(s) => IpAddr::V6(crate::network::first_host(s)),
    }
}

/// An address of the subnet a host may have (not the network or broadcast address).
fn check_in(pool: &DockerPool, ip: IpAddr) -> Result<(), String> {
    match (pool.subnet, ip) {
        (IpNet::V4(s), IpAddr::V4(ip)) => Pool::new(s, None).check(ip).map_err(|e| e.to_string()),
        (IpNet::V6(s), IpAddr::V6(ip)) => Pool::new(s, None).check(ip).map_err(|e| e.to_string()),
        _ => Err(format!("address {ip} is not of pool {}", pool.subnet)),
    }
}

/// The pool's addresses in a family: the whole subnet (for addresses Docker names, as its own
/// IPAM allows them outside `--ip-range`), or the range (for the next free one).
fn family_pool<A: Family>(pool: &DockerPool, subnet: A::Net, ranged: bool) -> Pool<A> {
    let gateway = pool.gateway.and_then(|g| to_family::<A>(g));
    let mut p = Pool::new(subnet, gateway);
    if let (true, Some(range)) = (ranged, pool.range) {
        let (lo, hi) = (range.network(), range.broadcast());
        if let (Some(lo), Some(hi)) = (to_family::<A>(lo), to_family::<A>(hi)) {
            p.start = p.start.max(lo);
            p.end = p.end.min(hi);
        }
    }
    p
}

fn to_family<A: Family>(ip: IpAddr) -> Option<A> {
    match ip {
        IpAddr::V4(v4) => A::from_bytes(&v4.octets()).filter(|_| A::MAX_PREFIX == 32),
        IpAddr::V6(v6) => A::from_bytes(&v6.octets()).filter(|_| A::MAX_PREFIX == 128),
    }
}

/// A reservation's key: Docker's calls name no endpoint, so each address gets its own.
fn fresh_key() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("docker-{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn allocate<A: Family>(
    dir: &Path,
    pool: &DockerPool,
    subnet: A::Net,
    wanted: Option<IpAddr>,
) -> Result<IpAddr, String> {
    let wanted = match wanted {
        None => None,
        Some(ip) => Some(
            to_family::<A>(ip)
                .ok_or_else(|| format!("address {ip} is not of pool {}", pool.subnet))?,
        ),
    };
    let ipam = Ipam::new(dir, family_pool::<A>(pool, subnet, wanted.is_none()));
    ipam.allocate(&fresh_key(), wanted)
        .map(Into::into)
        .map_err(|e| e.to_string())
}

fn release<A: Family>(dir: &Path, pool: &DockerPool, subnet: A::Net, ip: A) -> Result<(), String> {
    let ipam = Ipam::new(dir, family_pool::<A>(pool, subnet, false));
    if let Some(key) = ipam.owner(ip).map_err(|e| e.to_string())? {
        ipam.release(&key).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The addresses Docker's network of `subnet` uses, None when it has no such network.
fn used_addresses(networks: &[Value], subnet: IpNet) -> Option<Vec<IpAddr>> {
    let addr = |v: &Value| -> Option<IpAddr> {
        let s = v.as_str()?;
        s.parse::<IpNet>()
            .map(|n| n.addr())
            .or_else(|_| s.parse())
            .ok()
    };
    let net = networks.iter().find(|n| {
        n["IPAM"]["Config"].as_array().is_some_and(|c| {
            c.iter().any(|c| {
                c["Subnet"]
                    .as_str()
                    .and_then(|s| s.parse::<IpNet>().ok())
                    .is_some_and(|s| s.trunc() == subnet)
            })
        })
    })?;
    let mut used = Vec::new();
    for c in net["Containers"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        used.extend(addr(&c["IPv4Address"]));
        used.extend(addr(&c["IPv6Address"]));
    }
    for c in net["IPAM"]["Config"].as_array().into_iter().flatten() {
        used.extend(addr(&c["Gateway"]));
        for a in c["AuxiliaryAddresses"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            used.extend(addr(a));
        }
    }
    Some(used)
}

fn gc<A: Family>(
    dir: &Path,
    pool: &DockerPool,
    subnet: A::Net,
    used: &[IpAddr],
) -> Result<Vec<String>, String> {
    let ipam = Ipam::new(dir, family_pool::<A>(pool, subnet, false));
    let mut released = Vec::new();
    for (ip, key) in ipam.reservations().map_err(|e| e.to_string())? {
        if !used.contains(&ip.into()) {
            ipam.release(&key).map_err(|e| e.to_string())?;
            released.push(ip.to_string());
        }
    }
    Ok(released)
}

/// FERRYNET_SUBNET (or FERRYNET_SUBNET6) of the agent's subnet.env.
fn leased_subnet(text: &str, v6: bool) -> Option<IpNet> {
    let key = if v6 {
        "FERRYNET_SUBNET6"
    } else {
        "FERRYNET_SUBNET"
    };
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .and_then(|(_, v)| v.trim().parse::<IpNet>().ok())
        .map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam() -> (DockerIpam, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "ferrynet-docker-ipam-{}-{}",
            std::process::id(),
            fresh_key()
        ));
        let state = StateDir::new(&dir);
        let env = state.run_dir().join("subnet.env");
        (DockerIpam::new(state, env), dir)
    }

    fn call(i: &DockerIpam, method: &str, body: Value) -> Reply {
        i.call(method, body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn pools_addresses_ranges_and_gateways() {
        let (i, dir) = ipam();
        let pool = call(
            &i,
            "IpamDriver.RequestPool",
            json!({"Pool": "10.90.0.0/24", "SubPool": "10.90.0.128/30", "V6": false}),
        )
        .unwrap();
        let id = pool["PoolID"].as_str().unwrap().to_string();
        assert_eq!(pool["Pool"], "10.90.0.0/24");
        // Overlaps are refused.
        let e = call(
            &i,
            "IpamDriver.RequestPool",
            json!({"Pool": "10.90.0.0/16"}),
        )
        .unwrap_err();
        assert!(e.contains("overlaps"), "{e}");
        let addr = |a: &str, gw: bool| {
            let opts = if gw {
                json!({"RequestAddressType": GATEWAY_REQUEST})
            } else {
                json!({})
            };
            call(
                &i,
                "IpamDriver.RequestAddress",
                json!({"PoolID": id, "Address": a, "Options": opts}),
            )
            .map(|v| v["Address"].as_str().unwrap().to_string())
        };
        assert_eq!(addr("", true).unwrap(), "10.90.0.1/24");
        // The range's four addresses are all the subnet's hosts (as with Docker's own IPAM).
        for last in 128..=131 {
            assert_eq!(addr("", false).unwrap(), format!("10.90.0.{last}/24"));
        }
        assert!(addr("", false).unwrap_err().contains("no free address"));
        // A named address may lie outside the range, not twice, not on the gateway.
        assert_eq!(addr("10.90.0.50", false).unwrap(), "10.90.0.50/24");
        assert!(addr("10.90.0.50", false).unwrap_err().contains("in use"));
        assert!(addr("10.90.0.1", false).is_err());
        assert!(addr("10.91.0.1", false).is_err());
        call(
            &i,
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": id, "Address": "10.90.0.129/24"}),
        )
        .unwrap();
        assert_eq!(addr("", false).unwrap(), "10.90.0.129/24");
        call(&i, "IpamDriver.ReleasePool", json!({"PoolID": id})).unwrap();
        assert!(call(
            &i,
            "IpamDriver.RequestPool",
            json!({"Pool": "10.90.0.0/16"})
        )
        .is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn options_and_leases() {
        let (i, dir) = ipam();
        let e = call(&i, "IpamDriver.RequestPool", json!({"Pool": ""})).unwrap_err();
        assert!(e.contains("no IPv4 --subnet"), "{e}");
        let auto = json!({"Pool": "", "Options": {"subnet": "auto"}});
        let e = call(&i, "IpamDriver.RequestPool", auto.clone()).unwrap_err();
        assert!(e.contains("is the ferrynet agent running"), "{e}");
        let e = call(
            &i,
            "IpamDriver.RequestPool",
            json!({"Pool": "10.1.0.0/24", "Options": {"colour": "red"}}),
        )
        .unwrap_err();
        assert!(e.contains("unknown --ipam-opt colour"), "{e}");
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::write(
            dir.join("run/subnet.env"),
            "FERRYNET_NETWORK=10.244.0.0/16\nFERRYNET_SUBNET=10.244.3.1/24\nFERRYNET_MTU=1450\n",
        )
        .unwrap();
        let pool = call(&i, "IpamDriver.RequestPool", auto).unwrap();
        assert_eq!(pool["Pool"], "10.244.3.0/24");
        assert_eq!(
            leased_subnet("FERRYNET_SUBNET6=fd00:1:2::1/64", true)
                .unwrap()
                .to_string(),
            "fd00:1:2::/64"
        );
        assert_eq!(pool_id("fd00:1::/64".parse().unwrap()), "fd00_1__-64");
        let _ = std::fs::remove_dir_all(dir);
    }
}
