//! Address allocation for one network: crash-safe, safe under many concurrent processes, and
//! O(1) per allocation in the number of allocations.
//!
//! On disk, under `<dir>` (one per network), each value stored as a symlink's target, which
//! the kernel creates atomically and exclusively in one syscall:
//! - `ip-<addr>`   the reservation of one address -> the key that owns it;
//! - `key-<key>`   -> the address a key holds (so release never scans);
//! - `lock`        held while allocating or releasing; holds the last address handed out
//!   (the round-robin cursor).
//!
//! So a process killed at any point leaves either a whole reservation or none; a reservation
//! without its key entry (killed between the two) is found by [`Ipam::release`]'s fallback
//! scan or by [`Ipam::gc`]. An allocation costs two symlink() calls, no rename and no scan.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::family::Family;
use crate::util::{
    create_value_link, ensure_dir, entry_exists, read_value_link, remove_if_exists, FileLock,
};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no free address left in {range}")]
    Exhausted { range: String },
    #[error("address {ip} is already in use (by {owner})")]
    InUse { ip: IpAddr, owner: String },
    #[error("address {ip} is outside the range {range}")]
    OutOfRange { ip: IpAddr, range: String },
    #[error("address {ip} is reserved ({why}) in {range}")]
    Reserved {
        ip: IpAddr,
        why: &'static str,
        range: String,
    },
    #[error("{key} already holds address {ip}")]
    KeyExists { key: String, ip: IpAddr },
    #[error("IPAM state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How many addresses past the cursor an allocation looks at before calling the pool full:
/// the whole pool for IPv4, a bound for IPv6 pools (a /64 cannot be probed to the end).
const MAX_PROBES: u128 = 1 << 20;

/// The addresses a network may hand out in one family: a subnet, optionally narrowed to
/// [start, end], minus the network address, the broadcast address (IPv4) and the gateway.
#[derive(Debug, Clone)]
pub struct Pool<A: Family> {
    pub subnet: A::Net,
    pub start: A,
    pub end: A,
    pub gateway: Option<A>,
}

impl<A: Family> Pool<A> {
    pub fn new(subnet: A::Net, gateway: Option<A>) -> Pool<A> {
        let (start, end) = A::usable(subnet);
        Pool {
            subnet,
            start,
            end,
            gateway,
        }
    }

    fn describe(&self) -> String {
        if (self.start, self.end) == A::usable(self.subnet) {
            self.subnet.to_string()
        } else {
            format!("{} ({}-{})", self.subnet, self.start, self.end)
        }
    }

    /// Whether `ip` may be handed out: inside the range, not the network, broadcast or gateway.
    pub fn check(&self, ip: A) -> Result<(), IpamError> {
        let range = self.describe();
        if !A::contains(self.subnet, ip) || ip < self.start || ip > self.end {
            let (lo, hi) = A::usable(self.subnet);
            if A::contains(self.subnet, ip) && (ip < lo || ip > hi) {
                let why = if ip == A::network(self.subnet) {
                    "network address"
                } else {
                    "broadcast address"
                };
                return Err(IpamError::Reserved {
                    ip: ip.into(),
                    why,
                    range,
                });
            }
            return Err(IpamError::OutOfRange {
                ip: ip.into(),
                range,
            });
        }
        if Some(ip) == self.gateway {
            return Err(IpamError::Reserved {
                ip: ip.into(),
                why: "gateway",
                range,
            });
        }
        Ok(())
    }

    /// How many addresses the pool can hand out (saturating for the largest IPv6 pools).
    pub fn capacity(&self) -> u128 {
        let n = (self.end.to_bits() - self.start.to_bits()).saturating_add(1);
        match self.gateway {
            Some(g) if g >= self.start && g <= self.end => n - 1,
            _ => n,
        }
    }
}

pub struct Ipam<A: Family> {
    dir: PathBuf,
    pool: Pool<A>,
}

impl<A: Family> Ipam<A> {
    pub fn new(dir: &Path, pool: Pool<A>) -> Ipam<A> {
        Ipam {
            dir: dir.to_path_buf(),
            pool,
        }
    }

    pub fn subnet(&self) -> A::Net {
        self.pool.subnet
    }

    /// How many addresses the pool can hand out.
    pub fn capacity(&self) -> u128 {
        self.pool.capacity()
    }

    fn io<T>(&self, path: &Path, r: std::io::Result<T>) -> Result<T, IpamError> {
        r.map_err(|source| IpamError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    fn lock(&self) -> Result<FileLock, IpamError> {
        let p = self.dir.join("lock");
        self.io(&p, FileLock::acquire(&p))
    }

    fn ip_file(&self, ip: A) -> PathBuf {
        self.dir.join(format!("ip-{ip}"))
    }

    fn key_file(&self, key: &str) -> PathBuf {
        self.dir.join(format!("key-{key}"))
    }

    /// Reserves an address for `key` (`requested`, or the next free one after the last
    /// handed out). A key holds at most one address.
    pub fn allocate(&self, key: &str, requested: Option<A>) -> Result<A, IpamError> {
        if let Some(ip) = requested {
            self.pool.check(ip)?;
        }
        self.io(&self.dir, ensure_dir(&self.dir))?;
        let lock = self.lock()?;
        if let Some(ip) = self.lookup(key)? {
            return Err(IpamError::KeyExists {
                key: key.to_string(),
                ip: ip.into(),
            });
        }
        let ip = match requested {
            Some(ip) => {
                if let Some(owner) = self.owner(ip)? {
                    return Err(IpamError::InUse {
                        ip: ip.into(),
                        owner,
                    });
                }
                ip
            }
            None => self.next_free(&lock.value())?,
        };
        let ip_path = self.ip_file(ip);
        self.io(&ip_path, create_value_link(&ip_path, key))?;
        let key_path = self.key_file(key);
        if let Err(e) = create_value_link(&key_path, &ip.to_string()) {
            let _ = remove_if_exists(&ip_path);
            return self.io(&key_path, Err(e));
        }
        if requested.is_none() {
            let p = self.dir.join("lock");
            self.io(&p, lock.set_value(&ip.to_string()))?;
        }
        Ok(ip)
    }

    /// Round-robin from the cursor: the just-released address is not handed out again until
    /// the pool wraps. With free addresses after the cursor this probes O(1) files.
    fn next_free(&self, cursor: &str) -> Result<A, IpamError> {
        let start = self.pool.start.to_bits();
        let end = self.pool.end.to_bits();
        let span = (end - start).saturating_add(1);
        let last = cursor
            .parse::<A>()
            .ok()
            .map(A::to_bits)
            .filter(|l| *l >= start && *l <= end)
            .unwrap_or(end);
        for i in 1..=span.min(MAX_PROBES) {
            let candidate = A::from_bits(start + (last - start + i) % span);
            if Some(candidate) == self.pool.gateway {
                continue;
            }
            if !entry_exists(&self.ip_file(candidate)) {
                return Ok(candidate);
            }
        }
        Err(IpamError::Exhausted {
            range: self.pool.describe(),
        })
    }

    /// The address `key` holds, if any.
    pub fn lookup(&self, key: &str) -> Result<Option<A>, IpamError> {
        let p = self.key_file(key);
        let value = self.io(&p, read_value_link(&p))?;
        Ok(value.and_then(|s| s.parse().ok()))
    }

    /// The key holding `ip`, if any.
    pub fn owner(&self, ip: A) -> Result<Option<String>, IpamError> {
        let p = self.ip_file(ip);
        self.io(&p, read_value_link(&p))
    }

    /// Releases whatever `key` holds. Idempotent: releasing nothing is fine. Returns the
    /// address released.
    pub fn release(&self, key: &str) -> Result<Option<A>, IpamError> {
        if !self.dir.exists() {
            return Ok(None);
        }
        let _lock = self.lock()?;
        let key_path = self.key_file(key);
        let released = match self.lookup(key)? {
            Some(ip) => {
                // Only remove the reservation if it is still ours.
                if self.owner(ip)?.as_deref() == Some(key) {
                    let p = self.ip_file(ip);
                    self.io(&p, remove_if_exists(&p))?;
                }
                Some(ip)
            }
            // Killed between the two files of an allocation: find the orphan by its content.
            None => self.release_orphans_of(key)?,
        };
        self.io(&key_path, remove_if_exists(&key_path))?;
        Ok(released)
    }

    fn release_orphans_of(&self, key: &str) -> Result<Option<A>, IpamError> {
        let mut released = None;
        for (ip, owner) in self.reservations()? {
            if owner == key {
                let p = self.ip_file(ip);
                self.io(&p, remove_if_exists(&p))?;
                released = Some(ip);
            }
        }
        Ok(released)
    }

    /// Every reservation: (address, key).
    pub fn reservations(&self) -> Result<Vec<(A, String)>, IpamError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return self.io(&self.dir, Err(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(ip) = name
                .to_str()
                .and_then(|n| n.strip_prefix("ip-"))
                .and_then(|s| s.parse::<A>().ok())
            else {
                continue;
            };
            if let Some(owner) = self.owner(ip)? {
                out.push((ip, owner));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Releases every reservation whose key `keep` rejects. Returns the released keys.
    pub fn gc(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, IpamError> {
        let mut released = Vec::new();
        for (_, key) in self.reservations()? {
            if !keep(&key) {
                self.release(&key)?;
                released.push(key);
            }
        }
        Ok(released)
    }

    /// Removes the whole state of this network (after its last endpoint is gone).
    pub fn destroy(&self) -> Result<(), IpamError> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => self.io(&self.dir, Err(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::{Ipv4Net, Ipv6Net};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn tmp(name: &str) -> PathBuf {
        let mut r = [0u8; 4];
        crate::util::fill_random(&mut r);
        std::env::temp_dir().join(format!("ferrynet-ipam-{name}-{}", u32::from_ne_bytes(r)))
    }

    fn pool(s: &str) -> Pool<Ipv4Addr> {
        let subnet: Ipv4Net = s.parse().unwrap();
        Pool::new(
            subnet,
            Some(Ipv4Addr::from(u32::from(subnet.network()) + 1)),
        )
    }

    #[test]
    fn allocates_round_robin_and_skips_reserved() {
        let dir = tmp("rr");
        let ipam = Ipam::new(&dir, pool("10.90.0.0/29"));
        let a = ipam.allocate("c1:eth0", None).unwrap();
        let b = ipam.allocate("c2:eth0", None).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 90, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 90, 0, 3));
        assert_eq!(ipam.release("c1:eth0").unwrap(), Some(a));
        // The just-freed address is not reused immediately.
        let c = ipam.allocate("c3:eth0", None).unwrap();
        assert_eq!(c, Ipv4Addr::new(10, 90, 0, 4));
        assert!(matches!(
            ipam.allocate("c2:eth0", None),
            Err(IpamError::KeyExists { .. })
        ));
        // Release is idempotent.
        assert_eq!(ipam.release("c1:eth0").unwrap(), None);
        ipam.destroy().unwrap();
    }

    #[test]
    fn exhaustion_static_and_reserved_errors() {
        let dir = tmp("ex");
        let ipam = Ipam::new(&dir, pool("10.90.0.0/30"));
        assert_eq!(
            ipam.allocate("a:eth0", None).unwrap(),
            Ipv4Addr::new(10, 90, 0, 2)
        );
        assert!(matches!(
            ipam.allocate("b:eth0", None),
            Err(IpamError::Exhausted { .. })
        ));
        let ipam = Ipam::new(&dir, pool("10.90.0.0/24"));
        assert!(matches!(
            ipam.allocate("b:eth0", Some(Ipv4Addr::new(10, 90, 0, 2))),
            Err(IpamError::InUse { .. })
        ));
        assert!(matches!(
            ipam.allocate("b:eth0", Some(Ipv4Addr::new(10, 90, 0, 1))),
            Err(IpamError::Reserved { why: "gateway", .. })
        ));
        assert!(matches!(
            ipam.allocate("b:eth0", Some(Ipv4Addr::new(10, 90, 0, 255))),
            Err(IpamError::Reserved { .. })
        ));
        assert!(matches!(
            ipam.allocate("b:eth0", Some(Ipv4Addr::new(10, 91, 0, 5))),
            Err(IpamError::OutOfRange { .. })
        ));
        assert_eq!(
            ipam.allocate("b:eth0", Some(Ipv4Addr::new(10, 90, 0, 77)))
                .unwrap(),
            Ipv4Addr::new(10, 90, 0, 77)
        );
        ipam.destroy().unwrap();
    }

    #[test]
    fn orphan_reservation_is_released_by_key() {
        let dir = tmp("orphan");
        let ipam = Ipam::new(&dir, pool("10.90.0.0/24"));
        let ip = ipam.allocate("c1:eth0", None).unwrap();
        // Simulate a kill between the reservation and the key file.
        fs::remove_file(ipam.key_file("c1:eth0")).unwrap();
        assert_eq!(ipam.release("c1:eth0").unwrap(), Some(ip));
        assert!(ipam.reservations().unwrap().is_empty());
        ipam.destroy().unwrap();
    }

    #[test]
    fn concurrent_allocations_are_distinct() {
        let dir = tmp("conc");
        let p = pool("10.90.0.0/24");
        let ips: Vec<Ipv4Addr> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..40)
                .map(|i| {
                    let (dir, p) = (dir.clone(), p.clone());
                    s.spawn(move || {
                        Ipam::new(&dir, p)
                            .allocate(&format!("c{i}:eth0"), None)
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = ips.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 40);
        Ipam::new(&dir, p).destroy().unwrap();
    }

    #[test]
    fn ipv6_pools_allocate_and_reserve_like_ipv4() {
        let dir = tmp("v6");
        let subnet: Ipv6Net = "fd00:90::/64".parse().unwrap();
        let gw: Ipv6Addr = "fd00:90::1".parse().unwrap();
        let ipam = Ipam::new(&dir, Pool::new(subnet, Some(gw)));
        let a = ipam.allocate("c1:eth0", None).unwrap();
        assert_eq!(a, "fd00:90::2".parse::<Ipv6Addr>().unwrap());
        assert!(matches!(
            ipam.allocate("c2:eth0", Some(gw)),
            Err(IpamError::Reserved { why: "gateway", .. })
        ));
        assert!(matches!(
            ipam.allocate("c2:eth0", Some("fd00:90::".parse().unwrap())),
            Err(IpamError::Reserved {
                why: "network address",
                ..
            })
        ));
        let last: Ipv6Addr = "fd00:90::ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(ipam.allocate("c2:eth0", Some(last)).unwrap(), last);
        assert_eq!(ipam.reservations().unwrap().len(), 2);
        assert_eq!(ipam.lookup("c2:eth0").unwrap(), Some(last));
        assert_eq!(ipam.release("c1:eth0").unwrap(), Some(a));
        assert_eq!(Pool::new(subnet, Some(gw)).capacity(), (1u128 << 64) - 2);
        ipam.destroy().unwrap();
        // A small IPv6 pool runs out like an IPv4 one.
        let tiny: Ipv6Net = "fd00:91::/126".parse().unwrap();
        let tiny_gw: Ipv6Addr = "fd00:91::1".parse().unwrap();
        let ipam = Ipam::new(&dir, Pool::new(tiny, Some(tiny_gw)));
        for key in ["a", "b"] {
            ipam.allocate(key, None).unwrap();
        }
        assert!(matches!(
            ipam.allocate("c", None),
            Err(IpamError::Exhausted { .. })
        ));
        ipam.destroy().unwrap();
    }
}
