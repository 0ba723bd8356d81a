//! Links: bridges, veth pairs (the peer made in another namespace), VXLAN devices.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::rtnl::*;
use super::socket::{
    attr_string, attr_u32, attrs, Message, Reply, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
};
use super::{Mac, NetlinkError};

/// What `Handle::link` reports about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    pub mac: Option<Mac>,
    pub master: Option<u32>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// IFLA_LINK_NETNSID: for a veth whose peer is in another namespace, the id this
    /// namespace knows that one by (see [`Handle::nsid_of`]).
    pub peer_netnsid: Option<i32>,
    pub kind: Option<String>,
    /// IFLA_OPERSTATE is up: the kernel's link watcher has seen the carrier (and activated
    /// the device's queue: until then a device that came up without carrier drops what it is
    /// given to send).
    pub oper_up: bool,
}

/// A veth pair whose peer is created directly in another namespace (moving it afterwards
/// costs ~16 ms; creating it there is free).
pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub host_mac: Option<Mac>,
    pub peer_name: &'a str,
    pub peer_netns: BorrowedFd<'a>,
    pub peer_mac: Option<Mac>,
    pub mtu: u32,
    pub master: Option<u32>,
    /// The largest GSO/GRO packet both ends build and take, for IPv6 and IPv4 alike (BIG
    /// TCP: fewer, larger packets through the veth pair and the bridge); `None` leaves the
    /// kernel's 64 KiB.
    pub big_packets: Option<u32>,
}

/// Adds the BIG TCP sizes of a link being created.
fn big_packet_attrs(m: &mut Message, size: Option<u32>) {
    if let Some(size) = size {
        for attr in [
            IFLA_GSO_MAX_SIZE,
            IFLA_GRO_MAX_SIZE,
            IFLA_GSO_IPV4_MAX_SIZE,
            IFLA_GRO_IPV4_MAX_SIZE,
        ] {
            m.attr_u32(attr, size);
        }
    }
}

pub struct VxlanSpec<'a> {
    pub name: &'a str,
    pub vni: u32,
    pub port: u16,
    /// The underlay address: its family is the tunnel's (VXLAN over IPv6 costs 70 bytes of
    /// each packet, over IPv4 50).
    pub local: IpAddr,
    pub underlay_index: Option<u32>,
    pub mac: Option<Mac>,
    pub mtu: u32,
}

impl Handle {
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut m = Message::new(RTM_GETLINK, 0);
        m.header(&ifinfomsg(AF_UNSPEC, 0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        self.get_link(m)
    }

    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let mut m = Message::new(RTM_GETLINK, 0);
        m.header(&ifinfomsg(AF_UNSPEC, index, 0, 0));
        self.get_link(m)
    }

    fn get_link(&mut self, m: Message) -> Result<Option<Link>, NetlinkError> {
        match self.sock.request(m) {
            Ok(replies) => match replies.first() {
                Some(r) => parse_link(r).map(Some),
                None => Ok(None),
            },
            Err(e) if e.is(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let mut m = Message::new(RTM_GETLINK, NLM_F_DUMP);
        m.header(&ifinfomsg(AF_UNSPEC, 0, 0, 0));
        self.sock.dump(m)?.iter().map(parse_link).collect()
    }

    /// Creates a bridge with a fixed MAC (so that it does not change as ports come and go).
    /// EEXIST is returned to the caller, who decides whether an existing bridge is fine.
    pub fn create_bridge(&mut self, name: &str, mtu: u32, mac: Mac) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.header(&ifinfomsg(AF_UNSPEC, 0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        m.attr_u32(IFLA_MTU, mtu);
        m.attr(IFLA_ADDRESS, &mac.0);
        m.begin_nested(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "bridge");
        m.end_nested();
        self.ack(m)
    }

    pub fn create_veth(&mut self, spec: &VethSpec) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.header(&ifinfomsg(AF_UNSPEC, 0, 0, 0));
        m.attr_str(IFLA_IFNAME, spec.host_name);
        m.attr_u32(IFLA_MTU, spec.mtu);
        if let Some(mac) = spec.host_mac {
            m.attr(IFLA_ADDRESS, &mac.0);
        }
        if let Some(master) = spec.master {
            m.attr_u32(IFLA_MASTER, master);
        }
        big_packet_attrs(&mut m, spec.big_packets);
        m.begin_nested(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        m.begin_nested(IFLA_INFO_DATA);
        m.begin_nested(VETH_INFO_PEER);
        m.header(&ifinfomsg(AF_UNSPEC, 0, 0, 0));
        m.attr_str(IFLA_IFNAME, spec.peer_name);
        m.attr_u32(IFLA_MTU, spec.mtu);
        m.attr_u32(IFLA_NET_NS_FD, spec.peer_netns.as_raw_fd() as u32);
        if let Some(mac) = spec.peer_mac {
            m.attr(IFLA_ADDRESS, &mac.0);
        }
        big_packet_attrs(&mut m, spec.big_packets);
        m.end_nested();
        m.end_nested();
        m.end_nested();
        self.ack(m)
    }

    pub fn create_vxlan(&mut self, spec: &VxlanSpec) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.header(&ifinfomsg(AF_UNSPEC, 0, 0, 0));
        m.attr_str(IFLA_IFNAME, spec.name);
        m.attr_u32(IFLA_MTU, spec.mtu);
        if let Some(mac) = spec.mac {
            m.attr(IFLA_ADDRESS, &mac.0);
        }
        m.begin_nested(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "vxlan");
        m.begin_nested(IFLA_INFO_DATA);
        m.attr_u32(IFLA_VXLAN_ID, spec.vni);
        match spec.local {
            IpAddr::V4(a) => m.attr(IFLA_VXLAN_LOCAL, &a.octets()),
            IpAddr::V6(a) => m.attr(IFLA_VXLAN_LOCAL6, &a.octets()),
        };
        if let Some(idx) = spec.underlay_index {
            m.attr_u32(IFLA_VXLAN_LINK, idx);
        }
        m.attr_u8(IFLA_VXLAN_LEARNING, 0);
        m.attr(IFLA_VXLAN_PORT, &spec.port.to_be_bytes());
        m.end_nested();
        m.end_nested();
        self.ack(m)
    }

    /// Deletes a link by name; a link that does not exist is not an error.
    pub fn delete_link_by_name(&mut self, name: &str) -> Result<bool, NetlinkError> {
        let mut m = Message::new(RTM_DELLINK, 0);
        m.header(&ifinfomsg(AF_UNSPEC, 0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        match self.ack(m) {
            Ok(()) => Ok(true),
            Err(e) if e.is(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn set_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_NEWLINK, 0);
        m.header(&ifinfomsg(AF_UNSPEC, index, IFF_UP, IFF_UP));
        self.ack(m)
    }

    /// Brings a link up with only the addresses ferrynet gives it: the kernel's IPv6 address
    /// generation (the automatic link-local address, SLAAC) is switched off first, then the
    /// link goes up, in one datagram. An IPv4 interface so has no IPv6 at all (no DAD, no
    /// multicast noise on the bridge); an IPv6 one only its own addresses, added without DAD. For a bridge port, `hairpin` sets its hairpin mode in the same request.
    ///
    /// This replaces writing /proc/sys/net/ipv6/conf/DEV/disable_ipv6, whose path walk costs
    /// O(number of network namespaces) on this kernel (~0.6 ms at 2,000 namespaces).
    pub fn set_up_static(&mut self, index: u32, hairpin: Option<bool>) -> Result<(), NetlinkError> {
        let mut no_v6 = Message::new(RTM_NEWLINK, 0);
        no_v6.header(&ifinfomsg(AF_UNSPEC, index, 0, 0));
        no_v6.begin_nested(IFLA_AF_SPEC);
        no_v6.begin_nested(AF_INET6);
        no_v6.attr_u8(IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE);
        no_v6.end_nested();
        no_v6.end_nested();
        let mut up = Message::new(RTM_NEWLINK, 0);
        up.header(&ifinfomsg(AF_UNSPEC, index, IFF_UP, IFF_UP));
        if let Some(hairpin) = hairpin {
            up.begin_nested(IFLA_LINKINFO);
            up.begin_nested(IFLA_INFO_SLAVE_DATA);
            up.attr_u8(IFLA_BRPORT_MODE, hairpin as u8);
            up.end_nested();
            up.end_nested();
        }
        let up_again = up.clone();
        match self.sock.transaction(vec![no_v6, up], None) {
            // A kernel without IPv6 (ipv6.disable=1) has no AF_INET6 settings to change.
            Err(e) if e.is(libc::EAFNOSUPPORT) || e.is(libc::EOPNOTSUPP) => self.ack(up_again),
            r => r.map(|_| ()),
        }
    }

    /// Whether IPv4 forwarding is on in this namespace (read over netlink: no /proc walk).
    pub fn ipv4_forwarding(&mut self) -> Result<bool, NetlinkError> {
        self.forwarding(AF_INET)
    }

    /// Whether IPv6 forwarding is on for all interfaces of this namespace.
    pub fn ipv6_forwarding(&mut self) -> Result<bool, NetlinkError> {
        self.forwarding(AF_INET6 as u8)
    }

    fn forwarding(&mut self, family: u8) -> Result<bool, NetlinkError> {
        let mut m = Message::new(RTM_GETNETCONF, 0);
        m.header(&[family, 0, 0, 0]);
        m.attr(NETCONFA_IFINDEX, &NETCONFA_IFINDEX_ALL.to_ne_bytes());
        for r in self.sock.request(m)? {
            for (kind, data) in attrs(r.payload.get(4..).unwrap_or(&[])) {
                if kind == NETCONFA_FORWARDING {
                    return Ok(attr_u32(data).unwrap_or(0) != 0);
                }
            }
        }
        Err(NetlinkError::Malformed("no NETCONFA_FORWARDING in reply"))
    }
}

fn parse_link(r: &Reply) -> Result<Link, NetlinkError> {
    let p = &r.payload;
    if p.len() < 16 {
        return Err(NetlinkError::Malformed("short ifinfomsg"));
    }
    let index = u32::from_ne_bytes(p[4..8].try_into().unwrap());
    let flags = u32::from_ne_bytes(p[8..12].try_into().unwrap());
    let mut link = Link {
        index,
        name: String::new(),
        mtu: 0,
        up: flags & IFF_UP != 0,
        mac: None,
        master: None,
        peer_index: None,
        peer_netnsid: None,
        kind: None,
        oper_up: false,
    };
    for (kind, data) in attrs(&p[16..]) {
        match kind {
            IFLA_IFNAME => link.name = attr_string(data),
            IFLA_MTU => link.mtu = attr_u32(data).unwrap_or(0),
            IFLA_ADDRESS => link.mac = mac_of(data),
            IFLA_MASTER => link.master = attr_u32(data),
            IFLA_OPERSTATE => link.oper_up = data.first() == Some(&IF_OPER_UP),
            IFLA_LINK => link.peer_index = attr_u32(data),
            IFLA_LINK_NETNSID => link.peer_netnsid = attr_u32(data).map(|v| v as i32),
            IFLA_LINKINFO => {
                for (k, d) in attrs(data) {
                    if k == IFLA_INFO_KIND {
                        link.kind = Some(attr_string(d));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(link)
}
