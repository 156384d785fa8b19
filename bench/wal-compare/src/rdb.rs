//! redb 4.5 (status quo): one write transaction per call, records inserted
//! under consecutive u64 keys in a `u64 -> &[u8]` table (the shape of the
//! server's `raft_log` table), committed with `Durability::Immediate`.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, Durability, TableDefinition};

use crate::{Log, SharedLog};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn append(db: &Database, first: u64, records: &[&[u8]]) -> io::Result<()> {
    let mut tx = db.begin_write().map_err(err)?;
    tx.set_durability(Durability::Immediate).map_err(err)?;
    {
        let mut t = tx.open_table(LOGS).map_err(err)?;
        for (i, r) in records.iter().enumerate() {
            t.insert(first + i as u64, *r).map_err(err)?;
        }
    }
    tx.commit().map_err(err)
}

pub struct RedbLog {
    db: Database,
    next: u64,
}

impl RedbLog {
    pub fn open(dir: &Path) -> io::Result<Self> {
        Ok(RedbLog { db: Database::create(dir.join("log.redb")).map_err(err)?, next: 1 })
    }
}

impl Log for RedbLog {
    fn append_sync(&mut self, records: &[&[u8]]) -> io::Result<()> {
        append(&self.db, self.next, records)?;
        self.next += records.len() as u64;
        Ok(())
    }
}

/// redb has one write transaction at a time: concurrent callers queue in
/// `begin_write` and each commit is its own fsync (no grouping).
pub struct SharedRedb {
    db: Database,
    next: AtomicU64,
}

impl SharedRedb {
    pub fn open(dir: &Path) -> io::Result<Self> {
        Ok(SharedRedb { db: Database::create(dir.join("log.redb")).map_err(err)?, next: AtomicU64::new(1) })
    }
}

impl SharedLog for SharedRedb {
    fn append_sync(&self, records: &[&[u8]]) -> io::Result<()> {
        let first = self.next.fetch_add(records.len() as u64, Ordering::Relaxed);
        append(&self.db, first, records)
    }
}

/// Reopens the database at `dir` and counts the entries.
pub fn count_recovered(dir: &Path) -> io::Result<u64> {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let db = Database::create(dir.join("log.redb")).map_err(err)?;
    let tx = db.begin_read().map_err(err)?;
    let t = tx.open_table(LOGS).map_err(err)?;
    t.len().map_err(err)
}
