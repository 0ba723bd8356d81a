//! Network policy across hosts: two hosts joined by agents (host-gw, one file store) that
//! enforce 200 NetworkPolicies over `per_host` endpoints each. A server pod on host 1 is
//! selected by a policy that admits one client role on one port; from a pod on host 0 we
//! time, until a connection shows the change (probing every few ms, a denied attempt
//! costing 20 ms):
//! - a label change (`ferrynet endpoint label` on host 0) that admits the client, and the
//!   one that takes it back;
//! - a policy change (`ferrynet policy apply` on host 0: the allowed port moves);
//! - a new pod on host 0 with the admitted role (attached, then published by host 0's agent).
//!
//! Every time includes the command that makes the change.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::cluster::Lab;
use super::policy::{policies, POLICIES};
use super::{in_netns, progress, stats, time_output, Row};
use crate::cluster::BackendKind;
use crate::netns::Netns;
use crate::policy::Identity;

/// The ports the server listens on: the policy's first, then the two it moves between.
const PORTS: [u16; 3] = [5201, 9000, 9001];
/// A connection attempt that gets no answer in this long counts as denied.
const DENIED_AFTER: Duration = Duration::from_millis(20);
/// Longest wait for one change.
const PATIENCE: Duration = Duration::from_secs(10);

fn identity(namespace: &str, labels: &[(&str, &str)]) -> Identity {
    Identity {
        namespace: namespace.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Identity::default()
    }
}

fn connects(from: &Netns, ip: Ipv4Addr, port: u16) -> bool {
    from.run(|| TcpStream::connect_timeout(&SocketAddr::from((ip, port)), DENIED_AFTER).is_ok())
        .unwrap_or(false)
}

/// Time from `t0` until `from` can (or, with `!allowed`, can no longer) reach `ip:port`.
fn until(t0: Instant, from: &Netns, ip: Ipv4Addr, port: u16, allowed: bool) -> Result<Duration> {
    loop {
        if connects(from, ip, port) == allowed {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > PATIENCE {
            bail!(
                "{ip}:{port} still {} after {PATIENCE:?}",
                if allowed { "denied" } else { "allowed" }
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Accepts (and closes) connections on `PORTS` in `ns` until dropped.
struct Listener(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Listener {
    fn start(ns: &Netns) -> Result<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for port in PORTS {
            let l = ns.run(|| TcpListener::bind(("0.0.0.0", port)))??;
            l.set_nonblocking(true)?;
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match l.accept() {
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            }));
        }
        Ok(Listener(stop, threads))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

/// p0 (ns0, app0) admitting role client1 from any namespace on `port`.
fn p0(port: u16) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p0, namespace: ns0}}\nspec:\n  podSelector: {{matchLabels: {{app: app0}}}}\n  ingress:\n  - from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{role: client1}}}}}}]\n    ports: [{{port: {port}}}]\n"
    )
}

pub(super) fn rows(per_host: usize, rounds: usize) -> Result<Vec<Row>> {
    progress(&format!(
        "policy across hosts: 2 hosts with agents, {POLICIES} policies, {} endpoints",
        2 * per_host
    ));
    let mut lab = Lab::new("px")?;
    // Room for every endpoint of a host in its lease.
    lab.subnet_len = 21;
    let hosts = [lab.host("pxh0", 0)?, lab.host("pxh1", 1)?];
    for (i, h) in hosts.iter().enumerate() {
        lab.start_agent_with(h, &format!("node{i}"), BackendKind::HostGw, true);
    }
    let node = |i: usize| format!("node{i}");
    let exe = std::env::current_exe()?;
    let store = lab.store_url();
    let ferrynet = |lab: &Lab, host: usize, args: &[&str]| -> Result<Duration> {
        let st = lab.node_state(&node(host));
        let mut cmd = Command::new(&exe);
        cmd.args(args)
            .args(["--store", &store])
            .env("FERRYNET_STATE_DIR", st.root());
        Ok(time_output(in_netns(&mut cmd, &hosts[host]))?.0)
    };
    let file = std::env::temp_dir().join(format!("ferrynet-bench-px-{}.yaml", std::process::id()));
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _file = Remove(file.clone());
    let apply = |lab: &Lab, text: &str| -> Result<Duration> {
        std::fs::write(&file, text)?;
        ferrynet(lab, 0, &["policy", "apply", "-f", &file.to_string_lossy()])
    };
    apply(&lab, &policies())?;

    // The filler endpoints, labelled as in the single-host rows, then the probe's pair.
    for i in 0..per_host {
        for (h, host) in hosts.iter().enumerate() {
            let (ns, app, role) = (
                format!("ns{}", i % 10),
                format!("app{}", i % 50),
                format!("client{}", i % 50),
            );
            let id = identity(&ns, &[("app", &app), ("role", &role)]);
            lab.pod_as(host, &node(h), &format!("px{h}-{i}"), Some(id))?;
        }
    }
    let server = lab.pod_as(
        &hosts[1],
        &node(1),
        "pxsrv",
        Some(identity("ns0", &[("app", "app0")])),
    )?;
    let client = lab.pod_as(
        &hosts[0],
        &node(0),
        "pxcli",
        Some(identity("ns1", &[("role", "nobody")])),
    )?;
    let _listener = Listener::start(&server.ns)?;
    // Converged: the client is denied, a client1 pod on host 0 admitted.
    until(Instant::now(), &client.ns, server.ip, PORTS[0], false)?;

    let (mut admit, mut revoke, mut moved, mut new_pod) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // The container id attach gave the client (its tag).
    let client_id = "pxcli";
    for round in 0..rounds {
        let t0 = Instant::now();
        ferrynet(&lab, 0, &["endpoint", "label", client_id, "role=client1"])?;
        admit.push(until(t0, &client.ns, server.ip, PORTS[0], true)?);

        // The policy moves its port: the admitted client reaches the new one.
        let port = PORTS[1 + round % 2];
        let t0 = Instant::now();
        apply(&lab, &p0(port))?;
        moved.push(until(t0, &client.ns, server.ip, port, true)?);
        apply(&lab, &p0(PORTS[0]))?;
        until(Instant::now(), &client.ns, server.ip, PORTS[0], true)?;

        let t0 = Instant::now();
        ferrynet(&lab, 0, &["endpoint", "label", client_id, "role=nobody"])?;
        revoke.push(until(t0, &client.ns, server.ip, PORTS[0], false)?);

        // A new admitted pod on host 0: attached, published by its agent, admitted on host 1.
        let t0 = Instant::now();
        let pod = lab.pod_as(
            &hosts[0],
            &node(0),
            &format!("pxnew{round}"),
            Some(identity("ns2", &[("role", "client1")])),
        )?;
        new_pod.push(until(t0, &pod.ns, server.ip, PORTS[0], true)?);
        progress(&format!(
            "policy across hosts: round {}/{rounds}",
            round + 1
        ));
    }
    let n = 2 * per_host;
    Ok(vec![
        Row {
            name: format!("across hosts: label change admits ({n} endpoints, {POLICIES} policies)"),
            stats: stats(&admit),
        },
        Row {
            name: "across hosts: label change revokes".into(),
            stats: stats(&revoke),
        },
        Row {
            name: "across hosts: policy change (port moves)".into(),
            stats: stats(&moved),
        },
        Row {
            name: "across hosts: new pod on the other host admitted".into(),
            stats: stats(&new_pod),
        },
    ])
}
