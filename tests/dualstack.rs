//! Dual-stack and IPv6-only networks on one host: neighbours by NDP, addresses usable at
//! once, masquerade and published ports over IPv6, isolation, and IPv6 anti-spoofing with raw
//! frames (forged source, router advertisement, neighbour advertisement).

mod common;

use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use common::*;

fn ip6_of(ep: &serde_json::Value) -> Ipv6Addr {
    let s = ep["ip6"].as_str().expect("ip6");
    s.split('/').next().unwrap().parse().unwrap()
}

#[test]
fn dual_stack_containers_find_each_other_by_ndp_with_addresses_usable_at_once() {
    let host = Host::new();
    host.ferrynet(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.90.0.0/24",
        "--subnet",
        "fd00:90::/64",
    ]);
    let (c1, ep1) = host.container("blue", &[]);
    let (c2, ep2) = host.container("blue", &["--ip", "fd00:90::50", "--ip", "10.90.0.50"]);
    assert_eq!(ep2["ip"], "10.90.0.50/24");
    assert_eq!(ep2["ip6"], "fd00:90::50/64");
    assert_eq!(ep1["gateway6"], "fd00:90::1");
    // Right after attach: no tentative address anywhere (no DAD to wait for).
    for c in [&c1, &c2] {
        let addrs = c.exec(&["ip", "-6", "addr", "show", "dev", "eth0"]);
        assert!(!addrs.contains("tentative"), "{addrs}");
        assert!(addrs.contains("fe80::"), "a link-local address: {addrs}");
        let routes = c.exec(&["ip", "-6", "route", "show", "default"]);
        assert!(routes.contains("via fd00:90::1"), "{routes}");
    }
    let bridge = host
        .ns
        .exec(&["ip", "-6", "addr", "show", "dev", "ferry-blue"]);
    assert!(
        bridge.contains("fd00:90::1/64") && !bridge.contains("tentative"),
        "{bridge}"
    );
    let ip2 = ip6_of(&ep2);
    assert!(c1.ping(&ip2.to_string()), "c1 -> c2 over IPv6");
    assert!(c2.ping(&ip6_of(&ep1).to_string()), "c2 -> c1 over IPv6");
    assert!(c1.ping("fd00:90::1"), "c1 -> the gateway");
    assert!(c1.ping("10.90.0.50"), "IPv4 too");
    // The neighbour entry is c2's MAC, learned by NDP across the bridge.
    let neigh = c1.exec(&["ip", "-6", "neigh", "show", &ip2.to_string()]);
    assert!(neigh.contains(ep2["mac"].as_str().unwrap()), "{neigh}");
    // inspect shows both addresses of every endpoint.
    let inspect: serde_json::Value =
        serde_json::from_str(&host.ferrynet(&["network", "inspect", "blue", "--json"])).unwrap();
    assert_eq!(inspect["subnet6"], "fd00:90::/64");
    assert_eq!(inspect["endpoints"][1]["ip6"], "fd00:90::50/64");
    // Detach gives both addresses back.
    for c in [&c1, &c2] {
        host.ferrynet(&["detach", c.path().to_str().unwrap(), "--network", "blue"]);
    }
    assert_eq!(host.reservations("blue"), Vec::<String>::new());
    let v6_left = std::fs::read_dir(host.state.join("run/ipam/blue/v6"))
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with("lock"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(v6_left, 0, "IPv6 reservations left");
    assert!(host.veths().is_empty());
}

#[test]
fn ipv6_only_and_ipv4_only_networks_carry_only_their_family() {
    let host = Host::new();
    host.ferrynet(&["network", "create", "six", "--subnet", "fd00:91::/64"]);
    host.create_network("four", "10.91.0.0/24");
    let (c6, ep6) = host.container("six", &[]);
    assert!(ep6["ip"].is_null(), "{ep6}");
    assert!(c6
        .exec(&["ip", "-4", "addr", "show", "dev", "eth0"])
        .is_empty());
    assert!(c6.ping("fd00:91::1"));
    let (c4, _) = host.container("four", &[]);
    assert_eq!(
        c4.exec(&["ip", "-6", "addr", "show", "dev", "eth0"]),
        "",
        "no IPv6 (not even link-local) on an IPv4 network's container"
    );
    // A static address of a family the network lacks is refused.
    let c = Ns::new("c");
    let out = host.try_ferrynet(&[
        "attach",
        c.path().to_str().unwrap(),
        "--network",
        "four",
        "--ip",
        "fd00:91::9",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is an IPv6 address, and the network has no IPv6 subnet"),
        "{err}"
    );
}

#[test]
fn ipv6_is_masqueraded_and_published_ports_work_over_ipv6() {
    let host = Host::new();
    let world = World::attach_to(&host);
    let (host6, world6) = world.add_ipv6(&host);
    host.ferrynet(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.90.0.0/24",
        "--subnet",
        "fd00:90::/64",
    ]);
    let (c1, ep1) = host.container("blue", &["-p", "8080:80"]);
    // To the outside: the world sees the host's uplink address.
    let ws = server(&world.ns, world6, 7000, "world");
    assert_eq!(fetch(&c1, world6, 7000), Some("hello from world\n".into()));
    assert_eq!(ws.peers(), vec![IpAddr::V6(host6)], "masqueraded");
    // Into the container: one listener on [::]:80 answers both families.
    let _svc = server(&c1, Ipv6Addr::UNSPECIFIED, 80, "c1");
    let hello = Some("hello from c1\n".to_string());
    assert_eq!(fetch(&world.ns, host6, 8080), hello, "from the world, IPv6");
    assert_eq!(
        fetch(&world.ns, world.host_ip, 8080),
        hello,
        "from the world, IPv4"
    );
    let host_side = host.ns.run(|| {
        let ns = host.ns.open();
        ferrynet::probe::fetch(&ns, host6, 8080).unwrap()
    });
    assert_eq!(host_side, hello, "from the host to its own IPv6 address");
    assert_eq!(fetch(&c1, host6, 8080), hello, "hairpin over IPv6");
    // ::1 cannot be DNATed (no route_localnet for IPv6): refused at once, not hung.
    assert_eq!(fetch(&host.ns, Ipv6Addr::LOCALHOST, 8080), None);
    // Detach removes both families' port elements.
    host.ferrynet(&["detach", c1.path().to_str().unwrap(), "--network", "blue"]);
    let ports = host
        .ns
        .exec(&["nft", "list", "map", "inet", "ferrynet", "ports6"]);
    assert!(!ports.contains("elements"), "{ports}");
    let _ = ep1;
}

#[test]
fn a_host_ipv6_address_on_an_ipv4_only_network_is_refused() {
    let host = Host::new();
    host.create_network("four", "10.91.0.0/24");
    let c = Ns::new("c");
    let before = host.snapshot();
    let out = host.try_ferrynet(&[
        "attach",
        c.path().to_str().unwrap(),
        "--network",
        "four",
        "-p",
        "[fd00:201::1]:8080:80",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("IPv6 host address"), "{err}");
    assert_eq!(host.snapshot(), before);
}

#[test]
fn dual_stack_networks_are_isolated_over_ipv6() {
    let host = Host::new();
    host.ferrynet(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.90.0.0/24",
        "--subnet",
        "fd00:90::/64",
    ]);
    host.ferrynet(&[
        "network",
        "create",
        "green",
        "--subnet",
        "10.92.0.0/24",
        "--subnet",
        "fd00:92::/64",
    ]);
    let (b, _) = host.container("blue", &[]);
    let (g, epg) = host.container("green", &[]);
    assert!(b.ping("fd00:90::1"));
    assert!(
        !b.ping(&ip6_of(&epg).to_string()),
        "blue reached green over IPv6"
    );
    assert!(!g.ping("fd00:90::2"), "green reached blue over IPv6");
}

fn csum(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|w| u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32)
        .sum()
}

/// An Ethernet + IPv6 frame carrying `payload` of protocol `next` (checksum filled in at
/// `csum_at` inside the payload, over the IPv6 pseudo-header). ICMPv6 goes with hop limit
/// 255, as neighbour discovery requires.
fn ipv6_frame(
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    mut payload: Vec<u8>,
    csum_at: usize,
) -> Vec<u8> {
    let hop_limit = if next == 58 { 255 } else { 64 };
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, next]);
    let sum = csum(&pseudo) + csum(&payload);
    let sum = (sum & 0xffff) + (sum >> 16);
    let c = !((sum & 0xffff) + (sum >> 16)) as u16;
    payload[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, hop_limit]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&payload);
    f
}

fn udp6(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&4000u16.to_be_bytes());
    p.extend_from_slice(&9999u16.to_be_bytes());
    p.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(data);
    ipv6_frame((src_mac, dst_mac), src, dst, 17, p, 6)
}

const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// A router advertisement from `src` (link-local) to all nodes, router lifetime 1800 s.
fn router_advert(src_mac: [u8; 6], src: Ipv6Addr) -> Vec<u8> {
    let mut p = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(&[1, 1]);
    p.extend_from_slice(&src_mac);
    ipv6_frame(
        (src_mac, ALL_NODES_MAC),
        src,
        "ff02::1".parse().unwrap(),
        58,
        p,
        2,
    )
}

/// A router advertisement with a prefix for SLAAC (fd00:99::/64, autonomous): a container
/// that took it would gain an address in it and a default route via `src`.
fn slaac_advert(src_mac: [u8; 6], src: Ipv6Addr) -> Vec<u8> {
    let mut p = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(&[1, 1]);
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&[3, 4, 64, 0xc0]);
    p.extend_from_slice(&[0, 0, 0x0e, 0x10, 0, 0, 0x0e, 0x10, 0, 0, 0, 0]);
    p.extend_from_slice(&"fd00:99::".parse::<Ipv6Addr>().unwrap().octets());
    ipv6_frame(
        (src_mac, ALL_NODES_MAC),
        src,
        "ff02::1".parse().unwrap(),
        58,
        p,
        2,
    )
}

/// No router advertisement reaches a container, whoever sends it: the host's side of the
/// bridge (a radvd), or a container of a network without anti-spoofing. A container that
/// took one would have a SLAAC address and a default route via a link-local router.
#[test]
fn no_container_takes_a_router_advertisement() {
    let host = Host::new();
    host.ferrynet(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.90.0.0/24",
        "--subnet",
        "fd00:90::/64",
    ]);
    host.ferrynet(&[
        "network",
        "create",
        "open",
        "--subnet",
        "10.92.0.0/24",
        "--subnet",
        "fd00:92::/64",
        "--no-anti-spoofing",
    ]);
    let (c1, _) = host.container("blue", &[]);
    let (c4, _) = host.container("blue", &["--ip", "10.90.0.9"]);
    let (c2, ep2) = host.container("open", &[]);
    let (c3, _) = host.container("open", &[]);
    let bridge_mac: [u8; 6] = {
        let s = host.ns.exec(&["cat", "/sys/class/net/ferry-blue/address"]);
        let b: Vec<u8> = s
            .trim()
            .split(':')
            .map(|x| u8::from_str_radix(x, 16).unwrap())
            .collect();
        b.try_into().unwrap()
    };
    let router: Ipv6Addr = "fe80::1".parse().unwrap();
    for _ in 0..3 {
        send_raw_on(&host.ns, c"ferry-blue", slaac_advert(bridge_mac, router));
        let mac2 = mac_of(&ep2);
        send_raw(&c2, slaac_advert(mac2, "fe80::2".parse().unwrap()));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    for c in [&c1, &c4, &c3] {
        let addrs = c.exec(&["ip", "-6", "addr", "show"]);
        assert!(
            !addrs.contains("fd00:99:"),
            "{}: a SLAAC address: {addrs}",
            c.name
        );
        let routes = c.exec(&["ip", "-6", "route", "show"]);
        assert!(
            !routes.contains("fe80::1") && !routes.contains("fe80::2"),
            "{}: {routes}",
            c.name
        );
        assert!(!routes.contains("fd00:99:"), "{}: {routes}", c.name);
    }
}

/// An unsolicited neighbour advertisement (override) claiming `target` for `mac`.
fn neighbour_advert(src_mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut p = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    p.extend_from_slice(&target.octets());
    p.extend_from_slice(&[2, 1]);
    p.extend_from_slice(&mac);
    ipv6_frame(
        (src_mac, ALL_NODES_MAC),
        src,
        "ff02::1".parse().unwrap(),
        58,
        p,
        2,
    )
}

/// A raw ICMPv6 socket inside `c`: every ICMPv6 message delivered to c, of any type.
fn icmp6_listener(c: &Ns) -> OwnedFd {
    c.run(|| unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6);
        assert!(fd >= 0);
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 500_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        OwnedFd::from_raw_fd(fd)
    })
}

/// The ICMPv6 (type, target or first 16 bytes after the header) messages received so far.
fn icmp6_received(fd: &OwnedFd) -> Vec<(u8, Ipv6Addr)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    loop {
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n <= 0 {
            return out;
        }
        let n = n as usize;
        let target = if n >= 24 {
            Ipv6Addr::from(<[u8; 16]>::try_from(&buf[8..24]).unwrap())
        } else {
            Ipv6Addr::UNSPECIFIED
        };
        out.push((buf[0], target));
    }
}

/// What of c1's forged traffic reaches c2: UDP payloads, and whether the router and the
/// neighbour advertisements arrived.
fn spoof_round6(host: &Host, network: &str) -> Vec<String> {
    let (c1, ep1) = host.container(network, &[]);
    let (c2, ep2) = host.container(network, &[]);
    let (ip1, ip2) = (ip6_of(&ep1), ip6_of(&ep2));
    assert!(c1.ping(&ip2.to_string()));
    let (mac1, mac2) = (mac_of(&ep1), mac_of(&ep2));
    let ll1 = ferrynet::netlink::Mac(mac1).link_local();
    let sock = c2.run(|| std::net::UdpSocket::bind("[::]:9999").unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let icmp = icmp6_listener(&c2);
    let forged_ip: Ipv6Addr = "fd00:93::250".parse().unwrap();
    let gateway: Ipv6Addr = ep1["gateway6"].as_str().unwrap().parse().unwrap();
    let forged_mac = [0x02, 0x66, 0x66, 0x66, 0x66, 0x66];
    send_raw(&c1, udp6(mac1, mac2, ip1, ip2, b"genuine"));
    send_raw(&c1, udp6(mac1, mac2, forged_ip, ip2, b"forged-ip"));
    send_raw(&c1, udp6(forged_mac, mac2, ip1, ip2, b"forged-mac"));
    send_raw(&c1, router_advert(mac1, ll1));
    send_raw(&c1, neighbour_advert(mac1, ip1, gateway, mac1));
    send_raw(&c1, neighbour_advert(mac1, ip1, ip1, mac1));
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    for (kind, target) in icmp6_received(&icmp) {
        match kind {
            134 => got.push("router-advert".into()),
            136 if target == gateway => got.push("na-for-gateway".into()),
            136 if target == ip1 => got.push("na-for-itself".into()),
            _ => {}
        }
    }
    got.sort();
    got.dedup();
    got
}

#[test]
fn containers_cannot_spoof_ipv6_sources_routers_or_neighbours() {
    let host = Host::new();
    host.ferrynet(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.90.0.0/24",
        "--subnet",
        "fd00:93::/64",
    ]);
    assert_eq!(
        spoof_round6(&host, "blue"),
        vec!["genuine", "na-for-itself"],
        "only genuine traffic and a true advertisement pass"
    );
    // Without the guard the same frames arrive: the test can see them.
    host.ferrynet(&[
        "network",
        "create",
        "open",
        "--subnet",
        "fd00:94::/64",
        "--no-anti-spoofing",
    ]);
    let open = spoof_round6(&host, "open");
    for expected in ["forged-ip", "forged-mac", "genuine", "na-for-gateway"] {
        assert!(
            open.contains(&expected.to_string()),
            "{open:?} lacks {expected}"
        );
    }
    // Router advertisements never reach a container, guarded port or not.
    assert!(!open.contains(&"router-advert".to_string()), "{open:?}");
}
