//! The flag table: every flag of the three eras (v0.1, v0.2-0.4, 2.x), what it sets, its
//! environment variable, and the usage text built from it.

/// What a flag sets. Aliases share a variant; a few variants share a *group* (see
/// [`Setting::group`]) because they are different spellings of one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Setting {
    Name,
    DataDir,
    ClientAdvertise,
    ClientListen,
    ClientListenHost,
    PeerAdvertise,
    PeerListen,
    PeerListenHost,
    JoinList,
    JoinFile,
    InitialCluster,
    InitialClusterState,
    InitialClusterToken,
    Force,
    HistorySize,
    MaxRetry,
    MaxClusterSize,
    Snapshot,
    SnapshotCount,
    ClientCert,
    ClientKey,
    ClientCaAuth,
    ClientTrustedCa,
    ClientCertAuth,
    PeerCert,
    PeerKey,
    PeerCaAuth,
    PeerTrustedCa,
    PeerCertAuth,
    Verbose,
    VeryVerbose,
    Cors,
    Heartbeat,
    Election,
    Version,
    ConfigFile,
    Discovery,
    DiscoveryFallback,
    DiscoveryProxy,
    DiscoverySrv,
    ForceNewCluster,
    Proxy,
    ProxyFailureWait,
    ProxyRefreshInterval,
    ProxyTimeout,
    EnableV2,
    MaxSnapshots,
    MaxWals,
    WebUi,
    CpuProfile,
    MaxConnections,
    HeaderTimeout,
    BodyTimeout,
    WriteTimeout,
    MaxRequestBytes,
}

impl Setting {
    /// The setting whose slot this one writes: the last of a group on the command line wins,
    /// and the environment is consulted for a group only when no member was on the command
    /// line.
    pub(super) fn group(self) -> Setting {
        match self {
            Setting::ClientListenHost => Setting::ClientListen,
            Setting::PeerListenHost => Setting::PeerListen,
            Setting::JoinFile => Setting::JoinList,
            other => other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Takes a string value.
    Text,
    /// Takes an unsigned decimal number.
    Number,
    /// Takes no value, or an attached Go boolean.
    Bool,
}

pub(super) struct Flag {
    pub(super) name: &'static str,
    pub(super) setting: Setting,
    pub(super) kind: Kind,
    /// Read from `ETCD_<NAME>` too.
    pub(super) env: bool,
    /// Placeholder for the value in the usage text.
    pub(super) arg: &'static str,
    pub(super) help: &'static str,
}

pub(super) const fn text(
    name: &'static str,
    setting: Setting,
    env: bool,
    arg: &'static str,
    help: &'static str,
) -> Flag {
    Flag {
        name,
        setting,
        kind: Kind::Text,
        env,
        arg,
        help,
    }
}

pub(super) const fn number(
    name: &'static str,
    setting: Setting,
    env: bool,
    arg: &'static str,
    help: &'static str,
) -> Flag {
    Flag {
        name,
        setting,
        kind: Kind::Number,
        env,
        arg,
        help,
    }
}

pub(super) const fn boolean(
    name: &'static str,
    setting: Setting,
    env: bool,
    help: &'static str,
) -> Flag {
    Flag {
        name,
        setting,
        kind: Kind::Bool,
        env,
        arg: "",
        help,
    }
}

use Setting as S;

// The tables stay one flag per line: easier to read and to compare with docs/api.md and docs/operations.md than the
// exploded form rustfmt would produce.
#[rustfmt::skip]
pub(super) const V01_FLAGS: &[Flag] = &[
    text("n", S::Name, false, "<name>", "node name (default \"default-name\"; must not be blank)"),
    text("c", S::ClientAdvertise, false, "<host:port>", "advertised client address (default 127.0.0.1:4001)"),
    text("s", S::PeerAdvertise, false, "<host:port>", "advertised peer (raft) address (default 127.0.0.1:7001)"),
    text("cl", S::ClientListenHost, false, "<host>", "client listen host; the port is the one of -c (default: host of -c)"),
    text("sl", S::PeerListenHost, false, "<host>", "peer listen host; the port is the one of -s (default: host of -s)"),
    text("C", S::JoinList, false, "<host:port,...>", "comma list of peer addresses to join (default: start a new cluster)"),
    text("CF", S::JoinFile, false, "<file>", "file holding the comma list of peers to join (default none)"),
    text("d", S::DataDir, false, "<dir>", "data directory (default \"<name>.etcd\")"),
    boolean("f", S::Force, false, "discard this server's files in the data directory before starting (data loss; default false)"),
    number("m", S::HistorySize, false, "<n>", "number of events kept for watches (default 1000)"),
    number("r", S::MaxRetry, false, "<n>", "join attempts, 10 s apart (default 3)"),
    number("maxsize", S::MaxClusterSize, false, "<n>", "maximum number of cluster members (default 9)"),
    boolean("snapshot", S::Snapshot, true, "accepted for compatibility; snapshots are always on"),
    number("snapshotCount", S::SnapshotCount, false, "<n>", "writes applied between snapshots (default 100000) [ETCD_SNAPSHOTCOUNT]"),
    text("w", S::WebUi, false, "<host:port>", "accepted and ignored (no bundled web UI)"),
    text("clientCert", S::ClientCert, false, "<file>", "client port certificate (PEM); with -clientKey the client port serves https (default none)"),
    text("clientKey", S::ClientKey, false, "<file>", "client port private key (PEM) (default none)"),
    text("clientCAFile", S::ClientCaAuth, false, "<file>", "CA (PEM) that client certificates must chain to; makes them required (default none)"),
    text("serverCert", S::PeerCert, false, "<file>", "peer port certificate (PEM); with -serverKey the peer port serves https (default none)"),
    text("serverKey", S::PeerKey, false, "<file>", "peer port private key (PEM) (default none)"),
    text("serverCAFile", S::PeerCaAuth, false, "<file>", "CA (PEM) that peer certificates must chain to; makes them required (default none)"),
    boolean("v", S::Verbose, false, "verbose logging, not the version (default false) [ETCD_VERBOSE]"),
    boolean("vv", S::VeryVerbose, false, "very verbose logging (default false) [ETCD_VERY_VERBOSE]"),
    boolean("version", S::Version, false, "print the version and exit"),
    text("cors", S::Cors, true, "<origins>", "comma list of allowed CORS origins, or * (default none)"),
    text("cpuprofile", S::CpuProfile, false, "<file>", "accepted and ignored"),
];

#[rustfmt::skip]
pub(super) const V02_FLAGS: &[Flag] = &[
    text("name", S::Name, true, "<name>", "same as -n"),
    text("data-dir", S::DataDir, true, "<dir>", "same as -d"),
    text("addr", S::ClientAdvertise, true, "<host:port>", "same as -c"),
    text("bind-addr", S::ClientListen, true, "<host[:port]>", "client listen address; without port, the port of -addr (default: -addr)"),
    text("peer-addr", S::PeerAdvertise, true, "<host:port>", "same as -s"),
    text("peer-bind-addr", S::PeerListen, true, "<host[:port]>", "peer listen address; without port, the port of -peer-addr (default: -peer-addr)"),
    text("peers", S::JoinList, true, "<host:port,...>", "same as -C"),
    text("peers-file", S::JoinFile, true, "<file>", "same as -CF"),
    number("max-result-buffer", S::HistorySize, true, "<n>", "same as -m"),
    number("max-retry-attempts", S::MaxRetry, true, "<n>", "same as -r"),
    number("max-cluster-size", S::MaxClusterSize, true, "<n>", "same as -maxsize"),
    number("snapshot-count", S::SnapshotCount, true, "<n>", "same as -snapshotCount"),
    text("cert-file", S::ClientCert, true, "<file>", "same as -clientCert"),
    text("key-file", S::ClientKey, true, "<file>", "same as -clientKey"),
    text("ca-file", S::ClientCaAuth, true, "<file>", "same as -clientCAFile (CA and required client certificates)"),
    text("peer-cert-file", S::PeerCert, true, "<file>", "same as -serverCert"),
    text("peer-key-file", S::PeerKey, true, "<file>", "same as -serverKey"),
    text("peer-ca-file", S::PeerCaAuth, true, "<file>", "same as -serverCAFile (CA and required peer certificates)"),
    boolean("force", S::Force, true, "same as -f"),
    number("peer-heartbeat-interval", S::Heartbeat, true, "<ms>", "raft heartbeat interval in ms (default 50)"),
    number("peer-heartbeat-timeout", S::Heartbeat, true, "<ms>", "same as -peer-heartbeat-interval (v0.3 name)"),
    number("peer-election-timeout", S::Election, true, "<ms>", "raft election timeout in ms, above the heartbeat (default 200)"),
    boolean("vvv", S::VeryVerbose, false, "same as -vv [ETCD_VERY_VERY_VERBOSE]"),
    text("config", S::ConfigFile, false, "<file>", "not supported: configuration files (an error)"),
    text("discovery", S::Discovery, true, "<url>", "bootstrap a new cluster through a discovery service URL (etcd 2.x protocol)"),
];

#[rustfmt::skip]
pub(super) const V2_FLAGS: &[Flag] = &[
    text("listen-client-urls", S::ClientListen, true, "<urls>", "client URLs to listen on, the first is used (default: the advertised client URL)"),
    text("advertise-client-urls", S::ClientAdvertise, true, "<urls>", "advertised client URLs, the first is used (default: the listen URL, else http://127.0.0.1:4001)"),
    text("listen-peer-urls", S::PeerListen, true, "<urls>", "peer URLs to listen on, the first is used (default: the advertised peer URL)"),
    text("initial-advertise-peer-urls", S::PeerAdvertise, true, "<urls>", "advertised peer URLs, the first is used (default: the listen URL, else this node's --initial-cluster entry, else http://127.0.0.1:7001)"),
    text("initial-cluster", S::InitialCluster, true, "<name=url,...>", "initial cluster members; must name this node when given (default none)"),
    text("initial-cluster-state", S::InitialClusterState, true, "<new|existing>", "bootstrap a new cluster or join an existing one (default new)"),
    text("initial-cluster-token", S::InitialClusterToken, true, "<token>", "initial cluster token (default \"etcd-cluster\")"),
    text("trusted-ca-file", S::ClientTrustedCa, true, "<file>", "CA (PEM) for client certificates, enforced with --client-cert-auth (default none)"),
    boolean("client-cert-auth", S::ClientCertAuth, true, "require client certificates chained to the CA (default false)"),
    text("peer-trusted-ca-file", S::PeerTrustedCa, true, "<file>", "CA (PEM) for peer certificates, enforced with --peer-client-cert-auth (default none)"),
    boolean("peer-client-cert-auth", S::PeerCertAuth, true, "require peer certificates chained to the CA (default false)"),
    number("heartbeat-interval", S::Heartbeat, true, "<ms>", "same as -peer-heartbeat-interval (default 50)"),
    number("election-timeout", S::Election, true, "<ms>", "same as -peer-election-timeout (default 200)"),
    boolean("debug", S::VeryVerbose, true, "same as -vv"),
    boolean("force-new-cluster", S::ForceNewCluster, true, "start from this member's data as a cluster of one, the other members removed (disaster recovery; see docs/operations.md)"),
    boolean("enable-v2", S::EnableV2, true, "accepted and ignored (the v2 API is always on)"),
    number("max-snapshots", S::MaxSnapshots, true, "<n>", "accepted and ignored"),
    number("max-wals", S::MaxWals, true, "<n>", "accepted and ignored"),
    text("proxy", S::Proxy, true, "<off|on|readonly>", "run as a proxy to the cluster of --initial-cluster or --discovery, holding no data; readonly refuses writes (default off)"),
    number("proxy-failure-wait", S::ProxyFailureWait, true, "<ms>", "how long a proxy leaves a failed member alone (default 5000)"),
    number("proxy-refresh-interval", S::ProxyRefreshInterval, true, "<ms>", "how often a proxy refreshes the member list (default 30000)"),
    number("proxy-dial-timeout", S::ProxyTimeout, true, "<ms>", "accepted and ignored"),
    number("proxy-write-timeout", S::ProxyTimeout, true, "<ms>", "accepted and ignored"),
    number("proxy-read-timeout", S::ProxyTimeout, true, "<ms>", "accepted and ignored"),
    text("discovery-fallback", S::DiscoveryFallback, true, "<exit|proxy>", "what a member does when discovery finds the cluster full (default exit)"),
    text("discovery-proxy", S::DiscoveryProxy, true, "<url>", "not supported: an HTTP proxy for the discovery service (an error)"),
    text("discovery-srv", S::DiscoverySrv, true, "<domain>", "not supported: discovery through DNS SRV records (an error)"),
];

/// Limits of this server (docs/limits.md); `max-request-bytes` is etcd 3.x's flag, the others
/// etcd did not have.
#[rustfmt::skip]
pub(super) const LIMIT_FLAGS: &[Flag] = &[
    number("max-request-bytes", S::MaxRequestBytes, true, "<n>", "largest request body in bytes; larger ones get 413 (default 1572864, as etcd 3.x)"),
    number("max-connections", S::MaxConnections, true, "<n>", "most open client connections; more are closed at once (default 0: the open-files limit less 2048)"),
    number("client-header-timeout", S::HeaderTimeout, true, "<s>", "seconds to send a request's headers, and to keep an idle connection open; 0 = no limit (default 60)"),
    number("client-body-timeout", S::BodyTimeout, true, "<s>", "seconds for the rest of a request body once the server waits for it; 0 = no limit (default 60)"),
    number("client-write-timeout", S::WriteTimeout, true, "<s>", "seconds a client may leave an answer unread before its connection is closed; 0 = no limit (default 60)"),
];

/// Usage sections, in the order they are printed, with the dash style shown there (any
/// name works with one or two dashes). Each name appears once; later sections only list the
/// names that are new in their era.
pub(super) const SECTIONS: &[(&str, &str, &[Flag])] = &[
    ("Flags of etcd v0.1", "-", V01_FLAGS),
    ("Long names of etcd v0.2 - v0.4", "-", V02_FLAGS),
    (
        "Flags of etcd 2.x (the long names above work too: --name, --data-dir, --cert-file, ...)",
        "--",
        V2_FLAGS,
    ),
    (
        "Limits of this server (see docs/limits.md)",
        "--",
        LIMIT_FLAGS,
    ),
];

/// Historical environment names that do not follow the `ETCD_<LONG_NAME>` rule. They are
/// consulted before the regular names, which therefore win when both are set.
pub(super) const EXTRA_ENV: &[(&str, Setting)] = &[
    ("ETCD_SNAPSHOTCOUNT", S::SnapshotCount),
    ("ETCD_VERBOSE", S::Verbose),
    ("ETCD_VERY_VERBOSE", S::VeryVerbose),
    ("ETCD_VERY_VERY_VERBOSE", S::VeryVerbose),
];

pub(super) fn all_flags() -> impl Iterator<Item = &'static Flag> {
    SECTIONS.iter().flat_map(|(_, _, flags)| flags.iter())
}

pub(super) fn lookup(name: &str) -> Option<&'static Flag> {
    all_flags().find(|flag| flag.name == name)
}

pub(super) fn env_name(flag_name: &str) -> String {
    format!("ETCD_{}", flag_name.to_ascii_uppercase().replace('-', "_"))
}

/// Every environment variable read, in the order of consultation (later wins).
pub(super) fn env_vars() -> Vec<(String, Setting)> {
    let extra = EXTRA_ENV
        .iter()
        .map(|(var, setting)| (var.to_string(), *setting));
    let regular = all_flags()
        .filter(|flag| flag.env)
        .map(|flag| (env_name(flag.name), flag.setting));
    extra.chain(regular).collect()
}

/// The full flag list, Go-like: one flag per line with its meaning, default and variable.
pub fn usage() -> String {
    let mut out = String::new();
    out.push_str("Usage: etcd [flags]\n\n");
    out.push_str(
        "Flags are written -flag value, -flag=value, --flag value or --flag=value.\n\
         Boolean flags take no value (-f) or an attached one (-f=false).\n\
         A command line flag wins over its ETCD_* variable, shown in [brackets].\n",
    );
    for (title, dash, flags) in SECTIONS {
        out.push('\n');
        out.push_str(title);
        out.push_str(":\n");
        for flag in flags.iter() {
            let head = if flag.arg.is_empty() {
                format!("{dash}{}", flag.name)
            } else {
                format!("{dash}{} {}", flag.name, flag.arg)
            };
            let env = if flag.env {
                format!(" [{}]", env_name(flag.name))
            } else {
                String::new()
            };
            out.push_str(&format!("  {head:<38} {}{env}\n", flag.help));
        }
    }
    out.push_str("\nOther:\n");
    out.push_str(&format!(
        "  {:<38} {}\n",
        "-h, -help, --help", "print this help and exit"
    ));
    out
}
