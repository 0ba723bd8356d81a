//! `ferrynet bgp status`: BIRD's sessions and the prefixes announced and learned, read from its
//! control socket and shown as a table or JSON. Both families: a dual-stack host's sessions
//! carry an `ipv4` and an `ipv6` channel each (routes in/out per channel), and the announced
//! and learned prefixes are those of BIRD's master4 and master6 tables.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::IpNet;
use serde::Serialize;

use super::control::{Control, Line};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Session {
    pub name: String,
    pub description: Option<String>,
    pub neighbor: Option<IpAddr>,
    pub neighbor_as: Option<u32>,
    /// BIRD's protocol state: up, start, down...
    pub state: String,
    /// The BGP state: Established, Active, Connect...
    pub bgp_state: String,
    pub since: String,
    /// Routes in and out over all the session's channels.
    pub imported: u64,
    pub exported: u64,
    /// One per address family the session is configured for, in BIRD's order.
    pub channels: Vec<Channel>,
}

/// A BGP channel: one address family over a session.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Channel {
    /// BIRD's channel name: "ipv4", "ipv6".
    pub family: String,
    /// UP once the family is negotiated with the neighbor, else DOWN (the neighbor does not
    /// speak it, or the session is not established).
    pub state: String,
    pub imported: u64,
    pub exported: u64,
    /// The next hop this host announces its routes with on this channel.
    pub next_hop: Option<IpAddr>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LearnedRoute {
    pub prefix: IpNet,
    pub via: Option<IpAddr>,
    pub from: String,
    /// The route BIRD chose (and put in the kernel) among those for this prefix.
    pub best: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub socket: String,
    pub version: String,
    pub router_id: Option<Ipv4Addr>,
    pub sessions: Vec<Session>,
    /// This host's subnets (IPv4, then IPv6 on a dual-stack host).
    pub announced: Vec<IpNet>,
    /// Routes learned over BGP, IPv4 then IPv6.
    pub learned: Vec<LearnedRoute>,
}

pub fn query(socket: &Path) -> std::io::Result<Status> {
    let mut c = Control::connect(socket)?;
    let router_id = parse_router_id(&c.command("show status")?.lines);
    let sessions = parse_sessions(&c.command("show protocols all")?.lines);
    // ferry_local6 exists only on a dual-stack host; naming it in a filter is harmless.
    let announced = parse_routes(
        &c.command(r#"show route where proto = "ferry_local" || proto = "ferry_local6""#)?
            .lines,
    )
    .into_iter()
    .map(|r| r.prefix)
    .collect();
    let learned = parse_routes(&c.command("show route where source = RTS_BGP")?.lines);
    Ok(Status {
        socket: socket.display().to_string(),
        version: c.version.clone(),
        router_id,
        sessions,
        announced,
        learned,
    })
}

fn parse_router_id(lines: &[Line]) -> Option<Ipv4Addr> {
    lines.iter().find_map(|l| {
        l.text
            .trim()
            .strip_prefix("Router ID is ")
            .and_then(|ip| ip.parse().ok())
    })
}

/// "1 imported, 2 exported, 1 preferred" → (1, 2).
fn route_counts(value: &str) -> (u64, u64) {
    let (mut imported, mut exported) = (0, 0);
    for part in value.split(',') {
        let mut w = part.split_whitespace();
        let (Some(n), Some(what)) = (w.next(), w.next()) else {
            continue;
        };
        let n = n.parse().unwrap_or(0);
        match what {
            "imported" => imported = n,
            "exported" => exported = n,
            _ => {}
        }
    }
    (imported, exported)
}

/// `show protocols all`: a 1002 line per protocol, then its 1006 detail lines; a BGP
/// protocol's details end with one "Channel ipv4" / "Channel ipv6" block per family, whose
/// "Routes" and "BGP Next hop" lines belong to that channel.
fn parse_sessions(lines: &[Line]) -> Vec<Session> {
    let mut out: Vec<Session> = Vec::new();
    let mut in_bgp = false;
    for l in lines {
        match l.code {
            1002 => {
                let f: Vec<&str> = l.text.split_whitespace().collect();
                in_bgp = f.get(1) == Some(&"BGP");
                if in_bgp {
                    out.push(Session {
                        name: f[0].to_string(),
                        description: None,
                        neighbor: None,
                        neighbor_as: None,
                        state: f.get(3).unwrap_or(&"").to_string(),
                        bgp_state: f.get(5..).map(|r| r.join(" ")).unwrap_or_default(),
                        since: f.get(4).unwrap_or(&"").to_string(),
                        imported: 0,
                        exported: 0,
                        channels: Vec::new(),
                    });
                }
            }
            1006 if in_bgp => {
                let Some(s) = out.last_mut() else { continue };
                let text = l.text.trim();
                if let Some(family) = text.strip_prefix("Channel ") {
                    s.channels.push(Channel {
                        family: family.trim().to_string(),
                        state: String::new(),
                        imported: 0,
                        exported: 0,
                        next_hop: None,
                    });
                    continue;
                }
                let Some((key, value)) = text.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                match (key, s.channels.last_mut()) {
                    ("Description", None) => s.description = Some(value.to_string()),
                    ("BGP state", None) => s.bgp_state = value.to_string(),
                    ("Neighbor address", None) => s.neighbor = value.parse().ok(),
                    ("Neighbor AS", None) => s.neighbor_as = value.parse().ok(),
                    ("Routes", None) => (s.imported, s.exported) = route_counts(value),
                    ("State", Some(c)) => c.state = value.to_string(),
                    ("Routes", Some(c)) => (c.imported, c.exported) = route_counts(value),
                    // "10.200.0.11", or a global and a link-local IPv6 address.
                    ("BGP Next hop", Some(c)) => {
                        c.next_hop = value.split_whitespace().next().and_then(|a| a.parse().ok())
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    for s in out.iter_mut().filter(|s| !s.channels.is_empty()) {
        s.imported = s.channels.iter().map(|c| c.imported).sum();
        s.exported = s.channels.iter().map(|c| c.exported).sum();
    }
    out
}

/// `show route`: 1007 lines, a "Table master4:" / "Table master6:" line before each table's
/// routes; a route line starts with its prefix (or, for a second route to the same prefix,
/// with its type), a "via" line follows it.
fn parse_routes(lines: &[Line]) -> Vec<LearnedRoute> {
    let mut out: Vec<LearnedRoute> = Vec::new();
    let mut prefix: Option<IpNet> = None;
    let mut via_seen = false;
    for l in lines.iter().filter(|l| l.code == 1007) {
        let text = l.text.trim();
        if let Some(rest) = text.strip_prefix("via ") {
            // A multipath route has several: keep the first.
            if let Some(r) = out.last_mut().filter(|_| !via_seen) {
                r.via = rest
                    .split_whitespace()
                    .next()
                    .and_then(|ip| ip.parse().ok());
                via_seen = r.via.is_some();
            }
            continue;
        }
        if text.starts_with("Table ") {
            prefix = None;
            continue;
        }
        let mut words = text.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Ok(p) = first.parse::<IpNet>() {
            prefix = Some(p);
        } else if !text.contains('[') {
            continue;
        }
        let Some(p) = prefix else { continue };
        // "[mesh_10_200_0_12 07:55:05.522]", IPv6 over an IPv4 session: "[... from 10.200.0.12]".
        let from = text
            .split_once('[')
            .and_then(|(_, r)| r.split_whitespace().next())
            .unwrap_or("")
            .trim_end_matches(']')
            .to_string();
        out.push(LearnedRoute {
            prefix: p,
            via: None,
            from,
            best: text.contains(" * "),
        });
        via_seen = false;
    }
    out
}

/// "1/1" for a session with only an ipv4 channel (as before dual-stack); with more
/// channels one entry per family, e.g. "ipv4 2/1, ipv6 2/1" or "ipv4 2/1, ipv6 down".
fn routes_in_out(s: &Session) -> String {
    match s.channels.as_slice() {
        [c] if c.family == "ipv4" => format!("{}/{}", c.imported, c.exported),
        [] => format!("{}/{}", s.imported, s.exported),
        channels => channels
            .iter()
            .map(|c| {
                if c.state.eq_ignore_ascii_case("up") {
                    format!("{} {}/{}", c.family, c.imported, c.exported)
                } else {
                    format!("{} {}", c.family, c.state.to_lowercase())
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

pub fn render_table(s: &Status) -> String {
    let mut out = format!(
        "{} on {} (router id {})\n\n",
        s.version,
        s.socket,
        s.router_id.map(|i| i.to_string()).unwrap_or("?".into())
    );
    let mut rows = vec![[
        "SESSION".to_string(),
        "NEIGHBOR".into(),
        "AS".into(),
        "STATE".into(),
        "SINCE".into(),
        "ROUTES IN/OUT".into(),
        "DESCRIPTION".into(),
    ]];
    for x in &s.sessions {
        rows.push([
            x.name.clone(),
            x.neighbor.map(|i| i.to_string()).unwrap_or_default(),
            x.neighbor_as.map(|i| i.to_string()).unwrap_or_default(),
            x.bgp_state.clone(),
            x.since.clone(),
            routes_in_out(x),
            x.description.clone().unwrap_or_default(),
        ]);
    }
    out.push_str(&columns(&rows));
    out.push_str("\nANNOUNCED\n");
    for p in &s.announced {
        out.push_str(&format!("  {p}\n"));
    }
    out.push('\n');
    let mut rows = vec![[
        "LEARNED".to_string(),
        "VIA".into(),
        "FROM".into(),
        "BEST".into(),
    ]];
    for r in &s.learned {
        rows.push([
            r.prefix.to_string(),
            r.via.map(|i| i.to_string()).unwrap_or_default(),
            r.from.clone(),
            if r.best { "*".into() } else { String::new() },
        ]);
    }
    out.push_str(&columns(&rows));
    out
}

fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut width = [0usize; N];
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::control::parse_reply;

    /// Replies captured from BIRD 2.0.12 (src/bgp/testdata, written by this module's
    /// configuration): `dual_*` on host 10.200.0.11 (IPv4 and IPv6) with a dual-stack peer
    /// (.12), an IPv4-only peer (.13) and an absent one (.14); `ipv4_*` on the IPv4-only .13.
    fn reply(name: &str) -> Vec<Line> {
        let raw = match name {
            "dual_show_status" => include_str!("testdata/dual_show_status.txt"),
            "dual_show_protocols_all" => include_str!("testdata/dual_show_protocols_all.txt"),
            "dual_show_route_local" => include_str!("testdata/dual_show_route_local.txt"),
            "dual_show_route_bgp" => include_str!("testdata/dual_show_route_bgp.txt"),
            "ipv4_show_status" => include_str!("testdata/ipv4_show_status.txt"),
            "ipv4_show_protocols_all" => include_str!("testdata/ipv4_show_protocols_all.txt"),
            "ipv4_show_route_local" => include_str!("testdata/ipv4_show_route_local.txt"),
            "ipv4_show_route_bgp" => include_str!("testdata/ipv4_show_route_bgp.txt"),
            _ => unreachable!("{name}"),
        };
        parse_reply(raw).lines
    }

    fn status(kind: &str) -> Status {
        Status {
            socket: "/run/ferrynet/bird.ctl".into(),
            version: "BIRD 2.0.12".into(),
            router_id: parse_router_id(&reply(&format!("{kind}_show_status"))),
            sessions: parse_sessions(&reply(&format!("{kind}_show_protocols_all"))),
            announced: parse_routes(&reply(&format!("{kind}_show_route_local")))
                .into_iter()
                .map(|r| r.prefix)
                .collect(),
            learned: parse_routes(&reply(&format!("{kind}_show_route_bgp"))),
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn channel(family: &str, state: &str, io: (u64, u64), next_hop: Option<IpAddr>) -> Channel {
        Channel {
            family: family.into(),
            state: state.into(),
            imported: io.0,
            exported: io.1,
            next_hop,
        }
    }

    #[test]
    fn dual_stack_sessions_have_a_channel_per_family() {
        let s = status("dual").sessions;
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["mesh_10_200_0_12", "mesh_10_200_0_13", "mesh_10_200_0_14"],
            "only BGP protocols"
        );
        // A dual-stack peer: both families negotiated, one route each way on each.
        assert_eq!(s[0].neighbor, ip("10.200.0.12"));
        assert_eq!(s[0].neighbor_as, Some(64512));
        assert_eq!(s[0].description.as_deref(), Some("node1"));
        assert_eq!(s[0].bgp_state, "Established");
        assert_eq!(
            s[0].channels,
            [
                channel("ipv4", "UP", (1, 1), ip("10.200.0.11")),
                channel("ipv6", "UP", (1, 1), ip("fd00:200::11")),
            ]
        );
        assert_eq!(
            (s[0].imported, s[0].exported),
            (2, 2),
            "summed over channels"
        );
        // An IPv4-only peer: the ipv6 channel is not negotiated.
        assert_eq!(
            s[1].channels,
            [
                channel("ipv4", "UP", (1, 1), ip("10.200.0.11")),
                channel("ipv6", "DOWN", (0, 0), None),
            ]
        );
        // An absent peer.
        assert_eq!(
            (s[2].state.as_str(), s[2].bgp_state.as_str()),
            ("start", "Connect")
        );
        assert!(s[2].channels.iter().all(|c| c.state == "DOWN"));
    }

    #[test]
    fn dual_stack_routes_of_both_tables() {
        let st = status("dual");
        assert_eq!(st.router_id, Some(Ipv4Addr::new(10, 200, 0, 11)));
        let announced: Vec<String> = st.announced.iter().map(|p| p.to_string()).collect();
        assert_eq!(announced, ["10.244.1.0/24", "fd00:244:0:1::/64"]);
        let learned: Vec<(String, Option<IpAddr>, &str, bool)> = st
            .learned
            .iter()
            .map(|r| (r.prefix.to_string(), r.via, r.from.as_str(), r.best))
            .collect();
        assert_eq!(
            learned,
            [
                (
                    "10.244.2.0/24".into(),
                    ip("10.200.0.12"),
                    "mesh_10_200_0_12",
                    true
                ),
                (
                    "10.244.3.0/24".into(),
                    ip("10.200.0.13"),
                    "mesh_10_200_0_13",
                    true
                ),
                (
                    "fd00:244:0:2::/64".into(),
                    ip("fd00:200::12"),
                    "mesh_10_200_0_12",
                    true
                ),
            ]
        );
    }

    #[test]
    fn dual_stack_table_shows_each_family() {
        let t = render_table(&status("dual"));
        let expected = "\
BIRD 2.0.12 on /run/ferrynet/bird.ctl (router id 10.200.0.11)

SESSION           NEIGHBOR     AS     STATE        SINCE         ROUTES IN/OUT         DESCRIPTION
mesh_10_200_0_12  10.200.0.12  64512  Established  07:56:13.626  ipv4 1/1, ipv6 1/1    node1
mesh_10_200_0_13  10.200.0.13  64512  Established  07:56:13.691  ipv4 1/1, ipv6 down   node2
mesh_10_200_0_14  10.200.0.14  64512  Connect      07:56:12.762  ipv4 down, ipv6 down  node3

ANNOUNCED
  10.244.1.0/24
  fd00:244:0:1::/64

LEARNED            VIA           FROM              BEST
10.244.2.0/24      10.200.0.12   mesh_10_200_0_12  *
10.244.3.0/24      10.200.0.13   mesh_10_200_0_13  *
fd00:244:0:2::/64  fd00:200::12  mesh_10_200_0_12  *
";
        assert_eq!(t, expected, "{t}");
    }

    #[test]
    fn ipv4_only_status_is_as_before() {
        let st = status("ipv4");
        assert_eq!(st.sessions.len(), 3);
        assert_eq!(
            st.sessions[0].channels,
            [channel("ipv4", "UP", (1, 1), ip("10.200.0.13"))]
        );
        let t = render_table(&st);
        assert!(
            t.contains("mesh_10_200_0_11  10.200.0.11  64512  Established"),
            "{t}"
        );
        assert!(t.contains("  1/1  "), "one family: no family names\n{t}");
        assert!(!t.contains("ipv4"), "{t}");
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["announced"], serde_json::json!(["10.244.3.0/24"]));
        assert_eq!(json["learned"][0]["prefix"], "10.244.1.0/24");
        assert_eq!(json["learned"][0]["via"], "10.200.0.11");
        assert_eq!(json["sessions"][0]["neighbor"], "10.200.0.11");
        assert_eq!(json["sessions"][0]["imported"], 1);
        assert_eq!(json["sessions"][0]["channels"][0]["family"], "ipv4");
    }

    #[test]
    fn routes_from_show_route() {
        let l = parse_reply(
            "1007-Table master4:\n\
             \x2010.244.12.0/24       unicast [mesh_10_200_0_12 23:13:53.379] * (100) [i]\n\
             \x20\tvia 10.200.0.12 on eth0\n\
             \x20                     unicast [peer_10_200_0_1 23:13:54.000] (100) [AS65000i]\n\
             \x20\tvia 10.200.0.1 on eth0\n\
             0000 \n",
        )
        .lines;
        let r = parse_routes(&l);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].prefix.to_string(), "10.244.12.0/24");
        assert_eq!(r[0].via, ip("10.200.0.12"));
        assert!(r[0].best && !r[1].best);
        assert_eq!(r[1].from, "peer_10_200_0_1");
        assert_eq!(r[1].prefix, r[0].prefix);
    }
}
