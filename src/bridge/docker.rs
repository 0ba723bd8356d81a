//! Endpoints in two steps, for a runtime that moves the interface into the container itself
//! (Docker's libnetwork): [`Driver::prepare_endpoint`] validates, reserves the addresses and
//! writes the record (no kernel change); [`Driver::plug_endpoint`] makes the veth pair in the
//! caller's own namespace (host end on the bridge and up, the anti-spoofing guard), and the
//! runtime moves the other end into the container, names it and gives it its addresses and
//! routes. [`Driver::set_ports`] publishes ports later (Docker's external connectivity), and
//! [`Driver::detach`] undoes it all, as for any endpoint: the same record, reservations,
//! guard and teardown as [`Driver::attach`], only the order differs.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use ipnet::IpNet;

use super::endpoint::{check_ports, check_source, guard_of, reserve};
use super::{
    endpoint_key, host_veth_name, io_err, nl, AddressRequest, Driver, DriverError, Endpoint,
    RouteSpec,
};
use crate::failpoint;
use crate::firewall::{Firewall, PortMapping};
use crate::netlink::{Handle, Mac, VethSpec};
use crate::network::{validate_id, validate_ifname, NetworkConfig, MTU_OF_BRIDGE};
use crate::util::write_atomic;

/// What [`Driver::prepare_endpoint`] needs: the endpoint's key (container id, ifname), its
/// addresses and MAC.
#[derive(Debug, Clone)]
pub struct PrepareRequest {
    pub container_id: String,
    /// The endpoint's name in ferrynet's records (the runtime picks the container's own).
    pub ifname: String,
    pub address: AddressRequest,
    /// Default: derived from the IPv4 address (`02:42:` + its four bytes, as Docker's bridge
    /// does, so a container restarted with its old address keeps its MAC and the neighbours'
    /// caches stay right), else from the endpoint's key.
    pub mac: Option<Mac>,
}

/// The MAC Docker's bridge gives an IPv4 address: 02:42 followed by the address's bytes.
pub fn mac_of_ipv4(ip: std::net::Ipv4Addr) -> Mac {
    let o = ip.octets();
    Mac([0x02, 0x42, o[0], o[1], o[2], o[3]])
}

impl Driver {
    /// Step 1: validates, reserves the addresses in ferrynet's IPAM (a given address is
    /// reserved as given, so that nothing else on the network takes it) and writes the
    /// record. Nothing in the kernel changes; on error nothing of the endpoint remains.
    pub fn prepare_endpoint(
        &self,
        net: &NetworkConfig,
        req: &PrepareRequest,
    ) -> Result<Endpoint, DriverError> {
        net.validate()?;
        validate_id("container id", &req.container_id)?;
        validate_ifname("ifname", &req.ifname)?;
        check_source(net.v4.as_ref(), &req.address.v4)?;
        check_source(net.v6.as_ref(), &req.address.v6)?;
        let key = endpoint_key(&req.container_id, &req.ifname);
        let already = || DriverError::AlreadyAttached {
            network: net.name.clone(),
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
        };
        let (ip, ipam) = reserve(
            net.v4.map(|_| self.ipam4(net)),
            &req.address.v4,
            &key,
            already,
        )?;
        let (ip6, ipam6) = match reserve(
            net.v6.map(|_| self.ipam6(net)),
            &req.address.v6,
            &key,
            already,
        ) {
            Ok(r) => r,
            Err(e) => {
                self.release(net, &key, ipam, false);
                return Err(e);
            }
        };
        let mac = req.mac.unwrap_or_else(|| match ip {
            Some(ip) => mac_of_ipv4(ip.addr()),
            None => Mac::from_seed(&key),
        });
        let ep = Endpoint {
            network: net.name.clone(),
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            // Known when the endpoint is plugged.
            netns: Default::default(),
            host_veth: host_veth_name(&net.name, &req.container_id, &req.ifname),
            host_ifindex: None,
            container_ifindex: None,
            ip,
            ip6,
            gateway: net.v4.map(|f| f.gateway),
            gateway6: net.v6.map(|f| f.gateway),
            mac,
            host_mac: Mac::random(),
            bridge_mac: None,
            ports: Vec::new(),
            identity: None,
            routes: RouteSpec::defaults()
                .into_iter()
                .filter(|r| match r.dst {
                    IpNet::V4(_) => ip.is_some(),
                    IpNet::V6(_) => ip6.is_some(),
                })
                .collect(),
            ipam,
            ipam6,
        };
        // A crash here leaves reservations without a record: the plugin's GC takes them.
        if let Err(e) = failpoint::hit("docker.reserved")
            .map_err(DriverError::from)
            .and_then(|()| self.write_record(&ep))
        {
            self.release(net, &key, ipam, ipam6);
            return Err(e);
        }
        Ok(ep)
    }

    /// Step 2: makes sure the network's host side exists, creates the veth pair in the
    /// caller's namespace — the host end (`ep.host_veth`) a port of the bridge, up, hairpin
    /// as the network says; the other end `peer_name`, with the endpoint's MAC, for the
    /// runtime to move — and adds the anti-spoofing guard. `sandbox` is recorded as the
    /// endpoint's namespace. A leftover of an earlier plug of the same endpoint (a crash, a
    /// retried call) is replaced. On error the kernel is as before and the record stays, for
    /// [`Driver::detach`].
    pub fn plug_endpoint(
        &self,
        net: &NetworkConfig,
        container_id: &str,
        ifname: &str,
        peer_name: &str,
        sandbox: &Path,
    ) -> Result<Endpoint, DriverError> {
        validate_ifname("peer name", peer_name)?;
        let mut ep = self.existing(net, container_id, ifname)?;
        let mut h = Handle::new().map_err(nl("open netlink"))?;
        let mut fw = Firewall::open()?;
        let bridge = self.ensure_network_with(&mut h, &mut fw, net)?;
        let guard = net.anti_spoof.then(|| guard_of(&ep));
        if h.delete_link_by_name(&ep.host_veth)
            .map_err(nl("delete a leftover host veth"))?
        {
            fw.remove_endpoint(guard.as_ref(), ep.addrs(), &[])?;
        }
        let home_path = Path::new("/proc/thread-self/ns/net");
        let home = File::open(home_path).map_err(io_err(home_path))?;
        h.create_veth(&VethSpec {
            host_name: &ep.host_veth,
            host_mac: Some(ep.host_mac),
            peer_name,
            peer_netns: home.as_fd(),
            peer_mac: Some(ep.mac),
            mtu: if net.mtu == MTU_OF_BRIDGE {
                bridge.mtu
            } else {
                net.mtu
            },
            master: Some(bridge.index),
            big_packets: net.big_tcp.then_some(crate::network::BIG_TCP_SIZE),
        })
        .map_err(|e| {
            if e.is(libc::EEXIST) {
                DriverError::IfnameTaken {
                    ifname: peer_name.to_string(),
                    netns: home_path.to_path_buf(),
                }
            } else {
                nl("create veth pair")(e)
            }
        })?;
        let plugged = (|| -> Result<(), DriverError> {
            // A crash here leaves a veth pair the record does not know yet: DeleteEndpoint
            // and GC find it by its derived name.
            failpoint::hit("docker.veth")?;
            let host = h
                .link_by_name(&ep.host_veth)
                .map_err(nl("look up host veth"))?
                .ok_or_else(|| {
                    nl("look up host veth")(crate::netlink::NetlinkError::Malformed(
                        "host veth vanished",
                    ))
                })?;
            h.set_up_static(host.index, Some(net.hairpin))
                .map_err(nl("set host veth up"))?;
            if let Some(g) = &guard {
                fw.add_endpoint(Some(g), ep.addrs(), &[])?;
            }
            ep.host_ifindex = Some(host.index);
            ep.netns = sandbox.to_path_buf();
            ep.bridge_mac = bridge.mac;
            self.rewrite_record(&ep)?;
            // Network policy, when this host enforces any: in its sets before Join returns
            // (namespace `default`, no labels: `ferrynet endpoint label` gives it some).
            crate::policy::enforce::endpoint_changed(
                &self.state,
                || ep.policy_record(&crate::policy::enforce::node_name()),
                true,
            )?;
            Ok(())
        })();
        if let Err(e) = plugged {
            let _ = fw.remove_endpoint(guard.as_ref(), ep.addrs(), &[]);
            let _ = h.delete_link_by_name(&ep.host_veth);
            return Err(e);
        }
        Ok(ep)
    }

    /// Makes the endpoint's published ports `ports` (one nf_tables batch each way): the
    /// record lists every port that may be in the table before the table changes, so a crash
    /// at any point leaves nothing that detach does not remove.
    pub fn set_ports(
        &self,
        net: &NetworkConfig,
        container_id: &str,
        ifname: &str,
        ports: &[PortMapping],
    ) -> Result<Endpoint, DriverError> {
        check_ports(net, ports)?;
        let mut ep = self.existing(net, container_id, ifname)?;
        let added: Vec<PortMapping> = ports
            .iter()
            .filter(|p| !ep.ports.contains(p))
            .copied()
            .collect();
        let removed: Vec<PortMapping> = ep
            .ports
            .iter()
            .filter(|p| !ports.contains(p))
            .copied()
            .collect();
        if added.is_empty() && removed.is_empty() {
            return Ok(ep);
        }
        if !added.is_empty() {
            let mut union = ep.clone();
            union.ports.extend(added.iter().copied());
            self.rewrite_record(&union)?;
        }
        let mut fw = Firewall::open()?;
        if !removed.is_empty() {
            fw.remove_ports(ep.addrs(), &removed)?;
        }
        if !added.is_empty() {
            if let Err(e) = fw.add_ports(ep.addrs(), &added) {
                ep.ports.retain(|p| !removed.contains(p));
                self.rewrite_record(&ep)?;
                return Err(e.into());
            }
        }
        ep.ports = ports.to_vec();
        self.rewrite_record(&ep)?;
        Ok(ep)
    }

    pub(super) fn existing(
        &self,
        net: &NetworkConfig,
        container_id: &str,
        ifname: &str,
    ) -> Result<Endpoint, DriverError> {
        validate_id("container id", container_id)?;
        validate_ifname("ifname", ifname)?;
        self.endpoint(&net.name, container_id, ifname)?
            .ok_or_else(|| DriverError::NoEndpoint {
                network: net.name.clone(),
                container_id: container_id.to_string(),
                ifname: ifname.to_string(),
            })
    }

    /// Replaces an existing record atomically (readers see the old or the new one).
    fn rewrite_record(&self, ep: &Endpoint) -> Result<(), DriverError> {
        let p = self.record_path(&ep.network, &ep.container_id, &ep.ifname);
        let data = serde_json::to_vec_pretty(ep).expect("serializable");
        write_atomic(&p, &data).map_err(io_err(&p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_macs() {
        assert_eq!(
            mac_of_ipv4("10.90.0.2".parse().unwrap()).to_string(),
            "02:42:0a:5a:00:02"
        );
    }
}
