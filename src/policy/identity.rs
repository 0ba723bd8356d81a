//! Who an endpoint is, for policy: its namespace, labels and named ports, given at attach
//! (`--namespace`, `--label`, `--port-name`) or by the runtime at CNI ADD (`K8S_POD_NAMESPACE`
//! and `K8S_POD_NAME` in `CNI_ARGS`, `args.cni.labels`, `args.cni.namedPorts`). It is kept in
//! the endpoint's own record on its host, written once with the rest of the record (no
//! per-ADD write of a cluster-wide file, so ADD stays flat); publishing it to the cluster
//! store for other hosts is the agent's job.

use serde::{Deserialize, Serialize};

use super::inventory::NamedPort;
use super::model::{Labels, Protocol, DEFAULT_NAMESPACE};
use super::selector::{validate_label_key, validate_label_value};
use super::validate::{namespace_name, port_name};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub namespace: String,
    /// The pod's name (CNI's K8S_POD_NAME), when the runtime gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named_ports: Vec<NamedPort>,
}

impl Default for Identity {
    fn default() -> Identity {
        Identity {
            namespace: DEFAULT_NAMESPACE.into(),
            name: None,
            labels: Labels::new(),
            named_ports: Vec::new(),
        }
    }
}

impl Identity {
    /// Every field as Kubernetes would check it; the error names the field and the value.
    pub fn validate(&self, source: &str) -> Result<(), String> {
        let field = |f: &str| format!("{source}{f}");
        namespace_name("namespace", &self.namespace)
            .map_err(|e| format!("{}: {}", field("namespace"), e.message))?;
        for (k, v) in &self.labels {
            validate_label_key(k).map_err(|e| format!("{} {k:?}: {e}", field("label")))?;
            validate_label_value(v).map_err(|e| format!("{} {k}={v:?}: {e}", field("label")))?;
        }
        for (i, p) in self.named_ports.iter().enumerate() {
            port_name("name", &p.name)
                .map_err(|e| format!("{} {:?}: {}", field("port name"), p.name, e.message))?;
            if p.port == 0 {
                return Err(format!("{} {}: port 0", field("port name"), p.name));
            }
            if self.named_ports[..i].iter().any(|q| q.name == p.name) {
                return Err(format!("{} {:?}: given twice", field("port name"), p.name));
            }
        }
        Ok(())
    }
}

/// `NAME=PORT[/tcp|udp|sctp]`, as `--port-name serve-80-tcp=80/tcp`.
pub fn parse_named_port(s: &str) -> Result<NamedPort, String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=PORT[/PROTOCOL]"))?;
    let (port, protocol) = match rest.split_once('/') {
        Some((p, proto)) => (p, proto),
        None => (rest, "tcp"),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: port {port:?} is not 1-65535"))?;
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        other => return Err(format!("{s:?}: protocol {other:?} is not tcp, udp or sctp")),
    };
    Ok(NamedPort {
        name: name.to_string(),
        port,
        protocol,
    })
}

/// `KEY=VALUE`, as `--label tier=web`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_checked_as_kubernetes_does() {
        let mut id = Identity::default();
        id.labels.insert("pod".into(), "a".into());
        id.named_ports
            .push(parse_named_port("serve-80-tcp=80/tcp").unwrap());
        id.named_ports
            .push(parse_named_port("serve-81-udp=81/udp").unwrap());
        assert_eq!(id.validate(""), Ok(()));
        for (bad, expect) in [
            (
                Identity {
                    namespace: "X".into(),
                    ..Identity::default()
                },
                "namespace",
            ),
            (
                Identity {
                    labels: [("bad key!".to_string(), "a".to_string())].into(),
                    ..Identity::default()
                },
                "label \"bad key!\"",
            ),
            (
                Identity {
                    named_ports: vec![parse_named_port("Serve=80").unwrap()],
                    ..Identity::default()
                },
                "port name \"Serve\"",
            ),
        ] {
            let e = bad.validate("").unwrap_err();
            assert!(e.contains(expect), "{e}");
        }
        assert!(parse_named_port("x=http")
            .unwrap_err()
            .contains("not 1-65535"));
        assert!(parse_named_port("x=80/icmp")
            .unwrap_err()
            .contains("not tcp, udp or sctp"));
        assert!(parse_label("novalue").is_err());
    }
}
