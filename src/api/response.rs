//! Building responses: status, headers and bodies in the exact shapes legacy etcd used.
//!
//! * JSON bodies (success and error) carry `Content-Type: application/json` (the choices in docs/api.md).
//! * Plain-text answers (`/v1/leader`, `/v1/machines`, the version) carry
//!   `text/plain; charset=utf-8`.
//! * v1 error bodies are `{"errorCode","message","cause"}` plus a newline, with the v0.1
//!   message and the HTTP status of the v2 mapping.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde::Serialize;

use crate::error::{Code, EtcdError};
use crate::go::go_json;

pub const JSON: &str = "application/json";
pub const TEXT: &str = "text/plain; charset=utf-8";

// etcd's own headers, as constants: a `&str` name is parsed again on every insert.
pub const X_ETCD_INDEX: HeaderName = HeaderName::from_static("x-etcd-index");
pub const X_RAFT_INDEX: HeaderName = HeaderName::from_static("x-raft-index");
pub const X_RAFT_TERM: HeaderName = HeaderName::from_static("x-raft-term");
pub const X_ETCD_CLUSTER_ID: HeaderName = HeaderName::from_static("x-etcd-cluster-id");

/// A number as a header value, in one allocation (`HeaderValue::from(u64)` makes two; every
/// write's answer carries three numbers).
pub fn number(n: u64) -> HeaderValue {
    HeaderValue::from_str(itoa::Buffer::new().format(n)).expect("digits are a valid header value")
}

pub fn with_body(
    status: u16,
    content_type: Option<&'static str>,
    body: impl Into<Body>,
) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = content_type {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    resp
}

pub fn json(status: u16, body: String) -> Response {
    with_body(status, Some(JSON), body)
}

pub fn text(status: u16, body: impl Into<String>) -> Response {
    with_body(status, Some(TEXT), body.into())
}

pub fn empty(status: u16) -> Response {
    with_body(status, None, Body::empty())
}

pub fn not_found() -> Response {
    text(404, "404 page not found\n")
}

/// 301 to `location` (query kept), with Go's small HTML body for GET and HEAD.
pub fn moved(location: &str, query: Option<&str>, method: &Method) -> Response {
    let target = match query {
        Some(q) if !q.is_empty() => format!("{location}?{q}"),
        _ => location.to_string(),
    };
    let mut resp = if method == Method::GET || method == Method::HEAD {
        with_body(
            301,
            Some("text/html; charset=utf-8"),
            format!("<a href=\"{target}\">Moved Permanently</a>.\n\n"),
        )
    } else {
        empty(301)
    };
    if let Ok(v) = HeaderValue::from_str(&target) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

#[derive(Serialize)]
struct V1ErrorBody<'a> {
    #[serde(rename = "errorCode")]
    code: u16,
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    cause: &'a str,
}

/// A v1 error: v0.1 message, the given v0.1 cause, the v2 status mapping.
pub fn v1_error(err: &EtcdError, cause: &str) -> Response {
    v1_error_code(err.code, cause)
}

pub fn v1_error_code(code: Code, cause: &str) -> Response {
    // v0.1 numbered two codes differently from v2: "watcher is cleared" was 500 and the
    // keyword-prefix refusal was 400.
    let number = match code {
        Code::WatcherCleared => 500,
        Code::KeywordPrefix => 400,
        c => c.number(),
    };
    let body = V1ErrorBody {
        code: number,
        message: code.message_v1(),
        cause,
    };
    json(code.http_status(), go_json(&body) + "\n")
}

/// A request body over the limit (the choices in docs/api.md): 413 with etcd's v2 error shape (clients of
/// both APIs read `errorCode`/`message`/`cause`; the extra `index` is harmless to v1 ones).
pub fn too_large(limit: usize) -> Response {
    let e = EtcdError::new(
        Code::InvalidForm,
        format!("request body too large (limit {limit} bytes)"),
        0,
    );
    let mut r = v2_error(&e);
    *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    r
}

/// A v2 error: `{"errorCode","message","cause","index"}` + newline, `X-Etcd-Index`.
pub fn v2_error(e: &EtcdError) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "errorCode")]
        code: u16,
        message: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        cause: &'a str,
        index: u64,
    }
    let body = Body {
        code: e.code.number(),
        message: e.code.message_v2(),
        cause: &e.cause,
        index: e.index,
    };
    let mut r = json(e.code.http_status(), go_json(&body) + "\n");
    r.headers_mut().insert(X_ETCD_INDEX, number(e.index));
    r
}

/// 405 with the methods allowed, as Go's handlers answer.
pub fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = text(405, "Method Not Allowed\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// `{"message": ...}` without a newline: how etcd's members and auth APIs answer errors.
pub fn message(status: u16, text: &str) -> Response {
    #[derive(Serialize)]
    struct Message<'a> {
        message: &'a str,
    }
    json(status, go_json(&Message { message: text }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header values a client reads as numbers: decimal digits, no padding, the whole
    /// range.
    #[test]
    fn numbers_are_plain_decimal_header_values() {
        for (n, text) in [
            (0, "0"),
            (7, "7"),
            (10, "10"),
            (88, "88"),
            (1_000_000, "1000000"),
            (u64::MAX, "18446744073709551615"),
        ] {
            assert_eq!(number(n), HeaderValue::from_static(text), "{n}");
            assert_eq!(number(n), HeaderValue::from(n), "{n}");
        }
    }
}
