//! The `etcd` binary as a process: command line (docs/operations.md), exit codes, start-up failures,
//! the data directory (`-f`, `info`, docs/operations.md), signals and logging.
//!
//! Every test runs real processes with a scrubbed environment (no `ETCD_*`, no `RUST_LOG`)
//! in a temporary working directory, and bounds every wait.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::node::{NodeBuilder, Output};
use common::{Node, Resp, free_port, request_timeout};

// ---------------------------------------------------------------------------------------
// process helpers

/// `etcd ARGS` in `cwd` with only the given `ETCD_*` variables set, stdout and stderr
/// collected; `wait_ready` looks at `client`.
fn spawn(args: &[String], env: &[(&str, &str)], cwd: &Path, client: &str) -> Node {
    launch(args, env, cwd).client(client).spawn()
}

fn launch(args: &[String], env: &[(&str, &str)], cwd: &Path) -> NodeBuilder {
    let mut b = Node::command(args)
        .without_etcd_env()
        .cwd(cwd)
        .capture_output();
    for (k, v) in env {
        b = b.env(k, v);
    }
    b
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Run `etcd args` to completion (bounded: 10 s) in a fresh temp working directory.
fn run(args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().expect("tempdir");
    run_in(&strings(args), &[], cwd.path())
}

fn run_in(args: &[String], env: &[(&str, &str)], cwd: &Path) -> Output {
    launch(args, env, cwd)
        .spawn()
        .finish(Duration::from_secs(10))
}

fn addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Two distinct free `127.0.0.1:port` addresses.
fn two_addrs() -> (String, String) {
    let a = addr();
    loop {
        let b = addr();
        if b != a {
            return (a, b);
        }
    }
}

fn node_args(name: &str, dir: &Path, client: &str, peer: &str) -> Vec<String> {
    strings(&[
        "-n",
        name,
        "-d",
        &dir.to_string_lossy(),
        "-c",
        client,
        "-s",
        peer,
    ])
}

fn get(addr: &str, path: &str) -> Resp {
    common::get(addr, path)
}

/// The registry entry of `name` must exist with the v1b value.
fn assert_registered(addr: &str, name: &str, peer: &str, client: &str) {
    let r = get(addr, &format!("/v1/keys/_etcd/machines/{name}"));
    assert_eq!(
        r.status, 200,
        "machine registry entry of {name}: {}",
        r.body
    );
    assert_eq!(
        r.json()["value"],
        format!("raft=http://{peer}&etcd=http://{client}"),
        "{}",
        r.body
    );
}

fn assert_key_missing(addr: &str, key: &str) {
    let r = get(addr, &format!("/v1/keys{key}"));
    assert_eq!(r.status, 404, "GET {key}: {}", r.body);
    assert_eq!(r.json()["errorCode"], 100, "GET {key}: {}", r.body);
}

fn set(addr: &str, key: &str, value: &str) {
    let r = common::post_form(addr, &format!("/v1/keys{key}"), &[("value", value)]);
    assert_eq!(r.status, 200, "set {key}: {}", r.body);
}

fn value_of(addr: &str, key: &str) -> serde_json::Value {
    let r = get(addr, &format!("/v1/keys{key}"));
    assert_eq!(r.status, 200, "GET {key}: {}", r.body);
    r.json()["value"].clone()
}

fn refuses_connections(addr: &str) -> bool {
    TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1)).is_err()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Non-empty stderr lines.
fn lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// The usage text as `-h` prints it.
fn usage_text() -> String {
    let o = run(&["-h"]);
    assert_eq!(o.code, Some(0), "etcd -h: {}", o.stderr);
    o.stdout
}

// ---------------------------------------------------------------------------------------
// command line errors: exit 2

#[test]
fn unknown_flag_exits_2_with_the_flag_and_usage_on_stderr() {
    let usage = usage_text();
    for flag in ["-foo", "--foo", "-foo=bar", "--no-such-flag"] {
        let o = run(&[flag]);
        assert_eq!(o.code, Some(2), "etcd {flag}: stderr {}", o.stderr);
        assert_eq!(o.stdout, "", "etcd {flag}: nothing on stdout");
        let head = flag.split('=').next().unwrap().trim_start_matches('-');
        assert!(
            first_line(&o.stderr).contains(head),
            "etcd {flag}: first stderr line must name the flag: {:?}",
            first_line(&o.stderr)
        );
        assert!(
            o.stderr.contains(usage.trim_end()),
            "etcd {flag}: the usage text must follow on stderr; got:\n{}",
            o.stderr
        );
    }
}

#[test]
fn bad_or_missing_values_exit_2_naming_the_flag() {
    let usage = usage_text();
    let cases: &[(&[&str], &str)] = &[
        (&["-m", "abc"], "-m"),
        (&["-m=abc"], "-m"),
        (
            &["--initial-cluster-state", "maybe"],
            "initial-cluster-state",
        ),
        (&["--initial-cluster-state=maybe"], "initial-cluster-state"),
        (&["-snapshotCount", "lots"], "snapshotCount"),
        (&["--snapshot-count=-5"], "snapshot-count"),
        (&["-r", "x"], "-r"),
        (&["-maxsize", "1.5"], "maxsize"),
        (&["-c", "127.0.0.1"], "-c"),
        (&["-s", "127.0.0.1:notaport"], "-s"),
        (&["-f=maybe"], "-f"),
        (&["--enable-v2=maybe"], "enable-v2"),
        (&["-n"], "-n"),
        (&["-d", "x", "-n"], "-n"),
        (&["--data-dir"], "data-dir"),
    ];
    for (args, flag) in cases {
        let o = run(args);
        assert_eq!(o.code, Some(2), "etcd {args:?}: stderr {}", o.stderr);
        assert_eq!(o.stdout, "", "etcd {args:?}: nothing on stdout");
        assert!(
            first_line(&o.stderr).contains(flag),
            "etcd {args:?}: first stderr line must name {flag}: {:?}",
            first_line(&o.stderr)
        );
        assert!(
            o.stderr.contains(usage.trim_end()),
            "etcd {args:?}: usage must follow on stderr"
        );
    }
}

#[test]
fn non_flag_arguments_exit_2() {
    for args in [
        &["foo"][..],
        &["-n", "x", "extra"],
        &["-f", "true"],
        &["--", "foo"],
    ] {
        let o = run(args);
        assert_eq!(o.code, Some(2), "etcd {args:?}: stderr {}", o.stderr);
        assert_eq!(o.stdout, "", "etcd {args:?}");
        let bad = args.last().unwrap();
        assert!(
            first_line(&o.stderr).contains(bad),
            "etcd {args:?}: first line should name {bad:?}: {:?}",
            first_line(&o.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------
// -version and -help: exit 0, stdout

#[test]
fn version_prints_one_line_on_stdout() {
    let mut seen = Vec::new();
    for flag in ["-version", "--version", "-version=true"] {
        let o = run(&[flag]);
        assert_eq!(o.code, Some(0), "etcd {flag}: {}", o.stderr);
        assert_eq!(o.stderr, "", "etcd {flag}: nothing on stderr");
        let out = o.stdout.strip_suffix('\n').unwrap_or(&o.stdout);
        let version = out.strip_prefix("etcd ").unwrap_or_else(|| {
            panic!(
                "etcd {flag}: stdout must be `etcd <version>`: {:?}",
                o.stdout
            )
        });
        assert!(
            !version.is_empty() && !version.contains(char::is_whitespace),
            "etcd {flag}: {:?}",
            o.stdout
        );
        seen.push(o.stdout);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
}

#[test]
fn help_prints_usage_on_stdout() {
    for flag in ["-h", "--help", "-help"] {
        let o = run(&[flag]);
        assert_eq!(o.code, Some(0), "etcd {flag}: {}", o.stderr);
        assert_eq!(o.stderr, "", "etcd {flag}: nothing on stderr");
        for needle in [
            "Usage",
            "-n ",
            "-d ",
            "-snapshotCount",
            "--listen-client-urls",
        ] {
            assert!(
                o.stdout.contains(needle),
                "etcd {flag}: usage lacks {needle:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// command lines that start a node

/// Start `args` (which must use `dir`, `client`, `peer`), check registry entry and data dir,
/// then SIGTERM and expect exit 0.
fn start_and_check(
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    name: &str,
    dir: &Path,
    client: &str,
    peer: &str,
) {
    let cwd = tempfile::tempdir().expect("tempdir");
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut p = spawn(&args, &env_refs, cwd.path(), client);
    p.wait_ready();
    assert_registered(client, name, peer, client);
    set(client, "/cli/x", "1");
    assert_eq!(value_of(client, "/cli/x"), "1");
    let info = std::fs::read_to_string(dir.join("info"))
        .unwrap_or_else(|e| panic!("{args:?}: no info file in the data dir {dir:?}: {e}"));
    assert!(info.contains(&format!("\"name\": \"{name}\"")), "{info}");
    let st = p.stop();
    assert_eq!(st.code(), Some(0), "{args:?}: stderr {}", p.stderr());
}

/// Run the cases in parallel threads; re-raise the first failure.
fn in_parallel(cases: Vec<Box<dyn FnOnce() + Send>>) {
    let handles: Vec<_> = cases.into_iter().map(thread::spawn).collect();
    let mut failed = None;
    for h in handles {
        if let Err(e) = h.join() {
            failed.get_or_insert(e);
        }
    }
    if let Some(e) = failed {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn go_flag_forms_start_a_node() {
    let root = tempfile::tempdir().expect("tempdir");
    type Form = fn(&str, &str, &str) -> Vec<String>;
    let forms: Vec<Form> = vec![
        |d, c, s| strings(&["-n", "node0", "-d", d, "-c", c, "-s", s]),
        |d, c, s| {
            vec![
                "-n=node0".into(),
                format!("-d={d}"),
                format!("-c={c}"),
                format!("-s={s}"),
            ]
        },
        |d, c, s| {
            vec![
                "--name".into(),
                "node0".into(),
                format!("--data-dir={d}"),
                "-c".into(),
                c.into(),
                "-s".into(),
                s.into(),
            ]
        },
        |d, c, s| {
            vec![
                "-name=node0".into(),
                "-data-dir".into(),
                d.into(),
                format!("-addr={c}"),
                "-peer-addr".into(),
                s.into(),
            ]
        },
        |d, c, s| {
            vec![
                "--n=node0".into(),
                "--d".into(),
                d.into(),
                "--c".into(),
                c.into(),
                format!("--s={s}"),
            ]
        },
    ];
    let cases: Vec<Box<dyn FnOnce() + Send>> = forms
        .into_iter()
        .enumerate()
        .map(|(i, form)| {
            let dir = root.path().join(format!("form{i}"));
            Box::new(move || {
                let (client, peer) = two_addrs();
                let args = form(&dir.to_string_lossy(), &client, &peer);
                start_and_check(args, vec![], "node0", &dir, &client, &peer);
            }) as Box<dyn FnOnce() + Send>
        })
        .collect();
    in_parallel(cases);
}

/// The python-etcd test-suite line (etcd 2.x flags), with and without `--enable-v2=true`.
#[test]
fn etcd2_command_lines_start_a_node() {
    let root = tempfile::tempdir().expect("tempdir");
    let cases: Vec<Box<dyn FnOnce() + Send>> = [false, true]
        .into_iter()
        .map(|v2| {
            let dir = root.path().join(format!("v2-{v2}"));
            Box::new(move || {
                let (client, peer) = two_addrs();
                let (cu, pu) = (format!("http://{client}"), format!("http://{peer}"));
                let mut args = strings(&[
                    "--name",
                    "test-node",
                    "--data-dir",
                    &dir.to_string_lossy(),
                    "--listen-client-urls",
                    &cu,
                    "--advertise-client-urls",
                    &cu,
                    "--listen-peer-urls",
                    &pu,
                    "--initial-advertise-peer-urls",
                    &pu,
                    "--initial-cluster",
                    &format!("test-node={pu}"),
                    "--initial-cluster-state",
                    "new",
                ]);
                if v2 {
                    args.push("--enable-v2=true".into());
                }
                start_and_check(args, vec![], "test-node", &dir, &client, &peer);
            }) as Box<dyn FnOnce() + Send>
        })
        .collect();
    in_parallel(cases);
}

#[test]
fn environment_supplies_name_and_data_dir() {
    let root = tempfile::tempdir().expect("tempdir");
    let cases: Vec<Box<dyn FnOnce() + Send>> = vec![
        {
            // ETCD_NAME / ETCD_DATA_DIR with the ports on the command line.
            let dir = root.path().join("env1");
            Box::new(move || {
                let (client, peer) = two_addrs();
                let args = strings(&["-c", &client, "-s", &peer]);
                let env = vec![
                    ("ETCD_NAME", "envnode".to_string()),
                    ("ETCD_DATA_DIR", dir.to_string_lossy().into_owned()),
                ];
                start_and_check(args, env, "envnode", &dir, &client, &peer);
            })
        },
        {
            // Everything from the environment, no argument at all.
            let dir = root.path().join("env2");
            Box::new(move || {
                let (client, peer) = two_addrs();
                let env = vec![
                    ("ETCD_NAME", "allenv".to_string()),
                    ("ETCD_DATA_DIR", dir.to_string_lossy().into_owned()),
                    ("ETCD_LISTEN_CLIENT_URLS", format!("http://{client}")),
                    ("ETCD_ADVERTISE_CLIENT_URLS", format!("http://{client}")),
                    ("ETCD_LISTEN_PEER_URLS", format!("http://{peer}")),
                    ("ETCD_INITIAL_ADVERTISE_PEER_URLS", format!("http://{peer}")),
                ];
                start_and_check(vec![], env, "allenv", &dir, &client, &peer);
            })
        },
    ];
    in_parallel(cases);
}

#[test]
fn flags_beat_environment_variables() {
    let root = tempfile::tempdir().expect("tempdir");
    let (env_dir, flag_dir) = (root.path().join("envdir"), root.path().join("flagdir"));
    let (client, peer) = two_addrs();
    let env_client = addr();
    let args = node_args("flagnode", &flag_dir, &client, &peer);
    let env = [
        ("ETCD_NAME", "envnode".to_string()),
        ("ETCD_DATA_DIR", env_dir.to_string_lossy().into_owned()),
        ("ETCD_ADDR", env_client.clone()),
    ];
    let cwd = tempfile::tempdir().expect("tempdir");
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut p = spawn(&args, &env_refs, cwd.path(), &client);
    p.wait_ready();
    assert_registered(&client, "flagnode", &peer, &client);
    assert_key_missing(&client, "/_etcd/machines/envnode");
    assert!(flag_dir.join("info").exists(), "-d was not used");
    assert!(
        !env_dir.exists(),
        "ETCD_DATA_DIR was used although -d was given"
    );
    assert!(
        refuses_connections(&env_client),
        "ETCD_ADDR was used although -c was given"
    );
    assert_eq!(p.stop().code(), Some(0));
}

// ---------------------------------------------------------------------------------------
// start-up failures: exit 1, one line on stderr

fn assert_one_line_failure(o: &Output, what: &str, needle: &str) {
    assert_eq!(o.code, Some(1), "{what}: exit code; stderr {:?}", o.stderr);
    assert_eq!(o.stdout, "", "{what}: nothing on stdout");
    let l = lines(&o.stderr);
    assert_eq!(
        l.len(),
        1,
        "{what}: exactly one line on stderr, got {:?}",
        o.stderr
    );
    assert!(
        l[0].contains(needle),
        "{what}: stderr must name {needle:?}: {:?}",
        l[0]
    );
}

#[test]
fn data_dir_that_cannot_be_created_exits_1() {
    let root = tempfile::tempdir().expect("tempdir");
    let file = root.path().join("regular-file");
    std::fs::write(&file, "not a directory").unwrap();
    let dir = file.join("x");
    let (client, peer) = two_addrs();
    let o = run_in(&node_args("n", &dir, &client, &peer), &[], root.path());
    assert_one_line_failure(&o, "data dir under a file", &dir.to_string_lossy());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "not a directory",
        "the file in the way was touched"
    );
}

#[test]
fn client_port_in_use_exits_1() {
    let root = tempfile::tempdir().expect("tempdir");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let peer = addr();
    let o = run_in(
        &node_args("n", &root.path().join("n"), &busy_addr, &peer),
        &[],
        root.path(),
    );
    assert_one_line_failure(&o, "client port in use", &busy_addr);
    drop(busy);
}

#[test]
fn peer_port_in_use_exits_1() {
    let root = tempfile::tempdir().expect("tempdir");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let client = addr();
    let o = run_in(
        &node_args("n", &root.path().join("n"), &client, &busy_addr),
        &[],
        root.path(),
    );
    assert_one_line_failure(&o, "peer port in use", &busy_addr);
    // Nothing may be left listening on the client port.
    assert!(refuses_connections(&client));
    drop(busy);
}

/// First run, a key, clean stop; returns (data dir, client, peer).
fn first_run(root: &Path, name: &str) -> (PathBuf, String, String) {
    let dir = root.join(name);
    let (client, peer) = two_addrs();
    let mut p = spawn(&node_args(name, &dir, &client, &peer), &[], root, &client);
    p.wait_ready();
    set(&client, "/a", "one");
    set(&client, "/b/c", "two");
    assert_eq!(p.stop().code(), Some(0), "{}", p.stderr());
    (dir, client, peer)
}

#[test]
fn corrupt_data_file_exits_1_naming_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dir, client, peer) = first_run(root.path(), "c0");
    let data = dir.join("etcd.redb");
    assert!(data.exists(), "expected the data file {data:?}");
    let garbage: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&data, garbage).unwrap();
    let o = run_in(&node_args("c0", &dir, &client, &peer), &[], root.path());
    assert_one_line_failure(&o, "garbage data file", &data.to_string_lossy());
}

#[test]
fn truncated_data_file_exits_1_naming_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dir, client, peer) = first_run(root.path(), "t0");
    let data = dir.join("etcd.redb");
    let len = std::fs::metadata(&data).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let o = run_in(&node_args("t0", &dir, &client, &peer), &[], root.path());
    assert_one_line_failure(&o, "truncated data file", &data.to_string_lossy());
}

/// The first segment of a node's write-ahead log.
fn first_segment(dir: &Path) -> PathBuf {
    dir.join("wal").join("0000000000000000.wal")
}

#[test]
fn damaged_log_exits_1_naming_the_segment() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dir, client, peer) = first_run(root.path(), "w0");
    let seg = first_segment(&dir);
    let mut data = std::fs::read(&seg).expect("the log's first segment");
    // A byte in the value of the first key: an acknowledged write, with more after it.
    let at = data
        .windows(4)
        .position(|w| w == b"\x03one")
        .expect("the first write is in the first segment");
    data[at + 2] ^= 0x20;
    std::fs::write(&seg, &data).unwrap();
    let o = run_in(&node_args("w0", &dir, &client, &peer), &[], root.path());
    assert_one_line_failure(&o, "damaged log", &seg.to_string_lossy());
    assert!(o.stderr.contains("offset"), "{}", o.stderr);
}

#[test]
fn missing_log_exits_1_naming_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dir, client, peer) = first_run(root.path(), "m0");
    std::fs::remove_dir_all(dir.join("wal")).unwrap();
    let o = run_in(&node_args("m0", &dir, &client, &peer), &[], root.path());
    assert_one_line_failure(&o, "missing log", &dir.join("wal").to_string_lossy());
}

#[test]
fn corrupt_info_file_exits_1_naming_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dir, client, peer) = first_run(root.path(), "i0");
    let info = dir.join("info");
    std::fs::write(&info, "{ this is not json").unwrap();
    let o = run_in(&node_args("i0", &dir, &client, &peer), &[], root.path());
    assert_one_line_failure(&o, "corrupt info file", &info.to_string_lossy());
}

// ---------------------------------------------------------------------------------------
// the data directory: -f and info

#[test]
fn force_discards_own_files_only_and_rewrites_info() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dir, old_client, _) = first_run(root.path(), "f0");
    std::fs::write(dir.join("keepme.txt"), "precious").unwrap();
    std::fs::create_dir(dir.join("mine")).unwrap();
    std::fs::write(dir.join("mine").join("notes"), "also precious").unwrap();

    let (client, peer) = two_addrs();
    let mut args = node_args("f0", &dir, &client, &peer);
    args.push("-f".into());
    let mut p = spawn(&args, &[], root.path(), &client);
    // info was discarded, so the new -c applies.
    p.wait_ready();
    assert!(refuses_connections(&old_client), "still on the old port");
    assert_key_missing(&client, "/a");
    assert_key_missing(&client, "/b/c");
    assert_registered(&client, "f0", &peer, &client);
    let info = std::fs::read_to_string(dir.join("info")).expect("info rewritten");
    assert!(
        info.contains(&format!("\"etcdURL\": \"http://{client}\""))
            && info.contains(&format!("\"raftURL\": \"http://{peer}\"")),
        "info not rewritten with the new addresses:\n{info}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("keepme.txt")).unwrap(),
        "precious",
        "-f removed or changed a file it does not own"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("mine").join("notes")).unwrap(),
        "also precious",
        "-f removed or changed a directory it does not own"
    );
    // New data is stored normally after -f.
    set(&client, "/after", "force");
    assert_eq!(p.stop().code(), Some(0));
    let mut p = spawn(
        &node_args("f0", &dir, &client, &peer),
        &[],
        root.path(),
        &client,
    );
    p.wait_ready();
    assert_eq!(value_of(&client, "/after"), "force");
    assert_key_missing(&client, "/a");
    assert_eq!(p.stop().code(), Some(0));
}

#[test]
fn restart_without_force_uses_saved_info_over_flags() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dir, client, peer) = first_run(root.path(), "i1");
    let info_before = std::fs::read_to_string(dir.join("info")).unwrap();
    let (other_client, other_peer) = two_addrs();
    let mut p = spawn(
        &node_args("i1", &dir, &other_client, &other_peer),
        &[],
        root.path(),
        &client,
    );
    // v0.1: the saved identity wins, so the node comes up on the ORIGINAL client port.
    p.wait_ready();
    assert_eq!(value_of(&client, "/a"), "one");
    assert_eq!(value_of(&client, "/b/c"), "two");
    assert_registered(&client, "i1", &peer, &client);
    assert!(
        refuses_connections(&other_client),
        "the -c of the second start must be ignored"
    );
    assert!(refuses_connections(&other_peer), "the -s must be ignored");
    assert_eq!(
        std::fs::read_to_string(dir.join("info")).unwrap(),
        info_before,
        "info must not change without -f"
    );
    assert_eq!(p.stop().code(), Some(0));
}

#[test]
fn info_file_is_v01_pretty_json() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("pretty");
    let (client, peer) = two_addrs();
    let mut p = spawn(
        &node_args("pretty", &dir, &client, &peer),
        &[],
        root.path(),
        &client,
    );
    p.wait_ready();
    let info = std::fs::read_to_string(dir.join("info")).expect("info file");
    let expected = format!(
        "{{\n \"name\": \"pretty\",\n \"raftURL\": \"http://{peer}\",\n \"etcdURL\": \"http://{client}\",\n \
         \"webURL\": \"\",\n \"raftListenHost\": \"127.0.0.1\",\n \"etcdListenHost\": \"127.0.0.1\",\n \
         \"raftTLS\": {{\n  \"CertFile\": \"\",\n  \"KeyFile\": \"\",\n  \"CAFile\": \"\"\n }},\n \
         \"etcdTLS\": {{\n  \"CertFile\": \"\",\n  \"KeyFile\": \"\",\n  \"CAFile\": \"\"\n }}\n}}"
    );
    assert_eq!(info.trim_end(), expected, "info file:\n{info}");
    let v: serde_json::Value = serde_json::from_str(&info).expect("info is JSON");
    assert_eq!(v["name"], "pretty");
    assert_eq!(p.stop().code(), Some(0));
}

// ---------------------------------------------------------------------------------------
// signals

/// An open connection that sent one request and then idles (keep-alive).
fn idle_keepalive(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET /v1/keys/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    // A normal answer: the bound only keeps a broken server from hanging the test.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "keep-alive request failed"
    );
    s
}

/// How long a shutdown with open connections may take: the server gives running requests
/// `SHUTDOWN_GRACE` (3 s, src/server.rs) and then closes anyway, so 8 s leaves a slow machine
/// room while still catching a shutdown that hangs on the open connections.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(8);

fn shutdown_with_open_connections(sig: &str) {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("sig");
    let (client, peer) = two_addrs();
    let mut p = spawn(
        &node_args("sig", &dir, &client, &peer),
        &[],
        root.path(),
        &client,
    );
    p.wait_ready();

    // A long-poll watch in a thread.
    let (tx, rx) = mpsc::channel();
    let watch_addr = client.clone();
    let watcher = thread::spawn(move || {
        let r = request_timeout(
            &watch_addr,
            "GET",
            "/v1/watch/x",
            &[],
            b"",
            Duration::from_secs(30),
        );
        let _ = tx.send(r.map(|r| r.status));
    });
    // Idle connections: never sent anything, kept alive after a request, half a request.
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&client).unwrap())
        .collect();
    let kept = idle_keepalive(&client);
    let mut half = TcpStream::connect(&client).unwrap();
    half.write_all(b"GET /v1/keys/ HTTP/1.1\r\n").unwrap();
    // The watch is registered (and has not answered) before the signal.
    let registered = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&client, "/v2/stats/store");
        assert_eq!(r.status, 200, "{:?}", r.body);
        if r.json()["watchers"] == 1 {
            break;
        }
        assert!(
            Instant::now() < registered,
            "the watch did not register within 10 s: {:?}",
            r.body
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        rx.try_recv().is_err(),
        "the watch answered before any change"
    );

    let sent = Instant::now();
    p.signal(sig);
    let status = p.wait_exit(SHUTDOWN_BOUND);
    let took = sent.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running {SHUTDOWN_BOUND:?} after SIG{sig} with an open watch and idle \
             connections; stderr:\n{}",
            p.stderr()
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIG{sig}: {status}; stderr:\n{}",
        p.stderr()
    );
    let left = SHUTDOWN_BOUND.saturating_sub(sent.elapsed());
    let watch = rx.recv_timeout(left.max(Duration::from_millis(100)));
    assert!(
        watch.is_ok(),
        "the open watch did not end within {SHUTDOWN_BOUND:?} of SIG{sig} (hung)"
    );
    watcher.join().unwrap();
    eprintln!(
        "SIG{sig}: exit after {took:?}; watch ended with {:?}",
        watch.unwrap()
    );
    drop((silent, kept, half));
    assert!(
        refuses_connections(&client),
        "client port still open after exit"
    );
}

#[test]
fn sigterm_with_open_watch_and_idle_connections_exits_0_quickly() {
    shutdown_with_open_connections("TERM");
}

#[test]
fn sigint_with_open_watch_and_idle_connections_exits_0_quickly() {
    shutdown_with_open_connections("INT");
}

// ---------------------------------------------------------------------------------------
// logging

#[test]
fn default_verbosity_is_silent_and_v_logs() {
    let root = tempfile::tempdir().expect("tempdir");
    // Default: nothing on stderr or stdout during a clean start (and a clean stop).
    let dir = root.path().join("quiet");
    let (client, peer) = two_addrs();
    let mut p = spawn(
        &node_args("quiet", &dir, &client, &peer),
        &[],
        root.path(),
        &client,
    );
    p.wait_ready();
    set(&client, "/q", "1");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(p.stderr(), "", "default verbosity logged on a clean start");
    assert_eq!(p.stdout(), "", "stdout on a clean start");
    assert_eq!(p.stop().code(), Some(0));
    assert_eq!(p.stderr(), "", "default verbosity logged on a clean stop");

    // -v: log lines on stderr at start.
    let dir = root.path().join("loud");
    let (client, peer) = two_addrs();
    let mut args = node_args("loud", &dir, &client, &peer);
    args.push("-v".into());
    let mut p = spawn(&args, &[], root.path(), &client);
    p.wait_ready();
    let deadline = Instant::now() + Duration::from_secs(5);
    while lines(&p.stderr()).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !lines(&p.stderr()).is_empty(),
        "-v printed no log line on stderr at start"
    );
    assert_eq!(p.stdout(), "", "-v must log to stderr, not stdout");
    assert_eq!(p.stop().code(), Some(0));
}

/// Log lines go to a pipe or a file here, not a terminal: no ANSI colour escapes in them
/// (legacy etcd wrote plain text logs).
#[test]
fn log_lines_are_plain_text_when_stderr_is_not_a_terminal() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("plain");
    let (client, peer) = two_addrs();
    let mut args = node_args("plain", &dir, &client, &peer);
    args.push("-v".into());
    let mut p = spawn(&args, &[], root.path(), &client);
    p.wait_ready();
    assert_eq!(p.stop().code(), Some(0));
    let err = p.stderr();
    assert!(!lines(&err).is_empty(), "-v logged nothing");
    assert!(
        !err.contains('\u{1b}'),
        "log lines on a non-terminal stderr contain ANSI escape sequences: {:?}",
        first_line(&err)
    );
}

/// Without `-d` the data directory is `<name>.etcd` in the working directory (as the usage
/// text says).
#[test]
fn default_data_dir_is_name_dot_etcd_in_the_working_directory() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let (client, peer) = two_addrs();
    let args = strings(&["-n", "dflt", "-c", &client, "-s", &peer]);
    let mut p = spawn(&args, &[], cwd.path(), &client);
    p.wait_ready();
    assert!(
        cwd.path().join("dflt.etcd").join("info").exists(),
        "no dflt.etcd/info in the working directory"
    );
    assert_eq!(p.stop().code(), Some(0));
}

/// A second process on a data directory that a running node uses must not start, with or
/// without `-f`; in particular `-f` must not delete the files of the running node (its
/// acknowledged writes would be lost at its next restart).
#[test]
fn data_dir_in_use_by_a_running_node_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("busy");
    let (client, peer) = two_addrs();
    let mut first = spawn(
        &node_args("busy", &dir, &client, &peer),
        &[],
        root.path(),
        &client,
    );
    first.wait_ready();
    set(&client, "/before", "1");

    let (c2, p2) = two_addrs();
    let o = run_in(&node_args("busy", &dir, &c2, &p2), &[], root.path());
    assert_eq!(
        o.code,
        Some(1),
        "second start on a busy data dir: {}",
        o.stderr
    );

    let (c3, p3) = two_addrs();
    let mut args = node_args("busy", &dir, &c3, &p3);
    args.push("-f".into());
    let mut second = spawn(&args, &[], root.path(), &c3);
    let status = second.wait_exit(Duration::from_secs(5));
    let second_err = second.stderr();
    drop(second);
    set(&client, "/after", "2");
    assert_eq!(first.stop().code(), Some(0));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "`etcd -f` on the data dir of a running node must exit 1 (it started, or hung); \
         stderr: {second_err}"
    );
    // The first node's acknowledged writes are all there after its restart.
    let mut again = spawn(
        &node_args("busy", &dir, &client, &peer),
        &[],
        root.path(),
        &client,
    );
    again.wait_ready();
    assert_eq!(value_of(&client, "/before"), "1");
    assert_eq!(value_of(&client, "/after"), "2");
    assert_eq!(again.stop().code(), Some(0));
}

/// The server opts out of transparent huge pages (the allocator's fresh 2 MiB pages cost
/// ~10% of the CPU under write load): the kernel reports THP as off for the running process.
#[test]
fn a_running_server_has_transparent_huge_pages_off() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("thp");
    let (client, peer) = two_addrs();
    let mut p = spawn(
        &node_args("thp", &dir, &client, &peer),
        &[],
        root.path(),
        &client,
    );
    p.wait_ready();
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap();
    let thp = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled line in /proc/<pid>/status:\n{status}"));
    assert_eq!(thp.split_whitespace().nth(1), Some("0"), "{thp}");
    assert_eq!(p.stop().code(), Some(0), "{}", p.stderr());
}
