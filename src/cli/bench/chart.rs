//! A dependency-free SVG chart of the bench: one horizontal bar per row (p50, log scale, with
//! p99 as a whisker), so that a 3 ms and a 270 ms row both stay readable. Colours tell the
//! series apart (ferrynet IPv4-only, ferrynet dual-stack, references, floors), with a legend.

use std::fmt::Write;

use super::{Row, DUAL_STACK};

const WIDTH: f64 = 900.0;
const LABEL: f64 = 380.0;
const BAR_H: f64 = 18.0;
const GAP: f64 = 6.0;

fn x_of(ms: f64, max_log: f64) -> f64 {
    // log10 from 0.01 ms to 10^max_log ms onto the plot width.
    let l = (ms.max(0.01)).log10();
    LABEL + (l + 2.0) / (max_log + 2.0) * (WIDTH - LABEL - 60.0)
}

const FERRYNET: &str = "#2b7bb9";
const DUAL: &str = "#7b52ab";
const REFERENCE: &str = "#d9822b";
const FLOOR: &str = "#9aa5b1";

/// The colour of a row's series.
fn color(name: &str) -> &'static str {
    if name.contains("floor") || name.contains("process start") {
        FLOOR
    } else if name.contains("reference") || name.contains("spawn `nft`") {
        REFERENCE
    } else if name.contains(DUAL_STACK) {
        DUAL
    } else {
        FERRYNET
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn svg(rows: &[Row], title: &str) -> String {
    let max = rows.iter().map(|r| r.stats.p99_ms).fold(1.0, f64::max);
    let max_log = max.log10().ceil();
    let height = 60.0 + rows.len() as f64 * (BAR_H + GAP) + 30.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"##,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="40" fill="#555">p50 per call (bar) and p99 (whisker), milliseconds, log scale</text>"##
    );
    // The legend, right of the subtitle: only the series the rows have.
    let mut x = 470.0;
    for (c, label) in [
        (FERRYNET, "ferrynet"),
        (DUAL, "ferrynet dual-stack"),
        (REFERENCE, "reference"),
        (FLOOR, "floor"),
    ] {
        if !rows.iter().any(|r| color(&r.name) == c) {
            continue;
        }
        let _ = writeln!(
            s,
            r##"<rect x="{x:.1}" y="30" width="12" height="12" fill="{c}"/><text x="{:.1}" y="40" fill="#555">{label}</text>"##,
            x + 16.0
        );
        x += 16.0 + 7.0 * label.len() as f64 + 14.0;
    }
    // Grid lines at each power of ten.
    let top = 50.0;
    let bottom = height - 30.0;
    let mut decade = -2i32;
    while decade as f64 <= max_log {
        let ms = 10f64.powi(decade);
        let x = x_of(ms, max_log);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/>"##
        );
        let label = if ms < 1.0 {
            format!("{ms}")
        } else {
            format!("{}", ms as u64)
        };
        let _ = writeln!(
            s,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#555">{label}</text>"##,
            bottom + 16.0
        );
        decade += 1;
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + 6.0 + i as f64 * (BAR_H + GAP);
        let color = color(&r.name);
        let x0 = x_of(0.01, max_log);
        let x50 = x_of(r.stats.p50_ms, max_log);
        let x99 = x_of(r.stats.p99_ms, max_log);
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LABEL - 8.0,
            y + 13.0,
            escape(&r.name)
        );
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{BAR_H}" fill="{color}"/>"##,
            (x50 - x0).max(1.0)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{x50:.1}" y1="{:.1}" x2="{x99:.1}" y2="{:.1}" stroke="black"/>"##,
            y + BAR_H / 2.0,
            y + BAR_H / 2.0
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="#222">{:.2}</text>"##,
            x99 + 4.0,
            y + 13.0,
            r.stats.p50_ms
        );
    }
    s.push_str("</svg>\n");
    s
}
