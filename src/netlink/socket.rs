//! A synchronous netlink socket and a message builder/parser, shared by rtnetlink and nf_tables.
//!
//! The socket is bound to the network namespace of the thread that opened it; every later
//! request goes to that namespace, whatever thread sends it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::NetlinkError;

pub const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_ROOT: u16 = 0x100;
pub const NLM_F_MATCH: u16 = 0x200;
pub const NLM_F_DUMP: u16 = NLM_F_ROOT | NLM_F_MATCH;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSGERR_ATTR_MSG: u16 = 1;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds one netlink message: header, a fixed family header, then attributes.
#[derive(Clone)]
pub struct Message {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Message {
    pub fn new(msg_type: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        buf[4..6].copy_from_slice(&msg_type.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Message {
            buf,
            nests: Vec::new(),
        }
    }

    /// Appends a fixed-size family header (ifinfomsg, rtmsg, nfgenmsg, ...), padded to 4 bytes.
    pub fn header(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    fn pad(&mut self) {
        let len = align4(self.buf.len());
        self.buf.resize(len, 0);
    }

    pub fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    pub fn attr_u8(&mut self, kind: u16, v: u8) -> &mut Self {
        self.attr(kind, &[v])
    }

    pub fn attr_u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    pub fn attr_be32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_be_bytes())
    }

    /// A NUL-terminated string attribute.
    pub fn attr_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.attr(kind, &data)
    }

    pub fn begin_nested(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end_nested(&mut self) -> &mut Self {
        let start = self.nests.pop().expect("end_nested without begin_nested");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The message as sent (sequence 0), for tests that parse what they build.
    #[cfg(test)]
    pub fn finish_for_test(self) -> Vec<u8> {
        self.finish(0)
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        assert!(self.nests.is_empty(), "unclosed nested attribute");
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// Iterates over the attributes in `buf` as (type without flags, payload).
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            return None;
        }
        let payload = &rest[4..len];
        rest = &rest[align4(len).min(rest.len())..];
        Some((kind, payload))
    })
}

pub fn attr_u32(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

pub fn attr_string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// One reply message: its type and the bytes after the netlink header.
pub struct Reply {
    pub msg_type: u16,
    pub payload: Vec<u8>,
}

pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    /// Opens a netlink socket of `protocol` (NETLINK_ROUTE, NETLINK_NETFILTER) in the calling
    /// thread's network namespace.
    pub fn open(protocol: i32) -> Result<Self, NetlinkError> {
        // SAFETY: plain syscalls on a descriptor we own; arguments are valid for their sizes.
        unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            );
            if fd < 0 {
                return Err(NetlinkError::Socket(io::Error::last_os_error()));
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            if libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            ) < 0
            {
                return Err(NetlinkError::Socket(io::Error::last_os_error()));
            }
            let one: libc::c_int = 1;
            for opt in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_NETLINK,
                    opt,
                    &one as *const _ as *const libc::c_void,
                    4,
                );
            }
            let size: libc::c_int = 1 << 20;
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &size as *const _ as *const libc::c_void,
                4,
            );
            let timeout = Duration::from_secs(10);
            let tv = libc::timeval {
                tv_sec: timeout.as_secs() as libc::time_t,
                tv_usec: 0,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
            Ok(Socket {
                fd,
                seq: 1,
                buf: vec![0u8; 1 << 16],
            })
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, bytes: &[u8]) -> Result<(), NetlinkError> {
        // SAFETY: bytes is a valid buffer of the given length.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                bytes.as_ptr() as *const libc::c_void,
                bytes.len(),
                0,
            )
        };
        if n < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Receives one datagram and calls `f` for every message in it.
    fn recv_each(
        &mut self,
        mut f: impl FnMut(u16, u16, u32, &[u8]) -> Result<(), NetlinkError>,
    ) -> Result<(), NetlinkError> {
        // SAFETY: self.buf is a valid writable buffer of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr() as *mut libc::c_void,
                self.buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        let data = self.buf[..n as usize].to_vec();
        let mut rest = &data[..];
        while rest.len() >= NLMSG_HDRLEN {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            if len < NLMSG_HDRLEN || len > rest.len() {
                break;
            }
            let msg_type = u16::from_ne_bytes([rest[4], rest[5]]);
            let flags = u16::from_ne_bytes([rest[6], rest[7]]);
            let seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
            f(msg_type, flags, seq, &rest[NLMSG_HDRLEN..len])?;
            rest = &rest[align4(len).min(rest.len())..];
        }
        Ok(())
    }

    /// Joins a multicast group (e.g. NFNLGRP_NFTRACE), to receive its events.
    pub fn join_group(&self, group: u32) -> Result<(), NetlinkError> {
        // SAFETY: a valid descriptor and a 4-byte option value.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_ADD_MEMBERSHIP,
                &group as *const _ as *const libc::c_void,
                4,
            )
        };
        if r < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Every message that arrives until `deadline` (events of the groups joined), and those
    /// already queued when the deadline has passed.
    pub fn events_until(
        &mut self,
        deadline: std::time::Instant,
    ) -> Result<Vec<Reply>, NetlinkError> {
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as libc::c_int) };
            if n < 0 {
                return Err(NetlinkError::Socket(io::Error::last_os_error()));
            }
            if n == 0 {
                return Ok(out);
            }
            self.recv_each(|msg_type, _flags, _seq, payload| {
                out.push(Reply {
                    msg_type,
                    payload: payload.to_vec(),
                });
                Ok(())
            })?;
        }
    }

    /// Sends one request and waits for its acknowledgement (or its replies, for a get).
    pub fn request(&mut self, msg: Message) -> Result<Vec<Reply>, NetlinkError> {
        self.transaction(vec![msg], None)
    }

    /// Sends a dump request and collects every reply until NLMSG_DONE.
    pub fn dump(&mut self, msg: Message) -> Result<Vec<Reply>, NetlinkError> {
        let seq = self.next_seq();
        let bytes = msg.finish(seq);
        self.send(&bytes)?;
        let mut replies = Vec::new();
        let mut done = false;
        while !done {
            self.recv_each(|msg_type, _flags, rseq, payload| {
                if rseq != seq {
                    return Ok(());
                }
                match msg_type {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => {
                        let err = parse_error(payload);
                        if let Some(e) = err {
                            return Err(e);
                        }
                        done = true;
                    }
                    _ => replies.push(Reply {
                        msg_type,
                        payload: payload.to_vec(),
                    }),
                }
                Ok(())
            })?;
        }
        Ok(replies)
    }

    /// Sends several messages in one datagram (optionally wrapped between `batch` begin/end
    /// messages, as nf_tables requires) and waits for the acknowledgement of each. The first
    /// error wins.
    pub fn transaction(
        &mut self,
        msgs: Vec<Message>,
        batch: Option<(Message, Message)>,
    ) -> Result<Vec<Reply>, NetlinkError> {
        let mut bytes = Vec::new();
        let mut pending = Vec::new();
        let (begin, end) = match batch {
            Some((b, e)) => (Some(b), Some(e)),
            None => (None, None),
        };
        if let Some(b) = begin {
            let seq = self.next_seq();
            bytes.extend_from_slice(&b.finish(seq));
        }
        for mut m in msgs {
            let flags = u16::from_ne_bytes([m.buf[6], m.buf[7]]) | NLM_F_ACK;
            m.buf[6..8].copy_from_slice(&flags.to_ne_bytes());
            let seq = self.next_seq();
            pending.push(seq);
            bytes.extend_from_slice(&m.finish(seq));
        }
        if let Some(e) = end {
            let seq = self.next_seq();
            bytes.extend_from_slice(&e.finish(seq));
        }
        self.send(&bytes)?;
        let mut replies = Vec::new();
        let mut first_error = None;
        while !pending.is_empty() {
            let res = self.recv_each(|msg_type, _flags, seq, payload| {
                if msg_type == NLMSG_ERROR {
                    // Only answers to this transaction count: a late acknowledgement of an
                    // earlier one (left behind after an error) is skipped.
                    if let Some(pos) = pending.iter().position(|&s| s == seq) {
                        pending.remove(pos);
                        if let Some(e) = parse_error(payload) {
                            if first_error.is_none() {
                                first_error = Some(e);
                            }
                        }
                    }
                } else if pending.contains(&seq) && msg_type != NLMSG_DONE {
                    replies.push(Reply {
                        msg_type,
                        payload: payload.to_vec(),
                    });
                }
                Ok(())
            });
            if let Err(e) = res {
                // A timeout after an error means the kernel aborted the rest of the batch.
                if first_error.is_some() {
                    break;
                }
                return Err(e);
            }
            if first_error.is_some() && self.drain_nonblocking() {
                break;
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(replies),
        }
    }

    /// After an error in a batch, the kernel may not acknowledge the remaining messages;
    /// returns true when nothing more is queued.
    fn drain_nonblocking(&mut self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n <= 0
    }
}

/// Parses an NLMSG_ERROR payload: None for an acknowledgement, the error otherwise.
/// We set NETLINK_CAP_ACK, so the kernel echoes only our header, followed by the extended-ack
/// attributes that carry a human-readable message.
fn parse_error(payload: &[u8]) -> Option<NetlinkError> {
    let code = i32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?);
    if code == 0 {
        return None;
    }
    let tlvs = payload.get(4 + NLMSG_HDRLEN..).unwrap_or(&[]);
    let message = attrs(tlvs)
        .find(|(kind, _)| *kind == NLMSGERR_ATTR_MSG)
        .map(|(_, data)| attr_string(data))
        .unwrap_or_default();
    Some(NetlinkError::Kernel {
        errno: -code,
        message,
    })
}
