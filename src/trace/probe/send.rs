//! Sending the probe's one packet from the calling thread's namespace, and reading its
//! answer: a non-blocking TCP connect, a connected UDP socket, an ICMP echo on a raw socket.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::super::{Proto, Trace, TraceError};

/// How long to wait for an answer: under the one second after which TCP sends its SYN
/// again, so that the events are those of one packet.
const WAIT: Duration = Duration::from_millis(900);

/// Sends from the address the trace found (a failed bind leaves the kernel's choice).
fn bind_source(fd: &OwnedFd, src: Option<IpAddr>) {
    if let Some(src) = src {
        let (a, l) = sockaddr(SocketAddr::new(src, 0));
        // SAFETY: a valid sockaddr of length l.
        unsafe { libc::bind(fd.as_raw_fd(), &a as *const _ as *const libc::sockaddr, l) };
    }
}

fn socket(domain: i32, kind: i32, proto: i32) -> Result<OwnedFd, TraceError> {
    // SAFETY: a plain socket call; the descriptor is owned at once.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(TraceError::Probe(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    // SAFETY: fd was just returned by socket().
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed storage is a valid sockaddr_storage; the casts write within it.
    unsafe {
        let mut st: libc::sockaddr_storage = std::mem::zeroed();
        let len = match addr {
            SocketAddr::V4(a) => {
                let p = &mut st as *mut _ as *mut libc::sockaddr_in;
                (*p).sin_family = libc::AF_INET as u16;
                (*p).sin_port = a.port().to_be();
                (*p).sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let p = &mut st as *mut _ as *mut libc::sockaddr_in6;
                (*p).sin6_family = libc::AF_INET6 as u16;
                (*p).sin6_port = a.port().to_be();
                (*p).sin6_addr.s6_addr = a.ip().octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (st, len as libc::socklen_t)
    }
}

fn wait(fd: &OwnedFd, events: i16) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, WAIT.as_millis() as libc::c_int) > 0 }
}

fn so_error(fd: &OwnedFd) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: a 4-byte option into a c_int.
    unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut _ as *mut libc::c_void,
            &mut len,
        );
    }
    err
}

/// Sends the probe from the calling thread's namespace: (what, answer, arrived).
pub(super) fn send(t: &Trace) -> Result<(String, String, bool), TraceError> {
    let domain = if t.dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let port = t.port.unwrap_or(0);
    let (addr, len) = sockaddr(SocketAddr::new(t.dst, port));
    // A non-blocking socket of `kind` from the trace's source, connected to the destination.
    let connected = |kind: i32| -> Result<OwnedFd, TraceError> {
        let fd = socket(domain, kind | libc::SOCK_NONBLOCK, 0)?;
        bind_source(&fd, t.src);
        // SAFETY: a valid sockaddr of length len.
        unsafe {
            libc::connect(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                len,
            )
        };
        Ok(fd)
    };
    match t.proto {
        Proto::Tcp => {
            // A non-blocking connect sends the SYN.
            let fd = connected(libc::SOCK_STREAM)?;
            let sent = format!("TCP SYN to {}", SocketAddr::new(t.dst, port));
            if !wait(&fd, libc::POLLOUT) {
                return Ok((sent, "no answer".into(), false));
            }
            Ok(match so_error(&fd) {
                0 => (sent, "SYN-ACK: connected".into(), true),
                libc::ECONNREFUSED => (sent, "RST: it arrived, nothing listens there".into(), true),
                e => (
                    sent,
                    std::io::Error::from_raw_os_error(e).to_string(),
                    false,
                ),
            })
        }
        Proto::Udp => {
            let fd = connected(libc::SOCK_DGRAM)?;
            // SAFETY: a small buffer of the given length.
            unsafe {
                libc::send(
                    fd.as_raw_fd(),
                    b"ferrynet trace probe".as_ptr() as *const libc::c_void,
                    20,
                    0,
                );
            }
            let sent = format!("UDP datagram to {}", SocketAddr::new(t.dst, port));
            if !wait(&fd, libc::POLLIN) {
                return Ok((
                    sent,
                    "no answer (a UDP listener that does not reply looks the same)".into(),
                    false,
                ));
            }
            let mut buf = [0u8; 64];
            // SAFETY: a valid buffer.
            let n =
                unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, 64, 0) };
            Ok(if n >= 0 {
                (sent, "a reply".into(), true)
            } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::ECONNREFUSED) {
                (
                    sent,
                    "port unreachable: it arrived, nothing listens there".into(),
                    true,
                )
            } else {
                (sent, std::io::Error::last_os_error().to_string(), false)
            })
        }
        Proto::Icmp => echo(t, domain, &addr, len),
    }
}

/// An ICMP echo over a raw socket, and its reply.
fn echo(
    t: &Trace,
    domain: i32,
    addr: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Result<(String, String, bool), TraceError> {
    let v4 = t.dst.is_ipv4();
    let proto = if v4 {
        libc::IPPROTO_ICMP
    } else {
        libc::IPPROTO_ICMPV6
    };
    let fd = socket(domain, libc::SOCK_RAW | libc::SOCK_NONBLOCK, proto)?;
    bind_source(&fd, t.src);
    let id = (std::process::id() & 0xffff) as u16;
    let mut pkt = vec![if v4 { 8 } else { 128 }, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(b"ferrynet trace probe");
    if v4 {
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    // SAFETY: a valid buffer and sockaddr.
    unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr() as *const libc::c_void,
            pkt.len(),
            0,
            addr as *const _ as *const libc::sockaddr,
            len,
        )
    };
    let sent = format!("ICMP echo request to {}", t.dst);
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if !wait(&fd, libc::POLLIN) {
            break;
        }
        let mut buf = [0u8; 512];
        // SAFETY: a valid buffer.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                512,
                0,
            )
        };
        if n <= 0 {
            continue;
        }
        let b = &buf[..n as usize];
        let icmp = if v4 {
            b.get(((b[0] & 0x0f) as usize) * 4..)
        } else {
            Some(b)
        };
        let Some(icmp) = icmp else { continue };
        let reply = if v4 { 0 } else { 129 };
        if icmp.len() >= 8 && icmp[0] == reply && icmp[4..6] == id.to_be_bytes() {
            return Ok((sent, "echo reply".into(), true));
        }
    }
    Ok((sent, "no answer".into(), false))
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
