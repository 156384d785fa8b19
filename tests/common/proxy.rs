//! TCP proxies between cluster members, for partitions (std threads, not in the product).
//!
//! Every node listens for peers on a private port and advertises a proxy's address instead
//! (`--listen-peer-urls` / `-peer-bind-addr` vs `--initial-advertise-peer-urls` / `-s`), so
//! every peer connection, in both directions, goes through the proxy of the node it is
//! addressed to. Each node is on a *side* of the network (all on one side when healed); a
//! connection between two sides is refused, and making a partition drops the connections it
//! separates. Connections *to* a node are handled by its own proxy; it finds out which node
//! *opened* a connection by looking the client socket up in `/proc/net/tcp` and in the
//! nodes' `/proc/<pid>/fd`: while a partition is in place before the connection goes through
//! (an opener it cannot identify is refused), otherwise afterwards, by one background thread
//! that looks up all new connections with one read of the socket table (a lookup per
//! connection, in the connection's own thread, ran away on a loaded machine: peers'
//! timeouts made new connections faster than the lookups ended). A node alone on its side
//! has its proxy's listener closed, so connections to it are refused by the kernel, as with
//! a host that is down.
//!
//! Each connection costs two threads with small stacks; at most [`MAX_LIVE`] at once.
//!
//! Nodes can be added while the proxies run ([`Net::add`]), for members that join later.
//! `PROXY_DEBUG=1` prints every connection whose opener could not be identified.
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
    /// 127.0.0.1:client_port -> 127.0.0.1:proxy_port, to look the opener up.
    client_port: u16,
    proxy_port: u16,
    /// Lookups that did not find the opener.
    misses: u32,
}

/// Lookups of a connection's opener before it counts as unidentified.
const LOOKUPS: u32 = 25;

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

    /// Look up the openers of the links not identified yet, all with one read of the socket
    /// table, and drop those the current sides separate.
    fn identify_links(&self) {
        let pending: Vec<(u16, u16)> = {
            let links = self.links.lock().unwrap();
            links
                .iter()
                .filter(|l| l.src.is_none() && l.misses < LOOKUPS)
                .map(|l| (l.client_port, l.proxy_port))
                .collect()
        };
        if pending.is_empty() {
            return;
        }
        let pids = self.pids.lock().unwrap().clone();
        let found = openers(&pending, &pids);
        let mut links = self.links.lock().unwrap();
        for l in links.iter_mut() {
            if l.src.is_some() || l.misses >= LOOKUPS {
                continue;
            }
            match found.get(&(l.client_port, l.proxy_port)) {
                Some(&i) => l.src = Some(i),
                None => {
                    l.misses += 1;
                    if l.misses == LOOKUPS {
                        self.unknown.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if self.blocked(l.src, l.dst) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let _ = l.down.shutdown(Shutdown::Both);
                let _ = l.up.shutdown(Shutdown::Both);
            }
        }
    }

    /// Drop the connections that the current sides separate (and unidentified ones, while
    /// anything is partitioned: those made in the last few milliseconds, before the
    /// background lookup, or whose opener could not be found).
    fn drop_blocked(&self) {
        let links = self.links.lock().unwrap();
        for l in links.iter() {
            if self.blocked(l.src, l.dst) {
                self.refused.fetch_add(1, Ordering::Relaxed);
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
        // One thread identifies the openers of new connections, in batches, in the
        // background: a partition then drops only the connections it separates.
        let state = net.state.clone();
        net.threads.lock().unwrap().push(thread::spawn(move || {
            while !state.stop.load(Ordering::Relaxed) {
                state.identify_links();
                thread::sleep(Duration::from_millis(20));
            }
        }));
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
    // While something is partitioned the opener is looked up before the connection goes
    // through; otherwise by the background thread, in batches, while the bytes flow.
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
        client_port,
        proxy_port,
        misses: 0,
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
        if let Some(&i) =
            openers(&[(client_port, proxy_port)], &pids).get(&(client_port, proxy_port))
        {
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

/// Which nodes (by pid) own the client ends of the connections 127.0.0.1:client_port ->
/// 127.0.0.1:proxy_port: each socket's inode from the kernel (sock_diag, one exact lookup
/// per connection: reading /proc/net/tcp instead costs megabytes per read when the machine
/// holds many sockets), then one pass over the nodes' /proc/<pid>/fd. Connections not
/// found are left out.
pub fn openers(conns: &[(u16, u16)], pids: &[Option<u32>]) -> HashMap<(u16, u16), usize> {
    let mut out = HashMap::new();
    let Some(diag) = SockDiag::open() else {
        return out;
    };
    let by_inode: HashMap<String, (u16, u16)> = conns
        .iter()
        .filter_map(|&(c, p)| diag.inode(c, p).map(|i| (format!("socket:[{i}]"), (c, p))))
        .collect();
    if by_inode.is_empty() {
        return out;
    }
    for (i, pid) in pids.iter().enumerate() {
        let Some(pid) = pid else { continue };
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            if let Ok(t) = std::fs::read_link(e.path())
                && let Some(conn) = t.to_str().and_then(|t| by_inode.get(t))
            {
                out.insert(*conn, i);
            }
        }
        if out.len() == by_inode.len() {
            break;
        }
    }
    out
}

/// A NETLINK_SOCK_DIAG socket, for exact lookups of TCP sockets on 127.0.0.1.
struct SockDiag(std::os::fd::OwnedFd);

impl SockDiag {
    fn open() -> Option<SockDiag> {
        use std::os::fd::FromRawFd;
        const NETLINK_SOCK_DIAG: i32 = 4;
        // SAFETY: a plain socket(2) call; the descriptor is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is a new descriptor nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a valid timeval of the right size.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Some(SockDiag(fd))
    }

    /// The inode of the TCP socket 127.0.0.1:local -> 127.0.0.1:remote, if it exists.
    fn inode(&self, local: u16, remote: u16) -> Option<u32> {
        use std::os::fd::AsRawFd;
        const SOCK_DIAG_BY_FAMILY: u16 = 20;
        const NLM_F_REQUEST: u16 = 1;
        // nlmsghdr (16 bytes) + inet_diag_req_v2 (56 bytes: family, protocol, ext, pad,
        // states, then inet_diag_sockid: sport, dport (big-endian), src[4], dst[4], if,
        // cookie[2]).
        let mut req = [0u8; 72];
        req[0..4].copy_from_slice(&72u32.to_ne_bytes());
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        req[16] = libc::AF_INET as u8;
        req[17] = libc::IPPROTO_TCP as u8;
        req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
        req[24..26].copy_from_slice(&local.to_be_bytes());
        req[26..28].copy_from_slice(&remote.to_be_bytes());
        req[28..32].copy_from_slice(&[127, 0, 0, 1]); // src[0]
        req[44..48].copy_from_slice(&[127, 0, 0, 1]); // dst[0]
        req[64..72].copy_from_slice(&[0xff; 8]); // no cookie
        let fd = self.0.as_raw_fd();
        // SAFETY: sending a buffer we own, of the length given.
        let sent = unsafe { libc::send(fd, req.as_ptr().cast(), req.len(), 0) };
        if sent != req.len() as isize {
            return None;
        }
        let mut resp = [0u8; 512];
        // SAFETY: receiving into a buffer we own, at most its length.
        let n = unsafe { libc::recv(fd, resp.as_mut_ptr().cast(), resp.len(), 0) };
        // nlmsghdr, then inet_diag_msg: family, state, timer, retrans, sockid (48 bytes),
        // expires, rqueue, wqueue, uid, inode.
        if n < 88 {
            return None;
        }
        let kind = u16::from_ne_bytes([resp[4], resp[5]]);
        if kind != SOCK_DIAG_BY_FAMILY {
            return None; // NLMSG_ERROR: no such socket
        }
        let inode = u32::from_ne_bytes([resp[84], resp[85], resp[86], resp[87]]);
        (inode != 0).then_some(inode)
    }
}
