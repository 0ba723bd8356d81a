//! `ferrynet bench`: per-container attach/detach cost of ferrynet, measured side by side in one
//! run with the floor the kernel allows (one process start + the same netlink messages issued
//! in-process), at N containers on one bridge, without and with one published port each; the
//! same on a dual-stack network; and CNI ADD/DEL on an IPv4-only and a dual-stack network
//! (against the reference plugins unless `--no-reference`). Batches of A and B alternate so
//! that the machine's drift hits both.

mod attach;
mod chart;
mod cluster;
mod cni;
mod kernel_path;
mod policy;
mod policy_cross;
mod throughput;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::bridge::Driver;
use crate::cluster::BackendKind;
use crate::firewall::{Firewall, PortMapping, Protocol};
use crate::netlink::Handle;
use crate::netns::{self, Netns};
use crate::network::{NetworkConfig, StateDir};
use attach::{scenario, v4_only};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Containers on one bridge per scenario.
    #[arg(long, default_value_t = 1000)]
    containers: usize,
    /// A reduced run (100 containers) that checks the harness, for CI.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draw the per-call rows as an SVG chart in this file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Skip the cross-host part (throughput, convergence, agent memory).
    #[arg(long)]
    no_cluster: bool,
    /// Measure nothing: draw --svg from a JSON file an earlier run wrote with --json.
    #[arg(long, requires = "svg")]
    chart_from: Option<PathBuf>,
    /// Skip the comparison with the reference CNI plugins and netavark (the slowest part);
    /// ferrynet's own CNI rows, IPv4-only and dual-stack, still run.
    #[arg(long)]
    no_reference: bool,
    /// Only the cross-host part: throughput, convergence, agent memory.
    #[arg(long)]
    cluster_only: bool,
    /// Only the network policy rows (attach with and without 200 policies, policy and
    /// label changes).
    #[arg(long)]
    policy_only: bool,
}

const BATCH: usize = 50;
/// Runs of `ferrynet trace` per scenario, once every container is attached.
const TRACE_RUNS: usize = 20;

/// The bench networks are /16s (plus a /64) and the published ports 10000 + i.
const MAX_CONTAINERS: usize = 50_000;

/// How the dual-stack rows are named, next to their IPv4-only counterparts.
const DUAL_STACK: &str = "dual-stack";

/// What the dual-stack ADD may cost relative to the IPv4-only one at p50 (the target).
const DUAL_STACK_TARGET: f64 = 1.15;

#[derive(Serialize, Deserialize, Clone)]
struct Stats {
    n: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    first50_p50_ms: f64,
    last50_p50_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn median(s: &[Duration]) -> Duration {
    let mut v = s.to_vec();
    v.sort();
    percentile(&v, 0.5)
}

fn stats(samples: &[Duration]) -> Stats {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let k = BATCH.min(samples.len());
    Stats {
        n: samples.len(),
        p50_ms: ms(percentile(&sorted, 0.5)),
        p90_ms: ms(percentile(&sorted, 0.9)),
        p99_ms: ms(percentile(&sorted, 0.99)),
        max_ms: ms(*sorted.last().unwrap_or(&Duration::ZERO)),
        first50_p50_ms: ms(median(&samples[..k])),
        last50_p50_ms: ms(median(&samples[samples.len() - k..])),
    }
}

#[derive(Serialize, Deserialize)]
struct Row {
    name: String,
    stats: Stats,
}

/// Namespaces and state of one scenario, removed on drop.
struct Scenario {
    names: Vec<String>,
    state: PathBuf,
    run_dir: Option<PathBuf>,
}

impl Scenario {
    /// A new named namespace (`ferrynet-bench-PID-TAG`), deleted with the scenario.
    fn netns(&mut self, tag: &str) -> Result<Netns> {
        let name = ns_name(tag);
        let ns = Netns::open(&netns::create_named(&name)?)?;
        self.names.push(name);
        Ok(ns)
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = netns::delete_named(n);
        }
        let _ = std::fs::remove_dir_all(&self.state);
        if let Some(r) = &self.run_dir {
            let _ = std::fs::remove_dir_all(r);
        }
    }
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

pub fn run(a: BenchArgs) -> Result<()> {
    if let (Some(from), Some(svg)) = (&a.chart_from, &a.svg) {
        let rows: Vec<Row> = serde_json::from_slice(&std::fs::read(from)?)
            .with_context(|| format!("read {}", from.display()))?;
        let n = rows.iter().map(|r| r.stats.n).max().unwrap_or(0);
        let title = format!("ferrynet bench: {n} containers on one bridge");
        std::fs::write(svg, chart::svg(&rows, &title))?;
        return Ok(());
    }
    if a.cluster_only {
        return cluster_table(a.quick);
    }
    let n = if a.quick {
        100
    } else {
        a.containers.max(BATCH)
    };
    let n = n.div_ceil(BATCH) * BATCH;
    if n > MAX_CONTAINERS {
        bail!("--containers {n}: at most {MAX_CONTAINERS} (one /16 per bench network, a published port each from 10000)");
    }
    if a.policy_only {
        let mut rows = policy::rows(n)?;
        rows.extend(policy_cross::rows(n / 2, if a.quick { 3 } else { 20 })?);
        print_table(&rows, n, Duration::ZERO);
        return Ok(());
    }
    let mut rows = Vec::new();

    let exe = std::env::current_exe()?;
    let version = (0..200)
        .map(|_| time_process(Command::new(&exe).arg("--version")))
        .collect::<Result<Vec<_>>>()?;
    rows.push(Row {
        name: "process start (ferrynet --version)".into(),
        stats: stats(&version),
    });

    // The process start floor is measured inside the scenarios, started as ferrynet is.
    let mut spawn = Vec::new();
    for ports in [false, true] {
        let label = if ports { " + 1 published port" } else { "" };
        let r = scenario(n, ports)?;
        if !ports {
            rows.insert(
                0,
                Row {
                    name: "process start (/bin/true)".into(),
                    stats: stats(&r.spawn),
                },
            );
            spawn = r.spawn.clone();
        }
        rows.push(Row {
            name: format!("ferrynet trace container → container{label}"),
            stats: stats(&r.trace),
        });
        for (verb, ours, dual, floor, floor_name) in [
            (
                "attach",
                &r.attach,
                &r.dual_attach,
                &r.floor_attach,
                "same netlink in-process",
            ),
            (
                "detach",
                &r.detach,
                &r.dual_detach,
                &r.floor_detach,
                "veth delete in-process",
            ),
        ] {
            rows.push(Row {
                name: format!("ferrynet {verb}{label}"),
                stats: stats(ours),
            });
            rows.push(Row {
                name: format!("ferrynet {verb}, {DUAL_STACK}{label}"),
                stats: stats(dual),
            });
            rows.push(Row {
                name: format!("floor: {floor_name}{label}"),
                stats: stats(floor),
            });
        }
    }
    rows.extend(firewall_rows(if a.quick { 50 } else { 200 })?);
    rows.extend(policy::rows(if a.quick { BATCH } else { n })?);
    rows.extend(policy_cross::rows(
        if a.quick { BATCH / 2 } else { n / 2 },
        if a.quick { 3 } else { 20 },
    )?);
    // --quick checks the harness: one batch per CNI scenario is enough for that.
    let cni_n = if a.quick { BATCH } else { n };
    for ports in [false, true] {
        rows.extend(cni::rows(
            &cni::compare(cni_n, ports, !a.no_reference)?,
            ports,
        ));
    }
    print_table(&rows, n, median(&spawn));
    if let Some(p) = &a.svg {
        let title = format!("ferrynet bench: {n} containers on one bridge");
        std::fs::write(p, chart::svg(&rows, &title))
            .with_context(|| format!("write {}", p.display()))?;
    }
    if !a.no_cluster {
        cluster_table(a.quick)?;
    }
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
}

fn print_table(rows: &[Row], n: usize, spawn: Duration) {
    println!("\n### ferrynet bench: {n} containers on one bridge (times in ms)\n");
    println!("| measure | n | p50 | p90 | p99 | max | first 50 p50 | last 50 p50 | last/first |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let s = &r.stats;
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.name,
            s.n,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.max_ms,
            s.first50_p50_ms,
            s.last50_p50_ms,
            s.last50_p50_ms / s.first50_p50_ms.max(1e-9)
        );
    }
    let find = |name: &str| rows.iter().find(|r| r.name == name).map(|r| r.stats.p50_ms);
    println!();
    for (suffix, verb, name) in [
        ("", "setup", "ADD"),
        (" + 1 port", "setup", "ADD"),
        ("", "teardown", "DEL"),
        (" + 1 port", "teardown", "DEL"),
    ] {
        let theirs = rows
            .iter()
            .find(|r| {
                r.name.starts_with(&format!("netavark 1.4 {verb}{suffix}"))
                    && (suffix.is_empty() != r.name.contains("port"))
            })
            .map(|r| r.stats.p50_ms);
        if let (Some(n), Some(f)) = (theirs, find(&format!("CNI {name}{suffix}: ferrynet"))) {
            println!(
                "- netavark {verb}{suffix}: {n:.2} ms vs ferrynet CNI {name} {f:.2} ms: **{:.1}x**",
                n / f
            );
        }
    }
    for (suffix, reference) in [
        ("", "bridge + host-local"),
        (" + 1 port", "bridge + host-local + portmap"),
    ] {
        for verb in ["ADD", "DEL"] {
            if let (Some(f), Some(r)) = (
                find(&format!("CNI {verb}{suffix}: ferrynet")),
                find(&format!("CNI {verb}{suffix}: reference {reference}")),
            ) {
                println!(
                    "- CNI {verb}{suffix}: ferrynet {f:.2} ms vs {reference} {r:.2} ms: **{:.1}x faster**",
                    r / f
                );
            }
        }
    }
    let growth = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .map(|r| r.stats.last50_p50_ms / r.stats.first50_p50_ms.max(1e-9))
    };
    for (v4, target) in [
        ("CNI ADD: ferrynet", true),
        ("CNI ADD + 1 port: ferrynet", true),
        ("CNI DEL: ferrynet", false),
        ("CNI DEL + 1 port: ferrynet", false),
        ("ferrynet attach", true),
        ("ferrynet attach + 1 published port", true),
        ("ferrynet detach", false),
        ("ferrynet detach + 1 published port", false),
    ] {
        let dual = dual_stack_name(v4);
        if let (Some(f4), Some(f6), Some(g4), Some(g6)) =
            (find(v4), find(&dual), growth(v4), growth(&dual))
        {
            let ratio = f6 / f4.max(1e-9);
            let verdict = match target {
                true if ratio <= DUAL_STACK_TARGET => {
                    format!(" (target <= {DUAL_STACK_TARGET}x: met)")
                }
                true => format!(" (target <= {DUAL_STACK_TARGET}x: **missed**)"),
                false => String::new(),
            };
            println!(
                "- {DUAL_STACK}/IPv4 {}: {f6:.2} ms vs {f4:.2} ms at p50: **{ratio:.2}x**{verdict}; last/first 50: {g6:.2} vs {g4:.2}",
                v4.replace(": ferrynet", "").replace("ferrynet ", "")
            );
        }
    }
    for label in ["", " + 1 published port"] {
        if let (Some(f), Some(fl), Some(d), Some(fd)) = (
            find(&format!("ferrynet attach{label}")),
            find(&format!("floor: same netlink in-process{label}")),
            find(&format!("ferrynet detach{label}")),
            find(&format!("floor: veth delete in-process{label}")),
        ) {
            let floor = fl + ms(spawn);
            println!(
                "- attach{label}: ferrynet {f:.2} ms vs floor (process start {:.2} + netlink {fl:.2}) {floor:.2} ms: **{:.2}x** the floor",
                ms(spawn),
                f / floor
            );
            println!(
                "- detach{label}: ferrynet {d:.2} ms vs floor (process start + veth delete) {:.2} ms: **{:.2}x**",
                fd + ms(spawn),
                d / (fd + ms(spawn))
            );
            // The plugin as a runtime calls it, against the same floor (its container
            // count and bridge are the same size; the CNI rows run after the attach ones).
            let cni = if label.is_empty() { "" } else { " + 1 port" };
            if let (Some(add), Some(del)) = (
                find(&format!("CNI ADD{cni}: ferrynet")),
                find(&format!("CNI DEL{cni}: ferrynet")),
            ) {
                println!(
                    "- CNI ADD{cni}: ferrynet {add:.2} ms vs the same floor {floor:.2} ms: **{:.2}x**; CNI DEL{cni} {del:.2} ms: **{:.2}x** the veth-delete floor",
                    add / floor,
                    del / (fd + ms(spawn))
                );
            }
        }
    }
}

/// The dual-stack row next to an IPv4-only one: `CNI ADD: ferrynet dual-stack`,
/// `ferrynet attach, dual-stack + 1 published port`.
fn dual_stack_name(v4: &str) -> String {
    match v4.strip_prefix("ferrynet ") {
        Some(rest) => {
            let (verb, label) = rest.split_once(' ').unwrap_or((rest, ""));
            let label = if label.is_empty() {
                String::new()
            } else {
                format!(" {label}")
            };
            format!("ferrynet {verb}, {DUAL_STACK}{label}")
        }
        None => format!("{v4} {DUAL_STACK}"),
    }
}

fn time_process(cmd: &mut Command) -> Result<Duration> {
    Ok(time_output(cmd)?.0)
}

/// [`time_process`], also returning what the command printed.
fn time_output(cmd: &mut Command) -> Result<(Duration, Vec<u8>)> {
    let t = Instant::now();
    let out = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output()?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((d, out.stdout))
}

/// Makes `cmd` start inside `ns` (setns between fork and exec: `ip netns exec` without the new
/// mount namespace).
fn in_netns<'c>(cmd: &'c mut Command, ns: &Netns) -> &'c mut Command {
    let fd = ns.fd().as_raw_fd();
    // SAFETY: setns is async-signal-safe; the fd outlives the child's start (the caller holds
    // the Netns while it spawns).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Runs `cmd` with `stdin`, timed from spawn to exit; returns its stdout, or fails with its
/// output.
fn run_timed(cmd: &mut Command, stdin: &[u8]) -> Result<(Duration, Vec<u8>)> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("run {cmd:?}"))?;
    child.stdin.take().expect("piped").write_all(stdin)?;
    let out = child.wait_with_output()?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {} {}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((d, out.stdout))
}

fn ns_name(tag: &str) -> String {
    format!("ferrynet-bench-{}-{tag}", std::process::id())
}

/// One published port added and removed: by spawning `nft` (what a plugin that shells out
/// pays) against one raw nf_tables batch from inside the process (what ferrynet does).
fn firewall_rows(runs: usize) -> Result<Vec<Row>> {
    progress(&format!(
        "firewall: {runs} port elements via nft processes and via netlink"
    ));
    let name = ns_name("fw");
    let path = netns::create_named(&name)?;
    let _cleanup = Scenario {
        names: vec![name],
        state: std::env::temp_dir().join(format!("ferrynet-bench-fw-{}", std::process::id())),
        run_dir: None,
    };
    let host = Netns::open(&path)?;
    let net = NetworkConfig::new("fw", &["10.91.0.0/16".parse()?], None, &[], 1500)?;
    host.run(|| -> Result<()> {
        Driver::new(StateDir::new(std::env::temp_dir().join("unused")))
            .ensure_network(&mut Handle::new()?, &net)?;
        Ok(())
    })??;
    let nft = |script: String| -> Result<Duration> {
        let mut cmd = Command::new("nft");
        cmd.arg(script);
        time_process(in_netns(&mut cmd, &host))
    };
    let (mut spawn_add, mut spawn_del, mut nl_add, mut nl_del) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let port = 20000 + i as u16;
        let ip = std::net::Ipv4Addr::new(10, 91, (i / 250) as u8, (i % 250 + 2) as u8);
        spawn_add.push(nft(format!(
            "add element inet ferrynet ports {{ tcp . {port} : {ip} . 80 }}"
        ))?);
        spawn_del.push(nft(format!(
            "delete element inet ferrynet ports {{ tcp . {port} }}"
        ))?);
        let p = PortMapping {
            host_port: port,
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: None,
        };
        let (a, d) = host.run(|| -> Result<(Duration, Duration)> {
            let mut fw = Firewall::open()?;
            let t = Instant::now();
            fw.add_ports(v4_only(ip), &[p])?;
            let a = t.elapsed();
            let t = Instant::now();
            fw.remove_ports(v4_only(ip), &[p])?;
            Ok((a, t.elapsed()))
        })??;
        nl_add.push(a);
        nl_del.push(d);
    }
    Ok(vec![
        Row {
            name: "port element add: spawn `nft`".into(),
            stats: stats(&spawn_add),
        },
        Row {
            name: "port element add: nf_tables netlink (ferrynet)".into(),
            stats: stats(&nl_add),
        },
        Row {
            name: "port element delete: spawn `nft`".into(),
            stats: stats(&spawn_del),
        },
        Row {
            name: "port element delete: nf_tables netlink (ferrynet)".into(),
            stats: stats(&nl_del),
        },
    ])
}

fn cluster_table(quick: bool) -> Result<()> {
    let rounds = if quick { 1 } else { 5 };
    let (tp, rtts) = throughput::throughput(rounds)?;
    let joins = if quick { 2 } else { 5 };
    let conv = cluster::convergence(20, joins, BackendKind::Vxlan)?;
    let conv_bgp = cluster::convergence(20, joins, BackendKind::Bgp)?;
    let (rest, loaded) = cluster::agent_rss()?;
    println!(
        "\n### data plane (iperf3, median of {rounds} alternating 2 s runs of each path, Gbit/s)\n"
    );
    println!("| path | streams | Gbit/s | reference | Gbit/s | ratio |");
    println!("|---|---:|---:|---|---:|---:|");
    for r in &tp {
        println!(
            "| {} | {} | {:.2} | {} | {:.2} | {:.0}% |",
            r.path,
            r.streams,
            r.gbps,
            r.reference,
            r.reference_gbps,
            100.0 * r.gbps / r.reference_gbps.max(1e-9)
        );
    }
    println!("\n### latency (ping, 50 x 10 ms, average round trip; reference in the same run)\n");
    println!("| path | RTT us | reference | RTT us | ratio |");
    println!("|---|---:|---|---:|---:|");
    for r in &rtts {
        println!(
            "| {} | {:.0} | {} | {:.0} | {:.2}x |",
            r.path,
            r.us,
            r.reference,
            r.reference_us,
            r.us / r.reference_us.max(1e-9)
        );
    }
    let size = std::fs::metadata(std::env::current_exe()?)?.len();
    let s = stats(&conv);
    println!("\n### control plane\n");
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| convergence: new lease to route on each of 20 agents (file store), p50 | {:.1} ms |",
        s.p50_ms
    );
    println!("| convergence p99 ({} samples) | {:.1} ms |", s.n, s.p99_ms);
    let s = stats(&conv_bgp);
    println!(
        "| convergence, bgp (BIRD full mesh): new lease to BGP route on each of 20 hosts, p50 | {:.1} ms |",
        s.p50_ms
    );
    println!(
        "| convergence, bgp, p99 ({} samples) | {:.1} ms |",
        s.n, s.p99_ms
    );
    println!(
        "| ferrynet binary (CLI, CNI plugin and agent in one) | {:.1} MiB |",
        size as f64 / 1048576.0
    );
    println!("| agent RSS at rest | {:.1} MiB |", rest as f64 / 1024.0);
    println!(
        "| agent RSS with 1,000 peer leases programmed | {:.1} MiB |",
        loaded as f64 / 1024.0
    );
    Ok(())
}
