//! What evaluation is asked and what it answers: a flow (its two ends and layer 4) and a
//! verdict per side with the rule that decided it. Re-exported by `eval`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Serialize;

use super::model::{Direction, PolicyKey, PolicyType, Protocol};

/// Layer 4 of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    Tcp(u16),
    Udp(u16),
    Sctp(u16),
    /// ICMP or ICMPv6 (any type).
    Icmp,
}

impl L4 {
    /// The protocol and destination port; `None` for ICMP.
    pub fn port(self) -> Option<(Protocol, u16)> {
        match self {
            L4::Tcp(p) => Some((Protocol::Tcp, p)),
            L4::Udp(p) => Some((Protocol::Udp, p)),
            L4::Sctp(p) => Some((Protocol::Sctp, p)),
            L4::Icmp => None,
        }
    }
}

impl FromStr for L4 {
    type Err = String;
    /// `80/tcp`, `53/udp`, `9/sctp`, `80` (TCP), or `icmp`.
    fn from_str(s: &str) -> Result<L4, String> {
        if s.eq_ignore_ascii_case("icmp") {
            return Ok(L4::Icmp);
        }
        let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?}: expected PORT[/tcp|udp|sctp] or icmp"))?;
        match proto.to_ascii_lowercase().as_str() {
            "tcp" => Ok(L4::Tcp(port)),
            "udp" => Ok(L4::Udp(port)),
            "sctp" => Ok(L4::Sctp(port)),
            _ => Err(format!(
                "{s:?}: unknown protocol {proto:?} (tcp, udp or sctp)"
            )),
        }
    }
}

impl fmt::Display for L4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port() {
            Some((proto, port)) => write!(f, "{port}/{}", proto.to_string().to_lowercase()),
            None => f.write_str("icmp"),
        }
    }
}

/// One end of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowEnd {
    /// An endpoint by id: its address of the other end's family when that end is an
    /// address, else its first address.
    Endpoint(String),
    /// An address: an endpoint's if one has it, else outside the cluster's endpoints.
    Address(IpAddr),
    /// A host (node) by name and address: to an endpoint on that host, always allowed.
    Host { node: String, address: IpAddr },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub src: FlowEnd,
    pub dst: FlowEnd,
    pub l4: L4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Action {
    Allow,
    Deny,
}

/// A rule of a policy: what counters, traces and drop logs name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RuleRef {
    pub policy: PolicyKey,
    pub direction: Direction,
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl RuleRef {
    pub fn new(
        policy: &PolicyKey,
        direction: Direction,
        index: usize,
        name: Option<&str>,
    ) -> RuleRef {
        RuleRef {
            policy: policy.clone(),
            direction,
            index,
            name: name.map(str::to_string),
        }
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}[{}]", self.policy, self.direction, self.index)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        Ok(())
    }
}

/// Why one side of a flow got its action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "by")]
pub enum Reason {
    /// This side is not an endpoint (an outside address or a host): nothing to police.
    NotAnEndpoint,
    /// From the destination's own host.
    OwnHost,
    /// An endpoint to itself.
    SameEndpoint,
    /// An AdminNetworkPolicy rule's Allow or Deny.
    Admin { rule: RuleRef, priority: u32 },
    /// A NetworkPolicy rule allowed it (the first in policy and rule order; others may too).
    NetworkPolicy { rule: RuleRef },
    /// Isolated by these NetworkPolicies, none of whose rules allows it.
    Isolated { policies: Vec<PolicyKey> },
    /// A BaselineAdminNetworkPolicy rule.
    Baseline { rule: RuleRef },
    /// No policy applies: Kubernetes' default allow.
    NoPolicy,
}

impl fmt::Display for Reason {
    /// One line for people (trace, drop logs, `policy eval`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotAnEndpoint => f.write_str("not an endpoint (no policy applies)"),
            Reason::OwnHost => f.write_str("from the endpoint's own host (always allowed)"),
            Reason::SameEndpoint => f.write_str("an endpoint to itself (always allowed)"),
            Reason::Admin { rule, priority } => write!(f, "{rule} (priority {priority})"),
            Reason::NetworkPolicy { rule } => write!(f, "{rule}"),
            Reason::Isolated { policies } => {
                let names: Vec<String> = policies.iter().map(|p| p.to_string()).collect();
                write!(f, "isolated by {}; no rule allows it", names.join(", "))
            }
            Reason::Baseline { rule } => write!(f, "{rule}"),
            Reason::NoPolicy => f.write_str("no policy selects it (default allow)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SideVerdict {
    pub action: Action,
    pub reason: Reason,
    /// The admin rule whose Pass sent the decision on to NetworkPolicy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passed_by: Option<RuleRef>,
}

impl SideVerdict {
    pub(super) fn new(action: Action, reason: Reason) -> SideVerdict {
        SideVerdict {
            action,
            reason,
            passed_by: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub action: Action,
    pub egress: SideVerdict,
    pub ingress: SideVerdict,
}

impl Verdict {
    /// The side that decided: the denying one (egress first, as the packet meets it first);
    /// when allowed, the ingress side unless only the egress side had a policy to say so.
    pub fn deciding_side(&self) -> (Direction, &SideVerdict) {
        let quiet = |s: &SideVerdict| matches!(s.reason, Reason::NotAnEndpoint | Reason::NoPolicy);
        if self.egress.action == Action::Deny
            || (self.ingress.action == Action::Allow
                && quiet(&self.ingress)
                && !quiet(&self.egress))
        {
            (PolicyType::Egress, &self.egress)
        } else {
            (PolicyType::Ingress, &self.ingress)
        }
    }
}
