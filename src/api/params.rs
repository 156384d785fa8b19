//! Request parameters: the key from the URL, form fields from the query string and the body,
//! and the parsing rules of the fields etcd knows (`ttl`, indexes, booleans).
//!
//! Form rules are Go's `Request.FormValue`: for POST and PUT an
//! `application/x-www-form-urlencoded` body is parsed and its values come before the query
//! string's (so the body wins); other bodies are ignored; the first value of a repeated
//! field wins. Bodies over the limit ([`max_body`], `--max-request-bytes`) are refused with
//! 413 before they are read to the end. A form Go's `url.ParseQuery` refuses - a bad `%`
//! escape, or (Go 1.17+, so etcd 3.4) a `;` anywhere - is reported by [`Form::malformed`] in
//! Go's words, the body's reason first.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{Method, header};
use axum::response::Response;

use super::response;
use crate::error::{Code, EtcdError};

/// Characters escaped when a decoded path goes back into a URL (a `Location` header).
pub const PATH_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// The largest accepted request body of this process, set once at start-up from
/// `--max-request-bytes` ([`set_max_body`]).
static MAX_BODY: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(crate::config::DEFAULT_MAX_REQUEST_BYTES);

/// Set the body limit (the server does this once, before it serves anything).
pub fn set_max_body(bytes: usize) {
    MAX_BODY.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// The largest accepted request body.
pub fn max_body() -> usize {
    MAX_BODY.load(std::sync::atomic::Ordering::Relaxed)
}

/// Form fields of one request, body fields first.
#[derive(Debug, Default, Clone)]
pub struct Form {
    pairs: Vec<(String, String)>,
    /// The first malformed escape met, as Go's form parser words it.
    malformed: Option<String>,
}

impl Form {
    pub fn parse(body: &[u8], query: Option<&str>) -> Form {
        let mut malformed = query_error(body);
        let mut pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        if let Some(q) = query {
            malformed = malformed.or_else(|| query_error(q.as_bytes()));
            pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        Form { pairs, malformed }
    }

    /// Why the form could not be parsed strictly (a `%` not followed by two hex digits, or
    /// a `;`), as Go words it.
    pub fn malformed(&self) -> Option<String> {
        self.malformed.clone()
    }

    /// The first value of `name`, if present (possibly empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, empty when absent (Go's `FormValue`).
    pub fn value(&self, name: &str) -> &str {
        self.get(name).unwrap_or_default()
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Why Go's `url.ParseQuery` (1.17+) refuses `s`: a `;` anywhere (it wins over a bad
/// escape, whatever their order), else the first `%` that does not start a valid escape.
fn query_error(s: &[u8]) -> Option<String> {
    if s.contains(&b';') {
        return Some("invalid semicolon separator in query".to_string());
    }
    bad_escape(s)
}

/// The first `%` in `s` that does not start a valid escape, worded like Go's error.
fn bad_escape(s: &[u8]) -> Option<String> {
    let pos = s.iter().enumerate().position(|(i, &b)| {
        b == b'%'
            && !(i + 2 < s.len() && s[i + 1].is_ascii_hexdigit() && s[i + 2].is_ascii_hexdigit())
    })?;
    let esc = go_quote(&s[pos..(pos + 3).min(s.len())]);
    Some(format!("invalid URL escape {esc}"))
}

/// Go's `strconv.Quote` of a few bytes: printable characters as they are, `\"` and `\\`
/// escaped, the usual `\n`-style escapes, other control characters as `\xNN`, bytes that
/// are not UTF-8 as `\xNN` each.
fn go_quote(b: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out.push('"');
    out
}

/// Read the form of a request: the query string, plus the body for POST and PUT when it is
/// url-encoded. Refuses (413) bodies over the limit.
pub async fn read_form(req: Request) -> Result<Form, Response> {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().map(str::to_string);
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = max_body();
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(response::too_large(limit));
    }
    let bytes = read_body(body).await?;
    let wants_body = parts.method == Method::POST || parts.method == Method::PUT;
    let body_form: &[u8] = if wants_body && is_form { &bytes } else { &[] };
    Ok(Form::parse(body_form, query.as_deref()))
}

/// Read a whole body, at most [`max_body`] bytes.
pub async fn read_body(body: Body) -> Result<bytes::Bytes, Response> {
    let limit = max_body();
    to_bytes(body, limit).await.map_err(|e| {
        if over_limit(&e) {
            response::too_large(limit)
        } else {
            // Cut short (a Content-Length longer than what came, a broken chunked body):
            // a malformed request, etcd's "Invalid POST form" with 400.
            let e = EtcdError::new(Code::InvalidForm, format!("cannot read the body: {e}"), 0);
            crate::api::response::v2_error(&e)
        }
    })
}

/// Did reading a body fail because it is larger than allowed?
fn over_limit(e: &axum::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Percent-decode the key part of a URL path strictly: a `%` must start a valid escape and
/// the result must be UTF-8 (the choices in docs/api.md).
pub fn decode_key(raw: &str) -> Result<String, EtcdError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(EtcdError::new(
                    Code::InvalidField,
                    format!("invalid URL escape in key {raw:?}"),
                    0,
                ));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| EtcdError::new(Code::InvalidField, "key is not valid UTF-8", 0))
}

/// v0.1 `ttl`: empty means none (`Some(None)`); otherwise a (signed) integer number of
/// seconds, Go `Atoi`. `None` when it is not a number.
pub fn parse_ttl_v1(s: &str) -> Option<Option<i64>> {
    if s.is_empty() {
        return Some(None);
    }
    crate::go::parse_int(s).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_wins_and_first_value_wins() {
        let f = Form::parse(
            b"value=fromform&value=second",
            Some("value=fromquery&ttl=5"),
        );
        assert_eq!(f.get("value"), Some("fromform"));
        assert_eq!(f.get("ttl"), Some("5"));
        assert!(!f.has("prevValue"));
        let f = Form::parse(b"prevValue=", None);
        assert_eq!(f.get("prevValue"), Some(""));
        let f = Form::parse(b"value=Hello+world%21", None);
        assert_eq!(f.value("value"), "Hello world!");
        assert_eq!(f.malformed(), None);
        let f = Form::parse(b"value=%zz", None);
        assert_eq!(f.malformed().as_deref(), Some("invalid URL escape \"%zz\""));
        assert!(Form::parse(b"", Some("a=%4")).malformed().is_some());
    }

    #[test]
    fn malformed_forms_are_worded_like_go() {
        let bad = |body: &[u8], query: Option<&str>| Form::parse(body, query).malformed();
        // etcd 3.4 (Go 1.19): a `;` anywhere refuses the form, and its reason wins over a
        // bad escape before or after it.
        let semi = Some("invalid semicolon separator in query".to_string());
        assert_eq!(bad(b"", Some("value=a;b")), semi);
        assert_eq!(bad(b"value=a;b", None), semi);
        assert_eq!(bad(b"", Some("a=%zz&b=;")), semi);
        assert_eq!(bad(b"", Some(";&a=%zz")), semi);
        assert_eq!(bad(b"value=%3B", None), None);
        // The body's reason comes first.
        assert_eq!(
            bad(b"a=%zz", Some("b=;")).as_deref(),
            Some("invalid URL escape \"%zz\"")
        );
        assert_eq!(bad(b"a=;", Some("b=%zz")), semi);
        // strconv.Quote of the escape: control characters and bytes that are not UTF-8.
        assert_eq!(
            bad(b"a=%\x01\xff", None).as_deref(),
            Some("invalid URL escape \"%\\x01\\xff\"")
        );
        assert_eq!(
            bad(b"a=%\n\"", None).as_deref(),
            Some("invalid URL escape \"%\\n\\\"\"")
        );
        assert_eq!(
            bad("a=%é".as_bytes(), None).as_deref(),
            Some("invalid URL escape \"%é\"")
        );
        assert_eq!(
            bad(b"a=%\xc3", None).as_deref(),
            Some("invalid URL escape \"%\\xc3\"")
        );
    }

    #[test]
    fn keys_decode_strictly() {
        assert_eq!(decode_key("a%20b").unwrap(), "a b");
        assert_eq!(decode_key("p%2Fq").unwrap(), "p/q");
        assert_eq!(decode_key("caf%C3%A9").unwrap(), "café");
        assert_eq!(decode_key("%zz").unwrap_err().code, Code::InvalidField);
        assert_eq!(decode_key("a%2").unwrap_err().code, Code::InvalidField);
        assert_eq!(decode_key("%ff").unwrap_err().code, Code::InvalidField);
    }

    #[test]
    fn numbers_parse_like_go() {
        assert_eq!(parse_ttl_v1(""), Some(None));
        assert_eq!(parse_ttl_v1("5"), Some(Some(5)));
        assert_eq!(parse_ttl_v1("-1"), Some(Some(-1)));
        assert_eq!(parse_ttl_v1("+3"), Some(Some(3)));
        assert!(parse_ttl_v1("1.5").is_none());
        assert!(parse_ttl_v1("abc").is_none());
        assert!(parse_ttl_v1(" 5").is_none());
    }
}
