//! Containers' endpoints: CreateEndpoint, Join, EndpointOperInfo and DeleteEndpoint as the
//! bridge driver's two-step endpoints, and external connectivity (published ports).

use std::path::Path;

use serde_json::json;

use super::api::*;
use super::plugin::{Plugin, Reply};
use super::ports::port_requests;
use crate::bridge::{AddressRequest, PrepareRequest, Source};
use crate::netlink::{Handle, Mac};

/// The endpoint's name in ferrynet's records: Docker names the container's interface itself
/// (`eth0`, `eth1`, ... from the DstPrefix).
pub const IFNAME: &str = "eth";

impl Plugin {
    pub(super) fn create_endpoint(&self, r: CreateEndpointRequest) -> Reply {
        // Before the first endpoint: after it the network's name is in its paths.
        self.learn_name(&r.network_id);
        let (_, net) = self.network(&r.network_id)?;
        let given = r.interface.unwrap_or_default();
        let v4 = match given.address.as_str() {
            "" => Source::Allocate(None),
            a => Source::Allocate(Some(
                a.parse::<ipnet::Ipv4Net>()
                    .map_err(|_| format!("invalid Interface.Address {a:?}"))?
                    .addr(),
            )),
        };
        let v6 = match given.address_ipv6.as_str() {
            "" => Source::Allocate(None),
            a => Source::Allocate(Some(
                a.parse::<ipnet::Ipv6Net>()
                    .map_err(|_| format!("invalid Interface.AddressIPv6 {a:?}"))?
                    .addr(),
            )),
        };
        let mac = match given.mac_address.as_str() {
            "" => None,
            m => Some(
                m.parse::<Mac>()
                    .map_err(|e| format!("Interface.MacAddress: {e}"))?,
            ),
        };
        let ep = self
            .driver
            .prepare_endpoint(
                &net,
                &PrepareRequest {
                    container_id: r.endpoint_id,
                    ifname: IFNAME.into(),
                    address: AddressRequest { v4, v6 },
                    mac,
                },
            )
            .map_err(|e| e.to_string())?;
        // Only what Docker left empty: echoing its own values back is an error to it.
        let filled = EndpointInterface {
            address: match (given.address.is_empty(), ep.ip) {
                (true, Some(ip)) => ip.to_string(),
                _ => String::new(),
            },
            address_ipv6: match (given.address_ipv6.is_empty(), ep.ip6) {
                (true, Some(ip)) => ip.to_string(),
                _ => String::new(),
            },
            mac_address: if given.mac_address.is_empty() {
                ep.mac.to_string()
            } else {
                String::new()
            },
        };
        let empty = filled.address.is_empty()
            && filled.address_ipv6.is_empty()
            && filled.mac_address.is_empty();
        Ok(serde_json::to_value(CreateEndpointResponse {
            interface: (!empty).then_some(filled),
        })
        .expect("serializable"))
    }

    pub(super) fn join(&self, r: JoinRequest) -> Reply {
        let (rec, net) = self.network(&r.network_id)?;
        let peer = peer_name(&net.name, &r.endpoint_id);
        let ep = self
            .driver
            .plug_endpoint(
                &net,
                &r.endpoint_id,
                IFNAME,
                &peer,
                Path::new(&r.sandbox_key),
            )
            .map_err(|e| e.to_string())?;
        let gw = |g: Option<String>| match rec.internal {
            true => String::new(),
            false => g.unwrap_or_default(),
        };
        Ok(serde_json::to_value(JoinResponse {
            interface_name: InterfaceName {
                src_name: peer,
                dst_prefix: "eth".into(),
            },
            gateway: gw(ep.gateway.map(|g| g.to_string())),
            gateway_ipv6: gw(ep.gateway6.map(|g| g.to_string())),
            static_routes: Vec::new(),
            // An internal network has no way out, and Docker must not make one.
            disable_gateway_service: rec.internal,
        })
        .expect("serializable"))
    }

    pub(super) fn delete_endpoint(&self, r: EndpointRequest) -> Reply {
        let (_, net) = match self.network(&r.network_id) {
            Ok(n) => n,
            // Nothing of ours can be left of an endpoint of a network we do not know.
            Err(_) if self.record(&r.network_id).ok().flatten().is_none() => return Ok(json!({})),
            Err(e) => return Err(e),
        };
        // The container's end of the veth is back in this namespace under its SrcName: the
        // host end's deletion takes both. Docker waits for this call (`docker run --rm`), and
        // the kernel's wait after a veth's deletion (~20-35 ms here) is nobody's business:
        // the veth goes on a thread of its own, and detach carries on once it is unlisted.
        if let Ok(Some(ep)) = self.driver.endpoint(&net.name, &r.endpoint_id, IFNAME) {
            unlist_veth(&ep.host_veth);
        }
        self.driver
            .detach(&net, &r.endpoint_id, IFNAME)
            .map_err(|e| e.to_string())?;
        Ok(json!({}))
    }

    pub(super) fn oper_info(&self, r: EndpointRequest) -> Reply {
        let (_, net) = self.network(&r.network_id)?;
        let ep = self
            .driver
            .endpoint(&net.name, &r.endpoint_id, IFNAME)
            .map_err(|e| e.to_string())?;
        let value = match ep {
            Some(ep) => json!({
                "network": ep.network,
                "bridge": net.bridge,
                "host_veth": ep.host_veth,
                "mac": ep.mac.to_string(),
                "ip": ep.ip.map(|i| i.to_string()),
                "ip6": ep.ip6.map(|i| i.to_string()),
                "ports": ep.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            }),
            None => json!({}),
        };
        Ok(json!({ "Value": value }))
    }

    pub(super) fn program(&self, r: ProgramExternalConnectivityRequest) -> Reply {
        let (rec, net) = self.network(&r.network_id)?;
        let ports = port_requests(r.options.as_ref(), self.ephemeral)?;
        if rec.internal {
            if !ports.is_empty() {
                tracing::warn!(
                    endpoint = r.endpoint_id.as_str(),
                    "internal network: published ports ignored"
                );
            }
            return Ok(json!({}));
        }
        // Under the one-call lock already: this lock only lends the choices' memory.
        let mut chosen = self.host_ports.lock().unwrap_or_else(|e| e.into_inner());
        self.driver
            .publish(&net, &r.endpoint_id, IFNAME, &ports, &mut chosen)
            .map_err(|e| e.to_string())?;
        Ok(json!({}))
    }

    pub(super) fn revoke(&self, r: EndpointRequest) -> Reply {
        let (_, net) = self.network(&r.network_id)?;
        let exists = self
            .driver
            .endpoint(&net.name, &r.endpoint_id, IFNAME)
            .map_err(|e| e.to_string())?
            .is_some();
        if exists {
            self.driver
                .set_ports(&net, &r.endpoint_id, IFNAME, &[])
                .map_err(|e| e.to_string())?;
        }
        Ok(json!({}))
    }
}

/// Deletes the link `name` on a thread of its own and returns once the kernel no longer lists
/// it (at most 50 ms): the deletion's own wait for the device's references then goes on in the
/// background. A plugin that stops meanwhile leaves nothing: the link is already unlisted.
fn unlist_veth(name: &str) {
    let owned = name.to_string();
    std::thread::spawn(move || {
        if let Ok(mut h) = Handle::new() {
            let _ = h.delete_link_by_name(&owned);
        }
    });
    let Ok(mut h) = Handle::new() else {
        return;
    };
    let end = std::time::Instant::now() + std::time::Duration::from_millis(50);
    while std::time::Instant::now() < end {
        match h.link_by_name(name) {
            Ok(Some(_)) => std::thread::sleep(std::time::Duration::from_micros(200)),
            _ => return,
        }
    }
}

/// The name of the veth end Docker moves into the container: derived from the endpoint like
/// the host end's (`vf…`), so both are known without a record.
pub fn peer_name(network: &str, endpoint_id: &str) -> String {
    let host = crate::bridge::host_veth_name(network, endpoint_id, IFNAME);
    format!("vp{}", &host[2..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_names_fit() {
        let p = peer_name("blue", &"a".repeat(64));
        assert_eq!(p.len(), 14);
        assert!(p.starts_with("vp"));
    }
}
