//! The network configuration a runtime sends on stdin, read key by key so that every wrong
//! type is reported with the key's name (code 7), unknown keys ignored.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde_json::{Map, Value};

use super::error::{CniError, DECODE_FAILURE, INCOMPATIBLE_VERSION};
use crate::bridge::RouteSpec;
use crate::firewall::{PortMapping, Protocol};
use crate::netlink::Mac;

pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const DEFAULT_BRIDGE: &str = "ferry0";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subnet {
    /// One CIDR per family (the network checks that there is at most one of each).
    Cidrs(Vec<IpNet>),
    /// Read the host's leased subnets from the agent's subnet.env.
    Auto,
    /// Addresses come from a delegated IPAM plugin.
    FromIpam,
}

#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub ip_masq: bool,
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub isolation: bool,
    pub anti_spoofing: bool,
    /// `bigTcp`: 192 KiB GSO/GRO on the veth pairs (default false: see
    /// [`crate::network::BIG_TCP_SIZE`]).
    pub big_tcp: bool,
    pub subnet: Subnet,
    /// `gateway` and the ranges' gateways, at most one per family.
    pub gateways: Vec<IpAddr>,
    /// `ranges`: one range set per family (host-local's layout); the first range of each.
    pub ranges: Vec<Range>,
    /// None: the default (a default route via the gateway).
    pub routes: Option<Vec<RouteSpec>>,
    pub dns: Option<Value>,
    /// A delegated IPAM plugin's section (`type` other than ferrynet's own).
    pub ipam: Option<Value>,
    pub state_dir: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    pub subnet_file: PathBuf,
    pub port_mappings: Vec<PortMapping>,
    pub ips: Vec<IpAddr>,
    pub mac: Option<Mac>,
    /// `args.cni.labels` (`[{"key":..,"value":..}]`) and `args.cni.namedPorts`
    /// (`[{"name":..,"port":..,"protocol":..}]`): the pod's, for network policy.
    pub labels: crate::policy::Labels,
    pub named_ports: Vec<crate::policy::NamedPort>,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<(String, String)>>,
    /// The configuration as received, passed on to delegated plugins.
    pub raw: Value,
}

/// One family's range, as host-local writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub subnet: Option<IpNet>,
    pub start: Option<IpAddr>,
    pub end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
}

/// Typed access to one JSON object's keys, naming the key in every error.
struct Keys<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'a str,
}

impl<'a> Keys<'a> {
    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn wrong(&self, key: &str, expected: &str) -> CniError {
        CniError::config(format!(
            "invalid configuration: {:?} must be {expected}, got {}",
            self.name(key),
            self.obj.get(key).map(|v| v.to_string()).unwrap_or_default()
        ))
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, CniError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool, CniError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.wrong(key, "true or false")),
        }
    }

    fn u32(&self, key: &str) -> Result<Option<u32>, CniError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a non-negative integer")),
        }
    }

    fn parsed<T: std::str::FromStr>(&self, key: &str, what: &str) -> Result<Option<T>, CniError> {
        match self.string(key)? {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| self.wrong(key, what)),
        }
    }

    fn object(&self, key: &str) -> Result<Option<Keys<'a>>, CniError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(Keys { obj: o, prefix: "" })),
            Some(_) => Err(self.wrong(key, "an object")),
        }
    }

    fn array(&self, key: &str) -> Result<&'a [Value], CniError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(self.wrong(key, "an array")),
        }
    }
}

fn as_object<'a>(v: &'a Value, key: &str) -> Result<&'a Map<String, Value>, CniError> {
    v.as_object().ok_or_else(|| {
        CniError::config(format!(
            "invalid configuration: every entry of {key:?} must be an object"
        ))
    })
}

/// The first configuration version that allows a command, as the reference skel gates them:
/// CHECK came with 0.4.0, GC and STATUS with 1.1.0.
fn introduced_in(command: &str) -> Option<&'static str> {
    match command {
        "CHECK" => Some("0.4.0"),
        "GC" | "STATUS" => Some("1.1.0"),
        _ => None,
    }
}

fn version_triplet(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    let t = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(t)
}

/// Code 1 when the configuration's version predates `command` (an unparsable version is left
/// to the configuration's own check, which names it).
pub fn check_version_allows(command: &str, version: &str) -> Result<(), CniError> {
    let (Some(first), Some(have)) = (introduced_in(command), version_triplet(version)) else {
        return Ok(());
    };
    if have < version_triplet(first).expect("valid constant") {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("config version does not allow {command}"),
        )
        .with_details(format!(
            "cniVersion {version:?}; {command} needs {first} or later"
        )));
    }
    Ok(())
}

/// Only decodes: used by VERSION, which must work with nothing else valid.
pub fn requested_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(DECODE_FAILURE, "failed to decode the network configuration")
            .with_details(e.to_string())
    })?;
    let obj = raw.as_object().ok_or_else(|| {
        CniError::new(
            DECODE_FAILURE,
            "the network configuration must be a JSON object",
        )
    })?;
    let k = Keys { obj, prefix: "" };

    let cni_version = k
        .string("cniVersion")?
        .ok_or_else(|| CniError::config("invalid configuration: \"cniVersion\" is required"))?
        .to_string();
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("incompatible CNI version {cni_version:?}"),
        )
        .with_details(format!(
            "ferrynet supports {}",
            SUPPORTED_VERSIONS.join(", ")
        )));
    }
    let name = k
        .string("name")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| CniError::config("invalid configuration: \"name\" is required"))?
        .to_string();
    crate::network::validate_id("name", &name)
        .map_err(|e| CniError::config(format!("invalid configuration: {e}")))?;

    let bridge = k.string("bridge")?.unwrap_or(DEFAULT_BRIDGE).to_string();
    crate::network::validate_bridge_name(&bridge)
        .map_err(|e| CniError::config(format!("invalid configuration: {e}")))?;

    // A delegated IPAM plugin: any type other than ferrynet's own.
    let ipam = match k.object("ipam")? {
        Some(ipam_keys) => match ipam_keys
            .string("type")
            .map_err(|_| k.wrong("ipam", "an object with a string \"type\""))?
        {
            None | Some("") | Some("ferrynet") => None,
            Some(t) => {
                if t.contains('/') || t.contains("..") {
                    return Err(CniError::config(format!(
                        "invalid configuration: \"ipam.type\" must be a plugin name, not a path: {t:?}"
                    )));
                }
                Some(obj["ipam"].clone())
            }
        },
        None => None,
    };

    let mut ranges = Vec::new();
    for (i, set) in k.array("ranges")?.iter().enumerate() {
        let set = set
            .as_array()
            .ok_or_else(|| k.wrong("ranges", "an array of range sets (arrays of ranges)"))?;
        // One range set per family, as host-local; ferrynet uses each set's first range.
        if let Some(range) = set.first() {
            let prefix = format!("ranges[{i}][0].");
            let r = Keys {
                obj: as_object(range, "ranges")?,
                prefix: &prefix,
            };
            ranges.push(Range {
                subnet: r.parsed::<IpNet>("subnet", "a CIDR")?.map(|n| n.trunc()),
                start: r.parsed("rangeStart", "an IP address")?,
                end: r.parsed("rangeEnd", "an IP address")?,
                gateway: r.parsed("gateway", "an IP address")?,
            });
        }
    }

    let subnet = match k.get("subnet") {
        Some(Value::String(s)) if s == "auto" => Subnet::Auto,
        Some(Value::String(s)) if !s.is_empty() => Subnet::Cidrs(vec![s
            .parse::<IpNet>()
            .map_err(|_| k.wrong("subnet", "a CIDR, a list of CIDRs or \"auto\""))?
            .trunc()]),
        Some(Value::Array(list)) if !list.is_empty() => Subnet::Cidrs(
            list.iter()
                .map(|v| {
                    v.as_str()
                        .and_then(|s| s.parse::<IpNet>().ok())
                        .map(|n| n.trunc())
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| k.wrong("subnet", "a CIDR, a list of CIDRs or \"auto\""))?,
        ),
        Some(Value::String(_)) | Some(Value::Array(_)) | None => {
            let from_ranges: Vec<IpNet> = ranges.iter().filter_map(|r| r.subnet).collect();
            if !from_ranges.is_empty() {
                Subnet::Cidrs(from_ranges)
            } else if ipam.is_some() {
                Subnet::FromIpam
            } else {
                return Err(CniError::config(
                    "invalid configuration: \"subnet\" is required (a CIDR, a list of CIDRs one per family, or \"auto\" for the agent's leased subnets), unless \"ranges\" name subnets or an \"ipam\" plugin is given",
                ));
            }
        }
        Some(_) => return Err(k.wrong("subnet", "a CIDR, a list of CIDRs or \"auto\"")),
    };

    let mut gateways = Vec::new();
    if let Some(gw) = k.parsed::<IpAddr>("gateway", "an IP address")? {
        gateways.push(gw);
    }
    gateways.extend(ranges.iter().filter_map(|r| r.gateway));

    let routes = match k.get("routes") {
        None => None,
        Some(_) => {
            let mut out = Vec::new();
            for r in k.array("routes")? {
                let rk = Keys {
                    obj: as_object(r, "routes")?,
                    prefix: "routes[].",
                };
                let dst = rk.parsed::<IpNet>("dst", "a CIDR")?.ok_or_else(|| {
                    CniError::config("invalid configuration: every route needs \"dst\"")
                })?;
                let gw: Option<IpAddr> = rk.parsed("gw", "an IP address")?;
                if gw.is_some_and(|gw| gw.is_ipv6() != matches!(dst, IpNet::V6(_))) {
                    return Err(rk.wrong("gw", "an address of the same family as \"dst\""));
                }
                out.push(RouteSpec {
                    dst: dst.trunc(),
                    gw,
                });
            }
            Some(out)
        }
    };

    // Runtime-provided values: runtimeConfig (capabilities), then args.cni (conventions).
    let mut port_mappings = Vec::new();
    let mut ips = Vec::new();
    let mut mac = None;
    let mut labels = crate::policy::Labels::new();
    let mut named_ports = Vec::new();
    if let Some(rc) = k.object("runtimeConfig")? {
        for p in rc.array("portMappings")? {
            port_mappings.push(port_mapping(p)?);
        }
        for ip in rc.array("ips")? {
            ips.push(parse_ip(ip, "runtimeConfig.ips")?);
        }
        mac = rc.parsed::<Mac>("mac", "a MAC address").map_err(|_| {
            CniError::config("invalid configuration: \"runtimeConfig.mac\" must be a MAC address")
        })?;
    }
    if let Some(args) = k.object("args")? {
        if let Some(cni) = args.object("cni")? {
            for ip in cni.array("ips")? {
                ips.push(parse_ip(ip, "args.cni.ips")?);
            }
            if mac.is_none() {
                mac = cni.parsed::<Mac>("mac", "a MAC address").map_err(|_| {
                    CniError::config(
                        "invalid configuration: \"args.cni.mac\" must be a MAC address",
                    )
                })?;
            }
            for l in cni.array("labels")? {
                let lk = Keys {
                    obj: as_object(l, "args.cni.labels")?,
                    prefix: "args.cni.labels[].",
                };
                let key = lk.string("key")?.unwrap_or_default();
                labels.insert(
                    key.to_string(),
                    lk.string("value")?.unwrap_or_default().into(),
                );
            }
            for p in cni.array("namedPorts")? {
                named_ports.push(
                    serde_json::from_value::<crate::policy::NamedPort>(p.clone()).map_err(|e| {
                        CniError::config(format!(
                            "invalid configuration: \"args.cni.namedPorts\": {e}"
                        ))
                    })?,
                );
            }
        }
    }

    let mut valid_attachments = None;
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        if let Some(Value::Array(list)) = k.get(key) {
            let mut out = Vec::new();
            for a in list {
                let ak = Keys {
                    obj: as_object(a, key)?,
                    prefix: "attachments[].",
                };
                let cid = ak.string("containerID")?.unwrap_or_default().to_string();
                let ifname = ak.string("ifname")?.unwrap_or_default().to_string();
                out.push((cid, ifname));
            }
            valid_attachments = Some(out);
            break;
        }
    }

    let mtu = k.u32("mtu")?;
    if let Some(m) = mtu {
        if !(576..=65535).contains(&m) {
            return Err(k.wrong("mtu", "between 576 and 65535"));
        }
    }

    Ok(NetConf {
        cni_version,
        name,
        bridge,
        is_gateway: k.bool("isGateway", true)?,
        is_default_gateway: k.bool("isDefaultGateway", true)?,
        ip_masq: k.bool("ipMasq", true)?,
        mtu,
        hairpin: k.bool("hairpinMode", true)?,
        isolation: k.bool("isolation", true)?,
        anti_spoofing: k.bool("antiSpoofing", true)?,
        big_tcp: k.bool("bigTcp", false)?,
        subnet,
        gateways,
        ranges,
        routes,
        dns: k.get("dns").cloned(),
        ipam,
        state_dir: k
            .string("stateDir")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        log_file: k
            .string("logFile")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        // Empty: resolved by the caller to RUN_DIR/subnet.env, where the agent writes it.
        subnet_file: k.string("subnetFile")?.unwrap_or_default().into(),
        port_mappings,
        ips,
        mac,
        labels,
        named_ports,
        prev_result: k.get("prevResult").cloned(),
        valid_attachments,
        raw,
    })
}

fn parse_ip(v: &Value, key: &str) -> Result<IpAddr, CniError> {
    let s = v.as_str().ok_or_else(|| {
        CniError::config(format!(
            "invalid configuration: {key:?} entries must be strings"
        ))
    })?;
    let addr = s.split('/').next().unwrap_or(s);
    addr.parse().map_err(|_| {
        CniError::config(format!(
            "invalid configuration: {key:?} entry {s:?} is not an IP address"
        ))
    })
}

fn port_mapping(v: &Value) -> Result<PortMapping, CniError> {
    let k = Keys {
        obj: as_object(v, "portMappings")?,
        prefix: "runtimeConfig.portMappings[].",
    };
    let port = |key: &str| -> Result<u16, CniError> {
        k.u32(key)?
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| k.wrong(key, "a port between 1 and 65535"))
    };
    let protocol = match k.string("protocol")? {
        None | Some("") => Protocol::Tcp,
        Some(p) => p
            .parse()
            .map_err(|_| k.wrong("protocol", "tcp, udp or sctp"))?,
    };
    let host_ip = match k.string("hostIP")? {
        None | Some("") | Some("0.0.0.0") | Some("::") => None,
        Some(ip) => Some(
            ip.parse()
                .map_err(|_| k.wrong("hostIP", "an IPv4 or IPv6 address"))?,
        ),
    };
    Ok(PortMapping {
        host_port: port("hostPort")?,
        container_port: port("containerPort")?,
        protocol,
        host_ip,
    })
}

/// What `CNI_ARGS` says: static addresses and MAC, and the Kubernetes pod's namespace and
/// name (for network policy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub ips: Vec<IpAddr>,
    pub mac: Option<Mac>,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
}

/// `CNI_ARGS`: `K=V;K=V`. Unknown keys are an error unless `IgnoreUnknown` is set (as the
/// reference plugins do).
pub fn parse_cni_args(args: &str) -> Result<CniArgs, CniError> {
    let mut ips = Vec::new();
    let mut mac = None;
    let (mut pod_namespace, mut pod_name) = (None, None);
    let mut unknown = Vec::new();
    let mut ignore_unknown = false;
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| CniError::env(format!("CNI_ARGS: {pair:?} is not KEY=VALUE")))?;
        match key {
            "IgnoreUnknown" => ignore_unknown = matches!(value, "1" | "true" | "True"),
            // One address, or one per family separated by commas (as podman sends them).
            "IP" => {
                for one in value.split(',').filter(|v| !v.is_empty()) {
                    ips.push(one.split('/').next().unwrap_or(one).parse().map_err(|_| {
                        CniError::env(format!("CNI_ARGS: IP={one:?} is not an IP address"))
                    })?);
                }
            }
            "MAC" => {
                mac = Some(
                    value
                        .parse()
                        .map_err(|e: String| CniError::env(format!("CNI_ARGS: {e}")))?,
                )
            }
            "K8S_POD_NAMESPACE" if !value.is_empty() => pod_namespace = Some(value.to_string()),
            "K8S_POD_NAME" if !value.is_empty() => pod_name = Some(value.to_string()),
            // Well-known keys runtimes send (Kubernetes, podman) that ferrynet does not need.
            "K8S_POD_NAMESPACE" | "K8S_POD_NAME" | "K8S_POD_INFRA_CONTAINER_ID" | "K8S_POD_UID" => {
            }
            other => unknown.push(other.to_string()),
        }
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(CniError::env(format!("CNI_ARGS: unknown keys {unknown:?}")));
    }
    Ok(CniArgs {
        ips,
        mac,
        pod_namespace,
        pod_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_the_defaults() {
        let c = parse(
            br#"{"cniVersion":"1.0.0","name":"n1","type":"ferrynet","subnet":"10.88.0.0/24"}"#,
        )
        .unwrap();
        assert_eq!(c.bridge, "ferry0");
        assert!(c.is_gateway && c.ip_masq && c.hairpin && c.isolation);
        assert_eq!(
            c.subnet,
            Subnet::Cidrs(vec!["10.88.0.0/24".parse().unwrap()])
        );
        assert!(c.routes.is_none());
    }

    #[test]
    fn dual_stack_subnets_ranges_and_routes() {
        let c = parse(
            br#"{"cniVersion":"1.1.0","name":"n","subnet":["10.88.0.0/24","fd00:88::/64"],
                "routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.subnet,
            Subnet::Cidrs(vec![
                "10.88.0.0/24".parse().unwrap(),
                "fd00:88::/64".parse().unwrap()
            ])
        );
        assert_eq!(c.routes.unwrap().len(), 2);
        // host-local's layout: one range set per family, the subnets in the ranges.
        let c = parse(
            br#"{"cniVersion":"1.1.0","name":"n","ranges":[
                [{"subnet":"10.88.0.0/24","rangeStart":"10.88.0.10"}],
                [{"subnet":"fd00:88::/64","gateway":"fd00:88::fe"}]]}"#,
        )
        .unwrap();
        assert!(matches!(&c.subnet, Subnet::Cidrs(s) if s.len() == 2));
        assert_eq!(c.ranges.len(), 2);
        assert_eq!(c.gateways, vec!["fd00:88::fe".parse::<IpAddr>().unwrap()]);
        let e = parse(
            br#"{"cniVersion":"1.1.0","name":"n","subnet":"10.88.0.0/24",
                "routes":[{"dst":"::/0","gw":"10.88.0.1"}]}"#,
        )
        .unwrap_err();
        assert!(e.msg.contains("\"routes[].gw\""), "{}", e.msg);
        let e =
            parse(br#"{"cniVersion":"1.1.0","name":"n","subnet":["10.88.0.0/24",5]}"#).unwrap_err();
        assert!(e.msg.contains("\"subnet\""), "{}", e.msg);
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = parse(br#"{"cniVersion":"1.0.0","name":"n1","subnet":"10.88.0.0/24","mtu":"big"}"#)
            .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("\"mtu\""), "{}", e.msg);
        let e = parse(br#"{"cniVersion":"1.0.0","name":"n1","subnet":"10.88.0.0/24","ipMasq":1}"#)
            .unwrap_err();
        assert!(e.msg.contains("\"ipMasq\""), "{}", e.msg);
        let e =
            parse(br#"{"cniVersion":"9.9.9","name":"n1","subnet":"10.88.0.0/24"}"#).unwrap_err();
        assert_eq!(e.code, 1);
        let e = parse(b"{not json").unwrap_err();
        assert_eq!(e.code, 6);
        let e = parse(br#"{"cniVersion":"1.0.0","name":"n1","ipam":{"type":"../x"}}"#).unwrap_err();
        assert_eq!(e.code, 7);
    }

    #[test]
    fn commands_are_gated_by_the_config_version_as_the_skel_does() {
        for (cmd, v, ok) in [
            ("CHECK", "0.3.1", false),
            ("CHECK", "0.4.0", true),
            ("GC", "1.0.0", false),
            ("STATUS", "0.4.0", false),
            ("GC", "1.1.0", true),
            ("ADD", "0.3.0", true),
            ("DEL", "0.3.0", true),
        ] {
            let r = check_version_allows(cmd, v);
            assert_eq!(r.is_ok(), ok, "{cmd} at {v}");
            if let Err(e) = r {
                assert_eq!(e.code, 1);
                assert_eq!(e.msg, format!("config version does not allow {cmd}"));
            }
        }
    }

    #[test]
    fn runtime_config_ports_ips_and_args() {
        let c = parse(
            br#"{"cniVersion":"1.1.0","name":"n","subnet":"auto",
                "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],
                                 "ips":["10.1.0.5/24"],"mac":"02:00:00:00:00:05"},
                "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.subnet, Subnet::Auto);
        assert_eq!(c.port_mappings[0].host_port, 8080);
        assert_eq!(c.ips, vec!["10.1.0.5".parse::<IpAddr>().unwrap()]);
        assert!(c.mac.is_some());
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![("c1".into(), "eth0".into())]
        );
        let a = parse_cni_args(
            "IgnoreUnknown=1;IP=10.1.0.9,fd00::9;MAC=02:00:00:00:00:09;FOO=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a",
        )
        .unwrap();
        assert_eq!(a.pod_namespace.as_deref(), Some("x"));
        assert_eq!(a.pod_name.as_deref(), Some("a"));
        let (ip, mac) = (a.ips, a.mac);
        assert_eq!(
            ip,
            vec![
                "10.1.0.9".parse::<IpAddr>().unwrap(),
                "fd00::9".parse().unwrap()
            ]
        );
        assert!(mac.is_some());
        assert!(parse_cni_args("FOO=1").is_err());
    }
}
