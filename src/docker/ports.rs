//! Published ports: Docker's `com.docker.network.portmap` as ferrynet's port mappings.

use std::net::IpAddr;

use serde_json::Value;

use super::api::*;
use crate::firewall::{PortMapping, Protocol};

/// `com.docker.network.portmap` as ferrynet's port mappings (duplicates merged: Docker may
/// send one binding per family for "all host addresses").
pub(super) fn port_mappings(opts: Option<&Options>) -> Result<Vec<PortMapping>, String> {
    let bindings: Vec<PortBinding> = match opts.and_then(|o| o.get("com.docker.network.portmap")) {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| format!("invalid com.docker.network.portmap: {e}"))?,
    };
    let mut out: Vec<PortMapping> = Vec::new();
    for b in bindings {
        let protocol = match b.proto {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            132 => Protocol::Sctp,
            n => {
                return Err(format!(
                    "published port {}: unknown protocol number {n}",
                    b.port
                ))
            }
        };
        if b.host_port == 0 {
            return Err(format!(
                "published port {}/{protocol} has no host port: ferrynet needs one (-p HOST:{})",
                b.port, b.port
            ));
        }
        if b.port == 0 {
            return Err(format!("published port {}: container port 0", b.host_port));
        }
        let host_ip = match b.host_ip.as_deref() {
            None | Some("") => None,
            Some(s) => {
                let ip: IpAddr = s.parse().map_err(|_| {
                    format!("published port {}: invalid host address {s:?}", b.host_port)
                })?;
                (!ip.is_unspecified()).then_some(ip)
            }
        };
        let p = PortMapping {
            host_port: b.host_port,
            container_port: b.port,
            protocol,
            host_ip,
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: Value) -> Options {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn ports() {
        use serde_json::json;
        let o = opts(json!({"com.docker.network.portmap": [
            {"HostIP": "", "HostPort": 8080, "HostPortEnd": 8080, "Port": 80, "Proto": 6},
            {"HostIP": "0.0.0.0", "HostPort": 8080, "HostPortEnd": 8080, "Port": 80, "Proto": 6},
            {"HostIP": "10.0.0.1", "HostPort": 53, "HostPortEnd": 53, "Port": 53, "Proto": 17}
        ]}));
        let ports = port_mappings(Some(&o)).unwrap();
        assert_eq!(
            ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            ["8080:80/tcp", "10.0.0.1:53:53/udp"]
        );
        let o = opts(json!({"com.docker.network.portmap": [
            {"HostIP": "", "HostPort": 0, "Port": 80, "Proto": 6}]}));
        assert!(port_mappings(Some(&o))
            .unwrap_err()
            .contains("no host port"));
        assert!(port_mappings(None).unwrap().is_empty());
    }
}
