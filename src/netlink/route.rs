//! Routes of the main table, both families: one generic route type, [`Route`] (IPv4) and
//! [`Route6`] (IPv6) for short.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::rtnl::*;
use super::socket::{
    attr_u32, attrs, Message, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
};
use super::NetlinkError;
use crate::family::Family;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteOf<A: Family> {
    pub dst: A::Net,
    pub gateway: Option<A>,
    pub oif: Option<u32>,
    pub onlink: bool,
    /// Who owns the route (rtm_protocol): [`PROTO_BOOT`] for container routes,
    /// [`PROTO_FERRYNET`] for the agent's, so that reconciling never touches anyone else's.
    pub protocol: u8,
}

pub type Route = RouteOf<Ipv4Addr>;
pub type Route6 = RouteOf<Ipv6Addr>;

pub const PROTO_BOOT: u8 = RTPROT_BOOT;
/// The agent's routes (an unassigned rtm_protocol value; `ip route show proto 211`).
pub const PROTO_FERRYNET: u8 = 211;

impl Handle {
    pub fn add_route<A: Family>(&mut self, route: &RouteOf<A>) -> Result<(), NetlinkError> {
        self.route_msg(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, route)
    }

    /// Adds or replaces a route to the same destination (reconcilers use this).
    pub fn replace_route<A: Family>(&mut self, route: &RouteOf<A>) -> Result<(), NetlinkError> {
        self.route_msg(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, route)
    }

    pub fn del_route<A: Family>(&mut self, route: &RouteOf<A>) -> Result<(), NetlinkError> {
        self.route_msg(RTM_DELROUTE, 0, route)
    }

    fn route_msg<A: Family>(
        &mut self,
        kind: u16,
        flags: u16,
        r: &RouteOf<A>,
    ) -> Result<(), NetlinkError> {
        // IPv4 needs link scope for a route without a gateway; IPv6 has no route scopes.
        let scope = if r.gateway.is_some() || A::AF != AF_INET {
            RT_SCOPE_UNIVERSE
        } else {
            RT_SCOPE_LINK
        };
        let mut m = Message::new(kind, flags);
        m.header(&rtmsg(
            A::AF,
            A::prefix_len(r.dst),
            scope,
            if r.onlink { RTNH_F_ONLINK } else { 0 },
            r.protocol,
        ));
        if A::prefix_len(r.dst) > 0 {
            m.attr(RTA_DST, &A::network(r.dst).bytes());
        }
        if let Some(gw) = r.gateway {
            m.attr(RTA_GATEWAY, &gw.bytes());
        }
        if let Some(oif) = r.oif {
            m.attr_u32(RTA_OIF, oif);
        }
        self.ack(m)
    }

    /// IPv4 routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        Ok(self
            .main_table::<Ipv4Addr>()?
            .into_iter()
            .map(|(route, _)| route)
            .collect())
    }

    /// IPv6 routes of the main table.
    pub fn routes6(&mut self) -> Result<Vec<Route6>, NetlinkError> {
        Ok(self
            .main_table::<Ipv6Addr>()?
            .into_iter()
            .map(|(route, _)| route)
            .collect())
    }

    /// The main table's connected routes (unicast, no gateway, an interface): the networks
    /// this namespace reaches directly, as (destination, interface index).
    pub fn connected_routes<A: Family>(&mut self) -> Result<Vec<(A::Net, u32)>, NetlinkError> {
        Ok(self
            .main_table::<A>()?
            .into_iter()
            .filter(|(r, kind)| *kind == RTN_UNICAST && r.gateway.is_none())
            .filter_map(|(r, _)| Some((r.dst, r.oif?)))
            .collect())
    }

    /// The main table's routes of one family with their rtm_type (unicast, blackhole, ...).
    fn main_table<A: Family>(&mut self) -> Result<Vec<(RouteOf<A>, u8)>, NetlinkError> {
        let mut m = Message::new(RTM_GETROUTE, NLM_F_DUMP);
        m.header(&rtmsg(A::AF, 0, 0, 0, 0));
        let mut out = Vec::new();
        for r in self.sock.dump(m)? {
            let p = &r.payload;
            if p.len() < 12 || p[0] != A::AF {
                continue;
            }
            let dst_len = p[1];
            let protocol = p[5];
            let kind = p[7];
            let mut table = p[4] as u32;
            let flags = u32::from_ne_bytes(p[8..12].try_into().unwrap());
            let mut dst = A::from_bits(0);
            let mut gateway = None;
            let mut oif = None;
            for (kind, data) in attrs(&p[12..]) {
                match kind {
                    RTA_DST => dst = A::from_bytes(data).unwrap_or(dst),
                    RTA_GATEWAY => gateway = A::from_bytes(data),
                    RTA_OIF => oif = attr_u32(data),
                    RTA_TABLE => table = attr_u32(data).unwrap_or(table),
                    _ => {}
                }
            }
            if table != RT_TABLE_MAIN as u32 || dst_len > A::MAX_PREFIX {
                continue;
            }
            let route = RouteOf {
                dst: A::with_prefix(dst, dst_len),
                gateway,
                oif,
                onlink: flags & RTNH_F_ONLINK != 0,
                protocol,
            };
            out.push((route, kind));
        }
        Ok(out)
    }

    /// The route the kernel would use to reach `ip` (`ip route get`), either family.
    pub fn route_to<A: Family>(&mut self, ip: A) -> Result<RouteOf<A>, NetlinkError> {
        let r = self.route_get(&super::RouteQuery {
            dst: ip.into(),
            src: None,
            iif: None,
        })?;
        Ok(RouteOf {
            dst: A::with_prefix(ip, A::MAX_PREFIX),
            gateway: r.gateway.and_then(|g| A::from_bytes(&ip_octets(g))),
            oif: r.oif,
            onlink: false,
            protocol: r.protocol,
        })
    }
}

fn ip_octets(ip: std::net::IpAddr) -> Vec<u8> {
    match ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}
