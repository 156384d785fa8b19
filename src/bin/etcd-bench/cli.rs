//! Command line: options, workload names, usage text.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};

pub const DEFAULT_WORKLOADS: &[&str] = &["put-v1-1", "put-v1-64", "put-v2-1", "put-v2-64"];

/// What `--workload all` runs, in this order (`scale` is never part of it).
pub const ALL_WORKLOADS: &[&str] = &[
    "put-v1-1",
    "put-v1-64",
    "put-v2-1",
    "put-v2-16",
    "put-v2-64",
    "put-v2-256",
    "get-v1-64",
    "get-v2-64",
    "qget-v2-64",
    "cas-v2-16",
    "cas-v2-64",
    "watch-v2-1000",
];

pub const USAGE: &str = "\
usage: etcd-bench [options] URL [URL...]
       etcd-bench --await-key I [--value-size B] [--duration-cap S] URL

URL is a client URL of the server, e.g. http://127.0.0.1:4001 (http only).
With several URLs (members of one cluster), connection c of every workload
goes to URL number c mod (number of URLs): the load is spread round-robin and
each connection stays pinned to its member.

options:
  --workload NAME     workload to run; repeatable, or comma-separated; `all` runs
                      the listed ones except scale (default:
                      put-v1-1,put-v1-64,put-v2-1,put-v2-64)
  --endpoints URLS    comma-separated client URLs, same as giving them as arguments
  --requests N        requests per workload, shared by its connections (default 2000;
                      CAS: attempts; scale: keys; ignored by watch-v2-*)
  --conns N           override the connection count of every workload (for
                      watch-v2-*: the number of watchers)
  --value-size B      bytes per written value (default 64)
  --duration-cap S    stop handing out requests after S seconds (default 60);
                      with --await-key: give up after S seconds
  --json              print one JSON object per workload instead of the table
  -h, --help          this text

scale options (see below):
  --probe-ms MS       the probe writer's period (default 5)
  --pid PID           the server's process id: sample its memory from /proc/PID/status
  --settle-secs S     quiet time after the load before reading the resident memory
                      (default 5)

workloads (the number is the connection count; any count works, e.g. put-v2-3):
  put-v1-1 put-v1-64                    POST /v1/keys/bench/k<i> value=...
  put-v2-1 put-v2-16 put-v2-64 put-v2-256
                                        PUT  /v2/keys/bench/k<i> value=...
  get-v1-64 get-v2-64                   GET  /v{1,2}/keys/bench/k<i%100> (100 keys written first)
  qget-v2-64                            GET  /v2/keys/bench/k<i%100>?quorum=true
  cas-v2-16 cas-v2-64                   GET bench/cas, then PUT ?prevIndex=<its modifiedIndex>;
                                        req/s counts successful swaps, 412 = lost race
  watch-v2-1000                         1000 watchers on bench/w, one PUT, fan-out latency
  scale (scale-64)                      PUT --requests distinct keys /v2/keys/scale/k<i:07>
                                        while one more connection PUTs /v2/keys/scale_probe
                                        every --probe-ms; prints load, probe and memory figures

--await-key I polls GET /v2/keys/scale/k<I:07> every 5 ms (reconnecting as
needed) until it answers 200 with the value `scale` wrote there, and prints how
long that took; for timing a restart.

A workload whose endpoint answers 404/405 is reported as `unsupported` and skipped.
Exit status: 0 all requests succeeded, 1 some failed, 2 usage error.
";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Api {
    V1,
    V2,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Put,
    Get,
    QuorumGet,
    Cas,
    Watch,
    Scale,
}

/// A workload family: `<family>-<conns>` names one workload.
struct Family {
    name: &'static str,
    api: Api,
    kind: Kind,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "put-v1",
        api: Api::V1,
        kind: Kind::Put,
    },
    Family {
        name: "put-v2",
        api: Api::V2,
        kind: Kind::Put,
    },
    Family {
        name: "get-v1",
        api: Api::V1,
        kind: Kind::Get,
    },
    Family {
        name: "get-v2",
        api: Api::V2,
        kind: Kind::Get,
    },
    Family {
        name: "qget-v2",
        api: Api::V2,
        kind: Kind::QuorumGet,
    },
    Family {
        name: "cas-v2",
        api: Api::V2,
        kind: Kind::Cas,
    },
    Family {
        name: "watch-v2",
        api: Api::V2,
        kind: Kind::Watch,
    },
    Family {
        name: "scale",
        api: Api::V2,
        kind: Kind::Scale,
    },
];

/// Connections of `scale` when its name carries no number.
const SCALE_CONNS: usize = 64;

#[derive(Clone, Debug)]
pub struct WorkloadDef {
    pub name: String,
    pub api: Api,
    pub kind: Kind,
    pub conns: usize,
}

impl WorkloadDef {
    /// `put-v2-64` and the like; `scale` alone means `scale-64`.
    pub fn parse(name: &str) -> Result<WorkloadDef> {
        let unknown = || anyhow!("unknown workload `{name}`");
        let (family, conns) = if name == "scale" {
            ("scale", SCALE_CONNS)
        } else {
            let (family, n) = name.rsplit_once('-').ok_or_else(unknown)?;
            let conns = n.parse::<usize>().map_err(|_| unknown())?;
            if conns == 0 || n.starts_with('0') {
                return Err(unknown());
            }
            (family, conns)
        };
        let f = FAMILIES
            .iter()
            .find(|f| f.name == family)
            .ok_or_else(unknown)?;
        Ok(WorkloadDef {
            name: name.to_string(),
            api: f.api,
            kind: f.kind,
            conns,
        })
    }
}

pub struct Options {
    pub workloads: Vec<WorkloadDef>,
    pub requests: usize,
    pub conns: Option<usize>,
    pub value_size: usize,
    pub duration_cap: Duration,
    pub json: bool,
    pub urls: Vec<String>,
    pub probe_period: Duration,
    pub pid: Option<u32>,
    pub settle: Duration,
    pub await_key: Option<usize>,
}

pub enum Cli {
    Run(Options),
    Help,
}

pub fn parse_number(flag: &str, value: &str) -> Result<usize> {
    value
        .parse::<usize>()
        .map_err(|_| anyhow!("{flag}: `{value}` is not a non-negative integer"))
}

fn parse_secs(flag: &str, value: &str, allow_zero: bool) -> Result<f64> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && (*s > 0.0 || (allow_zero && *s == 0.0)))
        .ok_or_else(|| {
            let what = if allow_zero {
                "a non-negative"
            } else {
                "a positive"
            };
            anyhow!("{flag}: `{value}` is not {what} number")
        })
}

fn split_list(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

pub fn parse_args(args: &[String]) -> Result<Cli> {
    let mut names: Vec<String> = Vec::new();
    let mut requests = 2000;
    let mut conns = None;
    let mut value_size = 64;
    let mut cap_secs = 60.0_f64;
    let mut json = false;
    let mut urls: Vec<String> = Vec::new();
    let mut probe_ms = 5.0_f64;
    let mut pid = None;
    let mut settle_secs = 5.0_f64;
    let mut await_key = None;

    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = |flag: &str| -> Result<String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            let v = args
                .get(i)
                .cloned()
                .ok_or_else(|| anyhow!("{flag} needs a value"))?;
            i += 1;
            Ok(v)
        };
        match flag {
            "-h" | "--help" => return Ok(Cli::Help),
            "--json" => json = true,
            "--workload" => names.extend(split_list(&value(flag)?)),
            "--endpoints" => urls.extend(split_list(&value(flag)?)),
            "--requests" => requests = parse_number(flag, &value(flag)?)?,
            "--conns" => {
                let n = parse_number(flag, &value(flag)?)?;
                if n == 0 {
                    bail!("--conns must be at least 1");
                }
                conns = Some(n);
            }
            "--value-size" => value_size = parse_number(flag, &value(flag)?)?,
            "--duration-cap" => cap_secs = parse_secs(flag, &value(flag)?, false)?,
            "--probe-ms" => probe_ms = parse_secs(flag, &value(flag)?, false)?,
            "--settle-secs" => settle_secs = parse_secs(flag, &value(flag)?, true)?,
            "--pid" => {
                let v = value(flag)?;
                pid = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| anyhow!("--pid: `{v}` is not a process id"))?,
                );
            }
            "--await-key" => await_key = Some(parse_number(flag, &value(flag)?)?),
            _ if flag.starts_with('-') && flag.len() > 1 => bail!("unknown option {flag}"),
            _ => urls.push(arg.to_string()),
        }
    }

    if urls.is_empty() {
        bail!("missing URL");
    }
    if await_key.is_some() {
        if !names.is_empty() {
            bail!("--await-key runs no workload; drop --workload");
        }
        if urls.len() > 1 {
            bail!("--await-key takes one URL");
        }
    }
    if names.is_empty() && await_key.is_none() {
        names = DEFAULT_WORKLOADS.iter().map(|s| s.to_string()).collect();
    }
    let mut workloads = Vec::new();
    for name in &names {
        if name == "all" {
            for n in ALL_WORKLOADS {
                workloads.push(WorkloadDef::parse(n)?);
            }
            continue;
        }
        workloads.push(WorkloadDef::parse(name)?);
    }
    Ok(Cli::Run(Options {
        workloads,
        requests,
        conns,
        value_size,
        duration_cap: Duration::from_secs_f64(cap_secs),
        json,
        urls,
        probe_period: Duration::from_secs_f64(probe_ms / 1000.0),
        pid,
        settle: Duration::from_secs_f64(settle_secs),
        await_key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn run(list: &[&str]) -> Options {
        match parse_args(&args(list)) {
            Ok(Cli::Run(o)) => o,
            Ok(Cli::Help) => panic!("expected a run, got help"),
            Err(e) => panic!("{list:?}: {e:#}"),
        }
    }

    fn names(o: &Options) -> Vec<&str> {
        o.workloads.iter().map(|w| w.name.as_str()).collect()
    }

    #[test]
    fn parses_options_and_defaults() {
        let o = run(&["http://h:1"]);
        assert_eq!(names(&o), DEFAULT_WORKLOADS);
        assert_eq!(
            (o.requests, o.value_size, o.conns, o.json),
            (2000, 64, None, false)
        );
        assert_eq!(o.duration_cap, Duration::from_secs(60));
        assert_eq!(o.urls, ["http://h:1"]);
        assert_eq!(o.probe_period, Duration::from_millis(5));
        assert_eq!(o.settle, Duration::from_secs(5));
        assert_eq!((o.pid, o.await_key), (None, None));

        let o = run(&[
            "--workload",
            "cas-v2-64,get-v2-64",
            "--workload=watch-v2-1000",
            "--requests",
            "7",
            "--conns=3",
            "--json",
            "--duration-cap",
            "0.5",
            "http://h:1",
        ]);
        assert_eq!(names(&o), ["cas-v2-64", "get-v2-64", "watch-v2-1000"]);
        assert_eq!((o.requests, o.conns, o.json), (7, Some(3), true));
        assert_eq!(o.duration_cap, Duration::from_millis(500));

        for bad in [
            &["--workload", "nope", "http://h"][..],
            &["--workload", "put-v2", "http://h"],
            &["--workload", "put-v2-0", "http://h"],
            &["--workload", "put-v2-064", "http://h"],
            &["--workload", "put-v3-1", "http://h"],
            &["--requests", "x", "http://h"],
            &["--conns", "0", "http://h"],
            &["--frobnicate", "http://h"],
            &["--probe-ms", "0", "http://h"],
            &["--settle-secs", "-1", "http://h"],
            &["--pid", "0", "http://h"],
            &["--pid", "abc", "http://h"],
            &["--await-key", "1", "--workload", "put-v2-1", "http://h"],
            &["--await-key", "1", "http://a", "http://b"],
            &["--requests"],
            &[],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
        assert!(matches!(parse_args(&args(&["-h"])), Ok(Cli::Help)));
    }

    #[test]
    fn workload_names_carry_the_connection_count() {
        let o = run(&[
            "--workload",
            "put-v2-16,cas-v2-16,put-v2-3,scale",
            "http://h",
        ]);
        let got: Vec<_> = o
            .workloads
            .iter()
            .map(|w| (w.name.as_str(), w.api, w.kind, w.conns))
            .collect();
        assert_eq!(
            got,
            [
                ("put-v2-16", Api::V2, Kind::Put, 16),
                ("cas-v2-16", Api::V2, Kind::Cas, 16),
                ("put-v2-3", Api::V2, Kind::Put, 3),
                ("scale", Api::V2, Kind::Scale, 64),
            ]
        );
        let o = run(&["--workload", "get-v1-8,scale-32", "http://h"]);
        assert_eq!(
            o.workloads
                .iter()
                .map(|w| (w.api, w.kind, w.conns))
                .collect::<Vec<_>>(),
            [(Api::V1, Kind::Get, 8), (Api::V2, Kind::Scale, 32)]
        );

        let o = run(&["--workload", "all", "http://h"]);
        assert_eq!(names(&o), ALL_WORKLOADS);
        assert!(o.workloads.iter().all(|w| w.kind != Kind::Scale));
    }

    #[test]
    fn several_endpoints() {
        let o = run(&["http://a:1", "http://b:2"]);
        assert_eq!(o.urls, ["http://a:1", "http://b:2"]);
        let o = run(&["--endpoints", "http://a:1, http://b:2,,http://c:3"]);
        assert_eq!(o.urls, ["http://a:1", "http://b:2", "http://c:3"]);
        let o = run(&["--endpoints=http://a:1", "http://b:2"]);
        assert_eq!(o.urls, ["http://a:1", "http://b:2"]);
    }

    #[test]
    fn scale_and_await_options() {
        let o = run(&[
            "--workload",
            "scale",
            "--requests",
            "1000000",
            "--value-size",
            "100",
            "--probe-ms",
            "2.5",
            "--pid",
            "4242",
            "--settle-secs",
            "0",
            "http://h",
        ]);
        assert_eq!(
            (o.requests, o.value_size, o.pid),
            (1_000_000, 100, Some(4242))
        );
        assert_eq!(o.probe_period, Duration::from_micros(2500));
        assert_eq!(o.settle, Duration::ZERO);

        let o = run(&["--await-key", "99", "--duration-cap", "30", "http://h"]);
        assert_eq!(o.await_key, Some(99));
        assert!(o.workloads.is_empty());
        assert_eq!(o.duration_cap, Duration::from_secs(30));
    }
}
