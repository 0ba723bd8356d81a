//! A real runtime: podman 4.3 with its CNI backend runs containers on a ferrynet network,
//! unchanged. podman runs inside the test's host namespace (nsenter), with private
//! configuration and storage, so the machine's own podman setup is never touched.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

struct Podman<'a> {
    host: &'a Host,
    dir: PathBuf,
}

impl<'a> Podman<'a> {
    fn new(host: &'a Host) -> Podman<'a> {
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
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "fynet",
            "plugins": [{
                "type": "ferrynet",
                "bridge": "fypod0",
                "subnet": "10.73.0.0/24",
                "stateDir": host.state.to_string_lossy(),
                "capabilities": {"portMappings": true, "ips": true},
            }],
        });
        std::fs::write(dir.join("cni/fynet.conflist"), conflist.to_string()).unwrap();
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
    let podman = Podman::new(&host);
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
