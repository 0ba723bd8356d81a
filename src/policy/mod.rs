//! Network policy: Kubernetes `NetworkPolicy` with its exact semantics, plus the admin tiers
//! (`AdminNetworkPolicy`, `BaselineAdminNetworkPolicy`) — the objects, their parsing and
//! validation, label selectors, the reference evaluation of a flow, and the compiled view
//! (distinct selectors and their members) the nftables renderer builds on.
//!
//! Data flows one way: the CLI or the agent reads policies, namespaces and endpoints from the
//! store (`crate::cluster::objects`) and hands them here; nothing in this module talks to
//! the store or the kernel.
//!
//! | file | owns |
//! |---|---|
//! | `model` | the typed objects (NetworkPolicy and shared types), defaulting, `Policy` / `PolicyKey` |
//! | `admin` | AdminNetworkPolicy and BaselineAdminNetworkPolicy |
//! | `validate` | the API server's checks, with field paths |
//! | `parse` | YAML/JSON documents into validated policies |
//! | `selector` | label selectors, `EndpointSelector` (namespaces × pods), label syntax |
//! | `inventory` | endpoints and namespaces as policies see them; kubectl label changes |
//! | `flow` | a flow and its verdict: the rule that decided each side |
//! | `eval` | the policy set in evaluation order, and the evaluation of one flow |
//! | `plan` | what the per-endpoint path needs to place one endpoint's elements |
//! | `ruleset` | the policy table as data, and the `nft` script of its difference from the kernel's |
//! | `counters` | what policy did on this host: per-rule and per-endpoint drop counters |
//! | `droplog` | the NFLOG stream of packets denied by policies that log their drops |
//! | `compiled` | the distinct selectors with their members and users (for address sets), and the policies applying to each endpoint (for verdict maps) |

pub mod admin;
pub mod compiled;
pub mod counters;
pub mod droplog;
pub mod enforce;
pub mod eval;
pub mod flow;
pub mod identity;
pub mod inventory;
pub mod model;
pub mod nft;
pub mod parse;
pub mod plan;
pub mod ruleset;
pub mod selector;
pub mod validate;

pub use compiled::{
    endpoint_policies, named_port_sets, selector_sets, EndpointPolicies, NamedPortMember,
    NamedPortSet, SelectorSet, SelectorUse,
};
pub use eval::{
    evaluate, Action, Flow, FlowEnd, PolicySet, Reason, RuleRef, SideVerdict, Verdict, L4,
};
pub use identity::Identity;
pub use inventory::{EndpointRecord, Inventory, LabelChange, NamedPort, NAMESPACE_NAME_LABEL};
pub use model::{Direction, LabelSelector, Labels, Policy, PolicyKey, Protocol};
pub use parse::{parse_policies, policy_from_value};
pub use selector::{EndpointSelector, NamespaceScope};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not YAML or JSON at all.
    #[error("{0}")]
    Syntax(String),
    /// An object with a bad field: `object` names it (kind and name, or its document).
    #[error("{object}: {path}: {message}")]
    Invalid {
        object: String,
        path: String,
        message: String,
    },
    #[error("label {word:?}: {message}")]
    Label { word: String, message: String },
    /// A flow names an endpoint the inventory does not have.
    #[error("no endpoint {0}")]
    UnknownEndpoint(String),
}

#[cfg(test)]
mod tests;
