//! ferrynet: container networking over Linux bridges, a CNI plugin, and a cross-host agent.

pub mod agent;
pub mod backend;
pub mod bgp;
pub mod bridge;
pub mod cli;
pub mod cluster;
pub mod cni;
pub mod docker;
pub mod failpoint;
pub mod family;
pub mod firewall;
pub mod hostnet;
pub mod ipam;
pub mod logging;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod network;
pub mod policy;
pub mod probe;
pub mod topology;
pub mod trace;
pub mod util;
