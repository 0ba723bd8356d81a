//! `ferrynet policy|namespace|endpoint ...`: network policy objects and the labels they
//! select on, in the cluster store (the agent's `--store`; by default the embedded file
//! store under the state directory). Enforcement comes from the data plane, not from here.

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::store::StoreArgs;
use crate::cluster::objects;
use crate::cluster::Store;
use crate::network::StateDir;
use crate::policy::{self, FlowEnd, Inventory, LabelChange, Policy, PolicyKey, L4};

#[derive(clap::Subcommand)]
pub enum PolicyCmd {
    /// Create or replace the policies of a YAML or JSON file (several documents with ---,
    /// or a kind: List); all are checked before any is written.
    Apply {
        /// The file, or - for standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The policies in force (a table, or --json).
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// One policy as stored (JSON, which `apply -f` reads back): NS/NAME for a
    /// NetworkPolicy, NAME for an AdminNetworkPolicy (else the BaselineAdminNetworkPolicy).
    Show {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a policy (NS/NAME or NAME, as for show).
    Rm {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// What policy dropped on this host: packets per endpoint, or with --follow every
    /// denied packet of a policy annotated ferrynet.io/log-drops: "true", as it happens.
    Drops {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        follow: bool,
        /// With --follow: stop after this many seconds (default: run until interrupted).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Whether a flow is allowed under the stored policies, and which rule decides.
    Eval {
        /// NS/POD (an endpoint's pod name or container id) or an IP address.
        #[arg(long)]
        from: String,
        /// NS/POD or an IP address.
        #[arg(long)]
        to: String,
        /// PORT/tcp|udp|sctp, or icmp.
        #[arg(long, default_value = "80/tcp")]
        port: L4,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Subcommand)]
pub enum NamespaceCmd {
    /// Set (KEY=VALUE) or remove (KEY-) a namespace's labels, as kubectl label does.
    Label {
        namespace: String,
        #[arg(required = true)]
        changes: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Subcommand)]
pub enum EndpointCmd {
    /// Set (KEY=VALUE) or remove (KEY-) a running endpoint's labels.
    Label {
        container_id: String,
        #[arg(required = true)]
        changes: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn label_changes(words: &[String]) -> Result<Vec<LabelChange>> {
    Ok(words
        .iter()
        .map(|w| LabelChange::parse(w))
        .collect::<Result<_, _>>()?)
}

fn show_labels(labels: &policy::Labels) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if pairs.is_empty() {
        "(no labels)".into()
    } else {
        pairs.join(",")
    }
}

pub fn run_namespace(state: &StateDir, cmd: NamespaceCmd) -> Result<()> {
    let NamespaceCmd::Label {
        namespace,
        changes,
        store,
    } = cmd;
    let changes = label_changes(&changes)?;
    let mut opened = store.open(state)?;
    let labels = objects::label_namespace(opened.as_mut(), &namespace, &changes)?;
    println!("namespace {namespace}: {}", show_labels(&labels));
    enforce(state, opened.as_mut(), &store.url(state))
}

pub fn run_endpoint(state: &StateDir, cmd: EndpointCmd) -> Result<()> {
    let EndpointCmd::Label {
        container_id,
        changes,
        store,
    } = cmd;
    let changes = label_changes(&changes)?;
    // An endpoint of this host: its own record is the truth (the agent publishes it);
    // a stored copy is updated too, so that other hosts see the change at once.
    if let Some(labels) =
        crate::bridge::Driver::new(state.clone()).relabel(&container_id, &changes)?
    {
        let url = store.url(state);
        let mut store = store.open(state)?;
        match objects::label_endpoint(store.as_mut(), &container_id, &changes) {
            Ok(_) | Err(crate::cluster::StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        println!("endpoint {container_id}: {}", show_labels(&labels));
        return enforce(state, store.as_mut(), &url);
    }
    let mut opened = store.open(state)?;
    let record = objects::label_endpoint(opened.as_mut(), &container_id, &changes)?;
    println!("endpoint {container_id}: {}", show_labels(&record.labels));
    enforce(state, opened.as_mut(), &store.url(state))
}

pub fn run(state: &StateDir, cmd: PolicyCmd) -> Result<()> {
    match cmd {
        PolicyCmd::Apply { file, store } => apply(state, &file, &store),
        PolicyCmd::Ls { json, store } => list(state, json, &store),
        PolicyCmd::Drops {
            json,
            follow,
            seconds,
        } => drops(state, json, follow, seconds),
        PolicyCmd::Show { name, store } => {
            let policy = find(store.open(state)?.as_mut(), &name)?;
            println!("{}", serde_json::to_string_pretty(&policy.to_json())?);
            Ok(())
        }
        PolicyCmd::Rm { name, store } => {
            let url = store.url(state);
            let mut store = store.open(state)?;
            let key = find(store.as_mut(), &name)?.key();
            objects::delete_policy(store.as_mut(), &key)?;
            println!("{key} deleted");
            enforce(state, store.as_mut(), &url)
        }
        PolicyCmd::Eval {
            from,
            to,
            port,
            json,
            store,
        } => eval(state, &from, &to, port, json, &store),
    }
}

fn find(store: &mut dyn Store, name: &str) -> Result<Policy> {
    objects::find_policy(store, name)?.ok_or_else(|| {
        anyhow::anyhow!("no policy {name} (NS/NAME for a NetworkPolicy, NAME for an admin policy)")
    })
}

fn apply(state: &StateDir, file: &PathBuf, store: &StoreArgs) -> Result<()> {
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read standard input")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?
    };
    let policies = policy::parse_policies(&text).with_context(|| format!("{}", file.display()))?;
    if policies.is_empty() {
        bail!("{}: no policy in it", file.display());
    }
    let url = store.url(state);
    let mut store = store.open(state)?;
    for p in &policies {
        let key = p.key();
        let before = objects::get_policy(store.as_mut(), &key).ok().flatten();
        let what = match before {
            Some(old) if old == *p => "unchanged",
            Some(_) => "configured",
            None => "created",
        };
        if what != "unchanged" {
            objects::put_policy(store.as_mut(), p)?;
        }
        println!("{key} {what}");
    }
    enforce(state, store.as_mut(), &url)
}

/// Applies the stored state to this host's nftables (the data plane follows every change).
fn enforce(state: &StateDir, store: &mut dyn Store, url: &str) -> Result<()> {
    policy::enforce::refresh(state, store, url)
        .context("the change is stored, but not in force here")
}

/// One row of `policy ls`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyRow {
    #[serde(flatten)]
    key: PolicyKey,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u32>,
    /// The directions it isolates (NetworkPolicy) or has rules for (admin kinds).
    directions: Vec<policy::Direction>,
    ingress_rules: usize,
    egress_rules: usize,
    /// On this host, while it enforces policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    counters: Option<policy::counters::PolicyCounters>,
}

fn row(p: &Policy, counters: Option<&policy::counters::Counters>) -> PolicyRow {
    use policy::model::PolicyType::{Egress, Ingress};
    let (priority, ingress, egress) = match p {
        Policy::Network(np) => (None, np.spec.ingress.len(), np.spec.egress.len()),
        Policy::Admin(a) => (
            Some(a.spec.priority),
            a.spec.ingress.len(),
            a.spec.egress.len(),
        ),
        Policy::Baseline(b) => (None, b.spec.ingress.len(), b.spec.egress.len()),
    };
    let directions = [Ingress, Egress]
        .into_iter()
        .filter(|d| match (p, d) {
            (Policy::Network(np), _) => np.spec.isolates(*d),
            (_, Ingress) => ingress > 0,
            (_, Egress) => egress > 0,
        })
        .collect();
    PolicyRow {
        key: p.key(),
        priority,
        directions,
        ingress_rules: ingress,
        egress_rules: egress,
        counters: counters.map(|c| c.of(p)),
    }
}

/// One of this host's endpoints' drops, for `policy ls`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DropRow {
    endpoint: String,
    address: IpAddr,
    direction: policy::Direction,
    #[serde(flatten)]
    count: policy::counters::Count,
}

fn drop_rows(state: &StateDir, counters: Option<&policy::counters::Counters>) -> Vec<DropRow> {
    let names = crate::bridge::Driver::new(state.clone()).endpoint_names();
    counters
        .iter()
        .flat_map(|c| c.drops.iter())
        .map(|((address, direction), count)| DropRow {
            endpoint: names.get(address).cloned().unwrap_or_else(|| "-".into()),
            address: *address,
            direction: *direction,
            count: *count,
        })
        .collect()
}

fn drops(state: &StateDir, json: bool, follow: bool, seconds: Option<u64>) -> Result<()> {
    if !follow {
        let counters = policy::counters::Counters::read().context("reading policy counters")?;
        let rows = drop_rows(state, counters.as_ref());
        if json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            print_drops(&rows);
        }
        return Ok(());
    }
    let mut log = policy::droplog::DropLog::open().with_context(|| {
        format!(
            "reading NFLOG group {} (is an agent with --log-drops reading it?)",
            policy::droplog::LOG_GROUP
        )
    })?;
    // Said once the group is bound: from here on no denied packet is missed (a script can
    // wait for this line instead of sleeping).
    eprintln!(
        "reading denied packets from NFLOG group {}",
        policy::droplog::LOG_GROUP
    );
    let end = seconds.map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s));
    use std::io::Write;
    loop {
        let step = std::time::Instant::now() + std::time::Duration::from_millis(200);
        let step = end.map_or(step, |e| step.min(e));
        for d in log.until(step)? {
            if json {
                println!("{}", serde_json::to_string(&d)?);
            } else {
                println!("{d}");
            }
            std::io::stdout().flush()?;
        }
        if end.is_some_and(|e| std::time::Instant::now() >= e) {
            return Ok(());
        }
    }
}

fn print_drops(drops: &[DropRow]) {
    println!(
        "{:<40} {:<39} {:<9} {:>9}",
        "ENDPOINT", "ADDRESS", "DIRECTION", "DROPPED"
    );
    for d in drops {
        println!(
            "{:<40} {:<39} {:<9} {:>9}",
            d.endpoint,
            d.address.to_string(),
            d.direction.to_string(),
            d.count.packets
        );
    }
}

fn list(state: &StateDir, json: bool, store: &StoreArgs) -> Result<()> {
    let mut policies = objects::list_policies(store.open(state)?.as_mut())?;
    // In evaluation order: admin by priority, NetworkPolicy, baseline.
    policies.sort_by_key(|p| match p {
        Policy::Admin(a) => (0, a.spec.priority, p.key()),
        Policy::Network(_) => (1, 0, p.key()),
        Policy::Baseline(_) => (2, 0, p.key()),
    });
    let counters = policy::counters::Counters::read().context("reading policy counters")?;
    let rows: Vec<PolicyRow> = policies.iter().map(|p| row(p, counters.as_ref())).collect();
    let drops = drop_rows(state, counters.as_ref());
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<27} {:<32} {:>8} {:<15} {:>7} {:>6} {:>9} {:>9}",
        "KIND", "NAME", "PRIORITY", "DIRECTIONS", "INGRESS", "EGRESS", "ALLOWED", "DENIED"
    );
    let packets = |c: Option<policy::counters::Count>| {
        c.map(|c| c.packets.to_string())
            .unwrap_or_else(|| "-".into())
    };
    for r in &rows {
        let directions: Vec<String> = r.directions.iter().map(|d| d.to_string()).collect();
        println!(
            "{:<27} {:<32} {:>8} {:<15} {:>7} {:>6} {:>9} {:>9}",
            r.key.kind(),
            r.key.short_name(),
            r.priority
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            if directions.is_empty() {
                "-".into()
            } else {
                directions.join(",")
            },
            r.ingress_rules,
            r.egress_rules,
            packets(r.counters.as_ref().map(|c| c.allowed)),
            packets(r.counters.as_ref().map(|c| c.denied)),
        );
    }
    if drops.iter().any(|d| d.count.packets > 0) {
        println!();
        print_drops(&drops);
    }
    Ok(())
}

/// `NS/POD` → the endpoint; an IP address → itself.
fn flow_end(inventory: &Inventory, text: &str) -> Result<FlowEnd> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(FlowEnd::Address(ip));
    }
    let Some((namespace, pod)) = text.split_once('/') else {
        bail!("{text:?}: expected NS/POD or an IP address");
    };
    let endpoint = inventory
        .find(namespace, pod)
        .with_context(|| format!("no endpoint {pod} in namespace {namespace}"))?;
    Ok(FlowEnd::Endpoint(endpoint.id.clone()))
}

fn load_with_local(state: &StateDir, store: &StoreArgs) -> Result<(policy::PolicySet, Inventory)> {
    let (policies, inventory, _) = policy::enforce::load(state, store.open(state)?.as_mut())?;
    Ok((policies, inventory))
}

fn eval(
    state: &StateDir,
    from: &str,
    to: &str,
    l4: L4,
    json: bool,
    store: &StoreArgs,
) -> Result<()> {
    let (policies, inventory) = load_with_local(state, store)?;
    let flow = policy::Flow {
        src: flow_end(&inventory, from)?,
        dst: flow_end(&inventory, to)?,
        l4,
    };
    let verdict = policy::evaluate(&policies, &inventory, &flow)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
        return Ok(());
    }
    let (direction, side) = verdict.deciding_side();
    let action = |a: policy::Action| match a {
        policy::Action::Allow => "allow",
        policy::Action::Deny => "deny",
    };
    println!(
        "{} {from} -> {to} {l4}: {direction}: {}",
        action(verdict.action),
        side.reason
    );
    for (name, s) in [("egress", &verdict.egress), ("ingress", &verdict.ingress)] {
        let passed = s
            .passed_by
            .as_ref()
            .map(|r| format!(" (passed on by {r})"))
            .unwrap_or_default();
        println!("  {name:<7} {:<5} {}{passed}", action(s.action), s.reason);
    }
    Ok(())
}
