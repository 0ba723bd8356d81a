//! The etcd store against a real etcd (Debian's etcd-server), started by each test inside the
//! test's fabric namespace with a temporary data directory, and stopped at the end.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

/// etcd listening on `ip`:2379 inside `ns`.
struct Etcd<'a> {
    ns: &'a Ns,
    ip: Ipv4Addr,
    dir: PathBuf,
    child: Option<Child>,
}

impl<'a> Etcd<'a> {
    fn start(ns: &'a Ns, ip: Ipv4Addr) -> Etcd<'a> {
        let dir = std::env::temp_dir().join(format!("ferrynet-etcd-{}", ns.name));
        let mut e = Etcd {
            ns,
            ip,
            dir,
            child: None,
        };
        e.resume();
        e
    }

    /// Starts (again) on the same data directory.
    fn resume(&mut self) {
        let url = format!("http://{}:2379", self.ip);
        let child = self
            .ns
            .cmd(&["etcd", "--name", "ferrynet-test", "--data-dir"])
            .arg(&self.dir)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "ferrynet-test=http://127.0.0.1:2380"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr = SocketAddr::from((self.ip, 2379));
        let ns = self.ns.open();
        assert!(
            eventually(20, || ns
                .run(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
                .unwrap()),
            "etcd did not start"
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("etcd://{}:2379", self.ip)
    }
}

impl Drop for Etcd<'_> {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn etcd_passes_the_store_conformance_suite() {
    let ns = Ns::new("e");
    let etcd = Etcd::start(&ns, Ipv4Addr::LOCALHOST);
    let url = format!("http://{}:2379", etcd.ip);
    ns.run(|| {
        let mut store =
            ferrynet::cluster::EtcdStore::connect(&[url], "/ferrynet-test", None).unwrap();
        ferrynet::cluster::conformance::lease_semantics(&mut store);
        ferrynet::cluster::conformance::object_semantics(&mut store);
    });
}

#[test]
fn agent_fails_clearly_when_etcd_is_unreachable_at_start() {
    let host = Host::new();
    let out = host.try_ferrynet(&[
        "agent",
        "--store",
        "etcd://127.0.0.1:1",
        "--cluster-cidr",
        "10.244.0.0/16",
        "--iface",
        "lo",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("store unreachable") && err.contains("127.0.0.1:1"),
        "{err}"
    );
}

/// An agent process, stopped (SIGTERM, then SIGKILL) when dropped, also on a failed assert.
struct AgentProcess(Option<Child>);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            if !eventually(5, || matches!(c.try_wait(), Ok(Some(_)))) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn agent(host: &Host, url: &str, node: &str) -> AgentProcess {
    agent_with(host, url, node, "30s")
}

fn agent_with(host: &Host, url: &str, node: &str, ttl: &str) -> AgentProcess {
    std::fs::create_dir_all(&host.state).unwrap();
    let log = std::fs::File::create(host.state.join("agent.log")).unwrap();
    let subnet_file = host.state.join("subnet.env");
    let child = host
        .ferrynet_cmd(&[
            "agent",
            "--store",
            url,
            "--cluster-cidr",
            "10.244.0.0/16",
            "--backend",
            "vxlan",
            "--iface",
            "eth0",
            "--node-name",
            node,
            "--lease-ttl",
            ttl,
            "--subnet-file",
            subnet_file.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let agent = AgentProcess(Some(child));
    assert!(
        eventually(15, || subnet_file.exists()),
        "agent {node} leased nothing"
    );
    agent
}

#[test]
fn cluster_over_etcd_survives_an_etcd_outage() {
    let fabric = Fabric::new();
    fabric
        .ns
        .exec(&["ip", "addr", "add", "10.200.0.2/24", "dev", "fab0"]);
    let mut etcd = Etcd::start(&fabric.ns, Ipv4Addr::new(10, 200, 0, 2));
    let hosts: Vec<Host> = (0..2).map(|_| Host::new()).collect();
    let mut agents = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        fabric.plug(h, &format!("10.200.0.{}", 11 + i), &format!("p{i}"));
        agents.push(agent(h, &etcd.url(), &format!("node{i}")));
    }
    let conf = |h: &Host| {
        json!({"cniVersion": "1.0.0", "name": "pods", "type": "ferrynet", "bridge": "fypods0",
               "subnet": "auto", "subnetFile": h.state.join("subnet.env").to_string_lossy()})
    };
    let a = Ns::new("c");
    let b = Ns::new("c");
    cni_add(&hosts[0], &a, &conf(&hosts[0]));
    let rb = cni_add(&hosts[1], &b, &conf(&hosts[1]));
    let target = rb["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        eventually(15, || a.ping(&target)),
        "cross-host ping over etcd-driven routes"
    );
    let subnet = std::fs::read_to_string(hosts[1].state.join("subnet.env")).unwrap();

    // etcd goes away for 60 s: existing traffic keeps flowing, not a packet lost.
    let ping = ContinuousPing::start(&a, &target, "0.1");
    etcd.stop();
    std::thread::sleep(Duration::from_secs(60));
    // etcd comes back: the agents recover and keep their subnets.
    etcd.resume();
    std::thread::sleep(Duration::from_secs(3));
    let (sent, received) = ping.stop();
    assert!(sent >= 600, "the ping ran ({sent} sent)");
    assert_eq!(sent, received, "packets lost during the etcd outage");
    assert!(a.ping(&target));
    assert_eq!(
        std::fs::read_to_string(hosts[1].state.join("subnet.env")).unwrap(),
        subnet
    );
    drop(agents);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
fn make_certs(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"set -e
cd "$1"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=ferrynet-test-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=etcd -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile server.ext -out server.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=ferrynet-agent -keyout client.key -out client.csr 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile client.ext -out client.pem 2>/dev/null
"#;
    ok(std::process::Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(dir));
}

#[test]
fn etcd_over_tls_with_client_certificates() {
    let ns = Ns::new("e");
    let dir = std::env::temp_dir().join(format!("ferrynet-etcd-tls-{}", ns.name));
    make_certs(&dir);
    let data = dir.join("data");
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let mut child = ns
        .cmd(&[
            "etcd",
            "--name",
            "tls",
            "--data-dir",
            &data.to_string_lossy(),
        ])
        .args([
            "--listen-client-urls",
            "https://127.0.0.1:2379",
            "--advertise-client-urls",
            "https://127.0.0.1:2379",
        ])
        .args([
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
        ])
        .args(["--initial-cluster", "tls=http://127.0.0.1:2380"])
        .args([
            "--cert-file",
            &p("server.pem"),
            "--key-file",
            &p("server.key"),
        ])
        .args(["--trusted-ca-file", &p("ca.pem"), "--client-cert-auth"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let netns = ns.open();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 2379));
    assert!(eventually(20, || netns
        .run(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
        .unwrap()));
    let tls = ferrynet::cluster::EtcdTls {
        ca: dir.join("ca.pem"),
        cert: dir.join("client.pem"),
        key: dir.join("client.key"),
    };
    let result = netns.run(|| {
        // With the client certificate: the full lease semantics.
        let url = "https://127.0.0.1:2379".to_string();
        let mut store =
            ferrynet::cluster::EtcdStore::connect(std::slice::from_ref(&url), "/tls", Some(&tls))
                .unwrap();
        ferrynet::cluster::conformance::lease_semantics(&mut store);
        // Without TLS, etcd does not answer.
        let plain =
            ferrynet::cluster::EtcdStore::connect(&["http://127.0.0.1:2379".into()], "/tls", None);
        assert!(plain.is_err(), "plain HTTP must fail against a TLS etcd");
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap();
}

#[test]
fn agents_re_register_their_subnets_after_etcd_loses_its_data() {
    let fabric = Fabric::new();
    fabric
        .ns
        .exec(&["ip", "addr", "add", "10.200.0.2/24", "dev", "fab0"]);
    let mut etcd = Etcd::start(&fabric.ns, Ipv4Addr::new(10, 200, 0, 2));
    let hosts: Vec<Host> = (0..2).map(|_| Host::new()).collect();
    let mut agents = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        fabric.plug(h, &format!("10.200.0.{}", 11 + i), &format!("p{i}"));
        agents.push(agent_with(h, &etcd.url(), &format!("node{i}"), "6s"));
    }
    let before: Vec<String> = hosts
        .iter()
        .map(|h| std::fs::read_to_string(h.state.join("subnet.env")).unwrap())
        .collect();
    // etcd comes back empty.
    etcd.stop();
    std::fs::remove_dir_all(&etcd.dir).unwrap();
    etcd.resume();
    let list = |etcd: &Etcd| {
        let url = format!("http://{}:2379", etcd.ip);
        etcd.ns.run(move || {
            let mut s = ferrynet::cluster::EtcdStore::connect(&[url], "/ferrynet", None).unwrap();
            use ferrynet::cluster::Store;
            s.list().unwrap().leases.len()
        })
    };
    assert!(
        eventually(20, || list(&etcd) == 2),
        "both agents re-registered"
    );
    for (h, b) in hosts.iter().zip(&before) {
        assert_eq!(
            &std::fs::read_to_string(h.state.join("subnet.env")).unwrap(),
            b,
            "same subnet"
        );
    }
    drop(agents);
}
