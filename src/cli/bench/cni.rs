//! ferrynet as a CNI plugin, on an IPv4-only and on a dual-stack network, against the reference
//! chain from Debian's containernetworking-plugins (bridge + host-local, then portmap), all
//! exec'ed as libcni does: one process per plugin per call, environment and stdin, prevResult
//! passed along the chain, DEL in reverse.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::{in_netns, progress, run_timed, stats, Row, Scenario, BATCH, DUAL_STACK};
use crate::netns::Netns;

pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Runs one plugin in `host`'s namespace; returns its wall time and stdout.
pub(super) fn exec(
    host: &Netns,
    plugin: &Path,
    env: &[(&str, String)],
    conf: &Value,
) -> Result<(Duration, Vec<u8>)> {
    let mut cmd = Command::new(plugin);
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    run_timed(in_netns(&mut cmd, host), conf.to_string().as_bytes())
}

pub(super) fn env(
    command: &str,
    container: &Netns,
    id: &str,
    path: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", id.to_string()),
        ("CNI_NETNS", container.path().to_string_lossy().into_owned()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_PATH", path.to_string()),
    ]
}

fn port(i: usize) -> Value {
    json!([{"hostPort": 10000 + i, "containerPort": 80, "protocol": "tcp"}])
}

pub struct CniResult {
    pub ferrynet_add: Vec<Duration>,
    pub ferrynet_del: Vec<Duration>,
    /// ferrynet on a dual-stack network (an IPv6 /64 next to the same IPv4 /16).
    pub dual_add: Vec<Duration>,
    pub dual_del: Vec<Duration>,
    /// Empty without the reference comparison.
    pub reference_add: Vec<Duration>,
    pub reference_del: Vec<Duration>,
    /// Empty when netavark is not installed.
    pub netavark_add: Vec<Duration>,
    pub netavark_del: Vec<Duration>,
}

pub const NETAVARK: &str = "/usr/lib/podman/netavark";

/// netavark's input for one container: podman does the IPAM, so the address is static.
fn netavark_conf(i: usize, ports: bool) -> Value {
    let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 87, 0, 2)) + i as u32);
    let mappings = if ports {
        json!([{"host_ip": "", "container_port": 80, "host_port": 10000 + i, "range": 1, "protocol": "tcp"}])
    } else {
        json!([])
    };
    json!({
        "container_id": format!("{:064x}", i + 1),
        "container_name": format!("c{i}"),
        "port_mappings": mappings,
        "networks": {"bench": {"static_ips": [ip.to_string()], "interface_name": "eth0"}},
        "network_info": {"bench": {
            "name": "bench", "id": format!("{:064x}", 0xbe9c4u64), "driver": "bridge",
            "network_interface": "nvbench0",
            "subnets": [{"subnet": "10.87.0.0/16", "gateway": "10.87.0.1"}],
            "ipv6_enabled": false, "internal": false, "dns_enabled": false,
            "ipam_options": {"driver": "host-local"}}}
    })
}

/// `netavark --config DIR setup|teardown NETNS`, config on stdin, in `host`'s namespace.
fn netavark(host: &Netns, dir: &Path, verb: &str, c: &Netns, conf: &Value) -> Result<Duration> {
    let mut cmd = Command::new(NETAVARK);
    cmd.arg("--config").arg(dir).arg(verb).arg(c.path());
    Ok(run_timed(in_netns(&mut cmd, host), conf.to_string().as_bytes())?.0)
}

/// The dual-stack network's subnets: the IPv4-only network's size in IPv4, and an IPv6 /64.
pub const DUAL_STACK_SUBNETS: [&str; 2] = ["10.90.0.0/16", "fd00:90::/64"];

/// Whether a CNI result carries an address of each family.
fn is_dual_stack(out: &[u8]) -> bool {
    let v: Value = serde_json::from_slice(out).unwrap_or(Value::Null);
    let ips = v["ips"].as_array().cloned().unwrap_or_default();
    let has = |v6: bool| {
        ips.iter().any(|ip| {
            ip["address"]
                .as_str()
                .is_some_and(|a| a.contains(':') == v6)
        })
    };
    has(false) && has(true)
}

/// N containers on one bridge each side, ADD then DEL, in alternating batches: ferrynet on an
/// IPv4-only network and on a dual-stack one, then (with `reference`) the reference chain and
/// netavark.
pub fn compare(n: usize, ports: bool, reference: bool) -> Result<CniResult> {
    if reference && !Path::new(REFERENCE_DIR).join("bridge").exists() {
        bail!("the reference plugins are not installed ({REFERENCE_DIR}: apt-get install containernetworking-plugins; --no-reference skips them)");
    }
    let label = if ports {
        "CNI with a published port"
    } else {
        "CNI"
    };
    let tmp = std::env::temp_dir().join(format!("ferrynet-bench-cni-{}", std::process::id()));
    let run_base = if crate::util::is_tmpfs(Path::new("/run")) {
        "/run"
    } else {
        "/dev/shm"
    };
    let run_dir = PathBuf::from(format!(
        "{run_base}/ferrynet-bench-cni-{}",
        std::process::id()
    ));
    let mut sc = Scenario {
        names: Vec::new(),
        state: tmp.clone(),
        run_dir: Some(run_dir.clone()),
    };
    let with_netavark = reference && Path::new(NETAVARK).exists();
    let sides = 2 + usize::from(reference) + usize::from(with_netavark);
    progress(&format!(
        "{label}: creating {sides} hosts and {} container namespaces",
        sides * n
    ));
    let mut make = |tag: String| sc.netns(&tag);
    let host_a = make("ca".into())?;
    let host_d = make("cd".into())?;
    let host_b = make("cb".into())?;
    let host_c = make("cc".into())?;
    let mut containers = |tag: &str, wanted: bool| {
        let n = if wanted { n } else { 0 };
        (0..n)
            .map(|i| make(format!("{tag}{i}")))
            .collect::<Result<Vec<_>>>()
    };
    let cs_a = containers("ca", true)?;
    let cs_d = containers("cd", true)?;
    let cs_b = containers("cb", reference)?;
    let cs_c = containers("cc", with_netavark)?;
    let netavark_dir = tmp.join("netavark");
    std::fs::create_dir_all(&netavark_dir)?;

    // The plugin as users install it: the plugin-only binary built beside this one (the
    // same code without the CLI and the agent), else this binary, which is the plugin too.
    let exe = std::env::current_exe()?;
    let plugin = exe.with_file_name("ferrynet-cni");
    let exe = if plugin.exists() { plugin } else { exe };
    let cni_path = format!(
        "{}:{REFERENCE_DIR}",
        exe.parent().unwrap_or(Path::new("/")).display()
    );
    // Each ferrynet host has its own state, as two machines would.
    let ferrynet_env = |dual: bool, command: &str, c: &Netns, id: &str| {
        let (state, run) = if dual {
            (tmp.join("ferrynet-ds"), run_dir.join("ds"))
        } else {
            (tmp.join("ferrynet"), run_dir.clone())
        };
        let mut e = env(command, c, id, &cni_path);
        e.push(("FERRYNET_STATE_DIR", state.to_string_lossy().into_owned()));
        e.push(("FERRYNET_RUN_DIR", run.to_string_lossy().into_owned()));
        e
    };
    let ferrynet_conf = |dual: bool, i: usize| {
        let mut c = if dual {
            json!({"cniVersion": "1.0.0", "name": "benchds", "type": "ferrynet",
                   "bridge": "fyds0", "subnet": DUAL_STACK_SUBNETS})
        } else {
            json!({"cniVersion": "1.0.0", "name": "benchcni", "type": "ferrynet",
                   "bridge": "fybench0", "subnet": "10.88.0.0/16"})
        };
        if ports {
            c["runtimeConfig"] = json!({"portMappings": port(i)});
        }
        c
    };
    // One batch of ferrynet calls on both of its hosts, IPv4-only and dual-stack interleaved
    // container by container (who goes first alternating), so that any drift within the batch
    // hits both alike: the ratio of the two is the number this comparison is for.
    let ferrynet_batch = |command: &str, batch: usize| -> Result<[Vec<Duration>; 2]> {
        let mut times = [Vec::with_capacity(BATCH), Vec::with_capacity(BATCH)];
        for i in batch * BATCH..((batch + 1) * BATCH).min(n) {
            for dual in [i % 2 == 1, i % 2 == 0] {
                let (host, c, id) = if dual {
                    (&host_d, &cs_d[i], format!("d{i}"))
                } else {
                    (&host_a, &cs_a[i], format!("a{i}"))
                };
                let (d, out) = exec(
                    host,
                    &exe,
                    &ferrynet_env(dual, command, c, &id),
                    &ferrynet_conf(dual, i),
                )?;
                if dual && command == "ADD" && i == 0 && !is_dual_stack(&out) {
                    bail!(
                        "the dual-stack ADD returned no address of one family: {}",
                        String::from_utf8_lossy(&out)
                    );
                }
                times[usize::from(dual)].push(d);
            }
        }
        Ok(times)
    };
    let bridge_conf = json!({"cniVersion": "1.0.0", "name": "benchref", "type": "bridge",
        "bridge": "cnibench0", "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/16"}]],
                 "dataDir": tmp.join("host-local").to_string_lossy()}});
    let portmap_conf = |i: usize, prev: &Value| {
        json!({"cniVersion": "1.0.0", "name": "benchref", "type": "portmap",
               "capabilities": {"portMappings": true},
               "runtimeConfig": {"portMappings": port(i)}, "prevResult": prev})
    };
    let bridge_bin = Path::new(REFERENCE_DIR).join("bridge");
    let portmap_bin = Path::new(REFERENCE_DIR).join("portmap");

    let mut r = CniResult {
        ferrynet_add: Vec::with_capacity(n),
        ferrynet_del: Vec::with_capacity(n),
        dual_add: Vec::with_capacity(n),
        dual_del: Vec::with_capacity(n),
        reference_add: Vec::with_capacity(n),
        reference_del: Vec::with_capacity(n),
        netavark_add: Vec::with_capacity(n),
        netavark_del: Vec::with_capacity(n),
    };
    let mut reference_results = Vec::with_capacity(n);
    for batch in 0..n / BATCH {
        let [v4, dual] = ferrynet_batch("ADD", batch)?;
        r.ferrynet_add.extend(v4);
        r.dual_add.extend(dual);
        for (i, c) in cs_b.iter().enumerate().skip(batch * BATCH).take(BATCH) {
            let id = format!("b{i}");
            let (mut d, out) = exec(
                &host_b,
                &bridge_bin,
                &env("ADD", c, &id, &cni_path),
                &bridge_conf,
            )?;
            let mut result: Value = serde_json::from_slice(&out)?;
            if ports {
                let (d2, out) = exec(
                    &host_b,
                    &portmap_bin,
                    &env("ADD", c, &id, &cni_path),
                    &portmap_conf(i, &result),
                )?;
                d += d2;
                result = serde_json::from_slice(&out)?;
            }
            r.reference_add.push(d);
            reference_results.push(result);
        }
        for (i, c) in cs_c.iter().enumerate().skip(batch * BATCH).take(BATCH) {
            let d = netavark(&host_c, &netavark_dir, "setup", c, &netavark_conf(i, ports))?;
            r.netavark_add.push(d);
        }
        progress(&format!("{label}: ADD {}/{n}", (batch + 1) * BATCH));
    }
    for batch in 0..n / BATCH {
        let [v4, dual] = ferrynet_batch("DEL", batch)?;
        r.ferrynet_del.extend(v4);
        r.dual_del.extend(dual);
        for (i, c) in cs_b.iter().enumerate().skip(batch * BATCH).take(BATCH) {
            let id = format!("b{i}");
            let prev = &reference_results[i];
            let mut d = Duration::ZERO;
            if ports {
                d += exec(
                    &host_b,
                    &portmap_bin,
                    &env("DEL", c, &id, &cni_path),
                    &portmap_conf(i, prev),
                )?
                .0;
            }
            let mut conf = bridge_conf.clone();
            conf["prevResult"] = prev.clone();
            d += exec(&host_b, &bridge_bin, &env("DEL", c, &id, &cni_path), &conf)?.0;
            r.reference_del.push(d);
        }
        for (i, c) in cs_c.iter().enumerate().skip(batch * BATCH).take(BATCH) {
            let d = netavark(
                &host_c,
                &netavark_dir,
                "teardown",
                c,
                &netavark_conf(i, ports),
            )?;
            r.netavark_del.push(d);
        }
        progress(&format!("{label}: DEL {}/{n}", (batch + 1) * BATCH));
    }
    Ok(r)
}

/// The table rows of one comparison.
pub fn rows(r: &CniResult, ports: bool) -> Vec<Row> {
    let (suffix, reference) = if ports {
        (" + 1 port", "bridge + host-local + portmap")
    } else {
        ("", "bridge + host-local")
    };
    let mut rows = Vec::new();
    for (verb, v4, dual, theirs) in [
        ("ADD", &r.ferrynet_add, &r.dual_add, &r.reference_add),
        ("DEL", &r.ferrynet_del, &r.dual_del, &r.reference_del),
    ] {
        rows.push(Row {
            name: format!("CNI {verb}{suffix}: ferrynet"),
            stats: stats(v4),
        });
        rows.push(Row {
            name: format!("CNI {verb}{suffix}: ferrynet {DUAL_STACK}"),
            stats: stats(dual),
        });
        if !theirs.is_empty() {
            rows.push(Row {
                name: format!("CNI {verb}{suffix}: reference {reference}"),
                stats: stats(theirs),
            });
        }
    }
    if !r.netavark_add.is_empty() {
        rows.push(Row {
            name: format!("netavark 1.4 setup{suffix} (no IPAM: static IP)"),
            stats: stats(&r.netavark_add),
        });
        rows.push(Row {
            name: format!("netavark 1.4 teardown{suffix}"),
            stats: stats(&r.netavark_del),
        });
    }
    rows
}
