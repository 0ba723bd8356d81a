//! An endpoint's lifecycle: attach, detach, check (verify) and GC.
//!
//! attach = validate, record the plan, then apply; any failure rolls back through the same
//! idempotent steps as detach, so a half-made endpoint never survives. A process killed at any
//! point leaves a record (written before the first change) that detach or GC cleans up.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Serialize;

use super::container::{configure_container, verify_container};
use super::{
    endpoint_key, host_veth_name, io_err, nl, pool_of, AttachRequest, Driver, DriverError,
    Endpoint, Source,
};
use crate::failpoint;
use crate::family::Family;
use crate::firewall::{EndpointAddrs, Firewall, PortGuard, PortMapping};
use crate::ipam::{Ipam, IpamError};
use crate::netlink::{Handle, Link, Mac, VethSpec};
use crate::netns::Netns;
use crate::network::{
    invalid, validate_id, validate_ifname, FamilyConfig, NetworkConfig, MTU_OF_BRIDGE,
};
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
    pub(super) fn write_record(&self, ep: &Endpoint) -> Result<(), DriverError> {
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
        check_source(net.v4.as_ref(), &req.address.v4)?;
        check_source(net.v6.as_ref(), &req.address.v6)?;
        check_ports(net, &req.ports)?;
        if let Some(id) = &req.identity {
            id.validate("")
                .map_err(|why| invalid("identity", &id.namespace, why))?;
        }
        let mut h = Handle::new().map_err(nl("open netlink"))?;
        let mut fw = Firewall::open()?;
        timer.mark("validated");
        let bridge = self.ensure_network_with(&mut h, &mut fw, net)?;
        timer.mark("network ensured");

        // 2. The addresses, then the record of the plan. A second attach of the same key
        //    stops at the first of them (KeyExists, AlreadyAttached) with nothing changed; a
        //    crash between them leaves reservations that detach releases by key.
        let key = endpoint_key(&req.container_id, &req.ifname);
        let already = || DriverError::AlreadyAttached {
            network: net.name.clone(),
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
        };
        let ipam4 = net.v4.map(|_| self.ipam4(net));
        let (ip, ipam) = reserve(ipam4, &req.address.v4, &key, already)?;
        let ipam6 = net.v6.map(|_| self.ipam6(net));
        let (ip6, ipam6) = match reserve(ipam6, &req.address.v6, &key, already) {
            Ok(r) => r,
            Err(e) => {
                self.release(net, &key, ipam, false);
                return Err(e);
            }
        };
        let routes = req
            .routes
            .iter()
            .filter(|r| match r.dst {
                IpNet::V4(_) => ip.is_some(),
                IpNet::V6(_) => ip6.is_some(),
            })
            .copied()
            .collect();
        let mut ep = Endpoint {
            network: net.name.clone(),
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: req.netns.clone(),
            host_veth: host_veth_name(&net.name, &req.container_id, &req.ifname),
            host_ifindex: None,
            container_ifindex: None,
            ip,
            ip6,
            gateway: net.v4.map(|f| f.gateway),
            gateway6: net.v6.map(|f| f.gateway),
            mac: req.mac.unwrap_or_else(Mac::random),
            host_mac: Mac::random(),
            bridge_mac: bridge.mac,
            ports: req.ports.clone(),
            routes,
            ipam,
            ipam6,
            identity: req.identity.clone(),
        };
        let recorded = failpoint::hit("attach.allocated")
            .map_err(DriverError::from)
            .and_then(|_| self.write_record(&ep));
        if let Err(e) = recorded {
            self.release(net, &key, ep.ipam, ep.ipam6);
            return Err(e);
        }

        timer.mark("addresses allocated, record written");

        // 3. Apply; on failure undo through detach's idempotent steps.
        let mut published = false;
        match self.apply(
            net,
            (&mut h, &mut fw),
            (&ns, &bridge),
            &mut ep,
            &timer,
            &mut published,
        ) {
            // Network policy, when this host enforces any: the new endpoint is in its sets and
            // dispatch map before attach returns, so it is isolated from its first packet.
            Ok(()) => match crate::policy::enforce::endpoint_changed(
                &self.state,
                || ep.policy_record(&crate::policy::enforce::node_name()),
                true,
            ) {
                Ok(()) => Ok(ep),
                Err(e) => {
                    drop(fw);
                    let _ = self.teardown_with(net, &ep, published);
                    Err(e.into())
                }
            },
            Err(e) => {
                drop(fw);
                // Elements never added need no removal: deleting absent ones costs a failed
                // transaction each (8-20 ms), which made a refused dual-stack ADD ~0.2 s.
                let _ = self.teardown_with(net, &ep, published);
                Err(e)
            }
        }
    }

    /// Gives back the reservations of `key` (best effort: a failed attach's cleanup).
    pub(super) fn release(&self, net: &NetworkConfig, key: &str, v4: bool, v6: bool) {
        if v4 {
            let _ = self.ipam4(net).release(key);
        }
        if v6 {
            let _ = self.ipam6(net).release(key);
        }
    }

    fn apply(
        &self,
        net: &NetworkConfig,
        (h, fw): (&mut Handle, &mut Firewall),
        (ns, bridge): (&Netns, &Link),
        ep: &mut Endpoint,
        timer: &StepTimer,
        published: &mut bool,
    ) -> Result<(), DriverError> {
        failpoint::hit("attach.recorded")?;
        h.create_veth(&VethSpec {
            host_name: &ep.host_veth,
            peer_name: &ep.ifname,
            peer_netns: ns.fd(),
            host_mac: Some(ep.host_mac),
            peer_mac: Some(ep.mac),
            // The bridge's, unless the network names one (see MTU_OF_BRIDGE).
            mtu: if net.mtu == MTU_OF_BRIDGE {
                bridge.mtu
            } else {
                net.mtu
            },
            master: Some(bridge.index),
            big_packets: net.big_tcp.then_some(crate::network::BIG_TCP_SIZE),
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

        let (container_index, host_index, mut in_container) =
            ns.run_here(|| configure_container(ep))??;
        ep.container_ifindex = Some(container_index);
        ep.host_ifindex = Some(host_index);
        timer.mark("container configured");
        failpoint::hit("attach.container")?;

        // No IPv6 on the host-side port, in either kind of network: it is a bridge port, and
        // every new port's link-local address, DAD and MLD reports would be flooded to all
        // other ports. Hairpin: with br_netfilter loaded, a container reaching its own
        // published port is DNATed at bridge level and must go back out of the port it came
        // in on.
        h.set_up_static(host_index, Some(net.hairpin))
            .map_err(nl("set host veth up"))?;
        timer.mark("host veth up");
        failpoint::hit("attach.host")?;

        // Anti-spoofing guard and published ports, both families: one nf_tables transaction.
        let guard = net.anti_spoof.then(|| guard_of(ep));
        if guard.is_some() || !ep.ports.is_empty() {
            fw.add_endpoint(guard.as_ref(), ep.addrs(), &ep.ports)?;
            *published = true;
        }
        timer.mark("firewall elements added");
        failpoint::hit("attach.ports")?;
        wait_until_running(&mut in_container, container_index);
        timer.mark("container interface running");
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
                // Its addresses leave the policy sets (best effort: the endpoint is gone,
                // and a stale address in a set allows or denies nobody new).
                if let Err(e) = crate::policy::enforce::endpoint_changed(
                    &self.state,
                    || ep.policy_record(&crate::policy::enforce::node_name()),
                    false,
                ) {
                    tracing::warn!("policy not refreshed after detach: {e}");
                }
                Ok(Some(ep))
            }
            None => {
                // No readable record: at most the leftovers of a crash before or while it was
                // written (nothing was published yet then, and the veth's name is derived).
                let mut h = Handle::new().map_err(nl("open netlink"))?;
                h.delete_link_by_name(&host_veth_name(&net.name, container_id, ifname))
                    .map_err(nl("delete host veth"))?;
                let key = endpoint_key(container_id, ifname);
                self.ipam4(net).release(&key)?;
                self.ipam6(net).release(&key)?;
                let p = self.record_path(&net.name, container_id, ifname);
                remove_if_exists(&p).map_err(io_err(&p))?;
                Ok(None)
            }
        }
    }

    /// Compares an endpoint with the kernel and the state: the bridge and the host veth on it,
    /// the container interface with its MAC, addresses and routes, the address reservations
    /// and the published ports. Returns every drift found (empty: all as attached).
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
                let inside = ep.clone();
                let found = ns.run(move || verify_container(&inside))?;
                problems.extend(found.map_err(nl("inspect the container"))?);
            }
        }
        let key = endpoint_key(&ep.container_id, &ep.ifname);
        if ep.ipam && self.ipam4(net).lookup(&key)? != ep.ip.map(|n| n.addr()) {
            problems.push(format!("address reservation for {:?} is missing", ep.ip));
        }
        if ep.ipam6 && self.ipam6(net).lookup(&key)? != ep.ip6.map(|n| n.addr()) {
            problems.push(format!("address reservation for {:?} is missing", ep.ip6));
        }
        let mut fw = Firewall::open()?;
        if net.anti_spoof && !fw.has_guard(&guard_of(ep))? {
            problems.push(format!(
                "the anti-spoofing guard of {} is missing",
                ep.host_veth
            ));
        }
        let addrs = addr_list(ep.addrs());
        for p in &ep.ports {
            for addr in addrs.iter().filter(|a| publishes_to(p, **a)) {
                match fw.port_target(p, addr.is_ipv6())? {
                    Some((ip, port)) if ip == *addr && port == p.container_port => {}
                    _ => problems.push(format!(
                        "published port {p} ({}) is missing or points elsewhere",
                        family_name(*addr)
                    )),
                }
            }
        }
        Ok(problems)
    }

    /// Removes everything of `net` that `keep(container id, ifname)` does not claim: endpoints,
    /// address reservations (also orphans without an endpoint), host veths on the bridge with no
    /// endpoint, and published ports into the subnets that no endpoint owns.
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
        let claimed = |key: &str| {
            key.split_once(':')
                .is_some_and(|(cid, ifname)| keep(cid, ifname))
        };
        report.addresses = self.ipam4(net).gc(claimed)?;
        for key in self.ipam6(net).gc(claimed)? {
            if !report.addresses.contains(&key) {
                report.addresses.push(key);
            }
        }
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
            let in_net = g.ip.is_some_and(|ip| net.contains(ip.into()))
                || g.ip6.iter().any(|ip| net.contains((*ip).into()));
            if gone && in_net {
                let addrs = EndpointAddrs {
                    v4: g.ip,
                    v6: g.ip6.iter().copied().find(|ip| net.contains((*ip).into())),
                };
                fw.remove_endpoint(Some(&g), addrs, &[])?;
            }
        }
        // Whatever is left of guards of vanished ports (partial ones included).
        fw.remove_stray_port_elements(|veth| {
            veth.starts_with("vf") && matches!(h.link_by_name(veth), Ok(None))
        })?;
        for (port, ip) in fw.ports()? {
            let owned = kept
                .iter()
                .any(|e| addr_list(e.addrs()).contains(&ip) && e.ports.contains(&port));
            if net.contains(ip) && !owned {
                fw.remove_ports(addrs_of(ip), &[port])?;
                if !report.ports.contains(&port) {
                    report.ports.push(port);
                }
            }
        }
        Ok(report)
    }

    /// Undoes an endpoint in reverse order (firewall, links, addresses, record), best effort:
    /// every step runs, errors are collected, and the record is kept if any step failed so
    /// that a retry can finish the job.
    fn teardown(&self, net: &NetworkConfig, ep: &Endpoint) -> Result<(), DriverError> {
        self.teardown_with(net, ep, true)
    }

    /// [`Driver::teardown`], leaving out the firewall when `published` is false (a failed
    /// attach that never reached its firewall step).
    fn teardown_with(
        &self,
        net: &NetworkConfig,
        ep: &Endpoint,
        published: bool,
    ) -> Result<(), DriverError> {
        let mut errors = Vec::new();
        let key = endpoint_key(&ep.container_id, &ep.ifname);
        // The firewall socket stays open until the end: closing an nf_tables socket right
        // after a delete waits for the kernel's deferred destroy (an RCU grace period, ~15 ms
        // here), which otherwise overlaps with the veth delete's own wait.
        let mut fw = None;
        if published && (ep.ip.is_some() || ep.ip6.is_some()) {
            let guard = guard_of(ep);
            match Firewall::open().and_then(|mut f| {
                f.remove_endpoint(Some(&guard), ep.addrs(), &ep.ports)
                    .map(|_| f)
            }) {
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
            if let Err(e) = self.ipam4(net).release(&key) {
                errors.push(format!("release address: {e}"));
            }
        }
        if ep.ipam6 {
            if let Err(e) = self.ipam6(net).release(&key) {
                errors.push(format!("release IPv6 address: {e}"));
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

/// Step 1 for one family: the address asked for fits the network (a static address of a
/// family the network lacks is an error, not ignored).
pub(super) fn check_source<A: Family>(
    family: Option<&FamilyConfig<A>>,
    source: &Source<A>,
) -> Result<(), DriverError> {
    match (family, source) {
        (None, Source::Allocate(None)) => Ok(()),
        (None, s) => Err(invalid(
            "ip",
            s.given().map(|ip| ip.to_string()).unwrap_or_default(),
            format!(
                "is an {0} address, and the network has no {0} subnet",
                A::NAME
            ),
        )
        .into()),
        (Some(f), Source::External(ip)) if !A::contains(f.subnet, A::addr(*ip)) => {
            Err(invalid("ip", ip, format!("is outside {}", f.subnet)).into())
        }
        (Some(f), Source::Allocate(Some(ip))) => Ok(pool_of(f).check(*ip)?),
        _ => Ok(()),
    }
}

/// A port published on one host address needs the container to have that family.
pub(super) fn check_ports(net: &NetworkConfig, ports: &[PortMapping]) -> Result<(), DriverError> {
    for p in ports {
        let missing = match p.host_ip {
            Some(IpAddr::V4(_)) => net.v4.is_none(),
            Some(IpAddr::V6(_)) => net.v6.is_none(),
            None => false,
        };
        if missing {
            let ip = p.host_ip.expect("checked");
            return Err(invalid(
                "publish",
                p,
                format!(
                    "publishes on an {} host address, and the network has no subnet of that family",
                    family_name(ip)
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// The addresses present, IPv4 first.
fn addr_list(a: EndpointAddrs) -> Vec<IpAddr> {
    let v4 = a.v4.map(IpAddr::V4);
    v4.into_iter().chain(a.v6.map(IpAddr::V6)).collect()
}

/// One address as the firewall's per-family pair.
fn addrs_of(ip: IpAddr) -> EndpointAddrs {
    match ip {
        IpAddr::V4(v4) => EndpointAddrs {
            v4: Some(v4),
            v6: None,
        },
        IpAddr::V6(v6) => EndpointAddrs {
            v4: None,
            v6: Some(v6),
        },
    }
}

/// Whether a port reaches the container's address `addr`: a port without a host address is
/// published in every family the container has, one with a host address only in its family.
fn publishes_to(p: &PortMapping, addr: IpAddr) -> bool {
    p.host_ip.is_none_or(|h| h.is_ipv6() == addr.is_ipv6())
}

fn family_name(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::NAME,
        IpAddr::V6(_) => Ipv6Addr::NAME,
    }
}

/// Step 2 for one family: the address with the subnet's prefix, and whether ferrynet's IPAM
/// holds it (and must give it back).
pub(super) fn reserve<A: Family>(
    ipam: Option<Ipam<A>>,
    source: &Source<A>,
    key: &str,
    already: impl Fn() -> DriverError,
) -> Result<(Option<A::Net>, bool), DriverError> {
    match (ipam, source) {
        (None, _) => Ok((None, false)),
        (Some(_), Source::External(ip)) => Ok((Some(*ip), false)),
        (Some(ipam), Source::Allocate(requested)) => {
            let ip = ipam.allocate(key, *requested).map_err(|e| match e {
                IpamError::KeyExists { .. } => already(),
                e => e.into(),
            })?;
            Ok((Some(A::with_prefix(ip, A::prefix_len(ipam.subnet()))), true))
        }
    }
}

/// The anti-spoofing guard of an endpoint's port: its MAC, its IPv4 address, its IPv6
/// addresses (the link-local one too).
pub(super) fn guard_of(ep: &Endpoint) -> PortGuard {
    PortGuard {
        veth: ep.host_veth.clone(),
        mac: ep.mac,
        ip: ep.ip.map(|n| n.addr()),
        ip6: ep
            .ip6
            .map(|n| n.addr())
            .into_iter()
            .chain(ep.link_local())
            .collect(),
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

/// Waits (briefly) until the container's interface can send. It came up before its peer, so
/// without carrier: the kernel then defers activating its queue to the link watcher, which runs
/// asynchronously once the host end comes up, and until then everything sent is dropped (the
/// noop qdisc). A container that sent at once lost its first ARP request and waited for the
/// retry a second later (measured in the policy bench: ~1 in 10 new pods probing right after
/// attach). The link watcher sets operstate up in the same pass. Best effort: a link watcher
/// slower than the bound is not an error.
fn wait_until_running(h: &mut Handle, index: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
    while !matches!(h.link_by_index(index), Ok(Some(l)) if l.oper_up)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}
