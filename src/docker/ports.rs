//! Published ports: Docker's `com.docker.network.portmap` as ferrynet's port requests (a
//! host port, or a range for ferrynet to choose from: [`crate::bridge::HostPorts`]).

use std::net::IpAddr;

use serde_json::Value;

use super::api::*;
use crate::bridge::PortRequest;
use crate::firewall::Protocol;

/// Docker's default range for a port published without a host port when the kernel's
/// ephemeral range cannot be read (moby's portallocator).
pub const DEFAULT_RANGE: (u16, u16) = (49153, 65535);

/// Where `-p 80` takes its host port, as Docker's bridge does: the kernel's ephemeral port
/// range in the plugin's (= the daemon's) network namespace, else [`DEFAULT_RANGE`].
pub fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            match (it.next()??, it.next()??) {
                (a, b) if 0 < a && a <= b => Some((a, b)),
                _ => None,
            }
        })
        .unwrap_or(DEFAULT_RANGE)
}

/// `com.docker.network.portmap` as ferrynet's port requests (duplicates merged: Docker may
/// send one binding per family for "all host addresses"). HostPort 0 (`-p 80`, `-P`) asks
/// for a port of `ephemeral`, HostPort..HostPortEnd (`-p 8000-8010:80`) for one of that
/// range.
pub(super) fn port_requests(
    opts: Option<&Options>,
    ephemeral: (u16, u16),
) -> Result<Vec<PortRequest>, String> {
    let bindings: Vec<PortBinding> = match opts.and_then(|o| o.get("com.docker.network.portmap")) {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| format!("invalid com.docker.network.portmap: {e}"))?,
    };
    let mut out: Vec<PortRequest> = Vec::new();
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
        if b.port == 0 {
            return Err(format!("published port {}: container port 0", b.host_port));
        }
        let host_ports = match (b.host_port, b.host_port_end) {
            (0, 0) => ephemeral,
            (first, last) if last == 0 || last == first => (first, first),
            (first, last) if first != 0 && first < last => (first, last),
            (first, last) => {
                return Err(format!(
                    "published port {}/{protocol}: invalid host port range {first}-{last}",
                    b.port
                ))
            }
        };
        let host_ip = match b.host_ip.as_deref() {
            None | Some("") => None,
            Some(s) => {
                let ip: IpAddr = s.parse().map_err(|_| {
                    format!("published port {}: invalid host address {s:?}", b.port)
                })?;
                (!ip.is_unspecified()).then_some(ip)
            }
        };
        let p = PortRequest {
            container_port: b.port,
            protocol,
            host_ip,
            host_ports,
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
        let eph = (32768, 60999);
        let o = opts(json!({"com.docker.network.portmap": [
            {"HostIP": "", "HostPort": 8080, "HostPortEnd": 8080, "Port": 80, "Proto": 6},
            {"HostIP": "0.0.0.0", "HostPort": 8080, "HostPortEnd": 8080, "Port": 80, "Proto": 6},
            {"HostIP": "10.0.0.1", "HostPort": 53, "HostPortEnd": 53, "Port": 53, "Proto": 17},
            {"HostIP": "", "HostPort": 0, "HostPortEnd": 0, "Port": 81, "Proto": 6},
            {"HostIP": "::", "HostPort": 0, "HostPortEnd": 0, "Port": 81, "Proto": 6},
            {"HostIP": "", "HostPort": 8000, "HostPortEnd": 8010, "Port": 82, "Proto": 17},
            {"HostIP": "", "HostPort": 9000, "Port": 83, "Proto": 6}
        ]}));
        let ports = port_requests(Some(&o), eph).unwrap();
        assert_eq!(
            ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            [
                "8080:80/tcp",
                "10.0.0.1:53:53/udp",
                "32768-60999:81/tcp",
                "8000-8010:82/udp",
                "9000:83/tcp"
            ]
        );
        for (first, last) in [(8010, 8000), (0, 8000)] {
            let o = opts(json!({"com.docker.network.portmap": [
                {"HostIP": "", "HostPort": first, "HostPortEnd": last, "Port": 80, "Proto": 6}]}));
            let e = port_requests(Some(&o), eph).unwrap_err();
            assert!(e.contains("invalid host port range"), "{e}");
        }
        assert!(port_requests(None, eph).unwrap().is_empty());
        let r = ephemeral_range();
        assert!(r.0 > 0 && r.0 <= r.1, "{r:?}");
    }
}
