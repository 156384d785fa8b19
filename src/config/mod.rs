//! Command line and environment configuration.
//!
//! Files: `flags.rs` (the table of every flag, its variable and its usage line), `scan.rs`
//! (reading the arguments and the environment into settings), `addresses.rs` (endpoints,
//! advertised vs listen addresses, `--initial-cluster`, `-C`), and here the [`Config`] and how
//! it is built and checked.
//!
//! This module turns the process arguments and the `ETCD_*` environment variables into one
//! validated [`Config`]. It knows three generations of etcd command lines and accepts all of
//! them, so existing scripts keep working unchanged:
//!
//! * **etcd v0.1** short flags (`-n`, `-c`, `-s`, `-cl`, `-sl`, `-C`, `-CF`, `-d`, `-f`, `-m`,
//!   `-r`, `-maxsize`, `-clientCert`, ... see docs/api.md);
//! * the **v0.2 - v0.4** long names (`-name`, `-addr`, `-peer-addr`, `-peers`, `-data-dir`,
//!   `-cert-file`, ... see docs/api.md);
//! * the **etcd 2.x** URL flags (`--listen-client-urls`, `--advertise-client-urls`,
//!   `--initial-cluster`, `--trusted-ca-file`, ... see docs/api.md), plus `--enable-v2` so that
//!   etcd 3.x command lines start too.
//!
//! # Syntax
//!
//! The syntax is the one of Go's `flag` package: `-flag value`, `-flag=value`, `--flag value`
//! and `--flag=value` are all the same thing. Boolean flags take no separate value (`-f`), only
//! an attached one (`-f=false`; accepted spellings are Go's `1 t T TRUE true True` and
//! `0 f F FALSE false False`). A flag that needs a value takes the next argument whatever it
//! looks like, so `-n -c` names the node `-c`, as Go does. A lone `--` ends the flags; any
//! argument that is not a flag (before or after `--`) is an error, since etcd takes no
//! positional arguments. Names are case-sensitive: `-C` (peers to join) is not `-c` (client
//! address). `-h`, `-help` and `--help` ask for [`usage`] wherever they appear, unless an
//! error was found before them while reading left to right.
//!
//! # Aliases and precedence
//!
//! Every name maps to a *setting*; names of different eras that mean the same thing (`-n`,
//! `-name`, `--name`) are aliases of one setting, and so are names that feed the same value in
//! different spellings: `-c`, `-addr` and `--advertise-client-urls` all give the advertised
//! client address, `-C`/`-peers` and `-CF`/`-peers-file` both give the peers to join. For each
//! setting the value is chosen in this order:
//!
//! 1. the command line - when the setting is named several times, the **last** one wins;
//! 2. otherwise the environment: `ETCD_` + the long flag name upper-cased with `-` turned into
//!    `_` (`ETCD_NAME`, `ETCD_PEER_ADDR`, `ETCD_LISTEN_CLIENT_URLS`, ...), plus the historical
//!    `ETCD_SNAPSHOTCOUNT`, `ETCD_VERBOSE` and `ETCD_VERY_VERBOSE`. An environment variable is
//!    consulted only when *no* alias of its setting appeared on the command line, and an empty
//!    variable counts as unset. When several variables of one setting are set, the newest
//!    era's name wins. Booleans from the environment are true unless `0` or `false`. The
//!    v0.1 short names, `-version`, `-config`, `-w` and `-cpuprofile` have no variable
//!    (`ETCD_VERSION` is often set by container images to a version string); other `ETCD_*`
//!    variables are ignored;
//! 3. otherwise the default (the v0.1 defaults: name `default-name`, client `127.0.0.1:4001`,
//!    peer `127.0.0.1:7001`; the data directory defaults to `<name>.etcd`).
//!
//! `-version` is looked at right after the command line is read: it prints the version even
//! when the rest of the configuration would be rejected.
//!
//! # Addresses
//!
//! Each side (client, peer) has an *advertised* URL and a *listen* `host:port`. Every
//! address flag accepts `host:port` or a URL `http(s)://host:port` (a trailing `/` is allowed,
//! a path is not), and a comma list of them, of which the first is used and all are checked.
//! The advertised address (`-c`/`-addr`/`--advertise-client-urls`, `-s`/`-peer-addr`/
//! `--initial-advertise-peer-urls`) needs a port. The listen address (`-bind-addr`,
//! `--listen-client-urls`, ...) may leave the port out; it then comes from the advertised
//! address. `-cl`/`-sl` take a host only, as in v0.1. With no listen flag, the server listens
//! on the advertised `host:port`. With a listen flag that has a port but no advertised flag,
//! the advertised address is the listen address, an unspecified host (`0.0.0.0`, `[::]`)
//! becoming `127.0.0.1`. With neither peer flag, the entry of `--initial-cluster` that carries
//! this node's name serves as the advertised peer URL (a given `--initial-cluster` must have
//! such an entry; its entries are `name=http(s)://host:port`, kept in order). Ports are `1..=65535`; hosts are names,
//! IPv4 addresses or bracketed IPv6 addresses.
//!
//! The URL scheme is `https` exactly when the side has a certificate and a key; an explicit
//! `https://` on a side without them is an error. A certificate without a key (or the reverse)
//! is an error, as is a CA file without certificate and key. `-clientCAFile`/`--ca-file` (and
//! the peer analogues) give the CA **and** require client certificates (v0.1's rule,
//! docs/operations.md); `--trusted-ca-file` only gives the CA, and `--client-cert-auth` without any CA file is
//! an error.
//!
//! # Result
//!
//! [`parse`] returns [`Parsed::Run`] with the configuration, [`Parsed::Help`] or
//! [`Parsed::Version`]; every problem is a [`ConfigError::Usage`] whose message is one line
//! naming the flag or the environment variable at fault. The binary prints it followed by
//! [`usage`] on stderr and exits with status 2 (docs/operations.md); help goes to stdout with status 0.
//! Files named by flags are not opened here, except the `-CF`/`-peers-file` peer list, which
//! is read while parsing. Flags of features this server does not have (`-config`,
//! `--discovery-srv`, `--discovery-proxy`) are rejected with a clear
//! message rather than silently ignored; `-w`, `-cpuprofile`, `--max-snapshots`,
//! `--max-wals` and `--enable-v2` are accepted and have no effect.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

mod addresses;
mod flags;
mod scan;
use addresses::{parse_endpoint, parse_initial_cluster, peer_list, resolve_side};
use flags::Setting as S;
pub use flags::usage;
use flags::{Setting, env_vars};
use scan::{Given, Settings, Source, truthy};

const DEFAULT_NAME: &str = "default-name";
const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_CLIENT_PORT: u16 = 4001;
const DEFAULT_PEER_PORT: u16 = 7001;
const DEFAULT_TOKEN: &str = "etcd-cluster";
const DEFAULT_HISTORY: usize = 1000;
const DEFAULT_MAX_RETRY: u32 = 3;
const DEFAULT_MAX_CLUSTER_SIZE: usize = 9;
const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;
const DEFAULT_HEARTBEAT_MS: u64 = 50;
const DEFAULT_ELECTION_MS: u64 = 200;
const DEFAULT_PROXY_FAILURE_WAIT_MS: u64 = 5000;
const DEFAULT_PROXY_REFRESH_MS: u64 = 30000;
/// Seconds a client has to send a request's headers (and an idle kept-alive connection
/// stays open); see docs/limits.md.
pub const DEFAULT_HEADER_TIMEOUT_S: u64 = 60;
/// Seconds the rest of a request body may take once the server waits for it.
pub const DEFAULT_BODY_TIMEOUT_S: u64 = 60;
/// Seconds a client may leave an answer unread before its connection is closed.
pub const DEFAULT_WRITE_TIMEOUT_S: u64 = 60;
/// Largest request body: 1.5 MiB, etcd 3.x's `--max-request-bytes` default (values up to
/// 1 MiB fit with room to spare).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 3 << 19;

/// What the command line asks for.
// `Run` is much larger than the other variants; the value is built once per process, so
// boxing it would only make the callers' pattern matching noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Start the server with this configuration.
    Run(Config),
    /// `-version` / `--version`: print the version and exit 0.
    Version,
    /// `-h`, `-help`, `--help`: print [`usage`] to stdout and exit 0.
    Help,
}

/// A command line or environment problem. The binary prints the message and [`usage`] on
/// stderr and exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// One-line description naming the flag or variable at fault.
    Usage(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Usage(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ConfigError {}

fn usage_error(message: impl Into<String>) -> ConfigError {
    ConfigError::Usage(message.into())
}

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterState {
    /// Bootstrap a new cluster (default).
    #[default]
    New,
    /// Join a cluster that already runs.
    Existing,
}

impl ClusterState {
    /// The flag spelling: `new` or `existing`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterState::New => "new",
            ClusterState::Existing => "existing",
        }
    }
}

impl fmt::Display for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TLS files of one listener (client or peer side).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// PEM certificate chain presented by this node.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// PEM CA bundle used to verify the other end's certificate.
    pub ca: Option<PathBuf>,
    /// Require a client certificate chained to `ca` (implies `ca` is set).
    pub client_cert_auth: bool,
}

impl TlsFiles {
    /// True when the side serves HTTPS (certificate and key are both given).
    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}

/// How much of a listen address the command line gave: nothing, a host only (v0.1's `-cl`
/// and `-sl`), or a host and a port (`--listen-client-urls`, `--listen-peer-urls`, or `-cl`
/// with a port). A restarted member listens where the command line says; what it did not say
/// follows the advertised URLs saved in the data directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListenGiven {
    #[default]
    No,
    Host,
    HostAndPort,
}

/// `--proxy`: off (a member), on (a proxy), readonly (a proxy that refuses writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProxyMode {
    #[default]
    Off,
    On,
    ReadOnly,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Node name (`-n`, `-name`, `--name`); never blank.
    pub name: String,
    /// Data directory (`-d`, `-data-dir`, `--data-dir`); default `<name>.etcd`.
    pub data_dir: PathBuf,
    /// Advertised client URL with scheme, e.g. `http://127.0.0.1:4001`.
    pub client_url: String,
    /// Client listen address `host:port`.
    pub client_listen: String,
    /// What the command line said about `client_listen` (a restart keeps it; the rest
    /// follows the identity saved in the data directory).
    pub client_listen_given: ListenGiven,
    /// Advertised peer URL with scheme, e.g. `http://127.0.0.1:7001`.
    pub peer_url: String,
    /// Peer listen address `host:port`.
    pub peer_listen: String,
    /// What the command line said about `peer_listen`.
    pub peer_listen_given: ListenGiven,
    /// Peers to join, as `host:port` (`-C`, `-peers`, `-CF`, `-peers-file`).
    pub join: Vec<String>,
    /// `--initial-cluster` `name=URL` pairs in command line order.
    pub initial_cluster: Vec<(String, String)>,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`; default `etcd-cluster`.
    pub initial_cluster_token: String,
    /// `-f`/`-force`: discard this server's files in the data directory first.
    pub force: bool,
    /// `--force-new-cluster`: restart from this member's data as a cluster of one.
    pub force_new_cluster: bool,
    /// `--discovery`: bootstrap through this discovery URL (a new member only).
    pub discovery: Option<String>,
    /// `--discovery-fallback proxy`: become a proxy when discovery finds the cluster full
    /// (default: exit with an error).
    pub discovery_fallback_proxy: bool,
    /// `--proxy`: serve the client API by forwarding to the cluster's members.
    pub proxy: ProxyMode,
    /// `--proxy-failure-wait` (ms): how long a failed member is left alone.
    pub proxy_failure_wait_ms: u64,
    /// `--proxy-refresh-interval` (ms): how often the member list is refreshed.
    pub proxy_refresh_ms: u64,
    /// Number of events kept for watches (`-m`, `-max-result-buffer`); default 1000.
    pub history_size: usize,
    /// Join attempts (`-r`, `-max-retry-attempts`); default 3.
    pub max_retry: u32,
    /// Maximum cluster size (`-maxsize`, `-max-cluster-size`); default 9.
    pub max_cluster_size: usize,
    /// `-snapshot` was given (snapshots are always on; kept for information).
    pub snapshot: bool,
    /// Writes (commands) applied between snapshots; default 100000 (as etcd 3.x), never 0.
    pub snapshot_count: u64,
    /// Client-port TLS.
    pub client_tls: TlsFiles,
    /// Peer-port TLS.
    pub peer_tls: TlsFiles,
    /// 0 normal, 1 verbose (`-v`), 2 very verbose (`-vv`, `--debug`).
    pub verbosity: u8,
    /// Allowed CORS origins (`-cors`); empty = no CORS headers.
    pub cors: Vec<String>,
    /// Raft heartbeat interval in milliseconds; default 50.
    pub heartbeat_ms: u64,
    /// Raft election timeout in milliseconds; default 200, always above `heartbeat_ms`.
    pub election_ms: u64,
    /// Most open client connections (`--max-connections`); 0 (the default) derives the cap
    /// from the open-files limit at start-up (`server::RESERVED_FDS` kept back).
    pub max_connections: usize,
    /// Seconds to send a request's headers, and the idle time of a kept-alive connection
    /// (`--client-header-timeout`); 0 = no limit.
    pub header_timeout_s: u64,
    /// Seconds for the rest of a request body once the server waits for it
    /// (`--client-body-timeout`); 0 = no limit.
    pub body_timeout_s: u64,
    /// Seconds a client may leave an answer unread (`--client-write-timeout`); 0 = no limit.
    pub write_timeout_s: u64,
    /// Largest request body in bytes (`--max-request-bytes`, etcd 3.x's flag); at least 1024.
    pub max_request_bytes: usize,
}

impl Default for Config {
    /// The v0.1 defaults: what `etcd` with no flags and no environment runs with.
    fn default() -> Self {
        Config {
            name: DEFAULT_NAME.to_string(),
            data_dir: PathBuf::from(format!("{DEFAULT_NAME}.etcd")),
            client_url: format!("http://{DEFAULT_HOST}:{DEFAULT_CLIENT_PORT}"),
            client_listen: format!("{DEFAULT_HOST}:{DEFAULT_CLIENT_PORT}"),
            client_listen_given: ListenGiven::No,
            peer_url: format!("http://{DEFAULT_HOST}:{DEFAULT_PEER_PORT}"),
            peer_listen: format!("{DEFAULT_HOST}:{DEFAULT_PEER_PORT}"),
            peer_listen_given: ListenGiven::No,
            join: Vec::new(),
            initial_cluster: Vec::new(),
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: DEFAULT_TOKEN.to_string(),
            force: false,
            force_new_cluster: false,
            discovery: None,
            discovery_fallback_proxy: false,
            proxy: ProxyMode::Off,
            proxy_failure_wait_ms: DEFAULT_PROXY_FAILURE_WAIT_MS,
            proxy_refresh_ms: DEFAULT_PROXY_REFRESH_MS,
            history_size: DEFAULT_HISTORY,
            max_retry: DEFAULT_MAX_RETRY,
            max_cluster_size: DEFAULT_MAX_CLUSTER_SIZE,
            snapshot: false,
            snapshot_count: DEFAULT_SNAPSHOT_COUNT,
            client_tls: TlsFiles::default(),
            peer_tls: TlsFiles::default(),
            verbosity: 0,
            cors: Vec::new(),
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            election_ms: DEFAULT_ELECTION_MS,
            max_connections: 0,
            header_timeout_s: DEFAULT_HEADER_TIMEOUT_S,
            body_timeout_s: DEFAULT_BODY_TIMEOUT_S,
            write_timeout_s: DEFAULT_WRITE_TIMEOUT_S,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// Parses the command line (`args` without the program name) and the environment (`env`
/// looks a variable up, e.g. `&|k| std::env::var(k).ok()`). See the module documentation for
/// the syntax and the precedence rules.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Parsed, ConfigError> {
    let Some(from_args) = scan::scan(args)? else {
        return Ok(Parsed::Help);
    };
    let mut map: BTreeMap<Setting, Given> = BTreeMap::new();
    for item in from_args {
        map.insert(item.setting.group(), item);
    }
    if map.get(&S::Version).is_some_and(|g| truthy(&g.value)) {
        return Ok(Parsed::Version);
    }
    let on_command_line: BTreeSet<Setting> = map.keys().copied().collect();
    for (var, setting) in env_vars() {
        let group = setting.group();
        if on_command_line.contains(&group) {
            continue;
        }
        if let Some(value) = env(&var).filter(|v| !v.is_empty()) {
            map.insert(
                group,
                Given {
                    setting,
                    value,
                    source: Source::Env(var),
                },
            );
        }
    }
    build(&Settings { map }).map(Parsed::Run)
}

// ---------------------------------------------------------------------------------------
// Building the Config
// ---------------------------------------------------------------------------------------

/// Names used in the messages about one side's TLS files.
struct TlsNames {
    cert: Setting,
    key: Setting,
    ca_auth: Setting,
    trusted_ca: Setting,
    cert_auth: Setting,
    pair: &'static str,
    auth_without_ca: &'static str,
    ca_without_cert: &'static str,
    https_hint: &'static str,
}

const CLIENT_TLS: TlsNames = TlsNames {
    cert: S::ClientCert,
    key: S::ClientKey,
    ca_auth: S::ClientCaAuth,
    trusted_ca: S::ClientTrustedCa,
    cert_auth: S::ClientCertAuth,
    pair: "-clientCert and -clientKey must be given together",
    auth_without_ca: "--client-cert-auth needs a CA file (--trusted-ca-file, --ca-file or -clientCAFile)",
    ca_without_cert: "a client CA file (-clientCAFile, --ca-file, --trusted-ca-file) needs -clientCert and -clientKey",
    https_hint: "https needs -clientCert and -clientKey (--cert-file and --key-file)",
};

const PEER_TLS: TlsNames = TlsNames {
    cert: S::PeerCert,
    key: S::PeerKey,
    ca_auth: S::PeerCaAuth,
    trusted_ca: S::PeerTrustedCa,
    cert_auth: S::PeerCertAuth,
    pair: "-serverCert and -serverKey must be given together",
    auth_without_ca: "--peer-client-cert-auth needs a CA file (--peer-trusted-ca-file, --peer-ca-file or -serverCAFile)",
    ca_without_cert: "a peer CA file (-serverCAFile, --peer-ca-file, --peer-trusted-ca-file) needs -serverCert and -serverKey",
    https_hint: "https needs -serverCert and -serverKey (--peer-cert-file and --peer-key-file)",
};

fn tls_files(s: &Settings, names: &TlsNames) -> Result<TlsFiles, ConfigError> {
    let cert = s.path(names.cert);
    let key = s.path(names.key);
    if cert.is_some() != key.is_some() {
        return Err(usage_error(names.pair));
    }
    let ca_with_auth = s.path(names.ca_auth);
    let auth = s.flag(names.cert_auth) || ca_with_auth.is_some();
    let ca = ca_with_auth.or_else(|| s.path(names.trusted_ca));
    if auth && ca.is_none() {
        return Err(usage_error(names.auth_without_ca));
    }
    if ca.is_some() && cert.is_none() {
        return Err(usage_error(names.ca_without_cert));
    }
    Ok(TlsFiles {
        cert,
        key,
        ca,
        client_cert_auth: auth,
    })
}

fn build(s: &Settings) -> Result<Config, ConfigError> {
    // Features this server does not have.
    if s.text(S::ConfigFile).is_some() {
        return Err(usage_error(
            "-config files are not supported; use flags or ETCD_* variables",
        ));
    }
    if s.text(S::DiscoverySrv).is_some() {
        return Err(usage_error(
            "--discovery-srv (DNS SRV discovery) is not supported; use --discovery with a token URL or --initial-cluster",
        ));
    }
    if s.text(S::DiscoveryProxy).is_some() {
        return Err(usage_error(
            "--discovery-proxy is not supported; the discovery URL is reached directly",
        ));
    }
    let proxy = match s.text(S::Proxy) {
        None => ProxyMode::Off,
        Some(g) => match g.value.trim() {
            "off" => ProxyMode::Off,
            "on" => ProxyMode::On,
            "readonly" => ProxyMode::ReadOnly,
            _ => return Err(g.invalid("must be \"off\", \"on\" or \"readonly\"")),
        },
    };
    let discovery = match s.text(S::Discovery) {
        None => None,
        Some(g) => {
            let url = g.value.trim().to_string();
            let ok = url.parse::<hyper::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
            });
            if !ok {
                return Err(g.invalid(
                    "expected an http:// or https:// URL, e.g. https://discovery.etcd.io/<token>",
                ));
            }
            if s.get(S::InitialCluster).is_some() || s.get(S::JoinList).is_some() {
                return Err(usage_error(
                    "--discovery cannot be combined with --initial-cluster or -C/-peers: the discovery service gives the member list",
                ));
            }
            Some(url)
        }
    };
    let discovery_fallback_proxy = match s.text(S::DiscoveryFallback) {
        None => false,
        Some(g) => match g.value.trim() {
            "exit" => false,
            "proxy" => true,
            _ => return Err(g.invalid("must be \"exit\" or \"proxy\"")),
        },
    };
    if proxy != ProxyMode::Off && discovery.is_none() && s.get(S::InitialCluster).is_none() {
        return Err(usage_error(
            "--proxy needs the cluster's members: --initial-cluster or --discovery",
        ));
    }
    let proxy_failure_wait_ms = s.number(S::ProxyFailureWait, DEFAULT_PROXY_FAILURE_WAIT_MS, 1)?;
    let proxy_refresh_ms = s.number(S::ProxyRefreshInterval, DEFAULT_PROXY_REFRESH_MS, 1)?;
    s.number::<u64>(S::ProxyTimeout, 0, 0)?;
    s.number::<u64>(S::MaxSnapshots, 0, 0)?;
    s.number::<u64>(S::MaxWals, 0, 0)?;

    let name = match s.get(S::Name) {
        Some(g) if g.value.trim().is_empty() => return Err(usage_error("node name is required")),
        Some(g) => g.value.clone(),
        None => DEFAULT_NAME.to_string(),
    };
    let data_dir = s
        .path(S::DataDir)
        .unwrap_or_else(|| PathBuf::from(format!("{name}.etcd")));

    let client_tls = tls_files(s, &CLIENT_TLS)?;
    let peer_tls = tls_files(s, &PEER_TLS)?;

    let initial_cluster = match s.get(S::InitialCluster) {
        Some(g) => parse_initial_cluster(g)?,
        None => Vec::new(),
    };
    let own_entry = match s.get(S::InitialCluster) {
        // A proxy is not among the members it lists.
        Some(_) if proxy != ProxyMode::Off => None,
        Some(g) if !initial_cluster.is_empty() => {
            let Some((_, url)) = initial_cluster.iter().find(|(n, _)| *n == name) else {
                return Err(usage_error(format!(
                    "--initial-cluster has no entry for this node's name {name:?}"
                )));
            };
            let ep = parse_endpoint(url).map_err(|why| g.invalid(&why))?;
            Some((g, ep))
        }
        _ => None,
    };
    let initial_cluster_state = match s.get(S::InitialClusterState) {
        None => ClusterState::New,
        Some(g) => match g.value.trim() {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            _ => return Err(g.invalid("must be \"new\" or \"existing\"")),
        },
    };
    let initial_cluster_token = s
        .text(S::InitialClusterToken)
        .map(|g| g.value.trim().to_string())
        .unwrap_or_else(|| DEFAULT_TOKEN.to_string());

    let (client_url, client_listen, client_listen_given) = resolve_side(
        s,
        S::ClientAdvertise,
        S::ClientListen,
        None,
        DEFAULT_CLIENT_PORT,
        client_tls.enabled(),
        CLIENT_TLS.https_hint,
    )?;
    let (peer_url, peer_listen, peer_listen_given) = resolve_side(
        s,
        S::PeerAdvertise,
        S::PeerListen,
        own_entry,
        DEFAULT_PEER_PORT,
        peer_tls.enabled(),
        PEER_TLS.https_hint,
    )?;

    let join = match s.get(S::JoinList) {
        Some(g) if g.setting == S::JoinFile && !g.value.trim().is_empty() => {
            let content = std::fs::read_to_string(&g.value).map_err(|e| {
                usage_error(format!(
                    "cannot read peers file {:?} ({}): {e}",
                    g.value, g.source
                ))
            })?;
            peer_list(g, &content)?
        }
        Some(g) if g.setting == S::JoinList => peer_list(g, &g.value)?,
        _ => Vec::new(),
    };

    let heartbeat_ms = s.number(S::Heartbeat, DEFAULT_HEARTBEAT_MS, 1)?;
    let election_ms = s.number(S::Election, DEFAULT_ELECTION_MS, 1)?;
    if election_ms <= heartbeat_ms {
        return Err(usage_error(format!(
            "election timeout ({election_ms} ms) must be greater than the heartbeat interval ({heartbeat_ms} ms)"
        )));
    }

    let verbosity = if s.flag(S::VeryVerbose) {
        2
    } else if s.flag(S::Verbose) {
        1
    } else {
        0
    };
    let cors = s
        .get(S::Cors)
        .map(|g| {
            g.value
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();

    Ok(Config {
        name,
        data_dir,
        client_url,
        client_listen,
        client_listen_given,
        peer_url,
        peer_listen,
        peer_listen_given,
        join,
        initial_cluster,
        initial_cluster_state,
        initial_cluster_token,
        force: s.flag(S::Force),
        force_new_cluster: s.flag(S::ForceNewCluster),
        discovery,
        discovery_fallback_proxy,
        proxy,
        proxy_failure_wait_ms,
        proxy_refresh_ms,
        history_size: s.number(S::HistorySize, DEFAULT_HISTORY, 1)?,
        max_retry: s.number(S::MaxRetry, DEFAULT_MAX_RETRY, 0)?,
        max_cluster_size: s.number(S::MaxClusterSize, DEFAULT_MAX_CLUSTER_SIZE, 1)?,
        snapshot: s.flag(S::Snapshot),
        snapshot_count: s.number(S::SnapshotCount, DEFAULT_SNAPSHOT_COUNT, 1)?,
        client_tls,
        peer_tls,
        verbosity,
        cors,
        heartbeat_ms,
        election_ms,
        max_connections: s.number(S::MaxConnections, 0, 0)?,
        header_timeout_s: s.number(S::HeaderTimeout, DEFAULT_HEADER_TIMEOUT_S, 0)?,
        body_timeout_s: s.number(S::BodyTimeout, DEFAULT_BODY_TIMEOUT_S, 0)?,
        write_timeout_s: s.number(S::WriteTimeout, DEFAULT_WRITE_TIMEOUT_S, 0)?,
        max_request_bytes: s.number(S::MaxRequestBytes, DEFAULT_MAX_REQUEST_BYTES, 1024)?,
    })
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests;
