//! Shared black-box test harness: start `etcd` processes on free ports and talk raw HTTP/1.1
//! to them. Every test crate declares it (`mod common;`, with `#[macro_use]` for the
//! cluster assertions) and takes what it needs:
//!
//! * here: raw requests, readiness;
//! * [`node`]: the one process wrapper ([`Node`]): harness nodes, cluster members and exact
//!   command lines, with their logs or captured output, signals and exit statuses;
//! * [`cluster`]: members of a cluster, waits on their views, `ensure!`;
//! * [`load`]: the write load, its records and the ledger of what keys may hold;
//! * [`proxy`]: TCP proxies between members, for partitions;
//! * [`checker`]: the linearizability checker of the chaos tests;
//! * [`rng`]: the replayable random generator.
#![allow(dead_code)]

pub mod checker;
#[macro_use]
pub mod cluster;
pub mod load;
pub mod node;
pub mod proxy;
pub mod rng;

pub use node::Node;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_etcd");

/// A port that is free right now, from 20000-31999: below Linux's ephemeral range
/// (32768-60999), so outgoing connections (which take ephemeral ports) cannot grab it before
/// the server binds it. Another test still may: `Node::start` retries on a clash.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Spread tests running in parallel (and test binaries) over the range.
    let seed = std::process::id().wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (seed.wrapping_add(n.wrapping_mul(97)) % 12000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics with the body on bad JSON.
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_str(&self.body) {
            Ok(v) => v,
            Err(e) => panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status, self.body
            ),
        }
    }

    /// The Content-Type header with parameters (e.g. `; charset=utf-8`) cut off.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
            .map(|v| v.split(';').next().unwrap_or("").trim())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decode a chunked body; returns None when it is not complete yet.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_str = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_str = size_str.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Parse a complete response; `eof` says whether the connection was closed.
/// Returns None when more data is needed.
/// Parse a complete HTTP/1.1 response from `buf` (None while more data is needed); shared
/// with tests that bring their own transport (TLS).
pub fn parse_response(buf: &[u8], eof: bool, head_only: bool) -> Option<Resp> {
    let head_end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let rest = &buf[head_end + 4..];
    let hv = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body: Vec<u8> =
        if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else if hv("transfer-encoding")
            .map(|v| v.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false)
        {
            dechunk(rest)?
        } else if let Some(cl) = hv("content-length") {
            let n: usize = cl.parse().expect("bad content-length");
            if rest.len() < n {
                return None;
            }
            rest[..n].to_vec()
        } else if eof {
            rest.to_vec()
        } else {
            return None;
        };
    Some(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Timeout for reading a response (overridable per call with `request_timeout`).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One raw HTTP/1.1 request over a fresh connection (Connection: close), path sent exactly as
/// given, 10 s read timeout. Handles Content-Length, chunked and close-delimited bodies.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    request_timeout(addr, method, path, headers, body, READ_TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

/// Like `request`, with a caller-chosen overall timeout; returns Err on connect failure,
/// timeout or a connection closed before a complete response.
pub fn request_timeout(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Resp, String> {
    let deadline = Instant::now() + timeout;
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("bad addr: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout.min(Duration::from_secs(5)))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).ok();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let mut has_len = false;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-length") {
            has_len = true;
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len && (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH")) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(body);
    s.set_write_timeout(Some(timeout)).ok();
    // The server may answer (e.g. 413) and close before the whole body is written: ignore
    // write errors and try to read the answer anyway.
    let write_err = s.write_all(&out).err();
    let head_only = method == "HEAD";
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "timed out after {timeout:?}; got so far: {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        s.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
            .ok();
        match s.read(&mut chunk) {
            Ok(0) => {
                return parse_response(&buf, true, head_only).ok_or_else(|| {
                    format!(
                        "connection closed before a complete response (write error {write_err:?}): {:?}",
                        String::from_utf8_lossy(&buf)
                    )
                });
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(r) = parse_response(&buf, false, head_only) {
                    return Ok(r);
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // A reset after a complete response still counts.
                if let Some(r) = parse_response(&buf, true, head_only) {
                    return Ok(r);
                }
                return Err(format!(
                    "read: {e} (write error {write_err:?}); got so far: {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
        }
    }
}

pub fn get(addr: &str, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"")
}

pub fn delete(addr: &str, path: &str) -> Resp {
    request(addr, "DELETE", path, &[], b"")
}

/// `application/x-www-form-urlencoded` encoding of the pairs (unreserved bytes kept, space as
/// `+`, everything else `%XX`).
pub fn form_encode(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encode one form component.
pub fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn send_form(addr: &str, method: &str, path: &str, form: &[(&str, &str)]) -> Resp {
    let body = form_encode(form);
    request(
        addr,
        method,
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
}

pub fn post_form(addr: &str, path: &str, form: &[(&str, &str)]) -> Resp {
    send_form(addr, "POST", path, form)
}

pub fn put_form(addr: &str, path: &str, form: &[(&str, &str)]) -> Resp {
    send_form(addr, "PUT", path, form)
}

/// Poll `f` every 20 ms until it returns Some, up to `timeout`; panics with `what` otherwise.
pub fn poll_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One readiness probe: `GET /v1/keys/` answering 200 within `timeout`; the error says what
/// came instead.
pub fn probe_ready(addr: &str, timeout: Duration) -> Result<(), String> {
    let r = request_timeout(addr, "GET", "/v1/keys/", &[], b"", timeout)
        .map_err(|e| format!("GET http://{addr}/v1/keys/: {e}"))?;
    if r.status == 200 {
        Ok(())
    } else {
        Err(format!("{} {}", r.status, r.body))
    }
}

/// Remove ANSI colour sequences (server logs written to a terminal).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON string literal the way Go's encoding/json writes it: like serde_json, plus `<`,
/// `>`, `&`, U+2028 and U+2029 escaped as `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029`.
pub fn go_json_string(s: &str) -> String {
    serde_json::to_string(s)
        .expect("serialize string")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}
