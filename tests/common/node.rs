//! The tests' one process wrapper: [`Node`], an `etcd` process with its own temp dir and
//! ports, built with [`NodeBuilder`].
//!
//! * `Node::start("n")` / `Node::start_args("n", &[..])`: `-n n -d DIR/n -c CLIENT -s PEER`
//!   on free ports (plus the extra arguments), spawned and ready; a port taken by someone
//!   else before the server bound it is retried with other ports.
//! * `Node::build("n")...`: the same with options (environment, working directory, output
//!   captured in buffers instead of a log file, data dir, a peer port behind a proxy), then
//!   `.prepare()` (not started), `.spawn()` (started, no waiting) or `.start()` (ready).
//! * `Node::command(args)...`: exactly these arguments, no harness flags (the command-line
//!   tests); `.client(addr)` says where `wait_ready` looks.
//!
//! Once built: `spawn`, `restart`, `wait_ready`, `signal` (SIGSTOP/SIGCONT/...), `kill9`,
//! `stop` (SIGTERM), `wait_exit` / `expect_exit` with their exit status, `is_running`,
//! `stderr` / `stdout` / `tail`, `finish` (exit code and output of a short-lived run), the
//! URLs, and the 2.x flags (`v2_args`).

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{BIN, free_port, probe_ready, strip_ansi};

/// How long `wait_ready` waits unless told otherwise.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `stop` waits for the exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts of `NodeBuilder::start` when the ports it picked clash with someone else's.
const PORT_ATTEMPTS: usize = 5;

/// Which of the caller's environment variables the process gets (besides the ones given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inherit {
    /// All of them.
    #[default]
    All,
    /// All but `ETCD_*` and `RUST_LOG`, so only the variables given reach the server.
    WithoutEtcdVars,
}

/// Where the process' output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Streams {
    /// stdout to /dev/null, stderr appended to `DIR/stderr.log` (kept across restarts).
    #[default]
    StderrToLog,
    /// stdout and stderr each collected in a buffer (appended across restarts).
    Capture,
}

/// How the process is launched (each spawn of the node uses the same).
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub env: Vec<(String, String)>,
    pub inherit: Inherit,
    /// Working directory (None: the test's).
    pub cwd: Option<PathBuf>,
    pub streams: Streams,
}

/// The command line of a node being built.
#[derive(Debug, Clone)]
enum Args {
    /// `-n NAME -d DATA -c CLIENT -s PEER` on free ports, then these.
    Harness(Vec<String>),
    /// Exactly these.
    Exact(Vec<String>),
}

/// Where a node listens for its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerListen {
    /// On the address it advertises.
    Advertised,
    /// On another free port (`-peer-bind-addr`), the advertised one being a proxy's.
    BehindProxy,
}

/// Options of a [`Node`] before it exists; see the module doc.
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: String,
    args: Args,
    launch: Launch,
    client: Option<String>,
    data_dir: Option<PathBuf>,
    peer_listen: PeerListen,
    ready_within: Duration,
}

impl NodeBuilder {
    /// Append one argument (after the harness flags, or to the exact ones).
    pub fn arg(mut self, a: &str) -> Self {
        match &mut self.args {
            Args::Harness(v) | Args::Exact(v) => v.push(a.to_string()),
        }
        self
    }

    /// Append arguments.
    pub fn args(mut self, more: &[&str]) -> Self {
        for a in more {
            self = self.arg(a);
        }
        self
    }

    /// Set an environment variable of the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.launch.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Do not pass on the caller's `ETCD_*` and `RUST_LOG` variables.
    pub fn without_etcd_env(mut self) -> Self {
        self.launch.inherit = Inherit::WithoutEtcdVars;
        self
    }

    /// Run in this working directory.
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.launch.cwd = Some(dir.to_path_buf());
        self
    }

    /// Collect stdout and stderr in buffers instead of logging stderr to a file.
    pub fn capture_output(mut self) -> Self {
        self.launch.streams = Streams::Capture;
        self
    }

    /// The client address the node is expected on (for `wait_ready` and the URLs); with
    /// harness flags it is also given as `-c`.
    pub fn client(mut self, addr: &str) -> Self {
        self.client = Some(addr.to_string());
        self
    }

    /// The data dir given as `-d` (instead of `DIR/NAME`).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Listen for peers on another free port (`-peer-bind-addr`) than the advertised one,
    /// where a proxy is meant to forward to it.
    pub fn behind_proxy(mut self) -> Self {
        self.peer_listen = PeerListen::BehindProxy;
        self
    }

    /// How long `start` waits for the node to be ready (default 15 s).
    pub fn ready_within(mut self, timeout: Duration) -> Self {
        self.ready_within = timeout;
        self
    }

    /// The node with its temp dir, ports and arguments, not started.
    pub fn prepare(self) -> Node {
        let tmp = tempfile::Builder::new()
            .prefix("etcd-test-")
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let client = self
            .client
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()));
        let mut peer = format!("127.0.0.1:{}", free_port());
        while peer == client {
            peer = format!("127.0.0.1:{}", free_port());
        }
        let data = self
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.join(&self.name));
        let mut peer_listen = None;
        let args = match self.args {
            Args::Exact(v) => v,
            Args::Harness(extra) => {
                let mut args: Vec<String> = vec![
                    "-n".into(),
                    self.name.clone(),
                    "-d".into(),
                    data.to_string_lossy().into_owned(),
                    "-c".into(),
                    client.clone(),
                    "-s".into(),
                    peer.clone(),
                ];
                if self.peer_listen == PeerListen::BehindProxy {
                    let mut real = format!("127.0.0.1:{}", free_port());
                    while real == client || real == peer {
                        real = format!("127.0.0.1:{}", free_port());
                    }
                    args.extend(["-peer-bind-addr".into(), real.clone()]);
                    peer_listen = Some(real);
                }
                args.extend(extra);
                args
            }
        };
        Node {
            name: self.name,
            dir,
            data: Some(data),
            client,
            peer,
            peer_listen,
            args,
            launch: self.launch,
            child: None,
            status: None,
            captured: Captured::default(),
            _tmp: Some(tmp),
        }
    }

    /// Prepare and spawn, no waiting.
    pub fn spawn(self) -> Node {
        let mut n = self.prepare();
        n.spawn();
        n
    }

    /// Prepare, spawn and wait until ready. With harness flags, a start that fails because
    /// one of the free ports was taken meanwhile is tried again with other ports.
    pub fn start(self) -> Node {
        let timeout = self.ready_within;
        if !matches!(self.args, Args::Harness(_)) || self.client.is_some() {
            let mut n = self.spawn();
            n.wait_ready_within(timeout);
            return n;
        }
        for _ in 0..PORT_ATTEMPTS {
            let mut n = self.clone().spawn();
            match n.poll_ready(timeout) {
                Ok(_) => return n,
                Err(_) if n.port_clash() => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!(
            "node {}: ports kept clashing over {PORT_ATTEMPTS} attempts",
            self.name
        );
    }
}

/// stdout and stderr of a node started with [`Streams::Capture`].
#[derive(Default)]
struct Captured {
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

fn collect(mut r: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    })
}

/// What a finished process left behind.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// One `etcd` process (running or not) with its temp dir, ports, arguments and output.
pub struct Node {
    pub name: String,
    /// The node's temp directory (the data dir is `dir/NAME` unless given otherwise; the
    /// stderr log is `dir/stderr.log`).
    pub dir: PathBuf,
    data: Option<PathBuf>,
    /// `127.0.0.1:port` of the client API.
    pub client: String,
    /// `127.0.0.1:port` of the peer API as advertised.
    pub peer: String,
    /// Where the node really listens for peers when that is not `peer` (a proxy's).
    pub peer_listen: Option<String>,
    /// Arguments the process is started with (without the program name).
    pub args: Vec<String>,
    pub launch: Launch,
    child: Option<Child>,
    status: Option<ExitStatus>,
    captured: Captured,
    _tmp: Option<tempfile::TempDir>,
}

impl Node {
    /// A node with the harness flags (`-n NAME -d DIR/NAME -c CLIENT -s PEER`) to build.
    pub fn build(name: &str) -> NodeBuilder {
        NodeBuilder {
            name: name.to_string(),
            args: Args::Harness(Vec::new()),
            launch: Launch::default(),
            client: None,
            data_dir: None,
            peer_listen: PeerListen::Advertised,
            ready_within: READY_TIMEOUT,
        }
    }

    /// A process of exactly `etcd ARGS` to build (named `etcd` in messages).
    pub fn command(args: &[String]) -> NodeBuilder {
        NodeBuilder {
            args: Args::Exact(args.to_vec()),
            ..Node::build("etcd")
        }
    }

    /// Fresh temp dir, free ports, `-n NAME -d DIR/NAME -c CLIENT -s PEER`; waits until ready.
    pub fn start(name: &str) -> Node {
        Node::build(name).start()
    }

    /// Like `start`, with extra arguments appended.
    pub fn start_args(name: &str, extra: &[&str]) -> Node {
        Node::build(name).args(extra).start()
    }

    /// Like `start_args`, not started.
    pub fn prepare(name: &str, extra: &[&str]) -> Node {
        Node::build(name).args(extra).prepare()
    }

    /// Spawn the process with `self.args` and `self.launch`, no waiting.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.name);
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args).stdin(Stdio::null());
        if self.launch.inherit == Inherit::WithoutEtcdVars {
            for (k, _) in std::env::vars_os() {
                let name = k.to_string_lossy();
                if name.starts_with("ETCD_") || name == "RUST_LOG" {
                    cmd.env_remove(&k);
                }
            }
        }
        cmd.envs(
            self.launch
                .env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        if let Some(cwd) = &self.launch.cwd {
            cmd.current_dir(cwd);
        }
        match self.launch.streams {
            Streams::StderrToLog => {
                let log = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.stderr_path())
                    .expect("open stderr log");
                cmd.stdout(Stdio::null()).stderr(Stdio::from(log));
            }
            Streams::Capture => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
        }
        let mut child = cmd.spawn().expect("spawn etcd");
        if self.launch.streams == Streams::Capture {
            let c = &mut self.captured;
            c.readers
                .push(collect(child.stdout.take().expect("stdout"), c.out.clone()));
            c.readers
                .push(collect(child.stderr.take().expect("stderr"), c.err.clone()));
        }
        self.status = None;
        self.child = Some(child);
    }

    /// Spawn again with the same arguments and data dir, then wait_ready.
    pub fn restart(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Poll `GET /v1/keys/` until it answers 200 (up to 15 s); returns how long it took.
    /// Panics with the log tail when it does not, or when the process exits first.
    pub fn wait_ready(&mut self) -> Duration {
        self.wait_ready_within(READY_TIMEOUT)
    }

    /// `wait_ready` with another bound.
    pub fn wait_ready_within(&mut self, timeout: Duration) -> Duration {
        self.poll_ready(timeout).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Poll `GET /v1/keys/` until it answers 200, up to `timeout`: how long it took, or
    /// why not (the process exited, or it was not ready in time) with the log tail.
    pub fn poll_ready(&mut self, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            if probe_ready(&self.client, PROBE_TIMEOUT).is_ok() {
                return Ok(start.elapsed());
            }
            if !self.is_running() {
                return Err(format!(
                    "{} exited while starting ({}; args {:?})\n{}",
                    self.name,
                    self.status
                        .map_or("killed or not started".to_string(), |s| s.to_string()),
                    self.args,
                    self.tail(60)
                ));
            }
            if start.elapsed() >= timeout {
                return Err(format!(
                    "{} ({}) not ready after {:?} (args {:?})\n{}",
                    self.name,
                    self.client,
                    start.elapsed(),
                    self.args,
                    self.tail(60)
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process exited because one of its ports was taken.
    fn port_clash(&mut self) -> bool {
        !self.is_running() && self.stderr().contains("Address already in use")
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", self.name))
            .id()
    }

    /// `kill -SIG pid` (`STOP`, `CONT`, `TERM`, `INT`, ...).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid());
    }

    /// SIGKILL and reap (also ends a SIGSTOPped process); nothing when not running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.status = None;
    }

    /// SIGTERM and wait up to 10 s for the exit (else SIGKILL and panic).
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with("TERM", STOP_TIMEOUT)
    }

    /// Send `sig` and wait up to `within` for the exit (else SIGKILL and panic).
    pub fn stop_with(&mut self, sig: &str, within: Duration) -> ExitStatus {
        self.signal(sig);
        match self.wait_exit(within) {
            Some(st) => st,
            None => {
                self.kill9();
                panic!(
                    "{} still running {within:?} after SIG{sig}\n{}",
                    self.name,
                    self.tail(60)
                )
            }
        }
    }

    /// Wait up to `timeout` for the process to exit on its own and reap it: its exit
    /// status, or None when it is still running then (left running). When it is not
    /// running, how it ended when that was seen (None after `kill9`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(c) = self.child.as_mut() else {
                return self.status;
            };
            if let Some(st) = c.try_wait().expect("try_wait") {
                self.child = None;
                self.status = Some(st);
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `wait_exit` that must see the exit: panics (after a SIGKILL) with the log tail when
    /// the process is still running after `timeout`.
    pub fn expect_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_exit(timeout) {
            Some(st) => st,
            None => {
                self.kill9();
                panic!(
                    "{} still running {timeout:?} later\n{}",
                    self.name,
                    self.tail(60)
                )
            }
        }
    }

    /// Whether the process is still there (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        self.wait_exit(Duration::ZERO);
        self.child.is_some()
    }

    /// Wait (bounded) for the exit and gather the output; kills the process on timeout
    /// (then `code` is None).
    pub fn finish(mut self, timeout: Duration) -> Output {
        let status = self.wait_exit(timeout);
        if status.is_none() {
            self.kill9();
        }
        for r in std::mem::take(&mut self.captured.readers) {
            let _ = r.join();
        }
        Output {
            code: status.and_then(|s| s.code()),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }

    /// Path of the file collecting the server's stderr (appended across restarts) unless
    /// the output is captured.
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.join("stderr.log")
    }

    /// The server's stderr so far (log file or buffer).
    pub fn stderr(&self) -> String {
        match self.launch.streams {
            Streams::StderrToLog => std::fs::read_to_string(self.stderr_path()).unwrap_or_default(),
            Streams::Capture => {
                String::from_utf8_lossy(&self.captured.err.lock().unwrap()).into_owned()
            }
        }
    }

    /// The server's stdout so far (empty unless captured).
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.captured.out.lock().unwrap()).into_owned()
    }

    /// The last `n` lines of the node's stderr, under a header naming it and its addresses.
    pub fn tail(&self, n: usize) -> String {
        let all = strip_ansi(&self.stderr());
        let lines: Vec<&str> = all.lines().collect();
        let from = lines.len().saturating_sub(n);
        let addrs = match &self.peer_listen {
            None => format!("{} / {}", self.client, self.peer),
            Some(real) => format!(
                "client {}, peer {real} via proxy {}",
                self.client, self.peer
            ),
        };
        format!(
            "--- {} ({addrs}) stderr, last {} of {} lines:\n{}",
            self.name,
            lines.len() - from,
            lines.len(),
            lines[from..].join("\n")
        )
    }

    /// Where the node listens for peers.
    pub fn listen_peer(&self) -> &str {
        self.peer_listen.as_deref().unwrap_or(&self.peer)
    }

    /// The data dir given to the node.
    pub fn data_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| self.dir.join(&self.name))
    }

    /// `http://CLIENT` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.client, path)
    }

    /// `http://CLIENT`.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// The advertised peer URL, `http://PEER`.
    pub fn peer_url(&self) -> String {
        format!("http://{}", self.peer)
    }

    /// The 2.x flags (`-v`, `--name`, `--data-dir`, client URLs, peer URLs listening on
    /// `listen_peer_url`, `--initial-cluster`, `--initial-cluster-state`).
    pub fn v2_args(&self, listen_peer_url: &str, initial: &str, state: &str) -> Vec<String> {
        vec![
            "-v".into(),
            "--name".into(),
            self.name.clone(),
            "--data-dir".into(),
            self.data_dir().to_string_lossy().into_owned(),
            "--listen-client-urls".into(),
            self.client_url(),
            "--advertise-client-urls".into(),
            self.client_url(),
            "--listen-peer-urls".into(),
            listen_peer_url.into(),
            "--initial-advertise-peer-urls".into(),
            self.peer_url(),
            "--initial-cluster".into(),
            initial.into(),
            "--initial-cluster-state".into(),
            state.into(),
        ]
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}
