//! Hundreds of CNI ADD/DEL/GC calls, each with a random crash (abort) or error injected at a
//! random step, then a final DEL and GC: nothing may leak, the state must still parse, and
//! the next ADD must work. Needs `--features failpoints`.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::*;
use serde_json::{json, Value};

const STEPS: &[&str] = &[
    "attach.allocated",
    "attach.recorded",
    "attach.veth",
    "attach.container",
    "attach.host",
    "attach.ports",
    "detach.ports",
    "detach.veth",
    "gc.start",
    "gc.endpoints",
    "gc.veths",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn call(host: &Host, command: &str, c: &Ns, conf: &Value, failpoint: Option<String>) -> Output {
    call_with_args(host, command, c, conf, "", failpoint)
}

/// A call with `CNI_ARGS`, as podman makes them (static addresses travel there).
fn call_with_args(
    host: &Host,
    command: &str,
    c: &Ns,
    conf: &Value,
    args: &str,
    failpoint: Option<String>,
) -> Output {
    let mut cmd = host.ns.cmd(&[BIN]);
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &c.name)
        .env("CNI_NETNS", c.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env("CNI_ARGS", args)
        .env("FERRYNET_STATE_DIR", &host.state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(f) = failpoint {
        cmd.env("FERRYNET_FAILPOINT", f);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The network a torture runs on: its configuration for container `i` (each publishes its
/// own ports), the CNI_ARGS container `i` is called with, and the gateways the next ADD
/// must reach.
struct Torture {
    name: &'static str,
    conf: fn(u64) -> Value,
    args: fn(u64) -> String,
    gateways: &'static [&'static str],
}

const IPV4: Torture = Torture {
    name: "torture",
    conf: |port| {
        json!({"cniVersion": "1.1.0", "name": "torture", "type": "ferrynet", "bridge": "fytort0",
               "subnet": "10.71.0.0/24",
               "runtimeConfig": {"portMappings": [{"hostPort": 30000 + port, "containerPort": 80}]}})
    },
    args: |_| String::new(),
    gateways: &["10.71.0.1"],
};

/// Dual-stack: every port in both families, plus one on an IPv6 host address (`ports_ip6`);
/// odd containers ask for static addresses of both families in CNI_ARGS, as podman does.
const DUAL_STACK: Torture = Torture {
    name: "torture6",
    conf: |port| {
        json!({"cniVersion": "1.1.0", "name": "torture6", "type": "ferrynet", "bridge": "fytort6",
               "subnet": ["10.70.0.0/24", "fd00:70::/64"],
               "runtimeConfig": {"portMappings": [
                   {"hostPort": 30000 + port, "containerPort": 80},
                   {"hostPort": 31000 + port, "containerPort": 81, "protocol": "udp",
                    "hostIP": "fd00:201::1"}]}})
    },
    args: |i| match i % 2 {
        1 => format!(
            "IgnoreUnknown=1;K8S_POD_NAME=c{i};IP=10.70.0.{0},fd00:70::{0}",
            100 + i
        ),
        _ => "IgnoreUnknown=1".into(),
    },
    gateways: &["10.70.0.1", "fd00:70::1"],
};

/// `rounds` CNI calls on 6 containers, each with an abort or error at a random step, then a
/// clean DEL of every container and a GC: no veth, reservation (either family), published
/// port, guard element or endpoint record may be left, and the next ADD must work.
fn random_crash_cycles(net: &Torture, rounds: u64) {
    let host = Host::new();
    let containers: Vec<Ns> = (0..6).map(|_| Ns::new("c")).collect();
    let conf = net.conf;
    let args = net.args;
    let mut rng = Rng(std::process::id() as u64 ^ 0x5eed);
    let (mut crashed, mut failed) = (0, 0);
    for _ in 0..rounds {
        let i = rng.next(containers.len() as u64) as usize;
        let c = &containers[i];
        // A failpoint every time: an abort or an error at a random step (the call may not
        // reach that step, which is the "no fault" case).
        let step = STEPS[rng.next(STEPS.len() as u64) as usize];
        let failpoint = Some(match rng.next(2) {
            0 => step.to_string(),
            _ => format!("{step}:error"),
        });
        let command = match rng.next(10) {
            0..=4 => "ADD",
            5..=8 => "DEL",
            _ => "GC",
        };
        let mut conf = conf(i as u64);
        if command == "GC" {
            let keep: Vec<Value> = containers
                .iter()
                .filter(|_| rng.next(2) == 0)
                .map(|c| json!({"containerID": c.name, "ifname": "eth0"}))
                .collect();
            conf["cni.dev/valid-attachments"] = json!(keep);
        }
        let out = call_with_args(&host, command, c, &conf, &args(i as u64), failpoint);
        if !out.status.success() {
            if out.status.code().is_none() {
                crashed += 1;
            } else {
                failed += 1;
            }
        }
    }
    // About 1 call in 9 crashes and 1 in 3 fails (500 rounds: ~55 and ~150).
    let min = rounds / 25;
    assert!(
        crashed > min && failed > min,
        "the torture hit its failpoints ({crashed} crashes, {failed} errors)"
    );
    // Clean up as a runtime would, with no failpoint: DEL every container, then GC.
    for (i, c) in containers.iter().enumerate() {
        let out = call_with_args(&host, "DEL", c, &conf(i as u64), &args(i as u64), None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let mut gc = conf(0);
    gc["cni.dev/valid-attachments"] = json!([]);
    assert!(call(&host, "GC", &containers[0], &gc, None)
        .status
        .success());
    assert_eq!(host.veths(), Vec::<String>::new(), "no leaked veth");
    assert_eq!(
        host.reservations(net.name),
        Vec::<String>::new(),
        "no leaked address"
    );
    assert_eq!(
        host.reservations6(net.name),
        Vec::<String>::new(),
        "no leaked IPv6 address"
    );
    assert_eq!(host.port_elements(), "", "no stale nftables element");
    assert_eq!(
        host.container_elements(),
        Vec::<String>::new(),
        "no stale port or guard element, either family"
    );
    let endpoints = host.state.join("run/endpoints").join(net.name);
    let left: Vec<_> = std::fs::read_dir(&endpoints)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no endpoint record left: {left:?}");
    // And the next ADD works.
    let out = call_with_args(&host, "ADD", &containers[1], &conf(1), &args(1), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // One address per family, the static ones where CNI_ARGS asked for them.
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<&str> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["address"].as_str().unwrap().split('/').next().unwrap())
        .collect();
    assert_eq!(got.len(), net.gateways.len(), "{result}");
    let wanted = args(1);
    for ip in wanted
        .split(';')
        .filter_map(|kv| kv.strip_prefix("IP="))
        .flat_map(|v| v.split(','))
    {
        assert!(got.contains(&ip), "{ip} not in {result}");
    }
    for gw in net.gateways {
        assert!(containers[1].ping(gw), "{gw}");
    }
}

#[test]
fn five_hundred_cycles_with_random_crashes_leak_nothing() {
    random_crash_cycles(&IPV4, 500);
}

#[test]
fn dual_stack_cycles_with_random_crashes_leak_nothing() {
    random_crash_cycles(&DUAL_STACK, 250);
}

#[test]
fn state_files_are_private_to_root() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let host = Host::new();
    host.create_network("blue", "10.90.0.0/24");
    let _c = host.container("blue", &["-p", "8080:80"]);
    let mut files = Vec::new();
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            out.push(p.clone());
            if p.is_dir() && !p.is_symlink() {
                walk(&p, out);
            }
        }
    }
    walk(&host.state, &mut files);
    assert!(files.len() > 5);
    for f in files {
        let m = std::fs::symlink_metadata(&f).unwrap();
        assert_eq!(m.uid(), 0, "{} is owned by root", f.display());
        if m.file_type().is_symlink() {
            continue;
        }
        let mode = m.permissions().mode() & 0o777;
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} has mode {mode:o}", f.display());
    }
}

/// The addresses the keys of one IPAM directory hold (`key-<key>` -> address).
fn held_addresses(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("key-"))
                .map(|e| {
                    std::fs::read_link(e.path())
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn concurrent_storm_of_add_del_gc_on_four_networks() {
    // 4 networks (the last one dual-stack) x 50 containers, ADD/DEL/GC from 8 threads at
    // once, then a clean sweep: no address of either family handed out twice, nothing leaked.
    let host = Host::new();
    let nets: Vec<Value> = (0..4)
        .map(|n| {
            let subnet = match n {
                3 => json!([format!("10.72.{n}.0/24"), format!("fd00:72:{n}::/64")]),
                _ => json!(format!("10.72.{n}.0/24")),
            };
            json!({"cniVersion": "1.1.0", "name": format!("storm{n}"), "type": "ferrynet",
                   "bridge": format!("fystorm{n}"), "subnet": subnet})
        })
        .collect();
    let containers: Vec<Ns> = (0..50).map(|_| Ns::new("c")).collect();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (host, nets, containers) = (&host, &nets, &containers);
            s.spawn(move || {
                let mut rng = Rng(0x51 + t * 7919);
                for _ in 0..60 {
                    let c = &containers[rng.next(50) as usize];
                    let mut conf = nets[rng.next(4) as usize].clone();
                    let command = match rng.next(10) {
                        0..=5 => "ADD",
                        6..=8 => "DEL",
                        _ => {
                            conf["cni.dev/valid-attachments"] = json!(containers
                                .iter()
                                .map(|c| json!({"containerID": c.name, "ifname": "eth0"}))
                                .collect::<Vec<_>>());
                            "GC"
                        }
                    };
                    let _ = call(host, command, c, &conf, None);
                }
            });
        }
    });
    // Live endpoints: no two keys hold the same address within a network, in either family.
    let mut live6 = 0;
    for n in 0..4 {
        let ipam = host.state.join(format!("run/ipam/storm{n}"));
        for dir in [ipam.clone(), ipam.join("v6")] {
            let ips = held_addresses(&dir);
            let mut unique = ips.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), ips.len(), "{}: {ips:?}", dir.display());
            if dir.ends_with("v6") {
                live6 += ips.len();
            }
        }
        if n != 3 {
            assert_eq!(
                host.reservations6(&format!("storm{n}")),
                Vec::<String>::new()
            );
        }
    }
    assert!(live6 > 0, "the dual-stack network has live IPv6 endpoints");
    // GC with nothing valid on every network removes everything.
    for net in &nets {
        let mut gc = net.clone();
        gc["cni.dev/valid-attachments"] = json!([]);
        assert!(call(&host, "GC", &containers[0], &gc, None)
            .status
            .success());
    }
    assert_eq!(host.veths(), Vec::<String>::new());
    for n in 0..4 {
        assert_eq!(
            host.reservations(&format!("storm{n}")),
            Vec::<String>::new()
        );
        assert_eq!(
            host.reservations6(&format!("storm{n}")),
            Vec::<String>::new()
        );
    }
    assert_eq!(host.container_elements(), Vec::<String>::new());
}
