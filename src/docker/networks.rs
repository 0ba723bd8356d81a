//! Docker networks: CreateNetwork and DeleteNetwork as ferrynet networks, the side record
//! mapping a Docker network's id to its ferrynet network, and learning its Docker name.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::api::*;
use super::plugin::{Plugin, Reply};
use crate::bridge::default_mtu;
use crate::netlink::Handle;
use crate::network::{validate_bridge_name, validate_id, NetworkConfig, StateDir};
use crate::util::{create_exclusive, ensure_dir, read_if_exists, remove_if_exists, write_atomic};

/// The options a Docker network of ferrynet takes (`-o KEY=VALUE`).
pub const OPTIONS: &[&str] = &[
    "ferrynet.name",
    "ferrynet.bridge",
    "ferrynet.masquerade",
    "ferrynet.isolate",
    "ferrynet.mtu",
    "ferrynet.big_tcp",
];

/// A Docker network's side record: which ferrynet network it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DockerNetwork {
    pub id: String,
    /// The ferrynet network's name.
    pub network: String,
    /// `docker network create --internal`: no masquerade, no default route.
    #[serde(default)]
    pub internal: bool,
    /// The Docker network's name, once learnt from the daemon (CreateNetwork does not carry
    /// it, and the daemon knows it only after that call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_name: Option<String>,
}

impl Plugin {
    /// Learns the Docker network's name and, while the ferrynet network has the default
    /// name (the short id) and no endpoint ever, renames it to that name — unless a ferrynet
    /// network has that name already: then it keeps the id. True when there is nothing left to
    /// learn. Errors only delay it (the daemon may be busy): they are logged.
    pub(super) fn learn_name(&self, id: &str) -> bool {
        let mut rec = match self.record(id) {
            Ok(Some(rec)) if rec.docker_name.is_none() => rec,
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(id, error = e.as_str(), "reading the network's record");
                return false;
            }
        };
        let name = match self.docker.network_name(id) {
            Ok(Some(name)) => name,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(id, error = %e, "asking the Docker daemon for the network's name");
                return false;
            }
        };
        let short = short_id(id);
        let renamed = if rec.network == short && name != short {
            match self.rename(&rec, &name) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(
                        id,
                        name,
                        error = e.as_str(),
                        "the network keeps its id as its name"
                    );
                    false
                }
            }
        } else {
            // Finishes a rename interrupted after the records moved.
            if rec.network == name {
                self.remove_copy(short, &name);
            }
            false
        };
        if renamed {
            rec.network = name.clone();
        }
        rec.docker_name = Some(name);
        match self.write_record(&rec) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(id, error = e.as_str(), "recording the network's name");
                false
            }
        }
    }

    /// The ferrynet network `rec.network` becomes `new`: a copy under the new name, the side
    /// record pointing at it, the old record gone (each step safe to crash after).
    fn rename(&self, rec: &DockerNetwork, new: &str) -> Result<(), String> {
        let _lock = self.state().lock_networks().map_err(|e| e.to_string())?;
        self.state()
            .copy_as(&rec.network, new)
            .map_err(|e| e.to_string())?;
        let moved = DockerNetwork {
            network: new.to_string(),
            ..rec.clone()
        };
        self.write_record(&moved)?;
        self.state()
            .remove(&rec.network)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            id = rec.id.as_str(),
            from = rec.network.as_str(),
            to = new,
            "network renamed"
        );
        Ok(())
    }

    /// Removes the record `old` if it is the same network as `current` under another name.
    fn remove_copy(&self, old: &str, current: &str) {
        let Ok(_lock) = self.state().lock_networks() else {
            return;
        };
        if let (Ok(mut o), Ok(c)) = (self.state().load(old), self.state().load(current)) {
            o.name = c.name.clone();
            if o == c {
                let _ = self.state().remove(old);
            }
        }
    }

    fn write_record(&self, rec: &DockerNetwork) -> Result<(), String> {
        let p = self.record_path(&rec.id)?;
        let data = serde_json::to_vec_pretty(rec).expect("serializable");
        write_atomic(&p, &data).map_err(|e| format!("{}: {e}", p.display()))
    }

    pub(super) fn state(&self) -> &StateDir {
        self.driver.state()
    }

    pub(super) fn docker_dir(&self) -> PathBuf {
        self.state().root().join("docker").join("networks")
    }

    fn record_path(&self, id: &str) -> Result<PathBuf, String> {
        validate_id("network id", id).map_err(|e| e.to_string())?;
        Ok(self.docker_dir().join(format!("{id}.json")))
    }

    pub(super) fn record(&self, id: &str) -> Result<Option<DockerNetwork>, String> {
        let p = self.record_path(id)?;
        match read_if_exists(&p).map_err(|e| format!("{}: {e}", p.display()))? {
            None => Ok(None),
            Some(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display())),
        }
    }

    /// The Docker network's ferrynet network, or an error naming the id.
    pub(super) fn network(&self, id: &str) -> Result<(DockerNetwork, NetworkConfig), String> {
        let rec = self
            .record(id)?
            .ok_or_else(|| format!("network {id} is not a network of this ferrynet plugin"))?;
        let net = self.state().load(&rec.network).map_err(|e| e.to_string())?;
        Ok((rec, net))
    }

    pub(super) fn create_network(&self, r: CreateNetworkRequest) -> Reply {
        let id = r.network_id;
        if self.record(&id)?.is_some() {
            return Ok(json!({}));
        }
        let opts = NetOptions::parse(r.options.as_ref())?;
        let (subnet4, gw4) = one_pool("IPv4Data", r.ipv4_data.as_deref(), false)?;
        let (subnet6, gw6) = one_pool("IPv6Data", r.ipv6_data.as_deref(), true)?;
        let subnets: Vec<IpNet> = subnet4.into_iter().chain(subnet6).collect();
        let gateways: Vec<IpAddr> = gw4.into_iter().chain(gw6).collect();
        let short = short_id(&id);
        let name = opts.name.clone().unwrap_or_else(|| short.to_string());
        let bridge = opts.bridge.clone().unwrap_or_else(|| {
            let ferry = format!("ferry-{name}");
            if ferry.len() <= 15 {
                ferry
            } else {
                format!("fd-{short}")
            }
        });
        let mut net = NetworkConfig::new(
            &name,
            &subnets,
            Some(&bridge),
            &gateways,
            opts.mtu.unwrap_or_else(default_mtu),
        )
        .map_err(|e| e.to_string())?;
        net.masquerade = opts.masquerade.unwrap_or(true) && !opts.internal;
        net.isolate = opts.isolate.unwrap_or(true);
        net.big_tcp = opts.big_tcp.unwrap_or(false);
        let rec = DockerNetwork {
            id: id.clone(),
            network: name,
            internal: opts.internal,
            docker_name: None,
        };
        let mut h = Handle::new().map_err(|e| e.to_string())?;
        // The driver validates everything (the subnet against every other network too)
        // before its first change; a refused network leaves nothing, not even a directory.
        self.driver
            .create_network(&mut h, &net)
            .map_err(|e| e.to_string())?;
        let p = self.record_path(&id)?;
        let data = serde_json::to_vec_pretty(&rec).expect("serializable");
        let dir = self.docker_dir();
        if let Err(e) = ensure_dir(&dir).and_then(|()| create_exclusive(&p, &data)) {
            let _ = self.driver.remove_network(&net);
            let _ = self.state().remove(&net.name);
            return Err(format!("{}: {e}", p.display()));
        }
        tracing::info!(
            id = id.as_str(),
            network = net.name.as_str(),
            bridge = net.bridge.as_str(),
            "network created"
        );
        Ok(json!({}))
    }

    pub(super) fn delete_network(&self, r: NetworkRequest) -> Reply {
        let Some(rec) = self.record(&r.network_id)? else {
            return Ok(json!({}));
        };
        match self.state().load(&rec.network) {
            Ok(net) => {
                let _lock = self.state().lock_networks().map_err(|e| e.to_string())?;
                for ep in self
                    .driver
                    .endpoints(&net.name)
                    .map_err(|e| e.to_string())?
                {
                    self.driver
                        .detach(&net, &ep.container_id, &ep.ifname)
                        .map_err(|e| e.to_string())?;
                }
                self.driver
                    .remove_network(&net)
                    .map_err(|e| e.to_string())?;
                self.state().remove(&net.name).map_err(|e| e.to_string())?;
            }
            Err(crate::network::NetworkError::NotFound(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        let p = self.record_path(&r.network_id)?;
        remove_if_exists(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(json!({}))
    }
}

/// Docker's short form of an id: the ferrynet network's name until the Docker name is known.
fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// At most one pool of a family (ferrynet networks have one subnet per family): its subnet
/// and gateway.
fn one_pool(
    field: &str,
    pools: Option<&[IpamData]>,
    v6: bool,
) -> Result<(Option<IpNet>, Option<IpAddr>), String> {
    let pools: Vec<&IpamData> = pools
        .unwrap_or_default()
        .iter()
        .filter(|p| p.pool.as_deref().is_some_and(|s| !s.is_empty()))
        .collect();
    let pool = match pools.as_slice() {
        [] => return Ok((None, None)),
        [p] => p,
        _ => {
            return Err(format!(
                "{field}: {} subnets of one family; a ferrynet network has at most one IPv4 and one IPv6 subnet",
                pools.len()
            ))
        }
    };
    let s = pool.pool.as_deref().unwrap_or_default();
    let subnet: IpNet = s
        .parse()
        .map_err(|_| format!("invalid subnet {s:?} in {field}"))?;
    if subnet.addr().is_ipv6() != v6 {
        return Err(format!("subnet {s:?} is of the wrong family for {field}"));
    }
    let gateway = match pool.gateway.as_deref() {
        None | Some("") => None,
        Some(g) => Some(
            g.parse::<IpNet>()
                .map(|n| n.addr())
                .or_else(|_| g.parse::<IpAddr>())
                .map_err(|_| format!("invalid gateway {g:?} in {field}"))?,
        ),
    };
    Ok((Some(subnet), gateway))
}

/// What `docker network create` passed: `--internal` and the `-o` options.
#[derive(Debug, Default, PartialEq)]
struct NetOptions {
    name: Option<String>,
    bridge: Option<String>,
    masquerade: Option<bool>,
    isolate: Option<bool>,
    big_tcp: Option<bool>,
    mtu: Option<u32>,
    internal: bool,
}

impl NetOptions {
    fn parse(opts: Option<&Options>) -> Result<NetOptions, String> {
        let mut o = NetOptions::default();
        let Some(opts) = opts else {
            return Ok(o);
        };
        o.internal = truthy(opts.get("com.docker.network.internal"));
        let generic = match opts.get("com.docker.network.generic") {
            Some(Value::Object(m)) => m.clone(),
            _ => Default::default(),
        };
        for (key, value) in &generic {
            let v = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let bad = |why: &str| format!("invalid option {key}={v:?}: {why}");
            match key.as_str() {
                "ferrynet.name" => {
                    validate_id("network name", &v).map_err(|_| {
                        bad("must match [A-Za-z0-9][A-Za-z0-9_.-]* (at most 128 characters)")
                    })?;
                    o.name = Some(v);
                }
                "ferrynet.bridge" => {
                    validate_bridge_name(&v).map_err(|e| bad(&e.to_string()))?;
                    o.bridge = Some(v);
                }
                "ferrynet.masquerade" => {
                    o.masquerade = Some(boolean(&v).ok_or_else(|| bad("expected true or false"))?)
                }
                "ferrynet.isolate" => {
                    o.isolate = Some(boolean(&v).ok_or_else(|| bad("expected true or false"))?)
                }
                "ferrynet.big_tcp" => {
                    o.big_tcp = Some(boolean(&v).ok_or_else(|| bad("expected true or false"))?)
                }
                "ferrynet.mtu" | "com.docker.network.driver.mtu" => {
                    let mtu = v
                        .parse::<u32>()
                        .map_err(|_| bad("not a number (expected an MTU, e.g. 1450)"))?;
                    let (min, max) = (crate::network::MIN_MTU, crate::network::MAX_MTU);
                    if !(min..=max).contains(&mtu) {
                        return Err(bad(&format!("must be between {min} and {max}")));
                    }
                    o.mtu = Some(mtu);
                }
                k if k.starts_with("ferrynet.") => {
                    return Err(format!(
                        "unknown option {key}: ferrynet takes {}",
                        OPTIONS.join(", ")
                    ))
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => boolean(s).unwrap_or(false),
        _ => false,
    }
}

fn boolean(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: Value) -> Options {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn options_name_the_bad_one() {
        let o = opts(json!({
            "com.docker.network.internal": true,
            "com.docker.network.generic": {"ferrynet.mtu": "1400", "ferrynet.masquerade": "false"}
        }));
        let n = NetOptions::parse(Some(&o)).unwrap();
        assert_eq!(n.mtu, Some(1400));
        assert_eq!(n.masquerade, Some(false));
        assert!(n.internal);
        for (k, v, needle) in [
            ("ferrynet.mtu", "big", "invalid option ferrynet.mtu=\"big\""),
            ("ferrynet.mtu", "10", "between"),
            (
                "ferrynet.isolate",
                "maybe",
                "invalid option ferrynet.isolate",
            ),
            ("ferrynet.colour", "red", "unknown option ferrynet.colour"),
            ("ferrynet.bridge", "vf0123456789ab", "ferrynet.bridge"),
        ] {
            let o = opts(json!({"com.docker.network.generic": {k: v}}));
            let e = NetOptions::parse(Some(&o)).unwrap_err();
            assert!(e.contains(needle), "{k}={v}: {e}");
        }
        // Docker's own keys are not ours to refuse.
        let o = opts(json!({"com.docker.network.generic": {"com.docker.network.foo": "x"}}));
        assert_eq!(NetOptions::parse(Some(&o)).unwrap(), NetOptions::default());
    }

    #[test]
    fn pools() {
        let pools = vec![IpamData {
            pool: Some("10.90.0.0/24".into()),
            gateway: Some("10.90.0.1/24".into()),
            ..Default::default()
        }];
        let (s, g) = one_pool("IPv4Data", Some(&pools), false).unwrap();
        assert_eq!(s.unwrap().to_string(), "10.90.0.0/24");
        assert_eq!(g.unwrap().to_string(), "10.90.0.1");
        assert!(one_pool("IPv6Data", Some(&pools), true).is_err());
        let two = vec![pools[0].clone(), pools[0].clone()];
        assert!(one_pool("IPv4Data", Some(&two), false).is_err());
    }
}
