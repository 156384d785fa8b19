//! The binary form of what the log stores: Raft entries (with their batches of commands),
//! log ids and votes; and, built from the same pieces, the bodies of the two peer calls that
//! carry commands (AppendEntries and forwarded writes), which would otherwise be JSON.
//!
//! This is an on-disk format: a change must still read what older builds wrote. Every
//! variant has a fixed tag; new variants get new tags, and a field is never reinterpreted.
//! Integers are LEB128 varints except the proposer's clock (8 bytes LE) and node ids (8
//! bytes LE: they are hashes, so a varint would be longer); strings are a varint length and
//! UTF-8 bytes. Rare and structured payloads - membership configs and `/v2/auth` changes -
//! are JSON inside a length prefix: they are small, and JSON keeps them readable and
//! tolerant of added fields.
//!
//! Decoding never panics, and never reserves more memory up front than the input's own size
//! (a count read from the input is trusted only that far): any bad input is a [`CodecError`].

use openraft::raft::AppendEntriesRequest;
use openraft::{CommittedLeaderId, Entry, EntryPayload, Vote};

use super::types::{Batch, LogId, TypeConfig};
use crate::command::Command;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

fn err<T>(what: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError(what.into()))
}

/// Appends primitive values to a buffer.
pub struct Enc<'a>(pub &'a mut Vec<u8>);

impl Enc<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    pub fn fixed64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub fn bool(&mut self, b: bool) {
        self.u8(u8::from(b));
    }

    pub fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }

    pub fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.varint(v);
            }
        }
    }

    pub fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.fixed64(v as u64);
            }
        }
    }

    pub fn json<T: serde::Serialize>(&mut self, v: &T) {
        let bytes = serde_json::to_vec(v).expect("our types always serialize to JSON");
        self.bytes(&bytes);
    }

    pub fn log_id(&mut self, id: &LogId) {
        self.varint(id.leader_id.term);
        self.fixed64(id.leader_id.node_id);
        self.varint(id.index);
    }

    pub fn opt_log_id(&mut self, id: Option<&LogId>) {
        match id {
            None => self.u8(0),
            Some(id) => {
                self.u8(1);
                self.log_id(id);
            }
        }
    }

    pub fn vote(&mut self, v: &Vote<u64>) {
        self.varint(v.leader_id.term);
        self.fixed64(v.leader_id.node_id);
        self.bool(v.committed);
    }

    pub fn opt_vote(&mut self, v: Option<&Vote<u64>>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.vote(v);
            }
        }
    }
}

/// Reads primitive values back.
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let Some(&b) = self.buf.get(self.pos) else {
            return err("unexpected end of data");
        };
        self.pos += 1;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    return err("varint overflows 64 bits");
                }
                return Ok(v);
            }
        }
        err("varint longer than 10 bytes")
    }

    pub fn fixed64(&mut self) -> Result<u64, CodecError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() - self.pos < n {
            return err(format!(
                "length {n} runs past the end of the data ({} bytes left)",
                self.buf.len() - self.pos
            ));
        }
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.varint()?;
        let n = usize::try_from(n).or_else(|_| err("length too large"))?;
        self.take(n)
    }

    pub fn string(&mut self) -> Result<String, CodecError> {
        let b = self.bytes()?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => err("string is not UTF-8"),
        }
    }

    pub fn bool(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => err(format!("bad boolean {b}")),
        }
    }

    fn present(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => err(format!("bad option tag {b}")),
        }
    }

    pub fn opt_string(&mut self) -> Result<Option<String>, CodecError> {
        Ok(if self.present()? {
            Some(self.string()?)
        } else {
            None
        })
    }

    pub fn opt_u64(&mut self) -> Result<Option<u64>, CodecError> {
        Ok(if self.present()? {
            Some(self.varint()?)
        } else {
            None
        })
    }

    pub fn opt_i64(&mut self) -> Result<Option<i64>, CodecError> {
        Ok(if self.present()? {
            Some(self.fixed64()? as i64)
        } else {
            None
        })
    }

    pub fn json<T: serde::de::DeserializeOwned>(&mut self, what: &str) -> Result<T, CodecError> {
        let b = self.bytes()?;
        serde_json::from_slice(b).map_err(|e| CodecError(format!("bad {what}: {e}")))
    }

    pub fn log_id(&mut self) -> Result<LogId, CodecError> {
        let term = self.varint()?;
        let node = self.fixed64()?;
        let index = self.varint()?;
        Ok(LogId::new(CommittedLeaderId::new(term, node), index))
    }

    pub fn opt_log_id(&mut self) -> Result<Option<LogId>, CodecError> {
        Ok(if self.present()? {
            Some(self.log_id()?)
        } else {
            None
        })
    }

    pub fn vote(&mut self) -> Result<Vote<u64>, CodecError> {
        let term = self.varint()?;
        let node = self.fixed64()?;
        let committed = self.bool()?;
        Ok(if committed {
            Vote::new_committed(term, node)
        } else {
            Vote::new(term, node)
        })
    }

    pub fn opt_vote(&mut self) -> Result<Option<Vote<u64>>, CodecError> {
        Ok(if self.present()? {
            Some(self.vote()?)
        } else {
            None
        })
    }
}

const BLANK: u8 = 0;
const NORMAL: u8 = 1;
const MEMBERSHIP: u8 = 2;

/// How many `T`s to reserve room for when the input says `n` follow: no more than the input's
/// own size in memory. (A larger count that is true costs a few reallocations; a false one
/// ends in an error at the end of the input.)
fn room_for<T>(n: u64, input: &[u8]) -> usize {
    usize::try_from(n)
        .unwrap_or(usize::MAX)
        .min(input.len() / std::mem::size_of::<T>().max(1))
}

/// Appends the binary form of `entry` to `out`.
pub fn encode_entry(out: &mut Vec<u8>, entry: &Entry<TypeConfig>) {
    let mut e = Enc(out);
    e.log_id(&entry.log_id);
    match &entry.payload {
        EntryPayload::Blank => e.u8(BLANK),
        EntryPayload::Normal(batch) => {
            e.u8(NORMAL);
            e.fixed64(batch.at as u64);
            e.varint(batch.cmds.len() as u64);
            for c in batch.cmds.iter() {
                encode_command(&mut e, c);
            }
        }
        EntryPayload::Membership(m) => {
            e.u8(MEMBERSHIP);
            e.json(m);
        }
    }
}

/// Decodes an entry written by [`encode_entry`]; the input must hold exactly one entry.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry<TypeConfig>, CodecError> {
    let mut d = Dec::new(bytes);
    let log_id = d.log_id()?;
    let payload = match d.u8()? {
        BLANK => EntryPayload::Blank,
        NORMAL => {
            let at = d.fixed64()? as i64;
            let n = d.varint()?;
            let mut cmds = Vec::with_capacity(room_for::<Command>(n, bytes));
            for _ in 0..n {
                cmds.push(decode_command(&mut d)?);
            }
            EntryPayload::Normal(Batch {
                at,
                cmds: cmds.into(),
            })
        }
        MEMBERSHIP => EntryPayload::Membership(d.json("membership")?),
        t => return err(format!("unknown entry kind {t}")),
    };
    if !d.is_empty() {
        return err("bytes left after the entry");
    }
    Ok(Entry { log_id, payload })
}

/// The log id of an encoded entry, without decoding the rest.
pub fn entry_log_id(bytes: &[u8]) -> Result<LogId, CodecError> {
    Dec::new(bytes).log_id()
}

// ---- Peer messages: the binary bodies of `/raft/append` and `/raft/propose` ----
//
// A wire format, not an on-disk one: both ends are running processes. It starts with a
// version byte, so a later format can be told apart; a peer that cannot read it answers 400
// before doing anything, and the sender then falls back to JSON (`raft::network`).

/// The first byte of every binary peer body this build writes.
const PEER_BODY_V1: u8 = 1;

fn peer_body_version(d: &mut Dec<'_>) -> Result<(), CodecError> {
    match d.u8()? {
        PEER_BODY_V1 => Ok(()),
        v => err(format!("unknown peer body version {v}")),
    }
}

/// Appends the binary form of an AppendEntries request to `out`: the entries as the log
/// stores them ([`encode_entry`]), each with its length.
pub fn encode_append(out: &mut Vec<u8>, rpc: &AppendEntriesRequest<TypeConfig>) {
    let mut e = Enc(out);
    e.u8(PEER_BODY_V1);
    e.vote(&rpc.vote);
    e.opt_log_id(rpc.prev_log_id.as_ref());
    e.opt_log_id(rpc.leader_commit.as_ref());
    e.varint(rpc.entries.len() as u64);
    let mut one = Vec::new();
    for entry in &rpc.entries {
        one.clear();
        encode_entry(&mut one, entry);
        Enc(out).bytes(&one);
    }
}

/// Decodes a body written by [`encode_append`]; the input must hold exactly one request.
pub fn decode_append(bytes: &[u8]) -> Result<AppendEntriesRequest<TypeConfig>, CodecError> {
    let mut d = Dec::new(bytes);
    peer_body_version(&mut d)?;
    let vote = d.vote()?;
    let prev_log_id = d.opt_log_id()?;
    let leader_commit = d.opt_log_id()?;
    let n = d.varint()?;
    let mut entries = Vec::with_capacity(room_for::<Entry<TypeConfig>>(n, bytes));
    for _ in 0..n {
        entries.push(decode_entry(d.bytes()?)?);
    }
    if !d.is_empty() {
        return err("bytes left after the request");
    }
    Ok(AppendEntriesRequest {
        vote,
        prev_log_id,
        entries,
        leader_commit,
    })
}

/// Appends the binary form of a list of commands (forwarded writes) to `out`.
pub fn encode_commands(out: &mut Vec<u8>, cmds: &[Command]) {
    let mut e = Enc(out);
    e.u8(PEER_BODY_V1);
    e.varint(cmds.len() as u64);
    for c in cmds {
        encode_command(&mut e, c);
    }
}

/// Decodes a body written by [`encode_commands`]; the input must hold exactly one list.
pub fn decode_commands(bytes: &[u8]) -> Result<Vec<Command>, CodecError> {
    let mut d = Dec::new(bytes);
    peer_body_version(&mut d)?;
    let n = d.varint()?;
    let mut cmds = Vec::with_capacity(room_for::<Command>(n, bytes));
    for _ in 0..n {
        cmds.push(decode_command(&mut d)?);
    }
    if !d.is_empty() {
        return err("bytes left after the commands");
    }
    Ok(cmds)
}

mod tag {
    pub const SET: u8 = 1;
    pub const CREATE: u8 = 2;
    pub const UPDATE: u8 = 3;
    pub const CAS: u8 = 4;
    pub const DELETE: u8 = 5;
    pub const CAD: u8 = 6;
    pub const EXPIRE: u8 = 7;
    pub const REGISTER: u8 = 8;
    pub const UNREGISTER: u8 = 9;
    pub const AUTH: u8 = 10;
}

fn encode_command(e: &mut Enc<'_>, c: &Command) {
    match c {
        Command::Set {
            key,
            value,
            expire_at,
            refresh,
        } => {
            e.u8(tag::SET);
            e.str(key);
            e.opt_str(value.as_deref());
            e.opt_i64(*expire_at);
            e.bool(*refresh);
        }
        Command::Create {
            key,
            value,
            expire_at,
            unique,
        } => {
            e.u8(tag::CREATE);
            e.str(key);
            e.opt_str(value.as_deref());
            e.opt_i64(*expire_at);
            e.bool(*unique);
        }
        Command::Update {
            key,
            value,
            expire_at,
            refresh,
        } => {
            e.u8(tag::UPDATE);
            e.str(key);
            e.str(value);
            e.opt_i64(*expire_at);
            e.bool(*refresh);
        }
        Command::CompareAndSwap {
            key,
            prev_value,
            prev_index,
            value,
            expire_at,
            refresh,
        } => {
            e.u8(tag::CAS);
            e.str(key);
            e.opt_str(prev_value.as_deref());
            e.opt_u64(*prev_index);
            e.str(value);
            e.opt_i64(*expire_at);
            e.bool(*refresh);
        }
        Command::Delete {
            key,
            dir,
            recursive,
        } => {
            e.u8(tag::DELETE);
            e.str(key);
            e.bool(*dir);
            e.bool(*recursive);
        }
        Command::CompareAndDelete {
            key,
            prev_value,
            prev_index,
        } => {
            e.u8(tag::CAD);
            e.str(key);
            e.opt_str(prev_value.as_deref());
            e.opt_u64(*prev_index);
        }
        Command::Expire { now } => {
            e.u8(tag::EXPIRE);
            e.fixed64(*now as u64);
        }
        Command::Register {
            name,
            peer_url,
            client_url,
        } => {
            e.u8(tag::REGISTER);
            e.str(name);
            e.str(peer_url);
            e.str(client_url);
        }
        Command::Unregister { name, id } => {
            e.u8(tag::UNREGISTER);
            e.str(name);
            e.opt_u64(*id);
        }
        Command::Auth(a) => {
            e.u8(tag::AUTH);
            e.json(a);
        }
    }
}

fn decode_command(d: &mut Dec<'_>) -> Result<Command, CodecError> {
    Ok(match d.u8()? {
        tag::SET => Command::Set {
            key: d.string()?,
            value: d.opt_string()?,
            expire_at: d.opt_i64()?,
            refresh: d.bool()?,
        },
        tag::CREATE => Command::Create {
            key: d.string()?,
            value: d.opt_string()?,
            expire_at: d.opt_i64()?,
            unique: d.bool()?,
        },
        tag::UPDATE => Command::Update {
            key: d.string()?,
            value: d.string()?,
            expire_at: d.opt_i64()?,
            refresh: d.bool()?,
        },
        tag::CAS => Command::CompareAndSwap {
            key: d.string()?,
            prev_value: d.opt_string()?,
            prev_index: d.opt_u64()?,
            value: d.string()?,
            expire_at: d.opt_i64()?,
            refresh: d.bool()?,
        },
        tag::DELETE => Command::Delete {
            key: d.string()?,
            dir: d.bool()?,
            recursive: d.bool()?,
        },
        tag::CAD => Command::CompareAndDelete {
            key: d.string()?,
            prev_value: d.opt_string()?,
            prev_index: d.opt_u64()?,
        },
        tag::EXPIRE => Command::Expire {
            now: d.fixed64()? as i64,
        },
        tag::REGISTER => Command::Register {
            name: d.string()?,
            peer_url: d.string()?,
            client_url: d.string()?,
        },
        tag::UNREGISTER => Command::Unregister {
            name: d.string()?,
            id: d.opt_u64()?,
        },
        tag::AUTH => Command::Auth(d.json("auth command")?),
        t => return err(format!("unknown command kind {t}")),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::Membership;

    use super::*;
    use crate::raft::types::Member;

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 0x9ebb_fe1c_2e64_6004), index)
    }

    fn every_command() -> Vec<Command> {
        vec![
            Command::Set {
                key: "/a/b".into(),
                value: Some("v\u{e9}\u{1f600}".into()),
                expire_at: Some(1_700_000_000_123_456_789),
                refresh: false,
            },
            Command::Set {
                key: "/dir".into(),
                value: None,
                expire_at: None,
                refresh: true,
            },
            Command::Create {
                key: "/q".into(),
                value: Some(String::new()),
                expire_at: Some(-5),
                unique: true,
            },
            Command::Update {
                key: "/u".into(),
                value: "x".repeat(1000),
                expire_at: None,
                refresh: false,
            },
            Command::CompareAndSwap {
                key: "/c".into(),
                prev_value: Some("old".into()),
                prev_index: Some(u64::MAX),
                value: "new".into(),
                expire_at: None,
                refresh: true,
            },
            Command::Delete {
                key: "/d".into(),
                dir: true,
                recursive: false,
            },
            Command::CompareAndDelete {
                key: "/e".into(),
                prev_value: None,
                prev_index: Some(0),
            },
            Command::Expire { now: i64::MIN },
            Command::Register {
                name: "node0".into(),
                peer_url: "http://127.0.0.1:7001".into(),
                client_url: "https://127.0.0.1:4001".into(),
            },
            Command::Unregister {
                name: String::new(),
                id: Some(42),
            },
            Command::Auth(serde_json::from_str(r#"{"base":3,"op":"Enable"}"#).unwrap()),
        ]
    }

    fn entries() -> Vec<Entry<TypeConfig>> {
        let members = BTreeMap::from([(
            7u64,
            Member {
                name: "n".into(),
                peer_url: "http://p".into(),
                client_url: String::new(),
            },
        )]);
        vec![
            Entry {
                log_id: id(1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: id(3, 2),
                payload: EntryPayload::Membership(Membership::new(
                    vec![BTreeSet::from([7])],
                    members,
                )),
            },
            Entry {
                log_id: id(u64::MAX, u64::MAX),
                payload: EntryPayload::Normal(Batch {
                    at: 1_765_000_000_000_000_000,
                    cmds: every_command().into(),
                }),
            },
            Entry {
                log_id: id(0, 0),
                payload: EntryPayload::Normal(Batch::default()),
            },
        ]
    }

    #[test]
    fn entries_round_trip() {
        for entry in entries() {
            let mut buf = Vec::new();
            encode_entry(&mut buf, &entry);
            assert_eq!(decode_entry(&buf).unwrap(), entry);
            assert_eq!(entry_log_id(&buf).unwrap(), entry.log_id);
        }
    }

    fn requests() -> Vec<AppendEntriesRequest<TypeConfig>> {
        vec![
            AppendEntriesRequest {
                vote: Vote::new_committed(4, 0x9ebb_fe1c_2e64_6004),
                prev_log_id: Some(id(3, 17)),
                entries: entries(),
                leader_commit: Some(id(4, 16)),
            },
            // A heartbeat (or the commit index alone) of a leader not yet committed.
            AppendEntriesRequest {
                vote: Vote::new(u64::MAX, 1),
                prev_log_id: None,
                entries: Vec::new(),
                leader_commit: None,
            },
        ]
    }

    fn same_request(a: &AppendEntriesRequest<TypeConfig>, b: &AppendEntriesRequest<TypeConfig>) {
        assert_eq!(a.vote, b.vote);
        assert_eq!(a.prev_log_id, b.prev_log_id);
        assert_eq!(a.entries, b.entries);
        assert_eq!(a.leader_commit, b.leader_commit);
    }

    #[test]
    fn peer_bodies_round_trip() {
        for rpc in requests() {
            let mut buf = Vec::new();
            encode_append(&mut buf, &rpc);
            same_request(&decode_append(&buf).unwrap(), &rpc);
        }
        for cmds in [every_command(), Vec::new()] {
            let mut buf = Vec::new();
            encode_commands(&mut buf, &cmds);
            assert_eq!(decode_commands(&buf).unwrap(), cmds);
        }
    }

    #[test]
    fn bad_peer_bodies_are_errors_never_panics() {
        let mut bodies: Vec<(Vec<u8>, bool)> = Vec::new();
        for rpc in requests() {
            let mut buf = Vec::new();
            encode_append(&mut buf, &rpc);
            bodies.push((buf, true));
        }
        let mut buf = Vec::new();
        encode_commands(&mut buf, &every_command());
        bodies.push((buf, false));
        let decode = |b: &[u8], append: bool| {
            if append {
                decode_append(b).map(|_| ())
            } else {
                decode_commands(b).map(|_| ())
            }
        };
        for (buf, append) in bodies {
            for cut in 0..buf.len() {
                assert!(decode(&buf[..cut], append).is_err(), "cut at {cut}");
            }
            let mut longer = buf.clone();
            longer.push(0);
            assert!(decode(&longer, append).is_err(), "a byte too many");
            let mut other_version = buf.clone();
            other_version[0] = 2;
            assert_eq!(
                decode(&other_version, append),
                Err(CodecError("unknown peer body version 2".into()))
            );
            for i in 0..buf.len() {
                let mut bad = buf.clone();
                bad[i] ^= 0xff;
                let _ = decode(&bad, append);
            }
            // JSON is not mistaken for the binary form (a peer that sent JSON gets 400).
            assert!(decode(b"{\"vote\":{}}", append).is_err());
        }
        // A huge count reserves no more memory than the body's own size.
        let body = [0u8; 1000];
        assert!(room_for::<Command>(u64::MAX, &body) * std::mem::size_of::<Command>() <= 1000);
        let entry = std::mem::size_of::<Entry<TypeConfig>>();
        assert!(room_for::<Entry<TypeConfig>>(u64::MAX, &body) * entry <= 1000);
        assert_eq!(
            room_for::<u8>(7, &body),
            7,
            "a plausible count is reserved in full"
        );
        let mut huge = vec![PEER_BODY_V1];
        Enc(&mut huge).varint(u64::MAX);
        assert!(decode_commands(&huge).is_err());
    }

    #[test]
    fn the_binary_form_is_compact() {
        let entry = Entry {
            log_id: id(2, 1000),
            payload: EntryPayload::Normal(Batch {
                at: 1,
                cmds: vec![Command::Set {
                    key: "/bench/k0000001".into(),
                    value: Some("x".repeat(100)),
                    expire_at: None,
                    refresh: false,
                }]
                .into(),
            }),
        };
        let mut buf = Vec::new();
        encode_entry(&mut buf, &entry);
        let json = serde_json::to_vec(&entry).unwrap().len();
        assert!(buf.len() < 150, "{} bytes", buf.len());
        assert!(
            buf.len() * 3 < json * 2,
            "binary {} vs json {json}",
            buf.len()
        );
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        for entry in entries() {
            let mut buf = Vec::new();
            encode_entry(&mut buf, &entry);
            for cut in 0..buf.len() {
                assert!(decode_entry(&buf[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = buf.clone();
            longer.push(0);
            assert!(decode_entry(&longer).is_err());
            for i in 0..buf.len() {
                let mut bad = buf.clone();
                bad[i] ^= 0xff;
                let _ = decode_entry(&bad);
            }
        }
        // A huge declared count or length does not allocate for it.
        let mut buf = Vec::new();
        let mut e = Enc(&mut buf);
        e.log_id(&id(1, 1));
        e.u8(NORMAL);
        e.fixed64(0);
        e.varint(u64::MAX);
        assert!(decode_entry(&buf).is_err());
        assert!(Dec::new(&[0xff; 11]).varint().is_err());
        assert!(
            Dec::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint()
                .is_err()
        );
        assert_eq!(
            Dec::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).varint(),
            Ok(u64::MAX)
        );
    }
}
