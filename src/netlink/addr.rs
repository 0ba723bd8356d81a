//! Interface addresses, both families. IPv6 addresses are added without duplicate address
//! detection (IFA_F_NODAD): ferrynet's IPAM already guarantees uniqueness on the bridge, and
//! waiting for DAD cost the reference bridge plugin ~2 s per ADD (containernetworking/plugins
//! #680); a tentative address could not be used the moment attach returns.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::rtnl::*;
use super::socket::{attr_u32, attrs, Message, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use super::NetlinkError;
use crate::family::Family;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub net: Ipv4Net,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr6 {
    pub index: u32,
    pub net: Ipv6Net,
    /// Still doing duplicate address detection (IFA_F_TENTATIVE): not usable yet.
    pub tentative: bool,
}

const IFA_FLAGS: u16 = 8;
const IFA_F_TENTATIVE: u32 = 0x40;

impl Handle {
    /// Adds an address of either family (IPv6 without DAD); EEXIST is passed to the caller.
    pub fn add_addr(&mut self, index: u32, net: impl Into<IpNet>) -> Result<(), NetlinkError> {
        let net = net.into();
        let mut m = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        let (family, bytes) = family_bytes(net);
        m.header(&ifaddrmsg(
            family,
            net.prefix_len(),
            IFA_F_NODAD,
            RT_SCOPE_UNIVERSE,
            index,
        ));
        m.attr(IFA_LOCAL, &bytes);
        m.attr(IFA_ADDRESS, &bytes);
        if let IpNet::V4(v4) = net {
            if v4.prefix_len() < 31 {
                m.attr(IFA_BROADCAST, &v4.broadcast().octets());
            }
        }
        self.ack(m)
    }

    pub fn del_addr(&mut self, index: u32, net: impl Into<IpNet>) -> Result<(), NetlinkError> {
        let net = net.into();
        let (family, bytes) = family_bytes(net);
        let mut m = Message::new(RTM_DELADDR, 0);
        m.header(&ifaddrmsg(
            family,
            net.prefix_len(),
            0,
            RT_SCOPE_UNIVERSE,
            index,
        ));
        m.attr(IFA_LOCAL, &bytes);
        self.ack(m)
    }

    /// IPv4 addresses, of one link or of all (`index` = None).
    pub fn addrs(&mut self, index: Option<u32>) -> Result<Vec<Addr>, NetlinkError> {
        Ok(self
            .dump_addrs::<Ipv4Addr>(index)?
            .into_iter()
            .map(|(index, net, _)| Addr { index, net })
            .collect())
    }

    /// IPv6 addresses, of one link or of all (`index` = None).
    pub fn addrs6(&mut self, index: Option<u32>) -> Result<Vec<Addr6>, NetlinkError> {
        Ok(self
            .dump_addrs::<Ipv6Addr>(index)?
            .into_iter()
            .map(|(index, net, flags)| Addr6 {
                index,
                net,
                tentative: flags & IFA_F_TENTATIVE != 0,
            })
            .collect())
    }

    /// (ifindex, address with prefix) of one family, of one link or of all.
    pub fn addrs_of<A: Family>(
        &mut self,
        index: Option<u32>,
    ) -> Result<Vec<(u32, A::Net)>, NetlinkError> {
        Ok(self
            .dump_addrs::<A>(index)?
            .into_iter()
            .map(|(index, net, _)| (index, net))
            .collect())
    }

    /// (ifindex, address with prefix, IFA flags) of one family.
    fn dump_addrs<A: Family>(
        &mut self,
        index: Option<u32>,
    ) -> Result<Vec<(u32, A::Net, u32)>, NetlinkError> {
        let mut m = Message::new(RTM_GETADDR, NLM_F_DUMP);
        m.header(&ifaddrmsg(A::AF, 0, 0, 0, 0));
        let mut out = Vec::new();
        for r in self.sock.dump(m)? {
            let p = &r.payload;
            if p.len() < 8 || p[0] != A::AF {
                continue;
            }
            let prefix = p[1];
            let mut flags = p[2] as u32;
            let idx = u32::from_ne_bytes(p[4..8].try_into().unwrap());
            if index.is_some_and(|i| i != idx) || prefix > A::MAX_PREFIX {
                continue;
            }
            let mut local = None;
            let mut address = None;
            for (kind, data) in attrs(&p[8..]) {
                match kind {
                    IFA_LOCAL => local = A::from_bytes(data),
                    IFA_ADDRESS => address = A::from_bytes(data),
                    IFA_FLAGS => flags = attr_u32(data).unwrap_or(flags),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                out.push((idx, A::with_prefix(ip, prefix), flags));
            }
        }
        Ok(out)
    }
}

fn family_bytes(net: IpNet) -> (u8, Vec<u8>) {
    match net {
        IpNet::V4(n) => (Ipv4Addr::AF, n.addr().bytes()),
        IpNet::V6(n) => (Ipv6Addr::AF, n.addr().bytes()),
    }
}
