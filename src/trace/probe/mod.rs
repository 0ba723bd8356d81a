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

mod send;

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use send::send;

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
