//! The text form of a trace: one numbered line per hop, the verdict, then what disagrees.

use std::fmt::Write;

use super::{Trace, Verdict};

pub fn render(t: &Trace) -> String {
    let mut s = String::new();
    let port = t.port.map(|p| format!(":{p}")).unwrap_or_default();
    let src = t.src.map(|a| a.to_string()).unwrap_or_else(|| "?".into());
    let _ = writeln!(
        s,
        "trace {} → {} (IPv{}, {}{port}: {src} → {})",
        t.from, t.to, t.family, t.proto, t.dst
    );
    let at_width = t
        .hops
        .iter()
        .map(|h| h.at.chars().count())
        .max()
        .unwrap_or(4);
    let kind_width = t
        .hops
        .iter()
        .map(|h| h.kind.to_string().len())
        .max()
        .unwrap_or(5);
    for (i, h) in t.hops.iter().enumerate() {
        let _ = write!(
            s,
            "{:>3}  {:<at_width$}  {:<kind_width$}  {}",
            i + 1,
            h.at,
            h.kind.to_string(),
            h.object
        );
        if let Some(n) = &h.note {
            let _ = write!(s, "  [{n}]");
        }
        s.push('\n');
    }
    match &t.verdict {
        Verdict::Delivered { to } => {
            let _ = writeln!(s, "verdict: delivered to {to}");
        }
        Verdict::Dropped { hop, reason } => {
            let _ = writeln!(s, "verdict: dropped at hop {}: {reason}", hop + 1);
        }
    }
    for i in &t.inconsistencies {
        let _ = writeln!(s, "inconsistent: {i}");
    }
    if let Some(p) = &t.probe {
        let _ = writeln!(s, "probe: {} → {}", p.sent, p.answer);
        for e in &p.events {
            let what = match (&e.rule, e.kind.as_str()) {
                (Some(r), _) => format!("rule `{r}`"),
                (None, "policy") => "policy".to_string(),
                (None, k) => k.to_string(),
            };
            let _ = writeln!(
                s,
                "  {}  {} {} {}: {what} → {}",
                e.host, e.family, e.table, e.chain, e.verdict
            );
        }
        if !p.agrees {
            let _ = writeln!(
                s,
                "probe and trace disagree: the trace says {}, the packet {}",
                match t.verdict {
                    Verdict::Delivered { .. } => "delivered",
                    Verdict::Dropped { .. } => "dropped",
                },
                if p.arrived {
                    "arrived"
                } else {
                    "did not arrive"
                }
            );
        }
    }
    s
}
