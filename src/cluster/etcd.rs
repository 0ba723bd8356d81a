//! The etcd v3 store: a subnet key per host bound to an etcd lease that the agent keeps alive,
//! create-if-absent transactions, and a prefix watch resumed from the last revision (re-listed
//! after a compaction). The async client runs on a private single-threaded runtime, so tokio
//! stays inside the agent and never reaches the CNI plugin's start-up path.

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, WatchOptions,
};
use ipnet::Ipv4Net;

use super::{
    check_object_name, now_secs, pick_subnet, ClusterConfig, Collection, Lease, LeaseAttrs,
    ObjectChange, Objects, Snapshot, Store, StoreError,
};

const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Client TLS for etcd: the CA that signed etcd's certificate, and this agent's certificate
/// and key (PEM files).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl EtcdTls {
    fn options(&self) -> Result<TlsOptions, StoreError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| StoreError::Unreachable(format!("etcd TLS file {}: {e}", p.display())))
        };
        Ok(TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?)))
    }
}

pub struct EtcdStore {
    rt: tokio::runtime::Runtime,
    client: Client,
    prefix: String,
    /// The etcd lease behind each subnet this store instance holds.
    lease_ids: HashMap<Ipv4Net, i64>,
    watch: Option<etcd_client::WatchStream>,
}

fn unreachable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unreachable(e.to_string())
}

impl EtcdStore {
    /// Connects to `endpoints` (URLs); fails clearly if none answers within a few seconds.
    /// With `tls`, the connection is TLS with the given CA and client certificate.
    pub fn connect(
        endpoints: &[String],
        prefix: &str,
        tls: Option<&EtcdTls>,
    ) -> Result<EtcdStore, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(unreachable)?;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(OP_TIMEOUT);
        if let Some(tls) = tls {
            opts = opts.with_tls(tls.options()?);
        }
        let client = rt
            .block_on(async {
                let mut c = Client::connect(endpoints, Some(opts)).await?;
                // connect() is lazy: ask for something to know the store answers.
                c.get("health-probe", None).await?;
                Ok::<_, etcd_client::Error>(c)
            })
            .map_err(|e| {
                StoreError::Unreachable(format!("etcd at {}: {e}", endpoints.join(",")))
            })?;
        Ok(EtcdStore {
            rt,
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
            lease_ids: HashMap::new(),
            watch: None,
        })
    }

    fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    fn subnet_key(&self, subnet: &Ipv4Net) -> String {
        format!(
            "{}{}-{}",
            self.subnets_prefix(),
            subnet.network(),
            subnet.prefix_len()
        )
    }

    fn objects_prefix(&self, collection: Collection) -> String {
        format!("{}/{}/", self.prefix, collection.dir())
    }

    fn list_at(&mut self) -> Result<Snapshot, StoreError> {
        let prefix = self.subnets_prefix();
        let mut client = self.client.clone();
        let resp = self
            .rt
            .block_on(async move {
                client
                    .get(prefix, Some(GetOptions::new().with_prefix()))
                    .await
            })
            .map_err(unreachable)?;
        let revision = resp.header().map(|h| h.revision() as u64).unwrap_or(0);
        let mut leases = Vec::new();
        for kv in resp.kvs() {
            // A value that does not parse is skipped here and reported by the agent's checks.
            if let Ok(mut l) = serde_json::from_slice::<Lease>(kv.value()) {
                l.expires = u64::MAX;
                leases.push(l);
            }
        }
        Ok(Snapshot { revision, leases })
    }
}

impl Store for EtcdStore {
    fn init_config(&mut self, requested: &ClusterConfig) -> Result<ClusterConfig, StoreError> {
        let key = self.config_key();
        let value = serde_json::to_string(requested).expect("serializable");
        let mut client = self.client.clone();
        let resp = self
            .rt
            .block_on(async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), value, None)])
                    .or_else([TxnOp::get(key, None)]);
                client.txn(txn).await
            })
            .map_err(unreachable)?;
        if resp.succeeded() {
            return Ok(*requested);
        }
        let existing = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .ok_or_else(|| StoreError::Corrupt("config vanished".into()))?;
        let existing: ClusterConfig = serde_json::from_slice(&existing)
            .map_err(|e| StoreError::Corrupt(format!("config: {e}")))?;
        super::check_config(existing, requested)
    }

    fn acquire(
        &mut self,
        config: &ClusterConfig,
        attrs: &LeaseAttrs,
        preferred: Option<Ipv4Net>,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        for _ in 0..10 {
            let live = self.list_at()?.leases;
            let subnet = pick_subnet(config, &live, attrs, preferred)?;
            let key = self.subnet_key(&subnet);
            let lease = Lease {
                subnet,
                subnet6: config.subnet6_for(subnet),
                attrs: attrs.clone(),
                expires: now_secs() + ttl.as_secs(),
            };
            let value = serde_json::to_string(&lease).expect("serializable");
            let mine_already = live.iter().any(|l| l.subnet == subnet && l.attrs == *attrs);
            let mut client = self.client.clone();
            let ttl_secs = ttl.as_secs().max(1) as i64;
            let (ok, id) = self
                .rt
                .block_on(async move {
                    let id = client.lease_grant(ttl_secs, None).await?.id();
                    let put =
                        TxnOp::put(key.clone(), value, Some(PutOptions::new().with_lease(id)));
                    // A free subnet is taken only if nobody created it meanwhile; our own is
                    // re-bound to the new etcd lease.
                    let cond = if mine_already {
                        Compare::create_revision(key, CompareOp::Greater, 0)
                    } else {
                        Compare::create_revision(key, CompareOp::Equal, 0)
                    };
                    let resp = client.txn(Txn::new().when([cond]).and_then([put])).await?;
                    if !resp.succeeded() {
                        client.lease_revoke(id).await?;
                    }
                    Ok::<_, etcd_client::Error>((resp.succeeded(), id))
                })
                .map_err(unreachable)?;
            if ok {
                self.lease_ids.insert(subnet, id);
                return Ok(lease);
            }
        }
        Err(StoreError::Unreachable(
            "lost the race for a subnet ten times".into(),
        ))
    }

    fn renew(&mut self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        let id = *self
            .lease_ids
            .get(&lease.subnet)
            .ok_or(StoreError::LeaseLost(lease.subnet))?;
        let mut client = self.client.clone();
        let remaining = self
            .rt
            .block_on(async move {
                let (mut keeper, mut stream) = client.lease_keep_alive(id).await?;
                keeper.keep_alive().await?;
                Ok::<_, etcd_client::Error>(stream.message().await?.map(|r| r.ttl()).unwrap_or(0))
            })
            .or_else(|e| {
                // etcd lost the lease (expired, or its data was wiped): not an outage.
                if e.to_string().contains("not found") {
                    Ok(0)
                } else {
                    Err(unreachable(e))
                }
            })?;
        if remaining <= 0 {
            self.lease_ids.remove(&lease.subnet);
            return Err(StoreError::LeaseLost(lease.subnet));
        }
        // The key must still be ours (etcd data wiped, or someone else took it).
        let still = self
            .list_at()?
            .leases
            .into_iter()
            .any(|l| l.subnet == lease.subnet && l.attrs == lease.attrs);
        if !still {
            return Err(StoreError::LeaseLost(lease.subnet));
        }
        Ok(Lease {
            expires: now_secs() + ttl.as_secs(),
            ..lease.clone()
        })
    }

    fn release(&mut self, lease: &Lease) -> Result<(), StoreError> {
        let Some(id) = self.lease_ids.remove(&lease.subnet) else {
            return Ok(());
        };
        let mut client = self.client.clone();
        self.rt
            .block_on(async move { client.lease_revoke(id).await.map(|_| ()) })
            .or_else(|e| {
                // An expired lease is already released.
                if e.to_string().contains("not found") {
                    Ok(())
                } else {
                    Err(unreachable(e))
                }
            })
    }

    fn list(&mut self) -> Result<Snapshot, StoreError> {
        self.list_at()
    }

    fn wait_for_change(
        &mut self,
        revision: u64,
        timeout: Duration,
    ) -> Result<Snapshot, StoreError> {
        if revision == u64::MAX {
            return self.list_at();
        }
        if self.watch.is_none() {
            // Everything under the prefix: leases, and the policies, namespaces and endpoints
            // network policy follows (a change to any wakes the agent at once).
            let prefix = format!("{}/", self.prefix);
            let mut client = self.client.clone();
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision as i64 + 1);
            let w = self
                .rt
                .block_on(async move { client.watch(prefix, Some(opts)).await })
                .map_err(unreachable)?;
            self.watch = Some(w);
        }
        let stream = self.watch.as_mut().expect("set above");
        let event = self
            .rt
            .block_on(async { tokio::time::timeout(timeout, stream.message()).await });
        match event {
            // Nothing happened in time.
            Err(_) => Ok(Snapshot {
                revision,
                leases: self.list_at()?.leases,
            }),
            Ok(Ok(Some(resp))) if !resp.canceled() && resp.compact_revision() == 0 => {
                self.list_at()
            }
            // Canceled, compacted past our revision, or the stream broke: start over.
            Ok(other) => {
                self.watch = None;
                if let Err(e) = other {
                    return Err(unreachable(e));
                }
                self.list_at()
            }
        }
    }

    fn list_objects(&mut self, collection: Collection) -> Result<Objects, StoreError> {
        let prefix = self.objects_prefix(collection);
        let mut client = self.client.clone();
        let key_prefix = prefix.clone();
        let resp = self
            .rt
            .block_on(async move {
                client
                    .get(key_prefix, Some(GetOptions::new().with_prefix()))
                    .await
            })
            .map_err(unreachable)?;
        let revision = resp.header().map(|h| h.revision() as u64).unwrap_or(0);
        let mut items = std::collections::BTreeMap::new();
        for kv in resp.kvs() {
            let (Ok(key), Ok(value)) = (kv.key_str(), kv.value_str()) else {
                return Err(StoreError::Corrupt(format!(
                    "{prefix}: a key or value that is not UTF-8"
                )));
            };
            let name = key.strip_prefix(prefix.as_str()).unwrap_or(key);
            items.insert(name.to_string(), value.to_string());
        }
        Ok(Objects { revision, items })
    }

    fn update_object(
        &mut self,
        collection: Collection,
        name: &str,
        change: &mut ObjectChange<'_>,
    ) -> Result<Option<String>, StoreError> {
        check_object_name(name)?;
        let key = format!("{}{name}", self.objects_prefix(collection));
        // Optimistic concurrency: write only if the key is still at the revision read.
        for _ in 0..10 {
            let mut client = self.client.clone();
            let get_key = key.clone();
            let resp = self
                .rt
                .block_on(async move { client.get(get_key, None).await })
                .map_err(unreachable)?;
            let current = resp.kvs().first().map(|kv| {
                (
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    kv.mod_revision(),
                )
            });
            let new = change(current.as_ref().map(|(v, _)| v.as_str()))?;
            let unchanged = match &current {
                Some((_, rev)) => Compare::mod_revision(key.clone(), CompareOp::Equal, *rev),
                None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            };
            let op = match &new {
                Some(value) => TxnOp::put(key.clone(), value.clone(), None),
                None => TxnOp::delete(key.clone(), None),
            };
            let mut client = self.client.clone();
            let ok = self
                .rt
                .block_on(async move {
                    client
                        .txn(Txn::new().when([unchanged]).and_then([op]))
                        .await
                })
                .map_err(unreachable)?
                .succeeded();
            if ok {
                return Ok(new);
            }
        }
        Err(StoreError::Unreachable(format!(
            "{key}: lost the race against other writers ten times"
        )))
    }
}
