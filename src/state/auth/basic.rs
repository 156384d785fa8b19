//! The `Authorization: Basic ...` header, parsed exactly as Go's `Request.BasicAuth` does:
//! the scheme `Basic ` (any case, one space), then standard base64 with padding (line breaks
//! ignored, nothing else), then `user:password` split at the first colon. Anything else is
//! not valid Basic credentials, which etcd answers with 401 (no fallback to `guest`).

/// Credentials from a header value: the user name and the password bytes.
pub fn parse(header: &[u8]) -> Option<(String, Vec<u8>)> {
    const PREFIX: &[u8] = b"Basic ";
    if header.len() < PREFIX.len() || !header[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let decoded = decode_base64(&header[PREFIX.len()..])?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

fn sextet(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    })
}

/// Go's `base64.StdEncoding.DecodeString`: padded, `\r` and `\n` skipped, padding only at
/// the very end.
fn decode_base64(input: &[u8]) -> Option<Vec<u8>> {
    let chars: Vec<u8> = input
        .iter()
        .copied()
        .filter(|&c| c != b'\r' && c != b'\n')
        .collect();
    if !chars.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(chars.len() / 4 * 3);
    let quads = chars.len() / 4;
    for (i, quad) in chars.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != quads) {
            return None;
        }
        let mut n: u32 = 0;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | u32::from(sextet(c)?);
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_go() {
        // "alice:pw:x" -> the password keeps later colons.
        assert_eq!(
            parse(b"Basic YWxpY2U6cHc6eA=="),
            Some(("alice".to_string(), b"pw:x".to_vec()))
        );
        assert_eq!(
            parse(b"bAsIc cm9vdDpyb290cHc="),
            Some(("root".to_string(), b"rootpw".to_vec()))
        );
        // "a:" -> empty password; ":" -> empty user.
        assert_eq!(parse(b"Basic YTo="), Some(("a".to_string(), vec![])));
        assert_eq!(parse(b"Basic Og=="), Some((String::new(), vec![])));
        assert_eq!(parse(b"Basic YWJj"), None, "no colon");
        assert_eq!(parse(b"Basic YWxpY2U6cHc"), None, "padding is required");
        assert_eq!(parse(b"Basic  YTo="), None, "one space only");
        assert_eq!(parse(b"Bearer YTo="), None);
        assert_eq!(parse(b"Basic"), None);
        assert_eq!(parse(b"Basic YTo=YTo="), None, "padding in the middle");
        assert_eq!(parse(b"Basic YT*="), None);
        assert_eq!(parse(b"Basic Y\r\nTo="), Some(("a".to_string(), vec![])));
        assert_eq!(parse(b"Basic "), None, "nothing decodes to no colon");
    }
}
