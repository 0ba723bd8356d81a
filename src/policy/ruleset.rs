//! The policy table as data: named sets and maps with their elements, and chains with their
//! rules. [`super::nft`] builds the one a host should have; this module turns it into an
//! `nft -f` script, either whole (a new table) or as the difference from what the kernel
//! holds: element additions and removals, and only the chains whose rules changed (flushed
//! and refilled). Either way it is one transaction.
//!
//! Elements have one typed form ([`Elem`]) with two encodings: nft's syntax for scripts, and
//! nf_tables registers for the per-endpoint path ([`super::enforce`]) and for reading back
//! what the kernel holds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::model::Protocol;
use crate::firewall::Element;

pub const TABLE: &str = "ferrynet_policy";

/// An address family, as set names and rules spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Fam {
    V4,
    V6,
}

pub const FAMILIES: [Fam; 2] = [Fam::V4, Fam::V6];

impl Fam {
    pub fn ip(self) -> &'static str {
        match self {
            Fam::V4 => "ip",
            Fam::V6 => "ip6",
        }
    }
    pub fn suffix(self) -> &'static str {
        match self {
            Fam::V4 => "4",
            Fam::V6 => "6",
        }
    }
    pub fn has(self, ip: IpAddr) -> bool {
        ip.is_ipv4() == (self == Fam::V4)
    }
    pub fn of(ip: IpAddr) -> Fam {
        if ip.is_ipv4() {
            Fam::V4
        } else {
            Fam::V6
        }
    }
    fn addr_type(self) -> &'static str {
        match self {
            Fam::V4 => "ipv4_addr",
            Fam::V6 => "ipv6_addr",
        }
    }
}

/// What a set holds; its name says which (see [`super::nft`]'s naming functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetKind {
    /// Addresses of endpoints (a selector's members); with `counter`, a packet counter per
    /// element, counted when a rule looks the address up.
    Addresses { fam: Fam, counter: bool },
    /// `address . protocol . port` of endpoints naming a port so.
    NamedPorts { fam: Fam },
    /// Address → `jump CHAIN`: per-endpoint dispatch.
    Dispatch { fam: Fam },
}

impl SetKind {
    fn declaration(self) -> String {
        match self {
            SetKind::Addresses { fam, counter } => format!(
                "set {{ type {}; {}}}",
                fam.addr_type(),
                if counter { "counter; " } else { "" }
            ),
            SetKind::NamedPorts { fam } => format!(
                "set {{ type {} . inet_proto . inet_service; }}",
                fam.addr_type()
            ),
            SetKind::Dispatch { fam } => format!("map {{ type {} : verdict; }}", fam.addr_type()),
        }
    }

    fn is_map(self) -> bool {
        matches!(self, SetKind::Dispatch { .. })
    }
}

/// One element of a policy set or map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Elem {
    Addr(IpAddr),
    Port(IpAddr, Protocol, u16),
    Jump(IpAddr, String),
}

pub fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

fn protocol_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ip_at(b: &[u8], fam: Fam) -> Option<IpAddr> {
    match fam {
        Fam::V4 => Some(<[u8; 4]>::try_from(b.get(..4)?).ok()?.into()),
        Fam::V6 => Some(<[u8; 16]>::try_from(b.get(..16)?).ok()?.into()),
    }
}

impl Elem {
    /// As nft writes it in an `elements = { ... }` list.
    pub fn text(&self) -> String {
        match self {
            Elem::Addr(a) => a.to_string(),
            Elem::Port(a, p, port) => format!("{a} . {} . {port}", protocol_name(*p)),
            Elem::Jump(a, chain) => format!("{a} : jump {chain}"),
        }
    }

    /// As nf_tables registers (each field of a concatenation padded to 4 bytes).
    pub fn encode(&self) -> Element {
        match self {
            Elem::Addr(a) => Element {
                key: ip_bytes(*a),
                ..Default::default()
            },
            Elem::Port(a, p, port) => {
                let mut key = ip_bytes(*a);
                let n = port.to_be_bytes();
                key.extend_from_slice(&[protocol_number(*p), 0, 0, 0, n[0], n[1], 0, 0]);
                Element {
                    key,
                    ..Default::default()
                }
            }
            Elem::Jump(a, chain) => Element {
                key: ip_bytes(*a),
                jump: Some(chain.clone()),
                ..Default::default()
            },
        }
    }

    /// An element read from a set of `kind`; `None` if it is not one ferrynet writes.
    pub fn decode(kind: SetKind, e: &Element) -> Option<Elem> {
        match kind {
            SetKind::Addresses { fam, .. } => Some(Elem::Addr(ip_at(&e.key, fam)?)),
            SetKind::Dispatch { fam } => Some(Elem::Jump(ip_at(&e.key, fam)?, e.jump.clone()?)),
            SetKind::NamedPorts { fam } => {
                let n = if fam == Fam::V4 { 4 } else { 16 };
                let rest = e.key.get(n..n + 8)?;
                let protocol = match rest[0] {
                    6 => Protocol::Tcp,
                    17 => Protocol::Udp,
                    132 => Protocol::Sctp,
                    _ => return None,
                };
                Some(Elem::Port(
                    ip_at(&e.key, fam)?,
                    protocol,
                    u16::from_be_bytes([rest[4], rest[5]]),
                ))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Chain {
    /// A base chain's `type ... hook ... priority ...; policy ...;`.
    pub hook: Option<String>,
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetContents {
    pub kind: SetKind,
    pub elements: BTreeSet<Elem>,
}

/// What a host's table should hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    pub sets: BTreeMap<String, SetContents>,
    pub chains: BTreeMap<String, Chain>,
}

/// A table's structure as last applied (the elements are read from the kernel instead: the
/// per-endpoint path changes them without a script).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Structure {
    pub sets: BTreeMap<String, SetKind>,
    pub chains: BTreeMap<String, Chain>,
}

/// Elements per `add element` line: nft reads a long line as fast, but keep lines readable
/// in an error message.
const ELEMENTS_PER_LINE: usize = 512;

impl Ruleset {
    pub fn set(&mut self, name: String, kind: SetKind) -> &mut BTreeSet<Elem> {
        &mut self
            .sets
            .entry(name)
            .or_insert_with(|| SetContents {
                kind,
                elements: BTreeSet::new(),
            })
            .elements
    }

    pub fn structure(&self) -> Structure {
        Structure {
            sets: self.sets.iter().map(|(n, s)| (n.clone(), s.kind)).collect(),
            chains: self.chains.clone(),
        }
    }

    /// The script that makes the table from nothing (replacing any table of that name).
    pub fn script_whole(&self) -> String {
        let mut s = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
        let _ = writeln!(s, "add table inet {TABLE}");
        let empty = Structure::default();
        let kernel = BTreeMap::new();
        self.write_changes(&mut s, &empty, &kernel);
        s
    }

    /// The script that turns the table of structure `old`, holding `kernel` elements, into
    /// this one; empty when nothing changes. Order: new sets and chains (empty), rules of
    /// new and changed chains, element additions, element removals, then removed chains and
    /// sets (nothing refers to them any more).
    pub fn script_changes(
        &self,
        old: &Structure,
        kernel: &BTreeMap<String, BTreeSet<Elem>>,
    ) -> String {
        let mut s = String::new();
        self.write_changes(&mut s, old, kernel);
        s
    }

    fn write_changes(
        &self,
        s: &mut String,
        old: &Structure,
        kernel: &BTreeMap<String, BTreeSet<Elem>>,
    ) {
        for (name, set) in &self.sets {
            if old.sets.get(name) != Some(&set.kind) {
                let decl = set.kind.declaration();
                let (word, body) = decl.split_once(' ').expect("declaration");
                let _ = writeln!(s, "add {word} inet {TABLE} {name} {body}");
            }
        }
        for (name, chain) in &self.chains {
            if !old.chains.contains_key(name) {
                match &chain.hook {
                    Some(hook) => {
                        let _ = writeln!(s, "add chain inet {TABLE} {name} {{ {hook} }}");
                    }
                    None => {
                        let _ = writeln!(s, "add chain inet {TABLE} {name}");
                    }
                }
            }
        }
        for (name, chain) in &self.chains {
            match old.chains.get(name) {
                Some(o) if o.rules == chain.rules => continue,
                Some(_) => {
                    let _ = writeln!(s, "flush chain inet {TABLE} {name}");
                }
                None => {}
            }
            for rule in &chain.rules {
                let _ = writeln!(s, "add rule inet {TABLE} {name} {rule}");
            }
        }
        let none = BTreeSet::new();
        for (name, set) in &self.sets {
            let held = if old.sets.get(name) == Some(&set.kind) {
                kernel.get(name).unwrap_or(&none)
            } else {
                &none
            };
            let added: Vec<&Elem> = set.elements.difference(held).collect();
            write_elements(s, "add", name, &added);
            let removed: Vec<&Elem> = held.difference(&set.elements).collect();
            write_elements(s, "delete", name, &removed);
        }
        for name in old.chains.keys() {
            if !self.chains.contains_key(name) {
                let _ = writeln!(s, "delete chain inet {TABLE} {name}");
            }
        }
        for (name, kind) in &old.sets {
            if self.sets.get(name).map(|s| s.kind) != Some(*kind) {
                let word = if kind.is_map() { "map" } else { "set" };
                let _ = writeln!(s, "delete {word} inet {TABLE} {name}");
            }
        }
    }
}

fn write_elements(s: &mut String, verb: &str, set: &str, elems: &[&Elem]) {
    for chunk in elems.chunks(ELEMENTS_PER_LINE) {
        let texts: Vec<String> = chunk.iter().map(|e| e.text()).collect();
        let _ = writeln!(
            s,
            "{verb} element inet {TABLE} {set} {{ {} }}",
            texts.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn elements_round_trip_through_registers() {
        let cases = [
            (
                SetKind::Addresses {
                    fam: Fam::V4,
                    counter: false,
                },
                Elem::Addr(addr("10.1.2.3")),
            ),
            (
                SetKind::NamedPorts { fam: Fam::V6 },
                Elem::Port(addr("fd00::5"), Protocol::Udp, 8080),
            ),
            (
                SetKind::Dispatch { fam: Fam::V4 },
                Elem::Jump(addr("10.1.2.3"), "ns_x_ingress".into()),
            ),
        ];
        for (kind, e) in cases {
            assert_eq!(Elem::decode(kind, &e.encode()), Some(e.clone()), "{e:?}");
        }
        assert_eq!(
            Elem::Port(addr("10.0.0.1"), Protocol::Tcp, 80).text(),
            "10.0.0.1 . tcp . 80"
        );
    }

    fn sample() -> Ruleset {
        let mut r = Ruleset::default();
        r.set(
            "s_a_4".into(),
            SetKind::Addresses {
                fam: Fam::V4,
                counter: false,
            },
        )
        .extend([Elem::Addr(addr("10.0.0.1")), Elem::Addr(addr("10.0.0.2"))]);
        r.chains.insert(
            "p_x".into(),
            Chain {
                hook: None,
                rules: vec!["ip saddr @s_a_4 accept".into()],
            },
        );
        r
    }

    #[test]
    fn a_new_member_changes_only_elements() {
        let old = sample();
        let mut kernel = BTreeMap::new();
        kernel.insert("s_a_4".to_string(), old.sets["s_a_4"].elements.clone());
        let mut new = old.clone();
        new.sets.get_mut("s_a_4").unwrap().elements =
            [Elem::Addr(addr("10.0.0.2")), Elem::Addr(addr("10.0.0.3"))].into();
        let script = new.script_changes(&old.structure(), &kernel);
        assert_eq!(
            script,
            "add element inet ferrynet_policy s_a_4 { 10.0.0.3 }\ndelete element inet ferrynet_policy s_a_4 { 10.0.0.1 }\n"
        );
        assert_eq!(old.script_changes(&old.structure(), &kernel), "");
    }

    #[test]
    fn a_changed_chain_is_flushed_and_refilled_and_a_gone_one_deleted() {
        let old = sample();
        let mut new = old.clone();
        new.chains.get_mut("p_x").unwrap().rules = vec!["accept".into()];
        new.chains.insert("p_y".into(), Chain::default());
        let kernel = BTreeMap::new();
        let script = new.script_changes(&old.structure(), &kernel);
        assert!(
            script.contains("add chain inet ferrynet_policy p_y\n"),
            "{script}"
        );
        assert!(
            script.contains(
                "flush chain inet ferrynet_policy p_x\nadd rule inet ferrynet_policy p_x accept\n"
            ),
            "{script}"
        );
        let back = old.script_changes(&new.structure(), &kernel);
        assert!(
            back.contains("delete chain inet ferrynet_policy p_y"),
            "{back}"
        );
        assert!(
            back.contains("add element inet ferrynet_policy s_a_4 { 10.0.0.1, 10.0.0.2 }"),
            "elements the kernel lacks are added: {back}"
        );
    }
}
