//! The real Docker daemon (Debian's docker.io 20.10) drives ferrynet as its network plugin:
//! `docker network create -d NAME` makes a ferrynet network, `docker run` containers on it
//! are ferrynet endpoints. dockerd, its containerd and `ferrynet docker-plugin` run inside the
//! test's host namespace and in one private mount namespace with its own tmpfs on /run, so
//! /run/docker/plugins, /run/containerd and Docker's netns files never touch the machine's
//! /run, and nothing of the root namespace changes (recipe: ../shared/DESIGN.md, "Docker").

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferrynet::netns::Netns;

const DOCKER: &str = "/usr/bin/docker";

/// dockerd + the plugin in `host`, torn down (containers, daemons, mount namespace, cgroups,
/// files) on drop, also after a failed assertion.
struct Docker {
    dir: PathBuf,
    /// The plugin's (= the driver's) name: unique, /run/docker/plugins is per mount namespace
    /// here but the name also keys Docker's own state.
    name: String,
    cgroup: String,
    state: PathBuf,
    /// Where the host's agent (if any) writes its lease.
    subnet_file: PathBuf,
    /// `sleep` holding the private mount namespace (tmpfs on /run) in the host's netns.
    holder: Child,
    dockerd: Option<Child>,
    plugin: Option<Child>,
    /// Plugin logs of earlier runs (restarts), kept for a failure's report.
    plugin_runs: u32,
    /// Docker's own bridge network and iptables rules instead of none.
    native: bool,
}

impl Docker {
    fn start(host: &Host) -> Docker {
        Docker::start_as(host, false)
    }

    /// `native`: dockerd with its own bridge driver and iptables on (`docker0` and its rules
    /// live in the host's namespace), the reference the benchmark compares with.
    fn start_as(host: &Host, native: bool) -> Docker {
        let name = unique("dk");
        let dir = std::env::temp_dir().join(format!("ferrynet-docker-{name}"));
        let rootfs = dir.join("rootfs");
        for sub in ["bin", "etc", "www"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "sleep", "ping", "ping6", "httpd", "wget", "ip", "cat", "nslookup", "nc", "true",
        ] {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
        std::fs::write(rootfs.join("www/index.html"), "hello from docker\n").unwrap();
        std::fs::write(
            dir.join("daemon.json"),
            format!(
                r#"{{"deprecated-key-path": "{}"}}"#,
                dir.join("key.json").display()
            ),
        )
        .unwrap();
        let holder = Command::new("nsenter")
            .arg(format!("--net={}", host.ns.path().display()))
            .args(["--", "unshare", "--mount", "--propagation", "private", "--"])
            .args([
                "sh",
                "-c",
                "mount -t tmpfs tmpfs /run && exec sleep 1000000",
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut d = Docker {
            cgroup: name.clone(),
            name,
            dir,
            state: host.state.clone(),
            subnet_file: subnet_file(host),
            holder,
            dockerd: None,
            plugin: None,
            plugin_runs: 0,
            native,
        };
        let comm = format!("/proc/{}/comm", d.holder.id());
        assert!(
            wait_for(Duration::from_secs(5), || std::fs::read_to_string(&comm)
                .is_ok_and(|c| c.trim() == "sleep")),
            "the mount namespace holder did not start"
        );
        // The plugin first: a driver whose socket is missing stalls Docker 15 s per call.
        d.start_plugin();
        d.start_dockerd();
        let import = format!(
            "tar -C {} -c . | {DOCKER} -H unix://{} import -c 'CMD [\"/bin/sh\"]' -c 'ENV PATH=/bin' - busybox",
            rootfs.display(),
            d.dir.join("docker.sock").display()
        );
        ok(Command::new("sh")
            .args(["-c", &import])
            .env("DOCKER_CONFIG", d.dir.join("client")));
        d
    }

    fn start_plugin(&mut self) {
        self.start_plugin_with(&[]);
    }

    /// The plugin with extra environment (a failpoint).
    fn start_plugin_with(&mut self, env: &[(&str, &str)]) {
        assert!(self.plugin.is_none());
        self.plugin_runs += 1;
        let log = std::fs::File::create(self.dir.join(format!("plugin.{}.log", self.plugin_runs)))
            .unwrap();
        let sock = self.plugin_socket();
        // A socket left by a killed plugin: wait for the new one's.
        let _ = std::fs::remove_file(&sock);
        self.plugin = Some(
            self.enter()
                .env("FERRYNET_STATE_DIR", &self.state)
                .envs(env.iter().copied())
                .args([BIN, "docker-plugin", "--name", &self.name])
                .args(["--docker-host", &self.docker_host()])
                .arg("--subnet-file")
                .arg(&self.subnet_file)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        assert!(
            wait_for(Duration::from_secs(10), || {
                std::os::unix::net::UnixStream::connect(&sock).is_ok()
            }),
            "the plugin's socket {} did not appear",
            sock.display()
        );
    }

    /// SIGKILL: a crash, the socket file stays.
    fn kill_plugin(&mut self) {
        let mut p = self.plugin.take().expect("plugin running");
        p.kill().unwrap();
        p.wait().unwrap();
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    fn start_dockerd(&mut self) {
        assert!(self.dockerd.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .unwrap();
        let p = |s: &str| self.dir.join(s).display().to_string();
        let dockerd = self
            .enter()
            .arg("dockerd")
            .args(["--config-file", &p("daemon.json")])
            .args(["-H", &self.docker_host()])
            .args(["--data-root", &p("data"), "--exec-root", &p("exec")])
            .args(["--pidfile", &p("docker.pid")])
            .args(match self.native {
                false => &[
                    "--bridge=none",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--ip-forward=false",
                    "--ip-masq=false",
                    "--userland-proxy=false",
                ][..],
                true => &["--ip6tables=false", "--userland-proxy=false"][..],
            })
            .args(["--exec-opt", "native.cgroupdriver=cgroupfs"])
            .args(["--storage-driver", "overlay2"])
            .args(["--cgroup-parent", &format!("/{}", self.cgroup)])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.dockerd = Some(dockerd);
        assert!(
            wait_for(Duration::from_secs(20), || self
                .docker_cmd(&["version"])
                .output()
                .is_ok_and(|o| o.status.success())),
            "dockerd did not come up"
        );
    }

    /// SIGTERM: dockerd stops its containers (Leave, DeleteEndpoint) and exits.
    fn stop_dockerd(&mut self) {
        let mut dockerd = self.dockerd.take().expect("dockerd running");
        terminate(&mut dockerd, Duration::from_secs(20));
    }

    /// A command inside the daemon's namespaces (the host's netns, the private mounts).
    fn enter(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.args([
            "-t",
            &self.holder.id().to_string(),
            "--mount",
            "--net",
            "--",
        ])
        .stdin(Stdio::null());
        c
    }

    fn plugin_socket(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/root/run/docker/plugins/{}.sock",
            self.holder.id(),
            self.name
        ))
    }

    fn docker_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["30", DOCKER, "-H", &self.docker_host()])
            .args(args)
            .env("DOCKER_CONFIG", self.dir.join("client"))
            .stdin(Stdio::null());
        c
    }

    fn docker(&self, args: &[&str]) -> String {
        ok(&mut self.docker_cmd(args)).trim().to_string()
    }

    fn try_docker(&self, args: &[&str]) -> bool {
        sh(&mut self.docker_cmd(args)).status.success()
    }

    /// A failing docker command's stderr; panics if it succeeds.
    fn docker_err(&self, args: &[&str]) -> String {
        let out = sh(&mut self.docker_cmd(args));
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        stderr
    }

    /// `docker network create -d OURS ARGS... NAME`; returns the id.
    fn network(&self, name: &str, args: &[&str]) -> String {
        let mut all = vec!["network", "create", "-d", &self.name];
        all.extend_from_slice(args);
        all.push(name);
        self.docker(&all)
    }

    /// `docker run -d --name NAME OPTS... busybox CMD...`.
    fn run(&self, name: &str, opts: &[&str], cmd: &[&str]) {
        let mut all = vec!["run", "-d", "--name", name];
        all.extend_from_slice(opts);
        all.push("busybox");
        all.extend_from_slice(cmd);
        self.docker(&all);
    }

    fn exec(&self, container: &str, cmd: &[&str]) -> String {
        let mut all = vec!["exec", container];
        all.extend_from_slice(cmd);
        self.docker(&all)
    }

    fn container_ip(&self, container: &str, network: &str) -> String {
        self.inspect_net(container, network, "IPAddress")
    }

    fn inspect_net(&self, container: &str, network: &str, field: &str) -> String {
        self.docker(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").{field}}}}}"),
            container,
        ])
    }

    /// The container's network namespace, seen from the test (through its init's pid).
    fn netns(&self, container: &str) -> Netns {
        let pid = self.docker(&["inspect", "-f", "{{.State.Pid}}", container]);
        Netns::open(Path::new(&format!("/proc/{pid}/ns/net"))).unwrap()
    }

    /// Whether `from` gets an echo reply from `to` within `secs` (a first ARP may be lost).
    fn pings(&self, from: &str, to: &str, secs: u64) -> bool {
        eventually(secs, || {
            self.try_docker(&["exec", from, "ping", "-c1", "-W1", to])
        })
    }

    /// Stops everything, in order: containers, dockerd, the plugin, any process left in the
    /// test's cgroup or mount namespace; then the cgroups and files. Idempotent.
    fn stop(&mut self) {
        if let Some(mut dockerd) = self.dockerd.take() {
            if matches!(dockerd.try_wait(), Ok(None)) {
                let ids = sh(&mut self.docker_cmd(&["ps", "-aq"]));
                let ids = String::from_utf8_lossy(&ids.stdout).to_string();
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm", "-f"];
                    args.extend(ids);
                    let _ = sh(&mut self.docker_cmd(&args));
                }
            }
            terminate(&mut dockerd, Duration::from_secs(10));
        }
        if let Some(mut plugin) = self.plugin.take() {
            terminate(&mut plugin, Duration::from_secs(5));
        }
        let cgroup = format!("/{}/", self.cgroup);
        kill_where(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.lines().any(|l| l.contains(&cgroup)))
        });
        let mnt = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        if let Some(ours) = mnt(&self.holder.id().to_string()) {
            kill_where(|pid| pid != self.holder.id().to_string() && mnt(pid) == Some(ours.clone()));
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        // Docker's cgroupfs driver leaves the (empty) parent in every hierarchy.
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let parent = h.path().join(&self.cgroup);
                if let Ok(children) = std::fs::read_dir(&parent) {
                    for c in children.flatten().filter(|c| c.path().is_dir()) {
                        let _ = std::fs::remove_dir(c.path());
                    }
                    let _ = std::fs::remove_dir(&parent);
                }
            }
        }
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let mut logs = vec!["dockerd.log".to_string()];
            logs.extend((1..=self.plugin_runs).map(|i| format!("plugin.{i}.log")));
            for log in logs {
                let text = std::fs::read_to_string(self.dir.join(&log)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- {} {log} (last lines) ---", self.name);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then SIGKILL after `grace`.
fn terminate(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(None)) {
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        if !wait_for(grace, || !matches!(child.try_wait(), Ok(None))) {
            let _ = child.kill();
        }
    }
    let _ = child.wait();
}

/// SIGKILLs every process `pick(pid)` selects, and waits until they are gone.
fn kill_where(pick: impl Fn(&str) -> bool) {
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
                .filter(|p| pick(p))
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for &pid in &pids {
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    wait_for(Duration::from_secs(5), || {
        !pids.iter().copied().any(ferrynet::util::process_running)
    });
}

/// `GET /index.html` from inside `ns`; the whole answer, None if unreachable.
fn http_get(ns: &Netns, addr: impl Into<IpAddr>, port: u16) -> Option<String> {
    let addr = SocketAddr::new(addr.into(), port);
    ns.run(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        Some(buf)
    })
    .unwrap()
}

/// Whether `GET` from `ns` reaches busybox httpd's page within a few seconds.
fn serves_page(ns: &Netns, addr: impl Into<IpAddr>, port: u16) -> bool {
    let addr = addr.into();
    eventually(5, || {
        http_get(ns, addr, port).is_some_and(|r| r.contains("hello from docker"))
    })
}

/// A UDP echo server on `port` inside `ns`, for as long as the returned socket lives
/// (busybox has no UDP server): the thread ends when the socket is closed by a timeout.
fn udp_echo(ns: &Netns, port: u16) -> std::thread::JoinHandle<()> {
    let sock = ns
        .run(move || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], peer);
        }
    })
}

/// Sends a datagram from `ns` to `addr:port` and waits for its echo.
fn udp_roundtrip(ns: &Netns, addr: impl Into<IpAddr>, port: u16) -> bool {
    let addr = SocketAddr::new(addr.into(), port);
    ns.run(move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 64];
        (0..6).any(|_| {
            sock.send_to(b"ping", addr).is_ok()
                && sock
                    .recv_from(&mut buf)
                    .is_ok_and(|(n, _)| &buf[..n] == b"ping")
        })
    })
    .unwrap()
}

fn nft_elements(host: &Host) -> Vec<String> {
    host.ns
        .exec(&["nft", "list", "ruleset"])
        .lines()
        .filter(|l| l.contains("elements"))
        .map(str::to_string)
        .collect()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

/// State files but locks: what a host with no ferrynet network keeps.
fn state_files(host: &Host) -> Vec<String> {
    files_under(&host.state)
        .into_iter()
        .filter(|f| !f.ends_with(".lock") && !f.ends_with("/lock"))
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Panics with the lines that differ when a host snapshot changed.
fn assert_same(before: &str, after: &str, what: &str) {
    if before != after {
        let (b, a): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
        let gone: Vec<&&str> = b.iter().filter(|l| !a.contains(l)).collect();
        let new: Vec<&&str> = a.iter().filter(|l| !b.contains(l)).collect();
        panic!("{what} changed the host: gone {gone:#?}, new {new:#?}");
    }
}

/// The ferrynet network `name` from `ferrynet network ls --json`, waiting a little: the
/// plugin learns a Docker network's name from the daemon just after creating it.
fn ferrynet_network(host: &Host, name: &str) -> serde_json::Value {
    let mut nets = serde_json::Value::Null;
    let mut found = None;
    eventually(5, || {
        nets = serde_json::from_str(&host.ferrynet(&["network", "ls", "--json"])).unwrap();
        found = nets
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .cloned();
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("network {name} not in {nets}"))
}

/// The host-side link whose ifindex is `index`, as `ip -o link` shows it.
fn host_link(host: &Host, index: &str) -> String {
    let ls = host.ns.exec(&["ip", "-o", "link", "show"]);
    ls.lines()
        .find(|l| l.starts_with(&format!("{index}: ")))
        .unwrap_or_else(|| panic!("no link {index} in the host:\n{ls}"))
        .to_string()
}

#[test]
fn docker_containers_talk_reach_out_and_publish_ports() {
    let started = Instant::now();
    let host = Host::new();
    let world = World::attach_to(&host);
    let mut docker = Docker::start(&host);
    let (ca, cb) = (format!("{}-a", docker.name), format!("{}-b", docker.name));

    let id = docker.network("blue", &["--subnet", "10.90.0.0/24"]);
    // The Docker network is a ferrynet network, under its Docker name.
    let net = ferrynet_network(&host, "blue");
    let inspect = host.ferrynet(&["network", "inspect", "blue"]);
    assert!(inspect.contains("10.90.0.0/24"), "{inspect}");
    let ls = host.ferrynet(&["network", "ls"]);
    assert!(
        ls.lines().all(|l| !l.starts_with(&id[..12])),
        "the id stays the name: {ls}"
    );
    assert_eq!(net["subnet"], "10.90.0.0/24");
    assert_eq!(net["gateway"], "10.90.0.1");
    let bridge = net["bridge"].as_str().unwrap().to_string();

    docker.run(
        &ca,
        &["--network", "blue", "--network-alias", "web-a"],
        &["sleep", "600"],
    );
    docker.run(
        &cb,
        &["--network", "blue", "-p", "8080:80", "-p", "5353:53/udp"],
        &["httpd", "-f", "-p", "80", "-h", "/www"],
    );
    let (ip_a, ip_b) = (
        docker.container_ip(&ca, "blue"),
        docker.container_ip(&cb, "blue"),
    );
    assert!(ip_a.starts_with("10.90.0.") && ip_b.starts_with("10.90.0."));
    assert_eq!(docker.inspect_net(&ca, "blue", "Gateway"), "10.90.0.1");

    // By IP, by name and by alias (Docker's embedded DNS), both ways.
    assert!(docker.pings(&ca, &ip_b, 5), "{ca} cannot ping {ip_b}");
    assert!(docker.pings(&cb, &ip_a, 5), "{cb} cannot ping {ip_a}");
    assert!(docker.pings(&ca, &cb, 5), "{ca} cannot ping {cb} by name");
    assert!(docker.pings(&cb, &ca, 5), "{cb} cannot ping {ca} by name");
    assert!(
        docker.pings(&cb, "web-a", 5),
        "{cb} cannot ping alias web-a"
    );

    // The container's eth0 is one end of a veth whose other end is a port of the bridge,
    // with the MAC derived from the address, and its neighbour found by ARP on the bridge.
    for (c, ip) in [(&ca, &ip_a), (&cb, &ip_b)] {
        let iflink = docker.exec(c, &["cat", "/sys/class/net/eth0/iflink"]);
        let line = host_link(&host, &iflink);
        assert!(
            line.contains(&format!("master {bridge} "))
                && line.split(": ").nth(1).unwrap().starts_with("vf"),
            "{c}'s peer is not a ferrynet port of {bridge}: {line}"
        );
        let mac = docker.exec(c, &["cat", "/sys/class/net/eth0/address"]);
        let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
        assert_eq!(mac, format!("02:42:0a:5a:00:{last:02x}"), "{c}'s MAC");
    }
    let neigh = docker.exec(&ca, &["ip", "neigh", "show", &ip_b]);
    assert!(neigh.contains("lladdr 02:42:0a:5a:00:"), "{neigh}");
    assert_eq!(host.veths().len(), 2);
    assert_eq!(
        host.reservations("blue").len(),
        4,
        "two addresses, by ip and by key"
    );

    // Network policy covers Docker's endpoints (namespace `default`, no labels): a default
    // deny of ingress stops cb's pings to ca; once it is gone they pass again.
    let deny = host.state.join("deny.yaml");
    std::fs::write(
        &deny,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: default}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    )
    .unwrap();
    host.ferrynet(&["policy", "apply", "-f", deny.to_str().unwrap()]);
    assert!(
        !docker.try_docker(&["exec", &cb, "ping", "-c1", "-W1", &ip_a]),
        "default deny: {cb} still pings {ip_a}"
    );
    host.ferrynet(&["policy", "rm", "default/deny"]);
    assert!(docker.pings(&cb, &ip_a, 5), "the policy is gone");
    // The policy store (the embedded one, under the state directory) is the test's, not
    // the network's: the end of the test checks that nothing of the network is left.
    for f in [deny, host.state.join("cluster.json")] {
        std::fs::remove_file(f).unwrap();
    }

    // Out to the world, masqueraded to the host's uplink address.
    let ns_a = docker.netns(&ca);
    let srv = server(&world.ns, world.ip, 7000, "world");
    let reply = ferrynet::probe::fetch(&ns_a, world.ip, 7000).unwrap();
    assert_eq!(reply.as_deref(), Some("hello from world\n"));
    assert_eq!(
        srv.peers(),
        vec![IpAddr::from(world.host_ip)],
        "not masqueraded"
    );
    drop(srv);

    // -p 8080:80 from the world, from the host (its addresses and 127.0.0.1), hairpin from
    // the neighbour and from the container itself; -p 5353:53/udp likewise.
    let ns_b = docker.netns(&cb);
    let world_ns = world.ns.open();
    let host_ns = host.ns.open();
    let uplink = IpAddr::from(world.host_ip);
    let gw: IpAddr = "10.90.0.1".parse().unwrap();
    let lo = IpAddr::from(Ipv4Addr::LOCALHOST);
    for (who, ns, addr) in [
        ("world", &world_ns, uplink),
        ("host", &host_ns, uplink),
        ("host", &host_ns, gw),
        ("host", &host_ns, lo),
        ("neighbour (hairpin)", &ns_a, uplink),
        ("itself (hairpin)", &ns_b, uplink),
    ] {
        assert!(serves_page(ns, addr, 8080), "{who} -> {addr}:8080/tcp");
    }
    let page = docker.exec(&ca, &["wget", "-qO-", "http://10.201.0.1:8080/"]);
    assert_eq!(page, "hello from docker");
    let echo = udp_echo(&ns_b, 53);
    for (who, ns, addr) in [
        ("world", &world_ns, uplink),
        ("host", &host_ns, uplink),
        ("neighbour (hairpin)", &ns_a, uplink),
    ] {
        assert!(udp_roundtrip(ns, addr, 5353), "{who} -> {addr}:5353/udp");
    }
    let ports = host
        .nft_elements("inet")
        .remove("ports")
        .unwrap_or_default();
    assert!(
        ports.contains("tcp . 8080") && ports.contains("udp . 5353"),
        "{ports}"
    );

    // A second container cannot take a host port in use: a Docker error, nothing left.
    let before = (
        host.veths(),
        host.reservations("blue"),
        host.container_elements(),
    );
    let cc = format!("{}-c", docker.name);
    let stderr = docker.docker_err(&[
        "run",
        "-d",
        "--name",
        &cc,
        "--network",
        "blue",
        "-p",
        "8080:80",
        "busybox",
        "sleep",
        "600",
    ]);
    assert!(stderr.contains("8080"), "{stderr}");
    let after = (
        host.veths(),
        host.reservations("blue"),
        host.container_elements(),
    );
    assert_eq!(after, before, "a refused port left something");
    assert!(
        serves_page(&world_ns, uplink, 8080),
        "the first owner lost 8080"
    );
    docker.docker(&["rm", "-f", &cc]);

    // Removing the containers and the network leaves nothing behind.
    docker.docker(&["rm", "-f", &cb]);
    assert!(host.port_elements().is_empty(), "{}", host.port_elements());
    assert!(!udp_roundtrip(&world_ns, uplink, 5353));
    drop(echo);
    docker.docker(&["rm", "-f", &ca]);
    assert!(host.veths().is_empty(), "veths left: {:?}", host.veths());
    assert!(host.reservations("blue").is_empty());
    assert!(
        host.container_elements().is_empty(),
        "{:?}",
        host.container_elements()
    );
    docker.docker(&["network", "rm", "blue"]);
    assert!(nft_elements(&host).is_empty(), "{:?}", nft_elements(&host));
    assert!(!host.ferrynet(&["network", "ls"]).contains("blue"));
    assert!(
        !host
            .ns
            .exec(&["ip", "-o", "link", "show"])
            .contains(&bridge),
        "bridge {bridge} left"
    );
    assert!(
        state_files(&host).is_empty(),
        "state left: {:?}",
        state_files(&host)
    );

    // And the harness leaves no process, mount, namespace or cgroup behind.
    let dir = docker.dir.display().to_string();
    let (cgroup, holder) = (docker.cgroup.clone(), docker.holder.id());
    docker.stop();
    drop(docker);
    drop((ns_a, ns_b, world_ns, host_ns));
    drop(world);
    let host_name = host.ns.name.clone();
    drop(host);
    let procs = sh(Command::new("pgrep").args(["-f", &dir]));
    assert!(
        procs.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&procs.stdout)
    );
    assert!(!ferrynet::util::process_running(holder as i32));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir), "mounts left under {dir}");
    assert!(!ok(Command::new("ip").args(["netns", "list"])).contains(&host_name));
    assert!(!Path::new("/sys/fs/cgroup/pids").join(&cgroup).exists());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// The host ports ferrynet's record of a Docker container's endpoint on `network` publishes,
/// as (host port, container port, protocol): Docker 20.10 shows a remote driver's ports
/// nowhere (see the README), ferrynet's records do.
fn chosen_ports(host: &Host, docker: &Docker, c: &str, network: &str) -> Vec<(u16, u16, String)> {
    let ep = docker.inspect_net(c, network, "EndpointID");
    let net: serde_json::Value =
        serde_json::from_str(&host.ferrynet(&["network", "inspect", network, "--json"])).unwrap();
    let rec = net["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["container_id"] == ep.as_str())
        .unwrap_or_else(|| panic!("no endpoint {ep} in {net}"));
    rec["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["host_port"].as_u64().unwrap() as u16,
                p["container_port"].as_u64().unwrap() as u16,
                p["protocol"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn docker_random_host_ports() {
    let host = Host::new();
    let world = World::attach_to(&host);
    let mut docker = Docker::start(&host);
    let name = docker.name.clone();
    let c = |s: &str| format!("{name}-{s}");
    let (ca, cb, cc, cd) = (c("a"), c("b"), c("c"), c("d"));
    docker.network("blue", &["--subnet", "10.93.0.0/24"]);
    // Docker's bridge takes `-p 80`'s host port from the kernel's ephemeral range of the
    // daemon's namespace (per namespace: the host's here).
    let range = host
        .ns
        .exec(&["cat", "/proc/sys/net/ipv4/ip_local_port_range"]);
    let mut it = range.split_whitespace().map(|n| n.parse::<u16>().unwrap());
    let (lo, hi) = (it.next().unwrap(), it.next().unwrap());
    let httpd = ["httpd", "-f", "-p", "80", "-h", "/www"];
    docker.run(&ca, &["--network", "blue", "-p", "80"], &httpd);
    docker.run(
        &cb,
        &["--network", "blue", "-p", "80", "-p", "53/udp"],
        &httpd,
    );
    // -P: every exposed port without a binding gets one.
    docker.run(&cc, &["--network", "blue", "--expose", "80", "-P"], &httpd);
    let pa = chosen_ports(&host, &docker, &ca, "blue");
    let pb = chosen_ports(&host, &docker, &cb, "blue");
    let pc = chosen_ports(&host, &docker, &cc, "blue");
    let tcp = |ports: &[(u16, u16, String)]| {
        let t: Vec<u16> = ports
            .iter()
            .filter(|p| p.1 == 80 && p.2 == "tcp")
            .map(|p| p.0)
            .collect();
        assert_eq!(t.len(), 1, "{ports:?}");
        t[0]
    };
    let (a, b, cport) = (tcp(&pa), tcp(&pb), tcp(&pc));
    let bu = pb
        .iter()
        .find(|p| p.2 == "udp")
        .expect("53/udp published")
        .0;
    for p in [a, b, cport, bu] {
        assert!((lo..=hi).contains(&p), "{p} outside {lo}-{hi}");
    }
    assert!(a != b && b != cport && a != cport, "{a} {b} {cport}");
    // What Docker itself shows of them (nothing, in 20.10: see the README).
    let shown = docker.docker(&["port", &ca]);
    assert!(
        shown.is_empty() || shown.contains(&format!(":{a}")),
        "docker port {ca}: {shown}"
    );
    eprintln!("docker port {ca} (chose {a}): {shown:?}");

    // Reachable on the chosen ports from the world, the host and hairpin.
    let world_ns = world.ns.open();
    let host_ns = host.ns.open();
    let (ns_a, ns_b) = (docker.netns(&ca), docker.netns(&cb));
    let uplink = IpAddr::from(world.host_ip);
    let local = IpAddr::from(Ipv4Addr::LOCALHOST);
    for (who, ns, addr, port) in [
        ("world", &world_ns, uplink, a),
        ("world", &world_ns, uplink, b),
        ("world", &world_ns, uplink, cport),
        ("host", &host_ns, uplink, a),
        ("host", &host_ns, local, a),
        ("neighbour (hairpin)", &ns_b, uplink, a),
        ("itself (hairpin)", &ns_a, uplink, a),
    ] {
        assert!(serves_page(ns, addr, port), "{who} -> {addr}:{port}/tcp");
    }
    let echo = udp_echo(&ns_b, 53);
    assert!(udp_roundtrip(&world_ns, uplink, bu), "world -> {bu}/udp");
    drop(echo);

    // A restarted plugin knows the chosen ports (they are in the table and the records):
    // the next choice avoids them, and the endpoints keep theirs.
    docker.kill_plugin();
    docker.start_plugin();
    docker.run(&cd, &["--network", "blue", "-p", "80"], &httpd);
    let d = tcp(&chosen_ports(&host, &docker, &cd, "blue"));
    assert!(![a, b, cport].contains(&d), "{d} was taken already");
    assert!(serves_page(&world_ns, uplink, d), "world -> {d}");
    assert!(serves_page(&world_ns, uplink, a), "{ca} lost {a}");

    // A range: one free port of it each, then a Docker error naming it, nothing left.
    let (ce, cf, cg) = (c("e"), c("f"), c("g"));
    let range_opts = ["--network", "blue", "-p", "8000-8001:80"];
    docker.run(&ce, &range_opts, &httpd);
    docker.run(&cf, &range_opts, &httpd);
    let mut got = [
        tcp(&chosen_ports(&host, &docker, &ce, "blue")),
        tcp(&chosen_ports(&host, &docker, &cf, "blue")),
    ];
    got.sort();
    assert_eq!(got, [8000, 8001]);
    let before = (
        host.veths(),
        host.reservations("blue"),
        host.container_elements(),
    );
    let mut args = vec!["run", "-d", "--name", &cg];
    args.extend_from_slice(&range_opts);
    args.extend_from_slice(&["busybox", "sleep", "600"]);
    let stderr = docker.docker_err(&args);
    assert!(
        stderr.contains("no free host port left in 8000-8001"),
        "{stderr}"
    );
    docker.docker(&["rm", "-f", &cg]);
    let after = (
        host.veths(),
        host.reservations("blue"),
        host.container_elements(),
    );
    assert_eq!(after, before, "a refused range left something");

    // docker rm -f removes a chosen port's element; the others stay.
    docker.docker(&["rm", "-f", &ca]);
    let ports = host.port_elements();
    assert!(
        !ports.contains(&format!("tcp . {a} ")),
        "{a} left in {ports}"
    );
    assert!(http_get(&world_ns, uplink, a).is_none(), "{a} still served");
    assert!(serves_page(&world_ns, uplink, b), "{cb} lost {b}");
    docker.docker(&["rm", "-f", &cb, &cc, &cd, &ce, &cf]);
    assert!(host.port_elements().is_empty(), "{}", host.port_elements());
    docker.docker(&["network", "rm", "blue"]);
    assert!(nft_elements(&host).is_empty(), "{:?}", nft_elements(&host));
    assert!(host.veths().is_empty(), "{:?}", host.veths());
    assert!(state_files(&host).is_empty(), "{:?}", state_files(&host));
}

#[test]
fn docker_bad_options_are_docker_errors_and_change_nothing() {
    let host = Host::new();
    let docker = Docker::start(&host);
    // A network ferrynet made itself, whose subnet a Docker network must not take.
    host.create_network("taken", "10.92.0.0/24");
    let before = host.snapshot();
    let refused = |opts: &[&str], needle: &str| {
        let mut args = vec!["network", "create", "-d", &docker.name];
        args.extend_from_slice(opts);
        args.push("red");
        let stderr = docker.docker_err(&args);
        assert!(stderr.contains(needle), "{opts:?}: {stderr}");
        assert_same(&before, &host.snapshot(), &format!("{opts:?}"));
        assert!(!docker.docker(&["network", "ls"]).contains(" red "));
    };
    let sub = ["--subnet", "10.91.0.0/24"];
    refused(
        &[&sub[..], &["-o", "ferrynet.mtu=big"]].concat(),
        "invalid option ferrynet.mtu=\"big\"",
    );
    refused(
        &[&sub[..], &["-o", "ferrynet.mtu=100"]].concat(),
        "invalid option ferrynet.mtu=\"100\"",
    );
    refused(
        &[&sub[..], &["-o", "ferrynet.colour=red"]].concat(),
        "unknown option ferrynet.colour",
    );
    refused(
        &[&sub[..], &["-o", "ferrynet.masquerade=maybe"]].concat(),
        "invalid option ferrynet.masquerade",
    );
    refused(&["--subnet", "10.92.0.128/25"], "10.92.0.0/24");
    refused(
        &["--subnet", "10.91.0.0/24", "--subnet", "10.91.1.0/24"],
        "at most one IPv4",
    );

    // An exhausted pool: a /30 has room for one container; the second is refused, and
    // nothing of it stays.
    // Named like a ferrynet network that exists: the Docker network keeps its id as its
    // ferrynet name.
    let id = docker.network("taken", &["--subnet", "10.93.0.0/30"]);
    let c1 = format!("{}-1", docker.name);
    let c2 = format!("{}-2", docker.name);
    docker.run(&c1, &["--network", "taken"], &["sleep", "600"]);
    assert_eq!(ferrynet_network(&host, &id[..12])["subnet"], "10.93.0.0/30");
    assert_eq!(ferrynet_network(&host, "taken")["subnet"], "10.92.0.0/24");
    let before = host.snapshot();
    let stderr = docker.docker_err(&[
        "run",
        "-d",
        "--name",
        &c2,
        "--network",
        "taken",
        "busybox",
        "sleep",
        "600",
    ]);
    assert!(stderr.contains("no available"), "{stderr}");
    assert_same(&before, &host.snapshot(), "a refused container");
    docker.docker(&["rm", "-f", &c1, &c2]);
    docker.docker(&["network", "rm", "taken"]);
    assert!(host.veths().is_empty());
}

/// `ping -i 0.1` from the container's namespace (the host's iputils ping, via nsenter).
fn ping_from(docker: &Docker, container: &str, target: &str) -> ContinuousPing {
    let pid = docker.docker(&["inspect", "-f", "{{.State.Pid}}", container]);
    let mut cmd = Command::new("nsenter");
    cmd.args([
        "-t", &pid, "--net", "--", "ping", "-i", "0.1", "-W", "1", "-q", target,
    ]);
    ContinuousPing::from_command(cmd)
}

#[test]
fn docker_containers_survive_plugin_and_daemon_restarts() {
    let host = Host::new();
    let mut docker = Docker::start(&host);
    let (ca, cb, cc) = (
        format!("{}-a", docker.name),
        format!("{}-b", docker.name),
        format!("{}-c", docker.name),
    );
    docker.network("blue", &["--subnet", "10.94.0.0/24"]);
    // `sleep` as pid 1 ignores SIGTERM: dockerd's shutdown would wait 10 s for each.
    let opts = ["--network", "blue", "--stop-timeout", "0"];
    docker.run(&ca, &opts, &["sleep", "600"]);
    docker.run(
        &cb,
        &["--network", "blue", "-p", "8081:80"],
        &["httpd", "-f", "-p", "80", "-h", "/www"],
    );
    docker.run(&cc, &opts, &["sleep", "600"]);
    let ip_b = docker.container_ip(&cb, "blue");
    assert!(docker.pings(&ca, &ip_b, 5));

    // The plugin crashes and comes back while containers run: the data plane does not notice.
    let ping = ping_from(&docker, &ca, &ip_b);
    std::thread::sleep(Duration::from_millis(700));
    docker.kill_plugin();
    std::thread::sleep(Duration::from_millis(500));
    docker.start_plugin();
    std::thread::sleep(Duration::from_millis(700));
    let (sent, received) = ping.stop();
    assert!(sent >= 15, "only {sent} pings sent");
    assert_eq!(received, sent, "pings lost across the plugin's restart");
    let host_ns = host.ns.open();
    assert!(serves_page(&host_ns, Ipv4Addr::LOCALHOST, 8081));

    // The restarted plugin cleans up what the first one made.
    docker.docker(&["rm", "-f", &cb]);
    assert_eq!(host.veths().len(), 2, "{:?}", host.veths());
    assert_eq!(host.reservations("blue").len(), 4);
    assert!(host.port_elements().is_empty(), "{}", host.port_elements());

    // dockerd restarts: it stops the containers (their endpoints go) and `docker start`
    // brings them back with their addresses and MACs.
    docker.stop_dockerd();
    assert!(host.veths().is_empty(), "{:?}", host.veths());
    assert!(host.reservations("blue").is_empty());
    docker.start_dockerd();
    docker.docker(&["start", &ca, &cc]);
    // Docker may hand out other addresses now; the MAC follows the address.
    for c in [&ca, &cc] {
        let ip = docker.container_ip(c, "blue");
        let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
        let mac = docker.exec(c, &["cat", "/sys/class/net/eth0/address"]);
        assert_eq!(mac, format!("02:42:0a:5e:00:{last:02x}"), "{c}'s MAC");
    }
    assert!(docker.pings(&ca, &cc, 5), "{ca} cannot ping {cc} by name");
    assert!(
        docker.pings(&cc, "10.94.0.1", 5),
        "{cc} cannot ping the gateway"
    );
    docker.docker(&["rm", "-f", &ca, &cc]);
    docker.docker(&["network", "rm", "blue"]);
    assert!(host.veths().is_empty(), "{:?}", host.veths());
    assert!(state_files(&host).is_empty(), "{:?}", state_files(&host));
}

#[test]
fn docker_connect_isolation_internal_and_static_addresses() {
    let host = Host::new();
    let world = World::attach_to(&host);
    let docker = Docker::start(&host);
    let (ca, cb, cc, ci) = (
        format!("{}-a", docker.name),
        format!("{}-b", docker.name),
        format!("{}-c", docker.name),
        format!("{}-i", docker.name),
    );
    docker.network("blue", &["--subnet", "10.95.0.0/24"]);
    docker.network(
        "green",
        &["--subnet", "10.96.0.0/24", "--gateway", "10.96.0.254"],
    );
    docker.network("inside", &["--internal", "--subnet", "10.97.0.0/24"]);
    let bridge_of = |name: &str| {
        ferrynet_network(&host, name)["bridge"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let opts = ["--stop-timeout", "0"];

    // Static address and MAC.
    docker.run(
        &ca,
        &[
            &opts[..],
            &[
                "--network",
                "blue",
                "--ip",
                "10.95.0.50",
                "--mac-address",
                "02:00:00:00:95:50",
            ],
        ]
        .concat(),
        &["sleep", "600"],
    );
    assert_eq!(docker.container_ip(&ca, "blue"), "10.95.0.50");
    let eth0 = docker.exec(&ca, &["ip", "-o", "addr", "show", "eth0"]);
    assert!(eth0.contains("inet 10.95.0.50/24"), "{eth0}");
    assert_eq!(
        docker.exec(&ca, &["cat", "/sys/class/net/eth0/address"]),
        "02:00:00:00:95:50"
    );
    assert!(
        host.reservations("blue")
            .contains(&"ip-10.95.0.50".to_string()),
        "{:?}",
        host.reservations("blue")
    );

    docker.run(
        &cb,
        &[&opts[..], &["--network", "green"]].concat(),
        &["sleep", "600"],
    );
    docker.run(
        &cc,
        &[&opts[..], &["--network", "blue"]].concat(),
        &["sleep", "600"],
    );
    let ip_b = docker.container_ip(&cb, "green");
    assert_eq!(docker.inspect_net(&cb, "green", "Gateway"), "10.96.0.254");

    // a joins green too, as eth1 on green's bridge; it reaches b there, c stays on blue
    // and cannot cross to green (isolation), nor can b reach blue.
    docker.docker(&["network", "connect", "green", &ca]);
    let ip_a_green = docker.container_ip(&ca, "green");
    let iflink = docker.exec(&ca, &["cat", "/sys/class/net/eth1/iflink"]);
    let line = host_link(&host, &iflink);
    assert!(
        line.contains(&format!("master {} ", bridge_of("green"))),
        "{line}"
    );
    assert!(
        docker.pings(&ca, &ip_b, 5),
        "{ca} cannot reach {ip_b} on green"
    );
    assert!(docker.pings(&cb, &ip_a_green, 5));
    assert!(
        docker.pings(&cb, &ca, 5),
        "{cb} cannot reach {ca} by name on green"
    );
    assert!(
        !docker.try_docker(&["exec", &cc, "ping", "-c2", "-W1", &ip_b]),
        "blue reached green"
    );
    assert!(
        !docker.try_docker(&["exec", &cb, "ping", "-c2", "-W1", "10.95.0.50"]),
        "green reached blue"
    );
    docker.docker(&["network", "disconnect", "green", &ca]);
    assert_eq!(host.veths().len(), 3, "{:?}", host.veths());
    assert!(docker
        .exec(&ca, &["ip", "-o", "link"])
        .lines()
        .all(|l| !l.contains("eth1")));

    // --internal: no default route, no way out, neighbours still reachable.
    docker.run(
        &ci,
        &[&opts[..], &["--network", "inside"]].concat(),
        &["sleep", "600"],
    );
    let routes = docker.exec(&ci, &["ip", "route"]);
    assert!(!routes.contains("default"), "{routes}");
    let ns_i = docker.netns(&ci);
    let srv = server(&world.ns, world.ip, 7000, "world");
    assert_eq!(ferrynet::probe::fetch(&ns_i, world.ip, 7000).unwrap(), None);
    assert!(srv.peers().is_empty());
    assert!(
        docker.pings(&ci, "10.97.0.1", 5),
        "{ci} cannot reach its gateway"
    );

    docker.docker(&["rm", "-f", &ca, &cb, &cc, &ci]);
    for n in ["blue", "green", "inside"] {
        docker.docker(&["network", "rm", n]);
    }
    assert!(host.veths().is_empty(), "{:?}", host.veths());
    assert!(nft_elements(&host).is_empty(), "{:?}", nft_elements(&host));
    assert!(state_files(&host).is_empty(), "{:?}", state_files(&host));
}

#[test]
fn docker_dual_stack_network() {
    let host = Host::new();
    let docker = Docker::start(&host);
    let (ca, cb) = (format!("{}-a", docker.name), format!("{}-b", docker.name));
    docker.network(
        "dual",
        &[
            "--ipv6",
            "--subnet",
            "10.98.0.0/24",
            "--subnet",
            "fd00:98::/64",
        ],
    );
    let net = ferrynet_network(&host, "dual");
    assert_eq!(net["subnet6"], "fd00:98::/64", "{net}");
    let opts = ["--network", "dual", "--stop-timeout", "0"];
    docker.run(&ca, &opts, &["sleep", "600"]);
    docker.run(&cb, &opts, &["sleep", "600"]);
    let v6 = |c: &str| docker.inspect_net(c, "dual", "GlobalIPv6Address");
    let (a6, b6) = (v6(&ca), v6(&cb));
    assert!(
        a6.starts_with("fd00:98::") && b6.starts_with("fd00:98::"),
        "{a6} {b6}"
    );
    assert_eq!(docker.inspect_net(&ca, "dual", "IPv6Gateway"), "fd00:98::1");
    let routes = docker.exec(&ca, &["ip", "-6", "route"]);
    assert!(routes.contains("default via fd00:98::1"), "{routes}");
    let ping6 = |from: &str, to: &str| {
        eventually(5, || {
            docker.try_docker(&["exec", from, "ping6", "-c1", "-W1", to])
        })
    };
    assert!(ping6(&ca, &b6), "{ca} cannot ping6 {b6}");
    assert!(ping6(&cb, &a6), "{cb} cannot ping6 {a6}");
    assert!(ping6(&ca, "fd00:98::1"), "{ca} cannot ping6 the gateway");
    let ip_b = docker.container_ip(&cb, "dual");
    assert!(docker.pings(&ca, &ip_b, 5));
    assert_eq!(
        host.reservations6("dual").len(),
        4,
        "{:?}",
        host.reservations6("dual")
    );

    docker.docker(&["rm", "-f", &ca, &cb]);
    assert!(host.reservations6("dual").is_empty());
    docker.docker(&["network", "rm", "dual"]);
    assert!(host.veths().is_empty(), "{:?}", host.veths());
    assert!(state_files(&host).is_empty(), "{:?}", state_files(&host));
}

#[test]
fn docker_uses_ferrynet_ipam_for_ranges_and_static_addresses() {
    let host = Host::new();
    let docker = Docker::start(&host);
    let n = |s: &str| format!("{}-{s}", docker.name);
    let ipam = ["-d", &docker.name, "--ipam-driver", &docker.name];
    let create = |extra: &[&str], name: &str| -> Vec<String> {
        let mut args: Vec<String> = ["network", "create"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(ipam.iter().chain(extra).map(|s| s.to_string()));
        args.push(name.to_string());
        args
    };
    // IPAM errors are Docker errors too ("Error", not "Err"), and change nothing.
    let before = host.snapshot();
    let stderr = docker.docker_err(&strs(&create(
        &["--subnet", "10.99.0.0/24", "--ipam-opt", "colour=red"],
        "bad",
    )));
    assert!(stderr.contains("unknown --ipam-opt colour"), "{stderr}");
    let stderr = docker.docker_err(&strs(&create(&["--ipam-opt", "subnet=auto"], "bad")));
    assert!(stderr.contains("is the ferrynet agent running"), "{stderr}");
    assert_same(&before, &host.snapshot(), "refused IPAM requests");

    docker.docker(&strs(&create(
        &["--subnet", "10.99.0.0/24", "--ip-range", "10.99.0.64/31"],
        "own",
    )));
    let opts = ["--network", "own", "--stop-timeout", "0"];
    docker.run(&n("a"), &opts, &["sleep", "600"]);
    docker.run(
        &n("b"),
        &[&opts[..], &["--ip", "10.99.0.10"]].concat(),
        &["sleep", "600"],
    );
    docker.run(&n("c"), &opts, &["sleep", "600"]);
    assert_eq!(docker.container_ip(&n("a"), "own"), "10.99.0.64");
    assert_eq!(docker.container_ip(&n("b"), "own"), "10.99.0.10");
    assert_eq!(docker.container_ip(&n("c"), "own"), "10.99.0.65");
    assert_eq!(docker.inspect_net(&n("a"), "own", "Gateway"), "10.99.0.1");
    let eth0 = docker.exec(&n("a"), &["ip", "-o", "addr", "show", "eth0"]);
    assert!(eth0.contains("inet 10.99.0.64/24"), "{eth0}");
    assert!(docker.pings(&n("a"), "10.99.0.10", 5));
    assert!(docker.pings(&n("b"), &n("c"), 5));
    // The range is full; the refused container leaves nothing.
    let before = host.snapshot();
    let stderr = docker.docker_err(&[
        "run",
        "-d",
        "--name",
        &n("d"),
        "--network",
        "own",
        "busybox",
        "sleep",
        "600",
    ]);
    assert!(stderr.contains("no free address left"), "{stderr}");
    assert_same(&before, &host.snapshot(), "a container of a full pool");
    // A released address is handed out again.
    docker.docker(&["rm", "-f", &n("a"), &n("d")]);
    docker.run(&n("e"), &opts, &["sleep", "600"]);
    assert_eq!(docker.container_ip(&n("e"), "own"), "10.99.0.64");

    // Dual-stack from ferrynet's IPAM: a pool per family.
    docker.docker(&strs(&create(
        &[
            "--ipv6",
            "--subnet",
            "10.86.0.0/24",
            "--subnet",
            "fd00:86::/64",
        ],
        "dual",
    )));
    let dual = ["--network", "dual", "--stop-timeout", "0"];
    docker.run(&n("f"), &dual, &["sleep", "600"]);
    docker.run(
        &n("g"),
        &[&dual[..], &["--ip6", "fd00:86::50"]].concat(),
        &["sleep", "600"],
    );
    assert_eq!(
        docker.inspect_net(&n("f"), "dual", "IPv6Gateway"),
        "fd00:86::1"
    );
    assert_eq!(
        docker.inspect_net(&n("g"), "dual", "GlobalIPv6Address"),
        "fd00:86::50"
    );
    let f6 = docker.inspect_net(&n("f"), "dual", "GlobalIPv6Address");
    assert!(f6.starts_with("fd00:86::"), "{f6}");
    assert!(
        eventually(5, || docker.try_docker(&[
            "exec",
            &n("g"),
            "ping6",
            "-c1",
            "-W1",
            &f6
        ])),
        "no IPv6 between containers of ferrynet's pools"
    );

    docker.docker(&["rm", "-f", &n("b"), &n("c"), &n("e"), &n("f"), &n("g")]);
    docker.docker(&["network", "rm", "own", "dual"]);
    assert!(host.veths().is_empty(), "{:?}", host.veths());
    assert!(state_files(&host).is_empty(), "{:?}", state_files(&host));
}

#[test]
fn docker_hosts_with_agents_reach_each_other_across_hosts() {
    let fabric = Fabric::new();
    let store = std::env::temp_dir().join(format!("ferrynet-docker-{}.json", fabric.ns.name));
    let hosts = [Host::new(), Host::new()];
    let mut agents = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        fabric.plug(h, &format!("10.200.0.{}", 11 + i), &format!("p{i}"));
        agents.push(Agent::start(h, &store, "host-gw", &format!("node{i}"), &[]));
    }
    let dockers: Vec<Docker> = hosts.iter().map(Docker::start).collect();
    let mut ips = Vec::new();
    for (i, (h, d)) in hosts.iter().zip(&dockers).enumerate() {
        d.docker(&[
            "network",
            "create",
            "-d",
            &d.name,
            "--ipam-driver",
            &d.name,
            "--ipam-opt",
            "subnet=auto",
            "cluster",
        ]);
        // The Docker network's subnet is this host's lease.
        let leased: ipnet::IpNet = leased_subnet(h).parse().unwrap();
        let net = ferrynet_network(h, "cluster");
        assert_eq!(net["subnet"], leased.trunc().to_string(), "host {i}");
        let c = format!("{}-c", d.name);
        d.run(
            &c,
            &["--network", "cluster", "--stop-timeout", "0"],
            &["sleep", "600"],
        );
        let ip = d.container_ip(&c, "cluster");
        assert!(
            leased.contains(&ip.parse::<IpAddr>().unwrap()),
            "{ip} not in {leased}"
        );
        ips.push((d, c, ip));
    }
    let (d0, c0, ip0) = &ips[0];
    let (d1, c1, ip1) = &ips[1];
    assert!(
        d0.pings(c0, ip1, 10),
        "{c0} cannot reach {ip1} on the other host"
    );
    assert!(
        d1.pings(c1, ip0, 10),
        "{c1} cannot reach {ip0} on the other host"
    );
    // Across hosts the peer sees the container's own address (no masquerade in the cluster).
    let srv =
        ferrynet::probe::Server::start(&d1.netns(c1), Ipv4Addr::UNSPECIFIED, 7000, "c1").unwrap();
    let ip1v4: Ipv4Addr = ip1.parse().unwrap();
    let reply = ferrynet::probe::fetch(&d0.netns(c0), ip1v4, 7000).unwrap();
    assert_eq!(reply.as_deref(), Some("hello from c1\n"));
    assert_eq!(
        srv.peers(),
        vec![ip0.parse::<IpAddr>().unwrap()],
        "masqueraded"
    );
    drop(srv);
    for (d, c, _) in &ips {
        d.docker(&["rm", "-f", c]);
        d.docker(&["network", "rm", "cluster"]);
    }
    drop(ips);
    drop(dockers);
    agents.clear();
    let _ = std::fs::remove_file(&store);
    let _ = std::fs::remove_file(store.with_extension("lock"));
}

#[test]
fn docker_plugin_crash_mid_call_leaves_nothing_behind() {
    let host = Host::new();
    let mut docker = Docker::start(&host);
    // ferrynet's IPAM too: its reservations are what a crash in RequestAddress leaves.
    let ipam = docker.name.clone();
    docker.network(
        "blue",
        &["--ipam-driver", &ipam, "--subnet", "10.89.0.0/24"],
    );
    let ca = format!("{}-a", docker.name);
    docker.run(
        &ca,
        &["--network", "blue", "--stop-timeout", "0"],
        &["sleep", "600"],
    );
    let ip_a = docker.container_ip(&ca, "blue");
    let endpoints = |host: &Host| {
        let mut f = files_under(&host.state.join("run/endpoints"));
        f.extend(files_under(&host.state.join("run/docker-ipam")));
        f
    };
    let before = (
        host.veths(),
        host.reservations("blue"),
        host.container_elements(),
        endpoints(&host),
    );
    for point in ["docker.address", "docker.reserved", "docker.veth"] {
        // The plugin aborts inside RequestAddress / CreateEndpoint / Join; Docker retries the call until a
        // new plugin answers, and the new one starts by removing what the old one left.
        docker.kill_plugin();
        docker.start_plugin_with(&[("FERRYNET_FAILPOINT", point)]);
        let cb = format!("{}-{}", docker.name, point.replace('.', "-"));
        let run = {
            let mut cmd = docker.docker_cmd(&[
                "run",
                "-d",
                "--name",
                &cb,
                "--network",
                "blue",
                "--stop-timeout",
                "0",
                "busybox",
                "sleep",
                "600",
            ]);
            std::thread::spawn(move || sh(&mut cmd))
        };
        let plugin = docker.plugin.as_mut().unwrap();
        assert!(
            wait_for(Duration::from_secs(20), || !matches!(
                plugin.try_wait(),
                Ok(None)
            )),
            "{point} was not hit"
        );
        docker.plugin = None;
        docker.start_plugin();
        let out = run.join().unwrap();
        // Docker resends the cut call without its body (measured): the new plugin refuses it.
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("run the command again"),
                "{point}: {stderr}"
            );
        }
        // Whatever Docker made of it: a container that works, or a clean refusal.
        if out.status.success() {
            assert!(
                docker.pings(&cb, &ip_a, 5),
                "{point}: {cb} cannot reach {ip_a}"
            );
        }
        let _ = sh(&mut docker.docker_cmd(&["rm", "-f", &cb]));
        let after = (
            host.veths(),
            host.reservations("blue"),
            host.container_elements(),
            endpoints(&host),
        );
        assert_eq!(after, before, "{point}: something left behind");
        assert!(
            docker.pings(&ca, "10.89.0.1", 5),
            "{point}: {ca} lost its network"
        );
    }
    docker.docker(&["rm", "-f", &ca]);
    docker.docker(&["network", "rm", "blue"]);
    assert!(host.veths().is_empty(), "{:?}", host.veths());
    assert!(state_files(&host).is_empty(), "{:?}", state_files(&host));
}

/// Not a test: `docker run --rm --network NET busybox true` on a ferrynet network, on Docker's
/// own bridge networks (a second dockerd with iptables on, in its own namespace) and with
/// `--network none`, alternating, same run; then FERRYNET_DOCKER_BENCH_PORTS long-running
/// containers with a published port each on ferrynet's and on Docker's user-defined network,
/// alternating, each `docker run -d -p` timed (the first and the last 50 compared: flat or
/// not), and the first rows again with them running. Prints p50/p90 in ms.
/// `cargo test --features failpoints --test docker bench -- --ignored --nocapture`
#[test]
#[ignore]
fn docker_bench_run_latency() {
    let var = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (runs, ports) = (
        var("FERRYNET_DOCKER_BENCH_RUNS", 30),
        var("FERRYNET_DOCKER_BENCH_PORTS", 0),
    );
    let (h1, h2) = (Host::new(), Host::new());
    let ours = Docker::start(&h1);
    let native = Docker::start_as(&h2, true);
    ours.network("blue", &["--subnet", "10.88.0.0/24"]);
    // A user-defined bridge network has Docker's embedded DNS, as every network of a remote
    // driver does (its iptables rules in each container); the default `bridge` has none.
    native.docker(&["network", "create", "--subnet", "10.87.0.0/24", "green"]);
    let variants: [(&str, &Docker, &str); 4] = [
        ("ferrynet", &ours, "blue"),
        (
            "Docker bridge, user-defined network (iptables on)",
            &native,
            "green",
        ),
        (
            "Docker bridge, default `bridge` network (iptables on)",
            &native,
            "bridge",
        ),
        ("none (floor)", &ours, "none"),
    ];
    let measure = |with: usize| {
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for i in 0..runs + 2 {
            for (k, (_, d, net)) in variants.iter().enumerate() {
                let t0 = Instant::now();
                d.docker(&["run", "--rm", "--network", net, "busybox", "true"]);
                if i >= 2 {
                    times[k].push(t0.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        for (k, (label, _, _)) in variants.iter().enumerate() {
            let v = &mut times[k];
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
            println!("| {label} | {with} | {:.0} | {:.0} |", at(0.5), at(0.9));
        }
    };
    println!("| docker run --rm busybox true ({runs} runs each, alternating) | containers with a published port | p50 ms | p90 ms |");
    println!("|---|---|---|---|");
    measure(0);
    if std::env::var_os("FERRYNET_DOCKER_BENCH_LOG").is_some() {
        let log = std::fs::read_to_string(ours.dir.join("plugin.1.log")).unwrap();
        for l in log.lines().rev().take(8).collect::<Vec<_>>().iter().rev() {
            println!("{l}");
        }
    }
    if ports > 0 {
        // Flatness: each long-running container's `docker run -d -p` timed, ferrynet and
        // Docker's user-defined bridge alternating; the first and the last `window` compared
        // (Docker's iptables rules grow with every port, ferrynet's map elements do not).
        // FERRYNET_DOCKER_BENCH_RANDOM=1 publishes `-p 80` (a host port chosen by each).
        let random = std::env::var_os("FERRYNET_DOCKER_BENCH_RANDOM").is_some();
        let pairs = [(&ours, "blue"), (&native, "green")];
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); pairs.len()];
        for i in 0..ports {
            let p = match random {
                true => "80".to_string(),
                false => format!("{}:80", 20000 + i),
            };
            for (k, (d, net)) in pairs.iter().enumerate() {
                let t0 = Instant::now();
                d.docker(&[
                    "run",
                    "-d",
                    "--network",
                    net,
                    "-p",
                    &p,
                    "busybox",
                    "sleep",
                    "3600",
                ]);
                times[k].push(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let window = (ports / 4).clamp(1, 50);
        let pct = |v: &[f64], p: f64| {
            let mut v = v.to_vec();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[((v.len() - 1) as f64 * p).round() as usize]
        };
        println!();
        println!("| `docker run -d -p {}` ({ports} containers each, alternating) | first {window} p50 ms | p90 | last {window} p50 ms | p90 | last/first p50 |", if random { "80" } else { "N:80" });
        println!("|---|---|---|---|---|---|");
        for (k, label) in [
            "ferrynet",
            "Docker bridge, user-defined network (iptables on)",
        ]
        .iter()
        .enumerate()
        {
            let v = &times[k];
            let (first, last) = (&v[..window], &v[v.len() - window..]);
            println!(
                "| {label} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
                pct(first, 0.5),
                pct(first, 0.9),
                pct(last, 0.5),
                pct(last, 0.9),
                pct(last, 0.5) / pct(first, 0.5)
            );
        }
        println!();
        measure(ports);
    }
}
