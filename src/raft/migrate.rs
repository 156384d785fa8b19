//! Data directories written before the write-ahead log existed.
//!
//! Releases up to ee85d0e kept the Raft log in `etcd.redb` (tables `raft_log` and
//! `raft_meta`: the entries, the vote, the committed hint and the purge point, all as JSON).
//! On the first start of this version the log moves into `wal/`:
//!
//! 1. read the old log and metadata;
//! 2. write them, through the ordinary [`LogStore`], into `wal.migrating/` and sync;
//! 3. rename `wal.migrating/` to `wal/` and sync the data directory - from here on the new
//!    log is the log;
//! 4. drop the old tables from `etcd.redb`.
//!
//! A crash at any point leaves either the old log alone (steps 1-2: the half-written
//! directory is discarded and the migration starts over) or a complete `wal/` (steps 3-4:
//! leftover old tables are dropped). Nothing is lost either way.

use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{Entry, LogId, Vote};
use redb::{ReadableTable, TableDefinition};

use super::disk::{Disk, META};
use super::log_store::LogStore;
use super::types::{NodeId, TypeConfig};
use super::wal::Options;
use crate::error::{Error, Result};

/// The old log: index -> JSON of the entry.
const LEGACY_LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const LEGACY_VOTE: &str = "vote";
const LEGACY_COMMITTED: &str = "committed";
const LEGACY_PURGED: &str = "last_purged";

/// Entries per append while copying (bounded memory per call).
const CHUNK: usize = 512;

struct Legacy {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    entries: Vec<Entry<TypeConfig>>,
}

/// Moves a log kept in `etcd.redb` into `wal_dir`, if there is one. Returns how many entries
/// were moved.
pub async fn legacy_log(disk: &Disk, wal_dir: &Path) -> Result<usize> {
    let Some(legacy) = read_legacy(disk)? else {
        return Ok(0);
    };
    let storage = |e: String| {
        Error::Storage(format!(
            "moving the log out of {}: {e}",
            disk.path().display()
        ))
    };
    let done = wal_dir.exists();
    let n = legacy.entries.len();
    if !done {
        let tmp = wal_dir.with_extension("migrating");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| storage(e.to_string()))?;
        }
        let mut store =
            LogStore::open(&tmp, Options::default()).map_err(|e| storage(e.to_string()))?;
        let err = |e: openraft::StorageError<NodeId>| storage(e.to_string());
        if let Some(v) = legacy.vote {
            store.save_vote(&v).await.map_err(err)?;
        }
        if let Some(p) = legacy.purged {
            store.purge(p).await.map_err(err)?;
        }
        store.save_committed(legacy.committed).await.map_err(err)?;
        let mut entries = legacy.entries.into_iter().peekable();
        while entries.peek().is_some() {
            let chunk: Vec<_> = entries.by_ref().take(CHUNK).collect();
            store.blocking_append(chunk).await.map_err(err)?;
        }
        drop(store);
        std::fs::rename(&tmp, wal_dir).map_err(|e| storage(e.to_string()))?;
        let parent = wal_dir.parent().unwrap_or(Path::new("."));
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| storage(e.to_string()))?;
        tracing::warn!(entries = n, from = %disk.path().display(), to = %wal_dir.display(), "moved the Raft log into the write-ahead log");
    }
    drop_legacy(disk).map_err(storage)?;
    Ok(if done { 0 } else { n })
}

fn read_legacy(disk: &Disk) -> Result<Option<Legacy>> {
    let bad = |what: &str, e: String| {
        Error::Storage(format!("{}: bad {what} record: {e}", disk.path().display()))
    };
    let txn = disk
        .begin_read()
        .map_err(|e| Error::Storage(e.to_string()))?;
    let entries = match txn.open_table(LEGACY_LOGS) {
        Ok(table) => {
            let mut out = Vec::new();
            for row in table
                .iter()
                .map_err(|e| Error::Storage(disk.io_err(e).to_string()))?
            {
                let (k, v) = row.map_err(|e| Error::Storage(disk.io_err(e).to_string()))?;
                let entry: Entry<TypeConfig> = serde_json::from_slice(v.value())
                    .map_err(|e| bad(&format!("log entry {}", k.value()), e.to_string()))?;
                out.push(entry);
            }
            Some(out)
        }
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(Error::Storage(disk.io_err(e).to_string())),
    };
    drop(txn);
    let meta = |key: &str| -> Result<Option<Vec<u8>>> {
        disk.read_meta(key)
            .map_err(|e| Error::Storage(e.to_string()))
    };
    let (vote, committed, purged) = (
        meta(LEGACY_VOTE)?,
        meta(LEGACY_COMMITTED)?,
        meta(LEGACY_PURGED)?,
    );
    if entries.is_none() && vote.is_none() && committed.is_none() && purged.is_none() {
        return Ok(None);
    }
    let json = |what: &str, b: Option<Vec<u8>>| -> Result<Option<serde_json::Value>> {
        b.map(|b| serde_json::from_slice(&b).map_err(|e| bad(what, e.to_string())))
            .transpose()
    };
    let decode = |what: &str, v: Option<serde_json::Value>| -> Result<Option<LogId<NodeId>>> {
        match v {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v).map_err(|e| bad(what, e.to_string())),
        }
    };
    Ok(Some(Legacy {
        vote: json("vote", vote)?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| bad("vote", e.to_string()))?,
        committed: decode("committed", json("committed", committed)?)?,
        purged: decode("last_purged", json("last_purged", purged)?)?,
        entries: entries.unwrap_or_default(),
    }))
}

fn drop_legacy(disk: &Disk) -> std::result::Result<(), String> {
    let txn = disk.begin_write(true).map_err(|e| e.to_string())?;
    txn.delete_table(LEGACY_LOGS)
        .map_err(|e| disk.io_err(e).to_string())?;
    {
        let mut meta = txn
            .open_table(META)
            .map_err(|e| disk.io_err(e).to_string())?;
        for key in [LEGACY_VOTE, LEGACY_COMMITTED, LEGACY_PURGED] {
            meta.remove(key).map_err(|e| disk.io_err(e).to_string())?;
        }
    }
    txn.commit().map_err(|e| disk.io_err(e).to_string())
}
