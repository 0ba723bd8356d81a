//! Out of a container: its route, its neighbour for the next hop, its veth, and the
//! anti-spoofing check on the bridge port the frame enters by.

use super::*;

impl Walk<'_> {
    /// Out of a container: its route, its neighbour for the next hop, its veth's host end.
    pub(super) fn out_of_container(&mut self, c: &mut Container) -> Result<End, TraceError> {
        let at = c.name.clone();
        let r = match c.h.route_get(&RouteQuery {
            dst: self.dst,
            src: None,
            iif: None,
        }) {
            Ok(r) => r,
            Err(e) => {
                self.hop(
                    &at,
                    HopKind::Route,
                    format!("no route to {}", self.dst),
                    None,
                    json!({}),
                );
                return Ok(End::Dropped(format!("{at}: {}", route_error(&e))));
            }
        };
        let Some(oif) = r.oif else {
            return Ok(End::Dropped(format!(
                "{at}: the route to {} names no interface",
                self.dst
            )));
        };
        let link =
            c.h.link_by_index(oif)
                .map_err(nl(format!("link {oif} in {at}")))?
                .ok_or_else(|| TraceError::BadTarget(format!("{at}: interface {oif} vanished")))?;
        // The source is the kernel's choice; ferrynet's record is only checked against it.
        let recorded = c.record.as_ref().and_then(|rec| match self.dst {
            IpAddr::V4(_) => rec.ip.map(|n| IpAddr::V4(n.addr())),
            IpAddr::V6(_) => rec.ip6.map(|n| IpAddr::V6(n.addr())),
        });
        self.src = r.prefsrc.or(recorded);
        self.first_src = self.src;
        if let (Some(k), Some(rec)) = (r.prefsrc, recorded) {
            if k != rec {
                self.inconsistencies.push(format!(
                    "{at}: the kernel sends from {k}, ferrynet's record gives the container {rec}"
                ));
            }
        }
        let src = self.src;
        self.hop(
            &at,
            HopKind::Interface,
            format!(
                "{} ifindex {}{}{}, mtu {}",
                link.name,
                link.index,
                src.map(|s| format!(", {s}")).unwrap_or_default(),
                link.mac.map(|m| format!(", mac {m}")).unwrap_or_default(),
                link.mtu
            ),
            (!link.up).then(|| "down".to_string()),
            json!({"ifindex": link.index, "ifname": link.name, "address": src, "mac": link.mac.map(|m| m.to_string()), "mtu": link.mtu, "iflink": link.peer_index}),
        );
        if !link.up {
            return Ok(End::Dropped(format!("{at} {} is down", link.name)));
        }
        if let Some(end) = self.mtu_check(&at, &link) {
            return Ok(end);
        }
        self.hop(
            &at,
            HopKind::Route,
            describe_route(self.dst, &r, &link.name),
            None,
            json!({"oif": oif, "gateway": r.gateway, "prefsrc": r.prefsrc, "matched": r.matched.map(|m| m.to_string())}),
        );
        let next = r.gateway.unwrap_or(self.dst);
        let neigh = c.h.neighbour_get(oif, next).map_err(nl("neighbour"))?;
        let dst_mac = self.neighbour_hop(&at, &link.name, next, neigh.as_ref());
        if let Some(rec) = &c.record {
            if rec.ifname != link.name {
                self.inconsistencies.push(format!(
                    "{at}: the packet leaves by {}, ferrynet's record is of {}",
                    link.name, rec.ifname
                ));
            }
        }
        // The veth's host end: the interface whose ifindex is this one's iflink, in the
        // host the container hangs off.
        if link.kind.as_deref() != Some("veth") {
            return Ok(End::Dropped(format!(
                "{at} {} is a {}, not a veth: ferrynet's trace follows veth pairs only",
                link.name,
                link.kind.as_deref().unwrap_or("device")
            )));
        }
        let host = c.host;
        let Some(peer) = link.peer_index else {
            return Ok(End::Dropped(format!("{at} {}: no veth peer", link.name)));
        };
        let hname = self.hosts.views[host].name.clone();
        let Some(veth) = self.hosts.views[host].link(peer)? else {
            return Ok(End::Dropped(format!(
                "{at} {}'s peer (ifindex {peer}) is not in {hname}",
                link.name
            )));
        };
        self.hop(
            &hname,
            HopKind::Veth,
            format!("{} ifindex {} (= {at} {}'s iflink)", veth.name, veth.index, link.name),
            None,
            json!({"ifindex": veth.index, "ifname": veth.name, "mac": veth.mac.map(|m| m.to_string())}),
        );
        if let Some(rec) = &c.record {
            if rec.host_veth != veth.name {
                self.inconsistencies.push(format!(
                    "{at}: the kernel's veth is {}, ferrynet's record names {}",
                    veth.name, rec.host_veth
                ));
            }
        }
        let Some(master) = veth.master else {
            return Ok(End::Dropped(format!(
                "{hname} {}: not a port of any bridge",
                veth.name
            )));
        };
        let Some(bridge) = self.hosts.views[host].link(master)? else {
            return Ok(End::Dropped(format!("{hname}: bridge {master} vanished")));
        };
        self.hop(
            &hname,
            HopKind::BridgePort,
            format!(
                "{} is a port of {} (ifindex {})",
                veth.name, bridge.name, bridge.index
            ),
            None,
            json!({"bridge": bridge.name, "bridge_ifindex": bridge.index}),
        );
        if let Some(rec) = &c.record {
            if let Ok(net) = self.hosts.state.load(&rec.network) {
                if net.bridge != bridge.name {
                    self.inconsistencies.push(format!(
                        "{hname}: {} is a port of {}, network {} is on {}",
                        veth.name, bridge.name, rec.network, net.bridge
                    ));
                }
            }
        }
        if let (Some(mac), Some(src)) = (link.mac, src) {
            if let Some(end) = self.guard(host, &veth.name, mac, src)? {
                return Ok(end);
            }
        }
        if let Some(end) = self.mtu_check(&hname, &bridge) {
            return Ok(end);
        }
        self.across_bridge(host, &bridge, dst_mac, next)
    }

    pub(super) fn neighbour_hop(
        &mut self,
        at: &str,
        dev: &str,
        next: IpAddr,
        neigh: Option<&crate::netlink::NeighbourEntry>,
    ) -> Option<Mac> {
        match neigh {
            Some(n) if n.mac.is_some() => {
                let mac = n.mac.unwrap();
                self.hop(
                    at,
                    HopKind::Neighbour,
                    format!("{next} dev {dev} lladdr {mac} {}", nud_name(n.state)),
                    (!n.usable()).then(|| format!("the last {} got no answer", arp(next))),
                    json!({"ip": next, "mac": mac.to_string(), "state": nud_name(n.state)}),
                );
                Some(mac)
            }
            Some(n) => {
                self.hop(
                    at,
                    HopKind::Neighbour,
                    format!("{next} dev {dev} {}", nud_name(n.state)),
                    Some(format!("no answer to {} yet", arp(next))),
                    json!({"ip": next, "state": nud_name(n.state)}),
                );
                None
            }
            None => {
                self.hop(
                    at,
                    HopKind::Neighbour,
                    format!("{next} dev {dev}: none yet"),
                    Some(format!("the first packet sends {}", ask(next))),
                    json!({"ip": next}),
                );
                None
            }
        }
    }

    /// Anti-spoofing on the port a frame enters by.
    pub(super) fn guard(
        &mut self,
        host: usize,
        veth: &str,
        mac: Mac,
        src: IpAddr,
    ) -> Result<Option<End>, TraceError> {
        let hname = self.hosts.views[host].name.clone();
        let Some(fw) = self.hosts.views[host].fw.as_mut() else {
            return Ok(None);
        };
        let verdict = fw.guard_verdict(veth, mac, src)?;
        let (object, drop) = match verdict {
            GuardVerdict::Unguarded => (format!("{veth}: not guarded"), None),
            GuardVerdict::Pass => (
                format!("{veth} may send from {mac} and {src}: pass"),
                None,
            ),
            GuardVerdict::WrongMac => (
                format!("{veth}: source MAC {mac} is not the port's"),
                Some(format!(
                    "{hname} {veth}: anti-spoofing (bridge ferrynet prerouting: iifname . ether saddr != @port_macs drop): {mac} is not this port's MAC"
                )),
            ),
            GuardVerdict::WrongSource => (
                format!("{veth}: source {src} is not the port's address"),
                Some(format!(
                    "{hname} {veth}: anti-spoofing (bridge ferrynet: iifname . {} saddr != @port_ips{} drop): {src} is not this port's address",
                    if src.is_ipv4() { "ip" } else { "ip6" },
                    if src.is_ipv4() { "" } else { "6" }
                )),
            ),
            GuardVerdict::NoIpv6 => (
                format!("{veth}: may send no IPv6"),
                Some(format!(
                    "{hname} {veth}: anti-spoofing (bridge ferrynet guard6: iifname != @ports6 drop): the port has no IPv6 address"
                )),
            ),
        };
        self.hop(
            &hname,
            HopKind::Filter,
            format!("anti-spoofing: {object}"),
            None,
            json!({"guard": format!("{verdict:?}")}),
        );
        Ok(drop.map(End::Dropped))
    }
}
