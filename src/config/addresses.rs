//! Addresses: endpoints (`host:port`, URLs, IPv6 in brackets), how the advertised and listen
//! addresses of a side follow from each other, `--initial-cluster` and the `-C` peer list.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::flags::Setting;
use super::flags::Setting as S;
use super::scan::{Given, Settings, parse_u64};
use super::{ConfigError, DEFAULT_HOST, ListenGiven};

/// An address as written: optional scheme, host (IPv6 in brackets), optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub(super) scheme: Option<String>,
    pub(super) host: String,
    pub(super) port: Option<u16>,
}

pub(super) fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() {
        return Err("missing port".to_string());
    }
    parse_u64(text)
        .and_then(|port| u16::try_from(port).ok())
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("port {text:?} is not a number between 1 and 65535"))
}

pub(super) fn valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// Parses `host`, `host:port`, `[v6]`, `[v6]:port`, a bare IPv6 address (host only), or any
/// of these behind `http://` / `https://` with an optional trailing `/`.
pub(super) fn parse_endpoint(raw: &str) -> Result<Endpoint, String> {
    let raw = raw.trim();
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => {
            let lower = scheme.to_ascii_lowercase();
            if lower != "http" && lower != "https" {
                return Err(format!("unsupported scheme {scheme:?} (use http or https)"));
            }
            (Some(lower), rest)
        }
        None => (None, raw),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
        return Err("expected host:port or a URL without path".to_string());
    }
    if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((inner, tail)) = bracketed.split_once(']') else {
            return Err("unclosed '[' in IPv6 address".to_string());
        };
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address {inner:?}"));
        }
        let port = match tail {
            "" => None,
            _ => match tail.strip_prefix(':') {
                Some(port) => Some(parse_port(port)?),
                None => return Err("unexpected text after the IPv6 address".to_string()),
            },
        };
        return Ok(Endpoint {
            scheme,
            host: format!("[{inner}]"),
            port,
        });
    }
    let (host, port) = match rest.matches(':').count() {
        0 => (rest.to_string(), None),
        1 => {
            let (host, port) = rest.split_once(':').unwrap_or((rest, ""));
            (host.to_string(), Some(parse_port(port)?))
        }
        _ => {
            if rest.parse::<Ipv6Addr>().is_ok() {
                (format!("[{rest}]"), None)
            } else {
                return Err("IPv6 addresses must be bracketed, e.g. [::1]:4001".to_string());
            }
        }
    };
    if host.is_empty() {
        return Err("missing host".to_string());
    }
    if !host.starts_with('[') && !valid_host_name(&host) {
        return Err(format!("invalid host {host:?}"));
    }
    Ok(Endpoint { scheme, host, port })
}

pub(super) fn is_unspecified(host: &str) -> bool {
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return v4.is_unspecified();
    }
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<Ipv6Addr>().ok())
        .is_some_and(|v6| v6.is_unspecified())
}

/// First address of a comma list; all entries are checked.
pub(super) fn first_endpoint(g: &Given, require_port: bool) -> Result<Endpoint, ConfigError> {
    let host_only = matches!(g.setting, S::ClientListenHost | S::PeerListenHost);
    let mut first = None;
    for item in g.value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let ep = parse_endpoint(item).map_err(|why| g.invalid(&why))?;
        if host_only && (ep.port.is_some() || ep.scheme.is_some()) {
            return Err(g.invalid(
                "expected a host without port (the port comes from the advertised address)",
            ));
        }
        if require_port && ep.port.is_none() {
            return Err(g.invalid("missing port"));
        }
        first.get_or_insert(ep);
    }
    first.ok_or_else(|| g.invalid("no address given"))
}

pub(super) fn check_scheme(
    g: &Given,
    ep: &Endpoint,
    tls: bool,
    hint: &str,
) -> Result<(), ConfigError> {
    if ep.scheme.as_deref() == Some("https") && !tls {
        return Err(g.invalid(hint));
    }
    Ok(())
}

/// Resolves one side to (advertised URL, listen `host:port`).
pub(super) fn resolve_side(
    s: &Settings,
    advertise: Setting,
    listen: Setting,
    fallback: Option<(&Given, Endpoint)>,
    default_port: u16,
    tls: bool,
    https_hint: &str,
) -> Result<(String, String, ListenGiven), ConfigError> {
    let mut adv = match s.get(advertise) {
        Some(g) => {
            let ep = first_endpoint(g, true)?;
            check_scheme(g, &ep, tls, https_hint)?;
            Some(ep)
        }
        None => None,
    };
    let lis = match s.get(listen) {
        Some(g) => {
            let ep = first_endpoint(g, false)?;
            check_scheme(g, &ep, tls, https_hint)?;
            Some(ep)
        }
        None => None,
    };
    if adv.is_none()
        && lis.is_none()
        && let Some((g, ep)) = fallback
    {
        check_scheme(g, &ep, tls, https_hint)?;
        adv = Some(ep);
    }
    let (adv_host, adv_port) = match (&adv, &lis) {
        (Some(ep), _) => (ep.host.clone(), ep.port.unwrap_or(default_port)),
        (
            None,
            Some(Endpoint {
                host,
                port: Some(port),
                ..
            }),
        ) => {
            let host = if is_unspecified(host) {
                DEFAULT_HOST.to_string()
            } else {
                host.clone()
            };
            (host, *port)
        }
        _ => (DEFAULT_HOST.to_string(), default_port),
    };
    let (listen_host, listen_port, given) = match lis {
        Some(Endpoint {
            host,
            port: Some(port),
            ..
        }) => (host, port, ListenGiven::HostAndPort),
        Some(ep) => (ep.host, adv_port, ListenGiven::Host),
        None => (adv_host.clone(), adv_port, ListenGiven::No),
    };
    let scheme = if tls { "https" } else { "http" };
    Ok((
        format!("{scheme}://{adv_host}:{adv_port}"),
        format!("{listen_host}:{listen_port}"),
        given,
    ))
}

pub(super) fn parse_initial_cluster(g: &Given) -> Result<Vec<(String, String)>, ConfigError> {
    let mut members = Vec::new();
    for entry in g.value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, url)) = entry.split_once('=') else {
            return Err(g.invalid(&format!("entry {entry:?} is not name=URL")));
        };
        let (name, url) = (name.trim(), url.trim());
        if name.is_empty() {
            return Err(g.invalid(&format!("entry {entry:?} has no name")));
        }
        let ep =
            parse_endpoint(url).map_err(|why| g.invalid(&format!("entry {entry:?}: {why}")))?;
        if ep.scheme.is_none() || ep.port.is_none() {
            return Err(g.invalid(&format!(
                "entry {entry:?}: the URL needs a scheme and a port, e.g. http://127.0.0.1:7001"
            )));
        }
        members.push((name.to_string(), url.to_string()));
    }
    if members.is_empty() {
        return Err(g.invalid("no members given"));
    }
    Ok(members)
}

/// Peer `host:port`s from a `-C` list or a `-CF` file's content (commas or white space).
pub(super) fn peer_list(g: &Given, text: &str) -> Result<Vec<String>, ConfigError> {
    let mut peers = Vec::new();
    for item in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|i| !i.is_empty())
    {
        let ep = parse_endpoint(item).map_err(|why| g.invalid(&format!("peer {item:?}: {why}")))?;
        let Some(port) = ep.port else {
            return Err(g.invalid(&format!("peer {item:?}: missing port")));
        };
        peers.push(format!("{}:{port}", ep.host));
    }
    Ok(peers)
}
