//! The agent's metrics, served in the Prometheus text format on `--metrics ADDR`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Metrics {
    pub peers_vxlan: AtomicU64,
    pub peers_direct: AtomicU64,
    pub peers_bgp: AtomicU64,
    /// The same for the peers' IPv6 subnets (dual-stack clusters).
    pub peers6_vxlan: AtomicU64,
    pub peers6_direct: AtomicU64,
    pub peers6_bgp: AtomicU64,
    /// Peers host-gw cannot reach directly (never routed).
    pub peers_refused: AtomicU64,
    pub reconciles: AtomicU64,
    pub reconcile_errors: AtomicU64,
    pub dataplane_changes: AtomicU64,
    pub store_up: AtomicU64,
    pub store_errors: AtomicU64,
    pub lease_renewals: AtomicU64,
    pub subnet: Mutex<String>,
    /// The host's ferrynet state, when the agent enforces network policy: its counters
    /// are exported too.
    pub policy_state: Mutex<Option<crate::network::StateDir>>,
}

impl Metrics {
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        out.push_str(
            "# HELP ferrynet_peers Peers whose subnet is routed, by address family and path.\n# TYPE ferrynet_peers gauge\n",
        );
        for (family, path, value) in [
            ("ipv4", "vxlan", &self.peers_vxlan),
            ("ipv4", "direct", &self.peers_direct),
            ("ipv4", "bgp", &self.peers_bgp),
            ("ipv6", "vxlan", &self.peers6_vxlan),
            ("ipv6", "direct", &self.peers6_direct),
            ("ipv6", "bgp", &self.peers6_bgp),
        ] {
            out.push_str(&format!(
                "ferrynet_peers{{family=\"{family}\",path=\"{path}\"}} {}\n",
                g(value)
            ));
        }
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        metric(
            "ferrynet_peers_refused",
            "gauge",
            "Peers not routed: not on this L2 segment (host-gw) or without a VTEP MAC.",
            g(&self.peers_refused),
        );
        metric(
            "ferrynet_reconciles_total",
            "counter",
            "Reconcile rounds.",
            g(&self.reconciles),
        );
        metric(
            "ferrynet_reconcile_errors_total",
            "counter",
            "Failed reconcile rounds.",
            g(&self.reconcile_errors),
        );
        metric(
            "ferrynet_dataplane_changes_total",
            "counter",
            "Routes, FDB and neighbour entries added or removed.",
            g(&self.dataplane_changes),
        );
        metric(
            "ferrynet_store_up",
            "gauge",
            "1 when the lease store answers.",
            g(&self.store_up),
        );
        metric(
            "ferrynet_store_errors_total",
            "counter",
            "Failed store calls.",
            g(&self.store_errors),
        );
        metric(
            "ferrynet_lease_renewals_total",
            "counter",
            "Lease renewals.",
            g(&self.lease_renewals),
        );
        let subnets = self.subnet.lock().map(|s| s.clone()).unwrap_or_default();
        out.push_str("# HELP ferrynet_lease_info This host's subnets, one per address family.\n# TYPE ferrynet_lease_info gauge\n");
        for subnet in subnets.split(',').filter(|s| !s.is_empty()) {
            let family = if subnet.contains(':') { "ipv6" } else { "ipv4" };
            out.push_str(&format!(
                "ferrynet_lease_info{{family=\"{family}\",subnet=\"{subnet}\"}} 1\n"
            ));
        }
        let state = self.policy_state.lock().ok().and_then(|s| s.clone());
        if let Some(state) = state {
            out.push_str(&crate::policy::counters::prometheus(
                &crate::bridge::Driver::new(state).endpoint_names(),
            ));
        }
        out
    }
}

/// Serves `metrics` on `addr` from a background thread (one request per connection).
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 1024];
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let _ = conn.read(&mut buf);
            let body = metrics.render();
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_and_subnets_are_shown_per_family() {
        let m = Metrics::default();
        m.peers_vxlan.store(2, Ordering::Relaxed);
        m.peers6_vxlan.store(2, Ordering::Relaxed);
        m.peers6_direct.store(1, Ordering::Relaxed);
        *m.subnet.lock().unwrap() = "10.244.1.0/24,fd00:244:0:1::/64".into();
        let out = m.render();
        for line in [
            "ferrynet_peers{family=\"ipv4\",path=\"vxlan\"} 2",
            "ferrynet_peers{family=\"ipv6\",path=\"vxlan\"} 2",
            "ferrynet_peers{family=\"ipv6\",path=\"direct\"} 1",
            "ferrynet_peers{family=\"ipv4\",path=\"bgp\"} 0",
            "ferrynet_lease_info{family=\"ipv4\",subnet=\"10.244.1.0/24\"} 1",
            "ferrynet_lease_info{family=\"ipv6\",subnet=\"fd00:244:0:1::/64\"} 1",
        ] {
            assert!(out.contains(line), "{line} in\n{out}");
        }
    }
}
