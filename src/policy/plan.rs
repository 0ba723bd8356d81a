//! The plan of a host's policies: what the per-endpoint path (attach, detach, CNI ADD/DEL,
//! Docker's plug) needs to put one endpoint's elements into the policy table without
//! reading the policies or the store — the distinct selectors with their set ids, the named
//! ports rules use, which namespaces dispatch in which direction, the namespaces' labels.
//! [`super::enforce`] writes it beside the table at every refresh; [`super::nft`] builds the
//! whole table's elements with the same [`Plan::endpoint_elements`], so both paths agree.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::compiled::{named_port_sets, selector_sets};
use super::eval::PolicySet;
use super::inventory::{EndpointRecord, Inventory};
use super::model::{Direction, Labels};
use super::nft::{
    dispatch_map, drops_set, local_set, named_set, ns_chain, selector_set_name, DIRECTIONS,
};
use super::ruleset::{Elem, Fam, SetKind};
use super::selector::EndpointSelector;

/// What the per-endpoint path needs to put one endpoint into the table without reading the
/// policies: the distinct selectors (with their set ids), the named ports rules use, which
/// namespaces dispatch in which direction, and the namespaces' labels. Written beside the
/// table by every refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The store the policies came from (for a refresh from the per-endpoint path).
    pub store: String,
    pub namespaces: BTreeMap<String, Labels>,
    pub selectors: Vec<(String, EndpointSelector)>,
    pub named_ports: BTreeSet<String>,
    pub dispatch: BTreeSet<(String, Direction)>,
}

impl Plan {
    /// `None` without any policy: then there is nothing to enforce.
    pub fn new(
        policies: &PolicySet,
        namespaces: BTreeMap<String, Labels>,
        store: &str,
    ) -> Option<Plan> {
        if policies.network().is_empty()
            && policies.admin().is_empty()
            && policies.baseline().is_none()
        {
            return None;
        }
        let nothing = Inventory::default();
        Some(Plan {
            store: store.to_string(),
            namespaces,
            selectors: selector_sets(policies, &nothing)
                .into_iter()
                .map(|s| (s.id, s.selector))
                .collect(),
            named_ports: named_port_sets(policies, &nothing)
                .into_iter()
                .map(|s| s.name)
                .collect(),
            dispatch: policies
                .network()
                .iter()
                .flat_map(|p| {
                    DIRECTIONS
                        .into_iter()
                        .filter(|d| p.spec.isolates(*d))
                        .map(|d| (p.namespace().to_string(), d))
                })
                .collect(),
        })
    }

    /// The elements `endpoint` contributes: its addresses in the sets of the selectors it
    /// matches and of the named ports it has, and, if it runs on this host (`local`), its
    /// dispatch entries and drop counters. `inventory` gives the namespaces' labels.
    pub fn endpoint_elements(
        &self,
        inventory: &Inventory,
        endpoint: &EndpointRecord,
        local: bool,
    ) -> Vec<(String, SetKind, Elem)> {
        let mut out = Vec::new();
        for &a in &endpoint.addresses {
            let fam = Fam::of(a);
            for (id, selector) in &self.selectors {
                if selector.matches(endpoint, inventory) {
                    out.push((
                        selector_set_name(id, fam),
                        SetKind::Addresses {
                            fam,
                            counter: false,
                        },
                        Elem::Addr(a),
                    ));
                }
            }
            for port in &endpoint.named_ports {
                if self.named_ports.contains(&port.name) {
                    out.push((
                        named_set(&port.name, fam),
                        SetKind::NamedPorts { fam },
                        Elem::Port(a, port.protocol, port.port),
                    ));
                }
            }
            if !local {
                continue;
            }
            out.push((
                local_set(fam),
                SetKind::Addresses {
                    fam,
                    counter: false,
                },
                Elem::Addr(a),
            ));
            for d in DIRECTIONS {
                if self.dispatch.contains(&(endpoint.namespace.clone(), d)) {
                    out.push((
                        dispatch_map(d, fam),
                        SetKind::Dispatch { fam },
                        Elem::Jump(a, ns_chain(&endpoint.namespace, d)),
                    ));
                }
                out.push((
                    drops_set(d, fam),
                    SetKind::Addresses { fam, counter: true },
                    Elem::Addr(a),
                ));
            }
        }
        out
    }
}
