//! An attach or detach killed at any point (kill -9, or an injected abort at every named step)
//! leaves nothing behind once detach has run. Needs `--features failpoints`.

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

/// The state that must come back; the IPAM round-robin cursor (kept in the lock file) may
/// legitimately move.
fn clean_snapshot(host: &Host) -> String {
    host.snapshot()
        .lines()
        .filter(|l| !l.contains("/lock:"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn setup() -> (Host, Ns) {
    let host = Host::new();
    host.create_network("blue", "10.90.0.0/24");
    // One settled container, so the state directories exist before the snapshot.
    let (other, _) = host.container("blue", &["-p", "9999:80"]);
    (host, other)
}

#[test]
fn abort_at_every_attach_step_then_detach_leaves_nothing() {
    let (host, _other) = setup();
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let before = clean_snapshot(&host);
    for step in ATTACH_STEPS {
        let out = host
            .ferrynet_cmd(&["attach", &p, "--network", "blue", "-p", "8080:80"])
            .env("FERRYNET_FAILPOINT", step)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{step}: {out:?}");
        host.ferrynet(&["detach", &p, "--network", "blue"]);
        assert_eq!(
            clean_snapshot(&host),
            before,
            "leftovers after abort at {step}"
        );
        // The container can be attached for real afterwards.
        host.ferrynet(&["attach", &p, "--network", "blue", "-p", "8080:80"]);
        host.ferrynet(&["detach", &p, "--network", "blue"]);
    }
}

#[test]
fn error_at_every_attach_step_rolls_back_by_itself() {
    let (host, _other) = setup();
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let before = clean_snapshot(&host);
    for step in ATTACH_STEPS {
        let out = host
            .ferrynet_cmd(&["attach", &p, "--network", "blue", "-p", "8080:80"])
            .env("FERRYNET_FAILPOINT", format!("{step}:error"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{step}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {step}")));
        assert_eq!(
            clean_snapshot(&host),
            before,
            "rollback after error at {step} left something"
        );
    }
}

#[test]
fn abort_during_detach_then_detach_again_finishes() {
    let (host, _other) = setup();
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let before = clean_snapshot(&host);
    for step in ["detach.ports", "detach.veth"] {
        host.ferrynet(&["attach", &p, "--network", "blue", "-p", "8080:80"]);
        let out = host
            .ferrynet_cmd(&["detach", &p, "--network", "blue"])
            .env("FERRYNET_FAILPOINT", step)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{step}");
        host.ferrynet(&["detach", &p, "--network", "blue"]);
        assert_eq!(
            clean_snapshot(&host),
            before,
            "leftovers after abort at {step}"
        );
    }
}

#[test]
fn kill_9_at_random_moments_then_detach_leaves_nothing() {
    let (host, _other) = setup();
    let c = Ns::new("c");
    let p = c.path().to_string_lossy().into_owned();
    let before = clean_snapshot(&host);
    let mut seed = std::process::id() as u64;
    for round in 0..100 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_micros((seed >> 33) % 8000);
        // Every other round kills a detach of a completed attach instead.
        if round % 2 == 1 {
            host.ferrynet(&["attach", &p, "--network", "blue", "-p", "8080:80"]);
        }
        let args: &[&str] = if round % 2 == 1 {
            &["detach", &p, "--network", "blue"]
        } else {
            &["attach", &p, "--network", "blue", "-p", "8080:80"]
        };
        let mut child = host
            .ferrynet_cmd(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        host.ferrynet(&["detach", &p, "--network", "blue"]);
        assert_eq!(
            clean_snapshot(&host),
            before,
            "leftovers after kill -9 at +{delay:?}"
        );
    }
}
