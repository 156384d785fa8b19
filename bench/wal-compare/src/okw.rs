//! okaywal: one entry per call, each record a chunk, `commit()` (fsyncs
//! before returning; concurrent committers share fsyncs).
//!
//! `okaywal` is the crate's default configuration (1 MiB preallocated
//! segments, checkpoint after 768 KiB); `okaywal-64m` uses 64 MiB segments
//! like the other candidates. The log manager checkpoints to nowhere: for a
//! Raft log the entries would have to be copied elsewhere at checkpoint time.

use std::io;
use std::path::Path;

use okaywal::{Configuration, Entry, EntryId, LogManager, SegmentReader, WriteAheadLog};

use crate::{Log, SharedLog};

#[derive(Debug)]
struct Discard;

impl LogManager for Discard {
    fn recover(&mut self, _entry: &mut Entry<'_>) -> io::Result<()> {
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: EntryId,
        _checkpointed_entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> io::Result<()> {
        Ok(())
    }
}

fn config(dir: &Path, big_segments: bool) -> Configuration {
    let cfg = Configuration::default_for(dir);
    if big_segments {
        cfg.preallocate_bytes(crate::SEGMENT_BYTES as u32)
            .checkpoint_after_bytes(crate::SEGMENT_BYTES)
    } else {
        cfg
    }
}

pub struct OkayWal {
    wal: WriteAheadLog,
}

impl OkayWal {
    pub fn open(dir: &Path, big_segments: bool) -> io::Result<Self> {
        Ok(OkayWal { wal: config(dir, big_segments).open(Discard)? })
    }

    fn append(&self, records: &[&[u8]]) -> io::Result<()> {
        let mut w = self.wal.begin_entry()?;
        for r in records {
            w.write_chunk(r)?;
        }
        w.commit()?;
        Ok(())
    }
}

impl Log for OkayWal {
    fn append_sync(&mut self, records: &[&[u8]]) -> io::Result<()> {
        self.append(records)
    }
}

impl SharedLog for OkayWal {
    fn append_sync(&self, records: &[&[u8]]) -> io::Result<()> {
        self.append(records)
    }
}

/// Counts the chunks of the complete entries that recovery hands over.
#[derive(Debug, Default)]
struct Count(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl LogManager for Count {
    fn recover(&mut self, entry: &mut Entry<'_>) -> io::Result<()> {
        if let Some(chunks) = entry.read_all_chunks()? {
            self.0.fetch_add(chunks.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: EntryId,
        _checkpointed_entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> io::Result<()> {
        Ok(())
    }
}

/// Reopens the log at `dir` and counts the records recovery hands over.
pub fn count_recovered(dir: &Path, big_segments: bool) -> io::Result<u64> {
    let n = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let wal = config(dir, big_segments).open(Count(n.clone()))?;
    let got = n.load(std::sync::atomic::Ordering::Relaxed);
    wal.shutdown()?;
    Ok(got)
}
