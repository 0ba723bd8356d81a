//! Hostile input, as a bounded fuzz run over a corpus kept in the repo (tests/corpus): CNI
//! configurations, CNI_ARGS, CLI arguments and lease values from the store are mutated
//! thousands of times; ferrynet must never panic, and whatever it accepts must be sane.

mod common;

use std::net::Ipv4Addr;

use common::Rng;
use ferrynet::cluster::{routable, BackendKind, ClusterConfig, Lease};
use ferrynet::cni::config::{parse, parse_cni_args, Subnet};
use ipnet::IpNet;

const FRAGMENTS: &[&str] = &[
    "null",
    "[]",
    "{}",
    "\"\"",
    "-1",
    "1e999",
    "0",
    "true",
    "\"auto\"",
    "\"10.0.0.0/33\"",
    "\"../x\"",
    "\"a/b\"",
    "\"0.0.0.0/0\"",
    "\"255.255.255.255\"",
    "65536",
    "\"eth0\"",
    "\"\\u0000\"",
    "[[{}]]",
    "\"::\"",
    "\"::/0\"",
    "\"fe80::/10\"",
    "\"fd00::/129\"",
    "\"ff02::1\"",
    "\"::ffff:10.0.0.1\"",
    "\"fd00::1%eth0\"",
    "[\"10.0.0.0/24\",\"fd00::/64\"]",
    "[\"fd00::/64\",\"fd00:1::/64\"]",
    "[[{\"subnet\":\"fd00::/64\"}],[{\"subnet\":\"10.0.0.0/24\"}]]",
];

/// One mutation of `input`: flip, delete, duplicate, or splice in a JSON fragment.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if v.is_empty() {
            v.push(b'{');
        }
        let at = rng.below(v.len());
        match rng.below(5) {
            0 => v[at] = (rng.next() & 0xff) as u8,
            1 => {
                let end = (at + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            2 => {
                let end = (at + rng.below(16)).min(v.len());
                let copy = v[at..end].to_vec();
                v.splice(at..at, copy);
            }
            3 => {
                // Replace a value after a colon by a fragment.
                if let Some(colon) = v[at..].iter().position(|&b| b == b':') {
                    let start = at + colon + 1;
                    let end = v[start..]
                        .iter()
                        .position(|&b| b == b',' || b == b'}')
                        .map(|p| start + p)
                        .unwrap_or(v.len());
                    let frag = FRAGMENTS[rng.below(FRAGMENTS.len())].as_bytes().to_vec();
                    v.splice(start..end, frag);
                }
            }
            _ => v.truncate(at),
        }
    }
    v
}

fn corpus(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/corpus/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A text seed (CNI_ARGS) without the file's final newline.
fn text_corpus(name: &str) -> Vec<u8> {
    corpus(name).trim_ascii_end().to_vec()
}

fn iterations() -> usize {
    std::env::var("FERRYNET_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

#[test]
fn cni_configurations_never_panic_and_accepted_ones_are_sane() {
    let names = [
        "cni/minimal.json",
        "cni/full.json",
        "cni/ipam.json",
        // Dual-stack and IPv6: a subnet list with IPv6 routes, gateway, host addresses and
        // static addresses of both families; one range set per family; IPv6-only at 0.4.0
        // with a prevResult; host-local with both families.
        "cni/dual.json",
        "cni/ranges6.json",
        "cni/six.json",
        "cni/ipam6.json",
    ];
    let seeds: Vec<Vec<u8>> = names.iter().map(|n| corpus(n)).collect();
    for (name, seed) in names.iter().zip(&seeds) {
        if let Err(e) = parse(seed) {
            panic!("corpus seed {name} must be a valid configuration: {e}");
        }
    }
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let (mut accepted, mut rejected) = (0, 0);
    for i in 0..iterations() {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        match parse(&input) {
            Ok(c) => {
                accepted += 1;
                assert!(!c.name.is_empty());
                assert!(
                    !c.bridge.is_empty() && c.bridge.len() <= 15,
                    "bridge {:?}",
                    c.bridge
                );
                assert!(c.mtu.is_none_or(|m| (576..=65535).contains(&m)));
                if let Subnet::Cidrs(subnets) = &c.subnet {
                    assert!(!subnets.is_empty());
                    assert!(subnets.iter().all(|s| *s == s.trunc()), "{subnets:?}");
                }
                for r in c.routes.iter().flatten() {
                    assert!(
                        r.gw.is_none_or(|gw| gw.is_ipv6() == matches!(r.dst, IpNet::V6(_))),
                        "route {r:?} mixes families"
                    );
                }
                if let Some(ipam) = &c.ipam {
                    let t = ipam["type"].as_str().unwrap_or_default();
                    assert!(!t.contains('/') && !t.contains(".."), "ipam type {t:?}");
                }
            }
            Err(e) => {
                rejected += 1;
                assert!(
                    [1, 2, 6, 7].contains(&e.code),
                    "unexpected code {} for {e}",
                    e.code
                );
                assert!(!e.msg.is_empty());
            }
        }
    }
    assert!(
        accepted > 100 && rejected > 100,
        "{accepted} accepted, {rejected} rejected"
    );
}

#[test]
fn cni_args_never_panic() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // IPv4 (the reference plugins' form), both families in one IP= (podman's), IPv6 only.
    let seeds: Vec<Vec<u8>> = [
        ("cni/args-ipv4.txt", (1, 0)),
        ("cni/args-dual.txt", (1, 1)),
        ("cni/args-ipv6.txt", (0, 1)),
    ]
    .iter()
    .map(|(name, (v4, v6))| {
        let seed = text_corpus(name);
        let ips = parse_cni_args(std::str::from_utf8(&seed).unwrap())
            .unwrap_or_else(|e| panic!("corpus seed {name} must parse: {e}"))
            .ips;
        let families = (
            ips.iter().filter(|ip| ip.is_ipv4()).count(),
            ips.iter().filter(|ip| ip.is_ipv6()).count(),
        );
        assert_eq!(families, (*v4, *v6), "{name}: {ips:?}");
        seed
    })
    .collect();
    for i in 0..iterations() {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        if let Ok(s) = String::from_utf8(input) {
            let _ = parse_cni_args(&s);
        }
    }
}

#[test]
fn hostile_leases_are_never_routed_outside_the_cluster() {
    let cluster = ClusterConfig::v4("10.244.0.0/16".parse().unwrap(), 24, BackendKind::Vxlan);
    let seed = corpus("agent/lease.json");
    let own: Lease = serde_json::from_slice(&seed).unwrap();
    // With IPv6: a dual-stack lease (an IPv4 lease plus IPv6 keys: valid) and an IPv6-only
    // one (a lease needs an IPv4 subnet: it and its mutations must be refused, not panic).
    let seeds = [
        seed.clone(),
        corpus("agent/lease-dual.json"),
        corpus("agent/lease6.json"),
    ];
    assert!(serde_json::from_slice::<Lease>(&seeds[1]).is_ok());
    let own = Lease {
        subnet: "10.244.1.0/24".parse().unwrap(),
        ..own
    };
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let mut routed = 0;
    for i in 0..iterations() {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        let Ok(lease) = serde_json::from_slice::<Lease>(&input) else {
            continue;
        };
        if routable(&cluster, Some(&own), &lease).is_ok() {
            routed += 1;
            assert!(cluster.network.contains(&lease.subnet), "{lease:?}");
            assert_eq!(lease.subnet.prefix_len(), 24);
            assert!(!cluster.network.contains(&lease.attrs.public_ip));
            assert_ne!(lease.attrs.public_ip, Ipv4Addr::UNSPECIFIED);
            assert_ne!(lease.subnet, own.subnet);
        }
    }
    assert!(routed > 0, "some mutations stay valid");
}

#[test]
fn cli_arguments_never_panic() {
    // Arguments that reach validation: every rejection must be an error, not a panic.
    let bad = [
        vec!["network", "create", "x", "--subnet", "10.0.0.0/33"],
        vec![
            "network",
            "create",
            "a-very-long-network-name",
            "--subnet",
            "10.0.0.0/24",
        ],
        vec!["network", "create", "x", "--subnet", "10.0.0.1/24"],
        vec![
            "attach",
            "/nonexistent",
            "--network",
            "x",
            "--ifname",
            "a/b",
        ],
        vec!["attach", "/nonexistent", "--network", "x", "-p", "70000:80"],
        vec![
            "attach",
            "/nonexistent",
            "--network",
            "x",
            "-p",
            "1.2.3.4:80:80/icmp",
        ],
        vec!["agent", "--cluster-cidr", "10.0.0.0/8", "--subnet-len", "4"],
    ];
    let state = std::env::temp_dir().join(format!("ferrynet-fuzz-{}", std::process::id()));
    for args in bad {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrynet"))
            .args(&args)
            .env("FERRYNET_STATE_DIR", &state)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.is_empty());
    }
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn cni_env_values_are_validated_as_the_spec_says() {
    // CNI_CONTAINERID and CNI_IFNAME go through these; whatever they accept must be safe in a
    // file name and a valid Linux interface name.
    let mut rng = Rng(0x0bad_cafe_1234_5678);
    let alphabet: Vec<char> = "aZ09_.-/:\\ \t\n\0é".chars().collect();
    let mut accepted = 0;
    for _ in 0..iterations() {
        let len = rng.below(20);
        let s: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        if ferrynet::network::validate_id("CNI_CONTAINERID", &s).is_ok() {
            accepted += 1;
            assert!(s.chars().next().unwrap().is_ascii_alphanumeric(), "{s:?}");
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
                "{s:?}"
            );
        }
        if ferrynet::network::validate_ifname("CNI_IFNAME", &s).is_ok() {
            assert!(
                !s.is_empty() && s.len() <= 15 && s != "." && s != "..",
                "{s:?}"
            );
            assert!(
                !s.contains(['/', ':']) && !s.chars().any(char::is_whitespace),
                "{s:?}"
            );
            assert!(!s.chars().any(char::is_control), "{s:?}");
        }
    }
    assert!(accepted > 0);
}
