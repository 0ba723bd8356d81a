//! One-object questions to the kernel, each a single request rather than a dump: the route
//! the kernel picks for a packet (`ip route get`, also as a forwarded packet with `iif`),
//! one neighbour entry (`ip neigh get`), one bridge FDB entry (`bridge fdb get`) and the id
//! under which this namespace knows another one. `ferrynet trace` asks these so that its
//! answer is the kernel's own and costs the same on a host with one container or a thousand.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use ipnet::IpNet;

use super::rtnl::*;
use super::socket::{attr_u32, attrs, Message};
use super::{Mac, NetlinkError};

const RTA_SRC: u16 = 2;
const RTA_IIF: u16 = 3;
const RTA_PREFSRC: u16 = 7;
const RTM_F_FIB_MATCH: u32 = 0x2000;
const NDA_MASTER: u16 = 9;
const RTM_GETNSID: u16 = 90;
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;

/// What a packet would meet: the question asked of the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteQuery {
    pub dst: IpAddr,
    pub src: Option<IpAddr>,
    /// The interface the packet arrives on (a forwarded packet); `None` for one sent from
    /// this namespace.
    pub iif: Option<u32>,
}

/// The kernel's answer: the route it uses, and the table entry that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAnswer {
    /// rtm_type: RTN_UNICAST (1), RTN_LOCAL (2), RTN_BLACKHOLE (6), RTN_UNREACHABLE (7) ...
    pub kind: u8,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
    /// The source address the kernel would pick for a locally sent packet.
    pub prefsrc: Option<IpAddr>,
    /// The matched entry of the table (`ip route get ... fibmatch`): its prefix and owner.
    pub matched: Option<IpNet>,
    pub protocol: u8,
    pub onlink: bool,
}

pub const RTN_LOCAL: u8 = 2;
pub const RTN_BLACKHOLE: u8 = 6;
pub const RTN_UNREACHABLE: u8 = 7;
pub const RTN_PROHIBIT: u8 = 8;

/// A neighbour entry's state (NUD_*), as `ip neigh` names them.
pub fn nud_name(state: u16) -> &'static str {
    match state {
        0x01 => "INCOMPLETE",
        0x02 => "REACHABLE",
        0x04 => "STALE",
        0x08 => "DELAY",
        0x10 => "PROBE",
        0x20 => "FAILED",
        0x40 => "NOARP",
        0x80 => "PERMANENT",
        _ => "NONE",
    }
}

/// One neighbour entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourEntry {
    pub mac: Option<Mac>,
    pub state: u16,
}

impl NeighbourEntry {
    /// Whether the kernel would send to this MAC without asking first.
    pub fn usable(&self) -> bool {
        self.mac.is_some() && self.state & (0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80) != 0
    }
}

fn family_of(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6 as u8,
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ip_of(family: u8, data: &[u8]) -> Option<IpAddr> {
    if family == AF_INET {
        let b: [u8; 4] = data.get(..4)?.try_into().ok()?;
        Some(IpAddr::from(b))
    } else {
        let b: [u8; 16] = data.get(..16)?.try_into().ok()?;
        Some(IpAddr::from(b))
    }
}

impl Handle {
    /// The route the kernel picks for `q` (a forwarded packet when `q.iif` is set: the
    /// forwarding decision itself, including "forwarding is off" and unreachable routes,
    /// which come back as errors: EHOSTUNREACH, ENETUNREACH, EINVAL, EACCES ...).
    pub fn route_get(&mut self, q: &RouteQuery) -> Result<RouteAnswer, NetlinkError> {
        let (mut answer, _) = self.route_get_with(q, 0)?;
        // The matched table entry: a second question, as `ip route get fibmatch` asks.
        if let Ok((m, prefix)) = self.route_get_with(q, RTM_F_FIB_MATCH) {
            answer.matched = prefix;
            answer.protocol = m.protocol;
        }
        Ok(answer)
    }

    fn route_get_with(
        &mut self,
        q: &RouteQuery,
        flags: u32,
    ) -> Result<(RouteAnswer, Option<IpNet>), NetlinkError> {
        let family = family_of(q.dst);
        let max = if family == AF_INET { 32 } else { 128 };
        let mut m = Message::new(RTM_GETROUTE, 0);
        m.header(&rtmsg(family, max, 0, flags, 0));
        m.attr(RTA_DST, &ip_bytes(q.dst));
        if let Some(src) = q.src {
            m.attr(RTA_SRC, &ip_bytes(src));
        }
        if let Some(iif) = q.iif {
            m.attr_u32(RTA_IIF, iif);
        }
        let replies = self.sock.request(m)?;
        let r = replies
            .first()
            .ok_or(NetlinkError::Malformed("no route reply"))?;
        let p = &r.payload;
        if p.len() < 12 {
            return Err(NetlinkError::Malformed("short rtmsg"));
        }
        let dst_len = p[1];
        let rtm_flags = u32::from_ne_bytes(p[8..12].try_into().unwrap());
        let mut answer = RouteAnswer {
            kind: p[7],
            oif: None,
            gateway: None,
            prefsrc: None,
            matched: None,
            protocol: p[5],
            onlink: rtm_flags & RTNH_F_ONLINK != 0,
        };
        let mut dst = None;
        for (kind, data) in attrs(&p[12..]) {
            match kind {
                RTA_DST => dst = ip_of(family, data),
                RTA_OIF => answer.oif = attr_u32(data),
                RTA_GATEWAY => answer.gateway = ip_of(family, data),
                RTA_PREFSRC => answer.prefsrc = ip_of(family, data),
                _ => {}
            }
        }
        let unspecified = if family == AF_INET {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u8; 16])
        };
        let prefix = IpNet::new(dst.unwrap_or(unspecified), dst_len).ok();
        Ok((answer, prefix))
    }

    /// The neighbour entry for `ip` on interface `index`, if the kernel holds one.
    pub fn neighbour_get(
        &mut self,
        index: u32,
        ip: IpAddr,
    ) -> Result<Option<NeighbourEntry>, NetlinkError> {
        let mut m = Message::new(RTM_GETNEIGH, 0);
        m.header(&ndmsg(family_of(ip), index, 0, 0));
        m.attr(NDA_DST, &ip_bytes(ip));
        let replies = match self.sock.request(m) {
            Ok(r) => r,
            Err(e) if e.is(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(r) = replies.first() else {
            return Ok(None);
        };
        let p = &r.payload;
        if p.len() < 12 {
            return Err(NetlinkError::Malformed("short ndmsg"));
        }
        let state = u16::from_ne_bytes(p[8..10].try_into().unwrap());
        let mac = attrs(&p[12..])
            .find(|(k, _)| *k == NDA_LLADDR)
            .and_then(|(_, d)| mac_of(d));
        Ok(Some(NeighbourEntry { mac, state }))
    }

    /// Which port of bridge `bridge` the bridge would send `mac` to (`bridge fdb get MAC br
    /// BRIDGE`): `None` when it has not learned it (the frame is flooded).
    pub fn bridge_fdb_get(&mut self, bridge: u32, mac: Mac) -> Result<Option<u32>, NetlinkError> {
        let mut m = Message::new(RTM_GETNEIGH, 0);
        m.header(&ndmsg(AF_BRIDGE, 0, 0, 0));
        m.attr(NDA_LLADDR, &mac.0);
        m.attr_u32(NDA_MASTER, bridge);
        match self.sock.request(m) {
            Ok(replies) => Ok(replies.first().and_then(|r| {
                let p = &r.payload;
                (p.len() >= 12).then(|| u32::from_ne_bytes(p[4..8].try_into().unwrap()))
            })),
            Err(e) if e.is(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Where a VXLAN device sends frames for `mac` (`bridge fdb get MAC dev DEV self`): the
    /// remote VTEP's address, `None` without an entry.
    pub fn vxlan_fdb_get(&mut self, dev: u32, mac: Mac) -> Result<Option<IpAddr>, NetlinkError> {
        let mut m = Message::new(RTM_GETNEIGH, 0);
        m.header(&ndmsg(AF_BRIDGE, dev, 0, NTF_SELF));
        m.attr(NDA_LLADDR, &mac.0);
        match self.sock.request(m) {
            Ok(replies) => Ok(replies.first().and_then(|r| {
                let p = r.payload.get(12..)?;
                attrs(p)
                    .find(|(k, _)| *k == NDA_DST)
                    .and_then(|(_, d)| match d.len() {
                        4 => ip_of(AF_INET, d),
                        16 => ip_of(AF_INET6 as u8, d),
                        _ => None,
                    })
            })),
            Err(e) if e.is(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The id this namespace gives the namespace `ns` (what a veth's IFLA_LINK_NETNSID
    /// names), `None` when it has given it none.
    pub fn nsid_of(&mut self, ns: BorrowedFd<'_>) -> Result<Option<i32>, NetlinkError> {
        let mut m = Message::new(RTM_GETNSID, 0);
        m.header(&[AF_UNSPEC, 0, 0, 0]);
        m.attr_u32(NETNSA_FD, ns.as_raw_fd() as u32);
        for r in self.sock.request(m)? {
            for (kind, data) in attrs(r.payload.get(4..).unwrap_or(&[])) {
                if kind == NETNSA_NSID {
                    let id =
                        i32::from_ne_bytes(data.get(..4).unwrap_or(&[0xff; 4]).try_into().unwrap());
                    return Ok((id >= 0).then_some(id));
                }
            }
        }
        Ok(None)
    }
}
