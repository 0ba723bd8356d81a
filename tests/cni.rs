//! CNI conformance: drives the binary exactly as libcni does (environment + stdin, plugin
//! chains with prevResult, DEL in reverse order), for every supported version.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::{json, Value};

const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// The directory holding the ferrynet binary, then the reference plugins: CNI_PATH.
fn cni_path() -> String {
    let dir = std::path::Path::new(BIN).parent().unwrap();
    format!("{}:{REFERENCE_PLUGINS}", dir.display())
}

struct Call<'a> {
    command: &'a str,
    container_id: &'a str,
    netns: &'a str,
    ifname: &'a str,
    args: &'a str,
}

impl<'a> Call<'a> {
    fn new(command: &'a str, container_id: &'a str, netns: &'a str) -> Call<'a> {
        Call {
            command,
            container_id,
            netns,
            ifname: "eth0",
            args: "",
        }
    }
}

/// Runs one plugin binary in the host namespace as a runtime would.
fn exec_plugin(host: &Host, plugin: &str, call: &Call, conf: &Value) -> Output {
    let mut child = host
        .ns
        .cmd(&[plugin])
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", call.args)
        .env("CNI_PATH", cni_path())
        .env("FERRYNET_STATE_DIR", &host.state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ferrynet_cni(host: &Host, call: &Call, conf: &Value) -> Output {
    exec_plugin(host, BIN, call, conf)
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {:?} stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "plugin failed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout_json(out)
}

/// A failed call: exit 1, error JSON on stdout with `code`.
fn assert_error(out: &Output, code: u64, needle: &str) {
    assert!(
        !out.status.success(),
        "expected failure, got {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = stdout_json(out);
    assert_eq!(v["code"], code, "{v}");
    assert!(
        v["msg"].as_str().unwrap().contains(needle),
        "{v} lacks {needle:?}"
    );
    assert!(v["cniVersion"].is_string());
}

fn net_conf(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "cninet",
        "type": "ferrynet",
        "bridge": "fycni0",
        "subnet": "10.77.0.0/24",
    })
}

fn with(mut conf: Value, key: &str, value: Value) -> Value {
    conf[key] = value;
    conf
}

/// The result's addresses, whatever the version.
fn result_ip(result: &Value) -> String {
    ip_of(result).to_string()
}

#[test]
fn version_needs_nothing_but_the_command() {
    // podman probes every plugin like this before using it.
    let out = Command::new(BIN)
        .env("CNI_COMMAND", "VERSION")
        .env("CNI_PATH", "dummy")
        .env("CNI_NETNS", "dummy")
        .env("CNI_IFNAME", "dummy")
        .env("CNI_CONTAINERID", "")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let v = ok_json(&out);
    assert_eq!(v["supportedVersions"], json!(VERSIONS));
    assert_eq!(v["cniVersion"], "1.1.0");
}

#[test]
fn add_check_del_for_every_version() {
    let host = Host::new();
    for version in VERSIONS {
        let c = Ns::new("c");
        let p = c.path().to_string_lossy().into_owned();
        let conf = net_conf(version);
        let result = ok_json(&ferrynet_cni(&host, &Call::new("ADD", &c.name, &p), &conf));
        assert_eq!(result["cniVersion"], *version);
        let ifaces = result["interfaces"].as_array().unwrap();
        assert_eq!(ifaces.len(), 3, "{result}");
        assert_eq!(ifaces[0]["name"], "fycni0");
        assert_eq!(ifaces[2]["name"], "eth0");
        assert_eq!(ifaces[2]["sandbox"], p.as_str());
        let ip = &result["ips"][0];
        assert_eq!(ip["interface"], 2);
        assert_eq!(ip["gateway"], "10.77.0.1");
        assert!(
            ip["address"].as_str().unwrap().ends_with("/24"),
            "the subnet's prefix, not /32"
        );
        if version.starts_with("0.") {
            assert_eq!(ip["version"], "4");
        } else {
            assert!(ip.get("version").is_none());
        }
        assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
        // The interface inside is real, and the MAC reported is the one it has.
        let link = c.exec(&["ip", "-o", "link", "show", "eth0"]);
        assert!(link.contains(ifaces[2]["mac"].as_str().unwrap()), "{link}");
        assert!(c.ping("10.77.0.1"));

        let check_conf = with(conf.clone(), "prevResult", result.clone());
        if *version != "0.3.0" && *version != "0.3.1" {
            ok_json_or_empty(&ferrynet_cni(
                &host,
                &Call::new("CHECK", &c.name, &p),
                &check_conf,
            ));
        }
        // DEL twice, the second with no namespace and no prevResult.
        let del = ferrynet_cni(&host, &Call::new("DEL", &c.name, &p), &check_conf);
        assert!(del.status.success(), "{del:?}");
        let del = ferrynet_cni(&host, &Call::new("DEL", &c.name, ""), &conf);
        assert!(del.status.success(), "{del:?}");
    }
    assert_eq!(host.veths(), Vec::<String>::new());
    assert_eq!(host.reservations("cninet"), Vec::<String>::new());
}

fn ok_json_or_empty(out: &Output) {
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn errors_carry_the_spec_codes() {
    let host = Host::new();
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let add = |conf: &Value| ferrynet_cni(&host, &Call::new("ADD", &c.name, &p), conf);
    let raw = |bytes: &[u8]| {
        let mut child = host
            .ns
            .cmd(&[BIN])
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", &c.name)
            .env("CNI_NETNS", &p)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", cni_path())
            .env("FERRYNET_STATE_DIR", &host.state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        child.wait_with_output().unwrap()
    };
    let before = host.snapshot();
    assert_error(&raw(b"{not json"), 6, "decode");
    assert_error(
        &add(&with(net_conf("9.9.9"), "name", json!("x"))),
        1,
        "incompatible CNI version",
    );
    assert_error(
        &add(&json!({"name": "x", "subnet": "10.1.0.0/24"})),
        7,
        "cniVersion",
    );
    assert_error(
        &add(&with(net_conf("1.0.0"), "mtu", json!("big"))),
        7,
        "\"mtu\"",
    );
    assert_error(
        &add(&with(net_conf("1.0.0"), "subnet", json!("10.1.0.0/33"))),
        7,
        "\"subnet\"",
    );
    assert_error(
        &add(&with(net_conf("1.0.0"), "ipMasq", json!("yes"))),
        7,
        "\"ipMasq\"",
    );
    assert_error(
        &add(&with(
            net_conf("1.0.0"),
            "ipam",
            json!({"type": "../../bin/sh"}),
        )),
        7,
        "plugin name",
    );
    let mut bad_ifname = Call::new("ADD", &c.name, &p);
    bad_ifname.ifname = "a-very-long-ifname";
    assert_error(
        &ferrynet_cni(&host, &bad_ifname, &net_conf("1.0.0")),
        4,
        "CNI_IFNAME",
    );
    let mut slash = Call::new("ADD", &c.name, &p);
    slash.ifname = "eth/0";
    assert_error(
        &ferrynet_cni(&host, &slash, &net_conf("1.0.0")),
        4,
        "CNI_IFNAME",
    );
    assert_error(
        &ferrynet_cni(&host, &Call::new("ADD", "", &p), &net_conf("1.0.0")),
        4,
        "CNI_CONTAINERID",
    );
    assert_error(
        &ferrynet_cni(&host, &Call::new("ADD", "-bad", &p), &net_conf("1.0.0")),
        4,
        "CNI_CONTAINERID",
    );
    assert_error(
        &ferrynet_cni(&host, &Call::new("ADD", &c.name, ""), &net_conf("1.0.0")),
        4,
        "CNI_NETNS",
    );
    assert_error(
        &ferrynet_cni(
            &host,
            &Call::new("ADD", &c.name, "/run/netns/nope-nope"),
            &net_conf("1.0.0"),
        ),
        4,
        "nope-nope",
    );
    assert_error(
        &ferrynet_cni(&host, &Call::new("FROB", &c.name, &p), &net_conf("1.0.0")),
        4,
        "CNI_COMMAND",
    );
    let mut args = Call::new("ADD", &c.name, &p);
    args.args = "FOO=bar";
    assert_error(
        &ferrynet_cni(&host, &args, &net_conf("1.0.0")),
        4,
        "CNI_ARGS",
    );
    // The error JSON answers in the configuration's version.
    let out = add(&with(net_conf("0.4.0"), "mtu", json!(-1)));
    assert_eq!(stdout_json(&out)["cniVersion"], "0.4.0");
    // None of it changed the host (the failed attempts never reached the kernel).
    assert_eq!(host.snapshot(), before);
}

#[test]
fn static_ip_and_mac_from_cni_args_and_runtime_config() {
    let host = Host::new();
    let c1 = Ns::new("c");
    let p1 = c1.path().to_string_lossy().into_owned();
    let mut call = Call::new("ADD", &c1.name, &p1);
    call.args = "IgnoreUnknown=1;IP=10.77.0.42;MAC=02:42:0a:4d:00:2a;K8S_POD_NAME=x;OTHER=1";
    let r = ok_json(&ferrynet_cni(&host, &call, &net_conf("1.0.0")));
    assert_eq!(result_ip(&r), "10.77.0.42");
    assert_eq!(r["interfaces"][2]["mac"], "02:42:0a:4d:00:2a");

    let c2 = Ns::new("c");
    let p2 = c2.path().to_string_lossy().into_owned();
    let conf = with(
        net_conf("1.0.0"),
        "runtimeConfig",
        json!({"ips": ["10.77.0.43/24"], "mac": "02:42:0a:4d:00:2b"}),
    );
    let r = ok_json(&ferrynet_cni(
        &host,
        &Call::new("ADD", &c2.name, &p2),
        &conf,
    ));
    assert_eq!(result_ip(&r), "10.77.0.43");
    assert!(c1.ping("10.77.0.43"));

    // The same static IP again is refused, and nothing is left of the attempt.
    let c3 = Ns::new("c");
    let p3 = c3.path().to_string_lossy().into_owned();
    let mut call = Call::new("ADD", &c3.name, &p3);
    call.args = "IP=10.77.0.42";
    assert_error(
        &ferrynet_cni(&host, &call, &net_conf("1.0.0")),
        100,
        "already in use",
    );
    assert_eq!(host.veths().len(), 2);
}

#[test]
fn check_reports_drift() {
    let host = Host::new();
    let conf = with(
        net_conf("1.0.0"),
        "runtimeConfig",
        json!({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}),
    );
    type Breakage = fn(&Host, &Ns, &Value);
    let cases: Vec<(&str, Breakage)> = vec![
        ("lacks address", |_, c, r| {
            c.exec(&[
                "ip",
                "addr",
                "del",
                r["ips"][0]["address"].as_str().unwrap(),
                "dev",
                "eth0",
            ]);
        }),
        ("route 0.0.0.0/0", |_, c, _| {
            c.exec(&["ip", "route", "del", "default"]);
        }),
        ("host veth", |h, _, r| {
            h.ns.exec(&[
                "ip",
                "link",
                "del",
                r["interfaces"][1]["name"].as_str().unwrap(),
            ]);
        }),
        ("published port", |h, _, _| {
            h.ns.exec(&[
                "nft",
                "delete",
                "element",
                "inet",
                "ferrynet",
                "ports",
                "{ tcp . 18080 }",
            ]);
        }),
    ];
    for (needle, breakage) in cases {
        let c = Ns::new("c");
        let p = c.path().to_string_lossy().into_owned();
        let r = ok_json(&ferrynet_cni(&host, &Call::new("ADD", &c.name, &p), &conf));
        let check_conf = with(conf.clone(), "prevResult", r.clone());
        ok_json_or_empty(&ferrynet_cni(
            &host,
            &Call::new("CHECK", &c.name, &p),
            &check_conf,
        ));
        breakage(&host, &c, &r);
        assert_error(
            &ferrynet_cni(&host, &Call::new("CHECK", &c.name, &p), &check_conf),
            101,
            needle,
        );
        ok_json_or_empty(&ferrynet_cni(
            &host,
            &Call::new("DEL", &c.name, &p),
            &check_conf,
        ));
    }
    assert_eq!(host.port_elements(), "");
}

#[test]
fn gc_removes_only_what_is_not_listed() {
    let host = Host::new();
    let mut containers = Vec::new();
    for i in 0..3 {
        let c = Ns::new("c");
        let p = c.path().to_string_lossy().into_owned();
        let conf = with(
            net_conf("1.1.0"),
            "runtimeConfig",
            json!({"portMappings": [{"hostPort": 18000 + i, "containerPort": 80, "protocol": "tcp"}]}),
        );
        let r = ok_json(&ferrynet_cni(&host, &Call::new("ADD", &c.name, &p), &conf));
        containers.push((c, r));
    }
    let keep = &containers[0];
    let gc_conf = with(
        net_conf("1.1.0"),
        "cni.dev/valid-attachments",
        json!([{"containerID": keep.0.name, "ifname": "eth0"}]),
    );
    ok_json_or_empty(&ferrynet_cni(&host, &Call::new("GC", "", ""), &gc_conf));
    assert_eq!(
        host.veths(),
        vec![keep.1["interfaces"][1]["name"]
            .as_str()
            .unwrap()
            .to_string()]
    );
    let reserved = host.reservations("cninet");
    assert_eq!(
        reserved.len(),
        2,
        "one ip- and one key- entry: {reserved:?}"
    );
    let ports = host.port_elements();
    assert!(
        ports.contains("18000") && !ports.contains("18001") && !ports.contains("18002"),
        "{ports}"
    );
    // The survivor still works.
    assert!(keep.0.ping("10.77.0.1"));
    // The older key name is accepted too.
    let gc_conf = with(net_conf("1.1.0"), "cni.dev/attachments", json!([]));
    ok_json_or_empty(&ferrynet_cni(&host, &Call::new("GC", "", ""), &gc_conf));
    assert_eq!(host.veths(), Vec::<String>::new());
    assert_eq!(host.reservations("cninet"), Vec::<String>::new());
    assert_eq!(host.port_elements(), "");
}

#[test]
fn status_reports_readiness() {
    let host = Host::new();
    let status = |conf: &Value| ferrynet_cni(&host, &Call::new("STATUS", "", ""), conf);
    ok_json_or_empty(&status(&net_conf("1.1.0")));
    let lease_file = host.state.join("subnet.env");
    let auto = with(
        with(net_conf("1.1.0"), "subnet", json!("auto")),
        "subnetFile",
        json!(lease_file.to_string_lossy()),
    );
    assert_error(&status(&auto), 50, "no subnet is leased yet");
    std::fs::create_dir_all(&host.state).unwrap();
    std::fs::write(&lease_file, "FERRYNET_NETWORK=10.244.0.0/16\nFERRYNET_SUBNET=10.244.7.0/24\nFERRYNET_MTU=1450\nFERRYNET_IPMASQ=true\n").unwrap();
    ok_json_or_empty(&status(&auto));
    // "auto" takes the subnet and MTU from the lease.
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let r = ok_json(&ferrynet_cni(&host, &Call::new("ADD", &c.name, &p), &auto));
    assert!(result_ip(&r).starts_with("10.244.7."), "{r}");
    assert!(c.exec(&["ip", "link", "show", "eth0"]).contains("mtu 1450"));
    // An exhausted pool is "not ready".
    let tiny = with(net_conf("1.1.0"), "subnet", json!("10.78.0.0/30"));
    let t = Ns::new("c");
    let tp = t.path().to_string_lossy().into_owned();
    ok_json(&ferrynet_cni(
        &host,
        &Call::new("ADD", &t.name, &tp),
        &with(tiny.clone(), "bridge", json!("fytiny")),
    ));
    assert_error(
        &status(&with(tiny, "bridge", json!("fytiny"))),
        50,
        "no free address",
    );
}

#[test]
fn two_hundred_parallel_adds_get_distinct_reachable_addresses() {
    let host = Host::new();
    let conf = with(net_conf("1.0.0"), "subnet", json!("10.79.0.0/16"));
    let containers: Vec<Ns> = (0..200).map(|_| Ns::new("c")).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = containers
            .iter()
            .map(|c| {
                let (host, conf) = (&host, &conf);
                s.spawn(move || {
                    let p = c.path().to_string_lossy().into_owned();
                    ok_json(&ferrynet_cni(host, &Call::new("ADD", &c.name, &p), conf))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<String> = results.iter().map(result_ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 200);
    assert_eq!(host.veths().len(), 200);
    // All reachable: one ping sweep from the host (fping-like, parallel pings).
    std::thread::scope(|s| {
        for ip in &ips {
            let host = &host;
            s.spawn(move || assert!(host.ns.ping(ip), "{ip} unreachable"));
        }
    });
    std::thread::scope(|s| {
        for c in &containers {
            let (host, conf) = (&host, &conf);
            s.spawn(move || {
                let p = c.path().to_string_lossy().into_owned();
                ok_json_or_empty(&ferrynet_cni(host, &Call::new("DEL", &c.name, &p), conf));
            });
        }
    });
    assert_eq!(host.veths(), Vec::<String>::new());
    assert_eq!(host.reservations("cninet"), Vec::<String>::new());
}

#[test]
fn delegates_to_the_host_local_ipam_plugin() {
    let host = Host::new();
    let data_dir = host.state.join("host-local");
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "hlnet",
        "type": "ferrynet",
        "bridge": "fyhl0",
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir.to_string_lossy(),
            "ranges": [[{"subnet": "10.76.0.0/24", "gateway": "10.76.0.1"}]],
        },
    });
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let r = ok_json(&ferrynet_cni(&host, &Call::new("ADD", &c.name, &p), &conf));
    assert_eq!(result_ip(&r), "10.76.0.2");
    assert_eq!(r["ips"][0]["gateway"], "10.76.0.1");
    assert!(c.ping("10.76.0.1"));
    let stored = std::fs::read_dir(data_dir.join("hlnet")).unwrap().count();
    assert!(stored >= 1, "host-local recorded the allocation");
    let check_conf = with(conf.clone(), "prevResult", r);
    ok_json_or_empty(&ferrynet_cni(
        &host,
        &Call::new("CHECK", &c.name, &p),
        &check_conf,
    ));
    ok_json_or_empty(&ferrynet_cni(
        &host,
        &Call::new("DEL", &c.name, &p),
        &check_conf,
    ));
    assert!(
        !data_dir.join("hlnet").join("10.76.0.2").exists(),
        "host-local released it"
    );
    assert_eq!(host.veths(), Vec::<String>::new());
}

/// A conflist chain run as libcni does: ADD in order with prevResult, DEL in reverse.
fn run_chain(
    host: &Host,
    command: &str,
    plugins: &[Value],
    container: &Ns,
    prev: Option<Value>,
) -> Option<Value> {
    let p = container.path().to_string_lossy().into_owned();
    let order: Vec<&Value> = if command == "DEL" {
        plugins.iter().rev().collect()
    } else {
        plugins.iter().collect()
    };
    let mut result = prev.clone();
    for plugin in order {
        let mut conf = plugin.clone();
        conf["cniVersion"] = json!("1.0.0");
        conf["name"] = json!("chain");
        if let Some(r) = if command == "ADD" {
            result.clone()
        } else {
            prev.clone()
        } {
            conf["prevResult"] = r;
        }
        let kind = conf["type"].as_str().unwrap().to_string();
        let binary = if kind == "ferrynet" {
            BIN.to_string()
        } else {
            format!("{REFERENCE_PLUGINS}/{kind}")
        };
        let out = exec_plugin(
            host,
            &binary,
            &Call::new(command, &container.name, &p),
            &conf,
        );
        assert!(
            out.status.success(),
            "{kind} {command}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if command == "ADD" {
            result = Some(stdout_json(&out));
        }
    }
    result
}

#[test]
fn chains_with_the_reference_tuning_and_bandwidth_plugins() {
    let host = Host::new();
    let plugins = vec![
        json!({"type": "ferrynet", "bridge": "fychain0", "subnet": "10.75.0.0/24"}),
        json!({"type": "tuning", "mtu": 1400, "sysctl": {"net.ipv4.conf.eth0.accept_local": "1"}}),
        json!({"type": "bandwidth", "ingressRate": 100000000, "ingressBurst": 1000000, "egressRate": 100000000, "egressBurst": 1000000}),
    ];
    let c = Ns::new("c");
    let result = run_chain(&host, "ADD", &plugins, &c, None).unwrap();
    assert_eq!(result_ip(&result), "10.75.0.2");
    assert!(
        c.exec(&["ip", "link", "show", "eth0"]).contains("mtu 1400"),
        "tuning applied"
    );
    assert!(c.ping("10.75.0.1"));
    run_chain(&host, "CHECK", &plugins, &c, Some(result.clone()));
    run_chain(&host, "DEL", &plugins, &c, Some(result));
    run_chain(&host, "DEL", &plugins, &c, None);
    assert_eq!(host.veths(), Vec::<String>::new());
}

#[test]
fn chains_with_the_reference_portmap_and_firewall_plugins() {
    let host = Host::new();
    let world = World::attach_to(&host);
    let plugins = vec![
        json!({"type": "ferrynet", "bridge": "fychain1", "subnet": "10.74.0.0/24"}),
        json!({"type": "portmap", "capabilities": {"portMappings": true},
               "runtimeConfig": {"portMappings": [{"hostPort": 28080, "containerPort": 80, "protocol": "tcp"}]}}),
        json!({"type": "firewall", "backend": "iptables"}),
    ];
    let c = Ns::new("c");
    let result = run_chain(&host, "ADD", &plugins, &c, None).unwrap();
    let _server = server(&c, std::net::Ipv4Addr::UNSPECIFIED, 80, "c");
    // portmap's DNAT (iptables) reaches the container that ferrynet attached.
    assert_eq!(
        fetch(&world.ns, world.host_ip, 28080),
        Some("hello from c\n".into())
    );
    // CHECK without portmap: Debian's portmap 1.1.1 fails its own CHECK when the result has no
    // IPv6 address ("could not check ipv6 dnat"), whoever the main plugin is.
    let checkable: Vec<Value> = plugins
        .iter()
        .filter(|p| p["type"] != "portmap")
        .cloned()
        .collect();
    run_chain(&host, "CHECK", &checkable, &c, Some(result.clone()));
    run_chain(&host, "DEL", &plugins, &c, Some(result));
    assert_eq!(host.veths(), Vec::<String>::new());
}

#[test]
fn a_thousand_port_mappings_in_one_add() {
    // podman splits a published range into one mapping per port.
    let host = Host::new();
    let mappings: Vec<Value> = (0..1000)
        .map(|i| json!({"hostPort": 30000 + i, "containerPort": 30000 + i, "protocol": "udp"}))
        .collect();
    let conf = with(
        net_conf("1.0.0"),
        "runtimeConfig",
        json!({"portMappings": mappings}),
    );
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let r = ok_json(&ferrynet_cni(&host, &Call::new("ADD", &c.name, &p), &conf));
    let listed = host
        .ns
        .exec(&["nft", "list", "map", "inet", "ferrynet", "ports"]);
    let ip = result_ip(&r);
    assert_eq!(
        listed.matches(&format!("{ip} . ")).count(),
        1000,
        "all 1,000 elements"
    );
    let check_conf = with(conf.clone(), "prevResult", r);
    ok_json_or_empty(&ferrynet_cni(
        &host,
        &Call::new("CHECK", &c.name, &p),
        &check_conf,
    ));
    ok_json_or_empty(&ferrynet_cni(
        &host,
        &Call::new("DEL", &c.name, &p),
        &check_conf,
    ));
    assert_eq!(host.port_elements(), "");
}

#[test]
fn port_mapping_with_a_host_ip() {
    let host = Host::new();
    let world = World::attach_to(&host);
    let conf = with(
        net_conf("1.0.0"),
        "runtimeConfig",
        json!({"portMappings": [{"hostPort": 18090, "containerPort": 80, "protocol": "tcp", "hostIP": "10.201.0.1"}]}),
    );
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let r = ok_json(&ferrynet_cni(&host, &Call::new("ADD", &c.name, &p), &conf));
    let _s = server(&c, std::net::Ipv4Addr::UNSPECIFIED, 80, "c");
    assert_eq!(
        fetch(&world.ns, world.host_ip, 18090),
        Some("hello from c\n".into())
    );
    let check_conf = with(conf.clone(), "prevResult", r);
    ok_json_or_empty(&ferrynet_cni(
        &host,
        &Call::new("CHECK", &c.name, &p),
        &check_conf,
    ));
    ok_json_or_empty(&ferrynet_cni(
        &host,
        &Call::new("DEL", &c.name, &p),
        &check_conf,
    ));
    assert_eq!(fetch(&world.ns, world.host_ip, 18090), None);
    let listed = host
        .ns
        .exec(&["nft", "list", "map", "inet", "ferrynet", "ports_ip"]);
    assert!(!listed.contains("elements"), "{listed}");
}

#[test]
fn commands_are_gated_by_the_config_version_as_the_skel_does() {
    let host = Host::new();
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let before = host.snapshot();
    for version in VERSIONS {
        // No prevResult, no attachments: the version is looked at before anything else.
        let conf = net_conf(version);
        let check = ferrynet_cni(&host, &Call::new("CHECK", &c.name, &p), &conf);
        if version < &"0.4.0" {
            assert_error(&check, 1, "config version does not allow CHECK");
            assert_eq!(stdout_json(&check)["cniVersion"], *version);
        } else {
            assert_error(&check, 7, "prevResult");
        }
        for command in ["GC", "STATUS"] {
            let out = ferrynet_cni(&host, &Call::new(command, "", ""), &conf);
            if *version == "1.1.0" {
                assert_ne!(
                    stdout_json_or_null(&out)["code"],
                    1,
                    "{command} at {version}"
                );
            } else {
                assert_error(&out, 1, &format!("config version does not allow {command}"));
            }
        }
    }
    assert_eq!(host.snapshot(), before);
}

fn stdout_json_or_null(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// A refused ADD: the error code and message, and the host exactly as before (no bridge, no
/// address, no route, no nftables table, no state).
fn assert_add_refused(host: &Host, call: &Call, conf: &Value, code: u64, needle: &str) {
    let before = host.snapshot();
    let out = ferrynet_cni(host, call, conf);
    assert_error(&out, code, needle);
    assert_eq!(host.snapshot(), before, "{conf} changed the host");
}

#[test]
fn refused_configurations_change_nothing_on_the_host() {
    let host = Host::new();
    // The host's uplink, and an address without a route of its own.
    host.ns.exec(&[
        "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1",
    ]);
    // No kernel-made link-local addresses: their DAD would change the snapshot under the test.
    for dev in ["up0", "up1"] {
        host.ns
            .exec(&["ip", "link", "set", dev, "addrgenmode", "none"]);
    }
    host.ns
        .exec(&["ip", "addr", "add", "10.60.128.1/24", "dev", "up0"]);
    host.ns
        .exec(&["ip", "addr", "add", "10.61.0.9/32", "dev", "up0"]);
    host.ns.exec(&["ip", "link", "set", "up0", "up"]);
    host.ns.exec(&["ip", "link", "set", "up1", "up"]);
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let call = Call::new("ADD", &c.name, &p);
    let fresh = |key: &str, value: Value| {
        with(
            with(net_conf("1.1.0"), "bridge", json!("fyfresh0")),
            key,
            value,
        )
    };
    for (subnet, needle) in [
        (
            "0.0.0.0/0",
            "invalid subnet \"0.0.0.0/0\": is the whole address space",
        ),
        ("0.0.0.0/1", "\"this network\""),
        ("127.0.0.0/24", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.1.0.0/24", "multicast"),
        (
            "10.60.128.0/24",
            "the host's route 10.60.128.0/24 dev up0, address 10.60.128.1/24",
        ),
        ("10.60.128.0/25", "the host's route 10.60.128.0/24 dev up0"),
        (
            "10.60.128.128/26",
            "the host's route 10.60.128.0/24 dev up0",
        ),
        ("10.60.0.0/16", "the host's route 10.60.128.0/24 dev up0"),
        ("10.61.0.0/24", "the host's address 10.61.0.9/32 on up0"),
        ("10.77.0.0/31", "/30 or shorter"),
    ] {
        assert_add_refused(&host, &call, &fresh("subnet", json!(subnet)), 7, needle);
    }
    for (key, value, needle) in [
        (
            "gateway",
            json!("10.99.0.1"),
            "invalid gateway \"10.99.0.1\": is not a host address of 10.77.0.0/24",
        ),
        (
            "gateway",
            json!("10.77.0.255"),
            "invalid gateway \"10.77.0.255\"",
        ),
        (
            "bridge",
            json!("up0"),
            "invalid bridge \"up0\": exists and is a veth device",
        ),
        ("bridge", json!("lo"), "invalid bridge \"lo\""),
        ("bridge", json!("ferry.1"), "ferrynet's VXLAN device"),
        (
            "runtimeConfig",
            json!({"mac": "01:00:5e:00:00:01"}),
            "\"runtimeConfig.mac\"",
        ),
        (
            "runtimeConfig",
            json!({"mac": "00:00:00:00:00:00"}),
            "\"runtimeConfig.mac\"",
        ),
        ("mtu", json!(575), "\"mtu\""),
        (
            "ranges",
            json!([[{"rangeStart": "10.77.1.5"}]]),
            "invalid rangeStart \"10.77.1.5\"",
        ),
        (
            "ranges",
            json!([[{"rangeStart": "10.77.0.50", "rangeEnd": "10.77.0.10"}]]),
            "comes before rangeStart",
        ),
    ] {
        assert_add_refused(&host, &call, &fresh(key, value), 7, needle);
    }
    // The host's own namespace given as the container's.
    let own = host.ns.path().to_string_lossy().into_owned();
    assert_add_refused(
        &host,
        &Call::new("ADD", &c.name, &own),
        &fresh("subnet", json!("10.77.0.0/24")),
        4,
        "is the host's own network namespace",
    );
    // A static address the network cannot give: refused before the bridge exists.
    let mut gateway_ip = Call::new("ADD", &c.name, &p);
    gateway_ip.args = "IP=10.77.0.1";
    assert_add_refused(
        &host,
        &gateway_ip,
        &fresh("subnet", json!("10.77.0.0/24")),
        100,
        "gateway",
    );
    let mut outside = Call::new("ADD", &c.name, &p);
    outside.args = "IP=10.78.0.5";
    assert_add_refused(
        &host,
        &outside,
        &fresh("subnet", json!("10.77.0.0/24")),
        100,
        "outside the range",
    );
    // The same network twice is no conflict with itself; a second container joins it.
    let ok = fresh("subnet", json!("10.77.0.0/24"));
    ok_json(&ferrynet_cni(&host, &call, &ok));
    let c2 = Ns::new("c");
    let p2 = c2.path().to_string_lossy().into_owned();
    ok_json(&ferrynet_cni(&host, &Call::new("ADD", &c2.name, &p2), &ok));
    for (ns, path) in [(&c, &p), (&c2, &p2)] {
        let del = ferrynet_cni(&host, &Call::new("DEL", &ns.name, path), &ok);
        assert!(del.status.success(), "{del:?}");
    }
}

#[test]
fn the_range_narrows_the_addresses_handed_out() {
    let host = Host::new();
    let conf = with(
        net_conf("1.1.0"),
        "ranges",
        json!([[{"rangeStart": "10.77.0.100", "rangeEnd": "10.77.0.101"}]]),
    );
    let mut got = Vec::new();
    let containers: Vec<Ns> = (0..3).map(|_| Ns::new("c")).collect();
    for c in &containers {
        let p = c.path().to_string_lossy().into_owned();
        got.push(ferrynet_cni(&host, &Call::new("ADD", &c.name, &p), &conf));
    }
    assert_eq!(result_ip(&ok_json(&got[0])), "10.77.0.100");
    assert_eq!(result_ip(&ok_json(&got[1])), "10.77.0.101");
    assert_error(&got[2], 100, "no free address");
    for c in &containers {
        let p = c.path().to_string_lossy().into_owned();
        assert!(ferrynet_cni(&host, &Call::new("DEL", &c.name, &p), &conf)
            .status
            .success());
    }
    assert_eq!(host.reservations("cninet"), Vec::<String>::new());
}

fn dual_conf(version: &str) -> Value {
    with(
        net_conf(version),
        "subnet",
        json!(["10.77.0.0/24", "fd00:77::/64"]),
    )
}

#[test]
fn dual_stack_results_at_every_version_with_check_del_and_gc() {
    let host = Host::new();
    for version in VERSIONS {
        let c = Ns::new("c");
        let p = c.path().to_string_lossy().into_owned();
        let conf = dual_conf(version);
        let r = ok_json(&ferrynet_cni(&host, &Call::new("ADD", &c.name, &p), &conf));
        let ips = r["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 2, "{r}");
        assert_eq!(ips[0]["gateway"], "10.77.0.1");
        assert_eq!(ips[1]["gateway"], "fd00:77::1");
        assert!(ips[1]["address"].as_str().unwrap().ends_with("/64"));
        if version.starts_with("0.") {
            assert_eq!(ips[0]["version"], "4");
            assert_eq!(ips[1]["version"], "6");
        } else {
            assert!(ips[1].get("version").is_none());
        }
        let dsts: Vec<&str> = r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["dst"].as_str().unwrap())
            .collect();
        assert_eq!(dsts, vec!["0.0.0.0/0", "::/0"]);
        assert!(c.ping("fd00:77::1"));
        let check_conf = with(conf.clone(), "prevResult", r.clone());
        if !matches!(*version, "0.3.0" | "0.3.1") {
            ok_json_or_empty(&ferrynet_cni(
                &host,
                &Call::new("CHECK", &c.name, &p),
                &check_conf,
            ));
        }
        let del = ferrynet_cni(&host, &Call::new("DEL", &c.name, &p), &check_conf);
        assert!(del.status.success(), "{del:?}");
    }
    // Static addresses of both families from CNI_ARGS, then GC of both reservations.
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let mut call = Call::new("ADD", &c.name, &p);
    call.args = "IP=10.77.0.42,fd00:77::42";
    let r = ok_json(&ferrynet_cni(&host, &call, &dual_conf("1.1.0")));
    assert_eq!(r["ips"][1]["address"], "fd00:77::42/64");
    let gc = with(dual_conf("1.1.0"), "cni.dev/valid-attachments", json!([]));
    ok_json_or_empty(&ferrynet_cni(&host, &Call::new("GC", "", ""), &gc));
    assert_eq!(host.reservations("cninet"), Vec::<String>::new());
    assert!(std::fs::read_dir(host.state.join("run/ipam/cninet/v6"))
        .map(|d| d
            .flatten()
            .all(|e| e.file_name().to_string_lossy().starts_with("lock")))
        .unwrap_or(true));
    assert_eq!(host.veths(), Vec::<String>::new());
}

#[test]
fn dual_stack_bad_input_is_code_7_and_changes_nothing() {
    let host = Host::new();
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let call = Call::new("ADD", &c.name, &p);
    for (conf, needle) in [
        (
            with(
                net_conf("1.1.0"),
                "subnet",
                json!(["fd00:77::/64", "fd00:78::/64"]),
            ),
            "a second subnet of the same family",
        ),
        (
            with(net_conf("1.1.0"), "subnet", json!("fe80::/64")),
            "link-local",
        ),
        (
            with(net_conf("1.1.0"), "subnet", json!("::/0")),
            "whole address space",
        ),
        (
            with(net_conf("1.1.0"), "subnet", json!("fd00:77::/124")),
            "/120 or shorter",
        ),
        (
            with(dual_conf("1.1.0"), "gateway", json!("fd00:99::1")),
            "invalid gateway \"fd00:99::1\"",
        ),
        (
            with(net_conf("1.1.0"), "gateway", json!("fd00:77::1")),
            "the network has no subnet of its family",
        ),
        (
            with(dual_conf("1.1.0"), "mtu", json!(1200)),
            "IPv6 needs at least 1280",
        ),
        (
            with(
                net_conf("1.1.0"),
                "runtimeConfig",
                json!({"ips": ["fd00:77::5"]}),
            ),
            "the network has no IPv6 subnet",
        ),
        (
            with(
                net_conf("1.1.0"),
                "runtimeConfig",
                json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "hostIP": "fd00::1"}]}),
            ),
            "IPv6 host address",
        ),
    ] {
        assert_add_refused(&host, &call, &conf, 7, needle);
    }
}

#[test]
fn dual_stack_with_host_local_ipam_and_the_reference_tuning_and_portmap() {
    let host = Host::new();
    let data_dir = host.state.join("host-local");
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "hl6net",
        "type": "ferrynet",
        "bridge": "fyhl6",
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir.to_string_lossy(),
            "ranges": [
                [{"subnet": "10.73.0.0/24", "gateway": "10.73.0.1"}],
                [{"subnet": "fd00:73::/64", "gateway": "fd00:73::1"}],
            ],
        },
    });
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let r = ok_json(&ferrynet_cni(&host, &Call::new("ADD", &c.name, &p), &conf));
    let ips = r["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "{r}");
    assert_eq!(ips[1]["gateway"], "fd00:73::1");
    assert!(
        c.ping("fd00:73::1"),
        "the bridge carries host-local's IPv6 gateway"
    );
    let check_conf = with(conf.clone(), "prevResult", r);
    ok_json_or_empty(&ferrynet_cni(
        &host,
        &Call::new("CHECK", &c.name, &p),
        &check_conf,
    ));
    ok_json_or_empty(&ferrynet_cni(
        &host,
        &Call::new("DEL", &c.name, &p),
        &check_conf,
    ));
    assert_eq!(host.veths(), Vec::<String>::new());

    // The reference tuning and portmap plugins consume a dual-stack result.
    let plugins = vec![
        json!({"type": "ferrynet", "bridge": "fychain6", "subnet": ["10.72.0.0/24", "fd00:72::/64"]}),
        json!({"type": "tuning", "mtu": 1400}),
        json!({"type": "portmap", "capabilities": {"portMappings": true},
               "runtimeConfig": {"portMappings": [{"hostPort": 28081, "containerPort": 80, "protocol": "tcp"}]}}),
    ];
    let c = Ns::new("c");
    let result = run_chain(&host, "ADD", &plugins, &c, None).unwrap();
    assert_eq!(result["ips"].as_array().unwrap().len(), 2);
    assert!(c.exec(&["ip", "link", "show", "eth0"]).contains("mtu 1400"));
    assert!(c.ping("fd00:72::1"));
    run_chain(&host, "DEL", &plugins, &c, Some(result));
    assert_eq!(host.veths(), Vec::<String>::new());
}

#[test]
fn the_plugin_only_binary_is_the_same_plugin() {
    // ferrynet-cni links nothing of the CLI or the agent: install it as /opt/cni/bin/ferrynet.
    let plugin = env!("CARGO_BIN_EXE_ferrynet-cni");
    let host = Host::new();
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let conf = dual_conf("1.1.0");
    let r = ok_json(&exec_plugin(
        &host,
        plugin,
        &Call::new("ADD", &c.name, &p),
        &conf,
    ));
    assert_eq!(r["ips"].as_array().unwrap().len(), 2);
    assert!(c.ping("10.77.0.1"));
    let check = with(conf.clone(), "prevResult", r);
    ok_json_or_empty(&exec_plugin(
        &host,
        plugin,
        &Call::new("CHECK", &c.name, &p),
        &check,
    ));
    assert_error(
        &exec_plugin(
            &host,
            plugin,
            &Call::new("ADD", &c.name, &p),
            &with(conf.clone(), "mtu", json!("x")),
        ),
        7,
        "\"mtu\"",
    );
    ok_json_or_empty(&exec_plugin(
        &host,
        plugin,
        &Call::new("DEL", &c.name, &p),
        &conf,
    ));
    let version = exec_plugin(&host, plugin, &Call::new("VERSION", "", ""), &conf);
    assert!(stdout_json(&version)["supportedVersions"].is_array());
    assert_eq!(host.veths(), Vec::<String>::new());
}

/// The pod's namespace and name from CNI_ARGS, its labels and named ports from args.cni go
/// into the endpoint's record for network policy; a bad one is code 7 and changes nothing.
#[test]
fn the_pods_policy_identity_is_recorded() {
    let host = Host::new();
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let mut call = Call::new("ADD", &c.name, &p);
    call.args = "K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;K8S_POD_UID=1";
    let before = host.snapshot();
    for (args, needle) in [
        (
            json!({"cni": {"labels": [{"key": "bad key", "value": "a"}]}}),
            "bad key",
        ),
        (
            json!({"cni": {"namedPorts": [{"name": "Serve", "port": 80}]}}),
            "Serve",
        ),
        (
            json!({"cni": {"namedPorts": [{"name": "x", "port": "http"}]}}),
            "namedPorts",
        ),
    ] {
        let out = ferrynet_cni(&host, &call, &with(net_conf("1.0.0"), "args", args));
        assert_error(&out, 7, needle);
        assert_eq!(host.snapshot(), before);
    }
    let conf = with(
        net_conf("1.0.0"),
        "args",
        json!({"cni": {
            "labels": [{"key": "pod", "value": "a"}, {"key": "app.kubernetes.io/name", "value": "web"}],
            "namedPorts": [{"name": "serve-80-tcp", "port": 80, "protocol": "TCP"}]}}),
    );
    ok_json(&ferrynet_cni(&host, &call, &conf));
    let record: Value = serde_json::from_slice(
        &std::fs::read(
            host.state
                .join(format!("run/endpoints/cninet/{}:eth0.json", c.name)),
        )
        .unwrap(),
    )
    .unwrap();
    let id = &record["identity"];
    assert_eq!(id["namespace"], "x", "{record:#}");
    assert_eq!(id["name"], "a");
    assert_eq!(id["labels"]["app.kubernetes.io/name"], "web");
    assert_eq!(id["named_ports"][0]["port"], 80);
    let del = ferrynet_cni(&host, &Call::new("DEL", &c.name, &p), &conf);
    assert!(del.status.success());
}
