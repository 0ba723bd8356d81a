//! Network policy's cost: CNI ADD on a host enforcing 200 NetworkPolicies against one
//! without any (containers interleaved, same run; each pod's namespace from `CNI_ARGS`, its
//! labels from `args.cni.labels`, as a runtime gives them); with every container added,
//! single-stream throughput between two pods a policy allows, against the same pair on the
//! host without policy (alternating runs); then `policy apply` of one changed policy and
//! `endpoint label` of one container, each timed until the command returns — which is when
//! the change is in the kernel (the command applies it before it exits).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::throughput::{iperf_on, IPERF_PORT};
use super::{cni, in_netns, progress, stats, time_output, Row, Scenario, BATCH};
use crate::network::StateDir;

/// Policies on the enforcing host: `POLICIES` NetworkPolicies over `NAMESPACES`
/// namespaces, each selecting one of `APPS` apps and allowing one client role on a port.
pub(super) const POLICIES: usize = 200;
const NAMESPACES: usize = 10;
const APPS: usize = 50;
/// Policy and label changes timed once every container is attached.
const CHANGES: usize = 20;
/// Alternating iperf3 runs per host.
const THROUGHPUT_RUNS: usize = 3;

pub(super) fn policies() -> String {
    let mut s = String::new();
    for i in 0..POLICIES {
        let _ = write!(
            s,
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{i}, namespace: ns{}}}\nspec:\n  podSelector: {{matchLabels: {{app: app{}}}}}\n  ingress:\n  - from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{role: client{}}}}}}}]\n    ports: [{{port: {}}}]\n",
            i % NAMESPACES,
            i % APPS,
            (i + 1) % APPS,
            // p0 lets container 1 (role client1) reach container 0 (app0) on iperf3's port.
            if i == 0 { IPERF_PORT } else { 8000 + i as u16 }
        );
    }
    s
}

/// One policy of the set, changed (another port) or back.
fn changed_policy(round: usize) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p0, namespace: ns0}}\nspec:\n  podSelector: {{matchLabels: {{app: app0}}}}\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{role: client1}}}}}}]\n    ports: [{{port: {}}}]\n",
        9000 + round % 2
    )
}

pub(super) fn rows(n: usize) -> Result<Vec<Row>> {
    let base = std::env::temp_dir().join(format!("ferrynet-bench-policy-{}", std::process::id()));
    let mut sc = Scenario {
        names: Vec::new(),
        state: base.clone(),
        run_dir: None,
    };
    progress(&format!(
        "policy: 2 hosts, {POLICIES} policies on one, {} containers",
        2 * n
    ));
    let with = sc.netns("pol-p")?;
    let without = sc.netns("pol-n")?;
    let containers = (0..2 * n)
        .map(|i| sc.netns(&format!("pol{i}")))
        .collect::<Result<Vec<_>>>()?;
    let states = [
        StateDir::new(base.join("with")),
        StateDir::new(base.join("without")),
    ];
    // The network is the CNI configuration's (made by the first ADD on each host).
    std::fs::create_dir_all(&base)?;
    let exe = std::env::current_exe()?;
    let ferrynet = |policy: bool, args: &[&str]| -> Result<(Duration, Vec<u8>)> {
        let (host, st) = if policy {
            (&with, &states[0])
        } else {
            (&without, &states[1])
        };
        let mut cmd = Command::new(&exe);
        cmd.args(args)
            .env("FERRYNET_STATE_DIR", st.root())
            .env("FERRYNET_RUN_DIR", st.run_dir());
        time_output(in_netns(&mut cmd, host))
    };
    let file = |name: &str, text: &str| -> Result<PathBuf> {
        let p = base.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    };
    let all = file("policies.yaml", &policies())?;
    ferrynet(true, &["policy", "apply", "-f", &all.to_string_lossy()])?;

    // The plugin as users install it (see cni.rs), in each host's own state.
    let plugin = exe.with_file_name("ferrynet-cni");
    let plugin = if plugin.exists() { plugin } else { exe.clone() };
    let cni_path = plugin
        .parent()
        .unwrap_or(std::path::Path::new("/"))
        .display()
        .to_string();
    let cni = |policy: bool, command: &str, i: usize, c: &crate::netns::Netns| {
        let (host, st) = if policy {
            (&with, &states[0])
        } else {
            (&without, &states[1])
        };
        let mut env = cni::env(command, c, &format!("pol{i}"), &cni_path);
        env.push((
            "CNI_ARGS",
            format!("K8S_POD_NAMESPACE=ns{};K8S_POD_NAME=pod{i}", i % NAMESPACES),
        ));
        env.push((
            "FERRYNET_STATE_DIR",
            st.root().to_string_lossy().into_owned(),
        ));
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "ferrynet",
            "bridge": "fypol0", "subnet": "10.91.0.0/16",
            "args": {"cni": {"labels": [
                {"key": "app", "value": format!("app{}", i % APPS)},
                {"key": "role", "value": format!("client{}", i % APPS)},
            ]}},
        });
        cni::exec(host, &plugin, &env, &conf)
    };
    let mut attach = [Vec::with_capacity(n), Vec::with_capacity(n)];
    // The first two containers of each host: the iperf3 pair.
    let mut pair_ips: [Vec<std::net::IpAddr>; 2] = [Vec::new(), Vec::new()];
    for i in 0..n {
        // Who goes first alternates, so that drift hits both alike.
        for policy in [i % 2 == 0, i % 2 == 1] {
            let c = &containers[2 * i + usize::from(policy)];
            let (d, out) = cni(policy, "ADD", i, c)?;
            attach[usize::from(!policy)].push(d);
            if i < 2 {
                let result: serde_json::Value = serde_json::from_slice(&out)?;
                let ip: ipnet::IpNet = result["ips"][0]["address"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("CNI ADD gave no address: {result}"))?
                    .parse()?;
                pair_ips[usize::from(!policy)].push(ip.addr());
            }
        }
        if (i + 1) % BATCH == 0 {
            progress(&format!("policy: attached {}/{n} on each host", i + 1));
        }
    }
    // Throughput container 1 → container 0 of each host, alternating.
    progress("policy: throughput between two allowed pods, with and without policy");
    let mut gbits = [Vec::new(), Vec::new()];
    for _ in 0..THROUGHPUT_RUNS {
        for (k, offset) in [(0usize, 1usize), (1, 0)] {
            let (server, client) = (&containers[offset], &containers[2 + offset]);
            gbits[k].push(iperf_on(server, client, pair_ips[k][0], 1, IPERF_PORT)?);
        }
    }
    let mut apply = Vec::with_capacity(CHANGES);
    let mut label = Vec::with_capacity(CHANGES);
    // The first container on the enforcing host (its CNI container id).
    let one = "pol0".to_string();
    for round in 0..CHANGES {
        let p = file("changed.yaml", &changed_policy(round))?;
        apply.push(ferrynet(true, &["policy", "apply", "-f", &p.to_string_lossy()])?.0);
        let app = format!("app=app{}", (round + 1) % APPS);
        label.push(ferrynet(true, &["endpoint", "label", &one, &app])?.0);
    }
    for (k, c) in containers.iter().enumerate() {
        cni(k % 2 == 1, "DEL", k / 2, c)?;
    }
    drop(sc);
    let [with_policy, without_policy] = attach;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (with_gbit, without_gbit) = (median(&mut gbits[0]), median(&mut gbits[1]));
    println!(
        "- single stream between two allowed pods: {with_gbit:.1} Gbit/s with {POLICIES} policies, {without_gbit:.1} without (same run, medians of {THROUGHPUT_RUNS}): **{:.0} %**",
        100.0 * with_gbit / without_gbit
    );
    Ok(vec![
        Row {
            name: format!("CNI ADD, {POLICIES} policies in force"),
            stats: stats(&with_policy),
        },
        Row {
            name: "CNI ADD, no policy (same run)".into(),
            stats: stats(&without_policy),
        },
        Row {
            name: format!("policy apply (1 changed of {POLICIES}, {n} endpoints)"),
            stats: stats(&apply),
        },
        Row {
            name: format!("endpoint label (1 endpoint of {n}, {POLICIES} policies)"),
            stats: stats(&label),
        },
    ])
}
