//! The single-host engine end to end: real namespaces, real bridge, real nftables.

mod common;

use std::net::Ipv4Addr;

use common::*;

/// `--big-tcp`: both ends of a container's veth take and build 192 KiB packets (IPv4 and
/// IPv6 sizes); by default the kernel's 64 KiB.
#[test]
fn veth_pairs_carry_big_packets_when_asked() {
    let host = Host::new();
    host.ferrynet(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.90.0.0/24",
        "--big-tcp",
    ]);
    host.create_network("green", "10.91.0.0/24");
    let (c1, ep1) = host.container("blue", &[]);
    let (c2, ep2) = host.container("green", &[]);
    let size = |text: &str, key: &str| -> u64 {
        let words: Vec<&str> = text.split_whitespace().collect();
        let i = words
            .iter()
            .position(|w| *w == key)
            .unwrap_or_else(|| panic!("{key} in {text}"));
        words[i + 1].parse().unwrap()
    };
    for (c, ep, want) in [(&c1, &ep1, 196_608), (&c2, &ep2, 65_536)] {
        let inside = c.exec(&["ip", "-d", "link", "show", "eth0"]);
        let veth = ep["host_veth"].as_str().unwrap();
        let outside = host.ns.exec(&["ip", "-d", "link", "show", veth]);
        for text in [&inside, &outside] {
            assert_eq!(size(text, "gso_max_size"), want, "{text}");
            assert_eq!(size(text, "gro_max_size"), want, "{text}");
        }
    }
    // Still an ordinary network: a neighbour on the bridge answers.
    let (c3, _) = host.container("blue", &[]);
    assert!(c3.ping(&endpoint_ip(&ep1).to_string()));
}

#[test]
fn two_containers_ping_over_the_bridge() {
    let host = Host::new();
    host.create_network("blue", "10.90.0.0/24");
    let (c1, ep1) = host.container("blue", &[]);
    let (c2, ep2) = host.container("blue", &[]);
    let (ip1, ip2) = (endpoint_ip(&ep1), endpoint_ip(&ep2));
    assert_ne!(ip1, ip2);

    assert!(c1.ping(&ip2.to_string()), "c1 -> c2");
    assert!(c2.ping(&ip1.to_string()), "c2 -> c1");
    // ARP resolved the neighbour on the bridge, on both sides.
    let n1 = c1.exec(&["ip", "neigh", "show", &ip2.to_string()]);
    assert!(
        n1.contains(ep2["mac"].as_str().unwrap()),
        "c1 neighbours: {n1}"
    );
    let n2 = c2.exec(&["ip", "neigh", "show", &ip1.to_string()]);
    assert!(
        n2.contains(ep1["mac"].as_str().unwrap()),
        "c2 neighbours: {n2}"
    );

    for (c, ep) in [(&c1, &ep1), (&c2, &ep2)] {
        // eth0's peer is the host veth, which is a port of the bridge.
        let iflink = c.exec(&["cat", "/sys/class/net/eth0/iflink"]);
        assert_eq!(iflink.trim(), ep["host_ifindex"].to_string());
        let veth = ep["host_veth"].as_str().unwrap();
        let ifindex = host
            .ns
            .exec(&["cat", &format!("/sys/class/net/{veth}/ifindex")]);
        assert_eq!(ifindex.trim(), ep["host_ifindex"].to_string());
        let master = host.ns.exec(&["ip", "-o", "link", "show", veth]);
        assert!(master.contains("master ferry-blue"), "{master}");
        // A default route via the gateway, lo up, the address with the subnet's prefix.
        let routes = c.exec(&["ip", "route"]);
        assert!(
            routes.contains("default via 10.90.0.1 dev eth0"),
            "{routes}"
        );
        let lo = c.exec(&["ip", "-o", "link", "show", "lo"]);
        assert!(lo.contains("UP"), "{lo}");
        let addr = c.exec(&["ip", "-o", "-4", "addr", "show", "eth0"]);
        assert!(addr.contains(ep["ip"].as_str().unwrap()), "{addr}");
    }
    // The gateway answers too.
    assert!(c1.ping("10.90.0.1"));
}

#[test]
fn outbound_traffic_is_masqueraded_to_the_uplink_address() {
    let host = Host::new();
    let world = World::attach_to(&host);
    host.create_network("blue", "10.90.0.0/24");
    let (c1, _) = host.container("blue", &[]);
    let server = server(&world.ns, world.ip, 7000, "world");

    let reply = fetch(&c1, world.ip, 7000).expect("container reaches the world");
    assert_eq!(reply, "hello from world\n");
    assert_eq!(
        server.peers(),
        vec![std::net::IpAddr::from(world.host_ip)],
        "the world sees the host's uplink address"
    );
}

#[test]
fn published_port_from_world_host_and_hairpin() {
    let host = Host::new();
    let world = World::attach_to(&host);
    host.create_network("blue", "10.90.0.0/24");
    let (c1, ep1) = host.container("blue", &["--publish", "8080:80/tcp"]);
    let (c2, _) = host.container("blue", &[]);
    let _server = server(&c1, Ipv4Addr::UNSPECIFIED, 80, "c1");
    assert!(ep1["ports"][0]["host_port"] == 8080);

    let hello = Some("hello from c1\n".to_string());
    assert_eq!(
        fetch(&world.ns, world.host_ip, 8080),
        hello,
        "world -> host:8080"
    );
    assert_eq!(
        fetch(&host.ns, world.host_ip, 8080),
        hello,
        "host -> its own address:8080"
    );
    assert_eq!(
        fetch(&host.ns, Ipv4Addr::LOCALHOST, 8080),
        hello,
        "host -> 127.0.0.1:8080"
    );
    assert_eq!(
        fetch(&c2, world.host_ip, 8080),
        hello,
        "hairpin: c2 -> host:8080"
    );
    assert_eq!(
        fetch(&c1, world.host_ip, 8080),
        hello,
        "hairpin: c1 -> its own published port"
    );

    // A second container cannot take the same host port.
    let c3 = Ns::new("c");
    let out = host.try_ferrynet(&[
        "attach",
        c3.path().to_str().unwrap(),
        "--network",
        "blue",
        "-p",
        "8080:81",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("8080/tcp is already published"));

    // Detach unpublishes.
    host.ferrynet(&["detach", c1.path().to_str().unwrap(), "--network", "blue"]);
    assert_eq!(host.port_elements(), "");
    assert_eq!(fetch(&world.ns, world.host_ip, 8080), None);
}

#[test]
fn networks_are_isolated_from_each_other() {
    let host = Host::new();
    host.create_network("red", "10.91.0.0/24");
    host.create_network("blue", "10.90.0.0/24");
    let (r1, _) = host.container("red", &[]);
    let (b1, epb) = host.container("blue", &[]);
    let (b2, _) = host.container("blue", &[]);
    let blue_ip = endpoint_ip(&epb);
    let _server = server(&b1, Ipv4Addr::UNSPECIFIED, 9000, "b1");

    assert!(b2.ping(&blue_ip.to_string()), "same network works");
    assert!(fetch(&b2, blue_ip, 9000).is_some());
    assert!(!r1.ping(&blue_ip.to_string()), "red must not reach blue");
    assert_eq!(
        fetch(&r1, blue_ip, 9000),
        None,
        "red must not reach blue over TCP"
    );
}

/// Runs one ferrynet process per argument list, all at once; panics if any fails.
fn run_parallel(host: &Host, arg_lists: Vec<Vec<String>>) -> Vec<String> {
    let children: Vec<_> = arg_lists
        .iter()
        .map(|args| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            host.ferrynet_cmd(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect()
}

#[test]
fn fifty_parallel_attaches_then_fifty_parallel_detaches() {
    let host = Host::new();
    host.create_network("blue", "10.90.0.0/24");
    let containers: Vec<Ns> = (0..50).map(|_| Ns::new("c")).collect();
    let path = |c: &Ns| c.path().to_string_lossy().into_owned();

    let attaches = containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let publish = format!("{}:80", 20000 + i);
            ["attach", &path(c), "--network", "blue", "-p", &publish]
                .map(String::from)
                .to_vec()
        })
        .collect();
    let ips: Vec<Ipv4Addr> = run_parallel(&host, attaches)
        .iter()
        .map(|out| endpoint_ip(&serde_json::from_str(out).unwrap()))
        .collect();
    let mut unique_ips = ips.clone();
    unique_ips.sort();
    unique_ips.dedup();
    assert_eq!(unique_ips.len(), 50, "distinct addresses");
    for ip in &ips {
        assert!(host.ns.ping(&ip.to_string()), "{ip} reachable");
    }
    assert_eq!(host.veths().len(), 50);

    let detaches = containers
        .iter()
        .map(|c| {
            ["detach", &path(c), "--network", "blue"]
                .map(String::from)
                .to_vec()
        })
        .collect();
    run_parallel(&host, detaches);
    assert_eq!(host.veths(), Vec::<String>::new(), "no veth left");
    assert_eq!(
        host.reservations("blue"),
        Vec::<String>::new(),
        "no address reserved"
    );
    assert_eq!(
        host.port_elements(),
        "",
        "no per-container nftables element"
    );
}

fn assert_fails_and_changes_nothing(host: &Host, args: &[&str], expect: &str) {
    let before = host.snapshot();
    let out = host.try_ferrynet(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        stderr.contains(expect),
        "{args:?}: expected {expect:?} in {stderr:?}"
    );
    assert_eq!(host.snapshot(), before, "{args:?} changed the host's state");
}

#[test]
fn bad_input_is_a_clear_error_and_changes_nothing() {
    let host = Host::new();
    host.create_network("blue", "10.90.0.0/24");
    host.create_network("tiny", "10.92.0.0/30");
    let (_c1, _) = host.container("blue", &["--ip", "10.90.0.50"]);
    let (_t1, _) = host.container("tiny", &[]);
    let c2 = Ns::new("c");
    let c2p = c2.path();
    let c2p = c2p.to_str().unwrap();

    assert_fails_and_changes_nothing(
        &host,
        &["attach", c2p, "--network", "blue", "--ip", "10.90.0.50"],
        "10.90.0.50 is already in use",
    );
    assert_fails_and_changes_nothing(
        &host,
        &["attach", c2p, "--network", "blue", "--ip", "10.99.0.5"],
        "outside the range",
    );
    assert_fails_and_changes_nothing(
        &host,
        &["network", "create", "green", "--subnet", "10.90.0.128/25"],
        "overlaps network \"blue\"",
    );
    assert_fails_and_changes_nothing(
        &host,
        &["attach", c2p, "--network", "tiny"],
        "no free address left in 10.92.0.0/30",
    );
    assert_fails_and_changes_nothing(
        &host,
        &[
            "attach",
            c2p,
            "--network",
            "blue",
            "--ifname",
            "a-very-long-ifname",
        ],
        "invalid ifname \"a-very-long-ifname\": longer than 15 bytes",
    );
    assert_fails_and_changes_nothing(
        &host,
        &["attach", "/run/netns/does-not-exist", "--network", "blue"],
        "/run/netns/does-not-exist",
    );
    assert_fails_and_changes_nothing(
        &host,
        &["attach", c2p, "--network", "nope"],
        "network \"nope\" not found",
    );
    assert_fails_and_changes_nothing(
        &host,
        &["attach", c2p, "--network", "blue", "--container-id", "../x"],
        "invalid container id",
    );
    // The same container and ifname twice.
    let c1p = _c1.path();
    assert_fails_and_changes_nothing(
        &host,
        &["attach", c1p.to_str().unwrap(), "--network", "blue"],
        "already has interface \"eth0\"",
    );
}

#[test]
fn detach_is_idempotent_and_works_with_the_namespace_gone() {
    let host = Host::new();
    host.create_network("blue", "10.90.0.0/24");
    let (c1, _) = host.container("blue", &["-p", "8081:80"]);
    let path = c1.path();
    drop(c1);
    host.ferrynet(&["detach", path.to_str().unwrap(), "--network", "blue"]);
    host.ferrynet(&["detach", path.to_str().unwrap(), "--network", "blue"]);
    assert_eq!(host.veths(), Vec::<String>::new());
    assert_eq!(host.reservations("blue"), Vec::<String>::new());
    assert_eq!(host.port_elements(), "");
}

#[test]
fn network_ls_inspect_and_rm() {
    let host = Host::new();
    host.create_network("blue", "10.90.0.0/24");
    let (c1, ep) = host.container("blue", &[]);
    let ls: serde_json::Value =
        serde_json::from_str(&host.ferrynet(&["network", "ls", "--json"])).unwrap();
    assert_eq!(ls[0]["name"], "blue");
    assert_eq!(ls[0]["bridge"], "ferry-blue");
    let inspect: serde_json::Value =
        serde_json::from_str(&host.ferrynet(&["network", "inspect", "blue", "--json"])).unwrap();
    assert_eq!(inspect["gateway"], "10.90.0.1");
    assert_eq!(inspect["endpoints"][0]["host_veth"], ep["host_veth"]);
    assert_eq!(inspect["endpoints"][0]["container_id"], c1.name.as_str());
    let human = host.ferrynet(&["network", "inspect", "blue"]);
    assert!(human.contains(ep["host_veth"].as_str().unwrap()));

    let out = host.try_ferrynet(&["network", "rm", "blue"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still has 1 endpoint"));
    host.ferrynet(&["network", "rm", "blue", "--force"]);
    assert_eq!(host.veths(), Vec::<String>::new());
    let links = host.ns.exec(&["ip", "-o", "link", "show"]);
    assert!(!links.contains("ferry-blue"), "{links}");
    assert_eq!(host.ferrynet(&["network", "ls", "--json"]).trim(), "[]");
}

#[test]
fn run_attaches_a_new_namespace_and_passes_the_exit_code_on() {
    let host = Host::new();
    host.create_network("blue", "10.90.0.0/24");
    let out = host.try_ferrynet(&[
        "run",
        "--network",
        "blue",
        "--",
        "sh",
        "-c",
        "ip -o -4 addr show eth0; ip route; ping -c1 -W1 10.90.0.1 >/dev/null && echo gateway-ok; exit 7",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("10.90.0.2/24"), "{stdout}");
    assert!(stdout.contains("default via 10.90.0.1"), "{stdout}");
    assert!(stdout.contains("gateway-ok"), "{stdout}");
    // Everything is gone afterwards.
    assert_eq!(host.veths(), Vec::<String>::new());
    assert_eq!(host.reservations("blue"), Vec::<String>::new());
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&netns.stdout).contains("ferrynet-run-"));
}

#[test]
fn demo_runs_and_cleans_up() {
    let out = sh(std::process::Command::new(BIN).arg("demo"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all checks passed"));
    let netns = ok(std::process::Command::new("ip").args(["netns", "list"]));
    assert!(!netns.contains("ferrynet-demo"), "{netns}");
}

#[test]
fn published_port_on_one_host_address_only() {
    let host = Host::new();
    let world = World::attach_to(&host);
    host.ns
        .exec(&["ip", "addr", "add", "10.201.0.5/24", "dev", "uplink0"]);
    host.create_network("blue", "10.90.0.0/24");
    let (c1, _) = host.container("blue", &["--publish", "10.201.0.5:8082:80/tcp"]);
    let (c2, _) = host.container("blue", &["--publish", "8082:81/tcp"]);
    let _s1 = server(&c1, Ipv4Addr::UNSPECIFIED, 80, "c1");
    let _s2 = server(&c2, Ipv4Addr::UNSPECIFIED, 81, "c2");
    // The address-specific mapping wins on its address; the others get the general one.
    let on = |ip: [u8; 4]| fetch(&world.ns, Ipv4Addr::from(ip), 8082);
    assert_eq!(on([10, 201, 0, 5]), Some("hello from c1\n".into()));
    assert_eq!(on([10, 201, 0, 1]), Some("hello from c2\n".into()));
    let inspect = host.ferrynet(&["network", "inspect", "blue"]);
    assert!(inspect.contains("10.201.0.5:8082:80/tcp"), "{inspect}");
    host.ferrynet(&["detach", c1.path().to_str().unwrap(), "--network", "blue"]);
    assert_eq!(on([10, 201, 0, 5]), Some("hello from c2\n".into()));
}

/// An Ethernet + IPv4 + UDP frame, as a raw socket sends it.
fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum: u32 = ip
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
        .sum();
    let sum = (sum & 0xffff) + (sum >> 16);
    let csum = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&4000u16.to_be_bytes());
    f.extend_from_slice(&9999u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Which of the frames sent by c1 reach a UDP socket in c2.
fn spoof_round(host: &Host, network: &str) -> Vec<String> {
    let (c1, ep1) = host.container(network, &[]);
    let (c2, ep2) = host.container(network, &[]);
    let (ip1, ip2) = (endpoint_ip(&ep1), endpoint_ip(&ep2));
    // Let ARP settle so that c2 answers to c1's real addresses.
    assert!(c1.ping(&ip2.to_string()));
    let sock = c2.run(|| std::net::UdpSocket::bind("0.0.0.0:9999").unwrap());
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let (mac1, mac2) = (mac_of(&ep1), mac_of(&ep2));
    let forged_ip = Ipv4Addr::new(ip1.octets()[0], ip1.octets()[1], ip1.octets()[2], 250);
    let forged_mac = [0x02, 0x66, 0x66, 0x66, 0x66, 0x66];
    send_raw(&c1, udp_frame(mac1, mac2, ip1, ip2, b"genuine"));
    send_raw(&c1, udp_frame(mac1, mac2, forged_ip, ip2, b"forged-ip"));
    send_raw(&c1, udp_frame(forged_mac, mac2, ip1, ip2, b"forged-mac"));
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    got.sort();
    got
}

#[test]
fn containers_cannot_send_from_an_address_or_mac_not_their_own() {
    let host = Host::new();
    host.create_network("blue", "10.90.0.0/24");
    assert_eq!(spoof_round(&host, "blue"), vec!["genuine".to_string()]);
    // The same frames on a network without the guard: the forged ones get through, which
    // shows the test can see them.
    host.ferrynet(&[
        "network",
        "create",
        "open",
        "--subnet",
        "10.93.0.0/24",
        "--no-anti-spoofing",
    ]);
    assert_eq!(
        spoof_round(&host, "open"),
        vec!["forged-ip", "forged-mac", "genuine"]
    );
}

#[test]
fn bench_quick_harness_runs_and_writes_its_table_json_and_chart() {
    // Correctness of the harness only: timings are not asserted.
    let dir = std::env::temp_dir().join(format!("ferrynet-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Removed also when an assertion below fails.
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _dir = RemoveOnDrop(dir.clone());
    let (json, svg) = (dir.join("b.json"), dir.join("b.svg"));
    let out = sh(std::process::Command::new(BIN)
        .args(["bench", "--quick", "--no-reference", "--json"])
        .arg(&json)
        .arg("--svg")
        .arg(&svg));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dual_stack_rows = [
        "ferrynet attach, dual-stack",
        "ferrynet attach, dual-stack + 1 published port",
        "ferrynet detach, dual-stack",
        "CNI ADD: ferrynet dual-stack",
        "CNI ADD + 1 port: ferrynet dual-stack",
        "CNI DEL: ferrynet dual-stack",
        "CNI DEL + 1 port: ferrynet dual-stack",
    ];
    for row in dual_stack_rows {
        let needle = format!("| {row} |");
        assert!(stdout.contains(&needle), "{needle} missing from:\n{stdout}");
    }
    for needle in [
        "| ferrynet attach |",
        "| floor: same netlink in-process |",
        "| ferrynet trace container → container |",
        // ferrynet's own CNI rows run without the reference plugins too.
        "| CNI ADD: ferrynet |",
        "| CNI ADD + 1 port: ferrynet |",
        "- dual-stack/IPv4 CNI ADD: ",
        "- dual-stack/IPv4 CNI ADD + 1 port: ",
        "- dual-stack/IPv4 attach: ",
        "cross-host pod to pod, vxlan",
        "cross-host pod to pod, bgp",
        // Every cross-host row's reference, and the kernel-alone path beside host-gw and
        // vxlan.
        "| raw underlay (two plain namespaces) |",
        "the same path with the kernel alone (bridges and routes, no ferrynet)",
        "the same path with the kernel alone (bridges and VXLAN, no ferrynet)",
        "- CNI ADD: ferrynet ",
        "cross-host pod to pod, vxlan (IPv6)",
        "cross-host pod to pod, bgp (BIRD, full mesh) (IPv6)",
        "same-host pod to pod (bridge) (IPv6)",
        "convergence, bgp",
        "agent RSS",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
    }
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(rows.as_array().unwrap().len() >= 10);
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for row in dual_stack_rows {
        assert!(
            names.contains(&row),
            "{row} missing from the JSON: {names:?}"
        );
    }
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg"));
    assert!(chart.contains(">CNI ADD: ferrynet dual-stack<"), "{chart}");
    let netns = ok(std::process::Command::new("ip").args(["netns", "list"]));
    assert!(!netns.contains("ferrynet-bench"), "{netns}");
    assert!(
        eventually(5, || !sh(
            std::process::Command::new("pgrep").args(["-f", "bird -c .*ferrynet-bench"])
        )
        .status
        .success()),
        "the bench stopped the BIRDs it started"
    );
}

#[test]
fn networks_on_the_hosts_own_addresses_are_refused_and_change_nothing() {
    let host = Host::new();
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
    host.ns.exec(&["ip", "link", "set", "up0", "up"]);
    host.create_network("blue", "10.90.0.0/24");
    for (subnet, expect) in [
        ("10.60.128.0/24", "invalid subnet \"10.60.128.0/24\": overlaps the host's route 10.60.128.0/24 dev up0, address 10.60.128.1/24"),
        ("10.60.128.64/26", "the host's route 10.60.128.0/24 dev up0"),
        ("10.60.0.0/16", "the host's route 10.60.128.0/24 dev up0"),
        ("0.0.0.0/0", "invalid subnet \"0.0.0.0/0\": is the whole address space"),
        ("127.1.0.0/16", "loopback"),
        ("10.90.0.0/25", "overlaps network \"blue\""),
    ] {
        assert_fails_and_changes_nothing(
            &host,
            &["network", "create", "green", "--subnet", subnet],
            expect,
        );
    }
    for (bridge, expect) in [
        (
            "up0",
            "invalid bridge \"up0\": exists and is a veth device, not a bridge",
        ),
        ("ferry.1", "ferrynet's VXLAN device"),
    ] {
        assert_fails_and_changes_nothing(
            &host,
            &[
                "network",
                "create",
                "green",
                "--subnet",
                "10.91.0.0/24",
                "--bridge",
                bridge,
            ],
            expect,
        );
    }
    assert_fails_and_changes_nothing(
        &host,
        &[
            "network",
            "create",
            "green",
            "--subnet",
            "10.91.0.0/24",
            "--gateway",
            "10.92.0.1",
        ],
        "invalid gateway \"10.92.0.1\": is not a host address of 10.91.0.0/24",
    );
    // The host's own namespace is not a container's.
    let own = host.ns.path();
    assert_fails_and_changes_nothing(
        &host,
        &["attach", own.to_str().unwrap(), "--network", "blue"],
        "is the host's own network namespace",
    );
    let c = Ns::new("c");
    let cp = c.path();
    assert_fails_and_changes_nothing(
        &host,
        &[
            "attach",
            cp.to_str().unwrap(),
            "--network",
            "blue",
            "--ip",
            "10.90.0.1",
        ],
        "reserved (gateway)",
    );
    assert_fails_and_changes_nothing(
        &host,
        &[
            "attach",
            cp.to_str().unwrap(),
            "--network",
            "blue",
            "--mac",
            "01:00:5e:00:00:01",
        ],
        "a multicast address",
    );
    // A network recreated on its own (still present) bridge is no conflict with itself.
    host.ferrynet(&["network", "rm", "blue"]);
    host.ns
        .exec(&["ip", "link", "add", "ferry-blue", "type", "bridge"]);
    host.ns
        .exec(&["ip", "addr", "add", "10.90.0.1/24", "dev", "ferry-blue"]);
    host.ns.exec(&["ip", "link", "set", "ferry-blue", "up"]);
    host.create_network("blue", "10.90.0.0/24");
}

/// attach carries who the endpoint is for network policy (namespace, labels, named ports)
/// in its record, checked before any change; `policy eval` sees this host's endpoints from
/// their records.
#[test]
fn attach_records_the_endpoints_policy_identity() {
    let host = Host::new();
    host.create_network("blue", "10.90.0.0/24");
    let (_a, ep) = host.container(
        "blue",
        &[
            "--namespace",
            "x",
            "--label",
            "pod=a",
            "--port-name",
            "serve-80-tcp=80/tcp",
        ],
    );
    assert_eq!(ep["identity"]["namespace"], "x");
    assert_eq!(ep["identity"]["labels"]["pod"], "a");
    assert_eq!(ep["identity"]["named_ports"][0]["name"], "serve-80-tcp");
    let (b, _) = host.container("blue", &["--namespace", "y", "--label", "pod=b"]);
    let policy = host.state.join("allow.yaml");
    std::fs::write(
        &policy,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-y, namespace: x}\n\
         spec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}\n    ports: [{port: serve-80-tcp}]\n",
    )
    .unwrap();
    host.ferrynet(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    let eval = |port: &str| {
        host.ferrynet(&[
            "policy",
            "eval",
            "--from",
            &format!("y/{}", b.name),
            "--to",
            &format!("x/{}", _a.name),
            "--port",
            port,
        ])
    };
    assert!(eval("80/tcp").starts_with("allow"), "{}", eval("80/tcp"));
    assert!(eval("81/tcp").starts_with("deny"), "{}", eval("81/tcp"));
    // A label change of a running endpoint: no longer selected, so no longer isolated.
    assert_eq!(
        host.ferrynet(&["endpoint", "label", &_a.name, "pod-", "tier=web"]),
        format!("endpoint {}: tier=web\n", _a.name)
    );
    assert!(eval("81/tcp").starts_with("allow"), "{}", eval("81/tcp"));
    // Bad identities are refused by name, before anything changes.
    for (args, expect) in [
        (&["--label", "bad key=1"][..], "bad key"),
        (&["--namespace", "X"][..], "namespace"),
        (&["--port-name", "Serve=80"][..], "Serve"),
    ] {
        let before = host.snapshot();
        let c = Ns::new("c");
        let path = c.path();
        let mut a = vec!["attach", path.to_str().unwrap(), "--network", "blue"];
        a.extend_from_slice(args);
        let out = host.try_ferrynet(&a);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(host.snapshot(), before, "{args:?} changed the host");
    }
}
