//! The real Docker daemon (Debian's docker.io 20.10) drives ferrynet as its network plugin:
//! `docker network create -d NAME` makes a ferrynet network, `docker run` containers on it
//! are ferrynet endpoints. dockerd, its containerd and `ferrynet docker-plugin` run inside the
//! test's host namespace and in one private mount namespace with its own tmpfs on /run, so
//! /run/docker/plugins, /run/containerd and Docker's netns files never touch the machine's
//! /run, and nothing of the root namespace changes (recipe: ../shared/DESIGN.md, "Docker").

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DOCKER: &str = "/usr/bin/docker";

/// dockerd + the plugin in `host`, torn down (containers, daemons, mount namespace, cgroups,
/// files) on drop, also after a failed assertion.
struct Docker {
    dir: PathBuf,
    /// The plugin's (= the driver's) name: unique, /run/docker/plugins is per mount namespace
    /// here but the name also keys Docker's own state.
    name: String,
    cgroup: String,
    /// `sleep` holding the private mount namespace (tmpfs on /run) in the host's netns.
    holder: Child,
    dockerd: Option<Child>,
    plugin: Option<Child>,
}

impl Docker {
    fn start(host: &Host) -> Docker {
        let name = unique("dk");
        let dir = std::env::temp_dir().join(format!("ferrynet-docker-{name}"));
        let rootfs = dir.join("rootfs");
        for sub in ["bin", "etc", "www"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "sleep", "ping", "httpd", "wget", "ip", "cat", "nslookup",
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
            holder,
            dockerd: None,
            plugin: None,
        };
        let comm = format!("/proc/{}/comm", d.holder.id());
        assert!(
            wait_for(Duration::from_secs(5), || std::fs::read_to_string(&comm)
                .is_ok_and(|c| c.trim() == "sleep")),
            "the mount namespace holder did not start"
        );
        // The plugin first: a driver whose socket is missing stalls Docker 15 s per call.
        let log = std::fs::File::create(d.dir.join("plugin.log")).unwrap();
        d.plugin = Some(
            d.enter()
                .env("FERRYNET_STATE_DIR", &host.state)
                .args([BIN, "docker-plugin", "--name", &d.name])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let sock = d.plugin_socket();
        assert!(
            wait_for(Duration::from_secs(10), || sock.exists()),
            "the plugin's socket {} did not appear",
            sock.display()
        );
        let log = std::fs::File::create(d.dir.join("dockerd.log")).unwrap();
        let p = |s: &str| d.dir.join(s).display().to_string();
        let dockerd = d
            .enter()
            .arg("dockerd")
            .args(["--config-file", &p("daemon.json")])
            .args(["-H", &format!("unix://{}", p("docker.sock"))])
            .args(["--data-root", &p("data"), "--exec-root", &p("exec")])
            .args(["--pidfile", &p("docker.pid")])
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .args([
                "--ip-forward=false",
                "--ip-masq=false",
                "--userland-proxy=false",
            ])
            .args(["--exec-opt", "native.cgroupdriver=cgroupfs"])
            .args(["--storage-driver", "overlay2"])
            .args(["--cgroup-parent", &format!("/{}", d.cgroup)])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        d.dockerd = Some(dockerd);
        assert!(
            wait_for(Duration::from_secs(20), || d
                .docker_cmd(&["version"])
                .output()
                .is_ok_and(|o| o.status.success())),
            "dockerd did not come up"
        );
        let import = format!(
            "tar -C {} -c . | {DOCKER} -H unix://{} import -c 'CMD [\"/bin/sh\"]' -c 'ENV PATH=/bin' - busybox",
            rootfs.display(),
            p("docker.sock")
        );
        ok(Command::new("sh")
            .args(["-c", &import])
            .env("DOCKER_CONFIG", d.dir.join("client")));
        d
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
        c.args(["30", DOCKER, "-H"])
            .arg(format!("unix://{}", self.dir.join("docker.sock").display()))
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

    fn container_ip(&self, container: &str, network: &str) -> String {
        self.docker(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            container,
        ])
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
            for log in ["plugin.log", "dockerd.log"] {
                let text = std::fs::read_to_string(self.dir.join(log)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- {log} (last lines) ---");
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

/// `GET /index.html` from inside the host's namespace; the whole answer, None if unreachable.
fn http_get(host: &Host, addr: &str, port: u16) -> Option<String> {
    let addr: std::net::SocketAddr = format!("{addr}:{port}").parse().unwrap();
    host.ns.run(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        Some(buf)
    })
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

#[test]
fn docker_runs_containers_on_a_ferrynet_network() {
    let started = Instant::now();
    let host = Host::new();
    let mut docker = Docker::start(&host);
    let (ca, cb) = (format!("{}-a", docker.name), format!("{}-b", docker.name));

    // A bad option is Docker's error, naming the option, and creates nothing.
    let before = host.snapshot();
    let bad = sh(&mut docker.docker_cmd(&[
        "network",
        "create",
        "-d",
        &docker.name,
        "--subnet",
        "10.91.0.0/24",
        "-o",
        "ferrynet.mtu=big",
        "red",
    ]));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("invalid option ferrynet.mtu=\"big\""),
        "{stderr}"
    );
    assert_eq!(
        host.snapshot(),
        before,
        "a refused network changed the host"
    );

    let id = docker.docker(&[
        "network",
        "create",
        "-d",
        &docker.name,
        "--subnet",
        "10.90.0.0/24",
        "blue",
    ]);
    // The Docker network is a ferrynet network, named by Docker's short id.
    let short = &id[..12];
    let nets: serde_json::Value =
        serde_json::from_str(&host.ferrynet(&["network", "ls", "--json"])).unwrap();
    let net = nets
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == short)
        .unwrap_or_else(|| panic!("network {short} not in {nets}"))
        .clone();
    assert_eq!(net["subnet"], "10.90.0.0/24");
    assert_eq!(net["gateway"], "10.90.0.1");
    let bridge = net["bridge"].as_str().unwrap().to_string();

    docker.docker(&[
        "run",
        "-d",
        "--name",
        &ca,
        "--network",
        "blue",
        "busybox",
        "sleep",
        "600",
    ]);
    docker.docker(&[
        "run",
        "-d",
        "--name",
        &cb,
        "--network",
        "blue",
        "-p",
        "8080:80",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let (ip_a, ip_b) = (
        docker.container_ip(&ca, "blue"),
        docker.container_ip(&cb, "blue"),
    );
    assert!(ip_a.starts_with("10.90.0.") && ip_b.starts_with("10.90.0."));

    // By IP and by name (Docker's embedded DNS), both ways.
    let ping = |from: &str, to: &str| {
        eventually(5, || {
            docker.try_docker(&["exec", from, "ping", "-c1", "-W1", to])
        })
    };
    assert!(ping(&ca, &ip_b), "{ca} cannot ping {ip_b}");
    assert!(ping(&cb, &ip_a), "{cb} cannot ping {ip_a}");
    assert!(ping(&ca, &cb), "{ca} cannot ping {cb} by name");
    assert!(ping(&cb, &ca), "{cb} cannot ping {ca} by name");

    // The container's eth0 is one end of a veth whose other end is a port of the bridge.
    let ls = host.ns.exec(&["ip", "-o", "link", "show"]);
    for c in [&ca, &cb] {
        let iflink = docker.docker(&["exec", c, "cat", "/sys/class/net/eth0/iflink"]);
        let line = ls
            .lines()
            .find(|l| l.starts_with(&format!("{iflink}: ")))
            .unwrap_or_else(|| panic!("no link {iflink} in the host:\n{ls}"));
        assert!(
            line.contains(&format!("master {bridge} "))
                && line.split(": ").nth(1).unwrap().starts_with("vf"),
            "{c}'s peer is not a ferrynet port of {bridge}: {line}"
        );
        let mac = docker.docker(&["exec", c, "cat", "/sys/class/net/eth0/address"]);
        assert!(mac.starts_with("02:42:0a:5a:00:"), "{c}'s MAC {mac}");
    }
    assert_eq!(host.veths().len(), 2);
    assert_eq!(
        host.reservations(short).len(),
        4,
        "two addresses, by ip and by key"
    );

    // -p 8080:80 from the host itself (127.0.0.1 and the bridge's address).
    for addr in ["127.0.0.1", "10.90.0.1"] {
        let got = eventually(5, || {
            http_get(&host, addr, 8080).is_some_and(|r| r.contains("hello from docker"))
        });
        assert!(got, "{addr}:8080 not reachable from the host");
    }
    assert!(host.port_elements().contains("8080"));
    let ls = host.ferrynet(&["network", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(short) && l.trim_end().ends_with('2')),
        "{ls}"
    );

    // Removing the containers and the network leaves nothing behind.
    docker.docker(&["rm", "-f", &ca, &cb]);
    assert!(host.veths().is_empty(), "veths left: {:?}", host.veths());
    assert!(host.reservations(short).is_empty());
    assert!(host.port_elements().is_empty(), "{}", host.port_elements());
    docker.docker(&["network", "rm", "blue"]);
    assert!(nft_elements(&host).is_empty(), "{:?}", nft_elements(&host));
    assert!(!host.ferrynet(&["network", "ls"]).contains(short));
    assert!(
        !host
            .ns
            .exec(&["ip", "-o", "link", "show"])
            .contains(&bridge),
        "bridge {bridge} left"
    );
    let left: Vec<String> = files_under(&host.state)
        .into_iter()
        .filter(|f| !f.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "state left: {left:?}");

    // And the harness leaves no process, mount, namespace or cgroup behind.
    let dir = docker.dir.display().to_string();
    let (cgroup, holder) = (docker.cgroup.clone(), docker.holder.id());
    docker.stop();
    drop(docker);
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
