//! `scale`: write many distinct keys at N connections while one more
//! connection writes a probe key at a fixed period, and watch the server's
//! memory; `--await-key`: time until a restarted server serves a key again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::cli::{Options, WorkloadDef};
use crate::http::{
    Conn, REQUEST_TIMEOUT, Target, describe, node_value, open_conns, scale_key_path, scale_value,
};
use crate::load::{Done, Load, drive};
use crate::report::{ErrorLog, Status};

/// The key the probe writer overwrites (outside the `scale` directory).
const PROBE_PATH: &str = "/v2/keys/scale_probe";
/// Memory sampling period.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Progress lines on stderr during the load.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Polling period of `--await-key`.
const AWAIT_EVERY: Duration = Duration::from_millis(5);

/// `VmRSS` and `VmHWM` of a process, in KiB, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mem {
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

fn parse_status(text: &str) -> Option<Mem> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some(Mem {
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
    })
}

fn read_mem(pid: u32) -> Result<Mem, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    parse_status(&text).ok_or_else(|| format!("{path} has no VmRSS/VmHWM"))
}

/// Latencies and errors of the probe writer.
#[derive(Default)]
pub struct ProbeStats {
    /// Sorted latencies of the successful writes.
    pub latencies_us: Vec<u64>,
    /// Seconds from the start of the load to the start of the slowest write.
    pub max_at_secs: f64,
    pub errors: usize,
    pub error_samples: Vec<String>,
}

/// Memory of the server around the load.
pub struct MemStats {
    pub pid: u32,
    /// `VmHWM` right after the load (the process's peak so far).
    pub hwm_kb: u64,
    /// The largest `VmRSS` of the samples taken during the load.
    pub max_rss_kb: u64,
    pub samples: usize,
    /// `VmRSS` after the settle time.
    pub rss_after_kb: u64,
    /// `VmHWM` after the settle time: higher than `hwm_kb` when the server
    /// grew after the load (a snapshot, a compaction).
    pub hwm_after_kb: u64,
}

pub struct ScaleReport {
    pub name: String,
    pub status: Status,
    pub keys: usize,
    pub conns: usize,
    pub value_size: usize,
    pub probe_period: Duration,
    pub settle: Duration,
    pub load: Option<Done>,
    pub probe: ProbeStats,
    pub mem: Option<MemStats>,
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn pct_ms(sorted_us: &[u64], p: f64) -> Option<f64> {
    let n = sorted_us.len();
    if n == 0 {
        return None;
    }
    let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
    Some(sorted_us[rank - 1] as f64 / 1000.0)
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
}

impl ScaleReport {
    pub fn failed(&self) -> bool {
        matches!(self.status, Status::Failed(_))
            || self.load.as_ref().is_some_and(|l| l.errors > 0)
            || self.probe.errors > 0
    }

    pub fn json(&self) -> serde_json::Value {
        let (status, reason) = match &self.status {
            Status::Done => ("done", None),
            Status::Unsupported(r) => ("unsupported", Some(r.clone())),
            Status::Failed(r) => ("failed", Some(r.clone())),
        };
        let load = self.load.as_ref().map(|l| {
            serde_json::json!({
                "ok": l.ok,
                "errors": l.errors,
                "secs": l.secs,
                "writes_per_sec": if l.secs > 0.0 { Some(l.ok as f64 / l.secs) } else { None },
                "p50_ms": pct_ms(&l.latencies_us, 0.50),
                "p99_ms": pct_ms(&l.latencies_us, 0.99),
                "max_ms": pct_ms(&l.latencies_us, 1.0),
                "capped": l.capped,
                "error_samples": l.error_samples,
            })
        });
        let p = &self.probe;
        let mem = self.mem.as_ref().map(|m| {
            serde_json::json!({
                "pid": m.pid,
                "hwm_kb": m.hwm_kb,
                "max_rss_kb": m.max_rss_kb,
                "samples": m.samples,
                "rss_after_kb": m.rss_after_kb,
                "hwm_after_settle_kb": m.hwm_after_kb,
            })
        });
        serde_json::json!({
            "workload": self.name,
            "status": status,
            "reason": reason,
            "keys": self.keys,
            "conns": self.conns,
            "value_size": self.value_size,
            "settle_secs": self.settle.as_secs_f64(),
            "load": load,
            "probe": {
                "period_ms": self.probe_period.as_secs_f64() * 1000.0,
                "writes": p.latencies_us.len(),
                "errors": p.errors,
                "p50_ms": pct_ms(&p.latencies_us, 0.50),
                "p99_ms": pct_ms(&p.latencies_us, 0.99),
                "max_ms": pct_ms(&p.latencies_us, 1.0),
                "max_at_secs": p.max_at_secs,
                "error_samples": p.error_samples,
            },
            "memory": mem,
        })
    }

    /// A few labelled lines for people.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{:<8} {} keys x {} B at {} conns, probe every {} ms\n",
            self.name,
            self.keys,
            self.value_size,
            self.conns,
            self.probe_period.as_secs_f64() * 1000.0
        );
        match &self.status {
            Status::Done => {}
            Status::Unsupported(why) => out.push_str(&format!("         unsupported ({why})\n")),
            Status::Failed(why) => out.push_str(&format!("         FAILED: {why}\n")),
        }
        if let Some(l) = &self.load {
            let rate = if l.secs > 0.0 {
                format!("{:.1}", l.ok as f64 / l.secs)
            } else {
                "-".to_string()
            };
            out.push_str(&format!(
                "load     ok {} err {} secs {:.3} writes/s {rate} p50 {} p99 {} max {} ms{}\n",
                l.ok,
                l.errors,
                l.secs,
                ms(pct_ms(&l.latencies_us, 0.50)),
                ms(pct_ms(&l.latencies_us, 0.99)),
                ms(pct_ms(&l.latencies_us, 1.0)),
                if l.capped { " (capped)" } else { "" }
            ));
            let p = &self.probe;
            out.push_str(&format!(
                "probe    ok {} err {} p50 {} p99 {} max {} ms (slowest started {:.2} s into the load)\n",
                p.latencies_us.len(),
                p.errors,
                ms(pct_ms(&p.latencies_us, 0.50)),
                ms(pct_ms(&p.latencies_us, 0.99)),
                ms(pct_ms(&p.latencies_us, 1.0)),
                p.max_at_secs
            ));
        }
        if let Some(m) = &self.mem {
            out.push_str(&format!(
                "memory   pid {}: VmHWM {} KB, max VmRSS {} KB ({} samples); after {} s quiet: VmRSS {} KB, VmHWM {} KB\n",
                m.pid,
                m.hwm_kb,
                m.max_rss_kb,
                m.samples,
                self.settle.as_secs_f64(),
                m.rss_after_kb,
                m.hwm_after_kb
            ));
        }
        out.trim_end().to_string()
    }

    pub fn error_samples(&self) -> Vec<String> {
        let mut all = Vec::new();
        if let Some(l) = &self.load {
            all.extend(l.error_samples.iter().map(|s| format!("load: {s}")));
        }
        all.extend(
            self.probe
                .error_samples
                .iter()
                .map(|s| format!("probe: {s}")),
        );
        all
    }
}

/// The probe writer: one PUT every `period` (the next one right away when a
/// write took longer) until `stop` turns true.
async fn probe_writer(
    mut conn: Conn,
    period: Duration,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) -> ProbeStats {
    let errors = ErrorLog::default();
    let mut stats = ProbeStats::default();
    let mut max_us = 0;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for n in 0u64.. {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        let t = Instant::now();
        let form = format!("value=p{n}");
        match conn.request(Method::PUT, PROBE_PATH, Some(&form)).await {
            Ok(resp) if resp.status.is_success() => {
                let us = t.elapsed().as_micros() as u64;
                if us > max_us {
                    max_us = us;
                    stats.max_at_secs = t.saturating_duration_since(start).as_secs_f64();
                }
                stats.latencies_us.push(us);
            }
            Ok(resp) => errors.record(describe(&Method::PUT, PROBE_PATH, &resp)),
            Err(e) => errors.record(format!(
                "PUT {PROBE_PATH} ({:.2} s into the load): {e:#}",
                t.saturating_duration_since(start).as_secs_f64()
            )),
        }
    }
    stats.latencies_us.sort_unstable();
    stats.errors = errors.count();
    stats.error_samples = errors.samples();
    stats
}

/// What the sampler saw: the largest `VmRSS`, how many samples, and the
/// first failure to read (the server exited?).
struct Sampled {
    max_rss_kb: u64,
    samples: usize,
    failure: Option<String>,
}

/// Samples the server's memory every 100 ms (when `pid` is given) and prints
/// a progress line every 10 s, until `stop` turns true.
async fn sampler(
    pid: Option<u32>,
    keys: usize,
    load: Arc<Load>,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) -> Sampled {
    let mut out = Sampled {
        max_rss_kb: 0,
        samples: 0,
        failure: None,
    };
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next_progress = start + PROGRESS_EVERY;
    let mut rss_kb = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        if let (Some(pid), None) = (pid, &out.failure) {
            match read_mem(pid) {
                Ok(m) => {
                    out.max_rss_kb = out.max_rss_kb.max(m.rss_kb);
                    out.samples += 1;
                    rss_kb = Some(m.rss_kb);
                }
                Err(e) => out.failure = Some(e),
            }
        }
        if Instant::now() >= next_progress {
            next_progress += PROGRESS_EVERY;
            let handed = load.next.load(Ordering::Relaxed).min(keys);
            let mem = rss_kb.map_or_else(String::new, |kb| format!(", server VmRSS {kb} KB"));
            eprintln!(
                "etcd-bench: scale: {handed}/{keys} writes started after {:.0} s{mem}",
                start.elapsed().as_secs_f64()
            );
        }
    }
    out
}

pub async fn run_scale(targets: &[Arc<Target>], def: WorkloadDef, opts: &Options) -> ScaleReport {
    let conns_n = opts.conns.unwrap_or(def.conns);
    let mut report = ScaleReport {
        name: def.name.clone(),
        status: Status::Done,
        keys: opts.requests,
        conns: conns_n,
        value_size: opts.value_size,
        probe_period: opts.probe_period,
        settle: opts.settle,
        load: None,
        probe: ProbeStats::default(),
        mem: None,
    };
    if let Some(pid) = opts.pid
        && let Err(e) = read_mem(pid)
    {
        report.status = Status::Failed(format!("--pid {pid}: {e}"));
        return report;
    }
    let mut conns = match open_conns(targets, conns_n + 1).await {
        Ok(c) => c,
        Err(e) => {
            report.status = Status::Failed(format!("opening {} connections: {e:#}", conns_n + 1));
            return report;
        }
    };
    // The probe writer's own connection, to the first target.
    let mut probe_conn = conns.remove(0);
    match probe_conn
        .request(Method::PUT, PROBE_PATH, Some("value=start"))
        .await
    {
        Ok(resp) if resp.status.is_success() => {}
        Ok(resp) if crate::http::is_unsupported(&resp) => {
            report.status = Status::Unsupported(format!("PUT {PROBE_PATH} -> {}", resp.status));
            return report;
        }
        Ok(resp) => {
            report.status = Status::Failed(describe(&Method::PUT, PROBE_PATH, &resp));
            return report;
        }
        Err(e) => {
            report.status = Status::Failed(format!("PUT {PROBE_PATH}: {e:#}"));
            return report;
        }
    }

    let start = Instant::now();
    let load = Arc::new(Load {
        def,
        requests: opts.requests,
        value: String::new(),
        value_size: opts.value_size,
        next: AtomicUsize::new(0),
        deadline: start + opts.duration_cap,
        capped: AtomicBool::new(false),
        errors: ErrorLog::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let probe = tokio::spawn(probe_writer(
        probe_conn,
        opts.probe_period,
        start,
        stop_rx.clone(),
    ));
    let sampler = tokio::spawn(sampler(
        opts.pid,
        opts.requests,
        load.clone(),
        start,
        stop_rx,
    ));
    let done = drive(load, conns).await;
    let _ = stop_tx.send(true);
    let hwm = opts.pid.map(read_mem);
    match probe.await {
        Ok(p) => report.probe = p,
        Err(e) => report.status = Status::Failed(format!("probe task: {e}")),
    }
    let sampled = match sampler.await {
        Ok(s) => s,
        Err(e) => {
            report.status = Status::Failed(format!("sampler task: {e}"));
            return report;
        }
    };
    report.load = Some(done);
    if let Some(pid) = opts.pid {
        if let Some(why) = sampled.failure {
            report.status = Status::Failed(format!("server memory during the load: {why}"));
            return report;
        }
        let hwm_kb = match hwm {
            Some(Ok(m)) => m.hwm_kb,
            Some(Err(e)) => {
                report.status = Status::Failed(format!("server memory after the load: {e}"));
                return report;
            }
            None => unreachable!("hwm is read when a pid is given"),
        };
        tokio::time::sleep(opts.settle).await;
        match read_mem(pid) {
            Ok(after) => {
                report.mem = Some(MemStats {
                    pid,
                    hwm_kb,
                    max_rss_kb: sampled.max_rss_kb,
                    samples: sampled.samples,
                    rss_after_kb: after.rss_kb,
                    hwm_after_kb: after.hwm_kb,
                })
            }
            Err(e) => {
                report.status = Status::Failed(format!(
                    "server memory {} s after the load: {e}",
                    opts.settle.as_secs_f64()
                ))
            }
        }
    }
    report
}

/// Answers seen while waiting, by kind, for the summary line.
fn tally_answer(seen: &mut BTreeMap<String, usize>, what: String) {
    *seen.entry(what).or_default() += 1;
}

/// Polls `scale` key `key` until it answers 200 with its value; prints the
/// time that took. Returns the exit status.
pub async fn run_await(target: Arc<Target>, key: usize, opts: &Options) -> i32 {
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + opts.duration_cap);
    let path = scale_key_path(key);
    let want = scale_value(key, opts.value_size);
    let mut conn = Conn::lazy(target);
    let mut attempts = 0usize;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut last = String::from("no answer yet");
    loop {
        attempts += 1;
        match tokio::time::timeout_at(deadline, conn.request(Method::GET, &path, None)).await {
            Ok(Ok(resp)) if resp.status == StatusCode::OK => {
                if node_value(&resp.body).as_deref() == Some(want.as_str()) {
                    break;
                }
                last = describe(&Method::GET, &path, &resp);
                tally_answer(&mut seen, "200 with another value".to_string());
            }
            Ok(Ok(resp)) => {
                last = describe(&Method::GET, &path, &resp);
                tally_answer(&mut seen, resp.status.as_u16().to_string());
            }
            Ok(Err(e)) => {
                last = format!("GET {path}: {e:#}");
                tally_answer(&mut seen, "no HTTP answer".to_string());
            }
            Err(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "etcd-bench: GET {path} did not answer 200 with the expected value within {} s \
                 ({attempts} attempts); last: {last}",
                opts.duration_cap.as_secs_f64()
            );
            return 1;
        }
        tokio::time::sleep(AWAIT_EVERY.min(REQUEST_TIMEOUT)).await;
    }
    let ready_ms = start.elapsed().as_secs_f64() * 1000.0;
    let before: Vec<String> = seen.iter().map(|(k, n)| format!("{n}x {k}")).collect();
    if opts.json {
        println!(
            "{}",
            serde_json::json!({
                "await_key": path,
                "ready_ms": ready_ms,
                "attempts": attempts,
                "before": seen,
            })
        );
    } else {
        println!(
            "GET {path} answered 200 with the expected value after {ready_ms:.1} ms \
             ({attempts} attempts; before: {})",
            if before.is_empty() {
                "nothing".to_string()
            } else {
                before.join(", ")
            }
        );
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_hwm_from_proc_status() {
        let text = "Name:\tetcd\nVmPeak:\t  900 kB\nVmHWM:\t  5120 kB\nVmRSS:\t  4096 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Mem {
                rss_kb: 4096,
                hwm_kb: 5120
            })
        );
        assert_eq!(parse_status("VmRSS:\t1 kB\n"), None);
        let me = read_mem(std::process::id()).unwrap();
        assert!(me.rss_kb > 0 && me.hwm_kb >= me.rss_kb, "{me:?}");
        assert!(read_mem(u32::MAX).is_err());
    }

    #[test]
    fn percentiles_of_sorted_microseconds() {
        let v: Vec<u64> = (1..=200).map(|ms| ms * 1000).collect();
        assert_eq!(pct_ms(&v, 0.99), Some(198.0));
        assert_eq!(pct_ms(&v, 1.0), Some(200.0));
        assert_eq!(pct_ms(&[], 0.5), None);
    }

    #[test]
    fn scale_report_json_and_text() {
        let mut r = ScaleReport {
            name: "scale".into(),
            status: Status::Done,
            keys: 10,
            conns: 2,
            value_size: 100,
            probe_period: Duration::from_millis(5),
            settle: Duration::from_secs(1),
            load: Some(Done {
                ok: 10,
                conflicts: 0,
                latencies_us: vec![1000; 10],
                secs: 2.0,
                errors: 0,
                error_samples: vec![],
                capped: false,
            }),
            probe: ProbeStats {
                latencies_us: vec![500, 700, 9000],
                max_at_secs: 1.5,
                ..ProbeStats::default()
            },
            mem: Some(MemStats {
                pid: 7,
                hwm_kb: 300,
                max_rss_kb: 290,
                samples: 20,
                rss_after_kb: 200,
                hwm_after_kb: 310,
            }),
        };
        let j = r.json();
        assert_eq!(j["load"]["writes_per_sec"], 5.0);
        assert_eq!(j["probe"]["max_ms"], 9.0);
        assert_eq!(j["probe"]["writes"], 3);
        assert_eq!(j["memory"]["hwm_kb"], 300);
        assert_eq!(j["memory"]["rss_after_kb"], 200);
        assert!(!r.failed());
        let text = r.text();
        assert!(text.contains("writes/s 5.0"), "{text}");
        assert!(text.contains("max 9.000 ms"), "{text}");
        assert!(
            text.contains("after 1 s quiet: VmRSS 200 KB, VmHWM 310 KB"),
            "{text}"
        );
        assert_eq!(j["memory"]["hwm_after_settle_kb"], 310);

        r.probe.errors = 1;
        assert!(r.failed());
    }
}
