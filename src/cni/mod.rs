//! The CNI 1.1 plugin: `ferrynet` with `CNI_COMMAND` in its environment. Parses the runtime's
//! environment and configuration, turns them into a bridge-driver request, and prints the
//! result (or an error JSON with the spec's code) on stdout. Its one log line per call (see
//! `crate::logging`) goes to the configuration's `logFile` if it names one, and a failure's also
//! to stderr: never to stdout.

pub mod config;
pub mod delegate;
pub mod error;
pub mod result;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use ipnet::IpNet;
use serde_json::{json, Value};

use crate::bridge::{pool_of, AddressRequest, AttachRequest, Driver, RouteSpec, Source};
use crate::ipam::Ipam;
use crate::logging::{LogFormat, Logger};
use crate::network::{
    validate_id, validate_ifname, FamilyConfig, NetworkConfig, StateDir, MTU_OF_BRIDGE,
};
use config::{NetConf, Subnet, SUPPORTED_VERSIONS};
use error::{CniError, INVALID_CONFIG, NOT_AVAILABLE, TRY_AGAIN_LATER, UNKNOWN_CONTAINER};
use result::{parse_ipam_result, AddResult, IpamResult};

pub fn is_cni_invocation() -> bool {
    std::env::var_os("CNI_COMMAND").is_some()
}

pub fn main() -> ExitCode {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let reply_version = config::requested_version(&stdin)
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.1.0".to_string());
    // Parsed once: the log file must be known even when the command fails.
    let conf = config::parse(&stdin);
    let log_file = conf.as_ref().ok().and_then(|c| c.log_file.clone());
    let log_format = conf.as_ref().ok().map_or(LogFormat::Text, log_format);
    let outcome = run(&command, &stdin, conf);
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(reply) => {
            if let Some(v) = reply {
                let _ = writeln!(out, "{v}");
            }
            // Nothing to set up, and nothing written, without a log file.
            if let Some(path) = &log_file {
                let _ = logger(&command).init_file(path, log_format, false);
                tracing::info!("{command} ok");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&reply_version));
            // One line on stderr (text), and the same in the log file.
            let l = logger(&command);
            match &log_file {
                Some(path) => {
                    let _ = l.init_file(path, log_format, true);
                }
                None => l.init_stderr(LogFormat::Text),
            }
            tracing::error!("{command} failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `"logFormat": "text"` (the default) or `"json"` for the `logFile`; anything else is text.
fn log_format(conf: &NetConf) -> LogFormat {
    conf.raw
        .get("logFormat")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default()
}

/// The plugin's log lines carry the call: command, container, interface, process.
fn logger(command: &str) -> Logger {
    let v = |k| std::env::var(k).unwrap_or_default();
    Logger::new("cni")
        .field("command", command)
        .field("container", v("CNI_CONTAINERID"))
        .field("ifname", v("CNI_IFNAME"))
        .field("pid", std::process::id())
}

/// The runtime's environment, validated as the reference skel does.
struct Env {
    container_id: String,
    netns: Option<PathBuf>,
    ifname: String,
    args: String,
    path: Vec<PathBuf>,
}

fn read_env(command: &str) -> Result<Env, CniError> {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let per_container = matches!(command, "ADD" | "DEL" | "CHECK");
    let container_id = var("CNI_CONTAINERID");
    let ifname = var("CNI_IFNAME");
    let netns = var("CNI_NETNS");
    let path = var("CNI_PATH");
    if per_container {
        if container_id.is_empty() {
            return Err(CniError::env(
                "required env variable CNI_CONTAINERID is missing",
            ));
        }
        validate_id("CNI_CONTAINERID", &container_id).map_err(|e| CniError::env(e.to_string()))?;
        if ifname.is_empty() {
            return Err(CniError::env("required env variable CNI_IFNAME is missing"));
        }
        validate_ifname("CNI_IFNAME", &ifname).map_err(|e| CniError::env(e.to_string()))?;
        if path.is_empty() {
            return Err(CniError::env("required env variable CNI_PATH is missing"));
        }
        if command != "DEL" && netns.is_empty() {
            return Err(CniError::env("required env variable CNI_NETNS is missing"));
        }
    }
    Ok(Env {
        container_id,
        netns: (!netns.is_empty()).then(|| PathBuf::from(netns)),
        ifname,
        args: var("CNI_ARGS"),
        path: std::env::split_paths(&path)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
    })
}

fn run(
    command: &str,
    stdin: &[u8],
    conf: Result<NetConf, CniError>,
) -> Result<Option<Value>, CniError> {
    if command == "VERSION" {
        return Ok(Some(version_reply(stdin)));
    }
    if !matches!(command, "ADD" | "DEL" | "CHECK" | "STATUS" | "GC") {
        return Err(CniError::env(format!(
            "CNI_COMMAND {command:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"
        )));
    }
    let env = read_env(command)?;
    if let Some(version) = config::requested_version(stdin) {
        config::check_version_allows(command, &version)?;
    }
    let mut conf = conf?;
    let state = match &conf.state_dir {
        // FERRYNET_STATE_DIR wins over the configuration's stateDir.
        Some(dir) if std::env::var_os("FERRYNET_STATE_DIR").is_none() => StateDir::resolve(
            Some(dir.clone()),
            std::env::var_os("FERRYNET_RUN_DIR").map(PathBuf::from),
        ),
        _ => StateDir::from_env(),
    };
    if conf.subnet_file.as_os_str().is_empty() {
        conf.subnet_file = state.run_dir().join("subnet.env");
    }
    let driver = Driver::new(state);
    match command {
        "ADD" => add(&driver, &env, &conf, stdin).map(Some),
        "DEL" => del(&driver, &env, &conf, stdin).map(|_| None),
        "CHECK" => check(&driver, &env, &conf, stdin).map(|_| None),
        "STATUS" => status(&driver, &conf).map(|_| None),
        _ => gc(&driver, &conf).map(|_| None),
    }
}

fn version_reply(stdin: &[u8]) -> Value {
    let v = config::requested_version(stdin)
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.1.0".to_string());
    json!({ "cniVersion": v, "supportedVersions": SUPPORTED_VERSIONS })
}

/// The agent's subnet.env: FERRYNET_SUBNET (and FERRYNET_SUBNET6 on a dual-stack cluster),
/// FERRYNET_MTU, FERRYNET_IPMASQ.
struct Lease {
    subnets: Vec<IpNet>,
    mtu: Option<u32>,
    ip_masq: Option<bool>,
}

fn read_lease(conf: &NetConf) -> Result<Lease, CniError> {
    let text = std::fs::read_to_string(&conf.subnet_file).map_err(|e| {
        CniError::new(
            TRY_AGAIN_LATER,
            format!(
                "\"subnet\": \"auto\" but no subnet is leased yet ({}: {e}); is the ferrynet agent running?",
                conf.subnet_file.display()
            ),
        )
    })?;
    let mut subnets = Vec::new();
    let mut mtu = None;
    let mut ip_masq = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("FERRYNET_SUBNET" | "FERRYNET_SUBNET6", v)) => {
                subnets.extend(v.trim().parse::<IpNet>().ok().map(|n| n.trunc()))
            }
            Some(("FERRYNET_MTU", v)) => mtu = v.trim().parse().ok(),
            Some(("FERRYNET_IPMASQ", v)) => ip_masq = Some(v.trim() == "true"),
            _ => {}
        }
    }
    if subnets.is_empty() {
        return Err(CniError::new(
            TRY_AGAIN_LATER,
            format!(
                "{} has no valid FERRYNET_SUBNET",
                conf.subnet_file.display()
            ),
        ));
    }
    Ok(Lease {
        subnets,
        mtu,
        ip_masq,
    })
}

type Families = (
    Option<FamilyConfig<Ipv4Addr>>,
    Option<FamilyConfig<Ipv6Addr>>,
);

/// Each family's addressing from the subnets, the gateways (the configuration's first, then
/// the IPAM plugin's) and the ranges; at most one of each per family, none of a family the
/// network has no subnet of.
fn families(
    subnets: &[IpNet],
    gateways: &[IpAddr],
    ranges: &[config::Range],
) -> Result<Families, CniError> {
    let wrong = |key: &str, value: &dyn std::fmt::Display, why: &str| {
        CniError::config(format!("invalid configuration: {key:?} {value}: {why}"))
    };
    let (mut v4, mut v6) = (None, None);
    for subnet in subnets {
        let taken = match subnet {
            IpNet::V4(s) => v4.replace(FamilyConfig::new(*s, None)).is_some(),
            IpNet::V6(s) => v6.replace(FamilyConfig::new(*s, None)).is_some(),
        };
        if taken {
            return Err(wrong(
                "subnet",
                subnet,
                "a second subnet of the same family; give at most one IPv4 and one IPv6 subnet",
            ));
        }
    }
    let (mut gw4, mut gw6) = (None, None);
    for gw in gateways {
        match gw {
            IpAddr::V4(g) if v4.is_some() => _ = gw4.get_or_insert(*g),
            IpAddr::V6(g) if v6.is_some() => _ = gw6.get_or_insert(*g),
            _ => {
                return Err(wrong(
                    "gateway",
                    gw,
                    "the network has no subnet of its family",
                ))
            }
        }
    }
    if let (Some(f), Some(g)) = (v4.as_mut(), gw4) {
        f.gateway = g;
    }
    if let (Some(f), Some(g)) = (v6.as_mut(), gw6) {
        f.gateway = g;
    }
    for r in ranges {
        let family = r
            .subnet
            .map(|s| s.addr())
            .or(r.start)
            .or(r.end)
            .or(r.gateway);
        match family {
            Some(IpAddr::V4(_)) if v4.is_some() => {
                let f = v4.as_mut().expect("checked");
                f.range_start = r.start.and_then(v4_of);
                f.range_end = r.end.and_then(v4_of);
            }
            Some(IpAddr::V6(_)) if v6.is_some() => {
                let f = v6.as_mut().expect("checked");
                f.range_start = r.start.and_then(v6_of);
                f.range_end = r.end.and_then(v6_of);
            }
            Some(ip) => {
                return Err(wrong(
                    "ranges",
                    &ip,
                    "the network has no subnet of its family",
                ))
            }
            None => {}
        }
    }
    Ok((v4, v6))
}

fn v4_of(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

fn v6_of(ip: IpAddr) -> Option<Ipv6Addr> {
    match ip {
        IpAddr::V6(v6) => Some(v6),
        IpAddr::V4(_) => None,
    }
}

/// The engine's view of this network. `ipam` is what a delegated IPAM plugin returned.
fn network_config(conf: &NetConf, ipam: Option<&IpamResult>) -> Result<NetworkConfig, CniError> {
    let (subnets, lease) = match (&conf.subnet, ipam) {
        (Subnet::Cidrs(s), _) => (s.clone(), None),
        (Subnet::Auto, _) => {
            let lease = read_lease(conf)?;
            (lease.subnets.clone(), Some(lease))
        }
        (Subnet::FromIpam, Some(r)) => (r.addresses().iter().map(|a| a.trunc()).collect(), None),
        (Subnet::FromIpam, None) => (Vec::new(), None),
    };
    let mut gateways = conf.gateways.clone();
    gateways.extend(ipam.map(IpamResult::gateways).unwrap_or_default());
    let (v4, v6) = families(&subnets, &gateways, &conf.ranges)?;
    let mtu = conf
        .mtu
        .or(lease.as_ref().and_then(|l| l.mtu))
        .unwrap_or(MTU_OF_BRIDGE);
    Ok(NetworkConfig {
        name: conf.name.clone(),
        bridge: conf.bridge.clone(),
        v4,
        v6,
        mtu,
        masquerade: lease
            .as_ref()
            .and_then(|l| l.ip_masq)
            .unwrap_or(conf.ip_masq),
        isolate: conf.isolation,
        hairpin: conf.hairpin,
        anti_spoof: conf.anti_spoofing,
        gateway_on_bridge: conf.is_gateway,
        big_tcp: conf.big_tcp,
    })
}

/// The routes the container gets: the configuration's, or a default route per family via
/// the gateways; then the IPAM plugin's.
fn container_routes(conf: &NetConf, ipam: Option<&IpamResult>) -> Vec<RouteSpec> {
    let mut routes = conf.routes.clone().unwrap_or_else(|| {
        if conf.is_gateway && conf.is_default_gateway {
            RouteSpec::defaults()
        } else {
            Vec::new()
        }
    });
    if let Some(r) = ipam {
        for route in &r.routes {
            if !routes.iter().any(|x| x.dst == route.dst) {
                routes.push(*route);
            }
        }
    }
    routes
}

fn delegated_ipam(conf: &NetConf, env: &Env) -> Result<Option<PathBuf>, CniError> {
    match &conf.ipam {
        None => Ok(None),
        Some(ipam) => {
            let name = ipam.get("type").and_then(Value::as_str).unwrap_or_default();
            delegate::find_plugin(name, &env.path).map(Some)
        }
    }
}

fn add(driver: &Driver, env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<Value, CniError> {
    let args = config::parse_cni_args(&env.args)?;
    let (args_ips, args_mac) = (&args.ips, args.mac);
    let identity = identity_of(conf, &args)?;
    let netns = env.netns.clone().expect("checked by read_env");
    let ipam_plugin = delegated_ipam(conf, env)?;
    let ipam_result = match &ipam_plugin {
        Some(plugin) => {
            let out = delegate::exec(plugin, "ADD", stdin)?.unwrap_or(Value::Null);
            Some(parse_ipam_result(&out).ok_or_else(|| {
                let _ = delegate::exec(plugin, "DEL", stdin);
                CniError::new(error::FAILED, "the IPAM plugin returned no address")
                    .with_details(out.to_string())
            })?)
        }
        None => None,
    };
    let undo_ipam = || {
        if let Some(plugin) = &ipam_plugin {
            let _ = delegate::exec(plugin, "DEL", stdin);
        }
    };
    let net = network_config(conf, ipam_result.as_ref()).inspect_err(|_| undo_ipam())?;
    let address = match &ipam_result {
        Some(r) => AddressRequest {
            v4: r
                .v4
                .map_or(Source::Allocate(None), |(a, _)| Source::External(a)),
            v6: r
                .v6
                .map_or(Source::Allocate(None), |(a, _)| Source::External(a)),
        },
        // CNI_ARGS wins over the configuration's ips, per family.
        None => {
            let mut ips = args_ips.to_vec();
            for ip in &conf.ips {
                if !ips.iter().any(|i| i.is_ipv6() == ip.is_ipv6()) {
                    ips.push(*ip);
                }
            }
            AddressRequest::with_ips(&ips)
                .map_err(|e| CniError::config(format!("invalid configuration: {e}")))?
        }
    };
    let routes = container_routes(conf, ipam_result.as_ref());
    let req = AttachRequest {
        netns,
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        address,
        mac: args_mac.or(conf.mac),
        ports: conf.port_mappings.clone(),
        routes: routes.clone(),
        identity,
    };
    let ep = driver.attach(&net, &req).map_err(|e| {
        undo_ipam();
        CniError::from(e)
    })?;
    let dns = conf
        .dns
        .as_ref()
        .or(ipam_result.as_ref().and_then(|r| r.dns.as_ref()));
    Ok(AddResult {
        bridge: &net.bridge,
        bridge_mac: ep.bridge_mac,
        endpoint: &ep,
        gateways: &if net.gateway_on_bridge {
            net.gateways()
        } else {
            ipam_result
                .as_ref()
                .map(IpamResult::gateways)
                .unwrap_or_default()
        },
        routes: &ep.routes,
        dns,
    }
    .to_json(&conf.cni_version))
}

/// DEL cleans up as much as it can, also with no namespace, no prevResult and no lease.
fn del(driver: &Driver, env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let net = network_config(conf, None).or_else(|e| {
        if e.code == TRY_AGAIN_LATER {
            // "auto" without a lease: the record still says what to undo.
            network_config(
                &NetConf {
                    subnet: Subnet::FromIpam,
                    ..conf.clone()
                },
                None,
            )
        } else {
            Err(e)
        }
    })?;
    driver.detach(&net, &env.container_id, &env.ifname)?;
    if let Some(plugin) = delegated_ipam(conf, env)? {
        delegate::exec(&plugin, "DEL", stdin)?;
    }
    Ok(())
}

fn check(driver: &Driver, env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(INVALID_CONFIG, "CHECK needs prevResult"))?;
    let ep = driver
        .endpoint(&conf.name, &env.container_id, &env.ifname)?
        .ok_or_else(|| {
            CniError::new(
                UNKNOWN_CONTAINER,
                format!(
                    "no endpoint for container {} ifname {} on network {}",
                    env.container_id, env.ifname, conf.name
                ),
            )
        })?;
    if let Some(prev) = parse_ipam_result(prev) {
        let mine = IpamResult {
            v4: ep.ip.map(|a| (a, None)),
            v6: ep.ip6.map(|a| (a, None)),
            ..IpamResult::default()
        };
        if prev.addresses() != mine.addresses() {
            return Err(CniError::new(
                error::CHECK_FAILED,
                format!(
                    "prevResult addresses {:?} differ from the endpoint's {:?}",
                    prev.addresses(),
                    mine.addresses()
                ),
            ));
        }
    }
    let ipam_result = conf.ipam.is_some().then(|| IpamResult {
        v4: ep.ip.map(|a| (a, None)),
        v6: ep.ip6.map(|a| (a, None)),
        ..IpamResult::default()
    });
    let net = network_config(conf, ipam_result.as_ref())?;
    let problems = driver.verify(&net, &ep)?;
    if !problems.is_empty() {
        return Err(CniError::new(error::CHECK_FAILED, problems.join("; ")));
    }
    if let Some(plugin) = delegated_ipam(conf, env)? {
        delegate::exec(&plugin, "CHECK", stdin)?;
    }
    Ok(())
}

fn status(driver: &Driver, conf: &NetConf) -> Result<(), CniError> {
    let net = network_config(conf, None).map_err(|e| CniError::new(NOT_AVAILABLE, e.msg))?;
    if conf.ipam.is_none() {
        let dir = driver.state().ipam_dir(&net.name);
        if let Some(f) = &net.v4 {
            pool_has_room(&Ipam::new(&dir, pool_of(f)), f.subnet)?;
        }
        if let Some(f) = &net.v6 {
            pool_has_room(&Ipam::new(&dir.join("v6"), pool_of(f)), f.subnet)?;
        }
    }
    Ok(())
}

/// STATUS of one family's pool: code 50 when it is full.
fn pool_has_room<A: crate::family::Family>(ipam: &Ipam<A>, subnet: A::Net) -> Result<(), CniError> {
    let used = ipam
        .reservations()
        .map_err(|e| CniError::new(NOT_AVAILABLE, e.to_string()))?
        .len() as u128;
    if used >= ipam.capacity() {
        return Err(CniError::new(
            NOT_AVAILABLE,
            format!("no free address left in {subnet} ({used} in use)"),
        ));
    }
    Ok(())
}

fn gc(driver: &Driver, conf: &NetConf) -> Result<(), CniError> {
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::new(
            INVALID_CONFIG,
            "GC needs \"cni.dev/valid-attachments\" (the attachments still in use)",
        )
    })?;
    let net = network_config(conf, None).or_else(|_| {
        network_config(
            &NetConf {
                subnet: Subnet::FromIpam,
                ..conf.clone()
            },
            None,
        )
    })?;
    let keep = |cid: &str, ifname: &str| valid.iter().any(|(c, i)| c == cid && i == ifname);
    driver.gc(&net, &keep)?;
    Ok(())
}

/// Who the pod is for network policy: its namespace and name from `CNI_ARGS`, its labels and
/// named ports from `args.cni`; `None` when the runtime says nothing of them. Checked here,
/// before anything changes (code 7, naming the field).
fn identity_of(
    conf: &config::NetConf,
    args: &config::CniArgs,
) -> Result<Option<crate::policy::Identity>, CniError> {
    if args.pod_namespace.is_none() && conf.labels.is_empty() && conf.named_ports.is_empty() {
        return Ok(None);
    }
    let id = crate::policy::Identity {
        namespace: args
            .pod_namespace
            .clone()
            .unwrap_or_else(|| crate::policy::model::DEFAULT_NAMESPACE.into()),
        name: args.pod_name.clone(),
        labels: conf.labels.clone(),
        named_ports: conf.named_ports.clone(),
    };
    id.validate("")
        .map_err(|e| CniError::config(format!("invalid configuration: {e}")))?;
    Ok(Some(id))
}
