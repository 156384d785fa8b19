//! TCP proxies between cluster members, for partitions (std threads, not in the product).
//!
//! Every node listens for peers on a private port and advertises a proxy's address instead
//! (`--listen-peer-urls` / `-peer-bind-addr` vs `--initial-advertise-peer-urls` / `-s`), so
//! every peer connection, in both directions, goes through the proxy of the node it is
//! addressed to. Each node is on a *side* of the network (all on one side when healed); a
//! connection between two sides is refused, and making a partition drops the connections it
//! separates. Connections *to* a node are handled by its own proxy; while a partition is in
//! place, the proxy finds out which node *opened* a new connection by looking the client
//! socket up in `/proc/net/tcp` and in the nodes' `/proc/<pid>/fd` (an opener it cannot
//! identify is refused). Connections made while all is healed are not looked up (too costly
//! for a busy cluster's churn) and are all dropped when a partition begins; peers connect
//! again at once. A node alone on its side has its proxy's listener closed, so connections
//! to it are refused by the kernel, as with a host that is down.
//!
//! Each connection costs two threads with small stacks; at most [`MAX_LIVE`] at once.
//!
//! Nodes can be added while the proxies run ([`Net::add`]), for members that join later.
//! `PROXY_DEBUG=1` prints every connection whose opener could not be identified.
//!
//! Not declared from `common/mod.rs`: a test crate includes it with
//! `#[path = "common/proxy.rs"] mod proxy;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// One proxied connection: who opened it (if known), where it goes, both sockets.
struct Link {
    id: u64,
    src: Option<usize>,
    dst: usize,
    down: TcpStream,
    up: TcpStream,
}

#[derive(Default)]
struct NetState {
    /// Node index -> pid of its process (to tell who opened a connection).
    pids: Mutex<Vec<Option<u32>>>,
    /// Node -> its side of the network; nodes not listed are on side 0.
    sides: Mutex<HashMap<usize, u64>>,
    next_side: AtomicU64,
    links: Mutex<Vec<Link>>,
    next_id: AtomicU64,
    stop: AtomicBool,
    /// Connections refused / dropped because of a partition (for the report).
    refused: AtomicU64,
    /// Accepted connections whose opener could not be identified.
    unknown: AtomicU64,
    /// A proxy that could not listen again after a heal, or hit [`MAX_LIVE`].
    trouble: Mutex<Option<String>>,
    /// Connections being handled now (each holds three threads), and the most at once.
    live: AtomicUsize,
    peak: AtomicUsize,
}

/// At most this many connections at a time through all the proxies of a [`Net`]; more are
/// closed at once (and reported in [`Net::stats`]). A few members keep a handful of peer
/// connections each, so reaching it means a reconnect loop somewhere: better a refused
/// connection than thousands of threads.
const MAX_LIVE: usize = 2000;

/// Counts a connection as live while it exists.
struct LiveGuard(Arc<NetState>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl NetState {
    fn side(sides: &HashMap<usize, u64>, i: usize) -> u64 {
        sides.get(&i).copied().unwrap_or(0)
    }

    fn blocked(&self, src: Option<usize>, dst: usize) -> bool {
        let sides = self.sides.lock().unwrap();
        match src {
            Some(s) => Self::side(&sides, s) != Self::side(&sides, dst),
            // Not knowing who it is, refuse it while anything is partitioned.
            None => !sides.is_empty(),
        }
    }

    /// Is node `i` on a side of its own (so nobody may reach it)?
    fn alone(&self, i: usize) -> bool {
        let sides = self.sides.lock().unwrap();
        let Some(&s) = sides.get(&i) else {
            return false;
        };
        let n = self.pids.lock().unwrap().len();
        (0..n).all(|j| j == i || Self::side(&sides, j) != s)
    }

    /// Drop the connections that the current sides separate (and unidentified ones, while
    /// anything is partitioned).
    fn drop_blocked(&self) {
        let links = self.links.lock().unwrap();
        for l in links.iter() {
            if self.blocked(l.src, l.dst) {
                let _ = l.down.shutdown(Shutdown::Both);
                let _ = l.up.shutdown(Shutdown::Both);
            }
        }
    }
}

/// One proxy per node: `listen` (the advertised peer address) -> `target` (the node's real
/// peer listener).
pub struct Net {
    state: Arc<NetState>,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
}

impl Net {
    /// Start proxies: `pairs[i]` = (advertised address, real address) of node i.
    pub fn start(pairs: &[(String, String)]) -> Net {
        let net = Net {
            state: Arc::new(NetState::default()),
            threads: Mutex::new(Vec::new()),
        };
        for (listen, target) in pairs {
            net.add(listen, target);
        }
        net
    }

    /// Start the proxy of one more node (on side 0); returns its index.
    pub fn add(&self, listen: &str, target: &str) -> usize {
        let dst = {
            let mut pids = self.state.pids.lock().unwrap();
            pids.push(None);
            pids.len() - 1
        };
        let l = bind(listen).unwrap_or_else(|e| panic!("proxy bind {listen}: {e}"));
        let (state, listen, target) = (self.state.clone(), listen.to_string(), target.to_string());
        self.threads.lock().unwrap().push(thread::spawn(move || {
            accept_loop(l, dst, listen, target, state)
        }));
        dst
    }

    pub fn set_pid(&self, node: usize, pid: Option<u32>) {
        self.state.pids.lock().unwrap()[node] = pid;
    }

    /// Cut node `i` off from everyone: drop its connections (and any unidentified one),
    /// refuse new ones.
    pub fn cut(&self, i: usize) {
        let side = 1 + self.state.next_side.fetch_add(1, Ordering::Relaxed);
        self.state.sides.lock().unwrap().insert(i, side);
        self.state.drop_blocked();
    }

    /// Let node `i` talk to the nodes of side 0 again.
    pub fn heal(&self, i: usize) {
        self.state.sides.lock().unwrap().remove(&i);
    }

    /// Partition the network: each group can talk only within itself (nodes in no group
    /// stay on side 0, together).
    pub fn split(&self, groups: &[Vec<usize>]) {
        {
            let mut sides = self.state.sides.lock().unwrap();
            for g in groups {
                let side = 1 + self.state.next_side.fetch_add(1, Ordering::Relaxed);
                for &i in g {
                    sides.insert(i, side);
                }
            }
        }
        self.state.drop_blocked();
    }

    /// Everyone on one side again.
    pub fn heal_all(&self) {
        self.state.sides.lock().unwrap().clear();
    }

    /// Is any partition in place?
    pub fn partitioned(&self) -> bool {
        !self.state.sides.lock().unwrap().is_empty()
    }

    /// Connections being proxied right now: in all, and passed through by destination.
    pub fn live(&self) -> (usize, Vec<usize>) {
        let n = self.state.pids.lock().unwrap().len();
        let mut by_dst = vec![0; n];
        for l in self.state.links.lock().unwrap().iter() {
            by_dst[l.dst] += 1;
        }
        (self.state.live.load(Ordering::Relaxed), by_dst)
    }

    pub fn stats(&self) -> String {
        format!(
            "proxy: {} connections refused or dropped by partitions, {} from unidentified openers, at most {} at once{}",
            self.state.refused.load(Ordering::Relaxed),
            self.state.unknown.load(Ordering::Relaxed),
            self.state.peak.load(Ordering::Relaxed),
            self.state
                .trouble
                .lock()
                .unwrap()
                .as_deref()
                .map(|t| format!("; {t}"))
                .unwrap_or_default()
        )
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        for l in self.state.links.lock().unwrap().iter() {
            let _ = l.down.shutdown(Shutdown::Both);
            let _ = l.up.shutdown(Shutdown::Both);
        }
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

/// A thread with a small stack (a connection's threads only copy bytes).
fn spawn_small(f: impl FnOnce() + Send + 'static) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(f)
        .expect("spawn a proxy thread")
}

fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Accept (polling a non-blocking listener, so the listener can be closed while the node is
/// cut off and bound again when it is healed).
fn accept_loop(l: TcpListener, dst: usize, listen: String, target: String, state: Arc<NetState>) {
    let proxy_port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut listener = Some(l);
    let mut rebind_since: Option<Instant> = None;
    while !state.stop.load(Ordering::Relaxed) {
        if state.alone(dst) {
            listener = None;
            thread::sleep(Duration::from_millis(2));
            continue;
        }
        let Some(l) = listener.as_ref() else {
            match bind(&listen) {
                Ok(l) => {
                    listener = Some(l);
                    rebind_since = None;
                }
                Err(e) => {
                    let since = *rebind_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(2) {
                        *state.trouble.lock().unwrap() =
                            Some(format!("cannot listen on {listen} again: {e}"));
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            }
            continue;
        };
        match l.accept() {
            Ok((down, _)) => {
                let live = state.live.fetch_add(1, Ordering::Relaxed);
                state.peak.fetch_max(live + 1, Ordering::Relaxed);
                if live >= MAX_LIVE {
                    state.live.fetch_sub(1, Ordering::Relaxed);
                    *state.trouble.lock().unwrap() =
                        Some(format!("over {MAX_LIVE} connections at once; closed some"));
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                }
                let guard = LiveGuard(state.clone());
                let _ = down.set_nonblocking(false);
                let state = state.clone();
                let target = target.clone();
                spawn_small(move || {
                    let _guard = guard;
                    handle(down, dst, proxy_port, &target, state)
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(3));
            }
            Err(_) => thread::sleep(Duration::from_millis(3)),
        }
    }
}

fn handle(down: TcpStream, dst: usize, proxy_port: u16, target: &str, state: Arc<NetState>) {
    let client_port = match down.peer_addr() {
        Ok(a) => a.port(),
        Err(_) => return,
    };
    let refuse = |down: &TcpStream| {
        state.refused.fetch_add(1, Ordering::Relaxed);
        let _ = down.shutdown(Shutdown::Both);
    };
    if state.alone(dst) {
        return refuse(&down);
    }
    // The opener is looked up only while something is partitioned (a lookup reads the whole
    // socket table, too costly for every connection of a busy cluster); a connection made
    // while all is healed has no known opener and is dropped when a partition begins (its
    // peer connects again at once, and is looked up then).
    let mut src = None;
    if !state.sides.lock().unwrap().is_empty() {
        src = identify(client_port, proxy_port, &state);
        if state.blocked(src, dst) {
            return refuse(&down);
        }
    }
    let Ok(up) = TcpStream::connect_timeout(
        &target.parse().expect("target address"),
        Duration::from_secs(2),
    ) else {
        let _ = down.shutdown(Shutdown::Both);
        return;
    };
    down.set_nodelay(true).ok();
    up.set_nodelay(true).ok();
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    state.links.lock().unwrap().push(Link {
        id,
        src,
        dst,
        down: down.try_clone().expect("clone"),
        up: up.try_clone().expect("clone"),
    });
    // A partition may have begun since the check above (the link was not listed yet).
    if state.blocked(src, dst) {
        state.refused.fetch_add(1, Ordering::Relaxed);
        let _ = down.shutdown(Shutdown::Both);
        let _ = up.shutdown(Shutdown::Both);
    }
    let (d2, u2) = (
        down.try_clone().expect("clone"),
        up.try_clone().expect("clone"),
    );
    // Two threads per connection: this one copies one way.
    let back = spawn_small(move || pump(up, down));
    pump(d2, u2);
    let _ = back.join();
    state.links.lock().unwrap().retain(|l| l.id != id);
}

/// The opener of a connection, counting failures. On a busy machine (a large socket table,
/// a loaded CPU) a lookup can miss; an unknown opener is refused while anything is
/// partitioned, which would cut healthy links too, so keep trying for up to ~100 ms: a late
/// answer still lets the (kept-alive) connection serve the requests after the first one.
fn identify(client_port: u16, proxy_port: u16, state: &NetState) -> Option<usize> {
    const ATTEMPTS: u32 = 25;
    for attempt in 0..ATTEMPTS {
        let pids = state.pids.lock().unwrap().clone();
        if let Some(i) = opener(client_port, proxy_port, &pids) {
            return Some(i);
        }
        if attempt + 1 < ATTEMPTS {
            thread::sleep(Duration::from_millis(4));
        }
    }
    state.unknown.fetch_add(1, Ordering::Relaxed);
    if std::env::var("PROXY_DEBUG").is_ok() {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let lines: Vec<&str> = table
            .lines()
            .filter(|l| l.contains(&format!(":{client_port:04X} ")))
            .collect();
        eprintln!("proxy: opener of {client_port} -> {proxy_port} unknown: {lines:?}");
    }
    None
}

/// Copy `from` -> `to` until either side ends; then end both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Which node (by pid) owns the client end of the connection 127.0.0.1:client_port ->
/// 127.0.0.1:proxy_port: its socket inode from /proc/net/tcp, then the pid whose
/// /proc/<pid>/fd holds that socket.
fn opener(client_port: u16, proxy_port: u16, pids: &[Option<u32>]) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    // "  12: 0100007F:C12C 0100007F:B359 01 ... uid timeout inode ..."
    let needle = format!(" 0100007F:{client_port:04X} 0100007F:{proxy_port:04X} ");
    let mut from = 0;
    let inode = loop {
        let at = from + table[from..].find(&needle)?;
        let line_end = table[at..].find('\n').map_or(table.len(), |e| at + e);
        let fields: Vec<&str> = table[at..line_end].split_whitespace().collect();
        // local, remote, st, tx:rx, tr:tm, retrnsmt, uid, timeout, inode
        if let Some(inode) = fields.get(8).filter(|i| **i != "0") {
            break inode.to_string();
        }
        from = line_end;
    };
    let want = format!("socket:[{inode}]");
    for (i, pid) in pids.iter().enumerate() {
        let Some(pid) = pid else { continue };
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            if std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == want.as_str()) {
                return Some(i);
            }
        }
    }
    None
}
