//! The BGP backend (Calico's way): a BIRD 2 daemon announces this host's subnet and learns every
//! other host's; BIRD installs what it learns in the kernel (rtm_protocol `bird`, 12). ferrynet
//! writes BIRD's configuration from the lease store and applies every change through BIRD's
//! control socket (`configure`), never by restarting it, so established sessions survive. BIRD
//! runs as its own daemon: it outlives an agent restart, and the next agent adopts it.

pub mod control;
pub mod status;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::{Ipv4Net, Ipv6Net};

use control::Control;

/// rtm_protocol of the routes BIRD installs.
pub const PROTO_BIRD: u8 = 12;
/// The first private 16-bit AS number (Calico's default too).
pub const DEFAULT_AS: u32 = 64512;

#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BIRD refused {what}: {reply}")]
    Refused { what: String, reply: String },
    #[error("no BIRD answers on {0} (--bird-socket names a BIRD ferrynet does not start)")]
    NotRunning(PathBuf),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BgpError {
    let what = what.into();
    move |source| BgpError::Io { what, source }
}

/// `--bgp-peer IP[,AS]`: a top-of-rack router or route reflector. Without an AS, the peer is in
/// this host's AS (iBGP, e.g. a route reflector).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BgpPeer {
    pub ip: Ipv4Addr,
    pub asn: Option<u32>,
}

impl std::str::FromStr for BgpPeer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, asn) = match s.split_once(',') {
            Some((ip, asn)) => (ip, Some(asn)),
            None => (s, None),
        };
        let ip = ip
            .trim()
            .parse()
            .map_err(|_| format!("--bgp-peer {s:?}: {ip:?} is not an IPv4 address"))?;
        let asn = asn
            .map(|a| parse_asn(a.trim()))
            .transpose()
            .map_err(|e| format!("--bgp-peer {s:?}: {e}"))?;
        Ok(BgpPeer { ip, asn })
    }
}

/// An AS number, plain (64512) or asdot (1.10).
pub fn parse_asn(s: &str) -> Result<u32, String> {
    let n = match s.split_once('.') {
        Some((hi, lo)) => hi
            .parse::<u16>()
            .ok()
            .zip(lo.parse::<u16>().ok())
            .map(|(hi, lo)| (u32::from(hi) << 16) | u32::from(lo)),
        None => s.parse::<u32>().ok(),
    };
    match n {
        Some(n) if n != 0 => Ok(n),
        _ => Err(format!("{s:?} is not an AS number (1 to 4294967295)")),
    }
}

#[derive(Debug, Clone)]
pub struct BgpConfig {
    /// This host's AS.
    pub local_as: u32,
    /// Routers and route reflectors to peer with.
    pub peers: Vec<BgpPeer>,
    /// A session to every other host (the default when there are no `peers`).
    pub mesh: bool,
    /// Seconds without a keepalive before a session (and its routes) is dropped.
    pub hold_time: u16,
    /// Where the generated configuration and BIRD's log live.
    pub config_dir: PathBuf,
    /// BIRD's control socket.
    pub socket: PathBuf,
    /// An already-running BIRD that includes `ferrynet.conf` from `config_dir`: ferrynet only
    /// rewrites that file and reconfigures; it never starts or stops the daemon.
    pub external: bool,
}

/// This host, as BIRD needs to know it.
#[derive(Debug, Clone)]
pub struct Site {
    pub node: String,
    pub address: Ipv4Addr,
    pub uplink: String,
    pub subnet: Ipv4Net,
    pub cluster: Ipv4Net,
    /// IPv6 (dual-stack clusters): this host's IPv6 address on the underlay (the next hop
    /// it announces its IPv6 subnet with), its IPv6 subnet and the IPv6 cluster range. IPv6
    /// is announced and learned only when all three are known.
    pub address6: Option<Ipv6Addr>,
    pub subnet6: Option<Ipv6Net>,
    pub cluster6: Option<Ipv6Net>,
}

/// Another host this one holds a mesh session with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MeshPeer {
    pub ip: Ipv4Addr,
    pub asn: u32,
    pub node: String,
    /// Its IPv6 underlay address, if it has one.
    pub ip6: Option<Ipv6Addr>,
}

fn proto_name(kind: &str, ip: Ipv4Addr) -> String {
    format!("{kind}_{}", ip.to_string().replace('.', "_"))
}

/// BIRD strings are double-quoted; node names come from leases, so keep them to a safe subset.
fn quoted(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("\"{clean}\"")
}

/// IPv6 as BIRD announces and learns it: present only when the site has an IPv6 underlay
/// address, an IPv6 subnet and the IPv6 cluster range.
struct Site6 {
    address: Ipv6Addr,
    subnet: Ipv6Net,
    cluster: Ipv6Net,
}

impl Site {
    fn ipv6(&self) -> Option<Site6> {
        Some(Site6 {
            address: self.address6?,
            subnet: self.subnet6?,
            cluster: self.cluster6?,
        })
    }
}

/// ferrynet's part of BIRD's configuration: the announced subnet, the filters, the kernel
/// export and one session per peer. Deterministic, so an unchanged lease set writes the same
/// text and BIRD is not reconfigured.
///
/// With IPv6 in play (see [`Site`]) the same sessions also carry IPv6 (multiprotocol BGP: an
/// `ipv6` channel next to `ipv4`), announced with this host's IPv6 underlay address as next
/// hop; every IPv6 part is a protocol or filter of its own (`…6`), so without IPv6 the text
/// is exactly the IPv4-only one and an upgrade reconfigures nothing.
pub fn render_fragment(cfg: &BgpConfig, site: &Site, mesh: &[MeshPeer]) -> String {
    let v6 = site.ipv6();
    let uplink = quoted(&site.uplink);
    let mut s = String::new();
    // BIRD sends a new session's first UPDATE up to one keepalive interval after it is
    // established (measured: 0.1-2.7 s with 3 s, 0.05-0.2 s with 1 s): keep it short.
    let keepalive = 1;
    let _ = write!(
        s,
        r#"# Written by the ferrynet agent for node {node}: rewritten on every lease change.
# Next hops of learned routes are resolved over the uplink's own network.
protocol direct ferry_direct {{ ipv4; interface {uplink}; }}
"#,
        node = quoted(&site.node),
    );
    if v6.is_some() {
        let _ = writeln!(
            s,
            "protocol direct ferry_direct6 {{ ipv6; interface {uplink}; }}"
        );
    }
    let _ = write!(
        s,
        r#"
# Only routes learned over BGP reach the kernel (they show as "proto bird").
protocol kernel ferry_kernel {{
  ipv4 {{ import none; export where source = RTS_BGP; }};
}}
"#
    );
    if v6.is_some() {
        let _ = write!(
            s,
            r#"protocol kernel ferry_kernel6 {{
  ipv6 {{ import none; export where source = RTS_BGP; }};
}}
"#
        );
    }
    let _ = write!(
        s,
        r#"
# This host's subnet, originated from a blackhole owned by ferrynet (containers' addresses
# inside it are reached through the bridge's more specific connected route).
protocol static ferry_local {{
  ipv4;
  route {subnet} blackhole;
}}
"#,
        subnet = site.subnet,
    );
    if let Some(v6) = &v6 {
        let _ = write!(
            s,
            r#"protocol static ferry_local6 {{
  ipv6;
  route {subnet} blackhole;
}}
"#,
            subnet = v6.subnet,
        );
    }
    let _ = write!(
        s,
        r#"
filter ferry_import {{
  if net ~ [ {cluster}{{{len},32}} ] && net != {subnet} then accept;
  reject;
}}

filter ferry_export {{
  if proto = "ferry_local" then accept;
  reject;
}}
"#,
        subnet = site.subnet,
        cluster = site.cluster,
        len = site.subnet.prefix_len(),
    );
    if let Some(v6) = &v6 {
        let _ = write!(
            s,
            r#"
filter ferry_import6 {{
  if net ~ [ {cluster}{{{len},128}} ] && net != {subnet} then accept;
  reject;
}}

filter ferry_export6 {{
  if proto = "ferry_local6" then accept;
  reject;
}}
"#,
            subnet = v6.subnet,
            cluster = v6.cluster,
            len = v6.subnet.prefix_len(),
        );
    }
    let _ = write!(
        s,
        r#"
template bgp ferry_peer {{
  local {address} as {local_as};
  hold time {hold}; keepalive time {keepalive};
  connect delay time 0; connect retry time 1; error wait time 1, 20;
  # A dead host's routes go when its session drops, not minutes later.
  graceful restart off; long lived graceful restart off;
  ipv4 {{ import filter ferry_import; export filter ferry_export; }};
"#,
        address = site.address,
        local_as = cfg.local_as,
        hold = cfg.hold_time.max(3),
    );
    if let Some(v6) = &v6 {
        let _ = write!(
            s,
            r#"  # IPv6 over the same session: peers reach this host's IPv6 subnet via its IPv6 address.
  ipv6 {{ import filter ferry_import6; export filter ferry_export6; next hop address {address}; }};
"#,
            address = v6.address,
        );
    }
    s.push_str("}\n");
    for p in &cfg.peers {
        let _ = writeln!(
            s,
            "protocol bgp {} from ferry_peer {{ description \"--bgp-peer\"; neighbor {} as {}; }}",
            proto_name("peer", p.ip),
            p.ip,
            p.asn.unwrap_or(cfg.local_as),
        );
    }
    for m in mesh {
        if cfg.peers.iter().any(|p| p.ip == m.ip) || m.ip == site.address {
            continue;
        }
        let _ = writeln!(
            s,
            "protocol bgp {} from ferry_peer {{ description {}; neighbor {} as {}; }}",
            proto_name("mesh", m.ip),
            quoted(&m.node),
            m.ip,
            m.asn,
        );
    }
    s
}

/// The whole configuration of a BIRD that ferrynet starts itself.
fn render_main(cfg: &BgpConfig, site: &Site, fragment: &str) -> String {
    format!(
        "# Written by the ferrynet agent.\nrouter id {};\nlog {} {{ info, remote, warning, error, auth, fatal, bug }};\nprotocol device {{ }}\n\n{fragment}",
        site.address,
        quoted_path(&cfg.config_dir.join("bird.log")),
    )
}

fn quoted_path(p: &Path) -> String {
    format!("\"{}\"", p.display().to_string().replace('"', ""))
}

/// The BIRD daemon this host's agent drives.
pub struct Speaker {
    cfg: BgpConfig,
    site: Site,
    /// What was last written and loaded (None: nothing yet by this process).
    loaded: Option<String>,
}

impl Speaker {
    pub fn new(cfg: BgpConfig, site: Site) -> Speaker {
        Speaker {
            cfg,
            site,
            loaded: None,
        }
    }

    pub fn config(&self) -> &BgpConfig {
        &self.cfg
    }

    pub fn set_subnet(&mut self, subnet: Ipv4Net, subnet6: Option<Ipv6Net>) {
        self.site.subnet = subnet;
        self.site.subnet6 = subnet6;
    }

    /// The file BIRD reads: bird.conf for ferrynet's own BIRD, the includable fragment
    /// ferrynet.conf for an external one.
    pub fn config_path(&self) -> PathBuf {
        self.cfg.config_dir.join(if self.cfg.external {
            "ferrynet.conf"
        } else {
            "bird.conf"
        })
    }

    fn pid_path(&self) -> PathBuf {
        self.cfg.config_dir.join("bird.pid")
    }

    /// Writes the configuration for `mesh` and makes BIRD run it: reconfigures a running
    /// BIRD when the text changed (or this agent has not loaded it yet), starts one when none
    /// answers. Returns whether anything changed.
    pub fn reconcile(&mut self, mesh: &[MeshPeer]) -> Result<bool, BgpError> {
        let fragment = render_fragment(&self.cfg, &self.site, mesh);
        let text = if self.cfg.external {
            fragment
        } else {
            render_main(&self.cfg, &self.site, &fragment)
        };
        let path = self.config_path();
        let changed = self.loaded.as_deref() != Some(text.as_str());
        if changed {
            crate::util::ensure_dir(&self.cfg.config_dir)
                .map_err(io(format!("{}", self.cfg.config_dir.display())))?;
            crate::util::write_atomic(&path, text.as_bytes())
                .map_err(io(format!("{}", path.display())))?;
        }
        match Control::connect(&self.cfg.socket) {
            Ok(mut c) => {
                if changed {
                    configure(&mut c)?;
                }
            }
            Err(_) if self.cfg.external => {
                self.loaded = None;
                return Err(BgpError::NotRunning(self.cfg.socket.clone()));
            }
            Err(_) => self.start(&path)?,
        }
        self.loaded = Some(text);
        Ok(changed)
    }

    /// Whether BIRD still runs (checked every loop: a dead BIRD is restarted by the next
    /// reconcile, which the caller should force).
    pub fn alive(&self) -> bool {
        if self.cfg.external {
            return Control::connect(&self.cfg.socket).is_ok();
        }
        crate::util::read_pid_file(&self.pid_path()).is_some_and(crate::util::process_running)
    }

    fn start(&mut self, path: &Path) -> Result<(), BgpError> {
        if let Some(dir) = self.cfg.socket.parent() {
            crate::util::ensure_dir(dir).map_err(io(format!("{}", dir.display())))?;
        }
        // BIRD daemonizes (its own session): it outlives this agent, as the routes it keeps
        // in the kernel must.
        let out = Command::new(bird_binary())
            .arg("-c")
            .arg(path)
            .arg("-s")
            .arg(&self.cfg.socket)
            .arg("-P")
            .arg(self.pid_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(io(format!("start {}", bird_binary().display())))?;
        if !out.status.success() {
            return Err(BgpError::Refused {
                what: format!("to start with {}", path.display()),
                reply: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Control::connect(&self.cfg.socket) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(io(format!("BIRD's socket {}", self.cfg.socket.display()))(
                        e,
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Stops ferrynet's BIRD: its sessions close with a notification, so every peer drops this
    /// host's routes at once instead of after the hold time. An external BIRD is left running.
    pub fn shutdown(&self) -> Result<(), BgpError> {
        if self.cfg.external {
            return Ok(());
        }
        let mut c = Control::connect(&self.cfg.socket).map_err(io("BIRD's control socket"))?;
        // "down" answers, then BIRD closes the socket and exits.
        let _ = c.command("down");
        Ok(())
    }
}

/// Re-reads the file BIRD was started with (which, for an external BIRD, includes ours).
fn configure(c: &mut Control) -> Result<(), BgpError> {
    let reply = c.command("configure").map_err(io("BIRD configure"))?;
    if reply.is_error() {
        return Err(BgpError::Refused {
            what: "the new configuration".into(),
            reply: reply.text(),
        });
    }
    Ok(())
}

fn bird_binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/bird");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("bird")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site {
            node: "a\"; evil".into(),
            address: Ipv4Addr::new(10, 200, 0, 11),
            uplink: "eth0".into(),
            subnet: "10.244.1.0/24".parse().unwrap(),
            cluster: "10.244.0.0/16".parse().unwrap(),
            address6: None,
            subnet6: None,
            cluster6: None,
        }
    }

    fn dual_site() -> Site {
        Site {
            node: "node0".into(),
            address6: Some("fd00:200::11".parse().unwrap()),
            subnet6: Some("fd00:244:0:1::/64".parse().unwrap()),
            cluster6: Some("fd00:244::/56".parse().unwrap()),
            ..site()
        }
    }

    fn peer(last: u8, node: &str) -> MeshPeer {
        MeshPeer {
            ip: Ipv4Addr::new(10, 200, 0, last),
            asn: DEFAULT_AS,
            node: node.into(),
            ip6: Some(format!("fd00:200::{last}").parse().unwrap()),
        }
    }

    fn cfg(peers: Vec<BgpPeer>) -> BgpConfig {
        BgpConfig {
            local_as: DEFAULT_AS,
            mesh: peers.is_empty(),
            peers,
            hold_time: 9,
            config_dir: "/tmp/x".into(),
            socket: "/tmp/x.ctl".into(),
            external: false,
        }
    }

    #[test]
    fn peers_parse() {
        assert_eq!(
            "10.0.0.1,65000".parse::<BgpPeer>(),
            Ok(BgpPeer {
                ip: Ipv4Addr::new(10, 0, 0, 1),
                asn: Some(65000)
            })
        );
        assert_eq!(
            "10.0.0.1".parse::<BgpPeer>().unwrap().asn,
            None,
            "iBGP by default"
        );
        assert_eq!(parse_asn("1.10"), Ok(65546));
        assert!("10.0.0.1,0".parse::<BgpPeer>().is_err());
        assert!("router,65000".parse::<BgpPeer>().is_err());
    }

    #[test]
    fn fragment_has_one_session_per_peer_and_quotes_names() {
        let mesh = vec![
            MeshPeer {
                ip: Ipv4Addr::new(10, 200, 0, 12),
                asn: DEFAULT_AS,
                node: "b".into(),
                ip6: None,
            },
            MeshPeer {
                ip: Ipv4Addr::new(10, 200, 0, 1),
                asn: 65000,
                node: "dup".into(),
                ip6: None,
            },
        ];
        let c = cfg(vec!["10.200.0.1,65000".parse().unwrap()]);
        let f = render_fragment(&c, &site(), &mesh);
        assert!(f.contains("protocol bgp mesh_10_200_0_12 from ferry_peer"));
        assert!(f.contains("protocol bgp peer_10_200_0_1 from ferry_peer"));
        assert!(!f.contains("mesh_10_200_0_1 "), "configured peer wins");
        assert!(f.contains("route 10.244.1.0/24 blackhole"));
        assert!(f.contains("[ 10.244.0.0/16{24,32} ]"));
        assert!(f.contains("node \"a___evil\"") && !f.contains("a\";"));
        assert_eq!(f, render_fragment(&c, &site(), &mesh), "deterministic");
    }

    /// The IPv4-only text, byte for byte as before dual-stack: an upgraded agent must not
    /// reconfigure BIRD on an IPv4-only cluster.
    const IPV4_ONLY: &str = r#"# Written by the ferrynet agent for node "node0": rewritten on every lease change.
# Next hops of learned routes are resolved over the uplink's own network.
protocol direct ferry_direct { ipv4; interface "eth0"; }

# Only routes learned over BGP reach the kernel (they show as "proto bird").
protocol kernel ferry_kernel {
  ipv4 { import none; export where source = RTS_BGP; };
}

# This host's subnet, originated from a blackhole owned by ferrynet (containers' addresses
# inside it are reached through the bridge's more specific connected route).
protocol static ferry_local {
  ipv4;
  route 10.244.1.0/24 blackhole;
}

filter ferry_import {
  if net ~ [ 10.244.0.0/16{24,32} ] && net != 10.244.1.0/24 then accept;
  reject;
}

filter ferry_export {
  if proto = "ferry_local" then accept;
  reject;
}

template bgp ferry_peer {
  local 10.200.0.11 as 64512;
  hold time 9; keepalive time 1;
  connect delay time 0; connect retry time 1; error wait time 1, 20;
  # A dead host's routes go when its session drops, not minutes later.
  graceful restart off; long lived graceful restart off;
  ipv4 { import filter ferry_import; export filter ferry_export; };
}
protocol bgp peer_10_200_0_1 from ferry_peer { description "--bgp-peer"; neighbor 10.200.0.1 as 65000; }
protocol bgp mesh_10_200_0_12 from ferry_peer { description "node1"; neighbor 10.200.0.12 as 64512; }
"#;

    #[test]
    fn ipv4_only_fragment_is_unchanged() {
        let c = cfg(vec!["10.200.0.1,65000".parse().unwrap()]);
        let v4 = Site {
            node: "node0".into(),
            ..site()
        };
        let mesh = [peer(12, "node1")];
        assert_eq!(render_fragment(&c, &v4, &mesh), IPV4_ONLY);
        // IPv6 needs all three of address6, subnet6 and cluster6.
        for partial in [
            Site {
                address6: None,
                ..dual_site()
            },
            Site {
                subnet6: None,
                ..dual_site()
            },
            Site {
                cluster6: None,
                ..dual_site()
            },
        ] {
            assert_eq!(render_fragment(&c, &partial, &mesh), IPV4_ONLY);
        }
    }

    #[test]
    fn dual_stack_fragment_adds_ipv6_over_the_same_sessions() {
        let c = cfg(vec![]);
        let mesh = [peer(12, "node1"), peer(13, "node2")];
        let f = render_fragment(&c, &dual_site(), &mesh);
        for part in [
            "protocol direct ferry_direct6 { ipv6; interface \"eth0\"; }",
            "protocol kernel ferry_kernel6 {\n  ipv6 { import none; export where source = RTS_BGP; };\n}",
            "protocol static ferry_local6 {\n  ipv6;\n  route fd00:244:0:1::/64 blackhole;\n}",
            "filter ferry_import6 {\n  if net ~ [ fd00:244::/56{64,128} ] && net != fd00:244:0:1::/64 then accept;\n  reject;\n}",
            "filter ferry_export6 {\n  if proto = \"ferry_local6\" then accept;\n  reject;\n}",
            "  ipv4 { import filter ferry_import; export filter ferry_export; };\n",
            "  ipv6 { import filter ferry_import6; export filter ferry_export6; next hop address fd00:200::11; };\n}\n",
        ] {
            assert!(f.contains(part), "{part:?} missing in\n{f}");
        }
        assert!(!f.contains("extended next hop"));
        // Still one session per peer, over IPv4.
        assert_eq!(f.matches("protocol bgp ").count(), 2, "{f}");
        assert!(f.contains("neighbor 10.200.0.12 as 64512;"));
        assert!(!f.contains("neighbor fd00"));
        // Every IPv4 line is still there, in the same order.
        let v4 = render_fragment(
            &c,
            &Site {
                node: "node0".into(),
                ..site()
            },
            &mesh,
        );
        let mut dual = f.lines();
        for line in v4.lines() {
            assert!(dual.any(|l| l == line), "{line:?} lost or moved");
        }
        assert_eq!(f, render_fragment(&c, &dual_site(), &mesh), "deterministic");
    }

    /// BIRD itself parses both renderings (`bird -p`: check the configuration and exit).
    #[test]
    fn bird_parses_both_renderings() {
        if !bird_binary().exists() && Command::new("bird").arg("--version").output().is_err() {
            eprintln!("no bird binary: skipped");
            return;
        }
        let dir = std::env::temp_dir().join(format!("ferrynet-bird-parse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = cfg(vec!["10.200.0.1,65000".parse().unwrap()]);
        c.config_dir = dir.clone();
        let mesh = [peer(12, "node1"), peer(13, "node2")];
        for (name, site) in [("ipv4", site()), ("dual", dual_site())] {
            let text = render_main(&c, &site, &render_fragment(&c, &site, &mesh));
            let path = dir.join(format!("{name}.conf"));
            std::fs::write(&path, text).unwrap();
            let out = Command::new(bird_binary())
                .arg("-p")
                .arg("-c")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // And rejects what is wrong (the check is real).
        let path = dir.join("bad.conf");
        std::fs::write(
            &path,
            "router id 10.0.0.1;\nprotocol bgp { ipv6 { next hop adress ::1; }; }\n",
        )
        .unwrap();
        let out = Command::new(bird_binary())
            .arg("-p")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
