//! Network partitions between peers, made with TCP proxies that live in this test (std
//! threads, not in the product).
//!
//! Every node listens for peers on a private port and advertises a proxy's address instead
//! (`--listen-peer-urls` / `-peer-bind-addr` vs `--initial-advertise-peer-urls` / `-s`), so
//! every peer connection, in both directions, goes through the proxy of the node it is
//! addressed to. To cut a node off, the proxies drop every connection it takes part in and
//! refuse new ones: connections *to* it are refused by its own proxy, connections *from* it
//! by the others' proxies, which find out which node opened a connection by looking the
//! client socket up in `/proc/net/tcp` and in the nodes' `/proc/<pid>/fd`. Healing lets
//! connections through again.
//!
//! Checked: the majority keeps committing; the cut-off node cannot commit (writes and
//! quorum reads sent to it fail with error 300 within a bound, and never show up later);
//! a cut-off leader is replaced and steps down after healing; every node converges to the
//! same store. Every wait is a bounded poll whose duration is reported. `PROXY_DEBUG=1`
//! prints every connection whose opener could not be identified.

mod common;
#[macro_use]
#[path = "common/cluster.rs"]
mod cluster_common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cluster_common::{Load, Nodes, Proc, REQ, call_t, initial_cluster, leaves};
use common::{form_encode, free_port, probe_ready};

// ---------------------------------------------------------------------------------------
// the proxies

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
    /// Nodes cut off from everyone.
    cut: Mutex<BTreeSet<usize>>,
    links: Mutex<Vec<Link>>,
    next_id: AtomicU64,
    stop: AtomicBool,
    /// Connections refused / dropped because of a cut (for the report).
    refused: AtomicU64,
    /// Accepted connections whose opener could not be identified.
    unknown: AtomicU64,
    /// A proxy that could not listen again after a heal.
    trouble: Mutex<Option<String>>,
}

impl NetState {
    fn blocked(&self, src: Option<usize>, dst: usize) -> bool {
        let cut = self.cut.lock().unwrap();
        cut.contains(&dst)
            || match src {
                Some(s) => cut.contains(&s),
                // Not knowing who it is, refuse it while anything is cut.
                None => !cut.is_empty(),
            }
    }
}

/// One proxy per node: `listen` (the advertised peer address) -> `target` (the node's real
/// peer listener). While its node is cut off a proxy closes its listener, so connections to
/// the node are refused by the kernel, as with a host that is down.
struct Net {
    state: Arc<NetState>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Net {
    /// Start proxies: `pairs[i]` = (advertised address, real address) of node i.
    fn start(pairs: &[(String, String)]) -> Net {
        let state = Arc::new(NetState::default());
        *state.pids.lock().unwrap() = vec![None; pairs.len()];
        let mut threads = Vec::new();
        for (dst, (listen, target)) in pairs.iter().enumerate() {
            let l = bind(listen).unwrap_or_else(|e| panic!("proxy bind {listen}: {e}"));
            let (state, listen, target) = (state.clone(), listen.clone(), target.clone());
            threads.push(thread::spawn(move || {
                accept_loop(l, dst, listen, target, state)
            }));
        }
        Net { state, threads }
    }

    fn set_pid(&self, node: usize, pid: Option<u32>) {
        self.state.pids.lock().unwrap()[node] = pid;
    }

    /// Cut node `i` off: drop its connections (and any unidentified one), refuse new ones.
    fn cut(&self, i: usize) {
        self.state.cut.lock().unwrap().insert(i);
        let links = self.state.links.lock().unwrap();
        for l in links.iter() {
            if l.dst == i || l.src == Some(i) || l.src.is_none() {
                let _ = l.down.shutdown(Shutdown::Both);
                let _ = l.up.shutdown(Shutdown::Both);
            }
        }
    }

    fn heal(&self, i: usize) {
        self.state.cut.lock().unwrap().remove(&i);
    }

    fn stats(&self) -> String {
        format!(
            "proxy: {} connections refused or dropped by cuts, {} from unidentified openers{}",
            self.state.refused.load(Ordering::Relaxed),
            self.state.unknown.load(Ordering::Relaxed),
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
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
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
        let is_cut = state.cut.lock().unwrap().contains(&dst);
        if is_cut {
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
                let _ = down.set_nonblocking(false);
                let state = state.clone();
                let target = target.clone();
                thread::spawn(move || handle(down, dst, proxy_port, &target, state));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(_) => thread::sleep(Duration::from_millis(1)),
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
    if state.cut.lock().unwrap().contains(&dst) {
        return refuse(&down);
    }
    // Peers give an RPC as little as one heartbeat (50 ms), so the opener is looked up
    // before the connection goes through only while something is cut; otherwise in the
    // background, while the bytes already flow.
    let mut src = None;
    let mut identified = false;
    if !state.cut.lock().unwrap().is_empty() {
        src = identify(client_port, proxy_port, &state);
        identified = true;
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
    let (d2, u2) = (
        down.try_clone().expect("clone"),
        up.try_clone().expect("clone"),
    );
    let pumps = [
        thread::spawn(move || pump(d2, u2)),
        thread::spawn(move || pump(up, down)),
    ];
    if !identified {
        src = identify(client_port, proxy_port, &state);
        let mut links = state.links.lock().unwrap();
        if let Some(l) = links.iter_mut().find(|l| l.id == id) {
            l.src = src;
            // A cut may have come in meanwhile.
            if state.blocked(src, dst) {
                state.refused.fetch_add(1, Ordering::Relaxed);
                let _ = l.down.shutdown(Shutdown::Both);
                let _ = l.up.shutdown(Shutdown::Both);
            }
        }
    }
    for p in pumps {
        let _ = p.join();
    }
    state.links.lock().unwrap().retain(|l| l.id != id);
}

/// The opener of a connection, counting failures. On a busy machine (a large socket table,
/// a loaded CPU) a lookup can miss; an unknown opener is refused while anything is cut, which
/// would cut healthy links too, so keep trying for up to ~100 ms: a late answer still lets the
/// (kept-alive) connection serve the requests after the first one.
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
    let mut buf = [0u8; 16384];
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

// ---------------------------------------------------------------------------------------
// the cluster

/// Three nodes behind proxies. Dropped in field order: the processes first, then the
/// proxies.
struct Cluster {
    p: Vec<Proc>,
    net: Net,
}

impl Nodes for Cluster {
    const LEADER_TIMEOUT: Duration = Duration::from_secs(3);
    const LISTING_TIMEOUT: Duration = REQ;

    fn procs(&self) -> &[Proc] {
        &self.p
    }

    fn report(&self) -> Option<String> {
        Some(self.net.stats())
    }
}

/// How the nodes are started.
#[derive(Clone, Copy)]
enum Style {
    /// `--initial-cluster` with state `new`, all at once.
    V2,
    /// v0.1 flags: node1 alone, then `-C <node1's proxy>`; `-peer-bind-addr` for the real
    /// listener.
    V01,
}

const ALL: [usize; 3] = [0, 1, 2];

impl Cluster {
    fn start(style: Style) -> Cluster {
        // Each node advertises its proxy (`node.peer`) and listens on `real_peer`.
        let mut p: Vec<Proc> = (1..=3)
            .map(|i| {
                let real_peer = format!("127.0.0.1:{}", free_port());
                let mut x = Proc::prepare(&format!("n{i}"), &["-peer-bind-addr", &real_peer]);
                x.real_peer = real_peer;
                x
            })
            .collect();
        let initial = initial_cluster(&p);
        let first_proxy = p[0].node.peer.clone();
        for (i, x) in p.iter_mut().enumerate() {
            match style {
                Style::V2 => {
                    x.node.args = x.v2_args(&format!("http://{}", x.real_peer), &initial, "new");
                }
                Style::V01 if i > 0 => x.node.args.extend(["-C".into(), first_proxy.clone()]),
                Style::V01 => {}
            }
        }
        let pairs: Vec<(String, String)> = p
            .iter()
            .map(|x| (x.node.peer.clone(), x.real_peer.clone()))
            .collect();
        let net = Net::start(&pairs);
        let mut cl = Cluster { p, net };
        match style {
            Style::V2 => {
                for i in 0..3 {
                    cl.p[i].spawn();
                    cl.net.set_pid(i, Some(cl.p[i].pid()));
                }
                for i in 0..3 {
                    cl.wait_ready(i);
                }
            }
            Style::V01 => {
                cl.p[0].spawn();
                cl.net.set_pid(0, Some(cl.p[0].pid()));
                cl.wait_ready(0);
                for i in 1..3 {
                    cl.p[i].spawn();
                    cl.net.set_pid(i, Some(cl.p[i].pid()));
                }
                for i in 1..3 {
                    cl.wait_ready(i);
                }
            }
        }
        cl.leader(&ALL, Duration::from_secs(20));
        cl
    }

    fn wait_ready(&self, i: usize) {
        self.poll(
            Duration::from_secs(30),
            &format!("{} to be ready", self.p[i].name()),
            || probe_ready(self.addr(i), Duration::from_secs(3)),
        );
    }

    /// A write that must succeed within `within`.
    fn write_ok(&self, i: usize, key: &str, value: &str, within: Duration) -> Duration {
        let start = Instant::now();
        let body = form_encode(&[("value", value)]);
        let r = call_t(
            self.addr(i),
            "PUT",
            &format!("/v2/keys{key}"),
            &body,
            within,
        )
        .unwrap_or_else(|e| fail!(self, "write {key} via {}: {e}", self.p[i].name()));
        let took = start.elapsed();
        ensure!(
            self,
            r.status == 200 || r.status == 201,
            "write {key} via {}: {} {}",
            self.p[i].name(),
            r.status,
            r.body
        );
        took
    }

    /// Every key must be absent on every node.
    fn absent(&self, keys: &[&str]) {
        for k in keys {
            for i in 0..3 {
                let r = call_t(self.addr(i), "GET", &format!("/v2/keys{k}"), "", REQ)
                    .unwrap_or_else(|e| fail!(self, "{e}"));
                ensure!(
                    self,
                    r.status == 404,
                    "{k}, written only to the cut-off node (and refused with 300), shows up on {}: {} {}",
                    self.p[i].name(),
                    r.status,
                    r.body
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// tests

/// A follower cut off: the other two keep committing; writes and quorum reads sent to the
/// cut-off node fail with 300 within 10 s (plain reads still answer); after healing every
/// node converges and the refused writes never appear.
#[test]
fn cut_off_follower_cannot_commit_and_converges_after_heal() {
    let cl = Cluster::start(Style::V2);
    let l = cl.leader(&ALL, Duration::from_secs(10)).0;
    let f = (0..3).find(|&i| i != l).unwrap();
    let other = (0..3).find(|&i| i != l && i != f).unwrap();
    for i in 0..5 {
        cl.write_ok(i % 3, &format!("/p/before{i}"), "b", REQ);
    }
    cl.converge(&ALL, "/", Duration::from_secs(10));

    cl.net.cut(f);
    let cut_at = Instant::now();
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let via = if i % 2 == 0 { l } else { other };
        worst =
            worst.max(cl.write_ok(via, &format!("/p/majority{i}"), "m", Duration::from_secs(5)));
    }
    eprintln!(
        "{} cut off: 20 majority writes, slowest {worst:?}",
        cl.p[f].name()
    );
    let t1 = cl.expect_300(
        f,
        "v2 PUT (cut off)",
        "PUT",
        "/v2/keys/p/minority1",
        "value=x",
    );
    let t2 = cl.expect_300(
        f,
        "v1 set (cut off)",
        "POST",
        "/v1/keys/p/minority2",
        "value=x",
    );
    let t3 = cl.expect_300(
        f,
        "quorum GET (cut off)",
        "GET",
        "/v2/keys/p/before0?quorum=true",
        "",
    );
    let r = call_t(cl.addr(f), "GET", "/v2/keys/p/before0", "", REQ)
        .unwrap_or_else(|e| fail!(cl, "{e}"));
    ensure!(
        cl,
        r.status == 200,
        "plain read on the cut-off node: {} {}",
        r.status,
        r.body
    );
    eprintln!(
        "cut-off node: v2 PUT failed after {t1:?}, v1 set after {t2:?}, quorum GET after {t3:?}"
    );
    // Once its election timer fires it knows no leader (301), and a write now waits for
    // one, in vain: 300 again, still within the bound.
    let took = cl.wait_no_leader(
        f,
        "the cut-off node to report no leader (301)",
        Duration::from_secs(5),
    );
    let t4 = cl.expect_300(
        f,
        "v2 PUT (cut off, no leader known)",
        "PUT",
        "/v2/keys/p/minority3",
        "value=x",
    );
    eprintln!("cut-off node reports 301 after {took:?} more; a write then fails after {t4:?}");
    // The majority still commits while the cut-off node keeps trying.
    cl.write_ok(other, "/p/majority-late", "m", Duration::from_secs(5));

    cl.net.heal(f);
    let healed = Instant::now();
    let (body, took) = cl.converge(&ALL, "/", Duration::from_secs(30));
    let have = leaves(&body).unwrap_or_else(|e| fail!(cl, "{e}"));
    for i in 0..20 {
        ensure!(
            cl,
            have.contains_key(&format!("/p/majority{i}")),
            "majority write {i} missing after healing"
        );
    }
    cl.absent(&["/p/minority1", "/p/minority2", "/p/minority3"]);
    let (l2, _) = cl.leader(&ALL, Duration::from_secs(10));
    cl.write_ok(f, "/p/after", "a", REQ);
    eprintln!(
        "healed after {:?} cut: converged in {took:?}, leader {}, {} keys; {}",
        healed.duration_since(cut_at),
        cl.p[l2].name(),
        have.len(),
        cl.net.stats()
    );
}

/// The leader cut off: the other two elect a new leader and commit; the old leader cannot
/// commit (300 within 10 s); after healing it steps down, follows the new leader, and its
/// uncommitted write is gone everywhere.
#[test]
fn cut_off_leader_is_replaced_and_steps_down_after_heal() {
    let cl = Cluster::start(Style::V01);
    let old = cl.leader(&ALL, Duration::from_secs(10)).0;
    let rest: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for i in 0..5 {
        cl.write_ok(i % 3, &format!("/pl/before{i}"), "b", REQ);
    }
    cl.converge(&ALL, "/", Duration::from_secs(10));

    cl.net.cut(old);
    let (new, took) = cl.leader(&rest, Duration::from_secs(10));
    ensure!(
        cl,
        new != old,
        "the majority still names the cut-off leader"
    );
    eprintln!(
        "leader {} cut off: {} elected after {took:?}",
        cl.p[old].name(),
        cl.p[new].name()
    );
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        worst = worst.max(cl.write_ok(
            rest[i % 2],
            &format!("/pl/majority{i}"),
            "m",
            Duration::from_secs(5),
        ));
    }
    eprintln!("majority: 20 writes, slowest {worst:?}");
    let t1 = cl.expect_300(
        old,
        "v2 PUT (cut off)",
        "PUT",
        "/v2/keys/pl/minority1",
        "value=x",
    );
    let t2 = cl.expect_300(
        old,
        "v1 set (cut off)",
        "POST",
        "/v1/keys/pl/minority2",
        "value=x",
    );
    let t3 = cl.expect_300(
        old,
        "quorum GET (cut off)",
        "GET",
        "/v2/keys/pl/before0?quorum=true",
        "",
    );
    eprintln!(
        "cut-off old leader: v2 PUT failed after {t1:?}, v1 set after {t2:?}, quorum GET after {t3:?}"
    );

    cl.net.heal(old);
    let (l2, took) = cl.leader(&ALL, Duration::from_secs(20));
    ensure!(
        cl,
        l2 != old,
        "after healing, the old leader {} leads again (it lacks committed entries)",
        cl.p[old].name()
    );
    let (_, conv) = cl.converge(&ALL, "/", Duration::from_secs(30));
    let r =
        call_t(cl.addr(old), "GET", "/v2/stats/self", "", REQ).unwrap_or_else(|e| fail!(cl, "{e}"));
    let state =
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap_or_default()["state"].clone();
    ensure!(
        cl,
        state == "StateFollower",
        "old leader's /v2/stats/self state: {}",
        r.body
    );
    cl.absent(&["/pl/minority1", "/pl/minority2"]);
    cl.write_ok(old, "/pl/after", "a", REQ);
    eprintln!(
        "healed: all follow {} after {took:?}, converged {conv:?} later; {}",
        cl.p[l2].name(),
        cl.net.stats()
    );
}

/// Random cuts and heals of single nodes under a steady write load: no acknowledged write
/// is lost, and the nodes converge once everything is healed.
#[test]
fn flapping_partitions_lose_no_acknowledged_write() {
    let cl = Cluster::start(Style::V2);
    let addrs: Vec<String> = (0..3).map(|i| cl.addr(i).to_string()).collect();
    let load = Load::start(
        &addrs,
        "/flap",
        Duration::from_millis(10),
        Duration::ZERO,
        false,
    );
    let mut seed = 0x9e37_79b9_7f4a_7c15u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut plan = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(12) {
        let victim = rnd(3) as usize;
        let cut_ms = 300 + rnd(1200);
        let heal_ms = 200 + rnd(800);
        plan.push(format!(
            "cut {} {cut_ms}ms, heal {heal_ms}ms",
            cl.p[victim].name()
        ));
        cl.net.cut(victim);
        thread::sleep(Duration::from_millis(cut_ms));
        cl.net.heal(victim);
        thread::sleep(Duration::from_millis(heal_ms));
    }
    // Let the writers see a healthy cluster again for a moment.
    thread::sleep(Duration::from_millis(500));
    let acked = load.finish();
    let (body, took) = cl.converge(&ALL, "/", Duration::from_secs(30));
    let have = leaves(&body).unwrap_or_else(|e| fail!(cl, "{e}"));
    let lost: Vec<&(String, String)> = acked
        .iter()
        .filter(|(k, v)| have.get(k) != Some(v))
        .collect();
    ensure!(
        cl,
        lost.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}; schedule: {plan:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    ensure!(
        cl,
        acked.len() > 50,
        "only {} writes acknowledged during the run; schedule: {plan:?}",
        acked.len()
    );
    let (l, _) = cl.leader(&ALL, Duration::from_secs(10));
    cl.write_ok(l, "/flap/after", "x", REQ);
    eprintln!(
        "{} partitions: {} writes acknowledged, none lost; converged {took:?} after the last heal; {}",
        plan.len(),
        acked.len(),
        cl.net.stats()
    );
}
