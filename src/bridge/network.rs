//! A network's host side: the bridge (fixed MAC, MTU, gateway address, up), forwarding,
//! route_localnet, and the network's firewall elements; what must hold before it is built.

use std::fs;
use std::path::Path;

use super::{io_err, nl, Driver, DriverError};
use crate::firewall::Firewall;
use crate::netlink::{Handle, Link, Mac, NetlinkError};
use crate::netns::write_sysctl;
use crate::network::NetworkConfig;

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
}
