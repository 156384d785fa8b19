//! The node's [redb] file: snapshots and node metadata.
//!
//! The Raft log, with the vote and the committed hint, lives in the write-ahead log
//! (`raft::wal`, `raft::log_store`); this file holds what is written rarely and read at
//! start-up: the node and cluster ids and the latest state-machine snapshot. No log append
//! ever waits for a transaction here. This module opens (or creates) the file, defines every
//! table that lives in it, and offers a handful of small helpers for the other storage
//! modules. (Files written before the WAL existed also hold the old log; `raft::migrate`
//! moves it out.)
//!
//! # Tables
//!
//! | constant     | name          | key   | value                                              |
//! |--------------|---------------|-------|----------------------------------------------------|
//! | [`META`]     | `"raft_meta"` | `&str`| small records, see the `META_*` key constants      |
//! | [`SNAPSHOT`] | `"snapshot"`  | `&str`| the current snapshot's record (`raft::snapshot`)   |
//! | [`SNAPSHOT_CHUNKS`] | `"snapshot_chunks"` | `(u64, u64)` | the snapshots' bytes, by generation and piece |
//!
//! All tables are created by [`Disk::open`] in one write transaction, so every later reader can
//! open them without handling "table does not exist".
//!
//! # What must stay true
//!
//! * **One writer.** redb allows one write transaction at a time and `begin_write` *blocks the
//!   calling thread* until the previous one is committed or dropped. Every helper here that writes
//!   is therefore blocking: call it from `tokio::task::spawn_blocking` (or at startup), never
//!   directly on an async worker while another writer may be active.
//! * **Durability is explicit.** A commit with [`Durability::Immediate`] is one fsync, and it also
//!   persists every earlier `Durability::None` commit. A `Durability::None` commit is visible to
//!   readers at once but is lost on a crash unless a durable commit follows. Only hints (such as
//!   the committed log id) may be written non-durably.
//! * **Reads are MVCC snapshots.** A read transaction sees exactly the commits made before it
//!   began and never waits for a writer, so reads may run inline on async tasks.
//! * **One process, one handle.** redb locks the file; opening it a second time (in this process or
//!   another) fails with "Database already open". Clone [`Disk`] instead: it is an `Arc`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, TableDefinition, WriteTransaction,
};

/// Raft metadata: small named records (see the `META_*` keys).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// The latest state-machine snapshot: its record (see `raft::snapshot`).
pub const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

/// The bytes of stored snapshots: (generation, piece number) -> up to 1 MiB.
pub const SNAPSHOT_CHUNKS: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("snapshot_chunks");

/// [`META`] key: the node id of this member.
pub const META_NODE_ID: &str = "node_id";
/// [`META`] key: the cluster id (as `X-Etcd-Cluster-Id` shows it).
pub const META_CLUSTER_ID: &str = "cluster_id";
/// [`META`] key: set once this member's write-ahead log exists (a missing log is then an
/// error, not a fresh start).
pub const META_WAL: &str = "wal";

/// [`SNAPSHOT`] key of a snapshot written by an older release: its metadata (JSON).
pub const SNAPSHOT_META: &str = "meta";
/// [`SNAPSHOT`] key of a snapshot written by an older release: its payload (JSON).
pub const SNAPSHOT_DATA: &str = "data";

/// Memory redb may use for caching pages (and for the pages of a large write before they go to
/// the file): a snapshot is written once and read once, so a small cache is enough.
const CACHE_BYTES: usize = 16 << 20;

/// An error from the data file. Its `Display` is one line that names the file.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The file could not be created, opened or initialised (bad path, permission denied,
    /// corrupt or foreign file, already opened by another process...).
    #[error("cannot open data file {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },

    /// A read or write on an open file failed.
    #[error("data file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },

    /// A stored number is not 8 bytes.
    #[error("data file {}: bad {what} record", path.display())]
    BadNumber { path: PathBuf, what: String },

    /// A stored record could not be encoded or decoded.
    #[error("data file {}: bad {what} record: {source}", path.display())]
    Codec {
        path: PathBuf,
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Handle to the node's data file. Cheap to clone: all clones share one [`Database`].
#[derive(Clone)]
pub struct Disk {
    db: Arc<Database>,
    path: Arc<Path>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk").field("path", &self.path).finish()
    }
}

impl Disk {
    /// Creates the file (and its parent directory) if needed, opens it, verifies its integrity
    /// and makes sure every table exists. Blocking (reads the whole file once).
    pub fn open(path: &Path) -> Result<Disk, DiskError> {
        let open_err = |source: redb::Error| DiskError::Open {
            path: path.to_path_buf(),
            source,
        };

        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.into()))?;
        }
        // A plain open trusts the file and may panic on pages damaged outside redb; with the
        // integrity check (every page checksum, a little extra time per open) such a file fails
        // with a clean "DB corrupted" error instead.
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| open_err(e.into()))?;

        let txn = db.begin_write().map_err(|e| open_err(e.into()))?;
        {
            txn.open_table(META).map_err(|e| open_err(e.into()))?;
            txn.open_table(SNAPSHOT).map_err(|e| open_err(e.into()))?;
            txn.open_table(SNAPSHOT_CHUNKS)
                .map_err(|e| open_err(e.into()))?;
        }
        txn.commit().map_err(|e| open_err(e.into()))?;

        Ok(Disk {
            db: Arc::new(db),
            path: Arc::from(path),
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shared database, for modules that run their own transactions.
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    /// Wraps a redb error into a [`DiskError::Io`] naming this file.
    pub fn io_err(&self, e: impl Into<redb::Error>) -> DiskError {
        DiskError::Io {
            path: self.path.to_path_buf(),
            source: e.into(),
        }
    }

    /// Wraps a serde_json error into a [`DiskError::Codec`] naming this file and the record.
    pub fn codec_err(&self, what: &str, e: serde_json::Error) -> DiskError {
        DiskError::Codec {
            path: self.path.to_path_buf(),
            what: what.to_string(),
            source: e,
        }
    }

    /// Begins a write transaction; `durable = false` commits with [`Durability::None`].
    ///
    /// Blocking: waits for any other open write transaction.
    pub fn begin_write(&self, durable: bool) -> Result<WriteTransaction, DiskError> {
        let mut txn = self.db.begin_write().map_err(|e| self.io_err(e))?;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).map_err(|e| self.io_err(e))?;
        Ok(txn)
    }

    /// Begins a read transaction (an MVCC snapshot; never waits for writers).
    pub fn begin_read(&self) -> Result<ReadTransaction, DiskError> {
        self.db.begin_read().map_err(|e| self.io_err(e))
    }

    /// Reads one [`META`] record.
    pub fn read_meta(&self, key: &str) -> Result<Option<Vec<u8>>, DiskError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(META).map_err(|e| self.io_err(e))?;
        let value = table.get(key).map_err(|e| self.io_err(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Writes one [`META`] record in its own transaction. `durable = false` skips the fsync: the
    /// record is visible at once but survives a crash only if a durable commit follows.
    ///
    /// Blocking: waits for any other open write transaction.
    pub fn write_meta(&self, key: &str, value: &[u8], durable: bool) -> Result<(), DiskError> {
        let txn = self.begin_write(durable)?;
        {
            let mut table = txn.open_table(META).map_err(|e| self.io_err(e))?;
            table.insert(key, value).map_err(|e| self.io_err(e))?;
        }
        txn.commit().map_err(|e| self.io_err(e))
    }

    /// Reads a [`META`] record holding a number (8 bytes, big-endian).
    pub fn read_u64(&self, key: &str) -> Result<Option<u64>, DiskError> {
        let Some(bytes) = self.read_meta(key)? else {
            return Ok(None);
        };
        let arr: [u8; 8] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| DiskError::BadNumber {
                path: self.path.to_path_buf(),
                what: key.to_string(),
            })?;
        Ok(Some(u64::from_be_bytes(arr)))
    }

    /// Writes a [`META`] record holding a number, durably.
    pub fn write_u64(&self, key: &str, v: u64) -> Result<(), DiskError> {
        self.write_meta(key, &v.to_be_bytes(), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("member").join("etcd.redb");
        {
            let disk = Disk::open(&path).unwrap();
            assert_eq!(disk.read_meta(META_NODE_ID).unwrap(), None);
            disk.write_meta(META_NODE_ID, b"7", true).unwrap();
            disk.write_meta("hint", b"x", false).unwrap();
            assert_eq!(disk.read_meta("hint").unwrap().as_deref(), Some(&b"x"[..]));
        }
        let disk = Disk::open(&path).unwrap();
        assert_eq!(
            disk.read_meta(META_NODE_ID).unwrap().as_deref(),
            Some(&b"7"[..])
        );
    }

    #[test]
    fn open_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();

        // Not a redb file.
        let garbage = dir.path().join("garbage.redb");
        std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
        let msg = Disk::open(&garbage).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("cannot open data file {}: ", garbage.display())),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");

        // Already open by another handle.
        let path = dir.path().join("etcd.redb");
        let _first = Disk::open(&path).unwrap();
        let msg = Disk::open(&path).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("cannot open data file {}: ", path.display())),
            "{msg}"
        );

        // A redb file whose pages were damaged behind redb's back.
        let damaged = dir.path().join("damaged.redb");
        {
            let disk = Disk::open(&damaged).unwrap();
            for i in 0..64 {
                disk.write_meta(&format!("k{i}"), &[7u8; 3000], true)
                    .unwrap();
            }
        }
        let mut bytes = std::fs::read(&damaged).unwrap();
        for b in bytes[4096..].iter_mut().step_by(7) {
            *b ^= 0xff;
        }
        std::fs::write(&damaged, &bytes).unwrap();
        let msg = Disk::open(&damaged).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("cannot open data file {}: ", damaged.display())),
            "{msg}"
        );

        // A directory where the file should be.
        let msg = Disk::open(dir.path()).unwrap_err().to_string();
        assert!(msg.starts_with("cannot open data file "), "{msg}");
    }
}
