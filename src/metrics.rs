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
    /// Peers host-gw cannot reach directly (never routed).
    pub peers_refused: AtomicU64,
    pub reconciles: AtomicU64,
    pub reconcile_errors: AtomicU64,
    pub dataplane_changes: AtomicU64,
    pub store_up: AtomicU64,
    pub store_errors: AtomicU64,
    pub lease_renewals: AtomicU64,
    pub subnet: Mutex<String>,
}

impl Metrics {
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        out.push_str("# HELP ferrynet_peers Peers routed, by path.\n# TYPE ferrynet_peers gauge\n");
        out.push_str(&format!(
            "ferrynet_peers{{path=\"vxlan\"}} {}\n",
            g(&self.peers_vxlan)
        ));
        out.push_str(&format!(
            "ferrynet_peers{{path=\"direct\"}} {}\n",
            g(&self.peers_direct)
        ));
        out.push_str(&format!(
            "ferrynet_peers{{path=\"bgp\"}} {}\n",
            g(&self.peers_bgp)
        ));
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
        let subnet = self.subnet.lock().map(|s| s.clone()).unwrap_or_default();
        out.push_str(&format!(
            "# HELP ferrynet_lease_info This host's subnet.\n# TYPE ferrynet_lease_info gauge\nferrynet_lease_info{{subnet=\"{subnet}\"}} 1\n"
        ));
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
