//! The handlers: each Docker call translated into calls of the bridge driver. Everything a
//! later call needs is on disk (ferrynet's network and endpoint records, plus one side record
//! per Docker network mapping its id to the ferrynet network): Docker never replays
//! CreateNetwork, and a restarted plugin must go on where the last one stopped.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::api::*;
use super::client::DockerHost;
use super::ipam::DockerIpam;
use crate::bridge::{default_mtu, AddressRequest, Driver, PrepareRequest, Source};
use crate::firewall::{PortMapping, Protocol};
use crate::netlink::{Handle, Mac};
use crate::network::{validate_bridge_name, validate_id, NetworkConfig, StateDir};
use crate::util::{create_exclusive, ensure_dir, read_if_exists, remove_if_exists, write_atomic};

/// The endpoint's name in ferrynet's records: Docker names the container's interface itself
/// (`eth0`, `eth1`, ... from the DstPrefix).
pub const IFNAME: &str = "eth";

/// The options a Docker network of ferrynet takes (`-o KEY=VALUE`).
pub const OPTIONS: &[&str] = &[
    "ferrynet.name",
    "ferrynet.bridge",
    "ferrynet.masquerade",
    "ferrynet.isolate",
    "ferrynet.mtu",
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

pub struct Plugin {
    driver: Driver,
    /// The daemon's API, asked for what its calls do not carry (a network's name).
    docker: DockerHost,
    /// The same socket serves Docker's IPAM driver protocol (`--ipam-driver NAME`).
    ipam: DockerIpam,
    /// One call at a time: Docker's calls are few, and a network's creation and removal
    /// must not interleave with its endpoints' calls.
    lock: Mutex<()>,
}

type Reply = Result<Value, String>;

impl Plugin {
    pub fn new(state: StateDir, docker: DockerHost, subnet_file: PathBuf) -> Plugin {
        Plugin {
            ipam: DockerIpam::new(state.clone(), subnet_file),
            driver: Driver::new(state),
            docker,
            lock: Mutex::new(()),
        }
    }

    /// Answers one call: `method` is the request path without its slash.
    pub fn call(self: &Arc<Self>, method: &str, body: &[u8]) -> Value {
        let _one = self.one_at_a_time();
        let started = std::time::Instant::now();
        let blank = body.iter().all(u8::is_ascii_whitespace);
        // Calls without arguments may come without a body: it reads as an empty object.
        let body: &[u8] = if blank { b"{}" } else { body };
        let takes_nothing = method == "Plugin.Activate"
            || method.ends_with(".GetCapabilities")
            || method == "IpamDriver.GetDefaultAddressSpaces";
        let reply = match method {
            // Measured: when a plugin dies during a call, Docker's client retries it with the
            // body already consumed, i.e. empty. Say so rather than "missing field".
            _ if blank && !takes_nothing => Err(format!(
                "{method} arrived without its request (Docker resends a call without its body when the plugin stopped during the first attempt); nothing was done, run the command again"
            )),
            "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
            m if m.starts_with("IpamDriver.") => match self.ipam.call(m, body) {
                Some(reply) => reply,
                None => Err(format!("ferrynet does not implement {method}")),
            },
            "NetworkDriver.GetCapabilities" => {
                Ok(json!({ "Scope": "local", "ConnectivityScope": "local" }))
            }
            "NetworkDriver.CreateNetwork" => parse(body).and_then(|r: CreateNetworkRequest| {
                let id = r.network_id.clone();
                let answer = self.create_network(r)?;
                self.learn_name_later(id);
                Ok(answer)
            }),
            "NetworkDriver.DeleteNetwork" => parse(body).and_then(|r| self.delete_network(r)),
            "NetworkDriver.CreateEndpoint" => parse(body).and_then(|r| self.create_endpoint(r)),
            "NetworkDriver.Join" => parse(body).and_then(|r| self.join(r)),
            "NetworkDriver.Leave" => parse::<EndpointRequest>(body).map(|_| json!({})),
            "NetworkDriver.DeleteEndpoint" => parse(body).and_then(|r| self.delete_endpoint(r)),
            "NetworkDriver.EndpointOperInfo" => parse(body).and_then(|r| self.oper_info(r)),
            "NetworkDriver.ProgramExternalConnectivity" => {
                parse(body).and_then(|r| self.program(r))
            }
            "NetworkDriver.RevokeExternalConnectivity" => parse(body).and_then(|r| self.revoke(r)),
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
            _ => Err(format!("ferrynet does not implement {method}")),
        };
        match reply {
            Ok(v) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                tracing::info!(method, ms = format!("{ms:.2}").as_str(), "ok");
                v
            }
            Err(e) => {
                tracing::warn!(method, error = e.as_str(), "refused");
                // The IPAM protocol reads its errors from another field.
                if method.starts_with("IpamDriver.") {
                    json!({ "Error": e })
                } else {
                    err(e)
                }
            }
        }
    }

    /// At start-up, before serving: removes what a crashed plugin may have left of endpoints
    /// Docker no longer has (a call cut short: a veth not yet recorded, reservations without a
    /// record, an endpoint whose DeleteEndpoint never came). Each network's endpoints are
    /// compared with the ones the daemon lists; a network the daemon does not know, or a
    /// daemon that cannot be asked, is left as it is.
    pub fn collect_garbage(&self) {
        let _one = self.one_at_a_time();
        match self.docker.networks() {
            Ok(networks) => self.ipam.collect_garbage(&networks),
            Err(e) => {
                tracing::warn!(error = %e, "no garbage collection: the Docker daemon cannot be asked");
                return;
            }
        }
        let dir = self.docker_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json").filter(|n| !n.starts_with('.')) else {
                continue;
            };
            let known = match self.docker.network_endpoints(id) {
                Ok(Some(known)) => known,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "no garbage collection: the Docker daemon cannot be asked");
                    return;
                }
            };
            let Ok((_, net)) = self.network(id) else {
                continue;
            };
            let keep = |cid: &str, ifname: &str| ifname == IFNAME && known.iter().any(|k| k == cid);
            match self.driver.gc(&net, &keep) {
                Ok(r) if r.endpoints.is_empty() && r.addresses.is_empty() && r.veths.is_empty() => {
                }
                Ok(r) => tracing::info!(
                    network = net.name.as_str(),
                    endpoints = ?r.endpoints,
                    addresses = ?r.addresses,
                    veths = ?r.veths,
                    "removed what Docker no longer has"
                ),
                Err(e) => {
                    tracing::warn!(network = net.name.as_str(), error = %e, "garbage collection failed")
                }
            }
        }
    }

    fn one_at_a_time(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the daemon for the network's name a few times a second for a while after
    /// CreateNetwork (it knows the network once that call has returned), so that even a
    /// network without containers soon shows under its Docker name.
    fn learn_name_later(self: &Arc<Self>, id: String) {
        let plugin = self.clone();
        std::thread::spawn(move || {
            for _ in 0..50 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                let _one = plugin.one_at_a_time();
                if plugin.learn_name(&id) {
                    return;
                }
            }
            tracing::warn!(id, "the Docker daemon did not tell the network's name");
        });
    }

    /// Learns the Docker network's name and, while the ferrynet network has the default
    /// name (the short id) and no endpoint ever, renames it to that name — unless a ferrynet
    /// network has that name already: then it keeps the id. True when there is nothing left to
    /// learn. Errors only delay it (the daemon may be busy): they are logged.
    fn learn_name(&self, id: &str) -> bool {
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

    fn state(&self) -> &StateDir {
        self.driver.state()
    }

    fn docker_dir(&self) -> PathBuf {
        self.state().root().join("docker").join("networks")
    }

    fn record_path(&self, id: &str) -> Result<PathBuf, String> {
        validate_id("network id", id).map_err(|e| e.to_string())?;
        Ok(self.docker_dir().join(format!("{id}.json")))
    }

    fn record(&self, id: &str) -> Result<Option<DockerNetwork>, String> {
        let p = self.record_path(id)?;
        match read_if_exists(&p).map_err(|e| format!("{}: {e}", p.display()))? {
            None => Ok(None),
            Some(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display())),
        }
    }

    /// The Docker network's ferrynet network, or an error naming the id.
    fn network(&self, id: &str) -> Result<(DockerNetwork, NetworkConfig), String> {
        let rec = self
            .record(id)?
            .ok_or_else(|| format!("network {id} is not a network of this ferrynet plugin"))?;
        let net = self.state().load(&rec.network).map_err(|e| e.to_string())?;
        Ok((rec, net))
    }

    fn create_network(&self, r: CreateNetworkRequest) -> Reply {
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

    fn delete_network(&self, r: NetworkRequest) -> Reply {
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

    fn create_endpoint(&self, r: CreateEndpointRequest) -> Reply {
        // Before the first endpoint: after it the network's name is in its paths.
        self.learn_name(&r.network_id);
        let (_, net) = self.network(&r.network_id)?;
        let given = r.interface.unwrap_or_default();
        let v4 = match given.address.as_str() {
            "" => Source::Allocate(None),
            a => Source::Allocate(Some(
                a.parse::<ipnet::Ipv4Net>()
                    .map_err(|_| format!("invalid Interface.Address {a:?}"))?
                    .addr(),
            )),
        };
        let v6 = match given.address_ipv6.as_str() {
            "" => Source::Allocate(None),
            a => Source::Allocate(Some(
                a.parse::<ipnet::Ipv6Net>()
                    .map_err(|_| format!("invalid Interface.AddressIPv6 {a:?}"))?
                    .addr(),
            )),
        };
        let mac = match given.mac_address.as_str() {
            "" => None,
            m => Some(
                m.parse::<Mac>()
                    .map_err(|e| format!("Interface.MacAddress: {e}"))?,
            ),
        };
        let ep = self
            .driver
            .prepare_endpoint(
                &net,
                &PrepareRequest {
                    container_id: r.endpoint_id,
                    ifname: IFNAME.into(),
                    address: AddressRequest { v4, v6 },
                    mac,
                },
            )
            .map_err(|e| e.to_string())?;
        // Only what Docker left empty: echoing its own values back is an error to it.
        let filled = EndpointInterface {
            address: match (given.address.is_empty(), ep.ip) {
                (true, Some(ip)) => ip.to_string(),
                _ => String::new(),
            },
            address_ipv6: match (given.address_ipv6.is_empty(), ep.ip6) {
                (true, Some(ip)) => ip.to_string(),
                _ => String::new(),
            },
            mac_address: if given.mac_address.is_empty() {
                ep.mac.to_string()
            } else {
                String::new()
            },
        };
        let empty = filled.address.is_empty()
            && filled.address_ipv6.is_empty()
            && filled.mac_address.is_empty();
        Ok(serde_json::to_value(CreateEndpointResponse {
            interface: (!empty).then_some(filled),
        })
        .expect("serializable"))
    }

    fn join(&self, r: JoinRequest) -> Reply {
        let (rec, net) = self.network(&r.network_id)?;
        let peer = peer_name(&net.name, &r.endpoint_id);
        let ep = self
            .driver
            .plug_endpoint(
                &net,
                &r.endpoint_id,
                IFNAME,
                &peer,
                Path::new(&r.sandbox_key),
            )
            .map_err(|e| e.to_string())?;
        let gw = |g: Option<String>| match rec.internal {
            true => String::new(),
            false => g.unwrap_or_default(),
        };
        Ok(serde_json::to_value(JoinResponse {
            interface_name: InterfaceName {
                src_name: peer,
                dst_prefix: "eth".into(),
            },
            gateway: gw(ep.gateway.map(|g| g.to_string())),
            gateway_ipv6: gw(ep.gateway6.map(|g| g.to_string())),
            static_routes: Vec::new(),
            // An internal network has no way out, and Docker must not make one.
            disable_gateway_service: rec.internal,
        })
        .expect("serializable"))
    }

    fn delete_endpoint(&self, r: EndpointRequest) -> Reply {
        let (_, net) = match self.network(&r.network_id) {
            Ok(n) => n,
            // Nothing of ours can be left of an endpoint of a network we do not know.
            Err(_) if self.record(&r.network_id).ok().flatten().is_none() => return Ok(json!({})),
            Err(e) => return Err(e),
        };
        // The container's end of the veth is back in this namespace under its SrcName: the
        // host end's deletion takes both. Docker waits for this call (`docker run --rm`), and
        // the kernel's wait after a veth's deletion (~20-35 ms here) is nobody's business:
        // the veth goes on a thread of its own, and detach carries on once it is unlisted.
        if let Ok(Some(ep)) = self.driver.endpoint(&net.name, &r.endpoint_id, IFNAME) {
            unlist_veth(&ep.host_veth);
        }
        self.driver
            .detach(&net, &r.endpoint_id, IFNAME)
            .map_err(|e| e.to_string())?;
        Ok(json!({}))
    }

    fn oper_info(&self, r: EndpointRequest) -> Reply {
        let (_, net) = self.network(&r.network_id)?;
        let ep = self
            .driver
            .endpoint(&net.name, &r.endpoint_id, IFNAME)
            .map_err(|e| e.to_string())?;
        let value = match ep {
            Some(ep) => json!({
                "network": ep.network,
                "bridge": net.bridge,
                "host_veth": ep.host_veth,
                "mac": ep.mac.to_string(),
                "ip": ep.ip.map(|i| i.to_string()),
                "ip6": ep.ip6.map(|i| i.to_string()),
                "ports": ep.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            }),
            None => json!({}),
        };
        Ok(json!({ "Value": value }))
    }

    fn program(&self, r: ProgramExternalConnectivityRequest) -> Reply {
        let (rec, net) = self.network(&r.network_id)?;
        let ports = port_mappings(r.options.as_ref())?;
        if rec.internal {
            if !ports.is_empty() {
                tracing::warn!(
                    endpoint = r.endpoint_id.as_str(),
                    "internal network: published ports ignored"
                );
            }
            return Ok(json!({}));
        }
        self.driver
            .set_ports(&net, &r.endpoint_id, IFNAME, &ports)
            .map_err(|e| e.to_string())?;
        Ok(json!({}))
    }

    fn revoke(&self, r: EndpointRequest) -> Reply {
        let (_, net) = self.network(&r.network_id)?;
        let exists = self
            .driver
            .endpoint(&net.name, &r.endpoint_id, IFNAME)
            .map_err(|e| e.to_string())?
            .is_some();
        if exists {
            self.driver
                .set_ports(&net, &r.endpoint_id, IFNAME, &[])
                .map_err(|e| e.to_string())?;
        }
        Ok(json!({}))
    }
}

/// Deletes the link `name` on a thread of its own and returns once the kernel no longer lists
/// it (at most 50 ms): the deletion's own wait for the device's references then goes on in the
/// background. A plugin that stops meanwhile leaves nothing: the link is already unlisted.
fn unlist_veth(name: &str) {
    let owned = name.to_string();
    std::thread::spawn(move || {
        if let Ok(mut h) = Handle::new() {
            let _ = h.delete_link_by_name(&owned);
        }
    });
    let Ok(mut h) = Handle::new() else {
        return;
    };
    let end = std::time::Instant::now() + std::time::Duration::from_millis(50);
    while std::time::Instant::now() < end {
        match h.link_by_name(name) {
            Ok(Some(_)) => std::thread::sleep(std::time::Duration::from_micros(200)),
            _ => return,
        }
    }
}

/// Docker's short form of an id: the ferrynet network's name until the Docker name is known.
fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid request: {e}"))
}

/// The name of the veth end Docker moves into the container: derived from the endpoint like
/// the host end's (`vf…`), so both are known without a record.
pub fn peer_name(network: &str, endpoint_id: &str) -> String {
    let host = crate::bridge::host_veth_name(network, endpoint_id, IFNAME);
    format!("vp{}", &host[2..])
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

/// `com.docker.network.portmap` as ferrynet's port mappings (duplicates merged: Docker may
/// send one binding per family for "all host addresses").
fn port_mappings(opts: Option<&Options>) -> Result<Vec<PortMapping>, String> {
    let bindings: Vec<PortBinding> = match opts.and_then(|o| o.get("com.docker.network.portmap")) {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| format!("invalid com.docker.network.portmap: {e}"))?,
    };
    let mut out: Vec<PortMapping> = Vec::new();
    for b in bindings {
        let protocol = match b.proto {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            132 => Protocol::Sctp,
            n => {
                return Err(format!(
                    "published port {}: unknown protocol number {n}",
                    b.port
                ))
            }
        };
        if b.host_port == 0 {
            return Err(format!(
                "published port {}/{protocol} has no host port: ferrynet needs one (-p HOST:{})",
                b.port, b.port
            ));
        }
        if b.port == 0 {
            return Err(format!("published port {}: container port 0", b.host_port));
        }
        let host_ip = match b.host_ip.as_deref() {
            None | Some("") => None,
            Some(s) => {
                let ip: IpAddr = s.parse().map_err(|_| {
                    format!("published port {}: invalid host address {s:?}", b.host_port)
                })?;
                (!ip.is_unspecified()).then_some(ip)
            }
        };
        let p = PortMapping {
            host_port: b.host_port,
            container_port: b.port,
            protocol,
            host_ip,
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
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
    fn pools_and_ports() {
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

        let o = opts(json!({"com.docker.network.portmap": [
            {"HostIP": "", "HostPort": 8080, "HostPortEnd": 8080, "Port": 80, "Proto": 6},
            {"HostIP": "0.0.0.0", "HostPort": 8080, "HostPortEnd": 8080, "Port": 80, "Proto": 6},
            {"HostIP": "10.0.0.1", "HostPort": 53, "HostPortEnd": 53, "Port": 53, "Proto": 17}
        ]}));
        let ports = port_mappings(Some(&o)).unwrap();
        assert_eq!(
            ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            ["8080:80/tcp", "10.0.0.1:53:53/udp"]
        );
        let o = opts(json!({"com.docker.network.portmap": [
            {"HostIP": "", "HostPort": 0, "Port": 80, "Proto": 6}]}));
        assert!(port_mappings(Some(&o))
            .unwrap_err()
            .contains("no host port"));
        assert!(port_mappings(None).unwrap().is_empty());
    }

    #[test]
    fn peer_names_fit() {
        let p = peer_name("blue", &"a".repeat(64));
        assert_eq!(p.len(), 14);
        assert!(p.starts_with("vp"));
    }
}
