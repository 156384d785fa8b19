//! Request parameters: the key from the URL, form fields from the query string and the body,
//! and the parsing rules of the fields etcd knows (`ttl`, indexes, booleans).
//!
//! Form rules are Go's `Request.FormValue`: for POST and PUT an
//! `application/x-www-form-urlencoded` body is parsed and its values come before the query
//! string's (so the body wins); other bodies are ignored; the first value of a repeated
//! field wins. Bodies over the limit ([`max_body`], `--max-request-bytes`) are refused with
//! 413 before they are read to the end.

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
        let mut malformed = bad_escape(body);
        let mut pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        if let Some(q) = query {
            malformed = malformed.or_else(|| bad_escape(q.as_bytes()));
            pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        Form { pairs, malformed }
    }

    /// Why the form could not be parsed strictly (a `%` not followed by two hex digits).
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

/// The first `%` in `s` that does not start a valid escape, worded like Go's error.
fn bad_escape(s: &[u8]) -> Option<String> {
    let pos = s.iter().enumerate().position(|(i, &b)| {
        b == b'%'
            && !(i + 2 < s.len() && s[i + 1].is_ascii_hexdigit() && s[i + 2].is_ascii_hexdigit())
    })?;
    let esc = String::from_utf8_lossy(&s[pos..(pos + 3).min(s.len())]).into_owned();
    Some(format!("invalid URL escape {esc:?}"))
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
            crate::api::v2::error(&e)
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
/// the result must be UTF-8 (Decision D13).
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
    parse_go_int(s).map(Some)
}

/// Go's `strconv.Atoi`: optional sign, decimal digits only.
pub fn parse_go_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

/// An unsigned index (Go `ParseUint` base 10).
pub fn parse_index(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
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
        assert_eq!(parse_index("8"), Some(8));
        assert_eq!(parse_index("-1"), None);
        assert_eq!(parse_index(""), None);
    }
}
