//! Neighbour (ARP and NDP) entries and bridge FDB entries.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::rtnl::*;
use super::socket::{attrs, Message, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use super::{Mac, NetlinkError};
use crate::family::Family;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourOf<A: Family> {
    pub index: u32,
    pub ip: A,
    pub mac: Option<Mac>,
}

/// An ARP entry.
pub type Neighbour = NeighbourOf<Ipv4Addr>;
/// An NDP entry.
pub type Neighbour6 = NeighbourOf<Ipv6Addr>;

impl Handle {
    /// A permanent ARP or NDP entry (replaced if present).
    pub fn set_neighbour<A: Family>(
        &mut self,
        index: u32,
        ip: A,
        mac: Mac,
    ) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE);
        m.header(&ndmsg(A::AF, index, NUD_PERMANENT, 0));
        m.attr(NDA_DST, &ip.bytes());
        m.attr(NDA_LLADDR, &mac.0);
        self.ack(m)
    }

    pub fn del_neighbour<A: Family>(&mut self, index: u32, ip: A) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_DELNEIGH, 0);
        m.header(&ndmsg(A::AF, index, 0, 0));
        m.attr(NDA_DST, &ip.bytes());
        self.ack(m)
    }

    /// ARP entries, of one link or of all.
    pub fn neighbours(&mut self, index: Option<u32>) -> Result<Vec<Neighbour>, NetlinkError> {
        self.neighbours_of(index)
    }

    /// NDP entries, of one link or of all.
    pub fn neighbours6(&mut self, index: Option<u32>) -> Result<Vec<Neighbour6>, NetlinkError> {
        self.neighbours_of(index)
    }

    fn neighbours_of<A: Family>(
        &mut self,
        index: Option<u32>,
    ) -> Result<Vec<NeighbourOf<A>>, NetlinkError> {
        let mut m = Message::new(RTM_GETNEIGH, NLM_F_DUMP);
        m.header(&ndmsg(A::AF, 0, 0, 0));
        let mut out = Vec::new();
        for r in self.sock.dump(m)? {
            let p = &r.payload;
            if p.len() < 12 || p[0] != A::AF {
                continue;
            }
            let idx = u32::from_ne_bytes(p[4..8].try_into().unwrap());
            if index.is_some_and(|i| i != idx) {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for (kind, data) in attrs(&p[12..]) {
                match kind {
                    NDA_DST => ip = A::from_bytes(data),
                    NDA_LLADDR => mac = mac_of(data),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.push(NeighbourOf {
                    index: idx,
                    ip,
                    mac,
                });
            }
        }
        Ok(out)
    }

    /// `bridge fdb append MAC dev DEV dst IP self permanent` (VXLAN peers; the destination
    /// is of the VXLAN device's underlay family).
    pub fn append_fdb(&mut self, index: u32, mac: Mac, dst: IpAddr) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_APPEND);
        m.header(&ndmsg(AF_BRIDGE, index, NUD_PERMANENT, NTF_SELF));
        m.attr(NDA_LLADDR, &mac.0);
        m.attr(NDA_DST, &octets(dst));
        self.ack(m)
    }

    /// The FDB entries of one device that point at a remote IP (VXLAN): (MAC, destination).
    pub fn fdb(&mut self, index: u32) -> Result<Vec<(Mac, IpAddr)>, NetlinkError> {
        let mut m = Message::new(RTM_GETNEIGH, NLM_F_DUMP);
        m.header(&ndmsg(AF_BRIDGE, 0, 0, 0));
        let mut out = Vec::new();
        for r in self.sock.dump(m)? {
            let p = &r.payload;
            if p.len() < 12 || p[0] != AF_BRIDGE {
                continue;
            }
            if u32::from_ne_bytes(p[4..8].try_into().unwrap()) != index {
                continue;
            }
            let mut mac = None;
            let mut dst = None;
            for (kind, data) in attrs(&p[12..]) {
                match kind {
                    NDA_LLADDR => mac = mac_of(data),
                    NDA_DST if data.len() == 16 => {
                        dst = <[u8; 16]>::try_from(data).ok().map(IpAddr::from)
                    }
                    NDA_DST => dst = ipv4(data).map(IpAddr::V4),
                    _ => {}
                }
            }
            if let (Some(mac), Some(dst)) = (mac, dst) {
                out.push((mac, dst));
            }
        }
        Ok(out)
    }

    pub fn del_fdb(&mut self, index: u32, mac: Mac, dst: IpAddr) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_DELNEIGH, 0);
        m.header(&ndmsg(AF_BRIDGE, index, 0, NTF_SELF));
        m.attr(NDA_LLADDR, &mac.0);
        m.attr(NDA_DST, &octets(dst));
        self.ack(m)
    }
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}
