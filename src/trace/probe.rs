//! `trace --probe`: one real packet, and the rules it met.
//!
//! For the probe's flow alone, a chain in ferrynet's own tables (`inet` and `bridge`, at the
//! earliest priority, in every host namespace of the trace) sets `meta nftrace`; the kernel
//! then reports every chain and rule the packet passes through on NFNLGRP_NFTRACE — the events
//! `nft monitor trace` prints — which are read over netlink while one packet is sent from the
//! source namespace: a TCP SYN (a non-blocking connect), a UDP datagram or an ICMP echo. The
//! answer says whether it arrived: a SYN-ACK or a RST, an echo reply, a UDP reply or the
//! destination's port-unreachable. A UDP listener that never replies looks like a lost packet
//! (said so in the report). The chains are removed before the command returns, also on error.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::hosts::Hosts;
use super::{Proto, Trace, TraceError};
use crate::netlink::socket::{attr_string, attrs, Reply, Socket};
use crate::netns::{Netns, NETNS_RUN_DIR};

const NFNLGRP_NFTRACE: u32 = 9;
const NFT_MSG_TRACE: u16 = (10 << 8) | 17;
const NFTA_TRACE_TABLE: u16 = 1;
const NFTA_TRACE_CHAIN: u16 = 2;
const NFTA_TRACE_RULE_HANDLE: u16 = 3;
const NFTA_TRACE_TYPE: u16 = 4;
const NFTA_TRACE_VERDICT: u16 = 5;
const NFTA_TRACE_POLICY: u16 = 16;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// How long to wait for an answer: under the one second after which TCP sends its SYN
/// again, so that the events are those of one packet.
const WAIT: Duration = Duration::from_millis(900);

/// What the probe saw.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// What was sent, from where.
    pub sent: String,
    /// What came back.
    pub answer: String,
    pub arrived: bool,
    /// Every chain and rule the packet went through, in order, per host namespace.
    pub events: Vec<ProbeEvent>,
    /// The last verdict any chain gave it: `accept` or `drop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// Whether the static trace and the probe agree on delivered or not.
    pub agrees: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeEvent {
    pub host: String,
    pub family: String,
    pub table: String,
    pub chain: String,
    /// `rule`, `policy` or `return`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub verdict: String,
}

/// The temporary chains of one host namespace, removed on drop.
struct TraceChains<'a> {
    ns: &'a Netns,
    name: String,
    families: Vec<&'static str>,
}

impl Drop for TraceChains<'_> {
    fn drop(&mut self) {
        let mut script = String::new();
        for f in &self.families {
            for suffix in ["", "_out"] {
                if *f == "bridge" && !suffix.is_empty() {
                    continue;
                }
                script.push_str(&format!(
                    "flush chain {f} ferrynet {n}{suffix}\ndelete chain {f} ferrynet {n}{suffix}\n",
                    n = self.name
                ));
            }
        }
        let _ = self.ns.run_here(|| nft(&script));
    }
}

fn nft(script: &str) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running nft: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The match for the probe's packet, as written in an nft rule.
fn flow_match(t: &Trace) -> String {
    let (ip, icmp) = if t.dst.is_ipv4() {
        ("ip", "meta l4proto icmp icmp type echo-request")
    } else {
        ("ip6", "meta l4proto ipv6-icmp icmpv6 type echo-request")
    };
    let src = t
        .src
        .map(|s| format!("{ip} saddr {s} "))
        .unwrap_or_default();
    let l4 = match (t.proto, t.port) {
        (Proto::Tcp, Some(p)) => format!("meta l4proto tcp th dport {p}"),
        (Proto::Udp, Some(p)) => format!("meta l4proto udp th dport {p}"),
        _ => icmp.to_string(),
    };
    format!("{src}{ip} daddr {} {l4}", t.dst)
}

fn install<'a>(ns: &'a Netns, name: &str, t: &Trace) -> Result<TraceChains<'a>, TraceError> {
    let m = flow_match(t);
    let mut chains = TraceChains {
        ns,
        name: name.to_string(),
        families: Vec::new(),
    };
    for (family, hooks) in [
        ("inet", &["prerouting", "output"][..]),
        ("bridge", &["prerouting"][..]),
    ] {
        let mut script = String::new();
        for hook in hooks {
            let chain = if *hook == "output" {
                format!("{name}_out")
            } else {
                name.to_string()
            };
            script.push_str(&format!(
                "add chain {family} ferrynet {chain} {{ type filter hook {hook} priority -350; policy accept; }}\n\
                 add rule {family} ferrynet {chain} {m} meta nftrace set 1\n"
            ));
        }
        // A host without ferrynet's table of this family has nothing of ours to trace.
        if ns.run_here(|| nft(&script))?.is_ok() {
            chains.families.push(family);
        }
    }
    Ok(chains)
}

/// Rule texts by handle, for the chains an event names (`nft -a list chain`).
fn rule_texts(ns: &Netns, family: &str, table: &str, chain: &str) -> HashMap<u64, String> {
    let listing = ns
        .run_here(|| {
            Command::new("nft")
                .args(["-a", "list", "chain", family, table, chain])
                .output()
        })
        .ok()
        .and_then(|r| r.ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    listing
        .lines()
        .filter_map(|l| {
            let (rule, handle) = l.trim().rsplit_once(" # handle ")?;
            Some((handle.trim().parse().ok()?, rule.trim().to_string()))
        })
        .collect()
}

struct RawEvent {
    family: u8,
    table: String,
    chain: String,
    handle: Option<u64>,
    kind: u32,
    verdict: String,
}

fn parse_event(r: &Reply) -> Option<RawEvent> {
    if r.msg_type != NFT_MSG_TRACE || r.payload.len() < 4 {
        return None;
    }
    let mut e = RawEvent {
        family: r.payload[0],
        table: String::new(),
        chain: String::new(),
        handle: None,
        kind: 0,
        verdict: String::new(),
    };
    let be32 = |d: &[u8]| {
        d.get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
    };
    for (kind, data) in attrs(&r.payload[4..]) {
        match kind {
            NFTA_TRACE_TABLE => e.table = attr_string(data),
            NFTA_TRACE_CHAIN => e.chain = attr_string(data),
            NFTA_TRACE_RULE_HANDLE => {
                e.handle = data
                    .get(..8)
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
            }
            NFTA_TRACE_TYPE => e.kind = be32(data).unwrap_or(0),
            NFTA_TRACE_POLICY => {
                e.verdict = match be32(data) {
                    Some(0) => "drop".into(),
                    Some(1) => "accept".into(),
                    _ => String::new(),
                }
            }
            NFTA_TRACE_VERDICT => {
                let mut code = None;
                let mut target = String::new();
                for (k, d) in attrs(data) {
                    match k {
                        NFTA_VERDICT_CODE => code = be32(d).map(|c| c as i32),
                        NFTA_VERDICT_CHAIN => target = attr_string(d),
                        _ => {}
                    }
                }
                e.verdict = match code {
                    Some(0) => "drop".into(),
                    Some(1) => "accept".into(),
                    Some(2) => "stolen".into(),
                    Some(3) => "queue".into(),
                    Some(-1) => "continue".into(),
                    Some(-2) => "break".into(),
                    Some(-3) => format!("jump {target}"),
                    Some(-4) => format!("goto {target}"),
                    Some(-5) => "return".into(),
                    Some(c) => c.to_string(),
                    None => String::new(),
                };
            }
            _ => {}
        }
    }
    Some(e)
}

fn family_name(f: u8) -> &'static str {
    match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        7 => "bridge",
        10 => "ip6",
        _ => "?",
    }
}

/// The namespace holding `ip` as its own address (an outside sender, e.g. a test's world),
/// other than the host views'.
fn namespace_owning(hosts: &Hosts, ip: IpAddr) -> Option<Netns> {
    let entries = std::fs::read_dir(NETNS_RUN_DIR).ok()?;
    for e in entries.flatten() {
        let Ok(ns) = Netns::open(&e.path()) else {
            continue;
        };
        let owns = ns
            .run_here(|| {
                let mut h = crate::netlink::Handle::new().ok()?;
                Some(match ip {
                    IpAddr::V4(a) => h.addrs(None).ok()?.iter().any(|x| x.net.addr() == a),
                    IpAddr::V6(a) => h.addrs6(None).ok()?.iter().any(|x| x.net.addr() == a),
                })
            })
            .ok()
            .flatten()
            .unwrap_or(false);
        if owns && !hosts.views.iter().any(|v| same_ns(&v.ns, &ns)) {
            return Some(ns);
        }
    }
    None
}

fn same_ns(a: &Netns, b: &Netns) -> bool {
    let ino = |n: &Netns| {
        // SAFETY: fstat on a valid descriptor into a zeroed struct.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstat(n.fd().as_raw_fd(), &mut st);
            (st.st_dev, st.st_ino)
        }
    };
    ino(a) == ino(b)
}

/// Where the probe is sent from.
pub enum Sender<'a> {
    Namespace(&'a Netns),
    /// The host the command runs in.
    Host,
    /// An address outside: the namespace holding it is looked for under /run/netns.
    Outside(IpAddr),
}

pub fn run(hosts: &mut Hosts, sender: Sender<'_>, t: &Trace) -> Result<ProbeReport, TraceError> {
    let found;
    let from_ns: &Netns = match sender {
        Sender::Namespace(ns) => ns,
        Sender::Host => &hosts.views[0].ns,
        Sender::Outside(ip) => {
            found = namespace_owning(hosts, ip).ok_or_else(|| {
                TraceError::BadTarget(format!(
                    "--probe: no namespace under /run/netns holds {ip} to send from"
                ))
            })?;
            &found
        }
    };
    let name = format!("probe_{}", std::process::id());
    let mut listeners = Vec::new();
    for v in &hosts.views {
        let sock = v.ns.run_here(|| Socket::open(libc::NETLINK_NETFILTER))?;
        let sock = sock.map_err(super::nl("nftrace socket"))?;
        sock.join_group(NFNLGRP_NFTRACE)
            .map_err(super::nl("nftrace group"))?;
        listeners.push(sock);
    }
    let mut chains = Vec::new();
    for v in &hosts.views {
        chains.push(install(&v.ns, &name, t)?);
    }
    let (sent, answer, arrived) = from_ns.run_here(|| send(t))??;
    let deadline = Instant::now() + Duration::from_millis(200);
    let mut events = Vec::new();
    let mut verdict = None;
    for (i, sock) in listeners.iter_mut().enumerate() {
        let raw: Vec<RawEvent> = sock
            .events_until(deadline)
            .map_err(super::nl("nftrace events"))?
            .iter()
            .filter_map(parse_event)
            .collect();
        // One packet, but the kernel gives it a new trace id as it moves from the bridge
        // hooks to the routing ones: every event counts.
        let mut texts: HashMap<(String, String, String), HashMap<u64, String>> = HashMap::new();
        for e in &raw {
            // Our own chains, and the event of a packet entering a chain (no rule yet).
            if e.chain.starts_with(&name) || (e.handle.is_none() && e.verdict == "continue") {
                continue;
            }
            let fam = family_name(e.family).to_string();
            let key = (fam.clone(), e.table.clone(), e.chain.clone());
            let rules = texts
                .entry(key)
                .or_insert_with(|| rule_texts(&hosts.views[i].ns, &fam, &e.table, &e.chain));
            let rule = e.handle.and_then(|h| rules.get(&h).cloned());
            if e.verdict == "accept" || e.verdict == "drop" {
                verdict = Some(e.verdict.clone());
            }
            events.push(ProbeEvent {
                host: hosts.views[i].name.clone(),
                family: fam,
                table: e.table.clone(),
                chain: e.chain.clone(),
                kind: match e.kind {
                    1 => "policy",
                    2 => "return",
                    _ => "rule",
                }
                .into(),
                rule,
                verdict: e.verdict.clone(),
            });
        }
    }
    drop(chains);
    let delivered = matches!(t.verdict, super::Verdict::Delivered { .. });
    Ok(ProbeReport {
        sent,
        answer,
        arrived,
        agrees: delivered == arrived,
        events,
        verdict,
    })
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
fn send(t: &Trace) -> Result<(String, String, bool), TraceError> {
    let domain = if t.dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let port = t.port.unwrap_or(0);
    let (addr, len) = sockaddr(SocketAddr::new(t.dst, port));
    let bind_src = |fd: &OwnedFd| {
        if let Some(src) = t.src {
            let (a, l) = sockaddr(SocketAddr::new(src, 0));
            // SAFETY: a valid sockaddr of length l. A failed bind leaves the kernel's choice.
            unsafe { libc::bind(fd.as_raw_fd(), &a as *const _ as *const libc::sockaddr, l) };
        }
    };
    match t.proto {
        Proto::Tcp => {
            let fd = socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)?;
            bind_src(&fd);
            // SAFETY: a valid sockaddr of length len.
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    &addr as *const _ as *const libc::sockaddr,
                    len,
                )
            };
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
            let fd = socket(domain, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0)?;
            bind_src(&fd);
            // SAFETY: a valid sockaddr; a small buffer.
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    &addr as *const _ as *const libc::sockaddr,
                    len,
                );
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
    if let Some(src) = t.src {
        let (a, l) = sockaddr(SocketAddr::new(src, 0));
        // SAFETY: a valid sockaddr of length l.
        unsafe { libc::bind(fd.as_raw_fd(), &a as *const _ as *const libc::sockaddr, l) };
    }
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
