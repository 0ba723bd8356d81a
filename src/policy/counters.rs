//! What policy did on this host: the packet counter of every policy rule (found by the
//! comment [`super::nft`] gives each rule) and the drops per endpoint address (the counters
//! of the `drops_*` sets). Read from the kernel with `nft -j` — a diagnostic, not the data
//! path.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;

use serde::Serialize;

use super::model::{AdminAction, Direction, Policy, PolicyType};
use super::nft::{isolation_comment, rule_comment, TABLE};
use crate::firewall::FirewallError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for Count {
    fn add_assign(&mut self, o: Count) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// By rule comment, summed over the rule's nft rules (families, peers × ports).
    pub rules: BTreeMap<String, Count>,
    /// Denied packets by this host's endpoint address and direction.
    pub drops: BTreeMap<(IpAddr, Direction), Count>,
}

fn count(v: &serde_json::Value) -> Count {
    Count {
        packets: v["packets"].as_u64().unwrap_or(0),
        bytes: v["bytes"].as_u64().unwrap_or(0),
    }
}

impl Counters {
    /// This host's counters (in the calling thread's namespace); `None` without a policy
    /// table.
    pub fn read() -> Result<Option<Counters>, FirewallError> {
        if !super::enforce::active()? {
            return Ok(None);
        }
        let out = Command::new("nft")
            .args(["-j", "list", "table", "inet", TABLE])
            .output()
            .map_err(FirewallError::Spawn)?;
        if !out.status.success() {
            return Err(FirewallError::Nft(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| FirewallError::Nft(format!("nft -j: {e}")))?;
        Ok(Some(Counters::parse(&doc)))
    }

    fn parse(doc: &serde_json::Value) -> Counters {
        let mut c = Counters::default();
        for item in doc["nftables"].as_array().into_iter().flatten() {
            if let Some(rule) = item.get("rule") {
                let Some(comment) = rule["comment"].as_str() else {
                    continue;
                };
                let counted = rule["expr"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find_map(|e| e.get("counter"))
                    .map(count);
                if let Some(n) = counted {
                    *c.rules.entry(comment.to_string()).or_default() += n;
                }
            }
            if let Some(set) = item.get("set") {
                let name = set["name"].as_str().unwrap_or("");
                let direction = if name.starts_with("drops_ingress") {
                    PolicyType::Ingress
                } else if name.starts_with("drops_egress") {
                    PolicyType::Egress
                } else {
                    continue;
                };
                for e in set["elem"].as_array().into_iter().flatten() {
                    let e = &e["elem"];
                    if let Some(ip) = e["val"].as_str().and_then(|v| v.parse().ok()) {
                        *c.drops.entry((ip, direction)).or_default() += count(&e["counter"]);
                    }
                }
            }
        }
        c
    }

    /// Each rule of `policy` with its action and counter, in rule order, then what its
    /// isolation denied (NetworkPolicy).
    pub fn of(&self, policy: &Policy) -> PolicyCounters {
        let key = policy.key();
        let mut rules = Vec::new();
        let mut out = PolicyCounters::default();
        for d in [PolicyType::Ingress, PolicyType::Egress] {
            let actions: Vec<AdminAction> = match policy {
                Policy::Network(p) => vec![AdminAction::Allow; p.spec.rules(d).len()],
                Policy::Admin(p) => p.spec.rules(d).iter().map(|r| r.action).collect(),
                Policy::Baseline(p) => p.spec.rules(d).iter().map(|r| r.action).collect(),
            };
            for (index, action) in actions.into_iter().enumerate() {
                let n = self
                    .rules
                    .get(&rule_comment(&key, d, index))
                    .copied()
                    .unwrap_or_default();
                match action {
                    AdminAction::Allow => out.allowed += n,
                    AdminAction::Deny => out.denied += n,
                    AdminAction::Pass => {}
                }
                rules.push(RuleCounter {
                    direction: d,
                    index,
                    action,
                    count: n,
                });
            }
            if let Some(n) = self.rules.get(&isolation_comment(&key, d)) {
                out.denied += *n;
                out.isolation_denied.push((d, *n));
            }
        }
        out.rules = rules;
        out
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleCounter {
    pub direction: Direction,
    pub index: usize,
    pub action: AdminAction,
    #[serde(flatten)]
    pub count: Count,
}

/// One policy's counters on this host.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCounters {
    /// Packets its allow rules let in (the first packet of each connection: the rest pass
    /// as established).
    pub allowed: Count,
    /// Packets its deny rules, or its isolation, dropped.
    pub denied: Count,
    pub rules: Vec<RuleCounter>,
    /// What the isolation of each direction denied (the endpoint was its subject and no
    /// rule of any policy allowed the packet).
    pub isolation_denied: Vec<(Direction, Count)>,
}

/// The Prometheus text of this host's policy counters (empty without a table); `names`
/// gives this host's endpoints by address (`NS/POD`).
pub fn prometheus(names: &BTreeMap<IpAddr, String>) -> String {
    let Ok(Some(c)) = Counters::read() else {
        return String::new();
    };
    let mut s = String::from("# HELP ferrynet_policy_rule_packets_total Packets matched by a policy rule (first packets of connections), by the rule's name: KIND NAME DIRECTION[INDEX], or DIRECTION isolation for what a NetworkPolicy's isolation denied.\n# TYPE ferrynet_policy_rule_packets_total counter\n");
    for (rule, n) in &c.rules {
        s.push_str(&format!(
            "ferrynet_policy_rule_packets_total{{rule=\"{rule}\"}} {}\n",
            n.packets
        ));
    }
    s.push_str("# HELP ferrynet_policy_drops_total Packets network policy denied, by this host's endpoint.\n# TYPE ferrynet_policy_drops_total counter\n");
    for ((ip, d), n) in &c.drops {
        let endpoint = names.get(ip).map(String::as_str).unwrap_or("");
        s.push_str(&format!(
            "ferrynet_policy_drops_total{{endpoint=\"{endpoint}\",address=\"{ip}\",direction=\"{d}\"}} {}\n",
            n.packets
        ));
    }
    s
}
