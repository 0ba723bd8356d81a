//! A network's host side: the bridge (fixed MAC, MTU, gateway address, up), forwarding,
//! route_localnet, and the network's firewall elements; what must hold before it is built.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::{IpNet, Ipv6Net};

use super::{io_err, nl, Driver, DriverError};
use crate::firewall::Firewall;
use crate::hostnet::{owned_by_network, subnet_conflict};
use crate::netlink::{Handle, Link, Mac, NetlinkError};
use crate::netns::write_sysctl;
use crate::network::{NetworkConfig, MTU_OF_BRIDGE};

impl Driver {
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
    pub(super) fn ensure_network_with(
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
                let mtu = match net.mtu {
                    MTU_OF_BRIDGE => super::default_mtu_in(h),
                    mtu => mtu,
                };
                match h.create_bridge(&net.bridge, mtu, Mac::from_seed(&net.bridge)) {
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
                    let gateways = net.v4.map(|f| IpNet::V4(f.gateway_net()));
                    let gateways = gateways
                        .into_iter()
                        .chain(net.v6.map(|f| IpNet::V6(f.gateway_net())));
                    for gw in gateways {
                        match h.add_addr(link.index, gw) {
                            Err(e) if !e.is(libc::EEXIST) => {
                                return Err(nl("add gateway address")(e))
                            }
                            _ => {}
                        }
                    }
                }
                if net.v4.is_some() {
                    let conf = format!("net/ipv4/conf/{}/route_localnet", net.bridge);
                    write_sysctl(&conf, "1").map_err(io_err(Path::new(&conf)))?;
                }
                if net.v6.is_some() {
                    // The gateway address and a link-local one derived from the bridge's MAC,
                    // both without DAD; no SLAAC. The kernel solicits a neighbour for a
                    // forwarded packet (another host's pod, the outside) from the outgoing
                    // device's link-local address: without one, routed IPv6 never reaches
                    // a container whose MAC the host has not learned yet.
                    let ll = Ipv6Net::new(Mac::from_seed(&net.bridge).link_local(), 64)
                        .expect("valid prefix");
                    match h.add_addr(link.index, ll) {
                        Err(e) if !e.is(libc::EEXIST) => {
                            return Err(nl("add bridge link-local address")(e))
                        }
                        _ => {}
                    }
                    h.set_up_static(link.index, None)
                        .map_err(nl("set bridge up"))?;
                } else {
                    // The bridge itself needs no IPv6 for an IPv4 network.
                    let _ =
                        write_sysctl(&format!("net/ipv6/conf/{}/disable_ipv6", net.bridge), "1");
                    h.set_up(link.index).map_err(nl("set bridge up"))?;
                }
                link
            }
        };
        if net.v4.is_some() && !h.ipv4_forwarding().map_err(nl("read ip_forward"))? {
            write_sysctl("net/ipv4/ip_forward", "1").map_err(io_err(Path::new("ip_forward")))?;
        }
        if net.v6.is_some() && !h.ipv6_forwarding().map_err(nl("read IPv6 forwarding"))? {
            crate::netns::enable_ipv6_forwarding()
                .map_err(io_err(Path::new("/proc/sys/net/ipv6/conf")))?;
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
            None => {
                let read = nl("read the host's addresses and routes");
                let ours = owned_by_network(&net.bridge);
                let v4 = match net.v4 {
                    Some(f) => subnet_conflict::<Ipv4Addr>(h, "subnet", f.subnet, &ours),
                    None => Ok(None),
                };
                let v6 = match (v4, net.v6) {
                    (Ok(None), Some(f)) => {
                        subnet_conflict::<Ipv6Addr>(h, "subnet", f.subnet, &ours)
                    }
                    (v4, _) => v4,
                };
                match v6.map_err(read)? {
                    Some(conflict) => Err(conflict.into()),
                    None => Ok(None),
                }
            }
        }
    }

    /// Records a new network and builds its host side, every check first (the other
    /// networks, then the host's own); if building fails the record goes too.
    pub fn create_network(&self, h: &mut Handle, net: &NetworkConfig) -> Result<(), DriverError> {
        let _lock = self.state.lock_networks()?;
        self.state.check_new(net)?;
        self.preflight(h, net)?;
        self.state.insert(net)?;
        if let Err(e) = self.ensure_network(h, net) {
            let _ = self.remove_network(net);
            let _ = self.state.remove(&net.name);
            return Err(e);
        }
        Ok(())
    }

    /// Removes a network's host-side state: bridge, firewall elements, IPAM state.
    pub fn remove_network(&self, net: &NetworkConfig) -> Result<(), DriverError> {
        let mut h = Handle::new().map_err(nl("open netlink"))?;
        h.delete_link_by_name(&net.bridge)
            .map_err(nl("delete bridge"))?;
        Firewall::open()?.remove_network(&Self::rules(net))?;
        // The IPv6 reservations live inside the IPv4 directory: destroy the inner one first.
        self.ipam6(net).destroy()?;
        self.ipam4(net).destroy()?;
        let dir = self.state.endpoints_dir(&net.name);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&dir)(e)),
            _ => Ok(()),
        }
    }
}
