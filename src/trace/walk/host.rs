//! A host's routing decision: published ports (DNAT), the route the kernel picks, isolation
//! in the forward chain, VXLAN to a peer, masquerade and direct routes out of the host.

use super::*;

impl Walk<'_> {
    /// A published port: the DNAT the prerouting (or output) chain applies to a packet for
    /// one of the host's addresses.
    pub(super) fn published(&mut self, host: usize) -> Result<(), TraceError> {
        let (Some(port), Some(proto)) = (self.port, self.l4()) else {
            return Ok(());
        };
        let hname = self.hosts.views[host].name.clone();
        let v6 = self.dst.is_ipv6();
        let Some(fw) = self.hosts.views[host].fw.as_mut() else {
            return Ok(());
        };
        let specific = PortMapping {
            host_port: port,
            container_port: port,
            protocol: proto,
            host_ip: Some(self.dst),
        };
        let any = PortMapping {
            host_ip: None,
            ..specific
        };
        let (target, map) = match fw.port_target(&specific, v6)? {
            Some(t) => (Some(t), if v6 { "ports_ip6" } else { "ports_ip" }),
            None => (
                fw.port_target(&any, v6)?,
                if v6 { "ports6" } else { "ports" },
            ),
        };
        let Some((ip, cport)) = target else {
            return Ok(());
        };
        let hairpin = match self.src {
            Some(s) => fw.in_container_subnet(s)?,
            None => false,
        };
        self.hop(
            &hname,
            HopKind::Nat,
            format!("dnat {}:{port}/{proto} to {ip}:{cport} (published port, map {map})", self.dst),
            hairpin.then(|| "from a container subnet: also masqueraded (hairpin), so the reply comes back through the host".into()),
            json!({"dnat": ip, "port": cport, "map": map}),
        );
        self.dst = ip;
        self.port = Some(cport);
        Ok(())
    }

    pub(super) fn l4(&self) -> Option<Protocol> {
        match self.proto {
            Proto::Tcp => Some(Protocol::Tcp),
            Proto::Udp => Some(Protocol::Udp),
            Proto::Icmp => None,
        }
    }

    /// A host's routing decision for a packet arriving on `iif` (None: sent by the host).
    pub(super) fn route_in_host(
        &mut self,
        host: usize,
        iif: Option<u32>,
        iif_name: &str,
    ) -> Result<End, TraceError> {
        if self.hops.len() > MAX_HOPS {
            return Ok(End::Dropped("the path loops".into()));
        }
        let hname = self.hosts.views[host].name.clone();
        let is_local = |v: &mut crate::trace::HostView, ip: IpAddr| -> Result<bool, TraceError> {
            Ok(v.owns(ip)?.is_some())
        };
        if is_local(&mut self.hosts.views[host], self.dst)? {
            self.published(host)?;
        }
        let q = RouteQuery {
            dst: self.dst,
            src: if iif.is_some() { self.src } else { None },
            iif,
        };
        let r = match self.hosts.views[host].h.route_get(&q) {
            Ok(r) => r,
            Err(e) => {
                let forwarding = match self.dst {
                    IpAddr::V4(_) => self.hosts.views[host].h.ipv4_forwarding(),
                    IpAddr::V6(_) => self.hosts.views[host].h.ipv6_forwarding(),
                }
                .unwrap_or(true);
                self.hop(
                    &hname,
                    HopKind::Route,
                    format!("{} from {iif_name}: {}", self.dst, route_error(&e)),
                    None,
                    json!({}),
                );
                return Ok(End::Dropped(if iif.is_some() && !forwarding {
                    format!("{hname}: forwarding is off for IPv{}", family_of(self.dst))
                } else {
                    format!("{hname}: {} for {}", route_error(&e), self.dst)
                }));
            }
        };
        if iif.is_none() && self.src.is_none() {
            self.src = r.prefsrc;
            self.first_src = self.src;
        }
        if r.kind == RTN_LOCAL {
            self.hop(
                &hname,
                HopKind::Route,
                format!("{} is local to {hname}", self.dst),
                None,
                json!({"kind": "local"}),
            );
            let what = match (self.port, self.proto) {
                (Some(p), proto) => format!(
                    "{hname} itself ({}:{p}/{proto}: no published port matches)",
                    self.dst
                ),
                _ => format!("{hname} itself"),
            };
            return Ok(End::Delivered(what));
        }
        let Some(oif) = r.oif else {
            return Ok(End::Dropped(format!(
                "{hname}: the route to {} names no interface",
                self.dst
            )));
        };
        let Some(out) = self.hosts.views[host].link(oif)? else {
            return Ok(End::Dropped(format!("{hname}: interface {oif} vanished")));
        };
        let mut note = None;
        if r.protocol == PROTO_FERRYNET || r.protocol == PROTO_BIRD {
            if let Some(m) = r.matched {
                match self.hosts.lease_of(m.addr()) {
                    Some(l) => {
                        note = Some(format!(
                            "the subnet of node {} (public address {})",
                            l.attrs.node, l.attrs.public_ip
                        ))
                    }
                    None if self.hosts.leases.is_some() => self.inconsistencies.push(format!(
                        "{hname}: a route to {m} via {} but no lease holds that subnet",
                        out.name
                    )),
                    None => {}
                }
            }
        }
        self.hop(
            &hname,
            HopKind::Route,
            describe_route(self.dst, &r, &out.name),
            note,
            json!({"oif": oif, "gateway": r.gateway, "matched": r.matched.map(|m| m.to_string()), "protocol": protocol_name(r.protocol)}),
        );
        if let Some(end) = self.mtu_check(&hname, &out) {
            return Ok(end);
        }
        if let Some(end) = self.forward_filter(host, iif.map(|_| iif_name), &out.name)? {
            return Ok(end);
        }
        match out.kind.as_deref() {
            Some("bridge") => {
                let next = r.gateway.unwrap_or(self.dst);
                let neigh = self.hosts.views[host]
                    .h
                    .neighbour_get(oif, next)
                    .map_err(nl("neighbour"))?;
                let mac = self.neighbour_hop(&hname, &out.name, next, neigh.as_ref());
                self.onto_port(host, &out, mac, next)
            }
            Some("vxlan") => self.vxlan(host, &out, &r),
            _ => self.leave_host(host, &out, &r),
        }
    }

    /// The `inet` forward chain: isolation between networks.
    pub(super) fn forward_filter(
        &mut self,
        host: usize,
        iif: Option<&str>,
        oif: &str,
    ) -> Result<Option<End>, TraceError> {
        let Some(iif) = iif else { return Ok(None) };
        let dnat = self
            .hops
            .iter()
            .any(|h| h.kind == HopKind::Nat && h.facts.contains_key("dnat"));
        let hname = self.hosts.views[host].name.clone();
        let Some(fw) = self.hosts.views[host].fw.as_mut() else {
            return Ok(None);
        };
        match fw.isolation(iif, oif)? {
            Isolation::SameNetwork => {
                self.hop(&hname, HopKind::Filter, format!("forward {iif} → {oif}: accept (one network: iifname . oifname @bridge_pairs)"), None, json!({"isolation": "same-network"}));
                Ok(None)
            }
            Isolation::Isolated if dnat => {
                self.hop(
                    &hname,
                    HopKind::Filter,
                    format!("forward {iif} → {oif}: accept (ct status dnat: a published port)"),
                    None,
                    json!({"isolation": "dnat"}),
                );
                Ok(None)
            }
            Isolation::Isolated => {
                self.hop(
                    &hname,
                    HopKind::Filter,
                    format!("forward {iif} → {oif}: drop (iifname @bridges oifname @bridges)"),
                    None,
                    json!({"isolation": "isolated"}),
                );
                Ok(Some(End::Dropped(format!(
                    "{hname}: isolation between networks ({iif} → {oif}: inet ferrynet forward drops traffic between two ferrynet bridges)"
                ))))
            }
            Isolation::NotApplicable => Ok(None),
        }
    }

    /// VXLAN: the permanent neighbour of the peer's gateway, the FDB entry for its VTEP MAC,
    /// the underlay route to the VTEP, then the peer host.
    pub(super) fn vxlan(
        &mut self,
        host: usize,
        dev: &Link,
        r: &RouteAnswer,
    ) -> Result<End, TraceError> {
        let hname = self.hosts.views[host].name.clone();
        let Some(gw) = r.gateway else {
            return Ok(End::Dropped(format!(
                "{hname} {}: a VXLAN route without a gateway",
                dev.name
            )));
        };
        let neigh = self.hosts.views[host]
            .h
            .neighbour_get(dev.index, gw)
            .map_err(nl("neighbour"))?;
        let Some(mac) = neigh.and_then(|n| n.mac) else {
            self.hop(
                &hname,
                HopKind::Neighbour,
                format!("{gw} dev {}: none", dev.name),
                None,
                json!({"ip": gw}),
            );
            return Ok(End::Dropped(format!(
                "{hname} {}: no neighbour entry for {gw} (the VXLAN path needs the permanent entry the agent writes; nothing answers {} on it)",
                dev.name,
                arp(gw)
            )));
        };
        let state = neigh.map(|n| n.state).unwrap_or(0);
        self.hop(
            &hname,
            HopKind::Neighbour,
            format!("{gw} dev {} lladdr {mac} {}", dev.name, nud_name(state)),
            None,
            json!({"ip": gw, "mac": mac.to_string(), "state": nud_name(state)}),
        );
        let vtep = self.hosts.views[host]
            .h
            .vxlan_fdb_get(dev.index, mac)
            .map_err(nl("vxlan fdb"))?;
        let Some(vtep) = vtep else {
            self.hop(
                &hname,
                HopKind::Vxlan,
                format!("{mac} dev {}: no FDB entry", dev.name),
                None,
                json!({"mac": mac.to_string()}),
            );
            return Ok(End::Dropped(format!(
                "{hname} {}: no FDB entry for {mac}: the frame has no VTEP to go to",
                dev.name
            )));
        };
        self.hop(
            &hname,
            HopKind::Vxlan,
            format!(
                "{mac} dev {} dst {vtep} (encapsulated: +{} bytes)",
                dev.name,
                if vtep.is_ipv4() { 50 } else { 70 }
            ),
            None,
            json!({"mac": mac.to_string(), "vtep": vtep}),
        );
        let u = match self.hosts.views[host].h.route_get(&RouteQuery {
            dst: vtep,
            src: None,
            iif: None,
        }) {
            Ok(u) => u,
            Err(e) => {
                return Ok(End::Dropped(format!(
                    "{hname}: no underlay route to VTEP {vtep}: {}",
                    route_error(&e)
                )))
            }
        };
        let uname = match u.oif {
            Some(i) => self.hosts.views[host]
                .link(i)?
                .map(|l| l.name)
                .unwrap_or_default(),
            None => String::new(),
        };
        self.hop(
            &hname,
            HopKind::Underlay,
            describe_route(vtep, &u, &uname),
            None,
            json!({"vtep": vtep, "oif": u.oif}),
        );
        let Some((peer, _)) = self.hosts.host_owning(vtep)? else {
            return Ok(End::Delivered(format!(
                "VTEP {vtep}{} (its host is not visible here: name it with --host)",
                self.node_of(vtep)
            )));
        };
        if peer == host {
            return Ok(End::Dropped(format!(
                "{hname}: the VTEP {vtep} is this host's own address"
            )));
        }
        let pname = self.hosts.views[peer].name.clone();
        let Some(pdev) = self.hosts.views[peer]
            .h
            .link_by_name(&dev.name)
            .map_err(nl("link"))?
        else {
            return Ok(End::Dropped(format!(
                "{pname}: no VXLAN device {} to decapsulate",
                dev.name
            )));
        };
        self.hop(
            &pname,
            HopKind::Vxlan,
            format!("decapsulated on {} (ifindex {})", pdev.name, pdev.index),
            None,
            json!({"ifindex": pdev.index}),
        );
        self.route_in_host(peer, Some(pdev.index), &pdev.name)
    }

    pub(super) fn node_of(&self, ip: IpAddr) -> String {
        self.hosts
            .leases
            .iter()
            .flatten()
            .find(|l| {
                IpAddr::from(l.attrs.public_ip) == ip
                    || l.attrs.public_ip6.map(IpAddr::from) == Some(ip)
            })
            .map(|l| format!(", node {}", l.attrs.node))
            .unwrap_or_default()
    }

    /// Out through a non-ferrynet interface: masquerade, the next hop, and a peer host if the
    /// next hop is one the trace can see (host-gw, BGP).
    pub(super) fn leave_host(
        &mut self,
        host: usize,
        out: &Link,
        r: &RouteAnswer,
    ) -> Result<End, TraceError> {
        let hname = self.hosts.views[host].name.clone();
        if let Some(src) = self.src {
            let dnat = self.hops.iter().any(|h| h.facts.contains_key("dnat"));
            let masq = match self.hosts.views[host].fw.as_mut() {
                Some(fw) if !dnat => fw.masquerades(src, self.dst)?,
                _ => false,
            };
            if masq {
                let to = self.hosts.views[host]
                    .h
                    .route_get(&RouteQuery {
                        dst: self.dst,
                        src: None,
                        iif: None,
                    })
                    .ok()
                    .and_then(|x| x.prefsrc);
                self.hop(
                    &hname,
                    HopKind::Nat,
                    format!("masquerade {src} to {}", to.map(|t| t.to_string()).unwrap_or_else(|| format!("{}'s address", out.name))),
                    Some("the source is a masqueraded container subnet, the destination no container's".into()),
                    json!({"masquerade": to}),
                );
                if let Some(t) = to {
                    self.src = Some(t);
                }
            }
        }
        let next = r.gateway.unwrap_or(self.dst);
        let neigh = self.hosts.views[host]
            .h
            .neighbour_get(out.index, next)
            .map_err(nl("neighbour"))?;
        self.neighbour_hop(&hname, &out.name, next, neigh.as_ref());
        match self.hosts.host_owning(next)? {
            Some((peer, index)) if peer != host => {
                let pname = self.hosts.views[peer].name.clone();
                let iname = self.hosts.views[peer]
                    .link(index)?
                    .map(|l| l.name)
                    .unwrap_or_default();
                self.hop(
                    &pname,
                    HopKind::Underlay,
                    format!("arrives on {iname} ({next})"),
                    None,
                    json!({"ifindex": index}),
                );
                self.route_in_host(peer, Some(index), &iname)
            }
            _ => Ok(End::Delivered(format!(
                "{} via {hname} {}{} (it leaves the namespaces this trace sees)",
                self.dst,
                out.name,
                self.node_of(next)
            ))),
        }
    }
}
