//! The ceiling: the records of a call concatenated, one pwrite at the end of
//! the data, one fdatasync. No framing, no checksum, no recovery.
//!
//! All 64 MiB files the run needs are created before the timed part, so
//! switching to the next one costs nothing.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::{Hint, Log, SEGMENT_BYTES, fdatasync, sync_dir};

#[derive(Clone, Copy, Debug)]
pub enum Prealloc {
    /// `fallocate(0, len)`: blocks reserved but marked unwritten, so the first
    /// write to each block converts extents and fdatasync commits metadata.
    Fallocate,
    /// Written with zeros and synced: later writes are pure overwrites.
    ZeroFill,
    /// Nothing: an empty file that grows with each write (size change each
    /// sync, the case of a log that does not preallocate).
    None,
}

pub struct RawLog {
    files: Vec<File>,
    cur: usize,
    off: u64,
    buf: Vec<u8>,
    grow: bool,
}

pub fn zero_fill(f: &File, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], off)?;
        off += n as u64;
    }
    f.sync_all()
}

pub fn fallocate(f: &File, len: u64) -> io::Result<()> {
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    f.sync_all()
}

impl RawLog {
    pub fn open(dir: &Path, prealloc: Prealloc, hint: Hint) -> io::Result<Self> {
        let grow = matches!(prealloc, Prealloc::None);
        let nfiles = if grow {
            1
        } else {
            // Each call may waste the tail of a file when it does not fit.
            (hint.total_bytes / (SEGMENT_BYTES / 2) + 1) as usize
        };
        let mut files = Vec::with_capacity(nfiles);
        for i in 0..nfiles {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(dir.join(format!("raw-{i:04}")))?;
            match prealloc {
                Prealloc::Fallocate => fallocate(&f, SEGMENT_BYTES)?,
                Prealloc::ZeroFill => zero_fill(&f, SEGMENT_BYTES)?,
                Prealloc::None => f.sync_all()?,
            }
            files.push(f);
        }
        sync_dir(dir)?;
        Ok(RawLog { files, cur: 0, off: 0, buf: Vec::new(), grow })
    }
}

impl Log for RawLog {
    fn append_sync(&mut self, records: &[&[u8]]) -> io::Result<()> {
        self.buf.clear();
        for r in records {
            self.buf.extend_from_slice(r);
        }
        let len = self.buf.len() as u64;
        if !self.grow && self.off + len > SEGMENT_BYTES {
            self.cur += 1;
            self.off = 0;
            if self.cur >= self.files.len() {
                return Err(io::Error::other("raw: preallocated files exhausted"));
            }
        }
        let f = &self.files[self.cur];
        f.write_all_at(&self.buf, self.off)?;
        self.off += len;
        fdatasync(f)
    }
}
