//! Test topology: every test builds its own namespaces (a host, containers, an outside world)
//! with unique names, and removes them when its guards drop, also on panic.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;

use ferrynet::netns::Netns;

pub const BIN: &str = env!("CARGO_BIN_EXE_ferrynet");

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short unique name: tests run in parallel, in several processes.
pub fn unique(role: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("fnt{}-{n}-{role}", std::process::id() % 100_000)
}

pub fn sh(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    out
}

pub fn ok(cmd: &mut Command) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(role: &str) -> Ns {
        let name = unique(role);
        ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Ns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    pub fn exec(&self, args: &[&str]) -> String {
        ok(&mut self.cmd(args))
    }

    /// Whether `ip` answers one of two echo requests: a neighbour's first solicitation may
    /// be lost on a loaded machine, and the kernel retransmits only after a second.
    pub fn ping(&self, ip: &str) -> bool {
        sh(&mut self.cmd(&["ping", "-c2", "-i0.2", "-W1", "-q", ip]))
            .status
            .success()
    }

    pub fn open(&self) -> Netns {
        Netns::open(&self.path()).unwrap()
    }

    /// Runs `f` on a thread inside this namespace (sockets made there belong to it).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.open().run(f).unwrap()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        kill_processes_in(&self.name);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Kills every process left in namespace `name` (daemons a test started there, BIRD among
/// them, would keep it alive) and waits until they are gone.
pub fn kill_processes_in(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return;
    };
    let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for &pid in &pids {
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    eventually(5, || {
        !pids.iter().copied().any(ferrynet::util::process_running)
    });
}

/// A host: its own namespace and ferrynet state directory.
pub struct Host {
    pub ns: Ns,
    pub state: PathBuf,
}

impl Host {
    pub fn new() -> Host {
        let ns = Ns::new("h");
        let state = std::env::temp_dir().join(format!("ferrynet-test-{}", ns.name));
        Host { ns, state }
    }

    pub fn ferrynet_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.ns.cmd(&[BIN]);
        c.args(args).env("FERRYNET_STATE_DIR", &self.state);
        c
    }

    /// Runs ferrynet in the host; panics on failure.
    pub fn ferrynet(&self, args: &[&str]) -> String {
        ok(&mut self.ferrynet_cmd(args))
    }

    pub fn try_ferrynet(&self, args: &[&str]) -> Output {
        sh(&mut self.ferrynet_cmd(args))
    }

    pub fn create_network(&self, name: &str, subnet: &str) {
        self.ferrynet(&["network", "create", name, "--subnet", subnet]);
    }

    /// A new container namespace attached to `network`; returns it with its endpoint JSON.
    pub fn container(&self, network: &str, extra: &[&str]) -> (Ns, serde_json::Value) {
        let c = Ns::new("c");
        let path = c.path();
        let mut args = vec!["attach", path.to_str().unwrap(), "--network", network];
        args.extend_from_slice(extra);
        let out = self.ferrynet(&args);
        (c, serde_json::from_str(&out).expect("endpoint JSON"))
    }

    /// Everything a failed command must leave untouched: links, addresses, routes, nftables,
    /// and the state directory (names and contents).
    pub fn snapshot(&self) -> String {
        let mut s = String::new();
        let links = self.ns.exec(&["ip", "-o", "link", "show"]);
        for l in links.lines() {
            // Drop counters-like noise: keep name, flags, master, state.
            s.push_str(l.split(" link/").next().unwrap_or(l));
            s.push('\n');
        }
        // A test's own interfaces may still finish DAD on their link-local addresses.
        s.push_str(
            &self
                .ns
                .exec(&["ip", "-o", "addr", "show"])
                .replace(" tentative", ""),
        );
        s.push_str(&self.ns.exec(&["ip", "route", "show"]));
        s.push_str(&self.ns.exec(&["nft", "list", "ruleset"]));
        let mut files = Vec::new();
        walk(&self.state, &mut files);
        files.sort();
        for f in files {
            let content = std::fs::read(&f).unwrap_or_default();
            s.push_str(&format!(
                "{}: {}\n",
                f.display(),
                String::from_utf8_lossy(&content)
            ));
        }
        s
    }

    /// Host-side veth ports (names starting with "vf").
    pub fn veths(&self) -> Vec<String> {
        self.ns
            .exec(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .filter(|n| n.starts_with("vf"))
            .collect()
    }

    /// IPAM reservations on disk for a network.
    pub fn reservations(&self, network: &str) -> Vec<String> {
        let dir = self.state.join("run").join("ipam").join(network);
        match std::fs::read_dir(dir) {
            Ok(e) => e
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ip-") || n.starts_with("key-"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn port_elements(&self) -> String {
        let out = sh(&mut self
            .ns
            .cmd(&["nft", "list", "map", "inet", "ferrynet", "ports"]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("elements"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push(p.clone());
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // First the daemons that write into the state directory (BIRD).
        kill_processes_in(&self.ns.name);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// An outside world behind the host's uplink: world 10.201.0.2, host 10.201.0.1.
pub struct World {
    pub ns: Ns,
    pub host_ip: Ipv4Addr,
    pub ip: Ipv4Addr,
}

impl World {
    pub fn attach_to(host: &Host) -> World {
        let ns = Ns::new("w");
        // Interface names live inside the test's own namespaces: no need to make them unique.
        host.ns.exec(&[
            "ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "wan0", "netns",
            &ns.name,
        ]);
        host.ns
            .exec(&["ip", "addr", "add", "10.201.0.1/24", "dev", "uplink0"]);
        host.ns.exec(&["ip", "link", "set", "uplink0", "up"]);
        ns.exec(&["ip", "addr", "add", "10.201.0.2/24", "dev", "wan0"]);
        ns.exec(&["ip", "link", "set", "wan0", "up"]);
        World {
            ns,
            host_ip: Ipv4Addr::new(10, 201, 0, 1),
            ip: Ipv4Addr::new(10, 201, 0, 2),
        }
    }
}

pub use ferrynet::probe::Server;

/// Connects from inside `ns` and returns what the server said (None if unreachable).
pub fn fetch(ns: &Ns, ip: impl Into<std::net::IpAddr>, port: u16) -> Option<String> {
    ferrynet::probe::fetch(&ns.open(), ip, port).unwrap()
}

pub fn server(ns: &Ns, ip: impl Into<std::net::IpAddr>, port: u16, name: &str) -> Server {
    Server::start(&ns.open(), ip, port, name).unwrap()
}

pub fn endpoint_ip(ep: &serde_json::Value) -> Ipv4Addr {
    let s = ep["ip"].as_str().expect("ip");
    s.split('/').next().unwrap().parse().unwrap()
}

/// An underlay L2 segment: a namespace holding a bridge that hosts plug into.
pub struct Fabric {
    pub ns: Ns,
}

impl Fabric {
    pub fn new() -> Fabric {
        let ns = Ns::new("f");
        ns.exec(&["ip", "link", "add", "fab0", "type", "bridge"]);
        ns.exec(&["ip", "link", "set", "fab0", "up"]);
        Fabric { ns }
    }

    /// Plugs `host` in: its `eth0` gets `ip`/24 on this segment.
    pub fn plug(&self, host: &Host, ip: &str, port: &str) {
        self.ns.exec(&[
            "ip",
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &host.ns.name,
        ]);
        self.ns
            .exec(&["ip", "link", "set", port, "master", "fab0", "up"]);
        host.ns
            .exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        host.ns.exec(&["ip", "link", "set", "eth0", "up"]);
    }
}

/// Runs the ferrynet CNI plugin in `host` for `container`; returns the result JSON.
pub fn cni_add(host: &Host, container: &Ns, conf: &serde_json::Value) -> serde_json::Value {
    cni_add_with_args(host, container, conf, "")
}

/// [`cni_add`] with `CNI_ARGS` (e.g. `K8S_POD_NAMESPACE=x;K8S_POD_NAME=a`, as Kubernetes
/// sends them).
pub fn cni_add_with_args(
    host: &Host,
    container: &Ns,
    conf: &serde_json::Value,
    cni_args: &str,
) -> serde_json::Value {
    use std::io::Write;
    let mut child = host
        .ns
        .cmd(&[BIN])
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", &container.name)
        .env("CNI_NETNS", container.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env("CNI_ARGS", cni_args)
        .env("FERRYNET_STATE_DIR", &host.state)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ADD failed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls `f` until it holds or `secs` pass.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `ping -i INTERVAL` running in the background; `stop` returns (sent, received). Killed if
/// dropped without `stop` (a failed assert).
pub struct ContinuousPing {
    child: Option<std::process::Child>,
}

impl ContinuousPing {
    pub fn start(ns: &Ns, target: &str, interval: &str) -> ContinuousPing {
        ContinuousPing::from_command(ns.cmd(&["ping", "-i", interval, "-W", "1", "-q", target]))
    }

    /// `cmd` is a `ping -q` (e.g. under `nsenter` in a namespace that is not an [`Ns`]).
    pub fn from_command(mut cmd: Command) -> ContinuousPing {
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        ContinuousPing { child: Some(child) }
    }

    pub fn stop(mut self) -> (u64, u64) {
        let child = self.child.take().expect("running");
        // SIGINT makes ping print its summary.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("transmitted"))
            .unwrap_or_default();
        let num = |word: &str| -> u64 {
            line.split(',')
                .find(|p| p.contains(word))
                .and_then(|p| p.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (num("transmitted"), num("received"))
    }
}

impl Drop for ContinuousPing {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An agent process in a host; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Agent {
    pub child: Option<Child>,
}

impl Agent {
    pub fn start(host: &Host, store: &Path, backend: &str, node: &str, extra: &[&str]) -> Agent {
        Agent::start_with_env(host, store, backend, node, extra, &[])
    }

    pub fn start_with_env(
        host: &Host,
        store: &Path,
        backend: &str,
        node: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let mut args = vec![
            "agent",
            "--store",
            &format!("file:{}", store.display()),
            "--cluster-cidr",
            "10.244.0.0/16",
            "--backend",
            backend,
            "--iface",
            "eth0",
            "--node-name",
            node,
            "--lease-ttl",
            "6s",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.push("--subnet-file".into());
        args.push(subnet_file(host).to_string_lossy().into_owned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        std::fs::create_dir_all(&host.state).unwrap();
        let log = std::fs::File::create(host.state.join(format!("agent-{node}.log"))).unwrap();
        let child = host
            .ferrynet_cmd(&argv)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let agent = Agent { child: Some(child) };
        assert!(
            eventually(10, || subnet_file(host).exists()),
            "agent on {node} wrote no subnet file"
        );
        agent
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        if let Some(mut c) = self.child.take() {
            if !eventually(5, || matches!(c.try_wait(), Ok(Some(_)))) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

pub fn subnet_file(host: &Host) -> PathBuf {
    host.state.join("subnet.env")
}

pub fn leased_subnet(host: &Host) -> String {
    std::fs::read_to_string(subnet_file(host))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("FERRYNET_SUBNET=").map(str::to_string))
        .unwrap()
}

/// A CNI configuration for the pods of `host`: its subnet is the agent's lease.
pub fn pod_conf(host: &Host) -> serde_json::Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "pods",
        "type": "ferrynet",
        "bridge": "fypods0",
        "subnet": "auto",
        "subnetFile": subnet_file(host).to_string_lossy(),
    })
}

pub fn ip_of(result: &serde_json::Value) -> Ipv4Addr {
    result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A router namespace joining `fabrics` (its interface on each gets the given address/len),
/// forwarding between them.
pub fn router(fabrics: &[(&Fabric, &str)]) -> Ns {
    let router = Ns::new("r");
    for (i, (f, ip)) in fabrics.iter().enumerate() {
        let port = format!("r{i}");
        f.ns.exec(&[
            "ip",
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            &router.name,
        ]);
        f.ns.exec(&["ip", "link", "set", &port, "master", "fab0", "up"]);
        router.exec(&["ip", "link", "set", "up0", "name", &port]);
        router.exec(&["ip", "addr", "add", ip, "dev", &port]);
        router.exec(&["ip", "link", "set", &port, "up"]);
    }
    router.exec(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
    router
}

/// Two fabrics behind `router`'s 10.200.0.1 and 10.210.0.1: hosts 0 and 1 go on the first,
/// the others on the second, at 10.2x0.0.(11 + i), with a default route via the router.
/// Returns the host's address and gateway.
pub fn plug_routed(f1: &Fabric, f2: &Fabric, host: &Host, i: usize) -> (String, &'static str) {
    let (f, net, gw) = if i < 2 {
        (f1, "10.200.0", "10.200.0.1")
    } else {
        (f2, "10.210.0", "10.210.0.1")
    };
    let ip = format!("{net}.{}", 11 + i);
    f.plug(host, &ip, &format!("p{i}"));
    host.ns.exec(&["ip", "route", "add", "default", "via", gw]);
    (ip, gw)
}

/// One container per host, through the CNI plugin; returns each with its address.
pub fn pods_on(hosts: &[Host]) -> Vec<(Ns, Ipv4Addr)> {
    hosts
        .iter()
        .map(|h| {
            let ns = Ns::new("c");
            let r = cni_add(h, &ns, &pod_conf(h));
            (ns, ip_of(&r))
        })
        .collect()
}

/// A container on `from` and one on `to`, through the CNI plugin; returns both and the
/// second's address once the first reaches it.
pub fn pod_pair(from: &Host, to: &Host) -> (Ns, Ns, String) {
    let a = Ns::new("c");
    let b = Ns::new("c");
    cni_add(from, &a, &pod_conf(from));
    let target = ip_of(&cni_add(to, &b, &pod_conf(to))).to_string();
    assert!(
        eventually(30, || a.ping(&target)),
        "{} cannot reach {target}",
        a.name
    );
    (a, b, target)
}

/// Per-container elements in ferrynet's tables, by table family: the published-port maps and
/// the anti-spoofing sets (a network's own sets, `bridges`, `subnets`..., are not among them).
pub const CONTAINER_SETS: &[(&str, &[&str])] = &[
    ("inet", &["ports", "ports_ip", "ports6", "ports_ip6"]),
    (
        "bridge",
        &[
            "ports",
            "port_macs",
            "port_ips",
            "ports6",
            "port_ips6",
            "nd_targets",
            "nd_macs",
        ],
    ),
];

impl Host {
    /// IPv6 reservations on disk for a network: every entry of `run/ipam/NET/v6` but its lock.
    pub fn reservations6(&self, network: &str) -> Vec<String> {
        let dir = self.state.join("run/ipam").join(network).join("v6");
        let mut names: Vec<String> = match std::fs::read_dir(dir) {
            Ok(e) => e
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock")
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }

    /// The elements of every set and map in ferrynet's table of `family` (`inet`, `bridge`),
    /// by name; sets without elements are left out, and no table means no elements.
    pub fn nft_elements(&self, family: &str) -> std::collections::BTreeMap<String, String> {
        let out = sh(&mut self.ns.cmd(&["nft", "list", "table", family, "ferrynet"]));
        let mut sets = std::collections::BTreeMap::new();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("No such file or directory"),
                "nft list table {family} ferrynet: {err}"
            );
            return sets;
        }
        let (mut name, mut elements): (String, Option<String>) = (String::new(), None);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let t = line.trim();
            if let Some(rest) = t.strip_prefix("set ").or_else(|| t.strip_prefix("map ")) {
                name = rest.trim_end_matches('{').trim().to_string();
            }
            let text = match (t.strip_prefix("elements = {"), elements.take()) {
                (Some(first), _) => first.to_string(),
                (None, Some(so_far)) => format!("{so_far} {t}"),
                (None, None) => continue,
            };
            match text.strip_suffix('}') {
                Some(all) => {
                    sets.insert(name.clone(), all.trim().to_string());
                }
                None => elements = Some(text),
            }
        }
        sets
    }

    /// Every per-container element left in the host's ferrynet tables ([`CONTAINER_SETS`]),
    /// as `"family set: elements"`; empty when no container's port or guard is left.
    pub fn container_elements(&self) -> Vec<String> {
        let mut left = Vec::new();
        for (family, names) in CONTAINER_SETS {
            let sets = self.nft_elements(family);
            for name in *names {
                if let Some(e) = sets.get(*name) {
                    left.push(format!("{family} {name}: {e}"));
                }
            }
        }
        left
    }
}

/// Sends `frame` out of the container's eth0 through an AF_PACKET socket (the frame's own
/// EtherType tells the kernel the protocol).
pub fn send_raw(c: &Ns, frame: Vec<u8>) {
    send_raw_on(c, c"eth0", frame)
}

/// Sends one raw Ethernet frame out of interface `ifname` of `ns`.
pub fn send_raw_on(c: &Ns, ifname: &'static std::ffi::CStr, frame: Vec<u8>) {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    c.run(move || unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            (libc::ETH_P_ALL as u16).to_be() as i32,
        );
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ethertype.to_be();
        addr.sll_ifindex = libc::if_nametoindex(ifname.as_ptr()) as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        let n = libc::sendto(
            fd,
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            0,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(n, frame.len() as isize);
        libc::close(fd);
    });
}

/// An endpoint JSON's MAC as bytes.
pub fn mac_of(ep: &serde_json::Value) -> [u8; 6] {
    let m: Vec<u8> = ep["mac"]
        .as_str()
        .unwrap()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    m.try_into().unwrap()
}

impl World {
    /// IPv6 between the world and the host's uplink too (no DAD: usable at once): returns
    /// (the host's address, the world's).
    pub fn add_ipv6(&self, host: &Host) -> (std::net::Ipv6Addr, std::net::Ipv6Addr) {
        host.ns.exec(&[
            "ip",
            "addr",
            "add",
            "fd00:201::1/64",
            "dev",
            "uplink0",
            "nodad",
        ]);
        self.ns.exec(&[
            "ip",
            "addr",
            "add",
            "fd00:201::2/64",
            "dev",
            "wan0",
            "nodad",
        ]);
        (
            "fd00:201::1".parse().unwrap(),
            "fd00:201::2".parse().unwrap(),
        )
    }
}

/// A small deterministic generator (xorshift64) for the fuzz passes: a seed reproduces a run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}
