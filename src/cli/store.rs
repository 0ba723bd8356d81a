//! The cluster store flags, the same for the agent and for the commands that read or write
//! the store (policy, namespace, endpoint).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cluster::{EtcdTls, Store};
use crate::network::StateDir;

#[derive(clap::Args, Clone)]
pub struct StoreArgs {
    /// The cluster store: etcd://HOST:PORT[,HOST:PORT...], or file:PATH (embedded, for hosts
    /// sharing a filesystem) [default: file:STATE_DIR/cluster.json].
    #[arg(long)]
    store: Option<String>,
    /// Key prefix in etcd.
    #[arg(long, default_value = crate::cluster::DEFAULT_PREFIX)]
    pub etcd_prefix: String,
    /// TLS to etcd: the CA certificate (PEM) that signed etcd's certificate.
    #[arg(long, requires_all = ["etcd_cert", "etcd_key"])]
    etcd_cacert: Option<PathBuf>,
    /// This client's certificate (PEM).
    #[arg(long, requires_all = ["etcd_cacert", "etcd_key"])]
    etcd_cert: Option<PathBuf>,
    /// This client's key (PEM).
    #[arg(long, requires_all = ["etcd_cacert", "etcd_cert"])]
    etcd_key: Option<PathBuf>,
}

impl StoreArgs {
    /// `--store`, or the embedded file store under the state directory.
    pub fn url(&self, state: &StateDir) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| format!("file:{}", state.root().join("cluster.json").display()))
    }

    pub fn tls(&self) -> Option<EtcdTls> {
        match (&self.etcd_cacert, &self.etcd_cert, &self.etcd_key) {
            (Some(ca), Some(cert), Some(key)) => Some(EtcdTls {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    pub fn open(&self, state: &StateDir) -> Result<Box<dyn Store>> {
        let url = self.url(state);
        crate::cluster::open(&url, &self.etcd_prefix, self.tls().as_ref())
            .with_context(|| format!("open the store {url}"))
    }
}
