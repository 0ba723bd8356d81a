//! The ADD result, built in the 1.1.0 shape and converted to the configuration's version.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use crate::bridge::{Endpoint, RouteSpec};
use crate::netlink::Mac;

/// What an IPAM plugin returned: the first IPv4 address, its gateway, routes and DNS.
#[derive(Debug, Clone)]
pub struct IpamResult {
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub routes: Vec<RouteSpec>,
    pub dns: Option<Value>,
}

/// Reads an IPAM (or prevResult) result of any supported version.
pub fn parse_ipam_result(v: &Value) -> Option<IpamResult> {
    let ip = v.get("ips")?.as_array()?.iter().find_map(|ip| {
        let addr: Ipv4Net = ip.get("address")?.as_str()?.parse().ok()?;
        let gw = ip
            .get("gateway")
            .and_then(Value::as_str)
            .and_then(|g| g.parse().ok());
        Some((addr, gw))
    })?;
    let routes = v
        .get("routes")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .filter_map(|r| {
                    Some(RouteSpec {
                        dst: r.get("dst")?.as_str()?.parse::<Ipv4Net>().ok()?.trunc(),
                        gw: r
                            .get("gw")
                            .and_then(Value::as_str)
                            .and_then(|g| g.parse().ok()),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(IpamResult {
        address: ip.0,
        gateway: ip.1,
        routes,
        dns: v.get("dns").cloned(),
    })
}

pub struct AddResult<'a> {
    pub bridge: &'a str,
    pub bridge_mac: Option<Mac>,
    pub endpoint: &'a Endpoint,
    pub gateway: Option<Ipv4Addr>,
    pub routes: &'a [RouteSpec],
    pub dns: Option<&'a Value>,
}

impl AddResult<'_> {
    /// The result JSON for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let ep = self.endpoint;
        let mut bridge = json!({ "name": self.bridge });
        if let Some(mac) = self.bridge_mac {
            bridge["mac"] = json!(mac.to_string());
        }
        let interfaces = json!([
            bridge,
            { "name": ep.host_veth, "mac": ep.host_mac.to_string() },
            { "name": ep.ifname, "mac": ep.mac.to_string(), "sandbox": ep.netns.display().to_string() },
        ]);
        let mut ip = json!({
            "address": ep.ip.map(|n| n.to_string()).unwrap_or_default(),
            "interface": 2,
        });
        if let Some(gw) = self.gateway {
            ip["gateway"] = json!(gw.to_string());
        }
        if legacy(cni_version) {
            ip["version"] = json!("4");
        }
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut v = json!({ "dst": r.dst.to_string() });
                if let Some(gw) = r.gw.or(self.gateway) {
                    v["gw"] = json!(gw.to_string());
                }
                v
            })
            .collect();
        let mut out = json!({
            "cniVersion": cni_version,
            "interfaces": interfaces,
            "ips": [ip],
            "routes": routes,
        });
        if let Some(dns) = self.dns {
            out["dns"] = dns.clone();
        }
        out
    }
}

/// Versions before 1.0.0 carry `"version": "4"` on each IP.
fn legacy(cni_version: &str) -> bool {
    cni_version.starts_with("0.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_old_and_new_ipam_results() {
        let old = json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.5/24","gateway":"10.1.0.1"}],
                         "routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.1.0.1"]}});
        let r = parse_ipam_result(&old).unwrap();
        assert_eq!(r.address.to_string(), "10.1.0.5/24");
        assert_eq!(r.gateway, Some(Ipv4Addr::new(10, 1, 0, 1)));
        assert_eq!(r.routes.len(), 1);
        assert!(r.dns.is_some());
        assert!(parse_ipam_result(&json!({"ips":[]})).is_none());
    }
}
