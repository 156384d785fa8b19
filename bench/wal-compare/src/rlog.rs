//! raft-log (the openraft author's Raft log, on `chunked-wal`): `append`
//! the entries of the call, then `flush(sync = true, callback)` and wait for
//! the callback. Flushing happens on the crate's own worker thread.
//!
//! `raft-log` is the default configuration, whose worker waits
//! `flush_batch_wait` = 1 ms to collect more requests before writing;
//! `raft-log-nowait` sets that wait to zero.

use std::io;
use std::path::Path;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::{Config, RaftLog, Types};

use crate::{Log, SharedLog};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct T;

impl Types for T {
    type LogId = (u64, u64);
    type LogPayload = Vec<u8>;
    type Vote = (u64, u64);
    type UserData = String;
    type Callback = SyncSender<io::Result<()>>;

    fn log_index(log_id: &Self::LogId) -> u64 {
        log_id.1
    }

    fn payload_size(payload: &Self::LogPayload) -> u64 {
        payload.len() as u64
    }
}

fn open(dir: &Path, nowait: bool) -> io::Result<RaftLog<T>> {
    let mut cfg = Config::new(dir.to_str().unwrap());
    if nowait {
        cfg.wal.flush_batch_wait = Some(Duration::ZERO);
    }
    RaftLog::open(Arc::new(cfg))
}

fn append(rl: &mut RaftLog<T>, next: &mut u64, records: &[&[u8]]) -> io::Result<()> {
    let first = *next;
    *next += records.len() as u64;
    rl.append(records.iter().enumerate().map(|(i, r)| ((1, first + i as u64), r.to_vec())))?;
    Ok(())
}

fn wait(rx: std::sync::mpsc::Receiver<io::Result<()>>) -> io::Result<()> {
    rx.recv().map_err(|_| io::Error::other("raft-log flush callback dropped"))?
}

pub struct RaftLogLog {
    rl: RaftLog<T>,
    next: u64,
}

impl RaftLogLog {
    pub fn open(dir: &Path, nowait: bool) -> io::Result<Self> {
        Ok(RaftLogLog { rl: open(dir, nowait)?, next: 1 })
    }
}

impl Log for RaftLogLog {
    fn append_sync(&mut self, records: &[&[u8]]) -> io::Result<()> {
        append(&mut self.rl, &mut self.next, records)?;
        let (tx, rx) = sync_channel(1);
        self.rl.flush(true, Some(tx))?;
        wait(rx)
    }
}

/// `RaftLog` takes `&mut self`: writers append and queue their flush under a
/// mutex, then wait for the callback outside it; the flush worker writes and
/// syncs all queued requests of a batch with one `sync_data`.
pub struct SharedRaftLog {
    inner: Mutex<RaftLogLog>,
}

impl SharedRaftLog {
    pub fn open(dir: &Path, nowait: bool) -> io::Result<Self> {
        Ok(SharedRaftLog { inner: Mutex::new(RaftLogLog::open(dir, nowait)?) })
    }
}

impl SharedLog for SharedRaftLog {
    fn append_sync(&self, records: &[&[u8]]) -> io::Result<()> {
        let (tx, rx) = sync_channel(1);
        {
            let mut g = self.inner.lock().unwrap();
            let g = &mut *g;
            append(&mut g.rl, &mut g.next, records)?;
            g.rl.flush(true, Some(tx))?;
        }
        wait(rx)
    }
}

/// Reopens the log at `dir` and returns the index of its last entry.
pub fn count_recovered(dir: &Path) -> io::Result<u64> {
    let rl = open(dir, false)?;
    Ok(rl.log_state().last().map_or(0, |id| id.1))
}
