//! The bridge driver: attach a container namespace to a network's bridge, detach it, and keep
//! the network's host-side state (bridge, gateway address, sysctls, firewall elements).
//!
//! attach = validate, record the plan, then apply; any failure rolls back through the same
//! idempotent steps as detach, so a half-made endpoint never survives. A process killed at any
//! point leaves a record (written before the first change) that detach or GC cleans up.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::failpoint;
use crate::firewall::{Firewall, FirewallError, NetworkRules, PortGuard, PortMapping};
use crate::ipam::{Ipam, IpamError, Pool};
use crate::netlink::{Handle, Link, Mac, NetlinkError, Route, VethSpec};
use crate::netns::{write_sysctl, Netns, NetnsError};
use crate::network::{validate_id, validate_ifname, NetworkConfig, NetworkError, StateDir};
use crate::util::{create_new, ensure_dir, fnv1a64, read_if_exists, remove_if_exists, StepTimer};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error("{step}: {source}")]
    Netlink {
        step: &'static str,
        #[source]
        source: NetlinkError,
    },
    #[error("container {container_id:?} already has interface {ifname:?} on network {network:?}")]
    AlreadyAttached {
        network: String,
        container_id: String,
        ifname: String,
    },
    #[error("interface {ifname:?} already exists in {netns}")]
    IfnameTaken { ifname: String, netns: PathBuf },
    #[error("state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Failpoint(#[from] failpoint::Triggered),
    #[error("detach finished with errors: {0}")]
    Detach(String),
}

fn nl(step: &'static str) -> impl FnOnce(NetlinkError) -> DriverError {
    move |source| DriverError::Netlink { step, source }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DriverError + '_ {
    move |source| DriverError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the container's address comes from.
#[derive(Debug, Clone)]
pub enum AddressRequest {
    /// ferrynet's IPAM picks one (or reserves the one given).
    Allocate(Option<Ipv4Addr>),
    /// Already allocated elsewhere (an IPAM plugin); ferrynet only configures it.
    External(Ipv4Net),
}

/// A route inside the container: `dst` via `gw`, or via the network's gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub dst: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<Ipv4Addr>,
}

impl RouteSpec {
    pub fn default_route() -> RouteSpec {
        RouteSpec {
            dst: Ipv4Net::default(),
            gw: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub netns: PathBuf,
    pub container_id: String,
    pub ifname: String,
    pub address: AddressRequest,
    pub mac: Option<Mac>,
    pub ports: Vec<PortMapping>,
    /// Routes inside the container (usually just the default route via the gateway).
    pub routes: Vec<RouteSpec>,
}

impl AttachRequest {
    /// `eth0` with the next free address, a default route via the gateway, no ports.
    pub fn simple(netns: &Path, container_id: &str) -> AttachRequest {
        AttachRequest {
            netns: netns.to_path_buf(),
            container_id: container_id.to_string(),
            ifname: "eth0".into(),
            address: AddressRequest::Allocate(None),
            mac: None,
            ports: Vec::new(),
            routes: vec![RouteSpec::default_route()],
        }
    }
}

/// One container interface on a network. On disk it is the plan, written once before the
/// first kernel change; the ifindexes are known only after the change and are reported live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: PathBuf,
    pub host_veth: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifindex: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_ifindex: Option<u32>,
    pub ip: Option<Ipv4Net>,
    pub gateway: Ipv4Addr,
    pub mac: Mac,
    /// The host end's MAC (chosen by ferrynet, so it is known without asking the kernel).
    #[serde(default)]
    pub host_mac: Mac,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_mac: Option<Mac>,
    pub ports: Vec<PortMapping>,
    pub routes: Vec<RouteSpec>,
    /// Whether the address belongs to ferrynet's IPAM (and must be released on detach).
    pub ipam: bool,
}

/// The host-side veth name: derived from the endpoint's identity, so that cleanup finds it
/// even when the record of it was never completed.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    let h = fnv1a64(format!("{network}\0{container_id}\0{ifname}").as_bytes());
    format!("vf{:012x}", h & 0xffff_ffff_ffff)
}

pub fn endpoint_key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}:{ifname}")
}

/// The MTU of the interface holding the default route, or 1500.
pub fn default_mtu() -> u32 {
    let probe = || -> Result<Option<u32>, NetlinkError> {
        let mut h = Handle::new()?;
        let oif = h
            .routes()?
            .into_iter()
            .find(|r| r.dst.prefix_len() == 0)
            .and_then(|r| r.oif);
        match oif {
            Some(i) => Ok(h.link_by_index(i)?.map(|l| l.mtu)),
            None => Ok(None),
        }
    };
    probe()
        .ok()
        .flatten()
        .unwrap_or(crate::network::DEFAULT_MTU)
}

/// The addresses a network hands out.
pub fn pool_of(net: &NetworkConfig) -> Pool {
    let mut pool = Pool::new(net.subnet, Some(net.gateway));
    if let Some(start) = net.range_start {
        pool.start = pool.start.max(start);
    }
    if let Some(end) = net.range_end {
        pool.end = pool.end.min(end);
    }
    pool
}

pub struct Driver {
    state: StateDir,
}

impl Driver {
    pub fn new(state: StateDir) -> Driver {
        Driver { state }
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    fn ipam(&self, net: &NetworkConfig) -> Ipam {
        Ipam::new(&self.state.ipam_dir(&net.name), pool_of(net))
    }

    fn record_path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.state
            .endpoints_dir(network)
            .join(format!("{}.json", endpoint_key(container_id, ifname)))
    }

    fn rules(net: &NetworkConfig) -> NetworkRules {
        NetworkRules {
            bridge: net.bridge.clone(),
            subnet: net.subnet,
            masquerade: net.masquerade,
            isolate: net.isolate,
        }
    }

    /// Makes the host side of a network exist: bridge (fixed MAC, MTU, gateway address, up),
    /// ip_forward, route_localnet (published ports from the host's 127.0.0.1), and the firewall
    /// elements. Cheap when everything is already there (two netlink lookups). Returns the
    /// bridge's ifindex.
    pub fn ensure_network(&self, h: &mut Handle, net: &NetworkConfig) -> Result<u32, DriverError> {
        Ok(self
            .ensure_network_with(h, &mut Firewall::open()?, net)?
            .index)
    }

    /// [`Driver::ensure_network`] with the caller's firewall socket; returns the bridge link.
    fn ensure_network_with(
        &self,
        h: &mut Handle,
        fw: &mut Firewall,
        net: &NetworkConfig,
    ) -> Result<Link, DriverError> {
        let bridge = match self.preflight(h, net)? {
            Some(link) => {
                if !link.up {
                    h.set_up(link.index).map_err(nl("set bridge up"))?;
                }
                link
            }
            None => {
                match h.create_bridge(&net.bridge, net.mtu, Mac::from_seed(&net.bridge)) {
                    Err(e) if !e.is(libc::EEXIST) => return Err(nl("create bridge")(e)),
                    _ => {}
                }
                let link = h
                    .link_by_name(&net.bridge)
                    .map_err(nl("look up bridge"))?
                    .ok_or_else(|| {
                        nl("look up bridge")(NetlinkError::Malformed("bridge vanished"))
                    })?;
                if net.gateway_on_bridge {
                    match h.add_addr(link.index, net.gateway_net()) {
                        Err(e) if !e.is(libc::EEXIST) => return Err(nl("add gateway address")(e)),
                        _ => {}
                    }
                }
                let conf = format!("net/ipv4/conf/{}/route_localnet", net.bridge);
                write_sysctl(&conf, "1").map_err(io_err(Path::new(&conf)))?;
                // The bridge itself needs no IPv6 for an IPv4 network.
                let _ = write_sysctl(&format!("net/ipv6/conf/{}/disable_ipv6", net.bridge), "1");
                h.set_up(link.index).map_err(nl("set bridge up"))?;
                link
            }
        };
        if !h.ipv4_forwarding().map_err(nl("read ip_forward"))? {
            write_sysctl("net/ipv4/ip_forward", "1").map_err(io_err(Path::new("ip_forward")))?;
        }
        fw.ensure_network(&Self::rules(net))?;
        Ok(bridge)
    }

    /// What must hold before a network's host side is built, checked without changing
    /// anything: the bridge, if it exists, is a bridge (not the uplink or a VXLAN device);
    /// if it does not, the subnet overlaps none of the host's own networks (the agent's
    /// VXLAN device excepted), so that a refused network leaves nothing behind. Returns the
    /// existing bridge.
    pub fn preflight(
        &self,
        h: &mut Handle,
        net: &NetworkConfig,
    ) -> Result<Option<Link>, DriverError> {
        match h.link_by_name(&net.bridge).map_err(nl("look up bridge"))? {
            Some(link) if link.kind.as_deref() != Some("bridge") => Err(crate::network::invalid(
                "bridge",
                &net.bridge,
                format!(
                    "exists and is a {} device, not a bridge",
                    link.kind.as_deref().unwrap_or("plain")
                ),
            )
            .into()),
            Some(link) => Ok(Some(link)),
            None => match crate::hostnet::subnet_conflict(h, net.subnet, &net.bridge)
                .map_err(nl("read the host's addresses and routes"))?
            {
                Some(conflict) => Err(conflict.into()),
                None => Ok(None),
            },
        }
    }

    /// Removes a network's host-side state: bridge, firewall elements, IPAM state.
    pub fn remove_network(&self, net: &NetworkConfig) -> Result<(), DriverError> {
        let mut h = Handle::new().map_err(nl("open netlink"))?;
        h.delete_link_by_name(&net.bridge)
            .map_err(nl("delete bridge"))?;
        Firewall::open()?.remove_network(&Self::rules(net))?;
        self.ipam(net).destroy()?;
        let dir = self.state.endpoints_dir(&net.name);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&dir)(e)),
            _ => Ok(()),
        }
    }

    pub fn endpoint(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<Endpoint>, DriverError> {
        let p = self.record_path(network, container_id, ifname);
        match read_if_exists(&p).map_err(io_err(&p))? {
            Some(data) => Ok(serde_json::from_slice(&data).ok()),
            None => Ok(None),
        }
    }

    pub fn endpoints(&self, network: &str) -> Result<Vec<Endpoint>, DriverError> {
        let dir = self.state.endpoints_dir(network);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            if let Ok(Some(data)) = read_if_exists(&entry.path()) {
                if let Ok(ep) = serde_json::from_slice::<Endpoint>(&data) {
                    out.push(ep);
                }
            }
        }
        out.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        Ok(out)
    }

    /// Writes the endpoint's record, once, before the first kernel change. A crash while
    /// writing leaves a partial record, which readers treat as no record (see detach).
    fn write_record(&self, ep: &Endpoint) -> Result<(), DriverError> {
        let p = self.record_path(&ep.network, &ep.container_id, &ep.ifname);
        let data = serde_json::to_vec_pretty(ep).expect("serializable");
        let dir = self.state.endpoints_dir(&ep.network);
        ensure_dir(&dir).map_err(io_err(&dir))?;
        match create_new(&p, &data) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(DriverError::AlreadyAttached {
                    network: ep.network.clone(),
                    container_id: ep.container_id.clone(),
                    ifname: ep.ifname.clone(),
                })
            }
            r => r.map_err(io_err(&p)),
        }
    }

    /// Attaches a container namespace to `net`. On error nothing of this endpoint remains.
    pub fn attach(
        &self,
        net: &NetworkConfig,
        req: &AttachRequest,
    ) -> Result<Endpoint, DriverError> {
        let timer = StepTimer::new("attach");
        // 1. Validate everything before changing anything.
        net.validate()?;
        validate_id("container id", &req.container_id)?;
        validate_ifname("ifname", &req.ifname)?;
        let ns = Netns::open_container(&req.netns)?;
        match req.address {
            AddressRequest::External(ip) if !net.subnet.contains(&ip.addr()) => {
                return Err(crate::network::invalid(
                    "ip",
                    ip,
                    format!("is outside {}", net.subnet),
                )
                .into());
            }
            AddressRequest::Allocate(Some(ip)) => pool_of(net).check(ip)?,
            _ => {}
        }
        let mut h = Handle::new().map_err(nl("open netlink"))?;
        let mut fw = Firewall::open()?;
        timer.mark("validated");
        let bridge = self.ensure_network_with(&mut h, &mut fw, net)?;
        timer.mark("network ensured");

        // 2. The address, then the record of the plan. A second attach of the same key stops
        //    at the first of the two (KeyExists, AlreadyAttached) with nothing changed; a crash
        //    between them leaves a reservation that detach releases by key.
        let key = endpoint_key(&req.container_id, &req.ifname);
        let ip = match req.address {
            AddressRequest::Allocate(requested) => {
                let ip = self
                    .ipam(net)
                    .allocate(&key, requested)
                    .map_err(|e| match e {
                        IpamError::KeyExists { .. } => DriverError::AlreadyAttached {
                            network: net.name.clone(),
                            container_id: req.container_id.clone(),
                            ifname: req.ifname.clone(),
                        },
                        e => e.into(),
                    })?;
                Ipv4Net::new(ip, net.subnet.prefix_len()).expect("valid prefix")
            }
            AddressRequest::External(ip) => ip,
        };
        let mut ep = Endpoint {
            network: net.name.clone(),
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: req.netns.clone(),
            host_veth: host_veth_name(&net.name, &req.container_id, &req.ifname),
            host_ifindex: None,
            container_ifindex: None,
            ip: Some(ip),
            gateway: net.gateway,
            mac: req.mac.unwrap_or_else(Mac::random),
            host_mac: Mac::random(),
            bridge_mac: bridge.mac,
            ports: req.ports.clone(),
            routes: req.routes.clone(),
            ipam: matches!(req.address, AddressRequest::Allocate(_)),
        };
        let recorded = failpoint::hit("attach.allocated")
            .map_err(DriverError::from)
            .and_then(|_| self.write_record(&ep));
        if let Err(e) = recorded {
            if ep.ipam {
                let _ = self.ipam(net).release(&key);
            }
            return Err(e);
        }

        timer.mark("address allocated, record written");

        // 3. Apply; on failure undo through detach's idempotent steps.
        match self.apply(net, (&mut h, &mut fw), &ns, bridge.index, &mut ep, &timer) {
            Ok(()) => Ok(ep),
            Err(e) => {
                drop(fw);
                let _ = self.teardown(net, &ep);
                Err(e)
            }
        }
    }

    fn apply(
        &self,
        net: &NetworkConfig,
        (h, fw): (&mut Handle, &mut Firewall),
        ns: &Netns,
        bridge_index: u32,
        ep: &mut Endpoint,
        timer: &StepTimer,
    ) -> Result<(), DriverError> {
        failpoint::hit("attach.recorded")?;
        let ip = ep.ip.expect("address decided");
        h.create_veth(&VethSpec {
            host_name: &ep.host_veth,
            peer_name: &ep.ifname,
            peer_netns: ns.fd(),
            host_mac: Some(ep.host_mac),
            peer_mac: Some(ep.mac),
            mtu: net.mtu,
            master: Some(bridge_index),
        })
        .map_err(|e| {
            if e.is(libc::EEXIST) && matches!(h.link_by_name(&ep.host_veth), Ok(None)) {
                DriverError::IfnameTaken {
                    ifname: ep.ifname.clone(),
                    netns: ep.netns.clone(),
                }
            } else {
                nl("create veth pair")(e)
            }
        })?;
        timer.mark("veth created");
        failpoint::hit("attach.veth")?;

        let (ifname, gateway, routes) = (ep.ifname.clone(), net.gateway, ep.routes.clone());
        let (container_index, host_index) =
            ns.run(move || configure_container(&ifname, ip, gateway, &routes))??;
        ep.container_ifindex = Some(container_index);
        ep.host_ifindex = Some(host_index);
        timer.mark("container configured");
        failpoint::hit("attach.container")?;

        // No IPv6 on the host-side port of an IPv4 network: every new port's link-local
        // address, DAD and MLD reports would be flooded to all other ports. Hairpin: with
        // br_netfilter loaded, a container reaching its own published port is DNATed at
        // bridge level and must go back out of the port it came in on.
        h.set_up_ipv4_only(host_index, Some(net.hairpin))
            .map_err(nl("set host veth up"))?;
        timer.mark("host veth up");
        failpoint::hit("attach.host")?;

        // Anti-spoofing guard and published ports: one nf_tables transaction.
        let guard = net.anti_spoof.then(|| guard_of(ep, ip.addr()));
        if guard.is_some() || !ep.ports.is_empty() {
            fw.add_endpoint(guard.as_ref(), ip.addr(), &ep.ports)?;
        }
        timer.mark("firewall elements added");
        failpoint::hit("attach.ports")?;
        Ok(())
    }

    /// Detaches an endpoint: idempotent, works when the namespace is gone and after a crash at
    /// any point of attach. Returns the record it removed, if there was one.
    pub fn detach(
        &self,
        net: &NetworkConfig,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<Endpoint>, DriverError> {
        validate_id("container id", container_id)?;
        validate_ifname("ifname", ifname)?;
        match self.endpoint(&net.name, container_id, ifname)? {
            Some(ep) => {
                self.teardown(net, &ep)?;
                Ok(Some(ep))
            }
            None => {
                // No readable record: at most the leftovers of a crash before or while it was
                // written (nothing was published yet then, and the veth's name is derived).
                let mut h = Handle::new().map_err(nl("open netlink"))?;
                h.delete_link_by_name(&host_veth_name(&net.name, container_id, ifname))
                    .map_err(nl("delete host veth"))?;
                self.ipam(net)
                    .release(&endpoint_key(container_id, ifname))?;
                let p = self.record_path(&net.name, container_id, ifname);
                remove_if_exists(&p).map_err(io_err(&p))?;
                Ok(None)
            }
        }
    }

    /// Compares an endpoint with the kernel and the state: the bridge and the host veth on it,
    /// the container interface with its MAC, address and routes, the address reservation and
    /// the published ports. Returns every drift found (empty: all as attached).
    pub fn verify(&self, net: &NetworkConfig, ep: &Endpoint) -> Result<Vec<String>, DriverError> {
        let mut problems = Vec::new();
        let mut h = Handle::new().map_err(nl("open netlink"))?;
        let bridge = h.link_by_name(&net.bridge).map_err(nl("look up bridge"))?;
        let veth = h
            .link_by_name(&ep.host_veth)
            .map_err(nl("look up host veth"))?;
        match (&bridge, &veth) {
            (None, _) => problems.push(format!("bridge {} is missing", net.bridge)),
            (_, None) => problems.push(format!("host veth {} is missing", ep.host_veth)),
            (Some(b), Some(v)) => {
                if v.master != Some(b.index) {
                    problems.push(format!(
                        "host veth {} is not a port of {}",
                        ep.host_veth, net.bridge
                    ));
                }
                if !v.up {
                    problems.push(format!("host veth {} is down", ep.host_veth));
                }
            }
        }
        match Netns::open(&ep.netns) {
            Err(e) => problems.push(e.to_string()),
            Ok(ns) => {
                let (ifname, ip, mac, routes, gw) = (
                    ep.ifname.clone(),
                    ep.ip,
                    ep.mac,
                    ep.routes.clone(),
                    net.gateway,
                );
                let inside = ns.run(move || verify_container(&ifname, ip, mac, &routes, gw))?;
                problems.extend(inside.map_err(nl("inspect the container"))?);
            }
        }
        if ep.ipam {
            let held = self
                .ipam(net)
                .lookup(&endpoint_key(&ep.container_id, &ep.ifname))?;
            if held.is_none() || held != ep.ip.map(|n| n.addr()) {
                problems.push(format!("address reservation for {:?} is missing", ep.ip));
            }
        }
        let mut fw = Firewall::open()?;
        if let (true, Some(ip)) = (net.anti_spoof, ep.ip) {
            if !fw.has_guard(&guard_of(ep, ip.addr()))? {
                problems.push(format!(
                    "the anti-spoofing guard of {} is missing",
                    ep.host_veth
                ));
            }
        }
        {
            for p in &ep.ports {
                match fw.port_target(p)? {
                    Some((ip, port))
                        if Some(ip) == ep.ip.map(|n| n.addr()) && port == p.container_port => {}
                    _ => {
                        problems.push(format!("published port {p} is missing or points elsewhere"))
                    }
                }
            }
        }
        Ok(problems)
    }

    /// Removes everything of `net` that `keep(container id, ifname)` does not claim: endpoints,
    /// address reservations (also orphans without an endpoint), host veths on the bridge with no
    /// endpoint, and published ports into the subnet that no endpoint owns.
    pub fn gc(
        &self,
        net: &NetworkConfig,
        keep: &dyn Fn(&str, &str) -> bool,
    ) -> Result<GcReport, DriverError> {
        let mut report = GcReport::default();
        let mut kept = Vec::new();
        failpoint::hit("gc.start")?;
        for ep in self.endpoints(&net.name)? {
            if keep(&ep.container_id, &ep.ifname) {
                kept.push(ep);
            } else {
                self.detach(net, &ep.container_id, &ep.ifname)?;
                report
                    .endpoints
                    .push(endpoint_key(&ep.container_id, &ep.ifname));
            }
        }
        failpoint::hit("gc.endpoints")?;
        report.addresses = self.ipam(net).gc(|key| {
            key.split_once(':')
                .is_some_and(|(cid, ifname)| keep(cid, ifname))
        })?;
        let mut h = Handle::new().map_err(nl("open netlink"))?;
        if let Some(bridge) = h.link_by_name(&net.bridge).map_err(nl("look up bridge"))? {
            for link in h.links().map_err(nl("list links"))? {
                let ours = link.master == Some(bridge.index) && link.name.starts_with("vf");
                if ours && !kept.iter().any(|e| e.host_veth == link.name) {
                    h.delete_link_by_name(&link.name)
                        .map_err(nl("delete stray veth"))?;
                    report.veths.push(link.name);
                }
            }
        }
        failpoint::hit("gc.veths")?;
        let mut fw = Firewall::open()?;
        // Guards of ports whose veth is gone (a container removed behind ferrynet's back).
        for g in fw.guarded_ports()? {
            let gone = h
                .link_by_name(&g.veth)
                .map_err(nl("look up veth"))?
                .is_none();
            if gone && net.subnet.contains(&g.ip) {
                fw.remove_endpoint(Some(&g), g.ip, &[])?;
            }
        }
        for (port, ip) in fw.ports()? {
            let owned = kept
                .iter()
                .any(|e| e.ip.map(|n| n.addr()) == Some(ip) && e.ports.contains(&port));
            if net.subnet.contains(&ip) && !owned {
                fw.remove_ports(ip, &[port])?;
                report.ports.push(port);
            }
        }
        Ok(report)
    }

    /// Undoes an endpoint in reverse order (firewall, links, address, record), best effort:
    /// every step runs, errors are collected, and the record is kept if any step failed so
    /// that a retry can finish the job.
    fn teardown(&self, net: &NetworkConfig, ep: &Endpoint) -> Result<(), DriverError> {
        let mut errors = Vec::new();
        let key = endpoint_key(&ep.container_id, &ep.ifname);
        let ip = ep.ip.map(|n| n.addr()).or_else(|| {
            if ep.ipam {
                self.ipam(net).lookup(&key).ok().flatten()
            } else {
                None
            }
        });
        // The firewall socket stays open until the end: closing an nf_tables socket right
        // after a delete waits for the kernel's deferred destroy (an RCU grace period, ~15 ms
        // here), which otherwise overlaps with the veth delete's own wait.
        let mut fw = None;
        if let Some(ip) = ip {
            let guard = guard_of(ep, ip);
            match Firewall::open()
                .and_then(|mut f| f.remove_endpoint(Some(&guard), ip, &ep.ports).map(|_| f))
            {
                Ok(f) => fw = Some(f),
                Err(e) => errors.push(format!("remove firewall elements: {e}")),
            }
        }
        if let Err(e) = failpoint::hit("detach.ports") {
            errors.push(e.to_string());
        }
        match Handle::new().and_then(|mut h| h.delete_link_by_name(&ep.host_veth)) {
            Ok(_) => {}
            Err(e) => errors.push(format!("delete {}: {e}", ep.host_veth)),
        }
        if let Err(e) = failpoint::hit("detach.veth") {
            errors.push(e.to_string());
        }
        if ep.ipam {
            if let Err(e) = self.ipam(net).release(&key) {
                errors.push(format!("release address: {e}"));
            }
        }
        if !errors.is_empty() {
            return Err(DriverError::Detach(errors.join("; ")));
        }
        drop(fw);
        let p = self.record_path(&ep.network, &ep.container_id, &ep.ifname);
        remove_if_exists(&p).map_err(io_err(&p))?;
        Ok(())
    }
}

fn guard_of(ep: &Endpoint, ip: Ipv4Addr) -> PortGuard {
    PortGuard {
        veth: ep.host_veth.clone(),
        mac: ep.mac,
        ip,
    }
}

/// Inside the container's namespace: disable IPv6 DAD noise, address, up, lo up, routes.
/// Returns (container ifindex, host veth ifindex).
fn configure_container(
    ifname: &str,
    ip: Ipv4Net,
    gateway: Ipv4Addr,
    routes: &[RouteSpec],
) -> Result<(u32, u32), DriverError> {
    let mut h = Handle::new().map_err(nl("open netlink in container"))?;
    let link = h
        .link_by_name(ifname)
        .map_err(nl("look up container interface"))?
        .ok_or_else(|| {
            nl("look up container interface")(NetlinkError::Malformed("interface vanished"))
        })?;
    let host_index =
        link.peer_index
            .ok_or(nl("look up container interface")(NetlinkError::Malformed(
                "veth without peer",
            )))?;
    h.add_addr(link.index, ip)
        .map_err(nl("add container address"))?;
    // An IPv4 network: no IPv6 addresses, so no DAD wait and no multicast on the bridge.
    h.set_up_ipv4_only(link.index, None)
        .map_err(nl("set container interface up"))?;
    h.set_up(1).map_err(nl("set lo up"))?;
    for r in routes {
        let route = Route {
            dst: r.dst,
            gateway: Some(r.gw.unwrap_or(gateway)),
            oif: Some(link.index),
            onlink: false,
            protocol: crate::netlink::PROTO_BOOT,
        };
        match h.add_route(&route) {
            Err(e) if !e.is(libc::EEXIST) => return Err(nl("add container route")(e)),
            _ => {}
        }
    }
    Ok((link.index, host_index))
}

/// Inside the container's namespace: what [`Driver::verify`] checks there.
fn verify_container(
    ifname: &str,
    ip: Option<Ipv4Net>,
    mac: Mac,
    routes: &[RouteSpec],
    gateway: Ipv4Addr,
) -> Result<Vec<String>, NetlinkError> {
    let mut h = Handle::new()?;
    let mut problems = Vec::new();
    let Some(link) = h.link_by_name(ifname)? else {
        return Ok(vec![format!("{ifname} is missing in the container")]);
    };
    if link.mac != Some(mac) {
        problems.push(format!("{ifname} has MAC {:?}, expected {mac}", link.mac));
    }
    if !link.up {
        problems.push(format!("{ifname} is down"));
    }
    if let Some(ip) = ip {
        if !h.addrs(Some(link.index))?.iter().any(|a| a.net == ip) {
            problems.push(format!("{ifname} lacks address {ip}"));
        }
    }
    let present = h.routes()?;
    for r in routes {
        let gw = r.gw.unwrap_or(gateway);
        if !present
            .iter()
            .any(|p| p.dst == r.dst && p.gateway == Some(gw))
        {
            problems.push(format!("route {} via {gw} is missing", r.dst));
        }
    }
    Ok(problems)
}

/// What [`Driver::gc`] removed.
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub endpoints: Vec<String>,
    pub addresses: Vec<String>,
    pub veths: Vec<String>,
    pub ports: Vec<PortMapping>,
}
