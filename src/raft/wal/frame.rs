//! One frame: the unit the log writes, syncs and checks.
//!
//! ```text
//! offset  size  field
//!      0     4  payload length (u32 LE)
//!      4     1  kind: 1 = data, 2 = seal (the segment ends here; the next one follows)
//!      5     3  zero
//!      8     8  sequence number (u64 LE): frames are numbered 0, 1, 2 ... across segments
//!     16     4  CRC-32 of the payload
//!     20     4  CRC-32 of the segment's salt and bytes 0..20 (the header checksum)
//!     24     n  payload, then zeros up to a multiple of 8
//!   24+n'    8  trailer: eight 0xE7 bytes
//! ```
//!
//! Why each part is there:
//! * The header has its own checksum, so a header can be trusted (its length used) before the
//!   payload is read, and a scan can test any position cheaply for "is a frame here?".
//! * The salt (random per segment) in the header checksum means bytes inside a payload - a
//!   value a client wrote - can never pass for a frame header.
//! * A header never straddles a 512-byte sector ([`frame_start`]): disks write a sector
//!   whole or not at all, so a torn write leaves a header either intact or all zeros.
//! * The trailer has no zero byte: a frame cut short at any byte (a crash mid-write on space
//!   that was zero before) always loses at least its last byte, which is then zero.

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 24;
/// Bytes of the trailer.
pub const TRAILER_LEN: usize = 8;
/// The trailer's byte value (any non-zero byte would do).
pub const TRAILER_BYTE: u8 = 0xE7;
/// The unit a disk writes atomically (at least).
pub const SECTOR: u64 = 512;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Records of the log store.
    Data = 1,
    /// The end of a segment: the segment numbered one higher continues the log.
    Seal = 2,
}

/// A header that passed its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub kind: Kind,
    pub seq: u64,
    pub payload_crc: u32,
}

/// What the 24 bytes at a frame position are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// All zero: nothing was ever written here.
    Zero,
    /// Not zero, and not a valid header.
    Garbage,
    Header(Header),
}

/// `n` rounded up to a multiple of 8.
pub fn align8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// Where a frame that would start at `offset` starts: `offset` itself (a multiple of 8), or
/// the next sector boundary when the header would cross one.
pub fn frame_start(offset: u64) -> u64 {
    let offset = align8(offset);
    let in_sector = offset % SECTOR;
    if in_sector + HEADER_LEN as u64 > SECTOR {
        offset - in_sector + SECTOR
    } else {
        offset
    }
}

/// Total bytes of a frame with a payload of `payload_len` bytes.
pub fn frame_len(payload_len: usize) -> u64 {
    HEADER_LEN as u64 + align8(payload_len as u64) + TRAILER_LEN as u64
}

fn header_crc(salt: u64, first20: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(first20);
    h.finalize()
}

/// Appends a whole frame (header, payload, padding, trailer) to `out`.
pub fn encode(out: &mut Vec<u8>, kind: Kind, seq: u64, salt: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("frame payloads are bounded far below 4 GiB");
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[kind as u8, 0, 0, 0]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let crc = header_crc(salt, &out[start..start + 20]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    let padded = align8(payload.len() as u64) as usize;
    out.resize(out.len() + padded - payload.len(), 0);
    out.extend_from_slice(&[TRAILER_BYTE; TRAILER_LEN]);
}

/// Reads the header at the start of `bytes` (which holds at least [`HEADER_LEN`] bytes).
pub fn probe(bytes: &[u8], salt: u64) -> Probe {
    let h = &bytes[..HEADER_LEN];
    if h.iter().all(|&b| b == 0) {
        return Probe::Zero;
    }
    let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
    if u32_at(20) != header_crc(salt, &h[..20]) || h[5..8] != [0, 0, 0] {
        return Probe::Garbage;
    }
    let kind = match h[4] {
        1 => Kind::Data,
        2 => Kind::Seal,
        _ => return Probe::Garbage,
    };
    Probe::Header(Header {
        len: u32_at(0),
        kind,
        seq: u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
        payload_crc: u32_at(16),
    })
}

/// Does the frame of `header` that starts at `bytes[0]` check out (payload checksum and
/// trailer)? `bytes` must hold the whole frame.
pub fn body_ok(bytes: &[u8], header: &Header) -> bool {
    let len = header.len as usize;
    let payload = &bytes[HEADER_LEN..HEADER_LEN + len];
    let trailer_at = HEADER_LEN + align8(len as u64) as usize;
    crc32fast::hash(payload) == header.payload_crc
        && bytes[trailer_at..trailer_at + TRAILER_LEN] == [TRAILER_BYTE; TRAILER_LEN]
}

/// The payload of a frame that starts at `bytes[0]`.
pub fn payload<'a>(bytes: &'a [u8], header: &Header) -> &'a [u8] {
    &bytes[HEADER_LEN..HEADER_LEN + header.len as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let mut buf = Vec::new();
        encode(&mut buf, Kind::Data, 7, 42, b"hello");
        assert_eq!(buf.len() as u64, frame_len(5));
        assert_eq!(buf.len(), 24 + 8 + 8);
        let Probe::Header(h) = probe(&buf, 42) else {
            panic!("header not recognised")
        };
        assert_eq!((h.len, h.kind, h.seq), (5, Kind::Data, 7));
        assert!(body_ok(&buf, &h));
        assert_eq!(payload(&buf, &h), b"hello");
        // Another segment's salt: not a header.
        assert_eq!(probe(&buf, 43), Probe::Garbage);
        assert_eq!(probe(&[0u8; 24], 42), Probe::Zero);
    }

    #[test]
    fn every_damaged_byte_is_noticed() {
        let mut buf = Vec::new();
        encode(&mut buf, Kind::Seal, 1, 9, b"payload of some length");
        // 22 payload bytes: bytes 46 and 47 are padding, the only ones no check covers.
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            let noticed = match probe(&bad, 9) {
                Probe::Header(h) => !body_ok(&bad, &h),
                _ => true,
            };
            assert_eq!(noticed, !(46..48).contains(&i), "byte {i}");
        }
    }

    #[test]
    fn headers_never_straddle_a_sector() {
        for o in 0..2048u64 {
            let s = frame_start(o);
            assert!(s >= o && s.is_multiple_of(8));
            assert!(s % SECTOR + HEADER_LEN as u64 <= SECTOR, "{o} -> {s}");
            assert!(s - o < 32);
        }
    }
}
