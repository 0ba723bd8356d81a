//! The cross-host pod path built with the kernel alone: on each of two hosts a bridge and one
//! pod's veth, joined by plain routes (the host-gw shape) or a VXLAN device; no nftables
//! table, no conntrack, no agent. Its throughput against the raw underlay in the same run is
//! what the topology itself costs — the extra veth and bridge hops and the encapsulation —
//! so ferrynet's rows can be read against the kernel's own ceiling for the same path.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use ipnet::Ipv4Net;

use super::cluster::Lab;
use crate::netlink::{Handle, Mac, Route, VethSpec, VxlanSpec, PROTO_BOOT};
use crate::netns::Netns;

/// The two shapes measured.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    Routed,
    Vxlan,
}

/// Pod A's namespace and pod B's, and pod B's address.
pub(super) struct KernelPath {
    pub(super) pod_a: Netns,
    pub(super) pod_b: Netns,
    pub(super) far_pod: IpAddr,
}

/// Hosts `first` and `first + 1` of `lab`'s fabric (10.200.10.(i+2)), pods in 10.197.i.0/24.
pub(super) fn build(lab: &mut Lab, tag: &str, first: usize, shape: Shape) -> Result<KernelPath> {
    let (i, j) = (first, first + 1);
    let host_ip = |i: usize| Ipv4Addr::new(10, 200, 10, (i + 2) as u8);
    let subnet = |i: usize| Ipv4Net::new(Ipv4Addr::new(10, 197, i as u8, 0), 24).expect("valid");
    let vtep_mac = |i: usize| Mac::from_seed(&format!("kvtep{i}"));
    let mtu = if shape == Shape::Vxlan { 1450 } else { 1500 };
    let mut pods = Vec::new();
    for (me, peer) in [(i, j), (j, i)] {
        let host = lab.host(&format!("{tag}h{me}"), me)?;
        let pod = lab.netns(&format!("{tag}p{me}"))?;
        let gw = Ipv4Addr::from(u32::from(subnet(me).network()) + 1);
        host.run(|| -> Result<()> {
            crate::netns::write_sysctl("net/ipv4/ip_forward", "1")?;
            let mut h = Handle::new()?;
            h.create_bridge("kbr0", mtu, Mac::from_seed(&format!("kbr{me}")))?;
            let br = h.link_by_name("kbr0")?.context("kbr0")?.index;
            h.add_addr(br, Ipv4Net::new(gw, 24)?)?;
            h.set_up(br)?;
            h.create_veth(&VethSpec {
                host_name: "kv0",
                host_mac: None,
                peer_name: "eth0",
                peer_netns: pod.fd(),
                peer_mac: None,
                mtu,
                master: Some(br),
                big_packets: None,
            })?;
            let port = h.link_by_name("kv0")?.context("kv0")?.index;
            h.set_up(port)?;
            let far = subnet(peer);
            match shape {
                Shape::Routed => h.add_route(&Route {
                    dst: far,
                    gateway: Some(host_ip(peer)),
                    oif: None,
                    onlink: false,
                    protocol: PROTO_BOOT,
                })?,
                Shape::Vxlan => {
                    let uplink = h.link_by_name("eth0")?.context("eth0")?.index;
                    h.create_vxlan(&VxlanSpec {
                        name: "kvx0",
                        vni: 42,
                        port: 4789,
                        local: host_ip(me).into(),
                        underlay_index: Some(uplink),
                        mac: Some(vtep_mac(me)),
                        mtu,
                    })?;
                    let vx = h.link_by_name("kvx0")?.context("kvx0")?.index;
                    h.set_up(vx)?;
                    // Flannel's layout: the far subnet's .0 is its VTEP, on-link behind kvx0.
                    h.set_neighbour(vx, far.network(), vtep_mac(peer))?;
                    h.append_fdb(vx, vtep_mac(peer), host_ip(peer).into())?;
                    h.add_route(&Route {
                        dst: far,
                        gateway: Some(far.network()),
                        oif: Some(vx),
                        onlink: true,
                        protocol: PROTO_BOOT,
                    })?;
                }
            }
            Ok(())
        })??;
        pod.run(|| -> Result<()> {
            let mut h = Handle::new()?;
            let eth0 = h.link_by_name("eth0")?.context("eth0")?.index;
            h.add_addr(eth0, Ipv4Net::new(Ipv4Addr::from(u32::from(gw) + 1), 24)?)?;
            h.set_up(eth0)?;
            h.set_up(1)?;
            h.add_route(&Route {
                dst: "0.0.0.0/0".parse()?,
                gateway: Some(gw),
                oif: None,
                onlink: false,
                protocol: PROTO_BOOT,
            })?;
            Ok(())
        })??;
        pods.push(pod);
    }
    let pod_b = pods.pop().expect("two pods");
    let pod_a = pods.pop().expect("two pods");
    Ok(KernelPath {
        pod_a,
        pod_b,
        far_pod: Ipv4Addr::from(u32::from(subnet(j).network()) + 2).into(),
    })
}
