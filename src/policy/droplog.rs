//! The drop log: packets denied by a policy annotated `ferrynet.io/log-drops: "true"` go to
//! NFLOG group [`LOG_GROUP`] with a prefix naming the policy (and the rule, for an admin
//! Deny). This reads them (NETLINK_NETFILTER, NFULNL) in the calling thread's namespace.
//! NFLOG rather than the kernel log: a namespace other than the initial one logs nothing to
//! the kernel log unless a host-wide sysctl (`nf_log_all_netns`) is flipped.
//! One reader per group and namespace: `ferrynet policy drops --follow`, or the agent's
//! `--log-drops`.

use std::fmt;
use std::net::IpAddr;
use std::time::Instant;

use serde::Serialize;

pub use super::nft::LOG_GROUP;
use crate::netlink::socket::{attrs, Message, Socket};
use crate::netlink::NetlinkError;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
/// Enough of each packet for its addresses and ports.
const COPY_RANGE: u32 = 64;

/// One denied packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedDrop {
    /// The policy (and rule) that denied it, and the direction.
    pub by: String,
    pub source: IpAddr,
    pub destination: IpAddr,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl fmt::Display for LoggedDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} {}",
            self.source, self.destination, self.protocol
        )?;
        if let Some(p) = self.port {
            write!(f, "/{p}")?;
        }
        write!(f, " denied by {}", self.by)
    }
}

pub struct DropLog {
    sock: Socket,
}

fn config(group: u16, attr: u16, value: &[u8]) -> Message {
    let mut m = Message::new((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, 0);
    let g = group.to_be_bytes();
    m.header(&[libc::AF_UNSPEC as u8, 0, g[0], g[1]]);
    m.attr(attr, value);
    m
}

impl DropLog {
    /// Binds the drop log's group (EBUSY: another reader has it).
    pub fn open() -> Result<DropLog, NetlinkError> {
        let mut sock = Socket::open(libc::NETLINK_NETFILTER)?;
        sock.request(config(LOG_GROUP, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]))?;
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        sock.request(config(LOG_GROUP, NFULA_CFG_MODE, &mode))?;
        Ok(DropLog { sock })
    }

    /// The drops logged until `deadline`.
    pub fn until(&mut self, deadline: Instant) -> Result<Vec<LoggedDrop>, NetlinkError> {
        Ok(self
            .sock
            .events_until(deadline)?
            .into_iter()
            .filter(|r| r.msg_type == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET)
            .filter_map(|r| parse(r.payload.get(4..)?))
            .collect())
    }
}

fn parse(payload: &[u8]) -> Option<LoggedDrop> {
    let mut prefix = None;
    let mut packet = None;
    for (kind, data) in attrs(payload) {
        match kind {
            NFULA_PREFIX => prefix = Some(crate::netlink::socket::attr_string(data)),
            NFULA_PAYLOAD => packet = Some(data),
            _ => {}
        }
    }
    let packet = packet?;
    let (source, destination, protocol, l4) = match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let s: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (
                IpAddr::from(s),
                IpAddr::from(d),
                *packet.get(9)?,
                packet.get(ihl..),
            )
        }
        6 => {
            let s: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (
                IpAddr::from(s),
                IpAddr::from(d),
                *packet.get(6)?,
                packet.get(40..),
            )
        }
        _ => return None,
    };
    let (name, has_ports) = match protocol {
        6 => ("tcp".to_string(), true),
        17 => ("udp".to_string(), true),
        132 => ("sctp".to_string(), true),
        1 => ("icmp".to_string(), false),
        58 => ("icmpv6".to_string(), false),
        n => (format!("proto {n}"), false),
    };
    let port = l4
        .filter(|_| has_ports)
        .and_then(|l| Some(u16::from_be_bytes([*l.get(2)?, *l.get(3)?])));
    Some(LoggedDrop {
        by: prefix
            .unwrap_or_default()
            .trim_end_matches(": ")
            .to_string(),
        source,
        destination,
        protocol: name,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_tcp_syn_names_its_policy_and_flow() {
        let mut m = Message::new(0, 0);
        m.header(&[2, 0, 0x0a, 0xfb]);
        m.attr_str(NFULA_PREFIX, "NetworkPolicy x/deny ingress: ");
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&[10, 90, 0, 2, 10, 90, 0, 3]);
        ip.extend_from_slice(&[0x9c, 0x40, 0, 80]);
        m.attr(NFULA_PAYLOAD, &ip);
        let bytes = m.finish_for_test();
        let drop = parse(&bytes[16 + 4..]).unwrap();
        assert_eq!(
            drop.to_string(),
            "10.90.0.2 -> 10.90.0.3 tcp/80 denied by NetworkPolicy x/deny ingress"
        );
    }
}
