//! Candidates for the Raft log storage, each behind the same small traits.
//!
//! `Log::append_sync` returns only once every record of the call is durable
//! (fdatasync, or the crate's own durable commit). `SharedLog` is the same for
//! several threads at once; each candidate groups concurrent syncs its own way.

use std::io;
use std::path::Path;

pub mod purpose;
pub mod raw;

#[cfg(feature = "okaywal")]
pub mod okw;
#[cfg(feature = "raft-engine")]
pub mod re;
#[cfg(feature = "redb")]
pub mod rdb;
#[cfg(feature = "raft-log")]
pub mod rlog;

/// One writer: all records of one call are durable when it returns.
pub trait Log {
    fn append_sync(&mut self, records: &[&[u8]]) -> io::Result<()>;
}

/// Several writers through one log (the `concurrent` workload).
pub trait SharedLog: Send + Sync {
    fn append_sync(&self, records: &[&[u8]]) -> io::Result<()>;
}

/// What a candidate is told before the run, so that the `raw` ceiling can
/// preallocate everything outside the timed part.
#[derive(Clone, Copy, Debug)]
pub struct Hint {
    /// Upper bound of payload bytes the run will append.
    pub total_bytes: u64,
}

pub const SEGMENT_BYTES: u64 = 64 << 20;

pub const CANDIDATES: &[&str] = &[
    "raw-falloc",
    "raw-zero",
    "raw-grow",
    "purpose",
    "raft-engine",
    "okaywal",
    "okaywal-64m",
    "raft-log",
    "raft-log-nowait",
    "redb",
];

fn unsupported(name: &str) -> io::Error {
    io::Error::other(format!(
        "candidate {name} is not built in (feature off) or unknown"
    ))
}

pub fn open_log(name: &str, dir: &Path, hint: Hint) -> io::Result<Box<dyn Log>> {
    std::fs::create_dir_all(dir)?;
    Ok(match name {
        "raw-falloc" => Box::new(raw::RawLog::open(dir, raw::Prealloc::Fallocate, hint)?),
        "raw-zero" => Box::new(raw::RawLog::open(dir, raw::Prealloc::ZeroFill, hint)?),
        "raw-grow" => Box::new(raw::RawLog::open(dir, raw::Prealloc::None, hint)?),
        "purpose" => Box::new(purpose::PurposeLog::open(dir, SEGMENT_BYTES)?),
        #[cfg(feature = "raft-engine")]
        "raft-engine" => Box::new(re::RaftEngineLog::open(dir)?),
        #[cfg(feature = "okaywal")]
        "okaywal" => Box::new(okw::OkayWal::open(dir, false)?),
        #[cfg(feature = "okaywal")]
        "okaywal-64m" => Box::new(okw::OkayWal::open(dir, true)?),
        #[cfg(feature = "raft-log")]
        "raft-log" => Box::new(rlog::RaftLogLog::open(dir, false)?),
        #[cfg(feature = "raft-log")]
        "raft-log-nowait" => Box::new(rlog::RaftLogLog::open(dir, true)?),
        #[cfg(feature = "redb")]
        "redb" => Box::new(rdb::RedbLog::open(dir)?),
        _ => return Err(unsupported(name)),
    })
}

/// `None` when the candidate has no meaningful shared mode (the raw ceiling).
pub fn open_shared(name: &str, dir: &Path) -> io::Result<Option<Box<dyn SharedLog>>> {
    std::fs::create_dir_all(dir)?;
    Ok(Some(match name {
        "raw-falloc" | "raw-zero" | "raw-grow" => return Ok(None),
        "purpose" => Box::new(purpose::GroupCommit::new(purpose::PurposeLog::open(
            dir,
            SEGMENT_BYTES,
        )?)),
        #[cfg(feature = "raft-engine")]
        "raft-engine" => Box::new(re::SharedRaftEngine::open(dir)?),
        #[cfg(feature = "okaywal")]
        "okaywal" => Box::new(okw::OkayWal::open(dir, false)?),
        #[cfg(feature = "okaywal")]
        "okaywal-64m" => Box::new(okw::OkayWal::open(dir, true)?),
        #[cfg(feature = "raft-log")]
        "raft-log" => Box::new(rlog::SharedRaftLog::open(dir, false)?),
        #[cfg(feature = "raft-log")]
        "raft-log-nowait" => Box::new(rlog::SharedRaftLog::open(dir, true)?),
        #[cfg(feature = "redb")]
        "redb" => Box::new(rdb::SharedRedb::open(dir)?),
        _ => return Err(unsupported(name)),
    }))
}

/// fsync a directory so that file creations and renames in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

pub fn fdatasync(f: &std::fs::File) -> io::Result<()> {
    f.sync_data()
}

/// Reopens a candidate's log at `dir` and returns how many records recovery
/// kept (`None`: the candidate has no recovery to test, the raw ceiling).
pub fn count_recovered(name: &str, dir: &Path) -> io::Result<Option<u64>> {
    Ok(Some(match name {
        "raw-falloc" | "raw-zero" | "raw-grow" => return Ok(None),
        "purpose" => purpose::PurposeLog::open(dir, SEGMENT_BYTES)?.recovered.records,
        #[cfg(feature = "raft-engine")]
        "raft-engine" => re::count_recovered(dir)?,
        #[cfg(feature = "okaywal")]
        "okaywal" => okw::count_recovered(dir, false)?,
        #[cfg(feature = "okaywal")]
        "okaywal-64m" => okw::count_recovered(dir, true)?,
        #[cfg(feature = "raft-log")]
        "raft-log" | "raft-log-nowait" => rlog::count_recovered(dir)?,
        #[cfg(feature = "redb")]
        "redb" => rdb::count_recovered(dir)?,
        _ => return Err(unsupported(name)),
    }))
}
