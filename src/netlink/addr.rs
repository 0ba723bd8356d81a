//! Interface addresses.

use ipnet::Ipv4Net;

use super::rtnl::*;
use super::socket::{attrs, Message, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use super::NetlinkError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub net: Ipv4Net,
}

impl Handle {
    /// Adds an IPv4 address; EEXIST is passed to the caller.
    pub fn add_addr(&mut self, index: u32, net: Ipv4Net) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        m.header(&ifaddrmsg(
            net.prefix_len(),
            IFA_F_NODAD,
            RT_SCOPE_UNIVERSE,
            index,
        ));
        m.attr(IFA_LOCAL, &net.addr().octets());
        m.attr(IFA_ADDRESS, &net.addr().octets());
        if net.prefix_len() < 31 {
            m.attr(IFA_BROADCAST, &net.broadcast().octets());
        }
        self.ack(m)
    }

    pub fn del_addr(&mut self, index: u32, net: Ipv4Net) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_DELADDR, 0);
        m.header(&ifaddrmsg(net.prefix_len(), 0, RT_SCOPE_UNIVERSE, index));
        m.attr(IFA_LOCAL, &net.addr().octets());
        self.ack(m)
    }

    /// IPv4 addresses, of one link or of all (`index` = None).
    pub fn addrs(&mut self, index: Option<u32>) -> Result<Vec<Addr>, NetlinkError> {
        let mut m = Message::new(RTM_GETADDR, NLM_F_DUMP);
        m.header(&ifaddrmsg(0, 0, 0, 0));
        let mut out = Vec::new();
        for r in self.sock.dump(m)? {
            let p = &r.payload;
            if p.len() < 8 || p[0] != AF_INET {
                continue;
            }
            let prefix = p[1];
            let idx = u32::from_ne_bytes(p[4..8].try_into().unwrap());
            if index.is_some_and(|i| i != idx) {
                continue;
            }
            let mut local = None;
            let mut address = None;
            for (kind, data) in attrs(&p[8..]) {
                match kind {
                    IFA_LOCAL => local = ipv4(data),
                    IFA_ADDRESS => address = ipv4(data),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                if let Ok(net) = Ipv4Net::new(ip, prefix) {
                    out.push(Addr { index: idx, net });
                }
            }
        }
        Ok(out)
    }
}
