//! The protocol's dispatch: each Docker call (network driver and IPAM driver, one socket)
//! routed to its handler, one at a time, answered in the protocol's error field. The
//! handlers live by responsibility: [`super::networks`] (Docker networks and their side
//! records), [`super::endpoints`] (containers' endpoints), [`super::ports`] (published ports).
//! Everything a later call needs is on disk (ferrynet's network and endpoint records, plus
//! one side record per Docker network mapping its id to the ferrynet network): Docker never
//! replays CreateNetwork, and a restarted plugin must go on where the last one stopped.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::api::*;
use super::client::DockerHost;
use super::endpoints::IFNAME;
use super::ipam::DockerIpam;
use crate::bridge::{Driver, HostPorts};
use crate::network::StateDir;

pub struct Plugin {
    pub(super) driver: Driver,
    /// The daemon's API, asked for what its calls do not carry (a network's name).
    pub(super) docker: DockerHost,
    /// The same socket serves Docker's IPAM driver protocol (`--ipam-driver NAME`).
    pub(super) ipam: DockerIpam,
    /// One call at a time: Docker's calls are few, and a network's creation and removal
    /// must not interleave with its endpoints' calls.
    pub(super) lock: Mutex<()>,
    /// Where a port published without a host port takes one from (`-p 80`).
    pub(super) ephemeral: (u16, u16),
    /// The host ports chosen so far, for the next choice to start after them.
    pub(super) host_ports: Mutex<HostPorts>,
}

pub(super) type Reply = Result<Value, String>;

impl Plugin {
    pub fn new(state: StateDir, docker: DockerHost, subnet_file: PathBuf) -> Plugin {
        Plugin {
            ipam: DockerIpam::new(state.clone(), subnet_file),
            driver: Driver::new(state),
            docker,
            lock: Mutex::new(()),
            ephemeral: super::ports::ephemeral_range(),
            host_ports: Mutex::new(HostPorts::default()),
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
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid request: {e}"))
}
