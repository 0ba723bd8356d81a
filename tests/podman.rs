//! A real runtime: podman 4.3 with its CNI backend runs containers on a ferrynet network,
//! IPv4-only or dual-stack, unchanged. podman runs inside the test's host namespace
//! (nsenter), with private configuration and storage, so the machine's own podman setup is
//! never touched.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

struct Podman<'a> {
    host: &'a Host,
    dir: PathBuf,
}

impl<'a> Podman<'a> {
    /// A private podman whose CNI networks are `networks`: (name, the ferrynet plugin's
    /// configuration, to which the state directory and the capabilities are added).
    fn new(host: &'a Host, networks: &[(&str, Value)]) -> Podman<'a> {
        let dir = std::env::temp_dir().join(format!("ferrynet-podman-{}", host.ns.name));
        for sub in ["cni", "rootfs/bin", "rootfs/www", "storage", "run", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let plugins = Path::new(BIN).parent().unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
tmp_dir = "{d}/tmp"
static_dir = "{d}/storage/libpod"
volume_path = "{d}/storage/volumes"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{}", "/usr/lib/cni"]
network_config_dir = "{d}/cni"
"#,
                plugins.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/storage\"\nrunroot = \"{d}/run\"\n"
            ),
        )
        .unwrap();
        for (name, plugin) in networks {
            let mut plugin = plugin.clone();
            plugin["type"] = json!("ferrynet");
            plugin["stateDir"] = json!(host.state.to_string_lossy());
            plugin["capabilities"] = json!({"portMappings": true, "ips": true});
            let conflist = json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]});
            let file = dir.join(format!("cni/{name}.conflist"));
            std::fs::write(file, conflist.to_string()).unwrap();
        }
        // An image without a registry: a static busybox.
        std::fs::copy("/bin/busybox", dir.join("rootfs/bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "ping", "httpd", "wget", "ip"] {
            std::os::unix::fs::symlink("busybox", dir.join("rootfs/bin").join(applet)).unwrap();
        }
        std::fs::write(dir.join("rootfs/www/index.html"), "hello from podman\n").unwrap();
        let podman = Podman { host, dir };
        let import = format!(
            "tar -C {}/rootfs -c . | nsenter --net=/run/netns/{} podman import - localhost/fybusy",
            podman.dir.display(),
            host.ns.name
        );
        ok(podman.env(Command::new("sh").args(["-c", &import])));
        podman
    }

    fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
    }

    /// `podman ARGS` in the host's namespace with the private configuration.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.host.ns.name))
            .arg("podman")
            .args(args);
        self.env(&mut cmd);
        cmd
    }

    fn podman(&self, args: &[&str]) -> String {
        ok(&mut self.command(args))
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.command(&["rm", "-f", "-t", "0", "--all"]).output();
        let _ = self.command(&["rmi", "-a", "-f"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn podman_runs_containers_on_a_ferrynet_network() {
    let host = Host::new();
    let world = World::attach_to(&host);
    let podman = Podman::new(
        &host,
        &[(
            "fynet",
            json!({"bridge": "fypod0", "subnet": "10.73.0.0/24"}),
        )],
    );
    podman.podman(&[
        "run",
        "-d",
        "--name",
        "c1",
        "--network",
        "fynet",
        "localhost/fybusy",
        "sleep",
        "600",
    ]);
    podman.podman(&[
        "run",
        "-d",
        "--name",
        "c2",
        "--network",
        "fynet",
        "localhost/fybusy",
        "sleep",
        "600",
    ]);
    podman.podman(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "fynet",
        "-p",
        "18080:80",
        "localhost/fybusy",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let ip_of = |name: &str| {
        podman
            .podman(&[
                "inspect",
                name,
                "--format",
                "{{.NetworkSettings.Networks.fynet.IPAddress}}",
            ])
            .trim()
            .to_string()
    };
    let (ip1, ip2) = (ip_of("c1"), ip_of("c2"));
    assert!(
        ip1.starts_with("10.73.0.") && ip2.starts_with("10.73.0.") && ip1 != ip2,
        "{ip1} {ip2}"
    );

    // Two containers ping each other over ferrynet's bridge.
    podman.podman(&["exec", "c2", "ping", "-c1", "-W2", &ip1]);
    podman.podman(&["exec", "c1", "ping", "-c1", "-W2", &ip2]);
    // The published port reaches busybox httpd from the outside world and from a neighbour.
    let page = world
        .ns
        .exec(&["busybox", "wget", "-qO-", "http://10.201.0.1:18080/"]);
    assert_eq!(page, "hello from podman\n");
    let page = podman.podman(&["exec", "c1", "wget", "-qO-", "http://10.201.0.1:18080/"]);
    assert_eq!(page, "hello from podman\n");
    assert_eq!(host.veths().len(), 3);

    // podman rm leaves nothing behind.
    podman.podman(&["rm", "-f", "-t", "0", "c1", "c2", "web"]);
    assert_eq!(host.veths(), Vec::<String>::new());
    assert_eq!(host.reservations("fynet"), Vec::<String>::new());
    assert_eq!(host.port_elements(), "");
}

#[test]
fn podman_runs_dual_stack_containers_on_a_ferrynet_network() {
    let host = Host::new();
    let world = World::attach_to(&host);
    world.add_ipv6(&host);
    let podman = Podman::new(
        &host,
        &[(
            "fydual",
            json!({"bridge": "fypod6", "subnet": ["10.74.0.0/24", "fd00:74::/64"]}),
        )],
    );
    let run = |name: &str, opts: &[&str], cmd: &[&str]| {
        let mut args = vec!["run", "-d", "--name", name, "--network", "fydual"];
        args.extend_from_slice(opts);
        args.push("localhost/fybusy");
        args.extend_from_slice(cmd);
        podman.podman(&args);
    };
    let sleep = ["sleep", "600"];
    run("c1", &[], &sleep);
    // Static addresses: both families (podman passes two in runtimeConfig.ips), and an IPv6
    // one alone (podman passes one in CNI_ARGS, IP=...); the other family is allocated.
    run(
        "c2",
        &["--ip", "10.74.0.50", "--ip6", "fd00:74::50"],
        &sleep,
    );
    run("c3", &["--ip6", "fd00:74::60"], &sleep);
    run(
        "web",
        &["-p", "18081:80"],
        &["httpd", "-f", "-p", "80", "-h", "/www"],
    );
    // What podman recorded from the dual-stack result: both addresses, both gateways.
    let addrs = |name: &str| -> (String, String) {
        let net = "{{with index .NetworkSettings.Networks \"fydual\"}}";
        let format = format!(
            "{net}{{{{.IPAddress}}}} {{{{.Gateway}}}} {{{{.GlobalIPv6Address}}}}/{{{{.GlobalIPv6PrefixLen}}}} {{{{.IPv6Gateway}}}}{{{{end}}}}"
        );
        let out = podman.podman(&["inspect", name, "--format", &format]);
        let f: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(f.len(), 4, "{name}: {out}");
        assert_eq!((f[1], f[3]), ("10.74.0.1", "fd00:74::1"), "{name}: {out}");
        assert!(f[2].ends_with("/64"), "{name}: {out}");
        (f[0].to_string(), f[2].trim_end_matches("/64").to_string())
    };
    let (ip1, ip6_1) = addrs("c1");
    let (ip2, ip6_2) = addrs("c2");
    let (ip3, ip6_3) = addrs("c3");
    let (ipw, ip6_w) = addrs("web");
    assert_eq!(
        (ip2.as_str(), ip6_2.as_str()),
        ("10.74.0.50", "fd00:74::50")
    );
    assert_eq!(ip6_3, "fd00:74::60");
    let mut all = vec![&ip1, &ip3, &ipw, &ip6_1, &ip6_w];
    assert!(
        all.iter()
            .all(|a| a.starts_with("10.74.0.") || a.starts_with("fd00:74::")),
        "{all:?}"
    );
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 5, "distinct addresses");

    // Inside: the global IPv6 address is usable at once (no DAD), the default route goes via
    // the bridge's IPv6 gateway.
    let inside = podman.podman(&["exec", "c1", "ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(inside.contains(&format!("{ip6_1}/64")), "{inside}");
    assert!(!inside.contains("tentative"), "{inside}");
    let routes = podman.podman(&["exec", "c1", "ip", "-6", "route", "show"]);
    assert!(routes.contains("default via fd00:74::1"), "{routes}");

    // The containers ping each other over IPv6 (and IPv4) on ferrynet's bridge; of two echo
    // requests one must come back (a first neighbour solicitation may be lost under load).
    let ping6 = |from: &str, to: &str| {
        podman.podman(&["exec", from, "ping", "-6", "-c2", "-i0.2", "-W2", to]);
    };
    ping6("c1", &ip6_2);
    ping6("c2", &ip6_1);
    ping6("c3", &ip6_1);
    podman.podman(&["exec", "c1", "ping", "-c1", "-W2", &ip2]);
    // The published port answers over both families, from the world and from a neighbour.
    for url in ["http://[fd00:201::1]:18081/", "http://10.201.0.1:18081/"] {
        let page = world.ns.exec(&["busybox", "wget", "-qO-", url]);
        assert_eq!(page, "hello from podman\n", "{url}");
    }
    let page = podman.podman(&["exec", "c1", "wget", "-qO-", "http://[fd00:201::1]:18081/"]);
    assert_eq!(page, "hello from podman\n");
    assert_eq!(host.veths().len(), 4);
    assert_eq!(host.reservations("fydual").len(), 8, "4 addresses, 4 keys");
    assert_eq!(host.reservations6("fydual").len(), 8, "4 addresses, 4 keys");
    let elements = host.container_elements();
    for set in ["inet ports6:", "bridge port_ips6:", "bridge nd_targets:"] {
        assert!(
            elements.iter().any(|e| e.starts_with(set)),
            "{set} {elements:#?}"
        );
    }

    // podman rm leaves nothing behind, in either family.
    podman.podman(&["rm", "-f", "-t", "0", "c1", "c2", "c3", "web"]);
    assert_eq!(host.veths(), Vec::<String>::new());
    assert_eq!(host.reservations("fydual"), Vec::<String>::new());
    assert_eq!(host.reservations6("fydual"), Vec::<String>::new());
    assert_eq!(host.container_elements(), Vec::<String>::new());
}
