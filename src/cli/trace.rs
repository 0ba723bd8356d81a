//! `ferrynet trace` and `ferrynet topology`: read-only views of the kernel's state.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::network::StateDir;
use crate::trace::{Spec, TraceRequest};

#[derive(clap::Args)]
pub struct TraceArgs {
    /// Where the packet starts: a container id, a namespace name under /run/netns, an
    /// address (a container's, or one outside), or `host`.
    from: Spec,
    /// Where it goes: the same, with an optional :PORT[/tcp|udp] (`host:8080` is a published
    /// port of this host).
    to: Spec,
    /// A machine-readable hop list (one object per address family traced).
    #[arg(long)]
    json: bool,
    /// Only IPv4 (4) or IPv6 (6); every family both ends have by default.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["4", "6"]))]
    family: Option<String>,
    /// A packet size in bytes to check against every MTU on the way.
    #[arg(long)]
    size: Option<u32>,
    /// A peer host's namespace (a name under /run/netns or a path), to follow the packet
    /// there; repeatable.
    #[arg(long = "host")]
    hosts: Vec<PathBuf>,
    /// The lease store (file:PATH or etcd://HOST:PORT), to name the host a subnet belongs to.
    #[arg(long)]
    store: Option<String>,
    /// Also send one real packet (TCP SYN, UDP datagram or ICMP echo) with nftables tracing
    /// on for that flow alone, and report every chain and rule it met and whether it arrived.
    #[arg(long)]
    probe: bool,
}

pub fn run(a: TraceArgs, state: &StateDir) -> Result<std::process::ExitCode> {
    let req = TraceRequest {
        from: a.from,
        to: a.to,
        family: a.family.map(|f| if f == "6" { 6 } else { 4 }),
        size: a.size,
        hosts: a.hosts,
        store: a.store,
        probe: a.probe,
    };
    let traces = crate::trace::trace(&req, state)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&traces)?);
    } else {
        for (i, t) in traces.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{}", crate::trace::render(t));
        }
    }
    let delivered = traces
        .iter()
        .all(|t| matches!(t.verdict, crate::trace::Verdict::Delivered { .. }));
    // Like ping: a dropped packet is a failure the shell can test.
    Ok(if delivered {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

#[derive(clap::Args)]
pub struct TopologyArgs {
    /// The picture as JSON.
    #[arg(long)]
    json: bool,
    /// Also write the picture as SVG to this file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Another host namespace to show (a name under /run/netns or a path); repeatable.
    #[arg(long = "host")]
    hosts: Vec<PathBuf>,
}

pub fn topology(a: TopologyArgs, state: &StateDir) -> Result<()> {
    let t = crate::topology::gather(&a.hosts, state)?;
    if let Some(path) = &a.svg {
        std::fs::write(path, crate::topology::svg(&t))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t)?);
    } else {
        print!("{}", crate::topology::render(&t));
    }
    Ok(())
}
