//! raft-engine (TiKV): entries of one raft group in a `LogBatch`, then
//! `Engine::write(batch, sync = true)`. Default `Config` apart from `dir`.
//!
//! raft-engine stores protobuf messages; the entry type here is the
//! well-known `BytesValue` whose bytes start with the 8-byte log index
//! (a real Raft entry carries its index in the same way).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use protobuf::well_known_types::BytesValue;
use raft_engine::{Config, Engine, LogBatch, MessageExt};

use crate::{Log, SharedLog};

#[derive(Clone)]
pub struct Msg;

impl MessageExt for Msg {
    type Entry = BytesValue;
    fn index(e: &BytesValue) -> u64 {
        u64::from_le_bytes(e.value[..8].try_into().unwrap())
    }
}

fn err(e: raft_engine::Error) -> io::Error {
    io::Error::other(e.to_string())
}

fn open_engine(dir: &Path) -> io::Result<Engine> {
    let cfg = Config {
        dir: dir.to_str().unwrap().to_owned(),
        ..Default::default()
    };
    Engine::open(cfg).map_err(err)
}

fn entries(first_index: u64, records: &[&[u8]]) -> Vec<BytesValue> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut v = Vec::with_capacity(8 + r.len());
            v.extend_from_slice(&(first_index + i as u64).to_le_bytes());
            v.extend_from_slice(r);
            let mut e = BytesValue::new();
            e.value = v;
            e
        })
        .collect()
}

pub struct RaftEngineLog {
    engine: Engine,
    next_index: u64,
    batch: LogBatch,
}

impl RaftEngineLog {
    pub fn open(dir: &Path) -> io::Result<Self> {
        Ok(RaftEngineLog { engine: open_engine(dir)?, next_index: 1, batch: LogBatch::default() })
    }
}

impl Log for RaftEngineLog {
    fn append_sync(&mut self, records: &[&[u8]]) -> io::Result<()> {
        let es = entries(self.next_index, records);
        self.next_index += records.len() as u64;
        self.batch.add_entries::<Msg>(1, &es).map_err(err)?;
        self.engine.write(&mut self.batch, true).map_err(err)?;
        Ok(())
    }
}

/// Concurrent writers: raft-engine groups them itself (a write barrier: the
/// first writer becomes leader and writes/syncs the batches of all waiting
/// writers together). Each thread is its own raft group (region id), as
/// several writers of one group would not keep the indexes contiguous.
pub struct SharedRaftEngine {
    engine: Arc<Engine>,
    next_region: AtomicU64,
}

thread_local! {
    static REGION: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 1)) };
}

impl SharedRaftEngine {
    pub fn open(dir: &Path) -> io::Result<Self> {
        Ok(SharedRaftEngine { engine: Arc::new(open_engine(dir)?), next_region: AtomicU64::new(1) })
    }
}

impl SharedLog for SharedRaftEngine {
    fn append_sync(&self, records: &[&[u8]]) -> io::Result<()> {
        let (mut region, idx) = REGION.with(|c| c.get());
        if region == 0 {
            region = self.next_region.fetch_add(1, Ordering::Relaxed);
        }
        let es = entries(idx, records);
        REGION.with(|c| c.set((region, idx + records.len() as u64)));
        let mut batch = LogBatch::default();
        batch.add_entries::<Msg>(region, &es).map_err(err)?;
        self.engine.write(&mut batch, true).map_err(err)?;
        Ok(())
    }
}

/// Reopens the engine at `dir` and counts the entries of raft group 1.
pub fn count_recovered(dir: &Path) -> io::Result<u64> {
    let e = open_engine(dir)?;
    Ok(match (e.first_index(1), e.last_index(1)) {
        (Some(f), Some(l)) => l + 1 - f,
        _ => 0,
    })
}
