//! An endpoint's records as network policy sees them: who each container is (namespace,
//! labels, named ports, addresses), and label changes of running containers.

use std::fs;
use std::net::IpAddr;

use super::{io_err, Driver, DriverError};
use crate::network::validate_id;

impl super::Endpoint {
    /// This interface as network policy sees it (its identity, or namespace `default`
    /// without labels when it has none); `host` is this host's node name.
    pub fn policy_record(&self, host: &str) -> crate::policy::EndpointRecord {
        let id = self.identity.clone().unwrap_or_default();
        crate::policy::EndpointRecord {
            id: self.container_id.clone(),
            namespace: id.namespace,
            name: id.name,
            labels: id.labels,
            named_ports: id.named_ports,
            addresses: [
                self.ip.map(|n| IpAddr::V4(n.addr())),
                self.ip6.map(|n| IpAddr::V6(n.addr())),
            ]
            .into_iter()
            .flatten()
            .collect(),
            host: host.to_string(),
        }
    }
}

impl Driver {
    /// Every endpoint on this host as network policy sees it (namespace, labels, named
    /// ports, addresses), from the endpoints' own records; `host` is this host's node name.
    /// One endpoint per container: its first interface's record carries the identity.
    pub fn policy_records(
        &self,
        host: &str,
    ) -> Result<Vec<crate::policy::EndpointRecord>, DriverError> {
        let dir = self.state.run_dir().join("endpoints");
        let mut networks: Vec<String> = match fs::read_dir(&dir) {
            Ok(e) => e
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        networks.sort();
        let mut out: Vec<crate::policy::EndpointRecord> = Vec::new();
        for net in networks {
            for ep in self.endpoints(&net)? {
                let record = ep.policy_record(host);
                if let Some(r) = out.iter_mut().find(|r| r.id == ep.container_id) {
                    r.addresses.extend(record.addresses);
                    continue;
                }
                out.push(record);
            }
        }
        Ok(out)
    }

    /// This host's endpoints by address, named `NS/POD` (for counters and drop logs); empty
    /// when the records cannot be read.
    pub fn endpoint_names(&self) -> std::collections::BTreeMap<IpAddr, String> {
        self.policy_records("")
            .unwrap_or_default()
            .into_iter()
            .flat_map(|r| {
                let name = format!("{}/{}", r.namespace, r.display_name());
                r.addresses.into_iter().map(move |a| (a, name.clone()))
            })
            .collect()
    }

    /// Changes the labels of a local container's endpoints (every interface's record; an
    /// endpoint without an identity gets one in namespace `default`); each record is
    /// replaced atomically. Returns the labels now in force, `None` if no endpoint of this
    /// host has that container id.
    pub fn relabel(
        &self,
        container_id: &str,
        changes: &[crate::policy::LabelChange],
    ) -> Result<Option<crate::policy::Labels>, DriverError> {
        validate_id("container id", container_id)?;
        let dir = self.state.run_dir().join("endpoints");
        let networks = match fs::read_dir(&dir) {
            Ok(e) => e
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut labels = None;
        for net in networks {
            for mut ep in self.endpoints(&net)? {
                if ep.container_id != container_id {
                    continue;
                }
                let id = ep.identity.get_or_insert_with(Default::default);
                crate::policy::LabelChange::apply_all(&mut id.labels, changes);
                labels = Some(id.labels.clone());
                let p = self.record_path(&ep.network, &ep.container_id, &ep.ifname);
                let data = serde_json::to_vec_pretty(&ep).expect("serializable");
                crate::util::write_atomic(&p, &data).map_err(io_err(&p))?;
            }
        }
        Ok(labels)
    }
}
