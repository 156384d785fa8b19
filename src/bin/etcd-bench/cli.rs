//! Command line: options, workload names, usage text.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};

pub const DEFAULT_WORKLOADS: &[&str] = &["put-v1-1", "put-v1-64", "put-v2-1", "put-v2-64"];

pub const USAGE: &str = "\
usage: etcd-bench [options] URL

URL is the client URL of the server, e.g. http://127.0.0.1:4001 (http only).

options:
  --workload NAME     workload to run; repeatable, or comma-separated; `all` runs
                      every one (default: put-v1-1,put-v1-64,put-v2-1,put-v2-64)
  --requests N        requests per workload, shared by its connections (default 2000;
                      ignored by watch-v2-1000)
  --conns N           override the connection count of every workload (for
                      watch-v2-1000: the number of watchers)
  --value-size B      bytes per written value (default 64)
  --duration-cap S    stop handing out requests after S seconds (default 60)
  --json              print one JSON object per workload instead of the table
  -h, --help          this text

workloads:
  put-v1-1 put-v1-64               POST /v1/keys/bench/k<i> value=...
  put-v2-1 put-v2-64 put-v2-256    PUT  /v2/keys/bench/k<i> value=...
  get-v1-64 get-v2-64              GET  /v{1,2}/keys/bench/k<i%100> (100 keys written first)
  qget-v2-64                       GET  /v2/keys/bench/k<i%100>?quorum=true
  cas-v2-64                        GET bench/cas then PUT ?prevValue=<cur>; 412 = conflict
  watch-v2-1000                    1000 watchers on bench/w, one PUT, fan-out latency

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
}

#[derive(Clone, Copy, Debug)]
pub struct WorkloadDef {
    pub name: &'static str,
    pub api: Api,
    pub kind: Kind,
    pub conns: usize,
}

pub const WORKLOADS: &[WorkloadDef] = &[
    WorkloadDef {
        name: "put-v1-1",
        api: Api::V1,
        kind: Kind::Put,
        conns: 1,
    },
    WorkloadDef {
        name: "put-v1-64",
        api: Api::V1,
        kind: Kind::Put,
        conns: 64,
    },
    WorkloadDef {
        name: "put-v2-1",
        api: Api::V2,
        kind: Kind::Put,
        conns: 1,
    },
    WorkloadDef {
        name: "put-v2-64",
        api: Api::V2,
        kind: Kind::Put,
        conns: 64,
    },
    WorkloadDef {
        name: "put-v2-256",
        api: Api::V2,
        kind: Kind::Put,
        conns: 256,
    },
    WorkloadDef {
        name: "get-v1-64",
        api: Api::V1,
        kind: Kind::Get,
        conns: 64,
    },
    WorkloadDef {
        name: "get-v2-64",
        api: Api::V2,
        kind: Kind::Get,
        conns: 64,
    },
    WorkloadDef {
        name: "qget-v2-64",
        api: Api::V2,
        kind: Kind::QuorumGet,
        conns: 64,
    },
    WorkloadDef {
        name: "cas-v2-64",
        api: Api::V2,
        kind: Kind::Cas,
        conns: 64,
    },
    WorkloadDef {
        name: "watch-v2-1000",
        api: Api::V2,
        kind: Kind::Watch,
        conns: 1000,
    },
];

pub struct Options {
    pub workloads: Vec<WorkloadDef>,
    pub requests: usize,
    pub conns: Option<usize>,
    pub value_size: usize,
    pub duration_cap: Duration,
    pub json: bool,
    pub url: String,
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

pub fn parse_args(args: &[String]) -> Result<Cli> {
    let mut names: Vec<String> = Vec::new();
    let mut requests = 2000;
    let mut conns = None;
    let mut value_size = 64;
    let mut cap_secs = 60.0_f64;
    let mut json = false;
    let mut url: Option<String> = None;

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
            "--workload" => {
                let v = value(flag)?;
                names.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                );
            }
            "--requests" => requests = parse_number(flag, &value(flag)?)?,
            "--conns" => {
                let n = parse_number(flag, &value(flag)?)?;
                if n == 0 {
                    bail!("--conns must be at least 1");
                }
                conns = Some(n);
            }
            "--value-size" => value_size = parse_number(flag, &value(flag)?)?,
            "--duration-cap" => {
                let v = value(flag)?;
                cap_secs = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| anyhow!("--duration-cap: `{v}` is not a positive number"))?;
            }
            _ if flag.starts_with('-') && flag.len() > 1 => bail!("unknown option {flag}"),
            _ => {
                if url.is_some() {
                    bail!("more than one URL given");
                }
                url = Some(arg.to_string());
            }
        }
    }

    let url = url.ok_or_else(|| anyhow!("missing URL"))?;
    if names.is_empty() {
        names = DEFAULT_WORKLOADS.iter().map(|s| s.to_string()).collect();
    }
    let mut workloads = Vec::new();
    for name in &names {
        if name == "all" {
            workloads.extend(WORKLOADS.iter().copied());
            continue;
        }
        let def = WORKLOADS
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| anyhow!("unknown workload `{name}`"))?;
        workloads.push(*def);
    }
    Ok(Cli::Run(Options {
        workloads,
        requests,
        conns,
        value_size,
        duration_cap: Duration::from_secs_f64(cap_secs),
        json,
        url,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_options_and_defaults() {
        let Cli::Run(o) = parse_args(&args(&["http://h:1"])).unwrap() else {
            panic!("expected a run")
        };
        let names: Vec<_> = o.workloads.iter().map(|w| w.name).collect();
        assert_eq!(names, DEFAULT_WORKLOADS);
        assert_eq!(
            (o.requests, o.value_size, o.conns, o.json),
            (2000, 64, None, false)
        );
        assert_eq!(o.duration_cap, Duration::from_secs(60));

        let Cli::Run(o) = parse_args(&args(&[
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
        ]))
        .unwrap() else {
            panic!("expected a run")
        };
        let names: Vec<_> = o.workloads.iter().map(|w| w.name).collect();
        assert_eq!(names, ["cas-v2-64", "get-v2-64", "watch-v2-1000"]);
        assert_eq!((o.requests, o.conns, o.json), (7, Some(3), true));
        assert_eq!(o.duration_cap, Duration::from_millis(500));

        for bad in [
            &["--workload", "nope", "http://h"][..],
            &["--requests", "x", "http://h"],
            &["--conns", "0", "http://h"],
            &["--frobnicate", "http://h"],
            &["http://a", "http://b"],
            &["--requests"],
            &[],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
        assert!(matches!(parse_args(&args(&["-h"])), Ok(Cli::Help)));
    }
}
