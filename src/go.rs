//! Go's formats, as etcd (a Go program) wrote and read them, in one place: `encoding/json`'s
//! escaping, `time.Time` in RFC 3339 with nanoseconds, `time.Duration.String`, and
//! `strconv`'s `Atoi`, `ParseUint` and `ParseBool`. Clients compare some of these byte for
//! byte, so every function here follows Go's rules, tested against Go's own outputs.

use serde::Serialize;

const NANOS: i64 = 1_000_000_000;

/// Serialize like Go's encoding/json: HTML-sensitive characters escaped inside strings.
/// These characters can only occur inside JSON strings, so replacing them in the output is
/// exact.
pub fn go_json<T: Serialize + ?Sized>(v: &T) -> String {
    let s = serde_json::to_string(v).expect("serializing plain structs cannot fail");
    // A byte scan: `<`, `>`, `&`, and 0xE2, the lead byte of U+2028 and U+2029 in UTF-8
    // (other characters starting with it are copied unchanged below).
    if !s.bytes().any(|b| matches!(b, b'<' | b'>' | b'&' | 0xE2)) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Unix nanoseconds as Go's `time.Time` JSON in UTC: RFC 3339 with the fraction's trailing
/// zeros dropped (`2013-07-11T20:31:12.156146039Z`, `...:12.5Z`, `...:12Z`).
pub fn rfc3339_nanos(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(NANOS);
    let frac = unix_nanos.rem_euclid(NANOS);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    );
    if frac != 0 {
        let f = format!("{frac:09}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A duration as Go's `time.Duration.String` prints it (`1h2m3.5s`, `1.5ms`, `0s`).
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let neg = nanos < 0;
    let n = nanos.unsigned_abs();
    let mut s = String::new();
    if n < 1_000_000_000 {
        let (unit, div) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        s.push_str(&frac(n, div));
        s.push_str(unit);
    } else {
        let h = n / 3_600_000_000_000;
        let m = (n / 60_000_000_000) % 60;
        let secs = n % 60_000_000_000;
        if h > 0 {
            s.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            s.push_str(&format!("{m}m"));
        }
        s.push_str(&frac(secs, 1_000_000_000));
        s.push('s');
    }
    if neg { format!("-{s}") } else { s }
}

fn frac(n: u64, div: u64) -> String {
    let whole = n / div;
    let rest = n % div;
    if rest == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let f = format!("{rest:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.Atoi`: optional sign, decimal digits only.
pub fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

/// Go's `strconv.ParseUint(s, 10, 64)`.
pub fn parse_uint(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format_matches_go() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00Z");
        // 2026-11-21T13:53:15.225264963Z
        let t = 1_795_269_195 * NANOS + 225_264_963;
        assert_eq!(rfc3339_nanos(t), "2026-11-21T13:53:15.225264963Z");
        assert_eq!(
            rfc3339_nanos(t - 225_264_963 + 500_000_000),
            "2026-11-21T13:53:15.5Z"
        );
        assert_eq!(rfc3339_nanos(951_782_400 * NANOS), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn json_escapes_what_go_escapes_and_nothing_else() {
        assert_eq!(go_json("plain"), r#""plain""#);
        assert_eq!(go_json("a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
        assert_eq!(go_json("l\u{2028}p\u{2029}"), r#""l\u2028p\u2029""#);
        // Other characters whose UTF-8 starts with 0xE2 stay as they are.
        assert_eq!(go_json("€ – ‰"), "\"€ – ‰\"");
        assert_eq!(go_json("€<"), r#""€\u003c""#);
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(2_000_000_000), "2s");
        assert_eq!(go_duration(62_500_000_000), "1m2.5s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(999), "999ns");
    }

    #[test]
    fn numbers_parse_like_strconv() {
        assert_eq!(parse_uint("8"), Some(8));
        assert_eq!(parse_uint("-1"), None);
        assert_eq!(parse_uint(""), None);
        assert_eq!(parse_uint("+8"), None);
        assert_eq!(parse_int("+3"), Some(3));
        assert_eq!(parse_int("-3"), Some(-3));
        assert_eq!(parse_int(" 3"), None);
        assert_eq!(parse_bool("T"), Some(true));
        assert_eq!(parse_bool("yes"), None);
    }
}
