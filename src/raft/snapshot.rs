//! Snapshots on disk and on the wire.
//!
//! A snapshot is the store's binary stream (`store::snapshot`) plus openraft's metadata (the
//! log position it reflects and the membership). On disk it lives in the redb file, cut into
//! [`CHUNK`]-byte pieces under a generation number:
//!
//! | table                | key                     | value                                |
//! |----------------------|-------------------------|--------------------------------------|
//! | `snapshot`           | `"current"`             | JSON `{meta, generation, len}`              |
//! | `snapshot_chunks`    | `(generation, chunk number)`   | up to [`CHUNK`] bytes of the stream  |
//!
//! [`save`] writes a new generation, points `"current"` at it and deletes the older one in
//! one durable transaction, so a crash leaves the old snapshot or the new one, never a mix.
//! The stream is written as it is encoded (no copy of the whole snapshot in memory), from a
//! store snapshot that shares its tree with the live store: building one never holds the
//! store's lock.
//!
//! [`SnapshotData`] is what openraft moves around: a stored snapshot read chunk by chunk when
//! it is sent to a follower, or the bytes a follower receives, spooled to a file in the data
//! directory. Snapshots written by older releases (`"meta"` and `"data"`, JSON) still load.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use redb::{ReadOnlyTable, ReadableDatabase};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use super::disk::{
    Disk, DiskError, SNAPSHOT, SNAPSHOT_CHUNKS as CHUNKS, SNAPSHOT_DATA, SNAPSHOT_META,
};
use super::types::SnapshotMeta;
use crate::store::{StoreSnapshot, snapshot::MAGIC};

/// Bytes per stored chunk.
pub const CHUNK: usize = 1 << 20;

/// [`SNAPSHOT`] key of the current snapshot's record.
const CURRENT: &str = "current";

/// The name of the file a follower spools a snapshot it receives into.
pub const RECEIVING: &str = "snapshot.receiving";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Current {
    meta: SnapshotMeta,
    generation: u64,
    len: u64,
}

/// Where the current snapshot's bytes are.
pub enum Stored {
    Chunks {
        generation: u64,
        len: u64,
    },
    /// A snapshot written by an older release: the whole JSON payload.
    Legacy(Vec<u8>),
}

/// The current snapshot's metadata and where its bytes are, if there is one.
pub fn current(disk: &Disk) -> Result<Option<(SnapshotMeta, Stored)>, DiskError> {
    let txn = disk.begin_read()?;
    let table = txn.open_table(SNAPSHOT).map_err(|e| disk.io_err(e))?;
    if let Some(rec) = table.get(CURRENT).map_err(|e| disk.io_err(e))? {
        let c: Current =
            serde_json::from_slice(rec.value()).map_err(|e| disk.codec_err("snapshot", e))?;
        return Ok(Some((
            c.meta,
            Stored::Chunks {
                generation: c.generation,
                len: c.len,
            },
        )));
    }
    let meta = table.get(SNAPSHOT_META).map_err(|e| disk.io_err(e))?;
    let data = table.get(SNAPSHOT_DATA).map_err(|e| disk.io_err(e))?;
    match (meta, data) {
        (Some(m), Some(d)) => {
            let meta: SnapshotMeta = serde_json::from_slice(m.value())
                .map_err(|e| disk.codec_err("snapshot metadata", e))?;
            Ok(Some((meta, Stored::Legacy(d.value().to_vec()))))
        }
        _ => Ok(None),
    }
}

/// Saves a snapshot: `write` produces its bytes into the chunk writer. Blocking. Returns the
/// stream's length.
///
/// Each chunk is committed durably on its own (a new generation that nothing points at yet),
/// then one last transaction makes it current and drops the older one. Syncing a megabyte at a
/// time keeps the disk's queue short, so the log's own syncs never wait behind a whole
/// snapshot (one 100 MB commit stalled log writes for ~80 ms here); a crash half-way leaves
/// the older snapshot current and the partial generation is dropped by the next save.
pub fn save(
    disk: &Disk,
    meta: &SnapshotMeta,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<u64, DiskError> {
    let io = |e: io::Error| disk.io_err(redb::Error::Io(e));
    let old = match current(disk)? {
        Some((_, Stored::Chunks { generation, .. })) => Some(generation),
        _ => None,
    };
    let generation = old.map_or(1, |g| g + 1);
    // Leftovers of a save that did not finish.
    let txn = disk.begin_write(true)?;
    txn.open_table(CHUNKS)
        .map_err(|e| disk.io_err(e))?
        .retain(|(g, _), _| Some(g) == old)
        .map_err(|e| disk.io_err(e))?;
    txn.commit().map_err(|e| disk.io_err(e))?;

    let mut w = ChunkWriter {
        disk,
        generation,
        next: 0,
        buf: Vec::with_capacity(CHUNK),
        len: 0,
        err: None,
    };
    let written = write(&mut w).and_then(|()| w.flush());
    if let Some(e) = w.err.take() {
        return Err(e);
    }
    written.map_err(io)?;
    let len = w.len;

    let txn = disk.begin_write(true)?;
    txn.open_table(CHUNKS)
        .map_err(|e| disk.io_err(e))?
        .retain(|(g, _), _| g == generation)
        .map_err(|e| disk.io_err(e))?;
    {
        let mut table = txn.open_table(SNAPSHOT).map_err(|e| disk.io_err(e))?;
        let rec = serde_json::to_vec(&Current {
            meta: meta.clone(),
            generation,
            len,
        })
        .map_err(|e| disk.codec_err("snapshot", e))?;
        table
            .insert(CURRENT, rec.as_slice())
            .map_err(|e| disk.io_err(e))?;
        table.remove(SNAPSHOT_META).map_err(|e| disk.io_err(e))?;
        table.remove(SNAPSHOT_DATA).map_err(|e| disk.io_err(e))?;
    }
    txn.commit().map_err(|e| disk.io_err(e))?;
    Ok(len)
}

/// Writes a stream into [`CHUNK`]-byte rows of one generation, one durable commit each.
struct ChunkWriter<'a> {
    disk: &'a Disk,
    generation: u64,
    next: u64,
    buf: Vec<u8>,
    len: u64,
    err: Option<DiskError>,
}

impl ChunkWriter<'_> {
    fn put(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let disk = self.disk;
        let res = disk.begin_write(true).and_then(|txn| {
            txn.open_table(CHUNKS)
                .map_err(|e| disk.io_err(e))?
                .insert((self.generation, self.next), self.buf.as_slice())
                .map_err(|e| disk.io_err(e))?;
            txn.commit().map_err(|e| disk.io_err(e))
        });
        if let Err(e) = res {
            let msg = e.to_string();
            self.err = Some(e);
            return Err(io::Error::other(msg));
        }
        self.next += 1;
        self.buf.clear();
        Ok(())
    }
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.len += n as u64;
        if self.buf.len() == CHUNK {
            self.put()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.put()
    }
}

/// The chunks of one stored generation, read one at a time.
struct Chunks {
    table: ReadOnlyTable<(u64, u64), &'static [u8]>,
    generation: u64,
    len: u64,
}

impl Chunks {
    fn open(disk: &Disk, generation: u64, len: u64) -> Result<Chunks, DiskError> {
        let txn = disk.db().begin_read().map_err(|e| disk.io_err(e))?;
        let table = txn.open_table(CHUNKS).map_err(|e| disk.io_err(e))?;
        Ok(Chunks {
            table,
            generation,
            len,
        })
    }

    /// How many chunks the generation has.
    fn count(&self) -> u64 {
        self.len.div_ceil(CHUNK as u64)
    }

    /// Chunk `no`'s bytes; a missing chunk, or one of another size than `len` implies, is an
    /// error.
    fn get(&self, no: u64) -> io::Result<Vec<u8>> {
        let want = (self.len.saturating_sub(no * CHUNK as u64)).min(CHUNK as u64) as usize;
        match self.table.get((self.generation, no)) {
            Ok(Some(row)) if row.value().len() == want => Ok(row.value().to_vec()),
            Ok(Some(row)) => Err(io::Error::other(format!(
                "snapshot chunk {no} has {} bytes, {want} expected",
                row.value().len()
            ))),
            Ok(None) => Err(io::Error::other(format!("snapshot chunk {no} is missing"))),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

/// Reads a stored generation back, with seeks (for sending it in pieces).
pub struct ChunkReader {
    chunks: Chunks,
    pos: u64,
    /// The chunk last read: (number, bytes).
    cached: Option<(u64, Vec<u8>)>,
}

impl ChunkReader {
    pub fn open(disk: &Disk, generation: u64, len: u64) -> Result<ChunkReader, DiskError> {
        Ok(ChunkReader {
            chunks: Chunks::open(disk, generation, len)?,
            pos: 0,
            cached: None,
        })
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.chunks.len || out.is_empty() {
            return Ok(0);
        }
        let no = self.pos / CHUNK as u64;
        if self.cached.as_ref().is_none_or(|(n, _)| *n != no) {
            self.cached = Some((no, self.chunks.get(no)?));
        }
        let (_, chunk) = self.cached.as_ref().expect("just loaded");
        // In range: the chunk has the size `len` implies, and `pos < len`.
        let at = (self.pos % CHUNK as u64) as usize;
        let n = out.len().min(chunk.len() - at);
        out[..n].copy_from_slice(&chunk[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ChunkReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.chunks.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

/// Chunks [`read_ahead`] may hold beyond the one being decoded.
const READ_AHEAD: usize = 4;

/// Runs `f` on a reader of a stored generation whose chunks are fetched from the file on a
/// thread of their own, up to [`READ_AHEAD`] ahead: at start-up the copying out of redb then
/// runs beside the decoding instead of before each piece of it. A missing chunk, or one of
/// another size than `len` implies, is an error of the reader, as in [`ChunkReader`].
pub fn read_ahead<T>(
    disk: &Disk,
    generation: u64,
    len: u64,
    f: impl FnOnce(&mut dyn Read) -> T,
) -> Result<T, DiskError> {
    let chunks = Chunks::open(disk, generation, len)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(READ_AHEAD);
    Ok(std::thread::scope(|scope| {
        scope.spawn(move || {
            for no in 0..chunks.count() {
                let chunk = chunks.get(no);
                let failed = chunk.is_err();
                // The reader stopped (it failed or has all it wanted): so do we.
                if tx.send(chunk).is_err() || failed {
                    return;
                }
            }
        });
        f(&mut Fetched {
            rx,
            chunk: Vec::new(),
            at: 0,
            got: 0,
            len,
            failed: false,
        })
    }))
}

/// The reading end of [`read_ahead`].
struct Fetched {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
    /// Bytes received so far, of `len`.
    got: u64,
    len: u64,
    /// An error was returned: every later read fails too.
    failed: bool,
}

impl Read for Fetched {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.failed {
                return Err(io::Error::other("the snapshot could not be read"));
            }
            let next = match self.rx.recv() {
                Ok(chunk) => chunk,
                Err(_) if self.got == self.len => return Ok(0),
                // The reading thread ended without saying why (it panicked).
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the snapshot ended after {} of {} bytes",
                        self.got, self.len
                    ),
                )),
            };
            match next {
                Ok(chunk) => {
                    self.got += chunk.len() as u64;
                    (self.chunk, self.at) = (chunk, 0);
                }
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.at);
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Decodes a snapshot stream of either format: the binary one, or an older release's JSON
/// (`{"store": ...}`).
pub fn decode(r: &mut impl Read) -> Result<StoreSnapshot, String> {
    let mut first = [0u8; 1];
    r.read_exact(&mut first)
        .map_err(|e| format!("empty snapshot: {e}"))?;
    if first[0] == MAGIC[0] {
        let mut r = Cursor::new(first).chain(r);
        return StoreSnapshot::decode(&mut r).map_err(|e| e.to_string());
    }
    #[derive(Deserialize)]
    struct Legacy {
        store: StoreSnapshot,
    }
    let mut bytes = first.to_vec();
    r.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    let legacy: Legacy = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    Ok(legacy.store)
}

/// The bytes of a snapshot as openraft handles them.
pub enum SnapshotData {
    /// A stored snapshot, read from the redb file as it is sent.
    Stored(ChunkReader),
    /// A snapshot being received, spooled to a file (removed when dropped).
    Receiving(tokio::fs::File, PathBuf),
    /// Bytes in memory (older snapshots, tests).
    Memory(Cursor<Vec<u8>>),
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotData::Stored(r) => {
                write!(
                    f,
                    "Stored(generation {}, {} bytes)",
                    r.chunks.generation, r.chunks.len
                )
            }
            SnapshotData::Receiving(_, p) => write!(f, "Receiving({})", p.display()),
            SnapshotData::Memory(c) => write!(f, "Memory({} bytes)", c.get_ref().len()),
        }
    }
}

impl SnapshotData {
    /// A fresh spool file in `dir` for a snapshot to be received.
    pub async fn receive_into(dir: &Path) -> io::Result<SnapshotData> {
        let path = dir.join(RECEIVING);
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await?;
        Ok(SnapshotData::Receiving(file, path))
    }

    /// A blocking reader of the whole snapshot, from its start.
    pub async fn into_reader(self) -> io::Result<Box<dyn ReadSeek + Send>> {
        Ok(match self {
            SnapshotData::Stored(mut r) => {
                r.pos = 0;
                Box::new(r)
            }
            SnapshotData::Receiving(file, path) => {
                let mut file: File = file.into_std().await;
                file.flush()?;
                file.seek(SeekFrom::Start(0))?;
                Box::new(Spooled { file, path })
            }
            SnapshotData::Memory(mut c) => {
                c.set_position(0);
                Box::new(c)
            }
        })
    }
}

/// `Read + Seek`, boxed.
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// A received snapshot's spool file; removed when dropped.
struct Spooled {
    file: File,
    path: PathBuf,
}

impl Read for Spooled {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for Spooled {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.file.seek(to)
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            // Chunks come from redb's cache or the page cache: read them in place.
            SnapshotData::Stored(r) => {
                let n = r.read(buf.initialize_unfilled())?;
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            SnapshotData::Receiving(f, _) => Pin::new(f).poll_read(cx, buf),
            SnapshotData::Memory(c) => Pin::new(c).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for SnapshotData {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SnapshotData::Stored(_) => {
                Poll::Ready(Err(io::Error::other("a stored snapshot is read-only")))
            }
            SnapshotData::Receiving(f, _) => Pin::new(f).poll_write(cx, data),
            SnapshotData::Memory(c) => Pin::new(c).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotData::Stored(_) => Poll::Ready(Ok(())),
            SnapshotData::Receiving(f, _) => Pin::new(f).poll_flush(cx),
            SnapshotData::Memory(c) => Pin::new(c).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotData::Stored(_) => Poll::Ready(Ok(())),
            SnapshotData::Receiving(f, _) => Pin::new(f).poll_shutdown(cx),
            SnapshotData::Memory(c) => Pin::new(c).poll_shutdown(cx),
        }
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, to: SeekFrom) -> io::Result<()> {
        match self.get_mut() {
            SnapshotData::Stored(r) => r.seek(to).map(|_| ()),
            SnapshotData::Receiving(f, _) => Pin::new(f).start_seek(to),
            SnapshotData::Memory(c) => Pin::new(c).start_seek(to),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match self.get_mut() {
            SnapshotData::Stored(r) => Poll::Ready(Ok(r.pos)),
            SnapshotData::Receiving(f, _) => Pin::new(f).poll_complete(cx),
            SnapshotData::Memory(c) => Pin::new(c).poll_complete(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, StoredMembership};
    use redb::ReadableTableMetadata;
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    use super::*;
    use crate::store::Store;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("1-{index}-1"),
        }
    }

    /// 2.5 chunks of bytes that say where they are.
    fn bytes() -> Vec<u8> {
        (0..CHUNK * 5 / 2).map(|i| (i % 251) as u8).collect()
    }

    fn chunk_rows(disk: &Disk) -> u64 {
        let txn = disk.begin_read().unwrap();
        txn.open_table(CHUNKS).unwrap().len().unwrap()
    }

    #[test]
    fn saved_bytes_read_back_with_seeks_and_replace_the_older_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(&dir.path().join("etcd.redb")).unwrap();
        assert!(current(&disk).unwrap().is_none());
        let data = bytes();
        let len = save(&disk, &meta(10), |w| w.write_all(&data)).unwrap();
        assert_eq!(len, data.len() as u64);
        assert_eq!(chunk_rows(&disk), 3);

        let len2 = save(&disk, &meta(20), |w| w.write_all(&data[..100])).unwrap();
        assert_eq!(len2, 100);
        assert_eq!(chunk_rows(&disk), 1, "the older generation is gone");
        let len3 = save(&disk, &meta(30), |w| w.write_all(&data)).unwrap();
        let Some((m, Stored::Chunks { generation, len })) = current(&disk).unwrap() else {
            panic!("no current snapshot")
        };
        assert_eq!((m, generation, len), (meta(30), 3, len3));

        let mut r = ChunkReader::open(&disk, generation, len).unwrap();
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
        for at in [
            0u64,
            1,
            CHUNK as u64 - 1,
            CHUNK as u64,
            2 * CHUNK as u64 + 7,
        ] {
            r.seek(SeekFrom::Start(at)).unwrap();
            let mut b = [0u8; 10];
            let n = r.read(&mut b).unwrap();
            assert!(n > 0);
            assert_eq!(&b[..n], &data[at as usize..at as usize + n]);
        }
        assert_eq!(r.seek(SeekFrom::End(0)).unwrap(), len);
        assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 0);
    }

    #[test]
    fn read_ahead_gives_the_stored_bytes_and_reports_a_missing_or_short_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(&dir.path().join("etcd.redb")).unwrap();
        // More chunks than are read ahead: the reader thread is blocked when the reader stops.
        let data: Vec<u8> = (0..CHUNK * (READ_AHEAD + 3))
            .map(|i| (i % 253) as u8)
            .collect();
        for size in [1, CHUNK - 1, CHUNK, CHUNK + 1, data.len() - CHUNK / 2] {
            let len = save(&disk, &meta(size as u64), |w| w.write_all(&data[..size])).unwrap();
            let Some((_, Stored::Chunks { generation, .. })) = current(&disk).unwrap() else {
                panic!("no current snapshot")
            };
            let mut back = Vec::new();
            read_ahead(&disk, generation, len, |r| r.read_to_end(&mut back))
                .unwrap()
                .unwrap();
            assert_eq!(back, &data[..size], "{size} bytes");
            // A reader that stops early does not wait for the rest.
            let mut first = [0u8; 10];
            read_ahead(&disk, generation, len, |r| r.read(&mut first))
                .unwrap()
                .unwrap();
            assert_eq!(first[0], data[0]);
        }
        let Some((_, Stored::Chunks { generation, len })) = current(&disk).unwrap() else {
            panic!("no current snapshot")
        };
        let read_all = |len| {
            read_ahead(&disk, generation, len, |r| r.read_to_end(&mut Vec::new()))
                .unwrap()
                .unwrap_err()
                .to_string()
        };
        // The record says more or less than the chunks hold: the last one is short or long.
        let last = len / CHUNK as u64;
        let has = len % CHUNK as u64;
        assert_eq!(
            read_all(len + 1),
            format!(
                "snapshot chunk {last} has {has} bytes, {} expected",
                has + 1
            )
        );
        assert_eq!(
            read_all(len - 1),
            format!(
                "snapshot chunk {last} has {has} bytes, {} expected",
                has - 1
            )
        );
        // A chunk taken out of the middle.
        let txn = disk.begin_write(true).unwrap();
        txn.open_table(CHUNKS)
            .unwrap()
            .remove((generation, 1))
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(read_all(len), "snapshot chunk 1 is missing");
    }

    #[test]
    fn a_failed_save_keeps_the_snapshot_there_was() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(&dir.path().join("etcd.redb")).unwrap();
        save(&disk, &meta(10), |w| w.write_all(b"first")).unwrap();
        let err = save(&disk, &meta(20), |w| {
            w.write_all(&bytes())?;
            Err(io::Error::other("encoding failed"))
        });
        assert!(err.is_err());
        let Some((m, Stored::Chunks { generation, len })) = current(&disk).unwrap() else {
            panic!("no current snapshot")
        };
        assert_eq!(m, meta(10));
        let mut back = Vec::new();
        ChunkReader::open(&disk, generation, len)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, b"first");
        // The next save drops what the failed one left behind.
        assert!(chunk_rows(&disk) > 1);
        save(&disk, &meta(30), |w| w.write_all(b"third")).unwrap();
        assert_eq!(chunk_rows(&disk), 1);
    }

    #[test]
    fn both_formats_decode() {
        let mut store = Store::new(10);
        store.set("/a/b", Some("v".into()), None, false).unwrap();
        let snap = store.snapshot();
        let mut binary = Vec::new();
        snap.encode(&mut binary).unwrap();
        let back = decode(&mut binary.as_slice()).unwrap();
        assert_eq!(back.index, 1);
        let json = format!("{{\"store\":{}}}", serde_json::to_string(&snap).unwrap());
        let back = decode(&mut json.as_bytes()).unwrap();
        assert_eq!(back.index, 1);
        assert!(decode(&mut &b""[..]).is_err());
        assert!(decode(&mut &b"etcdsnaX"[..]).is_err());
        assert!(decode(&mut &b"{\"store\":"[..]).is_err());
    }

    #[tokio::test]
    async fn snapshot_data_reads_seeks_and_spools() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(&dir.path().join("etcd.redb")).unwrap();
        let data = bytes();
        save(&disk, &meta(1), |w| w.write_all(&data)).unwrap();
        let Some((_, Stored::Chunks { generation, len })) = current(&disk).unwrap() else {
            panic!("no current snapshot")
        };
        // As openraft sends it: seek to an offset, read a piece.
        let mut stored = SnapshotData::Stored(ChunkReader::open(&disk, generation, len).unwrap());
        assert_eq!(stored.seek(SeekFrom::End(0)).await.unwrap(), len);
        stored
            .seek(SeekFrom::Start(CHUNK as u64 - 3))
            .await
            .unwrap();
        let mut piece = vec![0u8; 3000];
        stored.read_exact(&mut piece).await.unwrap();
        assert_eq!(piece, data[CHUNK - 3..CHUNK - 3 + 3000]);
        assert!(stored.write_all(b"x").await.is_err());

        // As a follower receives it: pieces at offsets, then one reader of the whole.
        let mut rx = SnapshotData::receive_into(dir.path()).await.unwrap();
        for start in (0..data.len()).step_by(700_000) {
            let end = (start + 700_000).min(data.len());
            rx.seek(SeekFrom::Start(start as u64)).await.unwrap();
            rx.write_all(&data[start..end]).await.unwrap();
        }
        let spool = dir.path().join(RECEIVING);
        assert!(spool.exists());
        let mut r = rx.into_reader().await.unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        drop(r);
        assert!(!spool.exists(), "the spool file goes with its reader");
    }
}
