//! The `ferrynet` command line: clap commands over the library, nothing more.

mod agent;
mod bench;
mod bgp;
mod demo;
mod docker;
mod network;
mod policy;
mod run;
mod store;
mod trace;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::bridge::{AddressRequest, AttachRequest, Driver, Endpoint, RouteSpec};
use crate::firewall::PortMapping;
use crate::netlink::Mac;
use crate::network::{validate_id, StateDir};

#[derive(Parser)]
#[command(
    name = "ferrynet",
    version,
    about = "Container networking over Linux bridges"
)]
struct Cli {
    #[command(flatten)]
    dirs: DirArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where ferrynet keeps its state: every command takes these.
#[derive(clap::Args)]
struct DirArgs {
    /// Configuration directory (network definitions) [default: /var/lib/ferrynet].
    #[arg(long, global = true, env = "FERRYNET_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Runtime state (endpoints, IPAM) [default: /run/ferrynet, or STATE_DIR/run when only
    /// --state-dir is given].
    #[arg(long, global = true, env = "FERRYNET_RUN_DIR")]
    run_dir: Option<PathBuf>,
}

/// The per-container commands alone, parsed without building the whole command tree:
/// clap builds every subcommand's arguments before it parses (~280 us here for all of
/// ferrynet's, on every attach a runtime or script starts). Same arguments, same help.
#[derive(Parser)]
#[command(name = "ferrynet", version)]
struct ContainerCli {
    #[command(flatten)]
    dirs: DirArgs,
    #[command(subcommand)]
    command: ContainerCommand,
}

#[derive(Subcommand)]
enum ContainerCommand {
    /// Attach a network namespace to a network; prints the endpoint as JSON.
    Attach(AttachArgs),
    /// Detach a network namespace from a network (idempotent; the namespace may be gone).
    Detach(DetachArgs),
}

/// The subcommand's name: the first argument that is neither a global option nor its value.
fn subcommand_name(args: &[std::ffi::OsString]) -> Option<&str> {
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        let a = a.to_str()?;
        if a == "--state-dir" || a == "--run-dir" {
            rest.next();
        } else if !a.starts_with("--state-dir=") && !a.starts_with("--run-dir=") {
            return Some(a);
        }
    }
    None
}

#[derive(Subcommand)]
enum Command {
    /// Create, list, inspect and remove networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    #[command(flatten)]
    Container(ContainerCommand),
    /// Run a command in a new network namespace attached to a network.
    Run(run::RunArgs),
    /// Build a throwaway host, two containers and an outside world; show how packets flow.
    Demo(demo::DemoArgs),
    /// Measure per-container attach/detach against the kernel's floor (prints a table).
    Bench(bench::BenchArgs),
    /// The host agent: lease this host's subnet and route to every other host's.
    Agent(Box<agent::AgentArgs>),
    /// Docker's network driver (libnetwork remote protocol) on a unix socket, in the foreground.
    DockerPlugin(docker::DockerPluginArgs),
    /// BGP (backend bgp): the sessions and prefixes of this host's BIRD.
    #[command(subcommand)]
    Bgp(bgp::BgpCmd),
    /// Network policies (Kubernetes NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy).
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Namespaces' labels, which policies' namespace selectors match.
    #[command(subcommand)]
    Namespace(policy::NamespaceCmd),
    /// Endpoints' labels, which policies' pod selectors match.
    #[command(subcommand)]
    Endpoint(policy::EndpointCmd),
    /// How a packet gets from one place to another, hop by hop, from the live kernel state,
    /// and where it stops (exit status 1 when it is dropped).
    Trace(trace::TraceArgs),
    /// Every host namespace's bridges, ports, containers, tunnels, peer routes and published
    /// ports, as a tree, JSON or an SVG picture.
    Topology(trace::TopologyArgs),
}

#[derive(clap::Args)]
struct AttachArgs {
    /// The namespace: /run/netns/NAME, /proc/PID/ns/net, ...
    netns: PathBuf,
    /// Defaults to the namespace's name (NAME for /run/netns/NAME, pid-PID for /proc/PID/ns/net).
    #[arg(long)]
    container_id: Option<String>,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

/// What attach and run share: which network, which interface, which address and ports.
#[derive(clap::Args, Clone)]
pub struct EndpointArgs {
    #[arg(long)]
    network: String,
    #[arg(long, default_value = "eth0")]
    ifname: String,
    /// A static address instead of the next free one; repeatable, one per family.
    #[arg(long)]
    ip: Vec<IpAddr>,
    #[arg(long)]
    mac: Option<Mac>,
    /// HOST:CONTAINER[/PROTO], repeatable.
    #[arg(long = "publish", short = 'p')]
    publish: Vec<PortMapping>,
    /// The endpoint's namespace for network policy [default: default].
    #[arg(long)]
    namespace: Option<String>,
    /// A label for network policy's selectors: KEY=VALUE, repeatable.
    #[arg(long = "label", value_parser = crate::policy::identity::parse_label)]
    labels: Vec<(String, String)>,
    /// A named port for policies (a pod spec's containerPort name): NAME=PORT[/PROTO],
    /// repeatable.
    #[arg(long = "port-name", value_parser = crate::policy::identity::parse_named_port)]
    port_names: Vec<crate::policy::NamedPort>,
}

impl EndpointArgs {
    /// Who the endpoint is for policy: only when a policy flag is given.
    fn identity(&self) -> Option<crate::policy::Identity> {
        if self.namespace.is_none() && self.labels.is_empty() && self.port_names.is_empty() {
            return None;
        }
        Some(crate::policy::Identity {
            namespace: self
                .namespace
                .clone()
                .unwrap_or_else(|| crate::policy::model::DEFAULT_NAMESPACE.into()),
            name: None,
            labels: self.labels.iter().cloned().collect(),
            named_ports: self.port_names.clone(),
        })
    }
}

#[derive(clap::Args)]
struct DetachArgs {
    netns: PathBuf,
    #[arg(long)]
    network: String,
    #[arg(long, default_value = "eth0")]
    ifname: String,
    #[arg(long)]
    container_id: Option<String>,
}

pub fn main() -> ExitCode {
    let timer = crate::util::StepTimer::new("cli");
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if matches!(subcommand_name(&args), Some("attach" | "detach")) {
        let cli = ContainerCli::parse_from(args);
        timer.mark("arguments parsed");
        let state = StateDir::resolve(cli.dirs.state_dir, cli.dirs.run_dir);
        return exit(container(&state, cli.command).map(|_| ExitCode::SUCCESS));
    }
    let cli = Cli::parse_from(args);
    timer.mark("arguments parsed");
    let state = StateDir::resolve(cli.dirs.state_dir, cli.dirs.run_dir);
    let result = match cli.command {
        Command::Network(cmd) => network::run(&state, cmd).map(|_| ExitCode::SUCCESS),
        Command::Container(c) => container(&state, c).map(|_| ExitCode::SUCCESS),
        Command::Run(a) => run::run(&state, a),
        Command::Demo(a) => demo::run(a).map(|_| ExitCode::SUCCESS),
        Command::Bench(a) => bench::run(a).map(|_| ExitCode::SUCCESS),
        Command::Agent(a) => agent::run(*a, &state).map(|_| ExitCode::SUCCESS),
        Command::Bgp(c) => bgp::run(c, &state).map(|_| ExitCode::SUCCESS),
        Command::DockerPlugin(a) => docker::run(a, &state).map(|_| ExitCode::SUCCESS),
        Command::Policy(c) => policy::run(&state, c).map(|_| ExitCode::SUCCESS),
        Command::Namespace(c) => policy::run_namespace(&state, c).map(|_| ExitCode::SUCCESS),
        Command::Endpoint(c) => policy::run_endpoint(&state, c).map(|_| ExitCode::SUCCESS),
        Command::Trace(a) => trace::run(a, &state),
        Command::Topology(a) => trace::topology(a, &state).map(|_| ExitCode::SUCCESS),
    };
    exit(result)
}

fn container(state: &StateDir, command: ContainerCommand) -> Result<()> {
    match command {
        ContainerCommand::Attach(a) => attach(state, a),
        ContainerCommand::Detach(a) => detach(state, a),
    }
}

fn exit(result: Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferrynet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The container id a namespace gets when none is given: stable for the same path, so that
/// detach finds what attach made.
pub fn default_container_id(netns: &Path) -> String {
    let s = netns.to_string_lossy();
    let parts: Vec<&str> = s.trim_end_matches('/').split('/').collect();
    if let ["", "proc", pid, "ns", "net"] = parts.as_slice() {
        return format!("pid-{pid}");
    }
    let base = parts.last().copied().unwrap_or_default();
    let under_netns_dir = matches!(parts.as_slice(), [.., "netns", _]);
    if under_netns_dir && validate_id("container id", base).is_ok() {
        return base.to_string();
    }
    format!(
        "ns-{:012x}",
        crate::util::fnv1a64(s.as_bytes()) & 0xffff_ffff_ffff
    )
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

pub fn attach_endpoint(
    state: &StateDir,
    netns: &Path,
    container_id: String,
    a: &EndpointArgs,
) -> Result<Endpoint> {
    let net = state.load(&a.network)?;
    let req = AttachRequest {
        netns: netns.to_path_buf(),
        container_id,
        ifname: a.ifname.clone(),
        address: AddressRequest::with_ips(&a.ip)?,
        mac: a.mac,
        ports: a.publish.clone(),
        routes: RouteSpec::defaults(),
        identity: a.identity(),
    };
    Ok(Driver::new(state.clone()).attach(&net, &req)?)
}

fn attach(state: &StateDir, a: AttachArgs) -> Result<()> {
    let cid = a
        .container_id
        .unwrap_or_else(|| default_container_id(&a.netns));
    print_json(&attach_endpoint(state, &a.netns, cid, &a.endpoint)?);
    Ok(())
}

fn detach(state: &StateDir, a: DetachArgs) -> Result<()> {
    let net = state.load(&a.network)?;
    let cid = a
        .container_id
        .unwrap_or_else(|| default_container_id(&a.netns));
    Driver::new(state.clone())
        .detach(&net, &cid, &a.ifname)
        .with_context(|| format!("detach {cid}/{} from {}", a.ifname, a.network))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_container_ids() {
        assert_eq!(default_container_id(Path::new("/var/run/netns/c1")), "c1");
        assert_eq!(default_container_id(Path::new("/run/netns/c1")), "c1");
        assert_eq!(default_container_id(Path::new("/proc/42/ns/net")), "pid-42");
        assert!(default_container_id(Path::new("/tmp/x y")).starts_with("ns-"));
    }
}
