//! The namespaces a trace looks into: the host the command runs in, peer hosts named with
//! `--host`, and containers — found by ferrynet's records (id → namespace), by name under
//! /run/netns, or from the kernel (a veth's peer namespace id).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::{nl, TraceError};
use crate::bridge::{Driver, Endpoint};
use crate::cluster::Lease;
use crate::firewall::Firewall;
use crate::netlink::{Handle, Link};
use crate::netns::{Netns, NETNS_RUN_DIR};
use crate::network::StateDir;

/// One host namespace, with the sockets every question goes through.
pub struct HostView {
    /// `host` for the namespace the command runs in, else the namespace's name.
    pub name: String,
    pub ns: Netns,
    pub h: Handle,
    /// `None` when ferrynet has no table there.
    pub fw: Option<Firewall>,
    /// nsid → container namespace path, filled the first time a port's peer is looked up.
    peers: Option<HashMap<i32, PathBuf>>,
}

/// A container namespace and the socket to ask it with.
pub struct Container {
    pub name: String,
    pub path: PathBuf,
    pub ns: Netns,
    pub h: Handle,
    /// Which host view it hangs off (by its interface's peer).
    pub host: usize,
    /// ferrynet's record of it, when the host it hangs off is the local one.
    pub record: Option<Endpoint>,
}

pub struct Hosts {
    pub views: Vec<HostView>,
    pub leases: Option<Vec<Lease>>,
    pub state: StateDir,
}

fn open_in(ns: &Netns) -> Result<(Handle, Option<Firewall>), TraceError> {
    let (h, fw) = ns.run_here(|| {
        let h = Handle::new();
        let fw = Firewall::open().ok().and_then(|mut f| match f.exists() {
            Ok(true) => Some(f),
            _ => None,
        });
        (h, fw)
    })?;
    Ok((
        h.map_err(nl(format!("netlink in {}", ns.path().display())))?,
        fw,
    ))
}

/// `NAME` (under /run/netns) or a path.
pub fn netns_path(s: &Path) -> PathBuf {
    if s.components().count() == 1 {
        Path::new(NETNS_RUN_DIR).join(s)
    } else {
        s.to_path_buf()
    }
}

/// The name under /run/netns of the namespace the command runs in (a test's or demo's host),
/// else `host`.
fn own_name() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(own) = std::fs::metadata("/proc/thread-self/ns/net") else {
        return "host".into();
    };
    std::fs::read_dir(NETNS_RUN_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| {
            e.metadata()
                .is_ok_and(|m| (m.dev(), m.ino()) == (own.dev(), own.ino()))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| "host".into())
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

impl HostView {
    fn open(name: String, path: &Path) -> Result<HostView, TraceError> {
        let ns = Netns::open(path)?;
        let (h, fw) = open_in(&ns)?;
        Ok(HostView {
            name,
            ns,
            h,
            fw,
            peers: None,
        })
    }

    pub fn link(&mut self, index: u32) -> Result<Option<Link>, TraceError> {
        let name = self.name.clone();
        self.h
            .link_by_index(index)
            .map_err(nl(format!("link {index} in {name}")))
    }

    /// Whether `ip` is one of this namespace's own addresses.
    pub fn owns(&mut self, ip: IpAddr) -> Result<Option<u32>, TraceError> {
        let found = match ip {
            IpAddr::V4(a) => self
                .h
                .addrs(None)
                .map(|v| v.iter().find(|x| x.net.addr() == a).map(|x| x.index)),
            IpAddr::V6(a) => self
                .h
                .addrs6(None)
                .map(|v| v.iter().find(|x| x.net.addr() == a).map(|x| x.index)),
        };
        found.map_err(nl("addresses"))
    }

    /// The namespaces under /run/netns this host has an id for (those its veths may lead
    /// to), by that id: asked once per trace.
    fn peers(&mut self) -> &HashMap<i32, PathBuf> {
        if self.peers.is_none() {
            let mut map = HashMap::new();
            if let Ok(entries) = std::fs::read_dir(NETNS_RUN_DIR) {
                for e in entries.flatten() {
                    let path = e.path();
                    let Ok(ns) = Netns::open(&path) else { continue };
                    if let Ok(Some(id)) = self.h.nsid_of(ns.fd()) {
                        map.insert(id, path);
                    }
                }
            }
            self.peers = Some(map);
        }
        self.peers.get_or_insert_with(HashMap::new)
    }

    /// The namespace a veth's peer lives in, from the id this host knows it by.
    pub fn peer_namespace(&mut self, nsid: i32) -> Option<PathBuf> {
        self.peers().get(&nsid).cloned()
    }
}

impl Hosts {
    /// The local host (the command's namespace) first, then the peers in the order given.
    pub fn open(
        peers: &[PathBuf],
        store: Option<&str>,
        state: StateDir,
    ) -> Result<Hosts, TraceError> {
        // With peers the hosts need telling apart: the local one by its name under
        // /run/netns (a scan of that directory, which a single-host trace never pays).
        let name = if peers.is_empty() {
            "host".to_string()
        } else {
            own_name()
        };
        let mut views = vec![HostView::open(name, Path::new("/proc/thread-self/ns/net"))?];
        for p in peers {
            let path = netns_path(p);
            views.push(HostView::open(display_name(&path), &path)?);
        }
        let leases = match store {
            None => None,
            Some(url) => {
                let mut s = crate::cluster::open(url, crate::cluster::DEFAULT_PREFIX, None)
                    .map_err(|e| TraceError::Store(e.to_string()))?;
                Some(
                    s.list()
                        .map_err(|e| TraceError::Store(e.to_string()))?
                        .leases,
                )
            }
        };
        Ok(Hosts {
            views,
            leases,
            state,
        })
    }

    /// The lease whose subnet holds `ip`.
    pub fn lease_of(&self, ip: IpAddr) -> Option<&Lease> {
        self.leases.as_ref()?.iter().find(|l| match ip {
            IpAddr::V4(a) => l.subnet.contains(&a),
            IpAddr::V6(a) => l.subnet6.is_some_and(|n| n.contains(&a)),
        })
    }

    /// The host view holding `ip` as one of its addresses.
    pub fn host_owning(&mut self, ip: IpAddr) -> Result<Option<(usize, u32)>, TraceError> {
        for (i, v) in self.views.iter_mut().enumerate() {
            if let Some(index) = v.owns(ip)? {
                return Ok(Some((i, index)));
            }
        }
        Ok(None)
    }

    /// ferrynet's record of a container by id (every network, any interface; `eth0` first).
    fn record_by_id(&self, id: &str) -> Option<Endpoint> {
        let driver = Driver::new(self.state.clone());
        let networks = std::fs::read_dir(self.state.run_dir().join("endpoints")).ok()?;
        let mut names: Vec<String> = networks
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for net in &names {
            if let Ok(Some(ep)) = driver.endpoint(net, id, "eth0") {
                return Some(ep);
            }
        }
        for net in &names {
            let Ok(entries) = std::fs::read_dir(self.state.endpoints_dir(net)) else {
                continue;
            };
            let prefix = format!("{id}:");
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if let Some(ifname) = file
                    .strip_prefix(&prefix)
                    .and_then(|f| f.strip_suffix(".json"))
                {
                    if let Ok(Some(ep)) = driver.endpoint(net, id, ifname) {
                        return Some(ep);
                    }
                }
            }
        }
        None
    }

    /// A local container holding `ip`, by ferrynet's IPAM reservation (`ip-ADDR` names the
    /// endpoint key `container:ifname`): one lookup per network.
    pub fn container_by_ip(&mut self, ip: IpAddr) -> Result<Option<Container>, TraceError> {
        let Ok(networks) = std::fs::read_dir(self.state.run_dir().join("ipam")) else {
            return Ok(None);
        };
        let mut names: Vec<String> = networks
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let driver = Driver::new(self.state.clone());
        for net in names {
            let dir = self.state.ipam_dir(&net);
            let file = match ip {
                IpAddr::V4(_) => dir.join(format!("ip-{ip}")),
                IpAddr::V6(_) => dir.join("v6").join(format!("ip-{ip}")),
            };
            let Ok(Some(key)) = crate::util::read_value_link(&file) else {
                continue;
            };
            let Some((id, ifname)) = key.rsplit_once(':') else {
                continue;
            };
            if let Ok(Some(ep)) = driver.endpoint(&net, id, ifname) {
                let path = ep.netns.clone();
                return self.container_at(id.to_string(), path, Some(ep)).map(Some);
            }
        }
        Ok(None)
    }

    /// A container of peer host `host` holding `ip` on the interface facing it: every
    /// namespace this host has a veth into is asked (peers have no records here).
    pub fn container_with_addr(
        &mut self,
        host: usize,
        ip: IpAddr,
    ) -> Result<Option<Container>, TraceError> {
        let paths: Vec<PathBuf> = self.views[host].peers().values().cloned().collect();
        for path in paths {
            let Ok(ns) = Netns::open(&path) else { continue };
            let Ok((mut h, _)) = open_in(&ns) else {
                continue;
            };
            let held = match ip {
                IpAddr::V4(a) => h.addrs(None).map(|v| v.iter().any(|x| x.net.addr() == a)),
                IpAddr::V6(a) => h.addrs6(None).map(|v| v.iter().any(|x| x.net.addr() == a)),
            };
            if held.unwrap_or(false) {
                let name = display_name(&path);
                let c = self.container_at(name, path, None)?;
                if c.host == host {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }

    /// A container by id or namespace name: its namespace, and the host it hangs off (the
    /// host whose id for the container's namespace its interface's peer names).
    pub fn container(&mut self, name: &str) -> Result<Container, TraceError> {
        let record = self.record_by_id(name);
        let path = match &record {
            Some(r) => r.netns.clone(),
            None => {
                let p = Path::new(NETNS_RUN_DIR).join(name);
                if !p.exists() {
                    return Err(TraceError::UnknownContainer(name.to_string()));
                }
                p
            }
        };
        self.container_at(name.to_string(), path, record)
    }

    pub fn container_at(
        &mut self,
        name: String,
        path: PathBuf,
        record: Option<Endpoint>,
    ) -> Result<Container, TraceError> {
        let ns = Netns::open(&path)?;
        let (mut h, _) = open_in(&ns)?;
        let ifname = record.as_ref().map_or("eth0", |r| r.ifname.as_str());
        let link = h
            .link_by_name(ifname)
            .map_err(nl(format!("{ifname} in {name}")))?;
        let mut host = 0;
        if let Some(peer_nsid) = link.as_ref().and_then(|l| l.peer_netnsid) {
            for (i, v) in self.views.iter().enumerate() {
                if let Ok(Some(id)) = h.nsid_of(v.ns.fd()) {
                    if id == peer_nsid {
                        host = i;
                        break;
                    }
                }
            }
        }
        // Records describe the local host's containers only.
        let record = record.filter(|_| host == 0);
        let record = match record {
            Some(r) => Some(r),
            None if host == 0 => self.record_by_id(&name),
            None => None,
        };
        Ok(Container {
            name,
            path,
            ns,
            h,
            host,
            record,
        })
    }

    /// The container on the other end of host port `port` of view `host`, if its namespace
    /// can be found. `holds`, an address the container should have, finds it through
    /// ferrynet's IPAM on the local host in one lookup; the kernel must agree (the
    /// container's interface is the port's peer, in the namespace the port names), else
    /// every namespace under /run/netns is asked for its id.
    pub fn container_on_port(
        &mut self,
        host: usize,
        port: &Link,
        holds: Option<IpAddr>,
    ) -> Result<Option<Container>, TraceError> {
        let Some(nsid) = port.peer_netnsid else {
            return Ok(None);
        };
        if let (0, Some(ip)) = (host, holds) {
            if let Some(mut c) = self.container_by_ip(ip)? {
                let ifname = c
                    .record
                    .as_ref()
                    .map_or("eth0", |r| r.ifname.as_str())
                    .to_string();
                let inner = c.h.link_by_name(&ifname).map_err(nl("link"))?;
                let same_ns = self.views[0].h.nsid_of(c.ns.fd()).ok().flatten() == Some(nsid);
                if same_ns && inner.is_some_and(|l| l.peer_index == Some(port.index)) {
                    return Ok(Some(c));
                }
            }
        }
        let Some(path) = self.views[host].peer_namespace(nsid) else {
            return Ok(None);
        };
        let name = display_name(&path);
        let record = if host == 0 {
            self.record_by_id(&name)
        } else {
            None
        };
        self.container_at(name, path, record).map(Some)
    }
}
