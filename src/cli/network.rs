//! `ferrynet network create|ls|inspect|rm`.

use std::net::IpAddr;

use anyhow::{bail, Result};
use clap::Subcommand;
use ipnet::IpNet;
use serde::Serialize;

use super::print_json;
use crate::bridge::{default_mtu, Driver, Endpoint};
use crate::netlink::Handle;
use crate::network::{NetworkConfig, StateDir};

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Create a network: a bridge with the gateway address, masquerade and isolation rules.
    Create {
        name: String,
        /// An IPv4 and/or an IPv6 CIDR (repeat the flag for dual-stack).
        #[arg(long, required = true)]
        subnet: Vec<IpNet>,
        /// Bridge name (default ferry-NAME).
        #[arg(long)]
        bridge: Option<String>,
        /// Gateway address on the bridge, one per family (default: each subnet's first address).
        #[arg(long)]
        gateway: Vec<IpAddr>,
        /// MTU of the bridge and veths (default: the default route's interface MTU).
        #[arg(long)]
        mtu: Option<u32>,
        /// Do not masquerade traffic leaving the subnet.
        #[arg(long)]
        no_masquerade: bool,
        /// Allow forwarding to and from other ferrynet networks.
        #[arg(long)]
        no_isolate: bool,
        /// No hairpin mode on bridge ports (a container then cannot reach its own published ports).
        #[arg(long)]
        no_hairpin: bool,
        /// Let containers send from addresses and MACs that are not theirs.
        #[arg(long)]
        no_anti_spoofing: bool,
        /// BIG TCP: 192 KiB GSO/GRO packets on the containers' veth pairs (2.3x the
        /// throughput between containers of the bridge; only where every device a
        /// container's traffic crosses takes that size — not through a 64 KiB uplink).
        #[arg(long)]
        big_tcp: bool,
        #[arg(long)]
        json: bool,
    },
    /// List networks.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show a network and its endpoints.
    Inspect {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a network (refuses while endpoints exist, unless --force detaches them).
    Rm {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Serialize)]
struct Inspect {
    #[serde(flatten)]
    config: NetworkConfig,
    bridge_ifindex: Option<u32>,
    bridge_up: bool,
    endpoints: Vec<Endpoint>,
}

pub fn run(state: &StateDir, cmd: NetworkCmd) -> Result<()> {
    match cmd {
        NetworkCmd::Create {
            name,
            subnet,
            bridge,
            gateway,
            mtu,
            no_masquerade,
            no_isolate,
            no_hairpin,
            no_anti_spoofing,
            big_tcp,
            json,
        } => {
            let mut net = NetworkConfig::new(
                &name,
                &subnet,
                bridge.as_deref(),
                &gateway,
                mtu.unwrap_or_else(default_mtu),
            )?;
            net.masquerade = !no_masquerade;
            net.isolate = !no_isolate;
            net.hairpin = !no_hairpin;
            net.anti_spoof = !no_anti_spoofing;
            net.big_tcp = big_tcp;
            create(state, &net)?;
            if json {
                print_json(&net);
            } else {
                println!("{}", net.name);
            }
        }
        NetworkCmd::Ls { json } => {
            let nets = state.list()?;
            if json {
                print_json(&nets);
            } else {
                let driver = Driver::new(state.clone());
                println!(
                    "{:<16} {:<16} {:<34} {:<28} {:>5} {:>9}",
                    "NAME", "BRIDGE", "SUBNETS", "GATEWAYS", "MTU", "ENDPOINTS"
                );
                for n in nets {
                    let count = driver.endpoints(&n.name)?.len();
                    println!(
                        "{:<16} {:<16} {:<34} {:<28} {:>5} {:>9}",
                        n.name,
                        n.bridge,
                        joined(&n.subnets()),
                        joined(&n.gateways()),
                        n.mtu,
                        count
                    );
                }
            }
        }
        NetworkCmd::Inspect { name, json } => {
            let config = state.load(&name)?;
            let mut h = Handle::new()?;
            let link = h.link_by_name(&config.bridge)?;
            let mut endpoints = Driver::new(state.clone()).endpoints(&name)?;
            // Records hold the plan; ifindexes are read live from the kernel.
            for ep in &mut endpoints {
                ep.host_ifindex = h.link_by_name(&ep.host_veth)?.map(|l| l.index);
            }
            let info = Inspect {
                bridge_ifindex: link.as_ref().map(|l| l.index),
                bridge_up: link.as_ref().is_some_and(|l| l.up),
                config,
                endpoints,
            };
            if json {
                print_json(&info);
            } else {
                print_inspect(&info);
            }
        }
        NetworkCmd::Rm { name, force } => {
            let _lock = state.lock_networks()?;
            let net = state.load(&name)?;
            let driver = Driver::new(state.clone());
            let endpoints = driver.endpoints(&name)?;
            if !endpoints.is_empty() && !force {
                bail!(
                    "network {name:?} still has {} endpoint(s) ({}); detach them or use --force",
                    endpoints.len(),
                    endpoints
                        .iter()
                        .map(|e| e.container_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            for ep in endpoints {
                driver.detach(&net, &ep.container_id, &ep.ifname)?;
            }
            driver.remove_network(&net)?;
            state.remove(&name)?;
        }
    }
    Ok(())
}

/// Records the network, then builds its host side; if that fails the record goes too.
fn create(state: &StateDir, net: &NetworkConfig) -> Result<()> {
    let mut h = Handle::new()?;
    Ok(Driver::new(state.clone()).create_network(&mut h, net)?)
}

fn joined<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn print_inspect(i: &Inspect) {
    let c = &i.config;
    println!("network     {}", c.name);
    match i.bridge_ifindex {
        Some(idx) => println!(
            "bridge      {} (ifindex {idx}, {})",
            c.bridge,
            if i.bridge_up { "up" } else { "down" }
        ),
        None => println!(
            "bridge      {} (missing: recreated on next attach)",
            c.bridge
        ),
    }
    for (subnet, gateway) in c.subnets().iter().zip(c.gateways()) {
        println!("subnet      {subnet}  gateway {gateway}");
    }
    println!("mtu         {}", c.mtu);
    println!(
        "masquerade  {}  isolate {}  hairpin {}",
        yes_no(c.masquerade),
        yes_no(c.isolate),
        yes_no(c.hairpin)
    );
    println!("endpoints   {}", i.endpoints.len());
    if i.endpoints.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<20} {:<8} {:<40} {:<17} {:<15} {:>7}  NETNS",
        "CONTAINER", "IFNAME", "ADDRESSES", "MAC", "HOST VETH", "IFINDEX"
    );
    for e in &i.endpoints {
        let addrs: Vec<IpNet> =
            e.ip.map(IpNet::V4)
                .into_iter()
                .chain(e.ip6.map(IpNet::V6))
                .collect();
        println!(
            "{:<20} {:<8} {:<40} {:<17} {:<15} {:>7}  {}{}",
            e.container_id,
            e.ifname,
            if addrs.is_empty() {
                "-".to_string()
            } else {
                joined(&addrs)
            },
            e.mac.to_string(),
            e.host_veth,
            e.host_ifindex.map(|n| n.to_string()).unwrap_or("-".into()),
            e.netns.display(),
            if e.ports.is_empty() {
                String::new()
            } else {
                format!(
                    "  ports {}",
                    e.ports
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
        );
    }
}
