//! The ADD result, built in the 1.1.0 shape and converted to the configuration's version.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::{json, Value};

use crate::bridge::{Endpoint, RouteSpec};
use crate::netlink::Mac;

/// What an IPAM plugin returned (or a prevResult says): the first address of each family
/// with its gateway, the routes and DNS.
#[derive(Debug, Clone, Default)]
pub struct IpamResult {
    pub v4: Option<(Ipv4Net, Option<Ipv4Addr>)>,
    pub v6: Option<(Ipv6Net, Option<Ipv6Addr>)>,
    pub routes: Vec<RouteSpec>,
    pub dns: Option<Value>,
}

impl IpamResult {
    /// The addresses, IPv4 first.
    pub fn addresses(&self) -> Vec<IpNet> {
        let v4 = self.v4.map(|(a, _)| IpNet::V4(a));
        v4.into_iter()
            .chain(self.v6.map(|(a, _)| IpNet::V6(a)))
            .collect()
    }

    /// The gateways, IPv4 first.
    pub fn gateways(&self) -> Vec<IpAddr> {
        let v4 = self.v4.and_then(|(_, g)| g).map(IpAddr::V4);
        v4.into_iter()
            .chain(self.v6.and_then(|(_, g)| g).map(IpAddr::V6))
            .collect()
    }
}

/// Reads an IPAM (or prevResult) result of any supported version; `None` without an address.
pub fn parse_ipam_result(v: &Value) -> Option<IpamResult> {
    let mut out = IpamResult::default();
    for ip in v.get("ips")?.as_array()? {
        let Some(addr) = ip.get("address").and_then(Value::as_str) else {
            continue;
        };
        let gw = ip.get("gateway").and_then(Value::as_str);
        match addr.parse::<IpNet>() {
            Ok(IpNet::V4(a)) if out.v4.is_none() => {
                out.v4 = Some((a, gw.and_then(|g| g.parse().ok())))
            }
            Ok(IpNet::V6(a)) if out.v6.is_none() => {
                out.v6 = Some((a, gw.and_then(|g| g.parse().ok())))
            }
            _ => {}
        }
    }
    if out.v4.is_none() && out.v6.is_none() {
        return None;
    }
    out.routes = v
        .get("routes")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .filter_map(|r| {
                    Some(RouteSpec {
                        dst: r.get("dst")?.as_str()?.parse::<IpNet>().ok()?.trunc(),
                        gw: r
                            .get("gw")
                            .and_then(Value::as_str)
                            .and_then(|g| g.parse().ok()),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    out.dns = v.get("dns").cloned();
    Some(out)
}

pub struct AddResult<'a> {
    pub bridge: &'a str,
    pub bridge_mac: Option<Mac>,
    pub endpoint: &'a Endpoint,
    /// The gateway of each family to report (the bridge's, or the IPAM plugin's).
    pub gateways: &'a [IpAddr],
    pub routes: &'a [RouteSpec],
    pub dns: Option<&'a Value>,
}

impl AddResult<'_> {
    fn gateway_of(&self, v6: bool) -> Option<IpAddr> {
        self.gateways.iter().copied().find(|g| g.is_ipv6() == v6)
    }

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
        let addresses: Vec<IpNet> = ep
            .ip
            .map(IpNet::V4)
            .into_iter()
            .chain(ep.ip6.map(IpNet::V6))
            .collect();
        let ips: Vec<Value> = addresses
            .iter()
            .map(|addr| {
                let v6 = matches!(addr, IpNet::V6(_));
                let mut ip = json!({ "address": addr.to_string(), "interface": 2 });
                if let Some(gw) = self.gateway_of(v6) {
                    ip["gateway"] = json!(gw.to_string());
                }
                if legacy(cni_version) {
                    ip["version"] = json!(if v6 { "6" } else { "4" });
                }
                ip
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut v = json!({ "dst": r.dst.to_string() });
                let v6 = matches!(r.dst, IpNet::V6(_));
                if let Some(gw) = r.gw.or(self.gateway_of(v6)) {
                    v["gw"] = json!(gw.to_string());
                }
                v
            })
            .collect();
        let mut out = json!({
            "cniVersion": cni_version,
            "interfaces": interfaces,
            "ips": ips,
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
        let (address, gateway) = r.v4.unwrap();
        assert_eq!(address.to_string(), "10.1.0.5/24");
        assert_eq!(gateway, Some(Ipv4Addr::new(10, 1, 0, 1)));
        assert!(r.v6.is_none());
        assert_eq!(r.routes.len(), 1);
        assert!(r.dns.is_some());
        assert!(parse_ipam_result(&json!({"ips":[]})).is_none());
        let dual = json!({"cniVersion":"1.1.0","ips":[{"address":"fd00::5/64","gateway":"fd00::1"},
                          {"address":"10.1.0.5/24"}]});
        let r = parse_ipam_result(&dual).unwrap();
        assert_eq!(r.v6.unwrap().0.to_string(), "fd00::5/64");
        assert_eq!(r.addresses().len(), 2);
        assert_eq!(r.gateways(), vec!["fd00::1".parse::<IpAddr>().unwrap()]);
    }
}
