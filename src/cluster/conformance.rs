//! The lease and object semantics every [`Store`] must have, as one suite that each store's tests run
//! (the file store in unit tests, etcd in the integration tests against a real etcd).

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{BackendKind, ClusterConfig, Collection, LeaseAttrs, Store, StoreError};

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

/// Objects beside the leases: put, get, list, read-modify-write, delete, names checked.
/// Expects no objects in the store.
pub fn object_semantics(s: &mut dyn Store) {
    let (c, other) = (Collection::Endpoints, Collection::Namespaces);
    assert!(s.list_objects(c).unwrap().items.is_empty());
    s.put_object(c, "c1", r#"{"host":"h1"}"#).unwrap();
    s.put_object(c, "c2", r#"{"host":"h2"}"#).unwrap();
    s.put_object(other, "c1", r#"{"labels":{}}"#).unwrap();
    let value = |s: &mut dyn Store, name| {
        s.get_object(c, name)
            .unwrap()
            .map(|v| serde_json::from_str::<serde_json::Value>(&v).unwrap())
    };
    assert_eq!(value(s, "c1"), Some(serde_json::json!({"host": "h1"})));
    let before = s.list_objects(c).unwrap();
    assert_eq!(before.items.keys().collect::<Vec<_>>(), ["c1", "c2"]);
    // Read-modify-write sees the current value; an error changes nothing.
    let written = s
        .update_object(c, "c1", &mut |current| {
            assert!(current.unwrap().contains("h1"));
            Ok(Some(r#"{"host":"h3"}"#.into()))
        })
        .unwrap();
    assert!(written.unwrap().contains("h3"));
    let refused = s.update_object(c, "c2", &mut |_| Err(StoreError::NotFound("x".into())));
    assert!(matches!(refused, Err(StoreError::NotFound(_))));
    assert_eq!(value(s, "c2"), Some(serde_json::json!({"host": "h2"})));
    assert!(s.list_objects(c).unwrap().revision != before.revision);
    // Deleting says whether the object was there; collections are separate.
    assert!(s.delete_object(c, "c1").unwrap());
    assert!(!s.delete_object(c, "c1").unwrap());
    assert_eq!(value(s, "c1"), None);
    assert!(s.get_object(other, "c1").unwrap().is_some());
    // Path-like names are fine, escapes are not.
    s.put_object(c, "networkpolicy/x/web", "{}").unwrap();
    assert!(s.get_object(c, "networkpolicy/x/web").unwrap().is_some());
    for bad in ["", "a//b", "../x", "a b", "x/."] {
        assert!(
            matches!(
                s.put_object(c, bad, "{}"),
                Err(StoreError::BadObjectName(_))
            ),
            "{bad:?}"
        );
    }
    for name in ["c2", "networkpolicy/x/web"] {
        s.delete_object(c, name).unwrap();
    }
    s.delete_object(other, "c1").unwrap();
}
