use std::path::Path;

use super::*;

/// Small segments, so a few writes cross segment boundaries.
const SMALL: Options = Options { segment_size: 4096 };

type Seen = Vec<(Pos, Vec<u8>)>;

fn open_collect(dir: &Path, opts: Options) -> Result<(Wal, Seen), WalError> {
    let mut seen = Vec::new();
    let wal = Wal::open(dir, opts, &mut |pos, p| {
        seen.push((pos, p.to_vec()));
        Ok(())
    })?;
    Ok((wal, seen))
}

fn payload(i: usize) -> Vec<u8> {
    format!("payload number {i} ")
        .repeat(1 + i % 7)
        .into_bytes()
}

const CHECKPOINT: &[u8] = b"<checkpoint>";

fn no_checkpoint() -> Vec<u8> {
    Vec::new()
}

fn checkpoint() -> Vec<u8> {
    CHECKPOINT.to_vec()
}

/// The payloads the caller wrote, from what the open saw (checkpoint prefixes removed).
fn strip(seen: &[(Pos, Vec<u8>)]) -> Vec<Vec<u8>> {
    seen.iter()
        .map(|(_, p)| p.strip_prefix(CHECKPOINT).unwrap_or(p).to_vec())
        .collect()
}

fn segment_path(dir: &Path, no: u64) -> std::path::PathBuf {
    dir.join(segment::file_name(no))
}

#[test]
fn writes_survive_reopen_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut positions = Vec::new();
    {
        let (mut wal, seen) = open_collect(&dir, SMALL).unwrap();
        assert!(seen.is_empty());
        for i in 0..50 {
            positions.push(wal.write(&payload(i), &no_checkpoint).unwrap());
        }
        let reader = wal.reader();
        for (i, pos) in positions.iter().enumerate() {
            assert_eq!(reader.read(*pos, payload(i).len()).unwrap(), payload(i));
        }
    }
    let (mut wal, seen) = open_collect(&dir, SMALL).unwrap();
    assert_eq!(seen.len(), 50);
    for (i, (pos, p)) in seen.iter().enumerate() {
        assert_eq!(p, &payload(i));
        assert_eq!(*pos, positions[i]);
    }
    // Appending goes on after the last frame.
    let pos = wal.write(b"after reopen", &no_checkpoint).unwrap();
    drop(wal);
    let (_, seen) = open_collect(&dir, SMALL).unwrap();
    assert_eq!(seen.len(), 51);
    assert_eq!(seen[50], (pos, b"after reopen".to_vec()));
}

#[test]
fn segments_rotate_seal_and_carry_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let written: Vec<Vec<u8>> = (0..120).map(payload).collect();
    {
        let (mut wal, _) = open_collect(&dir, SMALL).unwrap();
        let reader = wal.reader();
        for p in &written {
            let pos = wal.write(p, &checkpoint).unwrap();
            assert_eq!(reader.read(pos, p.len()).unwrap(), *p);
        }
        assert!(wal.segments().len() >= 4, "{:?}", wal.segments());
    }
    let (wal, seen) = open_collect(&dir, SMALL).unwrap();
    assert_eq!(strip(&seen), written);
    // Every segment after the first starts with the checkpoint.
    let mut first_in_segment = std::collections::BTreeMap::new();
    for (pos, p) in &seen {
        first_in_segment.entry(pos.segment).or_insert(p.clone());
    }
    for (no, p) in &first_in_segment {
        assert_eq!(*no > 0, p.starts_with(CHECKPOINT), "segment {no}");
    }
    // Removing a prefix keeps the rest readable and openable.
    let segments = wal.segments();
    let mut wal = wal;
    wal.remove_segments_below(segments[2]);
    assert_eq!(wal.segments(), segments[2..].to_vec());
    drop(wal);
    let (_, seen) = open_collect(&dir, SMALL).unwrap();
    assert!(seen.iter().all(|(pos, _)| pos.segment >= segments[2]));
    assert_eq!(strip(&seen), written[written.len() - seen.len()..].to_vec());
}

#[test]
fn a_torn_last_write_is_cut_off_at_every_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let last;
    {
        let (mut wal, _) = open_collect(&dir, SMALL).unwrap();
        for i in 0..3 {
            wal.write(&payload(i), &no_checkpoint).unwrap();
        }
        last = wal.write(&[0xab; 700], &no_checkpoint).unwrap();
    }
    let path = segment_path(&dir, 0);
    let pristine = std::fs::read(&path).unwrap();
    let frame_at = last.offset - frame::HEADER_LEN as u64;
    let frame_end = frame_at + frame::frame_len(700);
    for cut in frame_at..frame_end {
        for truncate in [false, true] {
            let mut data = pristine.clone();
            if truncate {
                data.truncate(cut as usize);
            } else {
                data[cut as usize..frame_end as usize].fill(0);
            }
            std::fs::write(&path, &data).unwrap();
            let (mut wal, seen) = open_collect(&dir, SMALL)
                .unwrap_or_else(|e| panic!("cut at {cut} (truncate: {truncate}): {e}"));
            assert_eq!(strip(&seen), (0..3).map(payload).collect::<Vec<_>>());
            // The log goes on where the torn frame was, and that survives a reopen.
            let pos = wal.write(b"next", &no_checkpoint).unwrap();
            assert_eq!(pos.offset, frame_at + frame::HEADER_LEN as u64);
            drop(wal);
            let (_, seen) = open_collect(&dir, SMALL).unwrap();
            assert_eq!(seen.len(), 4);
            assert_eq!(seen[3].1, b"next");
        }
    }
}

#[test]
fn damage_before_the_tail_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut positions = Vec::new();
    {
        let (mut wal, _) = open_collect(&dir, SMALL).unwrap();
        for i in 0..10 {
            positions.push(wal.write(&payload(i), &no_checkpoint).unwrap());
        }
    }
    let path = segment_path(&dir, 0);
    let pristine = std::fs::read(&path).unwrap();
    for (i, pos) in positions.iter().enumerate().take(9) {
        for delta in [-20i64, 0, 5] {
            let mut data = pristine.clone();
            data[(pos.offset as i64 + delta) as usize] ^= 0x20;
            std::fs::write(&path, &data).unwrap();
            let err = open_collect(&dir, SMALL).err().unwrap();
            let msg = err.to_string();
            assert!(matches!(err, WalError::Damaged { .. }), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(
                msg.contains(&format!("offset {}", pos.offset - frame::HEADER_LEN as u64)),
                "frame {i}: {msg}"
            );
            assert!(!msg.contains('\n'));
        }
    }
    // The last frame: a flipped byte is not a torn write either.
    let mut data = pristine.clone();
    data[positions[9].offset as usize + 3] ^= 0x20;
    std::fs::write(&path, &data).unwrap();
    let err = open_collect(&dir, SMALL).err().unwrap();
    assert!(err.to_string().contains("not a torn write"), "{err}");
}

#[test]
fn missing_or_cut_segments_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    {
        let (mut wal, _) = open_collect(&dir, SMALL).unwrap();
        for i in 0..150 {
            wal.write(&payload(i), &checkpoint).unwrap();
        }
        assert!(wal.segments().len() >= 4);
    }
    let n = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("wal".as_ref()))
        .count() as u64;
    let saved: Vec<Vec<u8>> = (0..n)
        .map(|no| std::fs::read(segment_path(&dir, no)).unwrap())
        .collect();
    let restore = || {
        for (no, d) in saved.iter().enumerate() {
            std::fs::write(segment_path(&dir, no as u64), d).unwrap();
        }
    };

    // A segment in the middle is gone.
    std::fs::remove_file(segment_path(&dir, 1)).unwrap();
    let err = open_collect(&dir, SMALL).err().unwrap().to_string();
    assert!(
        err.contains(&segment::file_name(1)) && err.contains("missing"),
        "{err}"
    );
    restore();

    // The last segment is gone (the one before it is sealed).
    std::fs::remove_file(segment_path(&dir, n - 1)).unwrap();
    let err = open_collect(&dir, SMALL).err().unwrap().to_string();
    assert!(
        err.contains(&segment::file_name(n - 1)) && err.contains("missing"),
        "{err}"
    );
    restore();

    // A sealed segment cut short.
    let short = &saved[1][..saved[1].len() / 2];
    std::fs::write(segment_path(&dir, 1), short).unwrap();
    let err = open_collect(&dir, SMALL).err().unwrap().to_string();
    assert!(err.contains(&segment::file_name(1)), "{err}");
    restore();

    // A header that is not ours.
    let mut bad = saved[2].clone();
    bad[0] = b'X';
    std::fs::write(segment_path(&dir, 2), &bad).unwrap();
    let err = open_collect(&dir, SMALL).err().unwrap().to_string();
    assert!(err.contains("bad magic"), "{err}");
    restore();

    let (_, seen) = open_collect(&dir, SMALL).unwrap();
    assert_eq!(strip(&seen), (0..150).map(payload).collect::<Vec<_>>());
}

#[test]
fn a_rotation_cut_short_leaves_a_usable_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    {
        let (mut wal, _) = open_collect(&dir, SMALL).unwrap();
        for i in 0..3 {
            wal.write(&payload(i), &checkpoint).unwrap();
        }
        assert_eq!(wal.segments(), vec![0]);
    }
    // The next segment was renamed into place, but the seal never reached the disk.
    let (tmp_path, _, _) = segment::prepare(
        &dir,
        1,
        SMALL.segment_size,
        segment::Fill::Zeros(&Default::default()),
    )
    .unwrap();
    std::fs::rename(tmp_path, segment_path(&dir, 1)).unwrap();
    let (mut wal, seen) = open_collect(&dir, SMALL).unwrap();
    assert_eq!(strip(&seen), (0..3).map(payload).collect::<Vec<_>>());
    assert_eq!(wal.segments(), vec![0]);
    assert!(!segment_path(&dir, 1).exists());
    for i in 3..40 {
        wal.write(&payload(i), &checkpoint).unwrap();
    }
    drop(wal);
    let (_, seen) = open_collect(&dir, SMALL).unwrap();
    assert_eq!(strip(&seen), (0..40).map(payload).collect::<Vec<_>>());
}

#[test]
fn a_failed_write_stops_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (mut wal, _) = open_collect(&dir, SMALL).unwrap();
    wal.write(b"good", &no_checkpoint).unwrap();
    wal.inject_failure = Some(io::ErrorKind::Other);
    let err = wal.write(b"lost", &no_checkpoint).unwrap_err();
    assert!(matches!(err, WalError::Io { .. }), "{err}");
    // Every later write fails with the first error, even though the disk is "fine" again.
    let again = wal.write(b"later", &no_checkpoint).unwrap_err();
    assert!(matches!(again, WalError::Stopped(_)), "{again}");
    assert!(again.to_string().contains(&err.to_string()), "{again}");
}

#[test]
fn stray_files_and_an_unused_spare_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    {
        let (mut wal, _) = open_collect(&dir, SMALL).unwrap();
        wal.write(b"x", &no_checkpoint).unwrap();
    }
    // The spare prepared ahead of need is removed on open, other files are left alone.
    std::fs::write(dir.join("notes.txt"), b"hi").unwrap();
    let (_, seen) = open_collect(&dir, SMALL).unwrap();
    assert_eq!(seen.len(), 1);
    assert!(dir.join("notes.txt").exists());
}

/// What deferred syncs reported, in order.
type Reports = Arc<std::sync::Mutex<Vec<Result<(), String>>>>;

/// Records what deferred syncs report, in order.
fn recorder() -> (Reports, impl Fn() -> Synced) {
    let seen = Reports::default();
    let s = seen.clone();
    let make = move || -> Synced {
        let s = s.clone();
        Box::new(move |res| s.lock().unwrap().push(res))
    };
    (seen, make)
}

#[test]
fn deferred_syncs_finish_before_the_next_write_and_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (mut wal, _) = open_collect(&dir, SMALL).unwrap();
    let (seen, synced) = recorder();
    // Deferred and plain writes mixed, over several segments (rotations seal a segment
    // whose last frame's sync was deferred).
    for i in 0..150 {
        if i % 3 == 2 {
            wal.write(&payload(i), &checkpoint).unwrap();
        } else {
            wal.write_deferred(&payload(i), &checkpoint, synced())
                .unwrap();
        }
        // Every deferred sync before this write has reported by now.
        let reported = seen.lock().unwrap().len();
        let deferred_before = (0..i).filter(|j| j % 3 != 2).count();
        assert!(
            reported >= deferred_before,
            "write {i}: {reported} < {deferred_before}"
        );
    }
    assert!(wal.segments().len() > 2, "{:?}", wal.segments());
    wal.settle().unwrap();
    assert_eq!(seen.lock().unwrap().len(), 100);
    assert!(seen.lock().unwrap().iter().all(|r| r.is_ok()));
    drop(wal);
    let (_, seen) = open_collect(&dir, SMALL).unwrap();
    assert_eq!(strip(&seen), (0..150).map(payload).collect::<Vec<_>>());
}

#[test]
fn a_failed_deferred_sync_stops_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (mut wal, _) = open_collect(&dir, SMALL).unwrap();
    let (seen, synced) = recorder();
    wal.write_deferred(b"good", &no_checkpoint, synced())
        .unwrap();
    wal.inject_failure = Some(io::ErrorKind::Other);
    // The write itself succeeds; its sync, on the sync thread, fails.
    wal.write_deferred(b"unsynced", &no_checkpoint, synced())
        .unwrap();
    let err = wal.write(b"next", &no_checkpoint).unwrap_err();
    assert!(matches!(err, WalError::Io { .. }), "{err}");
    let reports = seen.lock().unwrap().clone();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(reports[0].is_ok() && reports[1].is_err(), "{reports:?}");
    // Nothing is written after it.
    let again = wal.write(b"later", &no_checkpoint).unwrap_err();
    assert!(matches!(again, WalError::Stopped(_)), "{again}");
    let again = wal
        .write_deferred(b"later", &no_checkpoint, synced())
        .unwrap_err();
    assert!(matches!(again, WalError::Stopped(_)), "{again}");
}

/// Frames of every size, small ones and ones larger than a zero-fill chunk, written across
/// many chunk boundaries of a first segment (only allocated), with a reopen in the middle
/// and deferred syncs: the zeros written ahead never land on a frame.
#[test]
fn zeros_written_ahead_never_cover_a_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = Options {
        segment_size: 8 * ZERO_AHEAD,
    };
    let sizes = |i: usize| match i % 5 {
        0 => ZERO_AHEAD as usize + 1000 + i,
        1 => 4000 + i,
        _ => 10 + i,
    };
    let body = |i: usize| {
        let mut p = format!("frame {i}:").into_bytes();
        p.resize(sizes(i), b'a' + (i % 26) as u8);
        p
    };
    let mut written = Vec::new();
    {
        let (mut wal, _) = open_collect(&dir, opts).unwrap();
        for i in 0..12 {
            written.push((wal.write(&body(i), &checkpoint).unwrap(), body(i)));
        }
    }
    // Reopened: it only knows the space up to the last frame is written.
    let (mut wal, seen) = open_collect(&dir, opts).unwrap();
    assert_eq!(
        strip(&seen),
        written.iter().map(|w| w.1.clone()).collect::<Vec<_>>()
    );
    let (reports, synced) = recorder();
    for i in 12..60 {
        let pos = if i % 2 == 0 {
            wal.write_deferred(&body(i), &checkpoint, synced()).unwrap()
        } else {
            wal.write(&body(i), &checkpoint).unwrap()
        };
        written.push((pos, body(i)));
    }
    assert!(
        wal.active_segment() >= 1,
        "the writes should have crossed into a new segment"
    );
    let reader = wal.reader();
    wal.settle().unwrap();
    assert!(reports.lock().unwrap().iter().all(Result::is_ok));
    for (pos, p) in &written {
        assert_eq!(&reader.read(*pos, p.len()).unwrap(), p);
    }
    drop(wal);
    let (_, seen) = open_collect(&dir, opts).unwrap();
    assert_eq!(
        strip(&seen),
        written.iter().map(|w| w.1.clone()).collect::<Vec<_>>()
    );
}

/// `(offset, length, unwritten)` of a file's extents, from the FIEMAP ioctl.
fn extents(file: &File) -> Vec<(u64, u64, bool)> {
    use std::os::fd::AsRawFd;
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_FLAG_SYNC: u32 = 1;
    const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
    const MAX: usize = 64;
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Map {
        start: u64,
        length: u64,
        flags: u32,
        mapped: u32,
        count: u32,
        reserved: u32,
        extents: [Extent; MAX],
    }
    let mut map = Map {
        start: 0,
        length: u64::MAX,
        flags: FIEMAP_FLAG_SYNC,
        mapped: 0,
        count: MAX as u32,
        reserved: 0,
        extents: [Extent::default(); MAX],
    };
    // SAFETY: the kernel writes at most `count` extents into the buffer we own.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map as *mut Map) };
    assert_eq!(rc, 0, "FIEMAP: {}", io::Error::last_os_error());
    map.extents[..map.mapped as usize]
        .iter()
        .map(|e| (e.logical, e.length, e.flags & FIEMAP_EXTENT_UNWRITTEN != 0))
        .collect()
}

/// Is every byte of `from..to` in a written extent (`Some(true)`), in an unwritten one
/// (`Some(false)`), or mixed / unmapped (`None`)?
fn written(exts: &[(u64, u64, bool)], from: u64, to: u64) -> Option<bool> {
    let mut at = from;
    let mut kind = None;
    for &(start, len, unwritten) in exts {
        if start + len <= at || start >= to {
            continue;
        }
        if start > at || kind.is_some_and(|k| k == unwritten) {
            return None;
        }
        kind = Some(!unwritten);
        at = start + len;
    }
    if at < to { None } else { kind }
}

/// The first segment is only allocated (instant to make), so the log writes zeros ahead of
/// its frames: every frame then sits in space already written, and its `fdatasync` has no
/// extent change to write. Checked on the file system the build runs on (it must be one
/// that allocates space as unwritten extents, as ext4 and XFS do).
#[test]
fn frames_of_an_allocated_segment_land_in_written_space() {
    let tmp = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let dir = tmp.path().join("wal");
    let opts = Options {
        segment_size: 8 * ZERO_AHEAD,
    };
    let (mut wal, _) = open_collect(&dir, opts).unwrap();
    let seg = File::open(segment_path(&dir, 0)).unwrap();
    assert_eq!(
        written(&extents(&seg), ZERO_AHEAD, opts.segment_size),
        Some(false),
        "a new first segment should be allocated, not written: {:?}",
        extents(&seg)
    );
    for i in 0..20 {
        wal.write(&payload(i), &no_checkpoint).unwrap();
    }
    let exts = extents(&seg);
    assert_eq!(written(&exts, 0, ZERO_AHEAD), Some(true), "{exts:?}");
    assert_eq!(
        written(&exts, ZERO_AHEAD, opts.segment_size),
        Some(false),
        "{exts:?}"
    );
    // A frame larger than a chunk: the zeros reach past its end, to a chunk boundary.
    let big = vec![7u8; ZERO_AHEAD as usize + 10];
    let pos = wal.write(&big, &no_checkpoint).unwrap();
    let end = pos.offset + big.len() as u64;
    let exts = extents(&seg);
    let to = end.div_ceil(ZERO_AHEAD) * ZERO_AHEAD;
    assert_eq!(written(&exts, 0, to), Some(true), "{exts:?}");
    assert_eq!(
        written(&exts, to, opts.segment_size),
        Some(false),
        "{exts:?}"
    );
}
