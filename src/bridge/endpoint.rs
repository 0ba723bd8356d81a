//! An endpoint's lifecycle: attach, detach, check (verify) and GC.
//!
//! attach = validate, record the plan, then apply; any failure rolls back through the same
//! idempotent steps as detach, so a half-made endpoint never survives. A process killed at any
//! point leaves a record (written before the first change) that detach or GC cleans up.

use std::fs;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

use super::container::{configure_container, verify_container};
use super::{
    endpoint_key, host_veth_name, io_err, nl, pool_of, AddressRequest, AttachRequest, Driver,
    DriverError, Endpoint,
};
use crate::failpoint;
use crate::firewall::{Firewall, PortGuard, PortMapping};
use crate::ipam::IpamError;
use crate::netlink::{Handle, Mac, VethSpec};
use crate::netns::Netns;
use crate::network::{validate_id, validate_ifname, NetworkConfig};
use crate::util::{create_new, ensure_dir, read_if_exists, remove_if_exists, StepTimer};

impl Driver {
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

/// What [`Driver::gc`] removed.
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub endpoints: Vec<String>,
    pub addresses: Vec<String>,
    pub veths: Vec<String>,
    pub ports: Vec<PortMapping>,
}
