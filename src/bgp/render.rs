//! BIRD's configuration as text: the fragment of sessions, filters and announcements
//! ferrynet owns (`ferrynet.conf`, included by an external BIRD too) and the whole file of a
//! BIRD ferrynet starts itself. Pure functions of the host, its mesh and the settings.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::{Ipv4Net, Ipv6Net};

use super::BgpConfig;

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
pub(super) fn render_main(cfg: &BgpConfig, site: &Site, fragment: &str) -> String {
    format!(
        "# Written by the ferrynet agent.\nrouter id {};\nlog {} {{ info, remote, warning, error, auth, fatal, bug }};\nprotocol device {{ }}\n\n{fragment}",
        site.address,
        quoted_path(&cfg.config_dir.join("bird.log")),
    )
}

fn quoted_path(p: &Path) -> String {
    format!("\"{}\"", p.display().to_string().replace('"', ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::{bird_binary, BgpPeer, DEFAULT_AS};
    use std::process::Command;

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
