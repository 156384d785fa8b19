//! The write-ahead log: an append-only sequence of checksummed frames in preallocated
//! segment files, built for what a Raft log does - append and sync, over and over.
//!
//! The log store (`raft::log_store`) hands [`Wal::write`] one payload per storage call (a
//! batch of log records); the payload becomes one frame, written with one `pwrite` at the end
//! of the active segment and made durable with one `fdatasync`. Frames and segments are
//! described in `frame.rs` and `segment.rs`; this module owns the directory:
//!
//! ```text
//! <data-dir>/wal/0000000000000003.wal   sealed: ends with a seal frame
//!               /0000000000000004.wal   active: frames, then zeros up to its fixed size
//!               /0000000000000005.wal.tmp   the next segment, allocated ahead of need
//! ```
//!
//! # What must stay true
//!
//! * **At most one frame is not yet synced, and it is the last one.** Every write syncs
//!   before it returns, so after a crash only the last frame of the last segment can be torn.
//!   Recovery cuts such a frame off (it was never acknowledged); damage anywhere else - a bad
//!   checksum before the tail, a missing or cut segment, a gap in the frame numbers - stops
//!   the open with a one-line error naming the file and offset. Nothing is skipped silently.
//! * **A deferred sync is finished before anything else is written.** [`Wal::write_deferred`]
//!   writes its frame and hands the `fdatasync` to the log's sync thread, so the caller can
//!   go on (a Raft leader sends the entries to its followers meanwhile). The next write, a
//!   rotation or closing the log first waits for that sync, so the rule above still holds:
//!   only the last frame can be unsynced.
//! * **A write that fails stops the log.** After a failed `pwrite` or `fdatasync` the state of
//!   the file is unknown (Linux may have dropped the dirty pages), so every later write fails
//!   with the first error and the node must stop; nothing after it is acknowledged.
//! * **Segments change in an order a crash cannot break.** Moving on to a new segment: rename
//!   the prepared file into place and sync the directory, then write the seal frame into the
//!   old segment and sync it, then write into the new one. A crash between the first two steps
//!   leaves an unsealed segment followed by an empty one: the empty one is removed on open.
//!   A seal always names a segment that exists.
//! * **Removing segments only ever takes a prefix**, never the active segment, lowest first,
//!   so the remaining numbers stay contiguous; what a removed segment held must already be
//!   recorded as purged by the caller.

pub mod frame;
pub mod segment;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use segment::End;

/// Size of a segment file, unless a test asks for smaller ones.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Room kept free at the end of every segment for its seal frame.
const SEAL_RESERVE: u64 = 128;
/// How far ahead of its frames a segment that was only `fallocate`d gets zeros written (see
/// [`Wal::zero_ahead`]).
const ZERO_AHEAD: u64 = 256 << 10;

/// How the log is laid out.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub segment_size: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}

/// Where a payload lives: its segment and the file offset of its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

/// What [`Wal::open`] calls with each data payload, oldest first.
pub type Visit<'a> = dyn FnMut(Pos, &[u8]) -> Result<(), String> + 'a;

/// An error of the log. Its `Display` is one line that names the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// What is on disk is not a log this build can trust: damaged, cut short or incomplete.
    #[error("log {path}: {why}")]
    Damaged { path: String, why: String },
    /// An I/O call failed.
    #[error("log {path}: {what}: {error}")]
    Io {
        path: String,
        what: &'static str,
        error: String,
    },
    /// An earlier write or sync failed; the log accepts nothing more.
    #[error("the log stopped after a failed write: {0}")]
    Stopped(String),
}

fn io_err(path: &Path, what: &'static str, e: io::Error) -> WalError {
    WalError::Io {
        path: path.display().to_string(),
        what,
        error: e.to_string(),
    }
}

type SegmentFiles = Arc<RwLock<BTreeMap<u64, Arc<File>>>>;

/// Reads payload bytes back from any segment that still exists (cheap to clone).
#[derive(Clone)]
pub struct WalReader {
    files: SegmentFiles,
}

impl WalReader {
    /// `len` bytes at `pos` (as [`Wal::write`] or the open's `visit` reported them).
    pub fn read(&self, pos: Pos, len: usize) -> io::Result<Vec<u8>> {
        let file = self
            .files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pos.segment)
            .cloned()
            .ok_or_else(|| io::Error::other(format!("segment {} was removed", pos.segment)))?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, pos.offset)?;
        Ok(buf)
    }
}

/// A segment being prepared on another thread: (temporary path, file, salt).
type Spare = JoinHandle<io::Result<(PathBuf, File, u64)>>;

/// The writing end of the log. One owner writes; [`WalReader`]s read concurrently.
pub struct Wal {
    dir: PathBuf,
    opts: Options,
    files: SegmentFiles,
    active_no: u64,
    active: Arc<File>,
    salt: u64,
    /// Where the next frame goes (before alignment) in the active segment.
    end: u64,
    /// The active segment has been written (zeros or frames) up to here; beyond it the file
    /// may still be `fallocate`d space (see [`Wal::zero_ahead`]).
    zeroed: u64,
    next_seq: u64,
    spare: Option<Spare>,
    /// Tells the preparing thread to stop (the log is closing).
    cancel: Arc<std::sync::atomic::AtomicBool>,
    /// The thread deleting purged segments, if one runs.
    remover: Option<JoinHandle<()>>,
    failed: Option<String>,
    buf: Vec<u8>,
    /// The sync thread (started by the first deferred write) and the sync it has not yet
    /// reported, if any.
    syncer: Option<std::sync::mpsc::Sender<SyncJob>>,
    pending: Option<Pending>,
    /// Tests: make the next write fail as a failing disk would.
    #[cfg(test)]
    pub(crate) inject_failure: Option<io::ErrorKind>,
}

impl Wal {
    /// Opens (or creates) the log in `dir` and reads it back: `visit` gets every data
    /// payload, oldest first, with its position. A torn last frame is cut off; damage is an
    /// error. Blocking.
    pub fn open(dir: &Path, opts: Options, visit: &mut Visit<'_>) -> Result<Wal, WalError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, "create directory", e))?;
        let mut nos = Vec::new();
        for item in std::fs::read_dir(dir).map_err(|e| io_err(dir, "list", e))? {
            let item = item.map_err(|e| io_err(dir, "list", e))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                // A segment prepared ahead of need and never used.
                let _ = std::fs::remove_file(item.path());
            } else if let Some(no) = segment::parse_name(&name) {
                nos.push(no);
            }
        }
        nos.sort_unstable();
        if nos.is_empty() {
            return Wal::create(dir, opts);
        }
        for pair in nos.windows(2) {
            if pair[1] != pair[0] + 1 {
                return Err(WalError::Damaged {
                    path: dir
                        .join(segment::file_name(pair[0] + 1))
                        .display()
                        .to_string(),
                    why: "missing segment (the segments before and after it exist)".into(),
                });
            }
        }

        // A rotation cut short (see the module docs) leaves an unsealed segment followed by
        // one without frames: then the segment before the last is read as the tail.
        let last_no = *nos.last().expect("not empty");
        let last_has_frames = nos.len() < 2 || first_frame_written(dir, last_no)?;

        let mut files = BTreeMap::new();
        let mut next_seq = None;
        let mut active = None;
        for &no in &nos {
            let path = dir.join(segment::file_name(no));
            let tail = no == last_no || (no + 1 == last_no && !last_has_frames);
            let damaged = |why: String| WalError::Damaged {
                path: path.display().to_string(),
                why,
            };
            if no == last_no
                && let Some((_, _, _, End::Open { .. } | End::Torn { .. })) = &active
            {
                // The segment before was not sealed, so this one was never used: remove it.
                let data = std::fs::read(&path).map_err(|e| io_err(&path, "read", e))?;
                if data
                    .get(segment::HEADER_LEN as usize..)
                    .is_some_and(|d| d.iter().any(|&b| b != 0))
                {
                    return Err(damaged(
                        "data in a segment that follows an unsealed one".into(),
                    ));
                }
                std::fs::remove_file(&path)
                    .map_err(|e| io_err(&path, "remove unused segment", e))?;
                sync_dir(dir)?;
                break;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_err(&path, "open", e))?;
            let data = std::fs::read(&path).map_err(|e| io_err(&path, "read", e))?;
            let header = segment::Header::decode(&data).map_err(damaged)?;
            if header.no != no {
                return Err(damaged(format!(
                    "the header says segment {}, the name {no}",
                    header.no
                )));
            }
            let (end, last_seq) = segment::scan(&data, header.salt, next_seq, tail, &mut |o, p| {
                visit(
                    Pos {
                        segment: no,
                        offset: o,
                    },
                    p,
                )
            })
            .map_err(|d| damaged(format!("offset {}: {}", d.offset, d.why)))?;
            drop(data);
            if let Some(s) = last_seq {
                next_seq = Some(s + 1);
            }
            if let End::Torn { at, dirty_to } = end {
                tracing::warn!(path = %path.display(), offset = at, "cutting off a torn last write (never acknowledged)");
                let zeros = vec![0u8; (dirty_to - at) as usize];
                file.write_all_at(&zeros, at)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| io_err(&path, "cut off the torn write", e))?;
            }
            let file = Arc::new(file);
            files.insert(no, file.clone());
            active = Some((no, file, header.salt, end));
        }
        let (active_no, active, salt, end) = active.expect("at least one segment");
        if let End::Sealed { .. } = end {
            return Err(WalError::Damaged {
                path: dir
                    .join(segment::file_name(active_no + 1))
                    .display()
                    .to_string(),
                why: "missing segment (the one before it is sealed)".into(),
            });
        }
        // The last frame may have been written and not yet synced when the process stopped
        // (it survives in the page cache): make it durable before anything relies on it.
        active.sync_data().map_err(|e| {
            io_err(
                &dir.join(segment::file_name(active_no)),
                "sync the last segment",
                e,
            )
        })?;
        let mut wal = Wal::at(dir, opts, files, (active_no, active, salt), end.at());
        wal.next_seq = next_seq.unwrap_or(0);
        Ok(wal)
    }

    /// A new, empty log: segment 0.
    fn create(dir: &Path, opts: Options) -> Result<Wal, WalError> {
        let (tmp, file, salt) =
            segment::prepare(dir, 0, opts.segment_size, segment::Fill::Allocate)
                .map_err(|e| io_err(dir, "create the first segment", e))?;
        let path = dir.join(segment::file_name(0));
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, "rename", e))?;
        sync_dir(dir)?;
        let file = Arc::new(file);
        let files = BTreeMap::from([(0, file.clone())]);
        Ok(Wal::at(
            dir,
            opts,
            files,
            (0, file, salt),
            segment::HEADER_LEN,
        ))
    }

    /// A log whose next frame goes to `end` in the active segment `(number, file, salt)`.
    fn at(
        dir: &Path,
        opts: Options,
        files: BTreeMap<u64, Arc<File>>,
        (active_no, active, salt): (u64, Arc<File>, u64),
        end: u64,
    ) -> Wal {
        Wal {
            dir: dir.to_path_buf(),
            opts,
            files: Arc::new(RwLock::new(files)),
            active_no,
            active,
            salt,
            end,
            zeroed: end,
            next_seq: 0,
            spare: None,
            cancel: Default::default(),
            remover: None,
            failed: None,
            buf: Vec::new(),
            syncer: None,
            pending: None,
            #[cfg(test)]
            inject_failure: None,
        }
    }

    /// A reader for payloads written so far and later.
    pub fn reader(&self) -> WalReader {
        WalReader {
            files: self.files.clone(),
        }
    }

    /// The largest payload one [`Wal::write`] takes (larger batches must be split).
    pub fn max_payload(&self) -> usize {
        ((self.opts.segment_size - segment::HEADER_LEN - SEAL_RESERVE) / 2) as usize
    }

    /// The segment the next write goes to (unless it does not fit).
    pub fn active_segment(&self) -> u64 {
        self.active_no
    }

    /// Writes `payload` as one frame and syncs it. When it does not fit into the active
    /// segment, the log moves on to a new segment first and the frame carries
    /// `checkpoint()` followed by `payload` (the caller's summary of everything before, so
    /// older segments can be removed later). Returns where `payload` starts. Blocking.
    pub fn write(
        &mut self,
        payload: &[u8],
        checkpoint: &dyn Fn() -> Vec<u8>,
    ) -> Result<Pos, WalError> {
        self.write_frame(payload, checkpoint, None)
    }

    /// Like [`Wal::write`], but the frame's `fdatasync` runs on the log's sync thread, which
    /// then calls `synced` with its outcome; this returns once the frame is written (readable,
    /// not yet durable). Whatever the log writes next waits for that sync first. A failed sync
    /// stops the log as a failed write does.
    pub fn write_deferred(
        &mut self,
        payload: &[u8],
        checkpoint: &dyn Fn() -> Vec<u8>,
        synced: Synced,
    ) -> Result<Pos, WalError> {
        self.write_frame(payload, checkpoint, Some(synced))
    }

    /// Waits for the deferred sync still running, if any; its failure stops the log.
    pub fn settle(&mut self) -> Result<(), WalError> {
        if let Some(p) = self.pending.take()
            && let Err(e) = p.wait()
        {
            return Err(self.fail("sync (deferred)", e));
        }
        Ok(())
    }

    fn write_frame(
        &mut self,
        payload: &[u8],
        checkpoint: &dyn Fn() -> Vec<u8>,
        deferred: Option<Synced>,
    ) -> Result<Pos, WalError> {
        self.settle()?;
        if let Some(why) = &self.failed {
            return Err(WalError::Stopped(why.clone()));
        }
        assert!(payload.len() <= self.max_payload(), "payload too large");
        let room = self.opts.segment_size - SEAL_RESERVE;
        let mut start = frame::frame_start(self.end);
        let mut prefix = Vec::new();
        if start + frame::frame_len(payload.len()) > room {
            self.rotate()?;
            prefix = checkpoint();
            start = frame::frame_start(self.end);
        }
        let skip = prefix.len();
        let body: &[u8] = if skip == 0 {
            payload
        } else {
            prefix.extend_from_slice(payload);
            &prefix
        };
        self.buf.clear();
        frame::encode(
            &mut self.buf,
            frame::Kind::Data,
            self.next_seq,
            self.salt,
            body,
        );
        let file = self.active.clone();
        self.zero_ahead(&file, start + self.buf.len() as u64)?;
        match deferred {
            None => self.sync_write(&file, start, "append")?,
            Some(synced) => self.write_then_sync_later(file, start, synced)?,
        }
        self.end = start + self.buf.len() as u64;
        self.next_seq += 1;
        if self.spare.is_none() && self.end > self.opts.segment_size / 2 {
            self.prepare_spare();
        }
        Ok(Pos {
            segment: self.active_no,
            offset: start + (frame::HEADER_LEN + skip) as u64,
        })
    }

    /// Makes sure the active segment has been written up to `need`, writing zeros from
    /// `zeroed` to a [`ZERO_AHEAD`] boundary past it when not: called before a frame
    /// is written there, so the frame's own `fdatasync` makes the zeros durable with it.
    ///
    /// A segment made in a hurry (the first one, or a rotation whose spare was not ready) is
    /// only `fallocate`d: its space reads as zeros but is not yet written, and every
    /// `fdatasync` of a frame in such space must also write the file's extent map (measured:
    /// a second write per sync, and more CPU in the sync). Writing the zeros a chunk at a time
    /// pays that once per chunk instead of once per frame. Zeros over zeros change nothing a
    /// reader or a recovery sees, whether or not they reach the disk before a crash.
    fn zero_ahead(&mut self, file: &File, need: u64) -> Result<(), WalError> {
        if need <= self.zeroed {
            return Ok(());
        }
        static ZEROS: [u8; ZERO_AHEAD as usize] = [0; ZERO_AHEAD as usize];
        // `need` never passes the segment's end (a frame that would is written after a
        // rotation), so neither does `to`.
        let to = (need.div_ceil(ZERO_AHEAD) * ZERO_AHEAD).min(self.opts.segment_size);
        let mut at = self.zeroed;
        while at < to {
            let n = (to - at).min(ZERO_AHEAD) as usize;
            if let Err(e) = file.write_all_at(&ZEROS[..n], at) {
                return Err(self.fail("write zeros ahead of the log", e));
            }
            at += n as u64;
        }
        self.zeroed = to;
        Ok(())
    }

    /// `pwrite` the frame in `self.buf` at `at` and `fdatasync`; a failure stops the log.
    fn sync_write(&mut self, file: &File, at: u64, what: &'static str) -> Result<(), WalError> {
        #[cfg(test)]
        if let Some(kind) = self.inject_failure.take() {
            // The data reaches the page cache; the sync reports the failure.
            let _ = file.write_all_at(&self.buf, at);
            return Err(self.fail(what, io::Error::from(kind)));
        }
        let res = file
            .write_all_at(&self.buf, at)
            .and_then(|()| file.sync_data());
        res.map_err(|e| self.fail(what, e))
    }

    /// `pwrite` the frame in `self.buf` at `at`, and give its `fdatasync` to the sync thread.
    fn write_then_sync_later(
        &mut self,
        file: Arc<File>,
        at: u64,
        synced: Synced,
    ) -> Result<(), WalError> {
        #[cfg(test)]
        let injected = self.inject_failure.take();
        #[cfg(not(test))]
        let injected: Option<io::ErrorKind> = None;
        if let Err(e) = file.write_all_at(&self.buf, at) {
            return Err(self.fail("append", e));
        }
        if self.syncer.is_none() {
            self.syncer = start_syncer();
        }
        let pending = Pending::default();
        let job = SyncJob {
            file,
            injected,
            synced,
            done: pending.clone(),
        };
        let job = match &self.syncer {
            Some(tx) => match tx.send(job) {
                Ok(()) => {
                    self.pending = Some(pending);
                    return Ok(());
                }
                Err(std::sync::mpsc::SendError(job)) => {
                    self.syncer = None;
                    job
                }
            },
            None => job,
        };
        // No sync thread: sync here.
        job.run();
        self.pending = Some(pending);
        self.settle()
    }

    /// Stops the log for good after a failed write: every later write fails with this error.
    fn fail(&mut self, what: &'static str, e: io::Error) -> WalError {
        let path = self.dir.join(segment::file_name(self.active_no));
        let err = io_err(&path, what, e);
        tracing::error!(error = %err, "a write to the log failed; the log accepts no more writes");
        self.failed = Some(err.to_string());
        err
    }

    /// Move on to the next segment (see the module docs for the order of the steps).
    fn rotate(&mut self) -> Result<(), WalError> {
        let next = self.active_no + 1;
        // A spare is zero-filled all through; a segment prepared here is only allocated.
        let (spare, zeroed) = match self.spare.take() {
            Some(handle) => (
                handle
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("segment preparation panicked"))),
                self.opts.segment_size,
            ),
            None => (
                segment::prepare(
                    &self.dir,
                    next,
                    self.opts.segment_size,
                    segment::Fill::Allocate,
                ),
                segment::HEADER_LEN,
            ),
        };
        let (tmp, file, salt) = spare.map_err(|e| self.fail("prepare the next segment", e))?;
        let path = self.dir.join(segment::file_name(next));
        if let Err(e) = std::fs::rename(&tmp, &path) {
            return Err(self.fail("rename the next segment into place", e));
        }
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            return Err(self.fail("sync the log directory", e));
        }
        // Seal the old segment: it names the new one, which now exists for good.
        self.buf.clear();
        frame::encode(
            &mut self.buf,
            frame::Kind::Seal,
            self.next_seq,
            self.salt,
            &next.to_le_bytes(),
        );
        let old = self.active.clone();
        self.sync_write(&old, frame::frame_start(self.end), "seal a full segment")?;
        self.next_seq += 1;

        let file = Arc::new(file);
        self.files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(next, file.clone());
        self.active_no = next;
        self.active = file;
        self.salt = salt;
        self.end = segment::HEADER_LEN;
        self.zeroed = zeroed;
        tracing::debug!(segment = next, "log moved on to a new segment");
        Ok(())
    }

    /// Start preparing the segment after the active one on another thread (once the active
    /// one is half full, so a log that stays small never writes a second segment).
    fn prepare_spare(&mut self) {
        let (dir, no, size) = (self.dir.clone(), self.active_no + 1, self.opts.segment_size);
        let cancel = self.cancel.clone();
        let spawned = std::thread::Builder::new()
            .name("wal-prepare".into())
            .spawn(move || segment::prepare(&dir, no, size, segment::Fill::Zeros(&cancel)));
        // Without a thread the next rotation prepares the segment itself.
        self.spare = spawned.ok();
    }

    /// Removes every segment numbered below `no` (never the active one), lowest first. The
    /// log stops reading them at once; the files are deleted on another thread (unlinking 64
    /// MiB and syncing the directory took long enough to stall writes), which the next removal
    /// and closing the log wait for. A crash before they are gone leaves a prefix of them, which
    /// the next open reads again and the next removal deletes.
    pub fn remove_segments_below(&mut self, no: u64) {
        let no = no.min(self.active_no);
        let doomed: Vec<u64> = {
            let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
            let doomed: Vec<u64> = files.range(..no).map(|(n, _)| *n).collect();
            for n in &doomed {
                files.remove(n);
            }
            doomed
        };
        if doomed.is_empty() {
            return;
        }
        if let Some(h) = self.remover.take() {
            let _ = h.join();
        }
        let dir = self.dir.clone();
        let remove = move || {
            for n in doomed {
                let path = dir.join(segment::file_name(n));
                if let Err(e) = std::fs::remove_file(&path)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    // Harmless for correctness: read again on open, removed next time.
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a purged log segment");
                    return;
                }
            }
            if let Err(e) = sync_dir(&dir) {
                tracing::warn!(error = %e, "could not sync the log directory");
            }
        };
        match std::thread::Builder::new()
            .name("wal-remove".into())
            .spawn(remove)
        {
            Ok(h) => self.remover = Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a thread to remove purged log segments")
            }
        }
    }

    /// The segments that exist, lowest first.
    pub fn segments(&self) -> Vec<u64> {
        self.files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }
}

/// What a deferred sync reports its outcome to (on the sync thread).
pub type Synced = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The outcome of a deferred sync, once known (set once, waited for by the log).
type Outcome = std::sync::Mutex<Option<Result<(), String>>>;

/// The outcome of a deferred sync, once known.
#[derive(Clone, Default)]
struct Pending(Arc<(Outcome, std::sync::Condvar)>);

impl Pending {
    fn set(&self, res: Result<(), String>) {
        let (m, cv) = &*self.0;
        *m.lock().unwrap_or_else(|e| e.into_inner()) = Some(res);
        cv.notify_all();
    }

    fn wait(&self) -> io::Result<()> {
        let (m, cv) = &*self.0;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(res) = g.as_ref() {
                return res.clone().map_err(io::Error::other);
            }
            g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// One `fdatasync` for the sync thread.
struct SyncJob {
    file: Arc<File>,
    /// Tests: the failure to report instead of syncing.
    injected: Option<io::ErrorKind>,
    synced: Synced,
    done: Pending,
}

/// Debug builds only, for the cluster tests: `TEST_DEFERRED_SYNC_DELAY_MS` slows every
/// deferred sync down, so a test can look at a cluster while a leader's copy of an entry is
/// not yet durable.
#[cfg(debug_assertions)]
fn test_sync_delay() -> Option<std::time::Duration> {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        let ms = std::env::var("TEST_DEFERRED_SYNC_DELAY_MS").ok()?;
        Some(std::time::Duration::from_millis(ms.parse().ok()?))
    })
}

impl SyncJob {
    fn run(self) {
        #[cfg(debug_assertions)]
        if let Some(d) = test_sync_delay() {
            std::thread::sleep(d);
        }
        let res = match self.injected {
            Some(kind) => Err(io::Error::from(kind)),
            None => self.file.sync_data(),
        }
        .map_err(|e| e.to_string());
        if let Err(e) = &res {
            tracing::error!(error = %e, "a deferred sync of the log failed");
        }
        (self.synced)(res.clone());
        self.done.set(res);
    }
}

/// The log's sync thread: runs deferred syncs in order until the log is dropped.
fn start_syncer() -> Option<std::sync::mpsc::Sender<SyncJob>> {
    let (tx, rx) = std::sync::mpsc::channel::<SyncJob>();
    std::thread::Builder::new()
        .name("wal-sync".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                job.run();
            }
        })
        .map_err(
            |e| tracing::warn!(error = %e, "cannot start the log's sync thread; syncing in place"),
        )
        .ok()
        .map(|_| tx)
}

impl Drop for Wal {
    fn drop(&mut self) {
        // A deferred sync still running finishes (its caller is told through `synced`).
        if let Some(p) = self.pending.take() {
            let _ = p.wait();
        }
        // Stop a preparation in progress (its file is removed on the next open).
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.spare.take() {
            let _ = h.join();
        }
        if let Some(h) = self.remover.take() {
            let _ = h.join();
        }
    }
}

/// Does `dir` hold any segment (a log that was written before)?
pub fn has_segments(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| segment::parse_name(&e.file_name().to_string_lossy()).is_some())
    })
}

/// Does segment `no` hold anything where its first frame goes?
fn first_frame_written(dir: &Path, no: u64) -> Result<bool, WalError> {
    let path = dir.join(segment::file_name(no));
    let file = File::open(&path).map_err(|e| io_err(&path, "open", e))?;
    let mut head = [0u8; frame::HEADER_LEN];
    match file.read_exact_at(&mut head, segment::HEADER_LEN) {
        Ok(()) => Ok(head.iter().any(|&b| b != 0)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io_err(&path, "read", e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, "sync the directory", e))
}

#[cfg(test)]
mod tests;
