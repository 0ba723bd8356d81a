//! `ferrynet bgp status`: BIRD's sessions and the prefixes announced and learned, read from its
//! control socket and shown as a table or JSON.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::Serialize;

use super::control::{Control, Line};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Session {
    pub name: String,
    pub description: Option<String>,
    pub neighbor: Option<Ipv4Addr>,
    pub neighbor_as: Option<u32>,
    /// BIRD's protocol state: up, start, down...
    pub state: String,
    /// The BGP state: Established, Active, Connect...
    pub bgp_state: String,
    pub since: String,
    pub imported: u64,
    pub exported: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LearnedRoute {
    pub prefix: Ipv4Net,
    pub via: Option<Ipv4Addr>,
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
    pub announced: Vec<Ipv4Net>,
    pub learned: Vec<LearnedRoute>,
}

pub fn query(socket: &Path) -> std::io::Result<Status> {
    let mut c = Control::connect(socket)?;
    let status = c.command("show status")?;
    let router_id = status.lines.iter().find_map(|l| {
        l.text
            .trim()
            .strip_prefix("Router ID is ")
            .and_then(|ip| ip.parse().ok())
    });
    let sessions = parse_sessions(&c.command("show protocols all")?.lines);
    let announced = parse_routes(&c.command("show route protocol ferry_local")?.lines)
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

/// `show protocols all`: a 1002 line per protocol, then its 1006 detail lines.
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
                    });
                }
            }
            1006 if in_bgp => {
                let Some(s) = out.last_mut() else { continue };
                let Some((key, value)) = l.text.trim().split_once(':') else {
                    continue;
                };
                let value = value.trim();
                match key {
                    "Description" => s.description = Some(value.to_string()),
                    "BGP state" => s.bgp_state = value.to_string(),
                    "Neighbor address" => s.neighbor = value.parse().ok(),
                    "Neighbor AS" => s.neighbor_as = value.parse().ok(),
                    "Routes" => {
                        // "1 imported, 1 exported, 1 preferred"
                        for part in value.split(',') {
                            let mut w = part.split_whitespace();
                            let (Some(n), Some(what)) = (w.next(), w.next()) else {
                                continue;
                            };
                            let n = n.parse().unwrap_or(0);
                            match what {
                                "imported" => s.imported = n,
                                "exported" => s.exported = n,
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    out
}

/// `show route`: 1007 lines; a route line starts with its prefix (or, for a second route to
/// the same prefix, with its type), a "via" line follows it.
fn parse_routes(lines: &[Line]) -> Vec<LearnedRoute> {
    let mut out: Vec<LearnedRoute> = Vec::new();
    let mut prefix: Option<Ipv4Net> = None;
    for l in lines.iter().filter(|l| l.code == 1007) {
        let text = l.text.trim();
        if let Some(rest) = text.strip_prefix("via ") {
            if let Some(r) = out.last_mut() {
                r.via = rest
                    .split_whitespace()
                    .next()
                    .and_then(|ip| ip.parse().ok());
            }
            continue;
        }
        let mut words = text.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Ok(p) = first.parse::<Ipv4Net>() {
            prefix = Some(p);
        } else if text.starts_with("Table ") || !text.contains('[') {
            continue;
        }
        let Some(p) = prefix else { continue };
        let from = text
            .split_once('[')
            .and_then(|(_, r)| r.split_whitespace().next())
            .unwrap_or("")
            .to_string();
        out.push(LearnedRoute {
            prefix: p,
            via: None,
            from,
            best: text.contains(" * "),
        });
    }
    out
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
            format!("{}/{}", x.imported, x.exported),
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

    fn lines(raw: &[(u16, &str)]) -> Vec<Line> {
        raw.iter()
            .map(|(code, text)| Line {
                code: *code,
                text: text.to_string(),
            })
            .collect()
    }

    #[test]
    fn sessions_from_show_protocols_all() {
        let l = lines(&[
            (
                2002,
                "Name       Proto      Table      State  Since         Info",
            ),
            (
                1002,
                "device1    Device     ---        up     23:13:46.718  ",
            ),
            (
                1002,
                "mesh_10_200_0_12 BGP        ---        up     23:13:50.996  Established   ",
            ),
            (1006, "  Description:    node1"),
            (1006, "  BGP state:          Established"),
            (1006, "    Neighbor address: 10.200.0.12"),
            (1006, "    Neighbor AS:      64512"),
            (
                1006,
                "    Routes:         1 imported, 2 exported, 1 preferred",
            ),
            (0, ""),
        ]);
        let s = parse_sessions(&l);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "mesh_10_200_0_12");
        assert_eq!(s[0].neighbor, Some(Ipv4Addr::new(10, 200, 0, 12)));
        assert_eq!(s[0].neighbor_as, Some(64512));
        assert_eq!(s[0].description.as_deref(), Some("node1"));
        assert_eq!((s[0].imported, s[0].exported), (1, 2));
        assert_eq!(s[0].bgp_state, "Established");
    }

    #[test]
    fn routes_from_show_route() {
        let l = lines(&[
            (1007, "Table master4:"),
            (
                1007,
                "10.244.12.0/24       unicast [mesh_10_200_0_12 23:13:53.379] * (100) [i]",
            ),
            (1007, "\tvia 10.200.0.12 on eth0"),
            (
                1007,
                "                     unicast [peer_10_200_0_1 23:13:54.000] (100) [AS65000i]",
            ),
            (1007, "\tvia 10.200.0.1 on eth0"),
            (0, ""),
        ]);
        let r = parse_routes(&l);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].prefix.to_string(), "10.244.12.0/24");
        assert_eq!(r[0].via, Some(Ipv4Addr::new(10, 200, 0, 12)));
        assert!(r[0].best && !r[1].best);
        assert_eq!(r[1].from, "peer_10_200_0_1");
        assert_eq!(r[1].prefix, r[0].prefix);
    }
}
