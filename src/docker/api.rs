//! The libnetwork remote network driver protocol: every call is `POST /<Method>` with a JSON
//! body, answered with JSON; an error is `{"Err": "..."}`. Field names are Docker's. Docker
//! sends `null` for absent lists and maps, so every optional field accepts it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub type Options = Map<String, Value>;

/// One address pool of a network, as Docker's IPAM hands it over.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamData {
    #[serde(default)]
    pub address_space: Option<String>,
    #[serde(default)]
    pub pool: Option<String>,
    /// The gateway with the pool's prefix (`10.90.0.1/24`).
    #[serde(default)]
    pub gateway: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options", default)]
    pub options: Option<Options>,
    #[serde(rename = "IPv4Data", default)]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    pub ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Debug, Deserialize)]
pub struct NetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// An endpoint's interface: addresses with their prefixes (`10.90.0.2/24`) and MAC. In a
/// response only the fields Docker left empty may be set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointInterface {
    #[serde(rename = "Address", default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(
        rename = "AddressIPv6",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    #[serde(
        rename = "MacAddress",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub mac_address: String,
}

#[derive(Debug, Deserialize)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", default)]
    pub interface: Option<EndpointInterface>,
}

#[derive(Debug, Serialize)]
pub struct CreateEndpointResponse {
    #[serde(rename = "Interface", skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
}

/// Leave, DeleteEndpoint, EndpointOperInfo, RevokeExternalConnectivity.
#[derive(Debug, Deserialize)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Debug, Deserialize)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "SandboxKey", default)]
    pub sandbox_key: String,
}

#[derive(Debug, Serialize)]
pub struct InterfaceName {
    /// The interface in the plugin's (= the daemon's) namespace that Docker moves.
    #[serde(rename = "SrcName")]
    pub src_name: String,
    /// Docker names it DstPrefix + the next free number in the container.
    #[serde(rename = "DstPrefix")]
    pub dst_prefix: String,
}

#[derive(Debug, Serialize)]
pub struct StaticRoute {
    #[serde(rename = "Destination")]
    pub destination: String,
    #[serde(rename = "RouteType")]
    pub route_type: u8,
    #[serde(rename = "NextHop", skip_serializing_if = "String::is_empty")]
    pub next_hop: String,
}

#[derive(Debug, Serialize)]
pub struct JoinResponse {
    #[serde(rename = "InterfaceName")]
    pub interface_name: InterfaceName,
    #[serde(rename = "Gateway", skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    #[serde(rename = "StaticRoutes")]
    pub static_routes: Vec<StaticRoute>,
    /// Without a gateway Docker would add its own `docker_gwbridge` network unless told not to.
    #[serde(rename = "DisableGatewayService")]
    pub disable_gateway_service: bool,
}

#[derive(Debug, Deserialize)]
pub struct ProgramExternalConnectivityRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Options", default)]
    pub options: Option<Options>,
}

/// One entry of `com.docker.network.portmap` (`-p`): Proto is the IP protocol number.
#[derive(Debug, Clone, Deserialize)]
pub struct PortBinding {
    #[serde(rename = "Proto", default)]
    pub proto: u8,
    #[serde(rename = "Port", default)]
    pub port: u16,
    #[serde(rename = "HostIP", default)]
    pub host_ip: Option<String>,
    #[serde(rename = "HostPort", default)]
    pub host_port: u16,
    #[serde(rename = "HostPortEnd", default)]
    pub host_port_end: u16,
}

/// The error answer of every call.
pub fn err(message: impl std::fmt::Display) -> Value {
    serde_json::json!({ "Err": message.to_string() })
}
