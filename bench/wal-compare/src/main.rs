//! wal-compare: durable-append benchmark of Raft log storage candidates.
//!
//! ```text
//! wal-compare list
//! wal-compare run --candidate C --workload W --dir DIR [--round R] [--n N] [--warmup W]
//! wal-compare summarize results.tsv
//! wal-compare torn --candidate C --dir DIR
//! ```
//!
//! `run` prints one `RESULT` line (tab separated) and leaves DIR for the
//! caller to remove. DIR must not exist yet.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use wal_compare::{CANDIDATES, Hint, open_log, open_shared};

struct Workload {
    name: &'static str,
    records: usize,
    size: usize,
    n: usize,
    threads: usize,
}

const WORKLOADS: &[Workload] = &[
    Workload { name: "one-small", records: 1, size: 100, n: 5000, threads: 1 },
    Workload { name: "batch-16", records: 16, size: 100, n: 2000, threads: 1 },
    Workload { name: "batch-256", records: 256, size: 100, n: 2000, threads: 1 },
    Workload { name: "one-64k", records: 1, size: 65536, n: 2000, threads: 1 },
    // 4 threads, each appending one-small; n is the total number of calls.
    Workload { name: "concurrent", records: 1, size: 100, n: 5000, threads: 4 },
];

const HEADER: &str = "RESULT\tround\tcandidate\tworkload\tload1\tothers_cpu_pct\tcalls\trecords_per_call\tsecs\tcalls_per_s\trecords_per_s\tp50_us\tp99_us\tmax_us";

/// Incompressible bytes (raft-engine compresses batches over 8 KiB with lz4
/// by default; constant payloads would flatter it).
fn random_pool(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn records_for<'a>(pool: &'a [u8], call: usize, w: &Workload, out: &mut Vec<&'a [u8]>) {
    out.clear();
    let span = pool.len() - w.size;
    for j in 0..w.records {
        let off = (call.wrapping_mul(7919) + j.wrapping_mul(104_729)) % span;
        out.push(&pool[off..off + w.size]);
    }
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// (busy jiffies, total jiffies) of all CPUs; iowait counts as idle.
fn cpu_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().next().unwrap_or("");
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 8 {
        return (0, 1);
    }
    // user nice system idle iowait irq softirq steal
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    (busy, busy + v[3] + v[4])
}

fn self_cpu_secs() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn run(args: &[String]) -> io::Result<()> {
    let cand = arg(args, "--candidate").expect("--candidate");
    let wname = arg(args, "--workload").expect("--workload");
    let dir = PathBuf::from(arg(args, "--dir").expect("--dir"));
    let round: usize = arg(args, "--round").map_or(0, |s| s.parse().unwrap());
    let w = WORKLOADS.iter().find(|w| w.name == wname).expect("unknown workload");
    let n: usize = arg(args, "--n").map_or(w.n, |s| s.parse().unwrap());
    let warmup: usize = arg(args, "--warmup").map_or(300, |s| s.parse().unwrap());
    if dir.exists() {
        return Err(io::Error::other(format!("{} exists; use a fresh directory", dir.display())));
    }
    let pool = random_pool(4 << 20);
    let hint = Hint { total_bytes: ((n + warmup) * w.records * (w.size + 64)) as u64 };

    let load = load1();
    let (lat, secs, cpu0, cpu_self0, t_start);
    if w.threads == 1 {
        let mut log = open_log(&cand, &dir, hint)?;
        let mut recs = Vec::with_capacity(w.records);
        for i in 0..warmup {
            records_for(&pool, i, w, &mut recs);
            log.append_sync(&recs)?;
        }
        let mut l = Vec::with_capacity(n);
        cpu0 = cpu_jiffies();
        cpu_self0 = self_cpu_secs();
        t_start = Instant::now();
        for i in warmup..warmup + n {
            records_for(&pool, i, w, &mut recs);
            let t = Instant::now();
            log.append_sync(&recs)?;
            l.push(t.elapsed().as_nanos() as u64);
        }
        secs = t_start.elapsed().as_secs_f64();
        lat = l;
        drop(log);
    } else {
        let Some(log) = open_shared(&cand, &dir)? else {
            println!("SKIP\t{round}\t{cand}\t{wname}\tno shared mode");
            return Ok(());
        };
        let log: Arc<dyn wal_compare::SharedLog> = Arc::from(log);
        let per = n / w.threads;
        let wu = warmup / w.threads;
        let pool = Arc::new(pool);
        let go = Arc::new(Barrier::new(w.threads + 1));
        let done = Arc::new(Barrier::new(w.threads + 1));
        let hs: Vec<_> = (0..w.threads)
            .map(|t| {
                let (log, pool, go, done) = (log.clone(), pool.clone(), go.clone(), done.clone());
                std::thread::spawn(move || -> io::Result<Vec<u64>> {
                    let w = WORKLOADS.iter().find(|w| w.name == "concurrent").unwrap();
                    let mut recs = Vec::new();
                    for i in 0..wu {
                        records_for(&pool, t * 1_000_000 + i, w, &mut recs);
                        log.append_sync(&recs)?;
                    }
                    go.wait();
                    let mut l = Vec::with_capacity(per);
                    for i in wu..wu + per {
                        records_for(&pool, t * 1_000_000 + i, w, &mut recs);
                        let s = Instant::now();
                        log.append_sync(&recs)?;
                        l.push(s.elapsed().as_nanos() as u64);
                    }
                    done.wait();
                    Ok(l)
                })
            })
            .collect();
        go.wait();
        cpu0 = cpu_jiffies();
        cpu_self0 = self_cpu_secs();
        t_start = Instant::now();
        done.wait();
        secs = t_start.elapsed().as_secs_f64();
        let mut all = Vec::with_capacity(n);
        for h in hs {
            all.extend(h.join().expect("writer thread panicked")?);
        }
        lat = all;
    }
    let cpu1 = cpu_jiffies();
    let cpu_self = self_cpu_secs() - cpu_self0;
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let clk = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let busy_secs = (cpu1.0 - cpu0.0) as f64 / clk;
    let others = ((busy_secs - cpu_self) / (secs * ncpu) * 100.0).max(0.0);

    let mut sorted = lat.clone();
    sorted.sort_unstable();
    let calls = lat.len();
    let cps = calls as f64 / secs;
    println!(
        "RESULT\t{round}\t{cand}\t{wname}\t{load:.2}\t{others:.1}\t{calls}\t{}\t{secs:.3}\t{cps:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}",
        w.records,
        cps * w.records as f64,
        pct(&sorted, 0.50) as f64 / 1e3,
        pct(&sorted, 0.99) as f64 / 1e3,
        *sorted.last().unwrap() as f64 / 1e3,
    );
    Ok(())
}

/// Newest non-empty regular file under `dir` (the one holding the tail).
fn newest_file(dir: &std::path::Path) -> io::Result<PathBuf> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && m.len() > 0 {
                let t = m.modified()?;
                if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                    best = Some((t, e.path()));
                }
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| io::Error::other("no file"))
}

/// Writes 100 calls of one 1000-byte record, closes, damages the tail of the
/// newest file, reopens and reports how many records recovery kept.
/// `zero`: the last 200 written bytes become zeros (write cut short);
/// `flip`: 16 bytes 500 bytes before the end are inverted (a sector of the
/// last write lost while later ones landed); `cut`: the file is truncated
/// 200 bytes before the end of the data (a growing file whose last append
/// was cut short).
fn torn(args: &[String]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let cand = arg(args, "--candidate").expect("--candidate");
    let base = PathBuf::from(arg(args, "--dir").expect("--dir"));
    for mode in ["zero", "flip", "cut"] {
        let dir = base.join(mode);
        if dir.exists() {
            return Err(io::Error::other(format!("{} exists", dir.display())));
        }
        let pool = random_pool(1 << 20);
        let w = Workload { name: "torn", records: 1, size: 1000, n: 100, threads: 1 };
        {
            let mut log = open_log(&cand, &dir, Hint { total_bytes: 1 << 20 })?;
            let mut recs = Vec::new();
            for i in 0..w.n {
                records_for(&pool, i, &w, &mut recs);
                log.append_sync(&recs)?;
            }
        }
        let file = newest_file(&dir)?;
        let data = std::fs::read(&file)?;
        let end = data.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        let f = std::fs::OpenOptions::new().write(true).open(&file)?;
        match mode {
            "zero" => f.write_all_at(&[0u8; 200], (end - 200) as u64)?,
            "cut" => f.set_len((end - 200) as u64)?,
            _ => {
                let at = end - 500;
                let inv: Vec<u8> = data[at..at + 16].iter().map(|b| !b).collect();
                f.write_all_at(&inv, at as u64)?;
            }
        }
        f.sync_all()?;
        drop(f);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let res = match wal_compare::count_recovered(&cand, &dir) {
            Ok(Some(n)) => format!("recovered {n} of {} records", w.n),
            Ok(None) => "no recovery (raw ceiling)".to_string(),
            Err(e) => format!("open FAILED: {e}"),
        };
        println!("TORN\t{cand}\t{mode}\t{name}@{end}\t{res}");
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn fmt_num(x: f64) -> String {
    if x >= 100.0 { format!("{x:.0}") } else { format!("{x:.1}") }
}

/// Markdown tables of the medians over rounds, one per workload.
fn summarize(path: &str, noisy_load: f64, noisy_cpu: f64) -> io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    // (workload, candidate) -> rows of numbers
    let mut g: BTreeMap<(usize, usize), Vec<Vec<f64>>> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("RESULT\t") && !l.starts_with(HEADER)) {
        let f: Vec<&str> = line.split('\t').collect();
        let Some(ci) = CANDIDATES.iter().position(|c| *c == f[2]) else { continue };
        let Some(wi) = WORKLOADS.iter().position(|w| w.name == f[3]) else { continue };
        let nums: Vec<f64> = f[4..].iter().map(|x| x.parse().unwrap_or(f64::NAN)).collect();
        g.entry((wi, ci)).or_default().push(nums);
    }
    // nums: 0 load1, 1 others_cpu, 2 calls, 3 rpc, 4 secs, 5 cps, 6 rps, 7 p50, 8 p99, 9 max
    for (wi, w) in WORKLOADS.iter().enumerate() {
        let rows: Vec<_> = g.iter().filter(|((x, _), _)| *x == wi).collect();
        if rows.is_empty() {
            continue;
        }
        println!("\n### {} ({} x {} B per call{}, N={})\n", w.name, w.records, w.size,
            if w.threads > 1 { format!(", {} threads", w.threads) } else { String::new() }, w.n);
        println!("| candidate | rounds | calls/s | records/s | p50 us | p99 us | max us | load1 (min-max) | others' CPU % (max) | noisy rounds | quiet runs: n, calls/s, p50, p99 |");
        println!("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|");
        for ((_, ci), runs) in rows {
            let quiet: Vec<&Vec<f64>> = runs.iter().filter(|r| r[1] <= noisy_cpu).collect();
            let qcol = |k: usize| quiet.iter().map(|r| r[k]).collect::<Vec<_>>();
            let qtext = if quiet.is_empty() {
                "0".to_string()
            } else {
                format!("{}, {}, {}, {}", quiet.len(), fmt_num(median(qcol(5))), fmt_num(median(qcol(7))), fmt_num(median(qcol(8))))
            };
            let col = |k: usize| runs.iter().map(|r| r[k]).collect::<Vec<_>>();
            let loads = col(0);
            let others = col(1);
            let lmin = loads.iter().cloned().fold(f64::INFINITY, f64::min);
            let lmax = loads.iter().cloned().fold(0.0, f64::max);
            let omax = others.iter().cloned().fold(0.0, f64::max);
            let noisy = runs.iter().filter(|r| r[0] > noisy_load || r[1] > noisy_cpu).count();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.2}-{:.2} | {:.1} | {} | {} |",
                CANDIDATES[*ci],
                runs.len(),
                fmt_num(median(col(5))),
                fmt_num(median(col(6))),
                fmt_num(median(col(7))),
                fmt_num(median(col(8))),
                fmt_num(median(col(9))),
                lmin,
                lmax,
                omax,
                noisy,
                qtext
            );
        }
    }
    Ok(())
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") => {
            for c in CANDIDATES {
                println!("candidate\t{c}");
            }
            for w in WORKLOADS {
                println!("workload\t{}", w.name);
            }
            Ok(())
        }
        Some("header") => {
            println!("{HEADER}");
            Ok(())
        }
        Some("run") => run(&args[1..]),
        Some("torn") => torn(&args[1..]),
        Some("summarize") => {
            let nl = arg(&args, "--noisy-load").map_or(1.0, |s| s.parse().unwrap());
            let nc = arg(&args, "--noisy-cpu").map_or(10.0, |s| s.parse().unwrap());
            summarize(args.get(1).expect("results file"), nl, nc)
        }
        _ => {
            eprintln!("usage: wal-compare list | header | run --candidate C --workload W --dir DIR [--round R] [--n N] [--warmup W] | summarize FILE [--noisy-load X] [--noisy-cpu PCT] | torn --candidate C --dir DIR");
            std::process::exit(2);
        }
    }
}
