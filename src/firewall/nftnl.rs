//! Raw nf_tables netlink for the per-container data path: set and map elements, each change
//! one atomic batch (~10 µs, against ~3 ms for spawning `nft`).

use crate::netlink::socket::{attrs, Message, Socket, NLM_F_CREATE, NLM_F_EXCL};
use crate::netlink::NetlinkError;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
/// Like DELSETELEM, but a missing element is not an error (kernel ≥ 6.3).
const NFT_MSG_DESTROYSETELEM: u16 = 30;
const NFTA_TABLE_HANDLE: u16 = 4;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// `jump CHAIN` as a verdict code (NFT_JUMP, -3).
const NFT_JUMP: i32 = -3;
pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_BRIDGE: u8 = 7;

/// A set or map: its table's family and its name (the table is the Nftnl's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Set {
    pub family: u8,
    pub name: &'static str,
}

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

fn nfgenmsg(family: u8, res_id: u16) -> [u8; 4] {
    let r = res_id.to_be_bytes();
    [family, 0, r[0], r[1]]
}

fn msg_type(cmd: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | cmd
}

/// One element of a set (key only) or a map (key and data), already encoded as nftables
/// registers (each field of a concatenation padded to 4 bytes). A verdict map's data is
/// `jump` (the chain's name) instead.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub key: Vec<u8>,
    pub data: Option<Vec<u8>>,
    pub jump: Option<String>,
}

pub struct Nftnl {
    sock: Socket,
    table: String,
}

impl Nftnl {
    /// Opens an nf_tables socket in the calling thread's namespace, for `table` (inet family).
    pub fn open(table: &str) -> Result<Nftnl, NetlinkError> {
        Ok(Nftnl {
            sock: Socket::open(libc::NETLINK_NETFILTER)?,
            table: table.to_string(),
        })
    }

    pub fn table_exists(&mut self) -> Result<bool, NetlinkError> {
        let mut m = Message::new(msg_type(NFT_MSG_GETTABLE), 0);
        m.header(&nfgenmsg(NFPROTO_INET, 0));
        m.attr_str(NFTA_TABLE_NAME, &self.table);
        match self.sock.request(m) {
            Ok(_) => Ok(true),
            Err(e) if e.is(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The table's handle, `None` when it does not exist: a table made again (by anyone)
    /// has a new one.
    pub fn table_handle(&mut self) -> Result<Option<u64>, NetlinkError> {
        let mut m = Message::new(msg_type(NFT_MSG_GETTABLE), 0);
        m.header(&nfgenmsg(NFPROTO_INET, 0));
        m.attr_str(NFTA_TABLE_NAME, &self.table);
        match self.sock.request(m) {
            Ok(replies) => Ok(replies.iter().find_map(|r| {
                attrs(r.payload.get(4..).unwrap_or(&[]))
                    .find(|(k, _)| *k == NFTA_TABLE_HANDLE)
                    .and_then(|(_, v)| Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?)))
            })),
            Err(e) if e.is(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether this table of `family` has chain `name`.
    pub fn chain_exists(&mut self, family: u8, name: &str) -> Result<bool, NetlinkError> {
        let mut m = Message::new(msg_type(NFT_MSG_GETCHAIN), 0);
        m.header(&nfgenmsg(family, 0));
        m.attr_str(NFTA_CHAIN_TABLE, &self.table);
        m.attr_str(NFTA_CHAIN_NAME, name);
        match self.sock.request(m) {
            Ok(_) => Ok(true),
            Err(e) if e.is(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn elements_msg(&self, cmd: u16, flags: u16, set: Set, elems: &[Element]) -> Message {
        self.named_elements_msg(cmd, flags, set.family, set.name, elems)
    }

    fn named_elements_msg(
        &self,
        cmd: u16,
        flags: u16,
        family: u8,
        set: &str,
        elems: &[Element],
    ) -> Message {
        let mut m = Message::new(msg_type(cmd), flags);
        m.header(&nfgenmsg(family, 0));
        m.attr_str(NFTA_SET_ELEM_LIST_TABLE, &self.table);
        m.attr_str(NFTA_SET_ELEM_LIST_SET, set);
        m.begin_nested(NFTA_SET_ELEM_LIST_ELEMENTS);
        for e in elems {
            m.begin_nested(NFTA_LIST_ELEM);
            m.begin_nested(NFTA_SET_ELEM_KEY);
            m.attr(NFTA_DATA_VALUE, &e.key);
            m.end_nested();
            if let Some(data) = &e.data {
                m.begin_nested(NFTA_SET_ELEM_DATA);
                m.attr(NFTA_DATA_VALUE, data);
                m.end_nested();
            }
            if let Some(chain) = &e.jump {
                m.begin_nested(NFTA_SET_ELEM_DATA);
                m.begin_nested(NFTA_DATA_VERDICT);
                m.attr(NFTA_VERDICT_CODE, &NFT_JUMP.to_be_bytes());
                m.attr_str(NFTA_VERDICT_CHAIN, chain);
                m.end_nested();
                m.end_nested();
            }
            m.end_nested();
        }
        m.end_nested();
        m
    }

    fn batch(&mut self, msgs: Vec<Message>) -> Result<(), NetlinkError> {
        let mut begin = Message::new(NFNL_MSG_BATCH_BEGIN, 0);
        begin.header(&nfgenmsg(0, NFNL_SUBSYS_NFTABLES));
        let mut end = Message::new(NFNL_MSG_BATCH_END, 0);
        end.header(&nfgenmsg(0, NFNL_SUBSYS_NFTABLES));
        self.sock.transaction(msgs, Some((begin, end))).map(|_| ())
    }

    /// Adds elements to sets/maps in one atomic transaction. With `exclusive`, an element
    /// whose key exists fails the whole transaction with EEXIST.
    pub fn add(
        &mut self,
        changes: &[(Set, Vec<Element>)],
        exclusive: bool,
    ) -> Result<(), NetlinkError> {
        let flags = if exclusive {
            NLM_F_CREATE | NLM_F_EXCL
        } else {
            NLM_F_CREATE
        };
        let msgs = changes
            .iter()
            .filter(|(_, e)| !e.is_empty())
            .map(|(set, elems)| self.elements_msg(NFT_MSG_NEWSETELEM, flags, *set, elems))
            .collect::<Vec<_>>();
        if msgs.is_empty() {
            return Ok(());
        }
        self.batch(msgs)
    }

    /// Deletes elements in one transaction. Missing elements are not an error: if the batch
    /// fails with ENOENT, each element is retried on its own, ignoring the missing ones.
    pub fn delete(&mut self, changes: &[(Set, Vec<Element>)]) -> Result<(), NetlinkError> {
        let msgs = changes
            .iter()
            .filter(|(_, e)| !e.is_empty())
            .map(|(set, elems)| self.elements_msg(NFT_MSG_DELSETELEM, 0, *set, elems))
            .collect::<Vec<_>>();
        if msgs.is_empty() {
            return Ok(());
        }
        match self.batch(msgs) {
            Err(e) if e.is(libc::ENOENT) => {
                for (set, elems) in changes {
                    for elem in elems {
                        let m = self.elements_msg(
                            NFT_MSG_DELSETELEM,
                            0,
                            *set,
                            std::slice::from_ref(elem),
                        );
                        match self.batch(vec![m]) {
                            Err(e) if !e.is(libc::ENOENT) => return Err(e),
                            _ => {}
                        }
                    }
                }
                Ok(())
            }
            other => other,
        }
    }

    /// In one transaction: adds `adds` (an existing element is kept) and removes `removes`
    /// (a missing one is not an error), in sets of this table named at run time.
    pub fn update_named(
        &mut self,
        family: u8,
        adds: &[(String, Vec<Element>)],
        removes: &[(String, Vec<Element>)],
    ) -> Result<(), NetlinkError> {
        let mut msgs = Vec::new();
        for (set, elems) in adds.iter().filter(|(_, e)| !e.is_empty()) {
            msgs.push(self.named_elements_msg(
                NFT_MSG_NEWSETELEM,
                NLM_F_CREATE,
                family,
                set,
                elems,
            ));
        }
        for (set, elems) in removes.iter().filter(|(_, e)| !e.is_empty()) {
            msgs.push(self.named_elements_msg(NFT_MSG_DESTROYSETELEM, 0, family, set, elems));
        }
        if msgs.is_empty() {
            return Ok(());
        }
        self.batch(msgs)
    }

    /// Every element of a set or map.
    pub fn dump(&mut self, set: Set) -> Result<Vec<Element>, NetlinkError> {
        self.dump_named(set.family, set.name)
    }

    /// Every element of a set or map of this table named at run time.
    pub fn dump_named(&mut self, family: u8, set: &str) -> Result<Vec<Element>, NetlinkError> {
        let mut m = Message::new(
            msg_type(NFT_MSG_GETSETELEM),
            crate::netlink::socket::NLM_F_DUMP,
        );
        m.header(&nfgenmsg(family, 0));
        m.attr_str(NFTA_SET_ELEM_LIST_TABLE, &self.table);
        m.attr_str(NFTA_SET_ELEM_LIST_SET, set);
        let mut out = Vec::new();
        for r in self.sock.dump(m)? {
            out.extend(elements(r.payload.get(4..).unwrap_or(&[])));
        }
        Ok(out)
    }

    /// Looks one element up by key: Some(data) (empty for a set) if present.
    pub fn get(&mut self, set: Set, key: &[u8]) -> Result<Option<Vec<u8>>, NetlinkError> {
        let elem = Element {
            key: key.to_vec(),
            ..Default::default()
        };
        let m = self.elements_msg(NFT_MSG_GETSETELEM, 0, set, &[elem]);
        match self.sock.request(m) {
            Ok(replies) => {
                let mut data = Vec::new();
                for r in replies {
                    data = element_data(r.payload.get(4..).unwrap_or(&[])).unwrap_or_default();
                }
                Ok(Some(data))
            }
            Err(e) if e.is(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The elements (key and data) of a GETSETELEM reply.
fn elements(payload: &[u8]) -> Vec<Element> {
    let value = |nested: &[u8]| {
        attrs(nested)
            .find(|(k, _)| *k == NFTA_DATA_VALUE)
            .map(|(_, v)| v.to_vec())
    };
    let mut out = Vec::new();
    for (kind, list) in attrs(payload) {
        if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (_, elem) in attrs(list) {
            let mut key = None;
            let mut data = None;
            let mut jump = None;
            for (k, d) in attrs(elem) {
                match k {
                    NFTA_SET_ELEM_KEY => key = value(d),
                    NFTA_SET_ELEM_DATA => {
                        data = value(d);
                        jump = verdict_chain(d);
                    }
                    _ => {}
                }
            }
            if let Some(key) = key {
                out.push(Element { key, data, jump });
            }
        }
    }
    out
}

/// The chain of a `jump` verdict in an element's data.
fn verdict_chain(data: &[u8]) -> Option<String> {
    let (_, verdict) = attrs(data).find(|(k, _)| *k == NFTA_DATA_VERDICT)?;
    let mut code = None;
    let mut chain = None;
    for (k, v) in attrs(verdict) {
        match k {
            NFTA_VERDICT_CODE => code = Some(i32::from_be_bytes(v.get(..4)?.try_into().ok()?)),
            NFTA_VERDICT_CHAIN => {
                chain = Some(
                    String::from_utf8_lossy(v)
                        .trim_end_matches('\0')
                        .to_string(),
                )
            }
            _ => {}
        }
    }
    (code == Some(NFT_JUMP)).then_some(chain).flatten()
}

/// Digs NFTA_SET_ELEM_DATA / NFTA_DATA_VALUE out of a GETSETELEM reply.
fn element_data(payload: &[u8]) -> Option<Vec<u8>> {
    for (kind, list) in attrs(payload) {
        if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (_, elem) in attrs(list) {
            for (k, d) in attrs(elem) {
                if k == NFTA_SET_ELEM_DATA {
                    for (vk, v) in attrs(d) {
                        if vk == NFTA_DATA_VALUE {
                            return Some(v.to_vec());
                        }
                    }
                }
            }
        }
    }
    None
}
