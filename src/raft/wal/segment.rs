//! Segment files: their names, their header, making a new one, and reading one back.
//!
//! A segment is a file `<number as 16 hex digits>.wal` of a fixed size, allocated in full
//! when it is made (so an append never grows the file and the space past the written frames
//! reads as zeros). It starts with a [`HEADER_LEN`]-byte header (magic, version, number, a
//! random salt for the frame header checksums); frames follow (see `frame.rs`).
//!
//! [`scan`] reads the frames of one segment and decides how it ends:
//! * a seal frame: the segment is complete and the next one continues the log;
//! * zeros: the log ends here (only allowed in the last segment);
//! * a torn frame (last segment only): the frame being written when the process died. It is
//!   recognised by what a crash can leave behind on space that was zero - a header that is
//!   whole or all zero, and a frame that is cut short or has a zero sector inside - with no
//!   valid frame after it. It was never synced, so never acknowledged, and is cut off;
//! * anything else is damage, reported with the offset, never skipped.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::frame::{self, Kind, Probe, SECTOR};

/// Bytes before the first frame.
pub const HEADER_LEN: u64 = 512;
const MAGIC: &[u8; 8] = b"ETCD-WAL";
const VERSION: u32 = 1;

/// The file name of segment `no`.
pub fn file_name(no: u64) -> String {
    format!("{no:016x}.wal")
}

/// The segment number of a file name, if it is a segment's.
pub fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub no: u64,
    pub salt: u64,
}

impl Header {
    fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..20].copy_from_slice(&self.no.to_le_bytes());
        b[20..28].copy_from_slice(&self.salt.to_le_bytes());
        let crc = crc32fast::hash(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header; the error says what is wrong with it.
    pub fn decode(bytes: &[u8]) -> Result<Header, String> {
        if bytes.len() < 32 {
            return Err("shorter than a segment header".into());
        }
        if &bytes[..8] != MAGIC {
            return Err("not a log segment (bad magic)".into());
        }
        let crc = u32::from_le_bytes(bytes[28..32].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&bytes[..28]) {
            return Err("segment header checksum mismatch".into());
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!(
                "segment format version {version} (this build reads {VERSION})"
            ));
        }
        Ok(Header {
            no: u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")),
            salt: u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes")),
        })
    }
}

/// How a new segment's space is reserved.
#[derive(Debug, Clone, Copy)]
pub enum Fill<'a> {
    /// Write zeros over all of it (and sync), a piece at a time: later appends then only
    /// overwrite data, and their `fdatasync` has no extent changes to journal (measured
    /// here: a 25 KB append syncs in ~120 us instead of ~200 us). For segments made ahead of
    /// need, in the background; stops (with an error) once `cancel` is set.
    Zeros(&'a std::sync::atomic::AtomicBool),
    /// Ask the file system for the space (`fallocate`): instant, for a segment needed now.
    Allocate,
}

/// Makes segment `no` under a temporary name (`<name>.tmp`), `size` bytes of zeros, with its
/// header written and synced. Returns the temporary path, the open file and its salt; the
/// caller renames it into place when the log moves on to it.
pub fn prepare(dir: &Path, no: u64, size: u64, fill: Fill<'_>) -> io::Result<(PathBuf, File, u64)> {
    let tmp = dir.join(format!("{}.tmp", file_name(no)));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    match fill {
        Fill::Allocate => allocate(&file, size)?,
        Fill::Zeros(cancel) => {
            // Synced piece by piece, so the fill never holds a long queue of writes in front
            // of the appends' syncs.
            const PIECE: u64 = 1 << 20;
            let zeros = vec![0u8; PIECE.min(size) as usize];
            let mut at = 0;
            while at < size {
                if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(io::Error::other("cancelled"));
                }
                let n = PIECE.min(size - at) as usize;
                file.write_all_at(&zeros[..n], at)?;
                file.sync_data()?;
                at += n as u64;
            }
        }
    }
    let header = Header {
        no,
        salt: random_u64(),
    };
    file.write_all_at(&header.encode(), 0)?;
    file.sync_all()?;
    Ok((tmp, file, header.salt))
}

/// Reserve `size` bytes for the file (extents that read as zeros), or at least make the file
/// that long where the file system cannot allocate ahead.
fn allocate(file: &File, size: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(size).map_err(io::Error::other)?;
    // SAFETY: fallocate only reads its integer arguments; the descriptor is open and ours.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.set_len(size),
        _ => Err(err),
    }
}

/// A random number for a segment's salt (not secret: it only has to differ from what a
/// client could put into a value).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// How a segment ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A seal frame (sequence number `seq`) ends at `at`: the next segment continues the log.
    Sealed { at: u64, seq: u64 },
    /// Nothing but zeros from `at` on.
    Open { at: u64 },
    /// A frame torn by a crash starts at `at`; bytes up to `dirty_to` are left from it.
    Torn { at: u64, dirty_to: u64 },
}

impl End {
    /// Where the next frame may be written.
    pub fn at(&self) -> u64 {
        match *self {
            End::Sealed { at, .. } | End::Open { at } | End::Torn { at, .. } => at,
        }
    }
}

/// What [`scan`] calls with each data frame: the file offset of its payload and the payload.
pub type Visit<'a> = dyn FnMut(u64, &[u8]) -> Result<(), String> + 'a;

/// Damage found by [`scan`]: a one-line reason and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub why: String,
}

/// Reads the frames of one segment (`data` is the whole file).
///
/// `next_seq` is the sequence number the first frame must carry (`None`: any, for the first
/// segment of the log). `last` says whether this is the log's last segment: only there may
/// the log end without a seal or with a torn frame. `visit` gets each data frame's payload
/// and the file offset of its first byte, in order.
///
/// Returns how the segment ends and the sequence number of its last frame (if any).
pub fn scan(
    data: &[u8],
    salt: u64,
    mut next_seq: Option<u64>,
    last: bool,
    visit: &mut Visit<'_>,
) -> Result<(End, Option<u64>), Damage> {
    let len = data.len() as u64;
    let mut at = HEADER_LEN;
    let mut last_seq = None;
    loop {
        at = frame::frame_start(at);
        if at + frame::HEADER_LEN as u64 > len {
            return finish(data, at, last, last_seq);
        }
        let probe = frame::probe(&data[at as usize..], salt);
        let header = match probe {
            Probe::Zero => return finish(data, at, last, last_seq),
            Probe::Garbage => return damaged(data, at, salt, last, last_seq, probe),
            Probe::Header(h) => h,
        };
        let end = at + frame::frame_len(header.len as usize);
        let whole = end <= len && frame::body_ok(&data[at as usize..end as usize], &header);
        if !whole || next_seq.is_some_and(|s| s != header.seq) {
            return damaged(data, at, salt, last, last_seq, probe);
        }
        next_seq = Some(header.seq + 1);
        last_seq = Some(header.seq);
        let payload = frame::payload(&data[at as usize..], &header);
        match header.kind {
            Kind::Seal => {
                // Nothing may follow a seal.
                if let Some(p) = first_nonzero(data, end) {
                    return Err(Damage {
                        offset: p,
                        why: "data after the seal of the segment".into(),
                    });
                }
                return Ok((
                    End::Sealed {
                        at: end,
                        seq: header.seq,
                    },
                    last_seq,
                ));
            }
            Kind::Data => {
                let payload_at = at + frame::HEADER_LEN as u64;
                visit(payload_at, payload).map_err(|why| Damage { offset: at, why })?;
            }
        }
        at = end;
    }
}

/// The frames ended at `at` with a zero header (or the end of the file).
fn finish(
    data: &[u8],
    at: u64,
    last: bool,
    last_seq: Option<u64>,
) -> Result<(End, Option<u64>), Damage> {
    match first_nonzero(data, at) {
        None if last => Ok((End::Open { at }, last_seq)),
        None => Err(Damage {
            offset: at,
            why: "the segment ends without a seal (cut short?)".into(),
        }),
        Some(_) => damaged(data, at, 0, last, last_seq, Probe::Zero),
    }
}

/// The frame at `at` is not whole. Decide whether it is a torn last write (cut off) or damage.
fn damaged(
    data: &[u8],
    at: u64,
    salt: u64,
    last: bool,
    last_seq: Option<u64>,
    probe: Probe,
) -> Result<(End, Option<u64>), Damage> {
    let bad = |why: &str| {
        Err(Damage {
            offset: at,
            why: why.to_string(),
        })
    };
    if !last {
        return bad("damaged frame (checksum mismatch) in a sealed segment");
    }
    if let Some(p) = valid_frame_after(data, at, salt, last_seq) {
        return Err(Damage {
            offset: at,
            why: format!("damaged frame followed by a valid one at offset {p}"),
        });
    }
    let len = data.len() as u64;
    let dirty_to = last_nonzero_end(data, at);
    let torn = match probe {
        // The header's sector was never written; what follows is the rest of that write.
        Probe::Zero => true,
        // A disk writes a header whole or not at all (it never straddles a sector), so a bad
        // header is damage - unless the write was cut inside the header itself, which leaves
        // nothing after it (a copy cut short, say).
        Probe::Garbage => dirty_to <= at + frame::HEADER_LEN as u64,
        Probe::Header(h) => {
            let end = at + frame::frame_len(h.len as usize);
            if last_seq.is_some_and(|s| s + 1 != h.seq) {
                false
            } else if end > len {
                true
            } else {
                // A crash leaves a part of the frame unwritten, so zero: the last byte (the
                // trailer has none) or a whole sector's share of the frame.
                let frame_bytes = &data[at as usize..end as usize];
                frame_bytes.last() == Some(&0) || has_zero_sector(frame_bytes, at)
            }
        }
    };
    if torn {
        Ok((End::Torn { at, dirty_to }, last_seq))
    } else {
        bad("damaged frame (checksum mismatch) that is not a torn write")
    }
}

/// Is some sector's share of the frame (starting at file offset `at`) all zeros?
fn has_zero_sector(frame_bytes: &[u8], at: u64) -> bool {
    let mut i = 0usize;
    while i < frame_bytes.len() {
        let sector_end = ((at + i as u64) / SECTOR + 1) * SECTOR;
        let j = ((sector_end - at) as usize).min(frame_bytes.len());
        if frame_bytes[i..j].iter().all(|&b| b == 0) {
            return true;
        }
        i = j;
    }
    false
}

/// The offset of a whole, valid frame somewhere after `at` (8-byte steps), if there is one.
fn valid_frame_after(data: &[u8], at: u64, salt: u64, last_seq: Option<u64>) -> Option<u64> {
    let len = data.len() as u64;
    let mut p = at + 8;
    while p + frame::HEADER_LEN as u64 <= len {
        let i = p as usize;
        if data[i..i + 8] != [0; 8]
            && let Probe::Header(h) = frame::probe(&data[i..], salt)
            && last_seq.is_none_or(|s| h.seq > s)
        {
            let end = p + frame::frame_len(h.len as usize);
            if end <= len && frame::body_ok(&data[i..end as usize], &h) {
                return Some(p);
            }
        }
        p += 8;
    }
    None
}

fn first_nonzero(data: &[u8], from: u64) -> Option<u64> {
    let from = (from as usize).min(data.len());
    data[from..]
        .iter()
        .position(|&b| b != 0)
        .map(|p| (from + p) as u64)
}

fn last_nonzero_end(data: &[u8], from: u64) -> u64 {
    let from = (from as usize).min(data.len());
    data[from..]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(from as u64, |p| (from + p + 1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: u64 = 0x5eed;

    /// A segment image with frames holding `payloads` (the last one a seal when `seal`).
    fn image(payloads: &[&[u8]], first_seq: u64, seal: bool, size: usize) -> (Vec<u8>, Vec<u64>) {
        let mut data = vec![0u8; size];
        let h = Header { no: 3, salt: SALT }.encode();
        data[..h.len()].copy_from_slice(&h);
        let mut at = HEADER_LEN;
        let mut starts = Vec::new();
        for (seq, (i, p)) in (first_seq..).zip(payloads.iter().enumerate()) {
            at = frame::frame_start(at);
            starts.push(at);
            let kind = if seal && i + 1 == payloads.len() {
                Kind::Seal
            } else {
                Kind::Data
            };
            let mut buf = Vec::new();
            frame::encode(&mut buf, kind, seq, SALT, p);
            data[at as usize..at as usize + buf.len()].copy_from_slice(&buf);
            at += buf.len() as u64;
        }
        (data, starts)
    }

    fn payloads(data: &[u8], last: bool) -> Result<(Vec<Vec<u8>>, End), Damage> {
        let mut out = Vec::new();
        let (end, _) = scan(data, SALT, None, last, &mut |_, p| {
            out.push(p.to_vec());
            Ok(())
        })?;
        Ok((out, end))
    }

    #[test]
    fn header_round_trip_and_names() {
        let h = Header { no: 0xab, salt: 7 };
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        let mut bad = h.encode();
        bad[15] ^= 1;
        assert!(Header::decode(&bad).unwrap_err().contains("checksum"));
        assert_eq!(file_name(0xab), "00000000000000ab.wal");
        assert_eq!(parse_name("00000000000000ab.wal"), Some(0xab));
        assert_eq!(parse_name("ab.wal"), None);
        assert_eq!(parse_name("00000000000000ab.wal.tmp"), None);
    }

    #[test]
    fn reads_frames_and_sees_the_end() {
        let (data, _) = image(&[b"one", b"two", &[9u8; 700]], 5, false, 8192);
        let (got, end) = payloads(&data, true).unwrap();
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec(), vec![9u8; 700]]);
        assert!(matches!(end, End::Open { .. }));

        // Not the last segment: it must end with a seal.
        let err = payloads(&data, false).unwrap_err();
        assert!(err.why.contains("without a seal"), "{err:?}");
        let (sealed, _) = image(&[b"one", &7u64.to_le_bytes()], 0, true, 4096);
        let (got, end) = payloads(&sealed, false).unwrap();
        assert_eq!(got, vec![b"one".to_vec()]);
        assert!(matches!(end, End::Sealed { seq: 1, .. }));
    }

    #[test]
    fn a_cut_at_any_byte_of_the_last_frame_is_a_torn_tail() {
        let (data, starts) = image(&[b"first", &[1u8; 1500], &[2u8; 900]], 0, false, 8192);
        let at = starts[2];
        let end = at + frame::frame_len(900);
        for cut in at..end {
            // Zeros from `cut` on (the crash wrote the frame up to there)...
            let mut zeroed = data.clone();
            zeroed[cut as usize..end as usize].fill(0);
            let (got, e) = payloads(&zeroed, true).unwrap();
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(e.at(), at, "cut at {cut}");
            // ...or a file that ends at `cut`.
            let (got, e) = payloads(&data[..cut as usize], true).unwrap();
            assert_eq!(got.len(), 2, "short file at {cut}");
            assert_eq!(e.at(), at);
        }
    }

    #[test]
    fn a_sector_missing_inside_the_last_frame_is_a_torn_tail() {
        let (data, starts) = image(&[b"a", &[3u8; 3000]], 0, false, 8192);
        let mut torn = data.clone();
        // The sector holding bytes 1024..1536 never reached the disk.
        torn[1024..1536].fill(0);
        assert!(starts[1] < 1024);
        let (got, end) = payloads(&torn, true).unwrap();
        assert_eq!(got, vec![b"a".to_vec()]);
        assert_eq!(
            end,
            End::Torn {
                at: starts[1],
                dirty_to: starts[1] + frame::frame_len(3000)
            }
        );
    }

    #[test]
    fn a_flipped_byte_is_damage_unless_nothing_was_acknowledged_after_it() {
        let (data, starts) = image(&[b"one", &[5u8; 600], b"three"], 0, false, 8192);
        // In an earlier frame: a valid frame follows, so this is damage, never a cut.
        for i in [starts[1] + 3, starts[1] + 40, starts[1] + 300] {
            let mut bad = data.clone();
            bad[i as usize] ^= 0x04;
            let err = payloads(&bad, true).unwrap_err();
            assert_eq!(err.offset, starts[1], "flip at {i}");
        }
        // In the last frame, with no zero part: a damaged frame, not a torn write.
        let mut bad = data.clone();
        bad[starts[2] as usize + 26] ^= 0x04;
        let err = payloads(&bad, true).unwrap_err();
        assert!(err.why.contains("not a torn write"), "{err:?}");
        // A sealed segment never has a torn tail.
        let (sealed, s) = image(&[b"one", b"two", &1u64.to_le_bytes()], 0, true, 4096);
        let mut bad = sealed.clone();
        bad[s[1] as usize + 25] ^= 1;
        assert!(payloads(&bad, false).is_err());
    }

    #[test]
    fn garbage_after_the_last_frame_is_reported() {
        let (mut data, _) = image(&[b"one"], 0, false, 8192);
        data[5000] = 1;
        // A zero header with bytes after it: the rest of a torn write, cut off.
        let (got, end) = payloads(&data, true).unwrap();
        assert_eq!(got.len(), 1);
        assert!(matches!(end, End::Torn { dirty_to: 5001, .. }));
        // A sealed segment with data after the seal is damaged.
        let (mut sealed, _) = image(&[b"one", &1u64.to_le_bytes()], 0, true, 4096);
        sealed[3000] = 1;
        assert!(payloads(&sealed, false).is_err());
    }

    #[test]
    fn sequence_numbers_must_continue() {
        let (data, _) = image(&[b"one", b"two"], 10, false, 4096);
        let mut n = 0;
        let r = scan(&data, SALT, Some(10), true, &mut |_, _| {
            n += 1;
            Ok(())
        });
        assert_eq!(r.unwrap().1, Some(11));
        let r = scan(&data, SALT, Some(11), false, &mut |_, _| Ok(()));
        assert!(r.is_err());
    }
}
