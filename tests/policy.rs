//! The policy, namespace and endpoint commands end to end through the binary, on the
//! embedded file store of a temporary state directory (no namespaces, no network).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ferrynet::cluster::{objects, FileStore};
use ferrynet::policy::{EndpointRecord, Labels, NamedPort, Protocol};

struct StateDir(PathBuf);

impl StateDir {
    fn new() -> StateDir {
        let mut r = [0u8; 4];
        ferrynet::util::fill_random(&mut r);
        let dir = std::env::temp_dir().join(format!("ferrynet-policy-{}", u32::from_ne_bytes(r)));
        std::fs::create_dir_all(&dir).unwrap();
        StateDir(dir)
    }

    fn store(&self) -> FileStore {
        FileStore::new(self.0.join("cluster.json"))
    }

    /// Runs `ferrynet ARGS` (with `stdin` on its standard input).
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrynet"))
            .args(args)
            .env("FERRYNET_STATE_DIR", &self.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Standard output of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None)
    }

    fn ok_with(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "ferrynet {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Standard error of a command that must fail.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(!out.status.success(), "ferrynet {args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
    ports: [{port: serve-80-tcp}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: no-z}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {ns: x}}}
  ingress:
  - {name: deny-z, action: Deny, from: [{namespaces: {matchLabels: {ns: z}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  egress:
  - {action: Deny, to: [{networks: [203.0.113.0/24]}]}
"#;

fn endpoint(id: &str, namespace: &str, pod: &str, last: u8) -> EndpointRecord {
    EndpointRecord {
        id: id.into(),
        namespace: namespace.into(),
        name: Some(pod.into()),
        labels: Labels::new(),
        named_ports: vec![NamedPort {
            name: "serve-80-tcp".into(),
            port: 80,
            protocol: Protocol::Tcp,
        }],
        addresses: vec![format!("10.244.1.{last}").parse().unwrap()],
        host: "h1".into(),
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn apply_list_show_remove() {
    let state = StateDir::new();
    let file = state.write("policies.yaml", POLICIES);
    assert_eq!(
        lines(&state.ok(&["policy", "apply", "-f", &file])),
        [
            "NetworkPolicy x/allow-from-y created",
            "AdminNetworkPolicy no-z created",
            "BaselineAdminNetworkPolicy default created"
        ]
    );
    assert!(state
        .ok(&["policy", "apply", "-f", &file])
        .lines()
        .all(|l| l.ends_with(" unchanged")));
    let changed = state.write(
        "changed.yaml",
        &POLICIES.replace("priority: 10", "priority: 20"),
    );
    assert!(state
        .ok(&["policy", "apply", "-f", &changed])
        .contains("AdminNetworkPolicy no-z configured"));

    // Listed in evaluation order: admin, NetworkPolicy, baseline.
    let table = state.ok(&["policy", "ls"]);
    let rows = lines(&table);
    assert!(rows[0].starts_with("KIND"), "{table}");
    assert!(
        rows[1].starts_with("AdminNetworkPolicy") && rows[1].contains(" 20 "),
        "{table}"
    );
    assert!(
        rows[2].starts_with("NetworkPolicy") && rows[2].contains("x/allow-from-y"),
        "{table}"
    );
    assert!(rows[3].starts_with("BaselineAdminNetworkPolicy"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&state.ok(&["policy", "ls", "--json"])).unwrap();
    assert_eq!(json[1]["kind"], "NetworkPolicy");
    assert_eq!(json[1]["namespace"], "x");
    assert_eq!(json[1]["directions"], serde_json::json!(["Ingress"]));
    assert_eq!(json[0]["priority"], 20);

    // show prints what apply reads back.
    let shown = state.ok(&["policy", "show", "x/allow-from-y"]);
    let object: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        object["spec"]["ingress"][0]["ports"][0]["port"],
        "serve-80-tcp"
    );
    assert_eq!(
        state.ok_with(&["policy", "apply", "-f", "-"], Some(&shown)),
        "NetworkPolicy x/allow-from-y unchanged\n"
    );
    assert!(state
        .ok(&["policy", "show", "default"])
        .contains("BaselineAdminNetworkPolicy"));

    // A bad document is refused whole, with the field and value named.
    let bad = state.write(
        "bad.yaml",
        &format!("{POLICIES}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: new}}\nspec:\n  podSelector: {{}}\n  ingress: [{{ports: [{{port: 80, endPort: 70}}]}}]\n"),
    );
    let err = state.fails(&["policy", "apply", "-f", &bad]);
    assert!(
        err.contains(
            "NetworkPolicy default/new: spec.ingress[0].ports[0].endPort: 70 is below port 80"
        ),
        "{err}"
    );
    assert!(state
        .fails(&["policy", "show", "default/new"])
        .contains("no policy default/new"));

    assert_eq!(
        state.ok(&["policy", "rm", "x/allow-from-y"]),
        "NetworkPolicy x/allow-from-y deleted\n"
    );
    assert!(state
        .fails(&["policy", "rm", "x/allow-from-y"])
        .contains("no policy"));
    state.ok(&["policy", "rm", "no-z"]);
    state.ok(&["policy", "rm", "default"]);
    assert_eq!(lines(&state.ok(&["policy", "ls"])).len(), 1);
}

#[test]
fn labels_and_eval() {
    let state = StateDir::new();
    {
        let mut store = state.store();
        objects::put_endpoint(&mut store, &endpoint("c-xa", "x", "a", 2)).unwrap();
        objects::put_endpoint(&mut store, &endpoint("c-yb", "y", "b", 3)).unwrap();
        objects::put_endpoint(&mut store, &endpoint("c-zc", "z", "c", 4)).unwrap();
    }
    let file = state.write("policies.yaml", POLICIES);
    state.ok(&["policy", "apply", "-f", &file]);
    for ns in ["x", "y", "z"] {
        let label = format!("ns={ns}");
        state.ok(&["namespace", "label", ns, &label, "env=test"]);
    }
    assert_eq!(
        state.ok(&["namespace", "label", "y", "env-"]),
        "namespace y: ns=y\n"
    );
    assert!(state
        .fails(&["namespace", "label", "y", "bad label"])
        .contains("label \"bad label\""));
    // Not selected yet: x/a has no pod label, so nothing isolates it.
    let eval = |from: &str, to: &str, port: &str| {
        state.ok(&["policy", "eval", "--from", from, "--to", to, "--port", port])
    };
    assert!(
        eval("y/b", "x/a", "81/tcp").starts_with("allow"),
        "{}",
        eval("y/b", "x/a", "81/tcp")
    );
    assert_eq!(
        state.ok(&["endpoint", "label", "c-xa", "pod=a", "tier=web"]),
        "endpoint c-xa: pod=a,tier=web\n"
    );
    assert!(state
        .fails(&["endpoint", "label", "nope", "pod=a"])
        .contains("no endpoint nope"));
    // Now the NetworkPolicy isolates x/a: only y on the named port.
    let allowed = eval("y/b", "x/a", "80/tcp");
    assert!(
        allowed.starts_with(
            "allow y/b -> x/a 80/tcp: ingress: NetworkPolicy x/allow-from-y ingress[0]"
        ),
        "{allowed}"
    );
    let other_port = eval("y/b", "x/a", "81/tcp");
    assert!(
        other_port.starts_with("deny")
            && other_port.contains("isolated by NetworkPolicy x/allow-from-y"),
        "{other_port}"
    );
    // The admin Deny wins over everything for z, by its rule name.
    let from_z = eval("z/c", "x/a", "80/tcp");
    assert!(
        from_z.contains("AdminNetworkPolicy no-z ingress[0] \"deny-z\" (priority 10)"),
        "{from_z}"
    );
    // The baseline decides egress to its network; outside it, nothing applies.
    assert!(eval("y/b", "203.0.113.9", "443/tcp").starts_with(
        "deny y/b -> 203.0.113.9 443/tcp: egress: BaselineAdminNetworkPolicy default egress[0]"
    ));
    assert!(eval("y/b", "198.51.100.1", "443/tcp").starts_with("allow"));
    let json: serde_json::Value = serde_json::from_str(&state.ok(&[
        "policy",
        "eval",
        "--from",
        "z/c",
        "--to",
        "10.244.1.2",
        "--port",
        "icmp",
        "--json",
    ]))
    .unwrap();
    assert_eq!(json["action"], "Deny");
    assert_eq!(json["ingress"]["reason"]["by"], "admin");
    assert!(state
        .fails(&["policy", "eval", "--from", "q/a", "--to", "x/a"])
        .contains("no endpoint a in namespace q"));
    assert!(Path::new(&state.0.join("cluster.json")).exists());
}
