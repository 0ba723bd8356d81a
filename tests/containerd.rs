//! A real runtime: containerd's `ctr run --cni` attaches a task to a ferrynet network, and its
//! `--rm` cleanup (DEL with an empty CNI_NETNS, after the task died) leaves nothing behind.
//! containerd runs with private directories and socket; ctr runs in the test's host
//! namespace and in a private mount namespace where the test's conflist and plugin directory
//! are bind-mounted over /etc/cni/net.d and /usr/lib/cni (the only places ctr looks).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct Containerd {
    dir: PathBuf,
    daemon: Child,
}

impl Containerd {
    fn start(host: &Host) -> Containerd {
        let dir = std::env::temp_dir().join(format!("ferrynet-containerd-{}", host.ns.name));
        for sub in [
            "cni",
            "plugins",
            "root",
            "state",
            "image/rootfs/bin",
            "image/oci/blobs/sha256",
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let d = dir.display();
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{d}/containerd.sock\"\n"
            ),
        )
        .unwrap();
        // ferrynet and the reference plugins in one directory, as /usr/lib/cni will show it.
        std::fs::copy(BIN, dir.join("plugins/ferrynet")).unwrap();
        for e in std::fs::read_dir("/usr/lib/cni").unwrap().flatten() {
            std::fs::copy(e.path(), dir.join("plugins").join(e.file_name())).unwrap();
        }
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "fyctr",
            "plugins": [{"type": "ferrynet", "bridge": "fyctr0", "subnet": "10.72.0.0/24",
                         "stateDir": host.state.to_string_lossy()}],
        });
        std::fs::write(dir.join("cni/10-fyctr.conflist"), conflist.to_string()).unwrap();
        let daemon = Command::new("containerd")
            .arg("-c")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let c = Containerd { dir, daemon };
        let sock = c.dir.join("containerd.sock");
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c.import_busybox();
        c
    }

    /// An OCI image of a static busybox, made by hand (no registry here).
    fn import_busybox(&self) {
        let script = r#"set -e
cd "$1/image"
cp /bin/busybox rootfs/bin/busybox
for a in sh ping ip sleep; do ln -sf busybox rootfs/bin/$a; done
blob() { d=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" oci/blobs/sha256/$d; echo "$d $(stat -c%s "$1")"; }
tar -C rootfs -cf layer.tar .
set -- "$1" $(blob layer.tar); L=$2 LS=$3
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' $L > config.json
set -- "$1" $(blob config.json); C=$2 CS=$3
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' $C $CS $L $LS > manifest.json
set -- "$1" $(blob manifest.json); M=$2 MS=$3
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"localhost/fybusy:latest"}}]}' $M $MS > oci/index.json
echo '{"imageLayoutVersion":"1.0.0"}' > oci/oci-layout
tar -C oci -cf image.tar .
"#;
        ok(Command::new("sh").args(["-c", script, "sh"]).arg(&self.dir));
        ok(self
            .ctr()
            .args(["images", "import"])
            .arg(self.dir.join("image/image.tar")));
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(self.dir.join("containerd.sock"));
        c
    }

    /// `ctr run --rm --cni` in the host namespace with the test's CNI directories.
    fn run(&self, host: &Host, name: &str, script: &str) -> String {
        let d = self.dir.display();
        let inner = format!(
            "mkdir -p /etc/cni/net.d && mount --bind {d}/cni /etc/cni/net.d && mount --bind {d}/plugins /usr/lib/cni && \
             exec ctr -a {d}/containerd.sock run --rm --cni localhost/fybusy:latest {name} sh -c '{script}'"
        );
        ok(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", host.ns.name))
            .args(["unshare", "-m", "sh", "-c", &inner]))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn ctr_run_with_cni_attaches_and_rm_cleans_up() {
    let host = Host::new();
    let containerd = Containerd::start(&host);
    let out = containerd.run(
        &host,
        "fyc1",
        "ip -o -4 addr show eth0; ip route; ping -c1 -W2 10.72.0.1 >/dev/null && echo gateway-ok",
    );
    assert!(out.contains("10.72.0.2/24"), "{out}");
    assert!(out.contains("default via 10.72.0.1"), "{out}");
    assert!(out.contains("gateway-ok"), "{out}");
    // --rm sent DEL with an empty CNI_NETNS after the task died: nothing is left.
    assert_eq!(host.veths(), Vec::<String>::new());
    assert_eq!(host.reservations("fyctr"), Vec::<String>::new());
}
