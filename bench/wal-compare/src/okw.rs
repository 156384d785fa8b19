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

pub struct OkayWal {
    wal: WriteAheadLog,
}

impl OkayWal {
    pub fn open(dir: &Path, big_segments: bool) -> io::Result<Self> {
        let mut cfg = Configuration::default_for(dir);
        if big_segments {
            cfg = cfg
                .preallocate_bytes(crate::SEGMENT_BYTES as u32)
                .checkpoint_after_bytes(crate::SEGMENT_BYTES);
        }
        Ok(OkayWal { wal: cfg.open(Discard)? })
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
