//! The lease semantics every [`Store`] must have, as one suite that each store's tests run
//! (the file store in unit tests, etcd in the integration tests against a real etcd).

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{BackendKind, ClusterConfig, LeaseAttrs, Store, StoreError};

fn attrs(node: &str, last: u8) -> LeaseAttrs {
    LeaseAttrs {
        node: node.into(),
        public_ip: Ipv4Addr::new(10, 200, 0, last),
        backend: BackendKind::Vxlan,
        vtep_mac: None,
        bgp_as: None,
        public_ip6: None,
    }
}

/// Panics on the first broken rule. Expects an empty store.
pub fn lease_semantics(s: &mut dyn Store) {
    let cfg = ClusterConfig::v4("10.244.0.0/16".parse().unwrap(), 24, BackendKind::Vxlan);
    // The first agent writes the configuration; a disagreeing one is refused.
    assert_eq!(s.init_config(&cfg).unwrap(), cfg);
    assert_eq!(s.init_config(&cfg).unwrap(), cfg);
    let other = ClusterConfig {
        subnet_len: 25,
        ..cfg
    };
    assert!(matches!(
        s.init_config(&other),
        Err(StoreError::ConfigMismatch { .. })
    ));

    let ttl = Duration::from_secs(60);
    let a = s.acquire(&cfg, &attrs("a", 11), None, ttl).unwrap();
    let b = s.acquire(&cfg, &attrs("b", 12), None, ttl).unwrap();
    assert_ne!(a.subnet, b.subnet, "distinct subnets");
    // A restarted agent gets its subnet back; a duplicate node name is refused.
    assert_eq!(
        s.acquire(&cfg, &attrs("a", 11), None, ttl).unwrap().subnet,
        a.subnet
    );
    assert!(matches!(
        s.acquire(&cfg, &attrs("a", 99), None, ttl),
        Err(StoreError::DuplicateNode { .. })
    ));
    // A preferred subnet is honoured when free.
    let want = "10.244.77.0/24".parse().unwrap();
    let c = s.acquire(&cfg, &attrs("c", 13), Some(want), ttl).unwrap();
    assert_eq!(c.subnet, want);
    let snap = s.list().unwrap();
    assert_eq!(snap.leases.len(), 3);
    // Changes are seen by a waiter; renewing works while the lease lives.
    s.renew(&a, ttl).unwrap();
    s.release(&c).unwrap();
    let after = s
        .wait_for_change(snap.revision, Duration::from_secs(2))
        .unwrap();
    assert_eq!(after.leases.len(), 2);
    assert!(matches!(s.renew(&c, ttl), Err(StoreError::LeaseLost(_))));
    // A lease that is not renewed expires and frees its subnet.
    let short = s
        .acquire(&cfg, &attrs("d", 14), None, Duration::from_secs(1))
        .unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let live = s.list().unwrap().leases;
    assert!(
        !live.iter().any(|l| l.subnet == short.subnet),
        "expired: {live:?}"
    );
    let e = s
        .acquire(&cfg, &attrs("e", 15), Some(short.subnet), ttl)
        .unwrap();
    assert_eq!(e.subnet, short.subnet);
}
