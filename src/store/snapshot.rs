//! Store snapshots: what one holds, and the binary stream it is saved and sent as.
//!
//! [`Store::snapshot`](super::Store::snapshot) is O(1) in the size of the tree: the snapshot's
//! root is a clone of the live root, which shares every block of the tree (see
//! [`super::tree`]). Writes applied afterwards copy only the blocks they change, so the
//! snapshot keeps the tree exactly as it was while the store moves on, and it can be encoded
//! on another thread without holding the store's lock. A snapshot is `Clone + Send + Sync`.
//!
//! # The stream (version 1)
//!
//! ```text
//! magic    "etcdsnap" (8 bytes), then the version as a varint (1)
//! meta     varint length + JSON {"index","stats","history", and the extras}
//! root     a node record without a name (always a directory)
//! ```
//!
//! A node record is a tag byte (`1`, plus `2` for a directory, plus `4` when it has an
//! expiry), its name (varint length + UTF-8 bytes; omitted for the root), the created index
//! (varint), modified minus created (varint, wrapping), the expiry (8 bytes, little-endian
//! Unix ns, when tagged) and then, for a key, its value (varint length + UTF-8 bytes), or for
//! a directory, its children's records in name order followed by an end byte (`0`). Varints
//! are unsigned LEB128. Nothing may follow the root's end byte.
//!
//! Encoding walks the shared tree in order and writes as it goes (through a 64 KiB buffer);
//! decoding builds every directory in bulk from its sorted children ([`tree::Builder`]).
//!
//! What must stay true:
//! * `decode(encode(s))` restores `s` exactly: the tree, every index and expiry, the stats,
//!   the history and the extras (what the store's owner keeps beside the key space - the
//!   auth state and the removed members, `state/` - carried here unread).
//! * Decoding never panics and never allocates more than the input justifies: a truncated
//!   stream, a bad tag, names out of order or repeated, bad UTF-8, an oversized length or a
//!   directory nested deeper than [`MAX_DEPTH`] is a [`SnapshotError`].
//! * `StoreSnapshot` still deserializes (and serializes) with serde in the JSON shape
//!   snapshots had before this codec, so old data directories load.

use std::io::{self, Read, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::event::Event;
use super::name::Name;
use super::node::{Kind, Node};
use super::stats::StatsSnapshot;
use super::tree::{self, Builder};

/// The first bytes of every binary snapshot (a JSON snapshot starts with `{`).
pub const MAGIC: &[u8; 8] = b"etcdsnap";
/// The stream version this code writes and reads.
pub const VERSION: u64 = 1;
/// How deep directories may nest in a snapshot (the store's walks are recursive).
pub const MAX_DEPTH: usize = 1000;
/// The longest name, value or meta blob a stream may carry.
const MAX_LEN: u64 = 1 << 30;

const END: u8 = 0;
const NODE: u8 = 1;
const DIR: u8 = 2;
const EXPIRES: u8 = 4;

/// The whole store as a snapshot carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreSnapshot {
    pub index: u64,
    pub root: Node,
    pub stats: StatsSnapshot,
    /// The event history as it was, so watches from an index keep working across restarts
    /// and snapshot installs.
    #[serde(default)]
    pub history: Vec<Event>,
    /// More top-level fields of the metadata, which the store does not read: the rest of
    /// the replicated state saved with it (see `state::State::snapshot`).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Why a snapshot stream could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot: read failed: {0}")]
    Io(#[from] io::Error),
    #[error("snapshot: the stream ends early")]
    Truncated,
    #[error("snapshot: not a binary store snapshot (bad magic)")]
    BadMagic,
    #[error("snapshot: unsupported version {0}")]
    Version(u64),
    #[error("snapshot: bad metadata: {0}")]
    Meta(serde_json::Error),
    #[error("snapshot: malformed at byte {at}: {what}")]
    Malformed { at: u64, what: &'static str },
}

/// The small parts, as JSON inside the stream.
#[derive(Serialize)]
struct MetaOut<'a> {
    index: u64,
    stats: &'a StatsSnapshot,
    history: &'a [Event],
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct MetaIn {
    index: u64,
    stats: StatsSnapshot,
    #[serde(default)]
    history: Vec<Event>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

impl StoreSnapshot {
    /// Write the snapshot as a binary stream (see the module docs), walking the tree as it
    /// goes: memory use is one 64 KiB buffer and a cursor per directory level.
    pub fn encode(&self, w: &mut impl Write) -> io::Result<()> {
        let mut out = Out {
            w,
            buf: Vec::with_capacity(OUT_BUF + 1024),
        };
        out.buf.extend_from_slice(MAGIC);
        out.varint(VERSION);
        let meta = serde_json::to_vec(&MetaOut {
            index: self.index,
            stats: &self.stats,
            history: &self.history,
            extra: &self.extra,
        })?;
        out.bytes(&meta)?;
        let Some(root) = self.root.children() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the root of a store snapshot is not a directory",
            ));
        };
        out.header(None, &self.root);
        let mut stack: Vec<tree::Iter<'_, Node>> = vec![root.iter()];
        while let Some(level) = stack.last_mut() {
            match level.next() {
                None => {
                    out.buf.push(END);
                    stack.pop();
                }
                Some((name, node)) => {
                    out.header(Some(name), node);
                    match &node.kind {
                        Kind::Value(v) => out.bytes(v.as_bytes())?,
                        Kind::Dir(children) => {
                            if stack.len() >= MAX_DEPTH {
                                return Err(io::Error::new(
                                    io::ErrorKind::InvalidInput,
                                    "directories nest deeper than a snapshot may",
                                ));
                            }
                            stack.push(children.iter());
                        }
                    }
                }
            }
            out.spill()?;
        }
        out.w.write_all(&out.buf)?;
        out.w.flush()
    }

    /// Read a snapshot written by [`StoreSnapshot::encode`].
    pub fn decode(r: &mut impl Read) -> Result<StoreSnapshot, SnapshotError> {
        let mut inp = In {
            r,
            buf: vec![0; IN_BUF].into_boxed_slice(),
            pos: 0,
            end: 0,
            consumed: 0,
        };
        let mut magic = [0u8; 8];
        for b in &mut magic {
            *b = inp.byte().map_err(|e| match e {
                SnapshotError::Truncated => SnapshotError::BadMagic,
                e => e,
            })?;
        }
        if &magic != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        match inp.varint()? {
            VERSION => {}
            v => return Err(SnapshotError::Version(v)),
        }
        let len = inp.len()?;
        let meta: MetaIn = inp
            .with_bytes(len, |b| serde_json::from_slice(b))?
            .map_err(SnapshotError::Meta)?;

        let tag = inp.byte()?;
        if tag & !(NODE | DIR | EXPIRES) != 0 || tag & (NODE | DIR) != NODE | DIR {
            return Err(inp.malformed("the root is not a directory"));
        }
        let root = inp.dir_header(None, tag)?;
        let root = decode_tree(&mut inp, root)?;
        if inp.fill()? {
            return Err(inp.malformed("bytes after the end of the snapshot"));
        }
        Ok(StoreSnapshot {
            index: meta.index,
            root,
            stats: meta.stats,
            history: meta.history,
            extra: meta.extra,
        })
    }
}

/// A directory being decoded: its own record, and its children so far.
struct Frame {
    name: Option<Name>,
    created: u64,
    modified: u64,
    expire_at: Option<i64>,
    children: Builder<Node>,
}

/// Decode the records below `root` (whose header was read) up to its end byte.
fn decode_tree<R: Read>(inp: &mut In<'_, R>, root: Frame) -> Result<Node, SnapshotError> {
    let mut stack = vec![root];
    loop {
        let tag = inp.byte()?;
        if tag == END {
            let f = stack.pop().expect("a directory is open");
            let node = Node::with_kind(
                Kind::Dir(f.children.finish()),
                f.created,
                f.modified,
                f.expire_at,
            );
            let Some(parent) = stack.last_mut() else {
                return Ok(node);
            };
            parent
                .children
                .push(f.name.expect("only the root has no name"), node);
            continue;
        }
        if tag & !(NODE | DIR | EXPIRES) != 0 || tag & NODE == 0 {
            return Err(inp.malformed("bad tag"));
        }
        let name = inp.name()?;
        let parent = stack.last().expect("a directory is open");
        if parent.children.last().is_some_and(|last| *last >= name) {
            return Err(inp.malformed("names out of order"));
        }
        if tag & DIR != 0 {
            if stack.len() >= MAX_DEPTH {
                return Err(inp.malformed("directories nest too deep"));
            }
            let frame = inp.dir_header(Some(name), tag)?;
            stack.push(frame);
        } else {
            let (created, modified, expire_at) = inp.indexes(tag)?;
            let len = inp.len()?;
            let value: Arc<str> = inp.with_str(len, |s| Arc::from(s))?;
            let node = Node::with_kind(Kind::Value(value), created, modified, expire_at);
            stack
                .last_mut()
                .expect("a directory is open")
                .children
                .push(name, node);
        }
    }
}

const OUT_BUF: usize = 64 * 1024;
const IN_BUF: usize = 64 * 1024;

struct Out<'w, W: Write> {
    w: &'w mut W,
    buf: Vec<u8>,
}

impl<W: Write> Out<'_, W> {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// A length-prefixed byte string (large ones go straight to the writer).
    fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.varint(b.len() as u64);
        if b.len() > OUT_BUF {
            self.w.write_all(&self.buf)?;
            self.buf.clear();
            self.w.write_all(b)
        } else {
            self.buf.extend_from_slice(b);
            Ok(())
        }
    }

    /// A node record up to (not including) its value or children.
    fn header(&mut self, name: Option<&Name>, n: &Node) {
        let expire_at = n.expire_at();
        let tag =
            NODE | if n.is_dir() { DIR } else { 0 } | if expire_at.is_some() { EXPIRES } else { 0 };
        self.buf.push(tag);
        if let Some(name) = name {
            let b = name.as_bytes();
            self.varint(b.len() as u64);
            self.buf.extend_from_slice(b);
        }
        self.varint(n.created_index);
        self.varint(n.modified_index.wrapping_sub(n.created_index));
        if let Some(t) = expire_at {
            self.buf.extend_from_slice(&t.to_le_bytes());
        }
    }

    /// Hand a full buffer to the writer.
    fn spill(&mut self) -> io::Result<()> {
        if self.buf.len() >= OUT_BUF {
            self.w.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

struct In<'r, R: Read> {
    r: &'r mut R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// Bytes consumed before `buf[0]` (for error positions).
    consumed: u64,
}

impl<R: Read> In<'_, R> {
    fn malformed(&self, what: &'static str) -> SnapshotError {
        SnapshotError::Malformed {
            at: self.consumed + self.pos as u64,
            what,
        }
    }

    /// Make sure at least one byte is buffered; false at the end of the input.
    fn fill(&mut self) -> Result<bool, SnapshotError> {
        if self.pos < self.end {
            return Ok(true);
        }
        self.consumed += self.end as u64;
        self.pos = 0;
        self.end = 0;
        loop {
            match self.r.read(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn byte(&mut self) -> Result<u8, SnapshotError> {
        if !self.fill()? {
            return Err(SnapshotError::Truncated);
        }
        self.pos += 1;
        Ok(self.buf[self.pos - 1])
    }

    fn varint(&mut self) -> Result<u64, SnapshotError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.malformed("varint overflows 64 bits"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.malformed("varint longer than 10 bytes"))
    }

    /// A length prefix, bounded so a corrupt one cannot ask for a giant allocation.
    fn len(&mut self) -> Result<usize, SnapshotError> {
        let n = self.varint()?;
        if n > MAX_LEN {
            return Err(self.malformed("length too large"));
        }
        Ok(n as usize)
    }

    /// Call `f` on the next `n` bytes: in place when they are buffered (the usual case),
    /// else gathered into a vector that grows only as bytes actually arrive.
    fn with_bytes<T>(&mut self, n: usize, f: impl FnOnce(&[u8]) -> T) -> Result<T, SnapshotError> {
        if self.end - self.pos < n && n <= self.buf.len() {
            // Move what is left to the front and read until `n` bytes are there.
            self.buf.copy_within(self.pos..self.end, 0);
            self.consumed += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
            while self.end < n {
                match self.r.read(&mut self.buf[self.end..]) {
                    Ok(0) => return Err(SnapshotError::Truncated),
                    Ok(k) => self.end += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if self.end - self.pos >= n {
            self.pos += n;
            return Ok(f(&self.buf[self.pos - n..self.pos]));
        }
        let mut v = Vec::with_capacity(n.min(1 << 20));
        v.extend_from_slice(&self.buf[self.pos..self.end]);
        self.consumed += self.end as u64;
        self.pos = 0;
        self.end = 0;
        let want = (n - v.len()) as u64;
        let got = (&mut *self.r).take(want).read_to_end(&mut v)?;
        self.consumed += got as u64;
        if v.len() < n {
            return Err(SnapshotError::Truncated);
        }
        Ok(f(&v))
    }

    fn with_str<T>(&mut self, n: usize, f: impl FnOnce(&str) -> T) -> Result<T, SnapshotError> {
        let at = self.consumed + self.pos as u64;
        self.with_bytes(n, |b| std::str::from_utf8(b).map(f))?
            .map_err(|_| SnapshotError::Malformed {
                at,
                what: "not UTF-8",
            })
    }

    fn name(&mut self) -> Result<Name, SnapshotError> {
        let len = self.len()?;
        let name = self.with_str(len, Name::new)?;
        if name.as_bytes().is_empty() || name.as_bytes().contains(&b'/') {
            return Err(self.malformed("bad name"));
        }
        Ok(name)
    }

    /// The indexes and expiry of a record whose tag and name were read.
    fn indexes(&mut self, tag: u8) -> Result<(u64, u64, Option<i64>), SnapshotError> {
        let created = self.varint()?;
        let modified = created.wrapping_add(self.varint()?);
        let expire_at = if tag & EXPIRES != 0 {
            let mut b = [0u8; 8];
            for x in &mut b {
                *x = self.byte()?;
            }
            Some(i64::from_le_bytes(b))
        } else {
            None
        };
        Ok((created, modified, expire_at))
    }

    fn dir_header(&mut self, name: Option<Name>, tag: u8) -> Result<Frame, SnapshotError> {
        let (created, modified, expire_at) = self.indexes(tag)?;
        Ok(Frame {
            name,
            created,
            modified,
            expire_at,
            children: Builder::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OnCleared, Store};

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_800_000_000 * S;

    /// A snapshot written by the JSON code this codec replaced (`{"store": StoreSnapshot}`
    /// as the state machine saved it), generated before the tree changed shape.
    const OLD_JSON: &str = r#"{"store":{"index":10,"root":{"created_index":0,"modified_index":0,"kind":{"Dir":{"b":{"created_index":10,"modified_index":10,"kind":{"Value":""}},"dir":{"created_index":2,"modified_index":2,"kind":{"Dir":{"_hidden":{"created_index":3,"modified_index":3,"kind":{"Value":"h"}},"x":{"created_index":2,"modified_index":2,"kind":{"Value":"héllo ✓ \"q\" <&>"}}}}},"empty":{"created_index":4,"modified_index":4,"kind":{"Dir":{}}},"tdir":{"created_index":6,"modified_index":6,"expire_at":1800000050000000000,"kind":{"Dir":{"k":{"created_index":7,"modified_index":7,"kind":{"Value":""}}}}},"ttl":{"created_index":5,"modified_index":5,"expire_at":1800000100000000000,"kind":{"Value":"t"}}}}},"stats":{"getsSuccess":0,"getsFail":0,"setsSuccess":9,"setsFail":0,"deleteSuccess":1,"deleteFail":0,"updateSuccess":0,"updateFail":0,"createSuccess":0,"createFail":0,"compareAndSwapSuccess":0,"compareAndSwapFail":0,"compareAndDeleteSuccess":0,"compareAndDeleteFail":0,"expireCount":0,"watchers":0},"history":[{"action":"Set","node":{"key":"/a","value":"1","dir":false,"modified_index":1,"created_index":1},"at":1800000000000000000},{"action":"Set","node":{"key":"/dir/x","value":"héllo ✓ \"q\" <&>","dir":false,"modified_index":2,"created_index":2},"at":1800000000000000000},{"action":"Set","node":{"key":"/dir/_hidden","value":"h","dir":false,"modified_index":3,"created_index":3},"at":1800000000000000000},{"action":"Set","node":{"key":"/empty","dir":true,"modified_index":4,"created_index":4},"at":1800000000000000000},{"action":"Set","node":{"key":"/ttl","value":"t","dir":false,"expire_at":1800000100000000000,"modified_index":5,"created_index":5},"at":1800000000000000000},{"action":"Set","node":{"key":"/tdir","dir":true,"expire_at":1800000050000000000,"modified_index":6,"created_index":6},"at":1800000000000000000},{"action":"Set","node":{"key":"/tdir/k","value":"","dir":false,"modified_index":7,"created_index":7},"at":1800000000000000000},{"action":"Set","node":{"key":"/a","value":"2","dir":false,"modified_index":8,"created_index":8},"prev_node":{"key":"/a","value":"1","dir":false,"modified_index":1,"created_index":1},"at":1800000000000000000},{"action":"Delete","node":{"key":"/a","dir":false,"modified_index":9,"created_index":8},"prev_node":{"key":"/a","value":"2","dir":false,"modified_index":8,"created_index":8},"at":1800000000000000000},{"action":"Set","node":{"key":"/b","value":"","dir":false,"modified_index":10,"created_index":10},"at":1800000000000000000}],"removed_members":[],"auth":{"enabled":false,"users":{},"roles":{},"version":0}}}"#;

    fn val(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    /// A store with every kind of node a snapshot must carry.
    fn sample_store() -> Store {
        let mut st = Store::new(50);
        st.set_write_time(T0);
        st.set("/a", val("1"), None, false).unwrap();
        st.set("/dir/x", val("héllo ✓ \"q\" <&>"), None, false)
            .unwrap();
        st.set("/dir/_hidden", val("h"), None, false).unwrap();
        st.set("/dir/sub/deeper/k", val(""), None, false).unwrap();
        st.set("/empty", None, None, false).unwrap();
        st.set("/ttl", val("t"), Some(T0 + 100 * S), false).unwrap();
        st.set("/tdir", None, Some(T0 + 50 * S), false).unwrap();
        st.set("/tdir/k", val(""), Some(T0 + 70 * S), false)
            .unwrap();
        st.set("/ünï/ćödé/名前", val("値 🎉"), None, false).unwrap();
        let long = "n".repeat(40);
        st.set(&format!("/{long}/{long}x"), val("long names"), None, false)
            .unwrap();
        st.set("/big", Some("b".repeat(200_000)), None, false)
            .unwrap();
        for i in 0..1500 {
            st.set(
                &format!("/many/k{i:05}"),
                Some(format!("v{i}")),
                None,
                false,
            )
            .unwrap();
        }
        st.create("/queue", val("q1"), None, true).unwrap();
        st.update("/a", "2".into(), None, false).unwrap();
        st.delete("/many/k00007", false, false).unwrap();
        st
    }

    fn encode(s: &StoreSnapshot) -> Vec<u8> {
        let mut out = Vec::new();
        s.encode(&mut out).unwrap();
        out
    }

    fn assert_same(a: &StoreSnapshot, b: &StoreSnapshot) {
        assert_eq!(a.index, b.index);
        assert_eq!(a.root, b.root);
        assert_eq!(a.stats, b.stats);
        assert_eq!(a.history, b.history);
        assert_eq!(a.extra, b.extra);
    }

    /// Everything a client can read back.
    fn contents(st: &Store) -> (NodeView, Option<i64>, u64, usize) {
        (
            st.get("/", true, true).unwrap(),
            st.next_expiry(),
            st.index(),
            st.node_count(),
        )
    }

    use crate::store::NodeView;

    /// Hands out at most one byte per read, to run every refill path of the decoder.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(out)) => {
                    *out = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn a_store_round_trips_through_the_stream() {
        let st = sample_store();
        let snap = st.snapshot();
        let bytes = encode(&snap);
        assert_eq!(&bytes[..8], MAGIC);
        let back = StoreSnapshot::decode(&mut bytes.as_slice()).unwrap();
        assert_same(&snap, &back);
        let trickled = StoreSnapshot::decode(&mut Trickle(&bytes)).unwrap();
        assert_same(&snap, &trickled);

        let mut restored = Store::new(50);
        restored.restore(back);
        assert_eq!(contents(&restored), contents(&st));
        assert_eq!(restored.next_expiry(), Some(T0 + 50 * S));
        assert_eq!(restored.stats(), st.stats());
        // The history came along: a watch from a past index is answered from it.
        let mut w = restored
            .watch(
                "/many/k00007",
                false,
                false,
                Some(st.index() - 1),
                false,
                OnCleared::Error,
            )
            .unwrap();
        assert_eq!(
            w.rx.try_recv().unwrap().action,
            crate::store::Action::Delete
        );
        // Encoding is deterministic and the restored store encodes the same bytes.
        assert_eq!(encode(&restored.snapshot()), bytes);
        // Both TTLs still expire from the restored store, in order.
        let evs = restored.expire(T0 + 100 * S);
        let keys: Vec<_> = evs.iter().map(|e| e.node.key.as_str()).collect();
        assert_eq!(keys, vec!["/tdir", "/ttl"]);
    }

    #[test]
    fn a_snapshot_can_go_to_another_thread() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<StoreSnapshot>();
        let mut st = sample_store();
        let snap = st.snapshot();
        let want = encode(&snap);
        let encoder = std::thread::spawn(move || encode(&snap));
        for i in 0..1500 {
            st.set(&format!("/many/k{i:05}"), val("moved on"), None, false)
                .unwrap();
        }
        assert_eq!(encoder.join().unwrap(), want);
    }

    #[test]
    fn an_empty_store_round_trips() {
        let st = Store::new(10);
        let bytes = encode(&st.snapshot());
        let back = StoreSnapshot::decode(&mut bytes.as_slice()).unwrap();
        assert_same(&st.snapshot(), &back);
        let mut restored = Store::new(10);
        restored.restore(back);
        assert_eq!(contents(&restored), contents(&st));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut st = Store::new(10);
        st.set("/a/b", val("x"), Some(T0), false).unwrap();
        st.set("/a/c", val(""), None, false).unwrap();
        st.set("/d", None, None, false).unwrap();
        st.set("/é", val("ü"), None, false).unwrap();
        let bytes = encode(&st.snapshot());
        for cut in 0..bytes.len() {
            let prefix = &bytes[..cut];
            assert!(
                StoreSnapshot::decode(&mut &prefix[..]).is_err(),
                "a snapshot cut at {cut} of {} decoded",
                bytes.len()
            );
            assert!(StoreSnapshot::decode(&mut Trickle(prefix)).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let e = StoreSnapshot::decode(&mut longer.as_slice()).unwrap_err();
        assert!(e.to_string().contains("after the end"), "{e}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Random bytes, with and without a valid start.
        let mut head = MAGIC.to_vec();
        head.push(VERSION as u8);
        for i in 0..20_000 {
            let len = (rnd() % 300) as usize;
            let mut b: Vec<u8> = if i % 2 == 0 { head.clone() } else { Vec::new() };
            b.extend((0..len).map(|_| rnd() as u8));
            assert!(StoreSnapshot::decode(&mut b.as_slice()).is_err());
        }
        // A valid stream with bytes flipped: may decode or not, must not panic.
        let bytes = encode(&sample_store().snapshot());
        for _ in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..1 + rnd() % 4 {
                let at = (rnd() as usize) % b.len();
                b[at] ^= 1 << (rnd() % 8);
            }
            let _ = StoreSnapshot::decode(&mut b.as_slice());
        }
    }

    /// A stream with the given meta and root-body bytes.
    fn stream(meta: &[u8], body: &[u8]) -> Vec<u8> {
        let mut out = Out {
            w: &mut io::sink(),
            buf: MAGIC.to_vec(),
        };
        out.varint(VERSION);
        out.bytes(meta).unwrap();
        out.buf.extend_from_slice(body);
        out.buf
    }

    /// Valid metadata for hand-made streams.
    fn meta() -> Vec<u8> {
        serde_json::to_vec(&MetaOut {
            index: 3,
            stats: &StatsSnapshot::default(),
            history: &[],
            extra: &serde_json::Map::new(),
        })
        .unwrap()
    }

    fn decode_err(b: &[u8]) -> String {
        StoreSnapshot::decode(&mut &b[..]).unwrap_err().to_string()
    }

    #[test]
    fn bad_streams_say_what_is_wrong() {
        let meta = &meta();
        // root: dir, created 0, modified 0; then one record, then the root's end
        let ok = stream(meta, &[3, 0, 0, 1, 1, b'a', 2, 0, 1, b'v', 0]);
        let snap = StoreSnapshot::decode(&mut ok.as_slice()).unwrap();
        assert_eq!(snap.index, 3);
        assert_eq!(
            snap.root.children().unwrap().get("a").unwrap().value(),
            Some("v")
        );

        assert!(decode_err(b"{\"store\":{}}").contains("bad magic"));
        assert!(decode_err(b"etc").contains("bad magic"));
        let mut v2 = MAGIC.to_vec();
        v2.push(2);
        assert!(decode_err(&v2).contains("unsupported version 2"));
        assert!(decode_err(&stream(b"{}", &[3, 0, 0, 0])).contains("bad metadata"));
        assert!(decode_err(&stream(meta, &[1, 0, 0, 0, 0])).contains("root is not a directory"));
        assert!(decode_err(&stream(meta, &[3, 0, 0, 9])).contains("bad tag"));
        // out of order, repeated, empty and slashed names
        let two = |a: &[u8], b: &[u8]| {
            let mut body = vec![3, 0, 0];
            for n in [a, b] {
                body.extend_from_slice(&[1, n.len() as u8]);
                body.extend_from_slice(n);
                body.extend_from_slice(&[1, 0, 0]);
            }
            body.push(0);
            decode_err(&stream(meta, &body))
        };
        assert!(two(b"b", b"a").contains("out of order"));
        assert!(two(b"a", b"a").contains("out of order"));
        assert!(two(b"a", b"").contains("bad name"));
        assert!(two(b"a", b"c/d").contains("bad name"));
        assert!(two(b"a", &[0xff]).contains("not UTF-8"));
        // A huge length prefix is refused, a large one only reads what is there.
        let mut huge = vec![3, 0, 0, 1];
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode_err(&stream(meta, &huge)).contains("length too large"));
        let mut large = vec![3, 0, 0, 1, 1, b'a', 1, 0];
        large.extend_from_slice(&[0x80, 0x80, 0x80, 0x04]); // 1 GiB
        large.extend_from_slice(&[b'x'; 100]);
        assert!(decode_err(&stream(meta, &large)).contains("ends early"));
        // A 10-byte varint that overflows.
        let mut over = vec![3];
        over.extend_from_slice(&[0xff; 9]);
        over.push(0x02);
        assert!(decode_err(&stream(meta, &over)).contains("overflows"));
        // Errors are one line.
        assert!(!decode_err(&stream(meta, &[3, 0])).contains('\n'));
    }

    #[test]
    fn nesting_is_bounded() {
        let meta = &meta();
        let mut body = vec![3, 0, 0];
        for _ in 0..MAX_DEPTH {
            body.extend_from_slice(&[3, 1, b'd', 1, 0]);
        }
        assert!(decode_err(&stream(meta, &body)).contains("nest too deep"));
        // Just within the bound decodes, and the tree can be dropped.
        let mut body = vec![3, 0, 0];
        let depth = MAX_DEPTH - 1;
        for _ in 0..depth {
            body.extend_from_slice(&[3, 1, b'd', 1, 0]);
        }
        body.extend(std::iter::repeat_n(0, depth + 1));
        let snap = StoreSnapshot::decode(&mut stream(meta, &body).as_slice()).unwrap();
        let mut st = Store::new(10);
        st.restore(snap);
        assert_eq!(st.node_count(), MAX_DEPTH);
        // Encoding refuses what decoding would, rather than write a snapshot nobody can load.
        let mut st = Store::new(10);
        st.set(&"/d".repeat(MAX_DEPTH), val("x"), None, false)
            .unwrap();
        let bytes = encode(&st.snapshot());
        assert!(StoreSnapshot::decode(&mut bytes.as_slice()).is_ok());
        st.set(&"/e".repeat(MAX_DEPTH + 1), val("x"), None, false)
            .unwrap();
        let e = st.snapshot().encode(&mut io::sink()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_snapshot_keeps_its_state_while_the_store_moves_on() {
        let mut st = sample_store();
        let before = contents(&st);
        let snap = st.snapshot();
        let bytes = encode(&snap);

        // Writes of every kind, through the paths the snapshot shares.
        st.set("/dir/x", val("changed"), None, false).unwrap();
        st.set("/dir/new/deep", val("n"), None, false).unwrap();
        st.delete("/dir/sub", true, true).unwrap();
        st.delete("/empty", true, false).unwrap();
        for i in (0..1500).step_by(3) {
            st.set(
                &format!("/many/k{i:05}"),
                val("w"),
                Some(T0 + 10 * S),
                false,
            )
            .unwrap();
        }
        for i in (1..1500).step_by(5) {
            let _ = st.delete(&format!("/many/k{i:05}"), false, false);
        }
        st.update("/ttl", String::new(), Some(T0 + 200 * S), true)
            .unwrap();
        st.compare_and_swap("/a", Some("2"), None, "3".into(), None, false)
            .unwrap();
        let expired = st.expire(T0 + 60 * S);
        assert!(expired.len() > 400, "{}", expired.len());
        assert!(st.get("/tdir", false, false).is_err());

        // The snapshot is untouched: same bytes, same contents when restored.
        assert_eq!(encode(&snap), bytes);
        let mut old = Store::new(50);
        old.restore(snap.clone());
        assert_eq!(contents(&old), before);

        // The live store has the new state, and its own snapshot says so.
        let after = contents(&st);
        assert_ne!(after, before);
        assert_eq!(
            st.get("/dir/x", false, false).unwrap().value.as_deref(),
            Some("changed")
        );
        let mut now = Store::new(50);
        now.restore(StoreSnapshot::decode(&mut encode(&st.snapshot()).as_slice()).unwrap());
        assert_eq!(contents(&now), after);

        // Restoring from a snapshot and then writing leaves the snapshot alone too.
        old.set("/dir/x", val("again"), None, false).unwrap();
        assert_eq!(encode(&snap), bytes);
    }

    #[test]
    fn an_old_json_snapshot_still_loads() {
        #[derive(Deserialize)]
        struct Body {
            store: StoreSnapshot,
        }
        let body: Body = serde_json::from_str(OLD_JSON).unwrap();
        let mut st = Store::new(1000);
        st.restore(body.store);
        assert_eq!(st.index(), 10);
        assert_eq!(st.node_count(), 9);
        assert_eq!(st.next_expiry(), Some(T0 + 50 * S));
        let root = st.get("/", true, true).unwrap();
        let keys: Vec<_> = root
            .nodes
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.key.as_str())
            .collect();
        assert_eq!(keys, vec!["/b", "/dir", "/empty", "/tdir", "/ttl"]);
        let dir = st.get("/dir", true, true).unwrap();
        assert_eq!((dir.created_index, dir.modified_index), (2, 2));
        let kids: Vec<_> = dir
            .nodes
            .unwrap()
            .into_iter()
            .map(|n| (n.key, n.value, n.created_index))
            .collect();
        assert_eq!(
            kids,
            vec![
                ("/dir/_hidden".to_string(), val("h"), 3),
                ("/dir/x".to_string(), val("héllo ✓ \"q\" <&>"), 2)
            ]
        );
        let empty = st.get("/empty", false, false).unwrap();
        assert!(empty.dir && empty.nodes == Some(vec![]));
        let tdir = st.get("/tdir", true, false).unwrap();
        assert_eq!(tdir.expire_at, Some(T0 + 50 * S));
        assert_eq!(tdir.nodes.unwrap()[0].value.as_deref(), Some(""));
        assert_eq!(
            st.get("/ttl", false, false).unwrap().expire_at,
            Some(T0 + 100 * S)
        );
        assert_eq!(
            st.get("/b", false, false).unwrap().value.as_deref(),
            Some("")
        );
        assert_eq!(st.stats().sets_success, 9);
        // The history came along: index 2 is still answered from it.
        let mut w = st
            .watch("/dir/x", false, false, Some(2), false, OnCleared::Error)
            .unwrap();
        assert_eq!(
            w.rx.try_recv().unwrap().node.value.as_deref(),
            Some("héllo ✓ \"q\" <&>")
        );
        // And it goes on in the new format.
        let again = StoreSnapshot::decode(&mut encode(&st.snapshot()).as_slice()).unwrap();
        let mut st2 = Store::new(1000);
        st2.restore(again);
        assert_eq!(contents(&st2), contents(&st));
    }

    #[test]
    fn the_json_shape_is_unchanged() {
        // Serializing still writes the old shape, every field (the extras included).
        #[derive(Deserialize)]
        struct Body {
            store: StoreSnapshot,
        }
        let body: Body = serde_json::from_str(OLD_JSON).unwrap();
        let json = format!(
            "{{\"store\":{}}}",
            serde_json::to_string(&body.store).unwrap()
        );
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        let old: serde_json::Value = serde_json::from_str(OLD_JSON).unwrap();
        assert_eq!(back, old);
    }
}
