//! The agent's loop: wait for the store to change (or a resync to be due), renew the lease,
//! keep BIRD alive, and bring the data plane in line with the peers' leases. Store outages
//! keep the data plane as it is; the same failure repeating is logged once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{leased, peers_of, write_subnet_file, AgentConfig, AgentError};
use crate::backend::{Dataplane, Report};
use crate::cluster::{BackendKind, ClusterConfig, Lease, LeaseAttrs, Snapshot, Store, StoreError};
use crate::metrics::Metrics;
use crate::netlink::Handle;

/// "Nothing reconciled yet": forces the next pass.
const UNSEEN: u64 = u64::MAX;

pub(super) struct Reconciler<'a> {
    cfg: &'a AgentConfig,
    store: Box<dyn Store>,
    cluster: ClusterConfig,
    attrs: LeaseAttrs,
    lease: Lease,
    dataplane: Dataplane,
    h: Handle,
    metrics: Arc<Metrics>,
    resync_every: Duration,
    renew_every: Duration,
    renew_at: Instant,
    resync_at: Instant,
    /// The store revision the data plane matches.
    revision: u64,
    backoff: Duration,
    store_ok: bool,
    last_refused: Vec<String>,
    last_error: Option<String>,
    policy: Option<super::policy::PolicySync>,
}

impl<'a> Reconciler<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: &'a AgentConfig,
        store: Box<dyn Store>,
        cluster: ClusterConfig,
        attrs: LeaseAttrs,
        lease: Lease,
        dataplane: Dataplane,
        h: Handle,
        metrics: Arc<Metrics>,
    ) -> Reconciler<'a> {
        // auto hands a peer to BGP once BIRD has a route for it: look often, BIRD's routes
        // come and go without the store changing.
        let resync_every = if cluster.backend == BackendKind::Auto && dataplane.speaker().is_some()
        {
            cfg.resync.min(Duration::from_secs(2))
        } else {
            cfg.resync
        };
        let renew_every = cfg.lease_ttl / 3;
        Reconciler {
            cfg,
            store,
            cluster,
            attrs,
            lease,
            dataplane,
            h,
            metrics,
            resync_every,
            renew_every,
            renew_at: Instant::now() + renew_every,
            resync_at: Instant::now(),
            revision: UNSEEN,
            backoff: Duration::from_millis(200),
            store_ok: true,
            last_refused: Vec::new(),
            last_error: None,
            policy: cfg
                .state
                .clone()
                .map(|state| super::policy::PolicySync::new(state, &cfg.node_name, &cfg.store)),
        }
    }

    /// Reconciles until `stop` is set.
    pub(super) fn run_until(&mut self, stop: &AtomicBool) -> Result<(), AgentError> {
        while !stop.load(Ordering::SeqCst) {
            let Some(snapshot) = self.wait_for_store(stop) else {
                continue;
            };
            self.renew_if_due();
            self.check_bird();
            if let Some(p) = self.policy.as_mut() {
                p.run(self.store.as_mut(), snapshot.revision);
            }
            if snapshot.revision == self.revision && Instant::now() < self.resync_at {
                continue;
            }
            self.reconcile(&snapshot, stop)?;
        }
        Ok(())
    }

    /// The next snapshot of the leases (waiting at most until the next renewal), or `None`
    /// after backing off from an unreachable store.
    fn wait_for_store(&mut self, stop: &AtomicBool) -> Option<Snapshot> {
        // While network policy is enforced, look at this host's endpoint records more often:
        // a new pod is published to the other hosts within this (a few stats per look).
        let look = if self.policy.as_ref().is_some_and(|p| p.enforcing()) {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(500)
        };
        let wait = look.min(self.renew_at.saturating_duration_since(Instant::now()));
        match self.store.wait_for_change(self.revision, wait) {
            Ok(s) => {
                self.metrics.store_up.store(1, Ordering::Relaxed);
                if !self.store_ok {
                    info!("store reachable again");
                    self.store_ok = true;
                    self.backoff = Duration::from_millis(200);
                }
                Some(s)
            }
            Err(e) => {
                if self.store_ok {
                    warn!("{e}; keeping the data plane as it is and retrying");
                    self.store_ok = false;
                }
                sleep_unless(stop, self.backoff);
                self.backoff = (self.backoff * 2).min(Duration::from_secs(10));
                None
            }
        }
    }

    /// Renews the lease when due; a lease lost to another node is replaced and republished.
    fn renew_if_due(&mut self) {
        if Instant::now() < self.renew_at || crate::failpoint::hit("agent.renew").is_err() {
            return;
        }
        let ttl = self.cfg.lease_ttl;
        let renewed = match self.store.renew(&self.lease, ttl) {
            Err(StoreError::LeaseLost(_)) => {
                let preferred = Some(self.lease.subnet);
                self.store
                    .acquire(&self.cluster, &self.attrs, preferred, ttl)
            }
            r => r,
        };
        match renewed {
            Ok(l) => {
                self.metrics.lease_renewals.fetch_add(1, Ordering::Relaxed);
                if l.subnet != self.lease.subnet {
                    warn!(
                        "lease on {} lost; now holding {}: republishing",
                        self.lease.subnet, l.subnet
                    );
                    if let Err(e) = self.move_to(&l) {
                        warn!("moving to {}: {e}; retrying", l.subnet);
                    }
                    self.revision = UNSEEN;
                }
                self.lease = l;
                self.renew_at = Instant::now() + self.renew_every;
            }
            Err(e) => warn!("renewing the lease: {e}; retrying"),
        }
    }

    /// Points everything at a new subnet: the VXLAN device's address, the subnet file the CNI
    /// plugin reads (new containers), what BIRD announces (next reconcile), the metrics.
    /// Containers already running keep their addresses in the old subnet, which is no longer
    /// routed to this host: they need to be recreated, as with any lost lease.
    fn move_to(&mut self, lease: &Lease) -> Result<(), AgentError> {
        self.dataplane.set_subnet(lease.subnet, lease.subnet6);
        self.dataplane.setup(&mut self.h)?;
        write_subnet_file(self.cfg, lease, self.dataplane.mtu())?;
        if let Ok(mut s) = self.metrics.subnet.lock() {
            *s = leased(lease);
        }
        Ok(())
    }

    /// A dead BIRD is started again by the next reconcile.
    fn check_bird(&mut self) {
        if self.dataplane.speaker().is_some_and(|s| !s.alive()) {
            if self.revision != UNSEEN {
                warn!("BIRD is not running; starting it again");
            }
            self.revision = UNSEEN;
        }
    }

    fn reconcile(&mut self, snapshot: &Snapshot, stop: &AtomicBool) -> Result<(), AgentError> {
        let peers = peers_of(&self.cluster, &self.lease, &snapshot.leases);
        let reconciled = crate::failpoint::hit("agent.reconcile")
            .map_err(|e| e.to_string())
            .and_then(|_| {
                self.dataplane
                    .reconcile(&mut self.h, &peers)
                    .map_err(|e| e.to_string())
            });
        match reconciled {
            Ok(report) => {
                if self.last_error.take().is_some() {
                    info!("reconciled again");
                }
                self.revision = snapshot.revision;
                self.resync_at = Instant::now() + self.resync_every;
                self.record(peers.len(), report);
            }
            Err(e) => {
                self.metrics
                    .reconcile_errors
                    .fetch_add(1, Ordering::Relaxed);
                if self.last_error.as_deref() != Some(e.as_str()) {
                    warn!("reconcile failed: {e}; retrying");
                    self.last_error = Some(e);
                }
                self.revision = UNSEEN;
                self.h = Handle::new()?;
                sleep_unless(stop, Duration::from_millis(200));
            }
        }
        Ok(())
    }

    /// Metrics and logs of a successful pass.
    fn record(&mut self, peers: usize, report: Report) {
        let m = &self.metrics;
        m.reconciles.fetch_add(1, Ordering::Relaxed);
        m.peers_vxlan
            .store(report.vxlan_peers as u64, Ordering::Relaxed);
        m.peers_direct
            .store(report.direct_peers as u64, Ordering::Relaxed);
        m.peers_bgp
            .store(report.bgp_peers as u64, Ordering::Relaxed);
        m.peers6_vxlan
            .store(report.vxlan_peers6 as u64, Ordering::Relaxed);
        m.peers6_direct
            .store(report.direct_peers6 as u64, Ordering::Relaxed);
        m.peers6_bgp
            .store(report.bgp_peers6 as u64, Ordering::Relaxed);
        m.peers_refused
            .store(report.refused.len() as u64, Ordering::Relaxed);
        m.dataplane_changes
            .fetch_add(report.changes as u64, Ordering::Relaxed);
        if report.changes > 0 {
            info!(
                "{peers} peers ({} via vxlan, {} direct, {} via bgp; IPv6: {} via vxlan, {} direct, {} via bgp): {} changes",
                report.vxlan_peers,
                report.direct_peers,
                report.bgp_peers,
                report.vxlan_peers6,
                report.direct_peers6,
                report.bgp_peers6,
                report.changes
            );
        }
        if report.refused != self.last_refused {
            for r in &report.refused {
                warn!("refused peer {r}");
            }
            self.last_refused = report.refused;
        }
    }

    /// On the way out: with `--release-on-exit`, the subnet goes back to the store and BIRD
    /// stops (its sessions close, so peers drop this host's routes now); the data plane stays.
    pub(super) fn leave(&mut self) {
        if !self.cfg.release_on_exit {
            return;
        }
        match self.store.release(&self.lease) {
            Ok(()) => info!("released {}", self.lease.subnet),
            Err(e) => warn!("releasing {}: {e}", self.lease.subnet),
        }
        if let Some(s) = self.dataplane.speaker() {
            match s.shutdown() {
                Ok(()) => info!("BIRD stopped"),
                Err(e) => warn!("stopping BIRD: {e}"),
            }
        }
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
}
