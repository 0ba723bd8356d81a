//! The topology as a picture: one column per host, each bridge a bar with its containers
//! hanging below it, the VXLAN devices at the bottom joined across hosts to the peers their
//! FDB names. Plain SVG written by hand (a few shapes and text; no library is needed).

use std::collections::HashMap;
use std::fmt::Write;

use super::Topology;

const BOX_W: u32 = 170;
const BOX_H: u32 = 58;
const GAP: u32 = 14;
const PER_ROW: u32 = 4;
const LINE: u32 = 16;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn text(out: &mut String, x: u32, y: u32, class: &str, s: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x}" y="{y}" class="{class}">{}</text>"#,
        esc(s)
    );
}

pub fn svg(t: &Topology) -> String {
    let columns: Vec<u32> = t
        .hosts
        .iter()
        .map(|h| {
            let widest = h
                .bridges
                .iter()
                .map(|b| (b.ports.len() as u32).clamp(1, PER_ROW))
                .max()
                .unwrap_or(1);
            (widest * (BOX_W + GAP) + GAP).max(2 * BOX_W)
        })
        .collect();
    let mut body = String::new();
    let mut vxlan_at: HashMap<String, (u32, u32)> = HashMap::new();
    let mut links: Vec<(String, String)> = Vec::new();
    let mut x0 = GAP;
    let mut height = 0;
    for (h, &w) in t.hosts.iter().zip(&columns) {
        let mut y = 30;
        let mut inner = String::new();
        text(&mut inner, x0 + 10, y, "host", &h.name);
        y += LINE;
        for a in &h.addresses {
            text(&mut inner, x0 + 10, y, "small", a);
            y += LINE - 2;
        }
        y += 10;
        for b in &h.bridges {
            let _ = writeln!(
                inner,
                r#"<rect x="{}" y="{y}" width="{}" height="34" rx="6" class="bridge"/>"#,
                x0 + GAP,
                w - 2 * GAP
            );
            let label = match &b.network {
                Some(n) => format!("{} [{n}]", b.name),
                None => b.name.clone(),
            };
            text(&mut inner, x0 + GAP + 8, y + 15, "label", &label);
            text(
                &mut inner,
                x0 + GAP + 8,
                y + 29,
                "small",
                &b.addresses.join("  "),
            );
            let bar_bottom = y + 34;
            y = bar_bottom + 24;
            for (i, p) in b.ports.iter().enumerate() {
                let (col, row) = (i as u32 % PER_ROW, i as u32 / PER_ROW);
                let bx = x0 + GAP + col * (BOX_W + GAP);
                let by = y + row * (BOX_H + GAP);
                let _ = writeln!(
                    inner,
                    r#"<line x1="{}" y1="{bar_bottom}" x2="{}" y2="{by}" class="wire"/>"#,
                    bx + BOX_W / 2,
                    bx + BOX_W / 2
                );
                let _ = writeln!(
                    inner,
                    r#"<rect x="{bx}" y="{by}" width="{BOX_W}" height="{BOX_H}" rx="4" class="container"/>"#
                );
                let name = p.container.as_deref().unwrap_or("?");
                text(&mut inner, bx + 6, by + 15, "label", name);
                text(
                    &mut inner,
                    bx + 6,
                    by + 30,
                    "small",
                    &format!("{} ↔ {}", p.ifname.as_deref().unwrap_or("?"), p.veth),
                );
                text(&mut inner, bx + 6, by + 45, "small", &p.addresses.join(" "));
            }
            let rows = (b.ports.len() as u32).div_ceil(PER_ROW);
            y += rows * (BOX_H + GAP) + 10;
        }
        for v in &h.vxlan {
            let _ = writeln!(
                inner,
                r#"<rect x="{}" y="{y}" width="{BOX_W}" height="34" rx="6" class="vxlan"/>"#,
                x0 + GAP
            );
            text(
                &mut inner,
                x0 + GAP + 8,
                y + 15,
                "label",
                &format!("vxlan {}", v.name),
            );
            text(
                &mut inner,
                x0 + GAP + 8,
                y + 29,
                "small",
                &format!("{} peers", v.peers.len()),
            );
            vxlan_at.insert(h.name.clone(), (x0 + GAP + BOX_W / 2, y + 34));
            for p in &v.peers {
                if let Some(other) = &p.host {
                    links.push((h.name.clone(), other.clone()));
                }
            }
            y += 44;
        }
        for r in &h.routes {
            let via = r
                .via
                .as_deref()
                .map(|v| format!(" via {v}"))
                .unwrap_or_default();
            text(
                &mut inner,
                x0 + 10,
                y + 12,
                "small",
                &format!("{}{via} dev {} ({})", r.dst, r.dev, r.backend),
            );
            y += LINE;
        }
        for p in &h.published {
            text(
                &mut inner,
                x0 + 10,
                y + 12,
                "small",
                &format!(
                    "published {}/{} → {}",
                    p.host_port,
                    p.protocol,
                    super::socket(p.target, p.target_port)
                ),
            );
            y += LINE;
        }
        y += 20;
        let _ = writeln!(
            body,
            r#"<rect x="{x0}" y="8" width="{w}" height="{}" rx="10" class="hostbox"/>"#,
            y - 8
        );
        body.push_str(&inner);
        height = height.max(y + 60);
        x0 += w + GAP;
    }
    for (a, b) in links {
        if a < b {
            if let (Some(&(x1, y1)), Some(&(x2, y2))) = (vxlan_at.get(&a), vxlan_at.get(&b)) {
                let low = y1.max(y2) + 30;
                let _ = writeln!(
                    body,
                    r#"<path d="M{x1},{y1} C{x1},{low} {x2},{low} {x2},{y2}" class="tunnel"/>"#
                );
            }
        }
    }
    let width = x0;
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">
<style>
.hostbox {{ fill: #f6f8fa; stroke: #57606a; stroke-width: 1.5; }}
.bridge {{ fill: #ddf4ff; stroke: #0969da; }}
.container {{ fill: #ffffff; stroke: #1a7f37; }}
.vxlan {{ fill: #fff8c5; stroke: #9a6700; }}
.wire {{ stroke: #0969da; }}
.tunnel {{ fill: none; stroke: #9a6700; stroke-width: 2; stroke-dasharray: 6 4; }}
text {{ font-family: monospace; }}
.host {{ font-size: 15px; font-weight: bold; }}
.label {{ font-size: 12px; font-weight: bold; }}
.small {{ font-size: 10px; }}
</style>
{body}</svg>
"#
    )
}
