//! An attach or detach killed at any point (kill -9, or an injected abort at every named step)
//! leaves nothing behind once detach has run, on an IPv4 network and on a dual-stack one
//! (IPv6 reservations, IPv6 port and guard elements included). Needs `--features failpoints`.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::*;

const ATTACH_STEPS: &[&str] = &[
    "attach.recorded",
    "attach.allocated",
    "attach.veth",
    "attach.container",
    "attach.host",
    "attach.ports",
];

/// The network a crash test runs on.
struct Net {
    name: &'static str,
    subnets: &'static [&'static str],
    /// The ports every attach publishes (`-p` arguments).
    publish: &'static [&'static str],
    /// kill -9 comes at a random moment up to this long after the spawn.
    max_kill_delay: Duration,
}

const IPV4: Net = Net {
    name: "blue",
    subnets: &["10.90.0.0/24"],
    publish: &["-p", "8080:80"],
    max_kill_delay: Duration::from_micros(8000),
};

/// Dual-stack: the port goes into `ports` and `ports6`, the second one on an IPv6 host address
/// into `ports_ip6`; the guard has IPv6 addresses, ND targets and MACs. An attach takes a few
/// milliseconds longer (IPv6 addresses, routes and elements), so kills may come later.
const DUAL_STACK: Net = Net {
    name: "dual",
    subnets: &["10.90.0.0/24", "fd00:90::/64"],
    publish: &["-p", "8080:80", "-p", "[fd00:201::1]:8081:81/udp"],
    max_kill_delay: Duration::from_micros(14000),
};

/// The state that must come back; the IPAM round-robin cursor (kept in the lock file) may
/// legitimately move. `Host::snapshot` lists IPv4 routes only: IPv6 routes are added here.
fn clean_snapshot(host: &Host) -> String {
    let mut s = host.snapshot();
    s.push_str(&host.ns.exec(&["ip", "-6", "route", "show"]));
    s.lines()
        .filter(|l| !l.contains("/lock:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that the host is as `before`, naming only the lines that differ.
fn assert_unchanged(host: &Host, before: &str, what: &str) {
    let after = clean_snapshot(host);
    if after != before {
        let gone: Vec<&str> = before.lines().filter(|l| !after.contains(l)).collect();
        let new: Vec<&str> = after.lines().filter(|l| !before.contains(l)).collect();
        panic!("{what}: gone {gone:#?}, left behind {new:#?}");
    }
}

fn setup(net: &Net) -> (Host, Ns) {
    let host = Host::new();
    let mut args = vec!["network", "create", net.name];
    for s in net.subnets {
        args.extend(["--subnet", s]);
    }
    host.ferrynet(&args);
    // One settled container, so the state directories exist before the snapshot.
    let (other, ep) = host.container(net.name, &["-p", "9999:80"]);
    assert_eq!(
        ep["ip6"].is_string(),
        net.subnets.len() == 2,
        "dual-stack endpoint: {ep}"
    );
    (host, other)
}

fn attach_args<'a>(net: &'a Net, path: &'a str) -> Vec<&'a str> {
    let mut args = vec!["attach", path, "--network", net.name];
    args.extend_from_slice(net.publish);
    args
}

fn abort_at_every_attach_step(net: &Net) {
    let (host, _other) = setup(net);
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let before = clean_snapshot(&host);
    for step in ATTACH_STEPS {
        let out = host
            .ferrynet_cmd(&attach_args(net, &p))
            .env("FERRYNET_FAILPOINT", step)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{step}: {out:?}");
        host.ferrynet(&["detach", &p, "--network", net.name]);
        assert_unchanged(&host, &before, &format!("leftovers after abort at {step}"));
        // The container can be attached for real afterwards.
        host.ferrynet(&attach_args(net, &p));
        host.ferrynet(&["detach", &p, "--network", net.name]);
    }
}

fn error_at_every_attach_step(net: &Net) {
    let (host, _other) = setup(net);
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let before = clean_snapshot(&host);
    for step in ATTACH_STEPS {
        let out = host
            .ferrynet_cmd(&attach_args(net, &p))
            .env("FERRYNET_FAILPOINT", format!("{step}:error"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{step}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {step}")));
        assert_unchanged(
            &host,
            &before,
            &format!("rollback after error at {step} left something"),
        );
    }
}

fn abort_during_detach(net: &Net) {
    let (host, _other) = setup(net);
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let before = clean_snapshot(&host);
    for step in ["detach.ports", "detach.veth"] {
        host.ferrynet(&attach_args(net, &p));
        let out = host
            .ferrynet_cmd(&["detach", &p, "--network", net.name])
            .env("FERRYNET_FAILPOINT", step)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{step}");
        host.ferrynet(&["detach", &p, "--network", net.name]);
        assert_unchanged(&host, &before, &format!("leftovers after abort at {step}"));
    }
}

fn kill_9_at_random_moments(net: &Net, rounds: u32) {
    let (host, _other) = setup(net);
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let before = clean_snapshot(&host);
    let reserved6 = host.reservations6(net.name);
    let mut seed = std::process::id() as u64;
    for round in 0..rounds {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_micros((seed >> 33) % net.max_kill_delay.as_micros() as u64);
        // Every other round kills a detach of a completed attach instead.
        if round % 2 == 1 {
            host.ferrynet(&attach_args(net, &p));
        }
        let args = if round % 2 == 1 {
            vec!["detach", &p, "--network", net.name]
        } else {
            attach_args(net, &p)
        };
        let mut child = host
            .ferrynet_cmd(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        host.ferrynet(&["detach", &p, "--network", net.name]);
        let what = format!("leftovers after kill -9 at +{delay:?}");
        assert_eq!(host.reservations6(net.name), reserved6, "{what}");
        assert_unchanged(&host, &before, &what);
    }
}

#[test]
fn abort_at_every_attach_step_then_detach_leaves_nothing() {
    abort_at_every_attach_step(&IPV4);
}

#[test]
fn abort_at_every_attach_step_on_a_dual_stack_network_leaves_nothing() {
    abort_at_every_attach_step(&DUAL_STACK);
}

#[test]
fn error_at_every_attach_step_rolls_back_by_itself() {
    error_at_every_attach_step(&IPV4);
}

#[test]
fn error_at_every_attach_step_on_a_dual_stack_network_rolls_back_by_itself() {
    error_at_every_attach_step(&DUAL_STACK);
}

#[test]
fn abort_during_detach_then_detach_again_finishes() {
    abort_during_detach(&IPV4);
}

#[test]
fn abort_during_detach_on_a_dual_stack_network_then_detach_again_finishes() {
    abort_during_detach(&DUAL_STACK);
}

#[test]
fn kill_9_at_random_moments_then_detach_leaves_nothing() {
    kill_9_at_random_moments(&IPV4, 100);
}

#[test]
fn kill_9_on_a_dual_stack_network_then_detach_leaves_nothing() {
    kill_9_at_random_moments(&DUAL_STACK, 50);
}
