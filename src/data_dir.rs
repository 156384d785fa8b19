//! The data directory (docs/operations.md): the files this server owns in it, the lock that keeps
//! a second server out, `-f`, and the `info` file (the node's identity, v0.1's JSON).
//!
//! An existing `info` wins over the command line for the member's identity (name, advertised
//! URLs), as in v0.1, except for TLS: TLS files given on the command line win for their port
//! and the URL scheme follows (see [`Info`]). Where the member listens always comes from the
//! command line when it says so ([`listen_after_restart`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, ListenGiven};
use crate::error::{Error, Result};

/// The data file inside the data directory.
pub const DATA_FILE: &str = "etcd.redb";
/// The write-ahead log (the Raft log) inside the data directory.
pub const WAL_DIR: &str = "wal";
/// The identity file inside the data directory.
pub const INFO_FILE: &str = "info";

/// The node identity as v0.1 wrote it to `<data dir>/info`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Info {
    pub name: String,
    #[serde(rename = "raftURL")]
    pub raft_url: String,
    #[serde(rename = "etcdURL")]
    pub etcd_url: String,
    #[serde(rename = "webURL", default)]
    pub web_url: String,
    #[serde(rename = "raftListenHost", default)]
    pub raft_listen_host: String,
    #[serde(rename = "etcdListenHost", default)]
    pub etcd_listen_host: String,
    #[serde(rename = "raftTLS", default)]
    pub raft_tls: InfoTls,
    #[serde(rename = "etcdTLS", default)]
    pub etcd_tls: InfoTls,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InfoTls {
    #[serde(rename = "CertFile", default)]
    pub cert_file: String,
    #[serde(rename = "KeyFile", default)]
    pub key_file: String,
    #[serde(rename = "CAFile", default)]
    pub ca_file: String,
}

impl InfoTls {
    fn apply_to(&self, tls: &mut crate::config::TlsFiles) {
        let path = |p: &str| (!p.is_empty()).then(|| PathBuf::from(p));
        tls.cert = path(&self.cert_file);
        tls.key = path(&self.key_file);
        tls.ca = path(&self.ca_file);
        // v0.1 semantics: a CA file means client certificates are required.
        tls.client_cert_auth = tls.ca.is_some();
    }
}

/// `url` with the scheme its port now speaks.
fn with_scheme(url: &str, tls: bool) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    format!("{}://{rest}", if tls { "https" } else { "http" })
}

fn host_of(hostport: &str) -> &str {
    hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
}

fn port_of(url: &str) -> Option<&str> {
    url.rsplit_once(':').map(|(_, p)| p.trim_end_matches('/'))
}

fn path_str(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

impl Info {
    fn from_config(cfg: &Config) -> Info {
        Info {
            name: cfg.name.clone(),
            raft_url: cfg.peer_url.clone(),
            etcd_url: cfg.client_url.clone(),
            web_url: String::new(),
            raft_listen_host: host_of(&cfg.peer_listen).to_string(),
            etcd_listen_host: host_of(&cfg.client_listen).to_string(),
            raft_tls: InfoTls {
                cert_file: path_str(&cfg.peer_tls.cert),
                key_file: path_str(&cfg.peer_tls.key),
                ca_file: path_str(&cfg.peer_tls.ca),
            },
            etcd_tls: InfoTls {
                cert_file: path_str(&cfg.client_tls.cert),
                key_file: path_str(&cfg.client_tls.key),
                ca_file: path_str(&cfg.client_tls.ca),
            },
        }
    }

    /// Let the saved identity (name, URLs, listen hosts) win over the command line, as in
    /// v0.1. TLS is the exception that keeps a node safe: TLS files given on the command line
    /// win for their port (a `-clientCAFile` added later is never silently ignored), and the
    /// URL's scheme follows; without TLS flags the saved TLS files are used, so a node that
    /// advertised `https://` keeps serving it.
    fn apply_to(&self, cfg: &mut Config) {
        cfg.name = self.name.clone();
        cfg.peer_url = self.raft_url.clone();
        cfg.client_url = self.etcd_url.clone();
        if cfg.client_tls == Default::default() {
            self.etcd_tls.apply_to(&mut cfg.client_tls);
        }
        if cfg.peer_tls == Default::default() {
            self.raft_tls.apply_to(&mut cfg.peer_tls);
        }
        cfg.client_url = with_scheme(&cfg.client_url, cfg.client_tls.enabled());
        cfg.peer_url = with_scheme(&cfg.peer_url, cfg.peer_tls.enabled());
        cfg.peer_listen = listen_after_restart(
            &cfg.peer_listen,
            cfg.peer_listen_given,
            &self.raft_listen_host,
            &self.raft_url,
        );
        cfg.client_listen = listen_after_restart(
            &cfg.client_listen,
            cfg.client_listen_given,
            &self.etcd_listen_host,
            &self.etcd_url,
        );
    }

    /// 1-space indented JSON, like v0.1's `json.MarshalIndent(info, "", " ")`.
    fn to_pretty(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        self.serialize(&mut ser).expect("plain struct");
        out
    }
}

/// Where a restarted member listens: what the command line said wins (a member behind a port
/// mapping or a proxy listens elsewhere than it advertises); what it did not say follows the
/// saved identity, as in v0.1 (a restart with only `-d` and `-n` listens on the saved
/// advertised port, on the saved listen host).
fn listen_after_restart(
    listen: &str,
    given: ListenGiven,
    saved_host: &str,
    saved_url: &str,
) -> String {
    let Some(port) = port_of(saved_url) else {
        return listen.to_string();
    };
    match given {
        ListenGiven::HostAndPort => listen.to_string(),
        ListenGiven::Host => format!("{}:{port}", host_of(listen)),
        ListenGiven::No if saved_host.is_empty() => format!("{}:{port}", host_of(listen)),
        ListenGiven::No => format!("{saved_host}:{port}"),
    }
}

/// Write `info` atomically (see [`replace_file`]).
fn write_info(path: &Path, info: &Info) -> std::io::Result<()> {
    replace_file(path, &path.with_extension("tmp"), &info.to_pretty(), 0o666)
}

/// Replace the file at `path` with `bytes` so that a crash leaves either the old or the new
/// one whole: write them to `tmp` (created with `mode`, less the umask), sync it, rename it
/// over `path`, sync the directory. Blocking.
pub fn replace_file(path: &Path, tmp: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The lock file that keeps two servers out of one data directory.
pub const LOCK_FILE: &str = "lock";

/// Create the data directory, lock it, apply `-f`, and reconcile `info` with the command
/// line. The returned file holds the lock for as long as it lives: keep it until shutdown.
pub fn prepare_data_dir(cfg: &mut Config) -> Result<std::fs::File> {
    let dir = cfg.data_dir.clone();
    let io =
        |what: &str, p: &Path, e: std::io::Error| Error::Io(format!("{what} {}: {e}", p.display()));
    std::fs::create_dir_all(&dir).map_err(|e| io("cannot create data directory", &dir, e))?;
    // Lock before anything else: `-f` must never delete the files of a running server.
    let lock_path = dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io("cannot write", &lock_path, e))?;
    if lock.try_lock().is_err() {
        return Err(Error::Io(format!(
            "data directory {} is in use by another etcd process",
            dir.display()
        )));
    }
    let info_path = dir.join(INFO_FILE);
    if cfg.force {
        for f in [INFO_FILE, DATA_FILE, WAL_DIR] {
            let p = dir.join(f);
            let removed = if f == WAL_DIR {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match removed {
                Ok(()) => tracing::warn!(file = %p.display(), "removed (-f)"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("cannot remove", &p, e)),
            }
        }
    }
    match std::fs::read(&info_path) {
        Ok(bytes) => {
            let info: Info = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Config(format!(
                    "cannot read {}: {e} (start with -f to discard it)",
                    info_path.display()
                ))
            })?;
            let wanted = Info::from_config(cfg);
            if info.name != wanted.name
                || info.raft_url != wanted.raft_url
                || info.etcd_url != wanted.etcd_url
            {
                tracing::warn!(
                    file = %info_path.display(),
                    "using the identity saved in the data directory ({} {} {}); start with -f to change it",
                    info.name, info.raft_url, info.etcd_url
                );
            }
            info.apply_to(cfg);
            // Keep `info` in step with what this start actually serves (TLS may have changed).
            let now = Info::from_config(cfg);
            if now != info {
                write_info(&info_path, &now).map_err(|e| io("cannot write", &info_path, e))?;
            }
            Ok(lock)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_info(&info_path, &Info::from_config(cfg))
                .map_err(|e| io("cannot write", &info_path, e))
                .map(|()| lock)
        }
        Err(e) => Err(io("cannot read", &info_path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_listens_where_the_command_line_says() {
        let saved = "http://10.0.0.1:7001";
        // A listen address with a port on the command line wins over the saved identity.
        assert_eq!(
            listen_after_restart(
                "127.0.0.1:17001",
                ListenGiven::HostAndPort,
                "10.0.0.1",
                saved
            ),
            "127.0.0.1:17001"
        );
        // A host only (v0.1's -sl): that host, the saved advertised port.
        assert_eq!(
            listen_after_restart("0.0.0.0:7009", ListenGiven::Host, "10.0.0.1", saved),
            "0.0.0.0:7001"
        );
        // Nothing said: the saved listen host and advertised port, as v0.1 restarted.
        assert_eq!(
            listen_after_restart("127.0.0.1:7005", ListenGiven::No, "10.0.0.1", saved),
            "10.0.0.1:7001"
        );
        assert_eq!(
            listen_after_restart("127.0.0.1:7005", ListenGiven::No, "", saved),
            "127.0.0.1:7001"
        );
    }

    #[test]
    fn restart_keeps_the_identity_but_not_the_old_listen_ports() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Config {
            name: "n1".into(),
            data_dir: dir.path().join("n1"),
            peer_url: "http://127.0.0.1:7001".into(),
            peer_listen: "127.0.0.1:17001".into(),
            peer_listen_given: ListenGiven::HostAndPort,
            client_url: "http://127.0.0.1:4001".into(),
            client_listen: "127.0.0.1:14001".into(),
            client_listen_given: ListenGiven::HostAndPort,
            ..Config::default()
        };
        let lock = prepare_data_dir(&mut first).unwrap();
        drop(lock);
        // Same command line: same listen addresses (it used to switch to the advertised ports).
        let mut again = first.clone();
        drop(prepare_data_dir(&mut again).unwrap());
        assert_eq!(again.peer_listen, "127.0.0.1:17001");
        assert_eq!(again.client_listen, "127.0.0.1:14001");
        assert_eq!(again.peer_url, "http://127.0.0.1:7001");
        // Different advertised URLs on the command line: the saved identity still wins.
        let mut moved = first.clone();
        moved.peer_url = "http://127.0.0.1:7999".into();
        moved.name = "other".into();
        drop(prepare_data_dir(&mut moved).unwrap());
        assert_eq!(moved.peer_url, "http://127.0.0.1:7001");
        assert_eq!(moved.name, "n1");
        assert_eq!(moved.peer_listen, "127.0.0.1:17001");
    }
}
