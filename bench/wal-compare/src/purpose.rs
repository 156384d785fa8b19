//! Minimal prototype of the purpose-built Raft log.
//!
//! * Segments `seg-NNNNNNNNNN.wal` of a fixed size, zero-filled and synced
//!   before use, so a write is a pure overwrite and fdatasync has no metadata
//!   to commit.
//! * A background thread prepares the spare segment (`spare.tmp`); rotation
//!   renames it and syncs the directory.
//! * Each `append_sync` call is ONE frame, ONE pwrite and ONE fdatasync:
//!
//!   ```text
//!   header: len u32 LE | crc32c u32 LE | seq u64 LE      (16 bytes)
//!   payload (len bytes): { rec_len u32 LE, rec bytes }*
//!   zero padding to a multiple of 8
//!   ```
//!
//!   `crc` covers seq, len and the payload. `seq` counts frames from 1 across
//!   segments. A header of zeros marks the end of the written part.
//! * Opening scans all segments; the first frame that is not valid (bad
//!   length, checksum or sequence) in the last segment is a torn tail: it and
//!   everything after it in that segment are zeroed before appending again.
//!   An invalid frame in an earlier segment is reported as corruption.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;

use crate::raw::zero_fill;
use crate::{Log, SharedLog, fdatasync, sync_dir};

pub const HEADER: usize = 16;
const SPARE: &str = "spare.tmp";

fn seg_name(no: u64) -> String {
    format!("seg-{no:010}.wal")
}

fn parse_seg_name(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?.strip_suffix(".wal")?.parse().ok()
}

fn frame_crc(seq: u64, len: u32, payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&seq.to_le_bytes());
    let c = crc32c::crc32c_append(c, &len.to_le_bytes());
    crc32c::crc32c_append(c, payload)
}

/// What `open` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub frames: u64,
    pub records: u64,
    /// Byte offset in the last segment where a torn frame was cut off.
    pub torn_at: Option<u64>,
}

pub struct PurposeLog {
    dir: PathBuf,
    seg_bytes: u64,
    file: File,
    seg_no: u64,
    off: u64,
    next_seq: u64,
    buf: Vec<u8>,
    spare_req: Option<Sender<()>>,
    spare_rx: Receiver<io::Result<File>>,
    spare_pending: bool,
    worker: Option<JoinHandle<()>>,
    pub recovered: Recovered,
}

impl PurposeLog {
    pub fn open(dir: &Path, seg_bytes: u64) -> io::Result<Self> {
        Self::open_with(dir, seg_bytes, |_, _| {})
    }

    /// Opens (creating or recovering) the log; `visit(seq, record)` sees every
    /// recovered record in order.
    pub fn open_with(
        dir: &Path,
        seg_bytes: u64,
        mut visit: impl FnMut(u64, &[u8]),
    ) -> io::Result<Self> {
        assert!(seg_bytes % 8 == 0 && seg_bytes > HEADER as u64);
        std::fs::create_dir_all(dir)?;
        let _ = std::fs::remove_file(dir.join(SPARE));
        let mut segs: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok()?.file_name().to_str().and_then(parse_seg_name))
            .collect();
        segs.sort_unstable();

        let mut rec = Recovered::default();
        let mut next_seq = 1;
        let (file, seg_no, off) = if segs.is_empty() {
            let f = create_zeroed(&dir.join(seg_name(0)), seg_bytes)?;
            sync_dir(dir)?;
            (f, 0, 0)
        } else {
            let mut last = None;
            for (i, &no) in segs.iter().enumerate() {
                let is_last = i + 1 == segs.len();
                let f = OpenOptions::new().read(true).write(true).open(dir.join(seg_name(no)))?;
                if f.metadata()?.len() != seg_bytes {
                    return Err(io::Error::other(format!("segment {no}: wrong size")));
                }
                let (end, torn) = scan(&f, seg_bytes, &mut next_seq, &mut rec, &mut visit)?;
                if torn {
                    if !is_last {
                        return Err(io::Error::other(format!(
                            "segment {no}: invalid frame at {end} before the last segment"
                        )));
                    }
                    zero_range(&f, end, seg_bytes)?;
                    rec.torn_at = Some(end);
                }
                if is_last {
                    last = Some((f, no, end));
                }
            }
            last.unwrap()
        };

        let (req_tx, req_rx) = channel::<()>();
        let (spare_tx, spare_rx) = channel();
        let wdir = dir.to_path_buf();
        let worker = std::thread::Builder::new()
            .name("purpose-spare".into())
            .spawn(move || {
                for () in req_rx {
                    let r = create_zeroed(&wdir.join(SPARE), seg_bytes)
                        .and_then(|f| sync_dir(&wdir).map(|()| f));
                    if spare_tx.send(r).is_err() {
                        break;
                    }
                }
            })?;
        req_tx.send(()).map_err(|_| io::Error::other("spare worker gone"))?;

        Ok(PurposeLog {
            dir: dir.to_path_buf(),
            seg_bytes,
            file,
            seg_no,
            off,
            next_seq,
            buf: Vec::with_capacity(1 << 16),
            spare_req: Some(req_tx),
            spare_rx,
            spare_pending: true,
            worker: Some(worker),
            recovered: rec,
        })
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends an already encoded payload (`{len u32, bytes}*`) as one frame.
    pub fn append_payload(&mut self, payload: &[u8]) -> io::Result<()> {
        self.buf.clear();
        self.buf.resize(HEADER, 0);
        self.buf.extend_from_slice(payload);
        self.commit_buf()
    }

    /// `self.buf` holds HEADER placeholder bytes followed by the payload.
    fn commit_buf(&mut self) -> io::Result<()> {
        let len = self.buf.len() - HEADER;
        if len == 0 {
            return Ok(());
        }
        let padded = (self.buf.len() + 7) & !7;
        if padded as u64 > self.seg_bytes {
            return Err(io::Error::other("frame larger than a segment"));
        }
        self.buf.resize(padded, 0);
        let seq = self.next_seq;
        let crc = frame_crc(seq, len as u32, &self.buf[HEADER..HEADER + len]);
        self.buf[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.buf[8..16].copy_from_slice(&seq.to_le_bytes());
        if self.off + padded as u64 > self.seg_bytes {
            self.rotate()?;
        }
        self.file.write_all_at(&self.buf, self.off)?;
        fdatasync(&self.file)?;
        self.off += padded as u64;
        self.next_seq += 1;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if !self.spare_pending {
            self.spare_req
                .as_ref()
                .unwrap()
                .send(())
                .map_err(|_| io::Error::other("spare worker gone"))?;
        }
        let spare = self
            .spare_rx
            .recv()
            .map_err(|_| io::Error::other("spare worker gone"))??;
        let no = self.seg_no + 1;
        std::fs::rename(self.dir.join(SPARE), self.dir.join(seg_name(no)))?;
        sync_dir(&self.dir)?;
        self.file = spare;
        self.seg_no = no;
        self.off = 0;
        self.spare_req
            .as_ref()
            .unwrap()
            .send(())
            .map_err(|_| io::Error::other("spare worker gone"))?;
        self.spare_pending = true;
        Ok(())
    }
}

impl Drop for PurposeLog {
    fn drop(&mut self) {
        self.spare_req.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Log for PurposeLog {
    fn append_sync(&mut self, records: &[&[u8]]) -> io::Result<()> {
        self.buf.clear();
        self.buf.resize(HEADER, 0);
        for r in records {
            self.buf.extend_from_slice(&(r.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(r);
        }
        self.commit_buf()
    }
}

fn create_zeroed(path: &Path, len: u64) -> io::Result<File> {
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    zero_fill(&f, len)?;
    Ok(f)
}

fn zero_range(f: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut off = from;
    while off < to {
        let n = (to - off).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], off)?;
        off += n as u64;
    }
    fdatasync(f)
}

/// Returns (end of the valid frames, whether an invalid frame follows).
fn scan(
    f: &File,
    seg_bytes: u64,
    next_seq: &mut u64,
    rec: &mut Recovered,
    visit: &mut impl FnMut(u64, &[u8]),
) -> io::Result<(u64, bool)> {
    let mut off = 0u64;
    let mut hdr = [0u8; HEADER];
    let mut payload = Vec::new();
    while off + HEADER as u64 <= seg_bytes {
        f.read_exact_at(&mut hdr, off)?;
        if hdr == [0u8; HEADER] {
            return Ok((off, false));
        }
        let len = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
        let crc = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
        let seq = u64::from_le_bytes(hdr[8..16].try_into().unwrap());
        if len == 0 || off + HEADER as u64 + len as u64 > seg_bytes || seq != *next_seq {
            return Ok((off, true));
        }
        payload.resize(len as usize, 0);
        f.read_exact_at(&mut payload, off + HEADER as u64)?;
        if frame_crc(seq, len, &payload) != crc {
            return Ok((off, true));
        }
        // Split the payload into records; a bad inner length is corruption
        // that the checksum did not catch (should not happen).
        let mut p = &payload[..];
        let mut n = 0;
        while !p.is_empty() {
            if p.len() < 4 {
                return Ok((off, true));
            }
            let rl = u32::from_le_bytes(p[0..4].try_into().unwrap()) as usize;
            if p.len() < 4 + rl {
                return Ok((off, true));
            }
            visit(seq, &p[4..4 + rl]);
            p = &p[4 + rl..];
            n += 1;
        }
        rec.frames += 1;
        rec.records += n;
        *next_seq += 1;
        off += ((HEADER + len as usize + 7) & !7) as u64;
    }
    Ok((off, false))
}

/// Leader/follower group commit over one `PurposeLog`: callers queue their
/// encoded records; whichever caller finds no sync in flight takes everything
/// queued, writes it as one frame with one fdatasync, then wakes the others.
pub struct GroupCommit {
    st: Mutex<GcState>,
    cv: Condvar,
}

struct GcState {
    pending: Vec<u8>,
    filling: u64,
    durable: u64,
    busy: bool,
    failed: Option<(io::ErrorKind, String)>,
    log: Option<PurposeLog>,
    spare_buf: Vec<u8>,
    pub frames: u64,
}

impl GroupCommit {
    pub fn new(log: PurposeLog) -> Self {
        GroupCommit {
            st: Mutex::new(GcState {
                pending: Vec::new(),
                filling: 1,
                durable: 0,
                busy: false,
                failed: None,
                log: Some(log),
                spare_buf: Vec::new(),
                frames: 0,
            }),
            cv: Condvar::new(),
        }
    }

    pub fn frames(&self) -> u64 {
        self.st.lock().unwrap().frames
    }
}

impl SharedLog for GroupCommit {
    fn append_sync(&self, records: &[&[u8]]) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        for r in records {
            st.pending.extend_from_slice(&(r.len() as u32).to_le_bytes());
            st.pending.extend_from_slice(r);
        }
        let mine = st.filling;
        loop {
            if let Some((kind, msg)) = &st.failed {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if st.durable >= mine {
                return Ok(());
            }
            if st.busy {
                st = self.cv.wait(st).unwrap();
                continue;
            }
            // Become the leader for everything queued so far.
            st.busy = true;
            let id = st.filling;
            st.filling += 1;
            let fresh = std::mem::take(&mut st.spare_buf);
            let payload = std::mem::replace(&mut st.pending, fresh);
            let mut log = st.log.take().unwrap();
            drop(st);
            let res = log.append_payload(&payload);
            st = self.st.lock().unwrap();
            st.log = Some(log);
            st.busy = false;
            st.spare_buf = payload;
            st.spare_buf.clear();
            match res {
                Ok(()) => {
                    st.durable = id;
                    st.frames += 1;
                }
                Err(e) => st.failed = Some((e.kind(), e.to_string())),
            }
            self.cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let base = std::env::var_os("WALBENCH_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir());
        let d = base.join(format!("purpose-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn read_all(dir: &Path, seg: u64) -> (Vec<(u64, Vec<u8>)>, PurposeLog) {
        let mut out = Vec::new();
        let log = PurposeLog::open_with(dir, seg, |s, r| out.push((s, r.to_vec()))).unwrap();
        (out, log)
    }

    #[test]
    fn roundtrip_with_rotation() {
        let dir = tmp("rot");
        let seg = 4096;
        let mut want = Vec::new();
        {
            let mut log = PurposeLog::open(&dir, seg).unwrap();
            for i in 0..200u64 {
                let a = vec![i as u8; (i % 300) as usize + 1];
                let b = i.to_le_bytes().to_vec();
                log.append_sync(&[&a, &b]).unwrap();
                want.push((i + 1, a));
                want.push((i + 1, b));
            }
        }
        let (got, log) = read_all(&dir, seg);
        assert_eq!(got, want);
        assert_eq!(log.recovered.torn_at, None);
        assert_eq!(log.next_seq(), 201);
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_tail_is_cut_and_appending_continues() {
        let dir = tmp("torn");
        let seg = 1 << 16;
        {
            let mut log = PurposeLog::open(&dir, seg).unwrap();
            for i in 0..3u8 {
                log.append_sync(&[&[i; 100]]).unwrap();
            }
            // A fourth frame whose payload reached the disk only in part.
            log.append_sync(&[&[9u8; 1000]]).unwrap();
        }
        let path = dir.join(seg_name(0));
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        let frame = ((HEADER + 104 + 7) & !7) as u64;
        f.write_all_at(&[0u8; 500], 3 * frame + HEADER as u64 + 300).unwrap();
        drop(f);

        let (got, mut log) = read_all(&dir, seg);
        assert_eq!(got.len(), 3);
        assert_eq!(log.recovered.torn_at, Some(3 * frame));
        assert_eq!(log.next_seq(), 4);
        log.append_sync(&[b"after"]).unwrap();
        drop(log);
        let (got, log) = read_all(&dir, seg);
        assert_eq!(got.len(), 4);
        assert_eq!(got[3], (4, b"after".to_vec()));
        assert_eq!(log.recovered.torn_at, None);
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn group_commit_keeps_every_record() {
        let dir = tmp("gc");
        let gc = std::sync::Arc::new(GroupCommit::new(PurposeLog::open(&dir, 1 << 20).unwrap()));
        let hs: Vec<_> = (0..4u8)
            .map(|t| {
                let gc = gc.clone();
                std::thread::spawn(move || {
                    for i in 0..50u8 {
                        gc.append_sync(&[&[t, i]]).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let frames = gc.frames();
        drop(gc);
        let (got, log) = read_all(&dir, 1 << 20);
        assert_eq!(got.len(), 200);
        assert_eq!(log.recovered.frames, frames);
        for t in 0..4u8 {
            let mine: Vec<u8> = got.iter().filter(|(_, r)| r[0] == t).map(|(_, r)| r[1]).collect();
            assert_eq!(mine, (0..50).collect::<Vec<u8>>());
        }
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
