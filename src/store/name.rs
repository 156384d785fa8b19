//! A child's name inside its directory: one path segment, compared by its bytes.
//!
//! Names are the keys of every directory map, so they are kept small and cheap to copy: a
//! name of up to [`INLINE`] bytes (every name of the usual shapes - `k0000001`, the 20-digit
//! names of in-order keys, most words) lives inside the 24-byte value itself; a longer one
//! shares one heap string, so cloning any name never allocates (a directory block copied on
//! its first write after a snapshot clones every name in it).
//!
//! What must stay true: names order by their bytes (so listings come out in byte order of
//! the full keys), and a name is always valid UTF-8 because it is only ever made from a
//! `&str`.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// The longest name kept inline.
pub const INLINE: usize = 22;

#[derive(Clone)]
pub enum Name {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Arc<str>),
}

impl Name {
    pub fn new(s: &str) -> Name {
        if s.len() <= INLINE {
            let mut buf = [0; INLINE];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            Name::Inline {
                len: s.len() as u8,
                buf,
            }
        } else {
            Name::Heap(Arc::from(s))
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Inline { len, buf } => &buf[..*len as usize],
            Name::Heap(s) => s.as_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Made from a `&str` only, so this never fails (and costs a few ns).
            Name::Inline { len, buf } => {
                std::str::from_utf8(&buf[..*len as usize]).expect("a name is made from a str")
            }
            Name::Heap(s) => s,
        }
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name::new(s)
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_heap_names_compare_by_bytes() {
        assert_eq!(std::mem::size_of::<Name>(), 24);
        let long = "a".repeat(INLINE + 1);
        let names = ["", "a", "k0000001", &"z".repeat(INLINE), &long, "é", "✓"];
        for a in names {
            let na = Name::new(a);
            assert_eq!(na.as_str(), a);
            assert_eq!(matches!(na, Name::Heap(_)), a.len() > INLINE);
            for b in names {
                assert_eq!(na.cmp(&Name::new(b)), a.as_bytes().cmp(b.as_bytes()));
            }
        }
    }
}
