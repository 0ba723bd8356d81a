//! rtnetlink: the handle, the kernel's constants and message headers shared by the link,
//! address, route and neighbour operations (one module each).

use std::net::Ipv4Addr;

use super::socket::{Message, Socket};
use super::{Mac, NetlinkError};

pub(super) const RTM_NEWLINK: u16 = 16;
pub(super) const RTM_DELLINK: u16 = 17;
pub(super) const RTM_GETLINK: u16 = 18;
pub(super) const RTM_NEWADDR: u16 = 20;
pub(super) const RTM_DELADDR: u16 = 21;
pub(super) const RTM_GETADDR: u16 = 22;
pub(super) const RTM_NEWROUTE: u16 = 24;
pub(super) const RTM_DELROUTE: u16 = 25;
pub(super) const RTM_GETROUTE: u16 = 26;
pub(super) const RTM_NEWNEIGH: u16 = 28;
pub(super) const RTM_DELNEIGH: u16 = 29;
pub(super) const RTM_GETNEIGH: u16 = 30;
pub(super) const RTM_GETNETCONF: u16 = 82;

pub(super) const AF_UNSPEC: u8 = 0;
pub(super) const AF_INET: u8 = 2;
pub(super) const AF_BRIDGE: u8 = 7;
pub(super) const AF_INET6: u16 = 10;

pub(super) const IFLA_ADDRESS: u16 = 1;
pub(super) const IFLA_IFNAME: u16 = 3;
pub(super) const IFLA_MTU: u16 = 4;
pub(super) const IFLA_LINK: u16 = 5;
pub(super) const IFLA_MASTER: u16 = 10;
pub(super) const IFLA_OPERSTATE: u16 = 16;
/// RFC 2863 operational state "up" (linux/if.h IF_OPER_UP).
pub(super) const IF_OPER_UP: u8 = 6;
pub(super) const IFLA_LINKINFO: u16 = 18;
pub(super) const IFLA_AF_SPEC: u16 = 26;
pub(super) const IFLA_NET_NS_FD: u16 = 28;
pub(super) const IFLA_LINK_NETNSID: u16 = 37;
pub(super) const IFLA_GSO_MAX_SIZE: u16 = 41;
pub(super) const IFLA_GRO_MAX_SIZE: u16 = 58;
pub(super) const IFLA_GSO_IPV4_MAX_SIZE: u16 = 63;
pub(super) const IFLA_GRO_IPV4_MAX_SIZE: u16 = 64;
pub(super) const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
pub(super) const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
pub(super) const NETCONFA_IFINDEX: u16 = 1;
pub(super) const NETCONFA_FORWARDING: u16 = 2;
pub(super) const NETCONFA_IFINDEX_ALL: i32 = -1;
pub(super) const IFLA_INFO_KIND: u16 = 1;
pub(super) const IFLA_INFO_DATA: u16 = 2;
pub(super) const IFLA_INFO_SLAVE_DATA: u16 = 5;
pub(super) const VETH_INFO_PEER: u16 = 1;
pub(super) const IFLA_BRPORT_MODE: u16 = 4;
pub(super) const IFLA_VXLAN_ID: u16 = 1;
pub(super) const IFLA_VXLAN_LINK: u16 = 3;
pub(super) const IFLA_VXLAN_LOCAL: u16 = 4;
pub(super) const IFLA_VXLAN_LEARNING: u16 = 7;
pub(super) const IFLA_VXLAN_LOCAL6: u16 = 17;
pub(super) const IFLA_VXLAN_PORT: u16 = 15;
pub(super) const IFF_UP: u32 = 1;

pub(super) const IFA_ADDRESS: u16 = 1;
pub(super) const IFA_LOCAL: u16 = 2;
pub(super) const IFA_BROADCAST: u16 = 4;
pub(super) const IFA_F_NODAD: u8 = 0x02;

pub(super) const RTA_DST: u16 = 1;
pub(super) const RTA_OIF: u16 = 4;
pub(super) const RTA_GATEWAY: u16 = 5;
pub(super) const RTA_TABLE: u16 = 15;
pub(super) const RT_TABLE_MAIN: u8 = 254;
pub(super) const RTPROT_BOOT: u8 = 3;
pub(super) const RT_SCOPE_UNIVERSE: u8 = 0;
pub(super) const RT_SCOPE_LINK: u8 = 253;
pub(super) const RTN_UNICAST: u8 = 1;
pub(super) const RTNH_F_ONLINK: u32 = 4;

pub(super) const NDA_DST: u16 = 1;
pub(super) const NDA_LLADDR: u16 = 2;
pub(super) const NUD_PERMANENT: u16 = 0x80;
pub(super) const NTF_SELF: u8 = 0x02;

pub(super) fn ifinfomsg(family: u8, index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = family;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

pub(super) fn ifaddrmsg(family: u8, prefix: u8, flags: u8, scope: u8, index: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0] = family;
    h[1] = prefix;
    h[2] = flags;
    h[3] = scope;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h
}

pub(super) fn rtmsg(family: u8, dst_len: u8, scope: u8, flags: u32, protocol: u8) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = family;
    h[1] = dst_len;
    h[4] = RT_TABLE_MAIN;
    h[5] = protocol;
    h[6] = scope;
    h[7] = RTN_UNICAST;
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h
}

pub(super) fn ndmsg(family: u8, index: u32, state: u16, flags: u8) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = family;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..10].copy_from_slice(&state.to_ne_bytes());
    h[10] = flags;
    h
}

/// An rtnetlink socket bound to one network namespace.
pub struct Handle {
    pub(super) sock: Socket,
}

impl Handle {
    /// Opens a handle in the calling thread's namespace.
    pub fn new() -> Result<Self, NetlinkError> {
        Ok(Handle {
            sock: Socket::open(libc::NETLINK_ROUTE)?,
        })
    }

    pub(super) fn ack(&mut self, msg: Message) -> Result<(), NetlinkError> {
        self.sock.request(msg).map(|_| ())
    }
}

pub(super) fn ipv4(data: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = data.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

pub(super) fn mac_of(data: &[u8]) -> Option<Mac> {
    let b: [u8; 6] = data.get(..6)?.try_into().ok()?;
    Some(Mac(b))
}
