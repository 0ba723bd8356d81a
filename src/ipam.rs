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
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::util::{
    create_value_link, ensure_dir, entry_exists, read_value_link, remove_if_exists, FileLock,
};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no free address left in {range}")]
    Exhausted { range: String },
    #[error("address {ip} is already in use (by {owner})")]
    InUse { ip: Ipv4Addr, owner: String },
    #[error("address {ip} is outside the range {range}")]
    OutOfRange { ip: Ipv4Addr, range: String },
    #[error("address {ip} is reserved ({why}) in {range}")]
    Reserved {
        ip: Ipv4Addr,
        why: &'static str,
        range: String,
    },
    #[error("{key} already holds address {ip}")]
    KeyExists { key: String, ip: Ipv4Addr },
    #[error("IPAM state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The addresses a network may hand out: a subnet, optionally narrowed to [start, end], minus
/// the network address, the broadcast address and the gateway.
#[derive(Debug, Clone)]
pub struct Pool {
    pub subnet: Ipv4Net,
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
}

impl Pool {
    pub fn new(subnet: Ipv4Net, gateway: Option<Ipv4Addr>) -> Pool {
        let (start, end) = usable_bounds(subnet);
        Pool {
            subnet,
            start,
            end,
            gateway,
        }
    }

    fn describe(&self) -> String {
        if (self.start, self.end) == usable_bounds(self.subnet) {
            self.subnet.to_string()
        } else {
            format!("{} ({}-{})", self.subnet, self.start, self.end)
        }
    }

    /// Whether `ip` may be handed out: inside the range, not the network, broadcast or gateway.
    pub fn check(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let range = self.describe();
        if !self.subnet.contains(&ip) || ip < self.start || ip > self.end {
            let (lo, hi) = usable_bounds(self.subnet);
            if self.subnet.contains(&ip) && (ip < lo || ip > hi) {
                let why = if ip == self.subnet.network() {
                    "network address"
                } else {
                    "broadcast address"
                };
                return Err(IpamError::Reserved { ip, why, range });
            }
            return Err(IpamError::OutOfRange { ip, range });
        }
        if Some(ip) == self.gateway {
            return Err(IpamError::Reserved {
                ip,
                why: "gateway",
                range,
            });
        }
        Ok(())
    }

    /// How many addresses the pool can hand out.
    pub fn capacity(&self) -> u64 {
        let n = u32::from(self.end) as u64 + 1 - u32::from(self.start) as u64;
        match self.gateway {
            Some(g) if g >= self.start && g <= self.end => n - 1,
            _ => n,
        }
    }
}

/// First and last host address of a subnet (/31 and /32 have no network/broadcast).
fn usable_bounds(subnet: Ipv4Net) -> (Ipv4Addr, Ipv4Addr) {
    let net = u32::from(subnet.network());
    let bcast = u32::from(subnet.broadcast());
    if subnet.prefix_len() >= 31 {
        (Ipv4Addr::from(net), Ipv4Addr::from(bcast))
    } else {
        (Ipv4Addr::from(net + 1), Ipv4Addr::from(bcast - 1))
    }
}

pub struct Ipam {
    dir: PathBuf,
    pool: Pool,
}

impl Ipam {
    pub fn new(dir: &Path, pool: Pool) -> Ipam {
        Ipam {
            dir: dir.to_path_buf(),
            pool,
        }
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

    fn ip_file(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(format!("ip-{ip}"))
    }

    fn key_file(&self, key: &str) -> PathBuf {
        self.dir.join(format!("key-{key}"))
    }

    /// Reserves an address for `key` (`requested`, or the next free one after the last
    /// handed out). A key holds at most one address.
    pub fn allocate(&self, key: &str, requested: Option<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = requested {
            self.pool.check(ip)?;
        }
        self.io(&self.dir, ensure_dir(&self.dir))?;
        let lock = self.lock()?;
        if let Some(ip) = self.lookup(key)? {
            return Err(IpamError::KeyExists {
                key: key.to_string(),
                ip,
            });
        }
        let ip = match requested {
            Some(ip) => {
                if let Some(owner) = self.owner(ip)? {
                    return Err(IpamError::InUse { ip, owner });
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
    fn next_free(&self, cursor: &str) -> Result<Ipv4Addr, IpamError> {
        let start = u32::from(self.pool.start);
        let end = u32::from(self.pool.end);
        let span = end - start + 1;
        let last = cursor
            .parse::<Ipv4Addr>()
            .ok()
            .map(u32::from)
            .filter(|l| *l >= start && *l <= end)
            .unwrap_or(end);
        for i in 1..=span {
            let candidate = Ipv4Addr::from(start + (last - start + i) % span);
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
    pub fn lookup(&self, key: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let p = self.key_file(key);
        let value = self.io(&p, read_value_link(&p))?;
        Ok(value.and_then(|s| s.parse().ok()))
    }

    fn owner(&self, ip: Ipv4Addr) -> Result<Option<String>, IpamError> {
        let p = self.ip_file(ip);
        self.io(&p, read_value_link(&p))
    }

    /// Releases whatever `key` holds. Idempotent: releasing nothing is fine. Returns the
    /// address released.
    pub fn release(&self, key: &str) -> Result<Option<Ipv4Addr>, IpamError> {
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

    fn release_orphans_of(&self, key: &str) -> Result<Option<Ipv4Addr>, IpamError> {
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
    pub fn reservations(&self) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
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
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
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

    fn tmp(name: &str) -> PathBuf {
        let mut r = [0u8; 4];
        crate::util::fill_random(&mut r);
        std::env::temp_dir().join(format!("ferrynet-ipam-{name}-{}", u32::from_ne_bytes(r)))
    }

    fn pool(s: &str) -> Pool {
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
}
