//! The network policy verdict on a traced flow: the same evaluation the enforced table was
//! rendered from, over this host's policies and endpoints, so that trace names the policy
//! that decides (and drops the packet where policy would).

use serde_json::json;

use super::{Hop, HopKind, Proto, Trace, Verdict};
use crate::network::StateDir;
use crate::policy::{self, enforce, Action, Flow, FlowEnd, L4};

/// Adds the policy hop to `t` (at `host`, the namespace whose forward hook enforces it),
/// and turns a delivered verdict into a drop when policy denies the flow. Nothing when the
/// host has no policy, or the flow is the host's own (always allowed).
pub fn apply(state: &StateDir, host: &str, from_host: bool, t: &mut Trace) {
    if from_host || !enforce::has_policies(state) {
        return;
    }
    let Some(src) = t.src else { return };
    // After a published port's DNAT the flow is to the container and its port.
    let dnat = t.hops.iter().rev().find_map(|h| {
        let ip = h.facts.get("dnat")?.as_str()?.parse().ok()?;
        let port = h
            .facts
            .get("port")
            .and_then(|p| p.as_u64())
            .map(|p| p as u16);
        Some((ip, port))
    });
    let (dst, port) = match dnat {
        Some((ip, port)) => (ip, port.or(t.port)),
        None => (t.dst, t.port),
    };
    let l4 = match (t.proto, port) {
        (Proto::Tcp, Some(p)) => L4::Tcp(p),
        (Proto::Udp, Some(p)) => L4::Udp(p),
        _ => L4::Icmp,
    };
    let verdict = enforce::default_store(state)
        .map_err(|e| e.to_string())
        .and_then(|mut store| enforce::load(state, store.as_mut()).map_err(|e| e.to_string()))
        .and_then(|(policies, inventory, _)| {
            let flow = Flow {
                src: FlowEnd::Address(src),
                dst: FlowEnd::Address(dst),
                l4,
            };
            policy::evaluate(&policies, &inventory, &flow).map_err(|e| e.to_string())
        });
    let v = match verdict {
        Ok(v) => v,
        Err(e) => {
            t.inconsistencies
                .push(format!("network policy could not be evaluated: {e}"));
            return;
        }
    };
    let (direction, side) = v.deciding_side();
    let action = match v.action {
        Action::Allow => "allow",
        Action::Deny => "deny",
    };
    t.hops.push(Hop {
        at: host.to_string(),
        kind: HopKind::Filter,
        object: format!("network policy ({direction}, inet ferrynet_policy): {action}: {}", side.reason),
        note: None,
        facts: match json!({"policy": action, "direction": direction.to_string(), "reason": side.reason.to_string()}) {
            serde_json::Value::Object(m) => m,
            _ => Default::default(),
        },
    });
    if v.action == Action::Deny && matches!(t.verdict, Verdict::Delivered { .. }) {
        t.verdict = Verdict::Dropped {
            hop: t.hops.len() - 1,
            reason: format!("{host}: network policy ({direction}): {}", side.reason),
        };
    }
}
