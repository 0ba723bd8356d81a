//! The CNI 1.1 plugin: `ferrynet` with `CNI_COMMAND` in its environment. Parses the runtime's
//! environment and configuration, turns them into a bridge-driver request, and prints the
//! result (or an error JSON with the spec's code) on stdout. Logs go to stderr and, when the
//! configuration names one, to a log file: never to stdout.

pub mod config;
pub mod delegate;
pub mod error;
pub mod result;

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use crate::bridge::{default_mtu, pool_of, AddressRequest, AttachRequest, Driver, RouteSpec};
use crate::ipam::Ipam;
use crate::network::{validate_id, validate_ifname, NetworkConfig, StateDir};
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
    let outcome = run(&command, &stdin, conf);
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(reply) => {
            if let Some(v) = reply {
                let _ = writeln!(out, "{v}");
            }
            log(
                log_file.as_deref(),
                &format!("{command} {} ok", describe_env()),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&reply_version));
            let line = format!("{command} {} failed: {e}", describe_env());
            eprintln!("ferrynet: {line}");
            log(log_file.as_deref(), &line);
            ExitCode::FAILURE
        }
    }
}

fn describe_env() -> String {
    let v = |k| std::env::var(k).unwrap_or_default();
    format!(
        "container={} ifname={}",
        v("CNI_CONTAINERID"),
        v("CNI_IFNAME")
    )
}

fn log(file: Option<&std::path::Path>, line: &str) {
    if let Some(path) = file {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{now:.3} ferrynet[{}] {line}", std::process::id());
        }
    }
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

/// The agent's subnet.env: FERRYNET_SUBNET, FERRYNET_MTU, FERRYNET_IPMASQ.
struct Lease {
    subnet: Ipv4Net,
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
    let mut subnet = None;
    let mut mtu = None;
    let mut ip_masq = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("FERRYNET_SUBNET", v)) => {
                subnet = v.trim().parse::<Ipv4Net>().ok().map(|n| n.trunc())
            }
            Some(("FERRYNET_MTU", v)) => mtu = v.trim().parse().ok(),
            Some(("FERRYNET_IPMASQ", v)) => ip_masq = Some(v.trim() == "true"),
            _ => {}
        }
    }
    let subnet = subnet.ok_or_else(|| {
        CniError::new(
            TRY_AGAIN_LATER,
            format!(
                "{} has no valid FERRYNET_SUBNET",
                conf.subnet_file.display()
            ),
        )
    })?;
    Ok(Lease {
        subnet,
        mtu,
        ip_masq,
    })
}

/// The engine's view of this network. `address` is what a delegated IPAM plugin returned.
fn network_config(conf: &NetConf, ipam: Option<&IpamResult>) -> Result<NetworkConfig, CniError> {
    let (subnet, lease) = match (&conf.subnet, ipam) {
        (Subnet::Cidr(s), _) => (*s, None),
        (Subnet::Auto, _) => {
            let lease = read_lease(conf)?;
            (lease.subnet, Some(lease))
        }
        (Subnet::FromIpam, Some(r)) => (r.address.trunc(), None),
        (Subnet::FromIpam, None) => (Ipv4Net::default(), None),
    };
    let first_host = Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1));
    let gateway = conf
        .gateway
        .or(ipam.and_then(|r| r.gateway))
        .unwrap_or(first_host);
    let mtu = conf
        .mtu
        .or(lease.as_ref().and_then(|l| l.mtu))
        .unwrap_or_else(default_mtu);
    Ok(NetworkConfig {
        name: conf.name.clone(),
        bridge: conf.bridge.clone(),
        subnet,
        gateway,
        mtu,
        masquerade: lease
            .as_ref()
            .and_then(|l| l.ip_masq)
            .unwrap_or(conf.ip_masq),
        isolate: conf.isolation,
        hairpin: conf.hairpin,
        anti_spoof: conf.anti_spoofing,
        gateway_on_bridge: conf.is_gateway,
        range_start: conf.range_start,
        range_end: conf.range_end,
    })
}

/// The routes the container gets: the configuration's, or a default route via the gateway.
fn container_routes(conf: &NetConf, ipam: Option<&IpamResult>) -> Vec<RouteSpec> {
    let mut routes = conf.routes.clone().unwrap_or_else(|| {
        if conf.is_gateway && conf.is_default_gateway {
            vec![RouteSpec::default_route()]
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
    let (args_ip, args_mac) = config::parse_cni_args(&env.args)?;
    let netns = env.netns.clone().expect("checked by read_env");
    let ipam_plugin = delegated_ipam(conf, env)?;
    let ipam_result = match &ipam_plugin {
        Some(plugin) => {
            let out = delegate::exec(plugin, "ADD", stdin)?.unwrap_or(Value::Null);
            Some(parse_ipam_result(&out).ok_or_else(|| {
                let _ = delegate::exec(plugin, "DEL", stdin);
                CniError::new(error::FAILED, "the IPAM plugin returned no IPv4 address")
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
        Some(r) => AddressRequest::External(r.address),
        None => AddressRequest::Allocate(args_ip.or(conf.ips.first().copied())),
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
        gateway: net
            .gateway_on_bridge
            .then_some(net.gateway)
            .or(ipam_result.as_ref().and_then(|r| r.gateway)),
        routes: &routes,
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
    let prev_ip = parse_ipam_result(prev).map(|r| r.address);
    if prev_ip.is_some() && prev_ip != ep.ip {
        return Err(CniError::new(
            error::CHECK_FAILED,
            format!(
                "prevResult address {:?} differs from the endpoint's {:?}",
                prev_ip, ep.ip
            ),
        ));
    }
    let ipam_result = match &ep.ip {
        Some(ip) if conf.ipam.is_some() => Some(IpamResult {
            address: *ip,
            gateway: None,
            routes: Vec::new(),
            dns: None,
        }),
        _ => None,
    };
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
        let ipam = Ipam::new(&driver.state().ipam_dir(&net.name), pool_of(&net));
        let used = ipam
            .reservations()
            .map_err(|e| CniError::new(NOT_AVAILABLE, e.to_string()))?
            .len() as u128;
        if used >= pool_of(&net).capacity() {
            return Err(CniError::new(
                NOT_AVAILABLE,
                format!("no free address left in {} ({used} in use)", net.subnet),
            ));
        }
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
