//! Typed netlink operations on links, addresses, routes, neighbours and FDB entries, in the
//! namespace a [`Handle`] was opened in. No `ip` binary is involved.

mod addr;
mod link;
mod lookup;
mod neigh;
mod route;
mod rtnl;
pub mod socket;

pub use addr::{Addr, Addr6};
pub use link::{Link, VethSpec, VxlanSpec};
pub use lookup::{
    nud_name, NeighbourEntry, RouteAnswer, RouteQuery, RTN_BLACKHOLE, RTN_LOCAL, RTN_PROHIBIT,
    RTN_UNREACHABLE,
};
pub use neigh::{Neighbour, Neighbour6, NeighbourOf};
pub use route::{Route, Route6, RouteOf, PROTO_BOOT, PROTO_FERRYNET};
pub use rtnl::Handle;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("{}{}", std::io::Error::from_raw_os_error(*errno), if message.is_empty() { String::new() } else { format!(" ({message})") })]
    Kernel { errno: i32, message: String },
    #[error("malformed netlink reply: {0}")]
    Malformed(&'static str),
}

impl NetlinkError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::Socket(e) => e.raw_os_error(),
            NetlinkError::Malformed(_) => None,
        }
    }

    pub fn is(&self, errno: i32) -> bool {
        self.errno() == Some(errno)
    }
}

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A random, locally administered unicast address.
    pub fn random() -> Mac {
        let mut b = [0u8; 6];
        crate::util::fill_random(&mut b);
        b[0] = (b[0] & 0xfe) | 0x02;
        Mac(b)
    }

    /// The IPv6 link-local address derived from this MAC (modified EUI-64, RFC 4291).
    pub fn link_local(&self) -> std::net::Ipv6Addr {
        let b = self.0;
        std::net::Ipv6Addr::from([
            0xfe,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            b[0] ^ 0x02,
            b[1],
            b[2],
            0xff,
            0xfe,
            b[3],
            b[4],
            b[5],
        ])
    }

    /// A stable, locally administered unicast address derived from `seed`.
    pub fn from_seed(seed: &str) -> Mac {
        let h = crate::util::fnv1a64(seed.as_bytes()).to_be_bytes();
        let mut b = [h[0], h[1], h[2], h[3], h[4], h[5]];
        b[0] = (b[0] & 0xfe) | 0x02;
        Mac(b)
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("invalid MAC address {s:?}"));
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            let hex = (1..=2).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_hexdigit());
            if !hex {
                return Err(format!("invalid MAC address {s:?}"));
            }
            b[i] = u8::from_str_radix(p, 16).map_err(|_| format!("invalid MAC address {s:?}"))?;
        }
        // An interface's own address must be unicast (the kernel refuses the others half-way
        // through an attach).
        if b == [0; 6] {
            return Err(format!("invalid MAC address {s:?}: all zeros"));
        }
        if b[0] & 1 == 1 {
            return Err(format!(
                "invalid MAC address {s:?}: a multicast address (the first octet is odd)"
            ));
        }
        Ok(Mac(b))
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
