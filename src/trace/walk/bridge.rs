//! Across a bridge: up to the host's routing (a frame for the bridge's own MAC), or to the
//! port the FDB names, and into the container behind that port.

use super::*;

impl Walk<'_> {
    /// On a bridge: to the host's own stack (the frame is for the bridge's MAC: routed), or
    /// to the port the FDB names for the destination MAC.
    pub(super) fn across_bridge(
        &mut self,
        host: usize,
        bridge: &Link,
        dst_mac: Option<Mac>,
        next: IpAddr,
    ) -> Result<End, TraceError> {
        let hname = self.hosts.views[host].name.clone();
        let to_bridge = match dst_mac {
            Some(m) => Some(m) == bridge.mac,
            None => self.hosts.views[host].owns(next)? == Some(bridge.index),
        };
        if to_bridge {
            self.hop(
                &hname,
                HopKind::Fdb,
                format!(
                    "{} is {}'s own MAC: up to the host's routing",
                    bridge.mac.map(|m| m.to_string()).unwrap_or_default(),
                    bridge.name
                ),
                None,
                json!({}),
            );
            return self.route_in_host(host, Some(bridge.index), &bridge.name.clone());
        }
        // Bridged to another port of the same bridge.
        let mac = match dst_mac {
            Some(m) => Some(m),
            None => self.hosts.views[host]
                .h
                .neighbour_get(bridge.index, next)
                .map_err(nl("neighbour"))?
                .and_then(|n| n.mac),
        };
        self.onto_port(host, bridge, mac, next)
    }

    /// The FDB's port for `mac` on `bridge`, then delivery into that port's container. When
    /// the kernel has not learned the MAC (or the neighbour) yet, the frame is flooded: the
    /// port it reaches is found from the container that holds `ip`.
    pub(super) fn onto_port(
        &mut self,
        host: usize,
        bridge: &Link,
        mac: Option<Mac>,
        ip: IpAddr,
    ) -> Result<End, TraceError> {
        let hname = self.hosts.views[host].name.clone();
        let port = match mac {
            Some(mac) => self.hosts.views[host]
                .h
                .bridge_fdb_get(bridge.index, mac)
                .map_err(nl("fdb"))?,
            None => None,
        };
        let port = match port {
            Some(p) => p,
            None => {
                let Some((port, owner)) = self.holder_of(host, ip)? else {
                    self.hop(
                        &hname,
                        HopKind::Fdb,
                        format!(
                            "{} not learned on {}",
                            mac.map_or_else(|| format!("{ip}'s MAC"), |m| m.to_string()),
                            bridge.name
                        ),
                        Some(format!("flooded to every port: {}", ask(ip))),
                        json!({}),
                    );
                    return Ok(End::Dropped(format!(
                        "{hname} {}: no container on it holds {ip}",
                        bridge.name
                    )));
                };
                self.hop(
                    &hname,
                    HopKind::Fdb,
                    format!(
                        "{} not learned on {} yet: flooded",
                        mac.map_or_else(|| format!("{ip}'s MAC"), |m| m.to_string()),
                        bridge.name
                    ),
                    Some(format!(
                        "{ip} is held by {owner}, behind port ifindex {port}: it answers {}",
                        ask(ip)
                    )),
                    json!({"flooded": true}),
                );
                port
            }
        };
        let Some(port_link) = self.hosts.views[host].link(port)? else {
            return Ok(End::Dropped(format!("{hname}: port {port} vanished")));
        };
        if let Some(mac) = mac {
            if !self
                .hops
                .last()
                .is_some_and(|h| h.facts.contains_key("flooded"))
            {
                self.hop(
                    &hname,
                    HopKind::Fdb,
                    format!("{mac} → port {} (ifindex {})", port_link.name, port_link.index),
                    None,
                    json!({"mac": mac.to_string(), "port": port_link.name, "port_ifindex": port_link.index}),
                );
            }
        }
        if port_link.master != Some(bridge.index) {
            return Ok(End::Dropped(format!(
                "{hname} {}: not a port of {} (the frame cannot reach it)",
                port_link.name, bridge.name
            )));
        }
        self.deliver(host, &port_link)
    }

    /// The host port behind which a container holds `ip`, and the container's name: by
    /// ferrynet's IPAM on the local host, else by asking the containers of a peer host.
    pub(super) fn holder_of(
        &mut self,
        host: usize,
        ip: IpAddr,
    ) -> Result<Option<(u32, String)>, TraceError> {
        let c = if host == 0 {
            self.hosts.container_by_ip(ip)?
        } else {
            self.hosts.container_with_addr(host, ip)?
        };
        let Some(mut c) = c else { return Ok(None) };
        let ifname = c
            .record
            .as_ref()
            .map_or("eth0", |r| r.ifname.as_str())
            .to_string();
        let link = c.h.link_by_name(&ifname).map_err(nl("link"))?;
        Ok(link.and_then(|l| l.peer_index).map(|p| (p, c.name.clone())))
    }

    /// Into the container behind host port `port`.
    pub(super) fn deliver(&mut self, host: usize, port: &Link) -> Result<End, TraceError> {
        let hname = self.hosts.views[host].name.clone();
        let Some(mut c) = self.hosts.container_on_port(host, port, Some(self.dst))? else {
            self.inconsistencies.push(format!(
                "{hname} {}: its peer's namespace is not under /run/netns",
                port.name
            ));
            return Ok(End::Delivered(format!("{hname} port {}", port.name)));
        };
        let Some(index) = port.peer_index else {
            return Ok(End::Dropped(format!("{hname} {}: no veth peer", port.name)));
        };
        let at = c.name.clone();
        let link = c
            .h
            .link_by_index(index)
            .map_err(nl("link"))?
            .ok_or_else(|| TraceError::BadTarget(format!("{at}: interface {index} vanished")))?;
        let holds = match self.dst {
            IpAddr::V4(a) => {
                c.h.addrs(Some(index))
                    .map_err(nl("addresses"))?
                    .iter()
                    .any(|x| x.net.addr() == a)
            }
            IpAddr::V6(a) => {
                c.h.addrs6(Some(index))
                    .map_err(nl("addresses"))?
                    .iter()
                    .any(|x| x.net.addr() == a)
            }
        };
        self.hop(
            &at,
            HopKind::Delivery,
            format!(
                "{} ifindex {} (iflink {} = {}), mac {}",
                link.name,
                link.index,
                port.index,
                port.name,
                link.mac.map(|m| m.to_string()).unwrap_or_default()
            ),
            None,
            json!({"ifindex": link.index, "ifname": link.name, "address": self.dst, "mac": link.mac.map(|m| m.to_string()), "netns": c.path}),
        );
        if !link.up {
            return Ok(End::Dropped(format!("{at} {} is down", link.name)));
        }
        if !holds {
            return Ok(End::Dropped(format!(
                "{at} {} does not hold {}",
                link.name, self.dst
            )));
        }
        if let Some(end) = self.mtu_check(&at, &link) {
            return Ok(end);
        }
        Ok(End::Delivered(format!("{at} {}", link.name)))
    }
}
