//! The network configuration a runtime sends on stdin, read key by key so that every wrong
//! type is reported with the key's name (code 7), unknown keys ignored.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde_json::{Map, Value};

use super::error::{CniError, DECODE_FAILURE, INCOMPATIBLE_VERSION};
use crate::bridge::RouteSpec;
use crate::firewall::{PortMapping, Protocol};
use crate::netlink::Mac;

pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const DEFAULT_BRIDGE: &str = "ferry0";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subnet {
    Cidr(Ipv4Net),
    /// Read the host's leased subnet from the agent's subnet.env.
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
    pub subnet: Subnet,
    pub gateway: Option<Ipv4Addr>,
    pub range_start: Option<Ipv4Addr>,
    pub range_end: Option<Ipv4Addr>,
    /// None: the default (a default route via the gateway).
    pub routes: Option<Vec<RouteSpec>>,
    pub dns: Option<Value>,
    /// A delegated IPAM plugin's section (`type` other than ferrynet's own).
    pub ipam: Option<Value>,
    pub state_dir: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    pub subnet_file: PathBuf,
    pub port_mappings: Vec<PortMapping>,
    pub ips: Vec<Ipv4Addr>,
    pub mac: Option<Mac>,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<(String, String)>>,
    /// The configuration as received, passed on to delegated plugins.
    pub raw: Value,
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

    let subnet = match k.string("subnet")? {
        Some("auto") => Subnet::Auto,
        Some(s) if !s.is_empty() => Subnet::Cidr(
            s.parse::<Ipv4Net>()
                .map_err(|_| k.wrong("subnet", "an IPv4 CIDR or \"auto\""))?
                .trunc(),
        ),
        _ if ipam.is_some() => Subnet::FromIpam,
        _ => {
            // The reference plugins' layout: ipam.ranges[0][0].subnet or ipam.subnet.
            return Err(CniError::config(
                "invalid configuration: \"subnet\" is required (a CIDR, or \"auto\" for the agent's leased subnet), unless an \"ipam\" plugin is given",
            ));
        }
    };

    let mut range_start = None;
    let mut range_end = None;
    let mut gateway = k.parsed::<Ipv4Addr>("gateway", "an IPv4 address")?;
    if let Some(first_set) = k.array("ranges")?.first() {
        let set = first_set
            .as_array()
            .ok_or_else(|| k.wrong("ranges", "an array of arrays of ranges"))?;
        if let Some(range) = set.first() {
            let r = Keys {
                obj: as_object(range, "ranges")?,
                prefix: "ranges[0][0].",
            };
            range_start = r.parsed("rangeStart", "an IPv4 address")?;
            range_end = r.parsed("rangeEnd", "an IPv4 address")?;
            gateway = gateway.or(r.parsed("gateway", "an IPv4 address")?);
        }
    }

    let routes = match k.get("routes") {
        None => None,
        Some(_) => {
            let mut out = Vec::new();
            for r in k.array("routes")? {
                let rk = Keys {
                    obj: as_object(r, "routes")?,
                    prefix: "routes[].",
                };
                let dst = rk
                    .parsed::<Ipv4Net>("dst", "an IPv4 CIDR")?
                    .ok_or_else(|| {
                        CniError::config("invalid configuration: every route needs \"dst\"")
                    })?;
                out.push(RouteSpec {
                    dst: dst.trunc(),
                    gw: rk.parsed("gw", "an IPv4 address")?,
                });
            }
            Some(out)
        }
    };

    // Runtime-provided values: runtimeConfig (capabilities), then args.cni (conventions).
    let mut port_mappings = Vec::new();
    let mut ips = Vec::new();
    let mut mac = None;
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
        subnet,
        gateway,
        range_start,
        range_end,
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
        prev_result: k.get("prevResult").cloned(),
        valid_attachments,
        raw,
    })
}

fn parse_ip(v: &Value, key: &str) -> Result<Ipv4Addr, CniError> {
    let s = v.as_str().ok_or_else(|| {
        CniError::config(format!(
            "invalid configuration: {key:?} entries must be strings"
        ))
    })?;
    let addr = s.split('/').next().unwrap_or(s);
    addr.parse().map_err(|_| {
        CniError::config(format!(
            "invalid configuration: {key:?} entry {s:?} is not an IPv4 address"
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
        None | Some("") | Some("0.0.0.0") => None,
        Some(ip) => Some(
            ip.parse()
                .map_err(|_| k.wrong("hostIP", "an IPv4 address"))?,
        ),
    };
    Ok(PortMapping {
        host_port: port("hostPort")?,
        container_port: port("containerPort")?,
        protocol,
        host_ip,
    })
}

/// `CNI_ARGS`: `K=V;K=V`. Returns IP and MAC if present; unknown keys are an error unless
/// `IgnoreUnknown` is set (as the reference plugins do).
pub fn parse_cni_args(args: &str) -> Result<(Option<Ipv4Addr>, Option<Mac>), CniError> {
    let mut ip = None;
    let mut mac = None;
    let mut unknown = Vec::new();
    let mut ignore_unknown = false;
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| CniError::env(format!("CNI_ARGS: {pair:?} is not KEY=VALUE")))?;
        match key {
            "IgnoreUnknown" => ignore_unknown = matches!(value, "1" | "true" | "True"),
            "IP" => {
                ip = Some(
                    value
                        .split('/')
                        .next()
                        .unwrap_or(value)
                        .parse()
                        .map_err(|_| {
                            CniError::env(format!("CNI_ARGS: IP={value:?} is not an IPv4 address"))
                        })?,
                )
            }
            "MAC" => {
                mac = Some(
                    value
                        .parse()
                        .map_err(|e: String| CniError::env(format!("CNI_ARGS: {e}")))?,
                )
            }
            // Well-known keys runtimes send (Kubernetes, podman) that ferrynet does not need.
            "K8S_POD_NAMESPACE" | "K8S_POD_NAME" | "K8S_POD_INFRA_CONTAINER_ID" | "K8S_POD_UID" => {
            }
            other => unknown.push(other.to_string()),
        }
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(CniError::env(format!("CNI_ARGS: unknown keys {unknown:?}")));
    }
    Ok((ip, mac))
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
        assert_eq!(c.subnet, Subnet::Cidr("10.88.0.0/24".parse().unwrap()));
        assert!(c.routes.is_none());
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
        assert_eq!(c.ips, vec![Ipv4Addr::new(10, 1, 0, 5)]);
        assert!(c.mac.is_some());
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![("c1".into(), "eth0".into())]
        );
        let (ip, mac) =
            parse_cni_args("IgnoreUnknown=1;IP=10.1.0.9;MAC=02:00:00:00:00:09;FOO=1").unwrap();
        assert_eq!(ip, Some(Ipv4Addr::new(10, 1, 0, 9)));
        assert!(mac.is_some());
        assert!(parse_cni_args("FOO=1").is_err());
    }
}
