//! Unit tests of the flag and environment parsing.

use super::addresses::{Endpoint, is_unspecified};
use super::flags::{Kind, all_flags};
use super::*;
use std::collections::HashMap;

/// Parses `args` with the environment `vars`.
fn parse_with(args: &[&str], vars: &[(&str, &str)]) -> Result<Parsed, ConfigError> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse(&args, &move |k: &str| vars.get(k).cloned())
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn run_args_env(args: &[&str], vars: &[(&str, &str)]) -> Config {
    match parse_with(args, vars) {
        Ok(Parsed::Run(config)) => config,
        other => panic!("{args:?}: expected a config, got {other:?}"),
    }
}

fn err_args_env(args: &[&str], vars: &[(&str, &str)]) -> String {
    match parse_with(args, vars) {
        Err(e) => e.to_string(),
        other => panic!("{args:?}: expected an error, got {other:?}"),
    }
}

fn run_args(args: &[&str]) -> Config {
    run_args_env(args, &[])
}

fn err_args(args: &[&str]) -> String {
    err_args_env(args, &[])
}

/// Runs a command line given as one string split on white space.
fn run(line: &str) -> Config {
    run_args(&words(line))
}

fn run_env(line: &str, vars: &[(&str, &str)]) -> Config {
    run_args_env(&words(line), vars)
}

fn err(line: &str) -> String {
    err_args(&words(line))
}

fn err_env(line: &str, vars: &[(&str, &str)]) -> String {
    err_args_env(&words(line), vars)
}

fn outcome(line: &str) -> Result<Parsed, ConfigError> {
    parse_with(&words(line), &[])
}

fn temp_path(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let file = format!("etcd-config-test-{}-{tag}-{nanos}", std::process::id());
    std::env::temp_dir().join(file)
}

fn pair(name: &str, url: &str) -> (String, String) {
    (name.to_string(), url.to_string())
}

// --- defaults and the Go flag syntax ---

#[test]
fn no_arguments_give_the_v01_defaults() {
    let config = run("");
    assert_eq!(config, Config::default());
    assert_eq!(config.name, "default-name");
    assert_eq!(config.data_dir, PathBuf::from("default-name.etcd"));
    assert_eq!(config.client_url, "http://127.0.0.1:4001");
    assert_eq!(config.client_listen, "127.0.0.1:4001");
    assert_eq!(config.peer_url, "http://127.0.0.1:7001");
    assert_eq!(config.peer_listen, "127.0.0.1:7001");
    assert_eq!(config.history_size, 1000);
    assert_eq!(config.max_retry, 3);
    assert_eq!(config.max_cluster_size, 9);
    assert_eq!(config.snapshot_count, 100_000);
    assert_eq!((config.heartbeat_ms, config.election_ms), (50, 200));
    assert_eq!(config.initial_cluster_token, "etcd-cluster");
    assert_eq!(config.initial_cluster_state, ClusterState::New);
    assert_eq!(config.verbosity, 0);
    assert!(!config.force && !config.snapshot);
    assert!(config.join.is_empty() && config.cors.is_empty());
    assert!(config.initial_cluster.is_empty());
    assert_eq!(config.client_tls, TlsFiles::default());
    assert_eq!(config.peer_tls, TlsFiles::default());
}

#[test]
fn all_four_value_forms_are_equal() {
    for line in [
        "-n node1",
        "-n=node1",
        "--n node1",
        "--n=node1",
        "-name node1",
        "--name=node1",
    ] {
        assert_eq!(run(line).name, "node1", "{line}");
    }
}

#[test]
fn attached_value_may_contain_equals_or_be_empty() {
    assert_eq!(run("-cors=a=b").cors, vec!["a=b"]);
    assert_eq!(err("-n="), "node name is required");
}

#[test]
fn value_is_taken_even_when_it_looks_like_a_flag() {
    assert_eq!(run("-n -c").name, "-c");
}

#[test]
fn last_repeated_flag_wins_across_aliases() {
    assert_eq!(run("-n a -n b").name, "b");
    assert_eq!(run("-n a -name b --name c").name, "c");
    assert_eq!(run("--name c -n a").name, "a");
    assert_eq!(
        run("-c 10.0.0.1:1 --advertise-client-urls http://10.0.0.2:2").client_url,
        "http://10.0.0.2:2"
    );
}

#[test]
fn bool_flags_without_value_and_with_go_spellings() {
    assert!(run("-f").force);
    assert!(run("--force").force);
    for yes in ["1", "t", "T", "TRUE", "true", "True"] {
        assert!(run(&format!("-f={yes}")).force, "{yes}");
    }
    for no in ["0", "f", "F", "FALSE", "false", "False"] {
        assert!(!run(&format!("-force={no}")).force, "{no}");
    }
    assert!(!run("-f -f=false").force);
    assert!(run("-snapshot").snapshot);
}

#[test]
fn bool_bad_value_is_an_error() {
    assert_eq!(
        err("-f=yes"),
        "invalid boolean value \"yes\" for flag -f: parse error"
    );
    assert_eq!(
        err("--force="),
        "invalid boolean value \"\" for flag --force: parse error"
    );
}

#[test]
fn bool_flag_does_not_take_the_next_argument() {
    assert_eq!(
        err("-f false"),
        "unexpected argument \"false\": etcd takes only flags"
    );
}

#[test]
fn unknown_flag_is_reported_as_typed() {
    assert_eq!(err("-foo"), "flag provided but not defined: -foo");
    assert_eq!(err("--foo=1"), "flag provided but not defined: --foo");
    assert_eq!(
        err("-n x -bogus 1"),
        "flag provided but not defined: -bogus"
    );
    assert_eq!(
        err("--logger=zap"),
        "flag provided but not defined: --logger"
    );
}

#[test]
fn names_are_case_sensitive() {
    assert_eq!(err("-N x"), "flag provided but not defined: -N");
    assert_eq!(err("-Name x"), "flag provided but not defined: -Name");
    assert_eq!(err("-cf x"), "flag provided but not defined: -cf");
    let config = run("-C 10.0.0.1:7001 -c 10.0.0.2:4001");
    assert_eq!(config.join, vec!["10.0.0.1:7001"]);
    assert_eq!(config.client_url, "http://10.0.0.2:4001");
}

#[test]
fn missing_value_is_an_error() {
    assert_eq!(err("-n"), "flag needs an argument: -n");
    assert_eq!(err("-f --data-dir"), "flag needs an argument: --data-dir");
    assert_eq!(err("-m"), "flag needs an argument: -m");
}

#[test]
fn bad_numbers_are_errors() {
    assert_eq!(
        err("-m abc"),
        "invalid value \"abc\" for flag -m: parse error"
    );
    assert_eq!(
        err("-r -1"),
        "invalid value \"-1\" for flag -r: parse error"
    );
    assert_eq!(err("-m="), "invalid value \"\" for flag -m: parse error");
    assert_eq!(
        err("--snapshot-count=1.5"),
        "invalid value \"1.5\" for flag --snapshot-count: parse error"
    );
    assert_eq!(
        err("-r 4294967296"),
        "invalid value \"4294967296\" for flag -r: value out of range"
    );
    assert!(err("-m 99999999999999999999999").ends_with("parse error"));
}

#[test]
fn double_dash_ends_flags_and_positionals_are_errors() {
    assert_eq!(run("-n a --").name, "a");
    assert_eq!(
        err("-n a -- x"),
        "unexpected argument \"x\": etcd takes only flags"
    );
    assert_eq!(
        err("node0"),
        "unexpected argument \"node0\": etcd takes only flags"
    );
    assert_eq!(
        err("-n a node0"),
        "unexpected argument \"node0\": etcd takes only flags"
    );
    assert_eq!(err("-"), "unexpected argument \"-\": etcd takes only flags");
    assert_eq!(
        err_args(&[""]),
        "unexpected argument \"\": etcd takes only flags"
    );
}

#[test]
fn bad_flag_syntax() {
    assert_eq!(err("---n x"), "bad flag syntax: ---n");
    assert_eq!(err("-=x"), "bad flag syntax: -=x");
    assert_eq!(err("--=x"), "bad flag syntax: --=x");
}

#[test]
fn help_in_all_spellings() {
    for line in [
        "-h",
        "-help",
        "--help",
        "--h",
        "-h=1",
        "-n a -h",
        "-h -bogus",
        "-h -m abc",
        "-version -h",
    ] {
        assert_eq!(outcome(line), Ok(Parsed::Help), "{line}");
    }
    // An error met before the help flag wins, as in Go.
    assert!(outcome("-bogus -h").is_err());
    assert!(outcome("-m abc -h").is_err());
}

#[test]
fn version_flag_and_v_is_not_version() {
    for line in [
        "-version",
        "--version",
        "-version=true",
        "-c nonsense -version",
    ] {
        assert_eq!(outcome(line), Ok(Parsed::Version), "{line}");
    }
    assert_eq!(
        parse_with(&["-n", "", "-version"], &[]),
        Ok(Parsed::Version)
    );
    assert!(matches!(outcome("-version=false"), Ok(Parsed::Run(_))));
    assert_eq!(run("-v").verbosity, 1);
    // ETCD_VERSION is often set by container images; it does not ask for the version.
    assert_eq!(run_env("", &[("ETCD_VERSION", "3.4.0")]), Config::default());
}

#[test]
fn verbosity_levels() {
    assert_eq!(run("-v").verbosity, 1);
    assert_eq!(run("-vv").verbosity, 2);
    assert_eq!(run("-vvv").verbosity, 2);
    assert_eq!(run("--debug").verbosity, 2);
    assert_eq!(run("-v -vv").verbosity, 2);
    assert_eq!(run("-vv=false -v").verbosity, 1);
    assert_eq!(run_env("", &[("ETCD_VERBOSE", "1")]).verbosity, 1);
    assert_eq!(run_env("", &[("ETCD_VERY_VERBOSE", "true")]).verbosity, 2);
    assert_eq!(run_env("", &[("ETCD_DEBUG", "true")]).verbosity, 2);
    assert_eq!(run_env("-vv=false", &[("ETCD_DEBUG", "true")]).verbosity, 0);
}

#[test]
fn errors_are_one_line() {
    for line in [
        "-foo",
        "-m x",
        "-n",
        "-c nope",
        "-clientCert a",
        "-config x",
    ] {
        assert!(!err(line).contains('\n'), "{line}");
    }
    let e = outcome("-foo").unwrap_err();
    assert_eq!(
        e,
        ConfigError::Usage("flag provided but not defined: -foo".to_string())
    );
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert_eq!(boxed.to_string(), "flag provided but not defined: -foo");
}

// --- name and data directory ---

#[test]
fn blank_name_is_an_error() {
    assert_eq!(err_args(&["-n", ""]), "node name is required");
    assert_eq!(err_args(&["--name", "   "]), "node name is required");
}

#[test]
fn data_dir_defaults_to_name_dot_etcd() {
    assert_eq!(run("-n foo").data_dir, PathBuf::from("foo.etcd"));
    assert_eq!(run("-d /var/lib/x").data_dir, PathBuf::from("/var/lib/x"));
    assert_eq!(run("--data-dir=rel/dir").data_dir, PathBuf::from("rel/dir"));
    assert_eq!(run("-n foo -d=").data_dir, PathBuf::from("foo.etcd"));
}

#[test]
fn readme_first_node_line() {
    let config = run("-d node0 -n node0");
    assert_eq!(config.name, "node0");
    assert_eq!(config.data_dir, PathBuf::from("node0"));
    assert_eq!(config.client_url, "http://127.0.0.1:4001");
    assert_eq!(config.peer_url, "http://127.0.0.1:7001");
    assert!(config.join.is_empty());
}

#[test]
fn readme_second_node_line() {
    let config = run("-s 127.0.0.1:7002 -c 127.0.0.1:4002 -C 127.0.0.1:7001 -d node2 -n node2");
    assert_eq!(config.peer_url, "http://127.0.0.1:7002");
    assert_eq!(config.peer_listen, "127.0.0.1:7002");
    assert_eq!(config.client_url, "http://127.0.0.1:4002");
    assert_eq!(config.client_listen, "127.0.0.1:4002");
    assert_eq!(config.join, vec!["127.0.0.1:7001"]);
}

// --- numbers and other settings ---

#[test]
fn v01_numeric_flags() {
    let config = run("-m 50 -r 0 -maxsize 3 -snapshotCount 500");
    assert_eq!(config.history_size, 50);
    assert_eq!(config.max_retry, 0);
    assert_eq!(config.max_cluster_size, 3);
    assert_eq!(config.snapshot_count, 500);
}

#[test]
fn v02_numeric_long_names() {
    let config =
        run("-max-result-buffer=20 -max-retry-attempts=7 -max-cluster-size=5 -snapshot-count=42");
    assert_eq!(config.history_size, 20);
    assert_eq!(config.max_retry, 7);
    assert_eq!(config.max_cluster_size, 5);
    assert_eq!(config.snapshot_count, 42);
}

#[test]
fn zero_values_that_make_no_sense_are_errors() {
    let at_least_one =
        |flag: &str| format!("invalid value \"0\" for flag {flag}: must be at least 1");
    assert_eq!(err("-snapshotCount 0"), at_least_one("-snapshotCount"));
    assert_eq!(err("--snapshot-count 0"), at_least_one("--snapshot-count"));
    assert_eq!(err("-m 0"), at_least_one("-m"));
    assert_eq!(err("-maxsize=0"), at_least_one("-maxsize"));
}

#[test]
fn ignored_flags_are_accepted() {
    let line = "-w 127.0.0.1:4002 -cpuprofile /tmp/prof --enable-v2 --max-snapshots 5 --max-wals=5 --proxy off";
    assert_eq!(run(line), Config::default());
    assert_eq!(
        err("--max-wals x"),
        "invalid value \"x\" for flag --max-wals: parse error"
    );
}

#[test]
fn cors_list() {
    let config = run_args(&["-cors", "http://a.example, http://b.example,,"]);
    assert_eq!(config.cors, vec!["http://a.example", "http://b.example"]);
    assert_eq!(run("--cors=*").cors, vec!["*"]);
}

#[test]
fn timing_flags() {
    let config = run("--heartbeat-interval 100 --election-timeout 1000");
    assert_eq!((config.heartbeat_ms, config.election_ms), (100, 1000));
    let config = run("-peer-heartbeat-timeout=20 -peer-election-timeout=120");
    assert_eq!((config.heartbeat_ms, config.election_ms), (20, 120));
    assert_eq!(run("-peer-heartbeat-interval 60").heartbeat_ms, 60);
    assert_eq!(run("--election-timeout 1000").election_ms, 1000);
}

#[test]
fn election_must_exceed_heartbeat() {
    assert_eq!(
        err("--heartbeat-interval 300"),
        "election timeout (200 ms) must be greater than the heartbeat interval (300 ms)"
    );
    assert!(err("--heartbeat-interval 100 --election-timeout 100").starts_with("election timeout"));
    assert!(err("--heartbeat-interval 0").ends_with("must be at least 1"));
}

#[test]
fn unsupported_features_are_errors() {
    assert_eq!(
        err("-config /etc/etcd.toml"),
        "-config files are not supported; use flags or ETCD_* variables"
    );
    assert!(run("--force-new-cluster").force_new_cluster);
    assert!(run_env("", &[("ETCD_FORCE_NEW_CLUSTER", "true")]).force_new_cluster);
    assert_eq!(run("--force-new-cluster=false"), Config::default());
    assert!(
        err("--discovery-srv example.com")
            .starts_with("--discovery-srv (DNS SRV discovery) is not supported")
    );
    assert!(
        err("--discovery-proxy http://p:8080 --discovery http://d/t")
            .starts_with("--discovery-proxy is not supported")
    );
}

#[test]
fn discovery_and_proxy_flags() {
    let c = run("-discovery https://discovery.etcd.io/abc");
    assert_eq!(
        c.discovery.as_deref(),
        Some("https://discovery.etcd.io/abc")
    );
    assert!(!c.discovery_fallback_proxy);
    let c = run_env("", &[("ETCD_DISCOVERY", "http://127.0.0.1:8087/t")]);
    assert_eq!(c.discovery.as_deref(), Some("http://127.0.0.1:8087/t"));
    assert!(run("--discovery http://d/t --discovery-fallback proxy").discovery_fallback_proxy);
    assert!(
        err("--discovery http://d/t --discovery-fallback maybe")
            .contains("must be \"exit\" or \"proxy\"")
    );
    assert!(err("--discovery d/t").contains("http://"));
    assert!(
        err("--discovery http://d/t --initial-cluster n=http://127.0.0.1:7001 --name n")
            .starts_with("--discovery cannot be combined")
    );
    assert!(
        err("--discovery http://d/t -C 127.0.0.1:7001")
            .starts_with("--discovery cannot be combined")
    );

    let c = run("--proxy on --initial-cluster a=http://127.0.0.1:7001,b=http://127.0.0.1:7002");
    assert_eq!(c.proxy, ProxyMode::On);
    assert_eq!(c.proxy_failure_wait_ms, 5000);
    assert_eq!(c.proxy_refresh_ms, 30000);
    let c = run_env(
        "--proxy-refresh-interval 1000 --proxy-failure-wait 200 --proxy-dial-timeout 1000",
        &[
            ("ETCD_PROXY", "readonly"),
            ("ETCD_INITIAL_CLUSTER", "a=http://127.0.0.1:7001"),
        ],
    );
    assert_eq!(c.proxy, ProxyMode::ReadOnly);
    assert_eq!((c.proxy_refresh_ms, c.proxy_failure_wait_ms), (1000, 200));
    assert_eq!(run("--proxy off"), Config::default());
    assert!(err("--proxy on").starts_with("--proxy needs the cluster's members"));
    assert!(err("--proxy sometimes").contains("must be \"off\", \"on\" or \"readonly\""));
}

// --- addresses ---

#[test]
fn client_address_accepts_a_url() {
    let config = run("-c http://127.0.0.1:4001");
    assert_eq!(config.client_url, "http://127.0.0.1:4001");
    assert_eq!(config.client_listen, "127.0.0.1:4001");
    assert_eq!(
        run("-c http://10.1.2.3:4005/").client_url,
        "http://10.1.2.3:4005"
    );
    assert_eq!(
        run("-c HTTP://myhost:4005").client_url,
        "http://myhost:4005"
    );
    assert_eq!(run("-s localhost:7005").peer_listen, "localhost:7005");
}

#[test]
fn cl_overrides_only_the_listen_host() {
    let config = run("-c 10.0.0.1:4002 -cl 0.0.0.0");
    assert_eq!(config.client_url, "http://10.0.0.1:4002");
    assert_eq!(config.client_listen, "0.0.0.0:4002");
    let config = run("-cl 0.0.0.0");
    assert_eq!(config.client_url, "http://127.0.0.1:4001");
    assert_eq!(config.client_listen, "0.0.0.0:4001");
    let config = run("-cl 0.0.0.0 -c 10.0.0.1:4002");
    assert_eq!(config.client_listen, "0.0.0.0:4002");
}

#[test]
fn sl_overrides_only_the_peer_listen_host() {
    let config = run("-s myhost:7005 -sl 0.0.0.0");
    assert_eq!(config.peer_url, "http://myhost:7005");
    assert_eq!(config.peer_listen, "0.0.0.0:7005");
    assert_eq!(run("-sl 10.1.1.1").peer_listen, "10.1.1.1:7001");
}

#[test]
fn cl_and_sl_take_a_host_only() {
    assert!(
        err("-cl 0.0.0.0:5000")
            .starts_with("invalid value \"0.0.0.0:5000\" for flag -cl: expected a host")
    );
    assert!(err("-sl http://0.0.0.0").starts_with("invalid value \"http://0.0.0.0\" for flag -sl"));
}

#[test]
fn bind_addr_with_and_without_port() {
    let config = run("-addr 10.0.0.1:4003 -bind-addr 0.0.0.0");
    assert_eq!(config.client_url, "http://10.0.0.1:4003");
    assert_eq!(config.client_listen, "0.0.0.0:4003");
    let config = run("-bind-addr 0.0.0.0:5000");
    assert_eq!(config.client_listen, "0.0.0.0:5000");
    assert_eq!(config.client_url, "http://127.0.0.1:5000");
    let config = run("-peer-addr 10.0.0.1:7003 -peer-bind-addr 0.0.0.0:7100");
    assert_eq!(config.peer_url, "http://10.0.0.1:7003");
    assert_eq!(config.peer_listen, "0.0.0.0:7100");
}

#[test]
fn listen_urls_alone_define_the_advertised_urls() {
    let config =
        run("--listen-client-urls http://0.0.0.0:4001 --listen-peer-urls http://10.0.0.9:7009");
    assert_eq!(config.client_listen, "0.0.0.0:4001");
    assert_eq!(config.client_url, "http://127.0.0.1:4001");
    assert_eq!(config.peer_listen, "10.0.0.9:7009");
    assert_eq!(config.peer_url, "http://10.0.0.9:7009");
    let config = run("--listen-client-urls http://[::]:4001");
    assert_eq!(config.client_listen, "[::]:4001");
    assert_eq!(config.client_url, "http://127.0.0.1:4001");
}

#[test]
fn advertise_alone_defines_the_listen_address() {
    let config = run("--advertise-client-urls http://10.0.0.5:2379");
    assert_eq!(config.client_listen, "10.0.0.5:2379");
    let config = run("--initial-advertise-peer-urls http://10.0.0.5:2380");
    assert_eq!(config.peer_listen, "10.0.0.5:2380");
    assert_eq!(config.peer_url, "http://10.0.0.5:2380");
}

#[test]
fn url_lists_use_the_first_and_check_all() {
    let config = run("--advertise-client-urls http://127.0.0.1:2379,http://127.0.0.1:4001");
    assert_eq!(config.client_url, "http://127.0.0.1:2379");
    assert_eq!(config.client_listen, "127.0.0.1:2379");
    let message = err("--advertise-client-urls http://127.0.0.1:2379,http://x:0");
    assert!(message.starts_with("invalid value \"http://127.0.0.1:2379,http://x:0\" for flag --advertise-client-urls: port"), "{message}");
    assert!(err("--listen-client-urls ,").ends_with("no address given"));
}

#[test]
fn bad_addresses_name_the_flag() {
    let cases: &[(&str, &str)] = &[
        (
            "-c 127.0.0.1:0",
            "for flag -c: port \"0\" is not a number between 1 and 65535",
        ),
        ("-c 127.0.0.1:65536", "for flag -c: port \"65536\""),
        ("-c 127.0.0.1:http", "for flag -c: port \"http\""),
        ("-c 127.0.0.1", "for flag -c: missing port"),
        ("-c 127.0.0.1:", "for flag -c: missing port"),
        ("-c :4001", "for flag -c: missing host"),
        ("-s ftp://h:1", "for flag -s: unsupported scheme \"ftp\""),
        (
            "-addr http://h:1/path",
            "for flag -addr: expected host:port",
        ),
        ("-s ::1", "for flag -s: missing port"),
        ("-s [::1:7001", "for flag -s: unclosed"),
        ("-s ho$t:7001", "for flag -s: invalid host"),
        (
            "-peer-addr a:1:2:x",
            "for flag -peer-addr: IPv6 addresses must be bracketed",
        ),
        (
            "--listen-peer-urls http://h:99999",
            "for flag --listen-peer-urls: port",
        ),
    ];
    for (line, expected) in cases {
        let message = err(line);
        assert!(message.starts_with("invalid value"), "{line}: {message}");
        assert!(message.contains(expected), "{line}: {message}");
    }
    assert!(err_args(&["-peer-addr", "a b:1"]).contains("for flag -peer-addr"));
}

#[test]
fn ipv6_addresses() {
    let config = run("-c [::1]:4001 -cl ::");
    assert_eq!(config.client_url, "http://[::1]:4001");
    assert_eq!(config.client_listen, "[::]:4001");
    let config = run("--listen-peer-urls http://[fe80::1]:7001");
    assert_eq!(config.peer_url, "http://[fe80::1]:7001");
    assert_eq!(config.peer_listen, "[fe80::1]:7001");
}

#[test]
fn endpoint_parser() {
    let ep = parse_endpoint("https://Host-1.example:443/").unwrap();
    let expected = Endpoint {
        scheme: Some("https".to_string()),
        host: "Host-1.example".to_string(),
        port: Some(443),
    };
    assert_eq!(ep, expected);
    assert_eq!(parse_endpoint("h").unwrap().port, None);
    assert_eq!(parse_endpoint("[::1]").unwrap().host, "[::1]");
    assert_eq!(parse_endpoint("h:080").unwrap().port, Some(80));
    assert!(parse_endpoint("[::1]x").is_err());
    assert!(parse_endpoint("[zz]:1").is_err());
    assert!(parse_endpoint("h:70000").is_err());
    assert!(parse_endpoint("user@h:1").is_err());
    assert!(is_unspecified("0.0.0.0") && is_unspecified("[::]"));
    assert!(!is_unspecified("127.0.0.1") && !is_unspecified("localhost"));
}

// --- TLS ---

#[test]
fn client_cert_and_key_switch_the_client_side_to_https() {
    let config = run("-clientCert server.crt -clientKey server.key");
    assert_eq!(config.client_url, "https://127.0.0.1:4001");
    assert_eq!(config.peer_url, "http://127.0.0.1:7001");
    assert_eq!(config.client_tls.cert, Some(PathBuf::from("server.crt")));
    assert_eq!(config.client_tls.key, Some(PathBuf::from("server.key")));
    assert_eq!(config.client_tls.ca, None);
    assert!(!config.client_tls.client_cert_auth);
    assert!(config.client_tls.enabled());
    assert!(!config.peer_tls.enabled());
    let config = run("-c http://127.0.0.1:4001 --cert-file a --key-file b");
    assert_eq!(config.client_url, "https://127.0.0.1:4001");
}

#[test]
fn server_cert_and_key_switch_the_peer_side_to_https() {
    let config = run("-serverCert s.crt -serverKey s.key -serverCAFile ca.crt");
    assert_eq!(config.peer_url, "https://127.0.0.1:7001");
    assert_eq!(config.client_url, "http://127.0.0.1:4001");
    assert_eq!(config.peer_tls.ca, Some(PathBuf::from("ca.crt")));
    assert!(config.peer_tls.client_cert_auth);
    let config = run("--peer-cert-file s --peer-key-file k --peer-trusted-ca-file ca");
    assert!(!config.peer_tls.client_cert_auth);
    assert_eq!(config.peer_tls.ca, Some(PathBuf::from("ca")));
    let config = run(
        "--peer-cert-file s --peer-key-file k --peer-trusted-ca-file ca --peer-client-cert-auth",
    );
    assert!(config.peer_tls.client_cert_auth);
    assert!(
        run("-peer-cert-file s -peer-key-file k --peer-ca-file ca")
            .peer_tls
            .client_cert_auth
    );
}

#[test]
fn cert_without_key_is_an_error() {
    assert_eq!(
        err("-clientCert a"),
        "-clientCert and -clientKey must be given together"
    );
    assert_eq!(
        err("--key-file a"),
        "-clientCert and -clientKey must be given together"
    );
    assert_eq!(
        err("-serverCert a"),
        "-serverCert and -serverKey must be given together"
    );
    assert_eq!(
        err("--peer-key-file a"),
        "-serverCert and -serverKey must be given together"
    );
}

#[test]
fn ca_file_sets_the_ca_and_client_cert_auth() {
    for flag in ["-clientCAFile", "-ca-file", "--ca-file"] {
        let config = run(&format!("-clientCert c -clientKey k {flag} ca.crt"));
        assert_eq!(
            config.client_tls.ca,
            Some(PathBuf::from("ca.crt")),
            "{flag}"
        );
        assert!(config.client_tls.client_cert_auth, "{flag}");
    }
    let config = run("--cert-file c --key-file k --trusted-ca-file ca");
    assert!(!config.client_tls.client_cert_auth);
    assert_eq!(config.client_tls.ca, Some(PathBuf::from("ca")));
    let config = run("--cert-file c --key-file k --trusted-ca-file ca --client-cert-auth");
    assert!(config.client_tls.client_cert_auth);
    // Both CA flags: the one that implies client certificates is the one used.
    let config = run("--cert-file c --key-file k --trusted-ca-file t --ca-file a");
    assert_eq!(config.client_tls.ca, Some(PathBuf::from("a")));
}

#[test]
fn client_cert_auth_without_ca_is_an_error() {
    assert!(
        err("--cert-file c --key-file k --client-cert-auth")
            .starts_with("--client-cert-auth needs a CA file")
    );
    assert!(
        err("--peer-cert-file c --peer-key-file k --peer-client-cert-auth=true")
            .starts_with("--peer-client-cert-auth needs a CA file")
    );
    assert_eq!(run("--client-cert-auth=false"), Config::default());
}

#[test]
fn ca_without_cert_is_an_error() {
    assert!(err("-clientCAFile ca").ends_with("needs -clientCert and -clientKey"));
    assert!(err("--peer-trusted-ca-file ca").ends_with("needs -serverCert and -serverKey"));
}

#[test]
fn https_scheme_without_tls_is_an_error() {
    assert_eq!(
        err("-c https://127.0.0.1:4001"),
        "invalid value \"https://127.0.0.1:4001\" for flag -c: https needs -clientCert and -clientKey (--cert-file and --key-file)"
    );
    assert!(err("--listen-peer-urls https://127.0.0.1:7001").contains("-serverCert"));
    let config = run("--listen-client-urls https://127.0.0.1:4001 --cert-file c --key-file k");
    assert_eq!(config.client_url, "https://127.0.0.1:4001");
}

// --- joining ---

#[test]
fn join_list_is_trimmed_and_empty_entries_dropped() {
    let expected = vec!["10.0.0.1:7001".to_string(), "10.0.0.2:7002".to_string()];
    assert_eq!(
        run_args(&["-C", " 10.0.0.1:7001, 10.0.0.2:7002,,"]).join,
        expected
    );
    assert_eq!(
        run("-peers http://10.0.0.1:7001,https://10.0.0.2:7002/").join,
        expected
    );
    assert!(run("-C=").join.is_empty());
    assert!(err("-C 10.0.0.1").ends_with("peer \"10.0.0.1\": missing port"));
    assert!(
        err("-peers a:1,b:x")
            .starts_with("invalid value \"a:1,b:x\" for flag -peers: peer \"b:x\"")
    );
}

#[test]
fn join_file_is_read_at_parse_time() {
    let path = temp_path("peers");
    let file = path.to_string_lossy().to_string();
    std::fs::write(&path, "127.0.0.1:7001,127.0.0.1:7002\n").unwrap();
    assert_eq!(
        run(&format!("-CF {file}")).join,
        vec!["127.0.0.1:7001", "127.0.0.1:7002"]
    );
    assert_eq!(run(&format!("-peers-file={file}")).join.len(), 2);
    std::fs::write(&path, "h1:1\nh2:2\n").unwrap();
    assert_eq!(
        run(&format!("--peers-file {file}")).join,
        vec!["h1:1", "h2:2"]
    );
    std::fs::write(&path, "h1:1,bad\n").unwrap();
    assert!(err(&format!("-CF {file}")).ends_with("peer \"bad\": missing port"));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn unreadable_join_file_names_the_file() {
    let file = temp_path("missing").to_string_lossy().to_string();
    let message = err(&format!("-CF {file}"));
    assert!(
        message.starts_with(&format!("cannot read peers file \"{file}\" (flag -CF): ")),
        "{message}"
    );
    let message = err_env("", &[("ETCD_PEERS_FILE", &file)]);
    assert!(
        message.contains("(environment variable ETCD_PEERS_FILE)"),
        "{message}"
    );
}

#[test]
fn join_list_and_file_last_wins() {
    let path = temp_path("peers-last");
    let file = path.to_string_lossy().to_string();
    std::fs::write(&path, "f:1").unwrap();
    assert_eq!(run(&format!("-CF {file} -C c:1")).join, vec!["c:1"]);
    assert_eq!(run(&format!("-C c:1 -CF {file}")).join, vec!["f:1"]);
    std::fs::remove_file(&path).unwrap();
}

// --- 2.x cluster flags ---

#[test]
fn initial_cluster_keeps_order_and_provides_the_peer_url() {
    let config = run_args(&[
        "--name",
        "b",
        "--initial-cluster",
        "a=http://10.0.0.1:7001, b=http://10.0.0.2:7002,c=http://10.0.0.3:7003",
    ]);
    let expected = vec![
        pair("a", "http://10.0.0.1:7001"),
        pair("b", "http://10.0.0.2:7002"),
        pair("c", "http://10.0.0.3:7003"),
    ];
    assert_eq!(config.initial_cluster, expected);
    assert_eq!(config.peer_url, "http://10.0.0.2:7002");
    assert_eq!(config.peer_listen, "10.0.0.2:7002");
    assert_eq!(config.client_url, "http://127.0.0.1:4001");
}

#[test]
fn peer_flags_win_over_the_initial_cluster_entry() {
    let config = run("--name a --initial-cluster a=http://10.0.0.1:7001 -s 127.0.0.1:7009");
    assert_eq!(config.peer_url, "http://127.0.0.1:7009");
    let config = run(
        "--name a --initial-cluster a=http://10.0.0.1:7001 --listen-peer-urls http://0.0.0.0:7008",
    );
    assert_eq!(config.peer_url, "http://127.0.0.1:7008");
    assert_eq!(config.peer_listen, "0.0.0.0:7008");
}

#[test]
fn initial_cluster_entry_with_https_needs_peer_tls() {
    let message = err("-n a --initial-cluster a=https://10.0.0.1:7001");
    assert!(
        message.ends_with(
            "https needs -serverCert and -serverKey (--peer-cert-file and --peer-key-file)"
        ),
        "{message}"
    );
    let config = run("-n a --initial-cluster a=https://10.0.0.1:7001 -serverCert c -serverKey k");
    assert_eq!(config.peer_url, "https://10.0.0.1:7001");
}

#[test]
fn malformed_initial_cluster_is_an_error() {
    for value in [
        "a",
        "=http://h:1",
        "a=h:1",
        "a=http://h",
        "a=ftp://h:1",
        ",",
        "a=http://h:1/x",
    ] {
        let message = err(&format!("-n a --initial-cluster {value}"));
        let start = format!("invalid value {value:?} for flag --initial-cluster: ");
        assert!(message.starts_with(&start), "{message}");
    }
}

#[test]
fn initial_cluster_must_name_this_node() {
    assert_eq!(
        err("--initial-cluster x=http://127.0.0.1:7001"),
        "--initial-cluster has no entry for this node's name \"default-name\""
    );
}

#[test]
fn initial_cluster_state_and_token() {
    assert_eq!(
        run("--initial-cluster-state existing").initial_cluster_state,
        ClusterState::Existing
    );
    assert_eq!(
        run("--initial-cluster-state=new").initial_cluster_state,
        ClusterState::New
    );
    assert_eq!(
        err("--initial-cluster-state old"),
        "invalid value \"old\" for flag --initial-cluster-state: must be \"new\" or \"existing\""
    );
    assert_eq!(
        run("--initial-cluster-token tkn").initial_cluster_token,
        "tkn"
    );
    assert_eq!(ClusterState::Existing.as_str(), "existing");
    assert_eq!(ClusterState::default().to_string(), "new");
}

#[test]
fn python_etcd_command_line() {
    let config = run("--name test-node --data-dir /tmp/x \
         --listen-client-urls http://127.0.0.1:6001 --advertise-client-urls http://127.0.0.1:6001 \
         --listen-peer-urls http://127.0.0.1:8001 --initial-advertise-peer-urls http://127.0.0.1:8001 \
         --initial-cluster test-node=http://127.0.0.1:8001 --initial-cluster-state new");
    assert_eq!(config.name, "test-node");
    assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(config.client_url, "http://127.0.0.1:6001");
    assert_eq!(config.client_listen, "127.0.0.1:6001");
    assert_eq!(config.peer_url, "http://127.0.0.1:8001");
    assert_eq!(config.peer_listen, "127.0.0.1:8001");
    assert_eq!(
        config.initial_cluster,
        vec![pair("test-node", "http://127.0.0.1:8001")]
    );
    assert_eq!(config.initial_cluster_state, ClusterState::New);
    assert_eq!(config.initial_cluster_token, "etcd-cluster");
    assert!(config.join.is_empty());
    assert!(!config.client_tls.enabled() && !config.peer_tls.enabled());
}

#[test]
fn python_etcd_single_dash_tls_line() {
    let config = run("-data-dir /tmp/y -name test-node-0 \
         -initial-advertise-peer-urls http://127.0.0.1:7001 -listen-peer-urls http://127.0.0.1:7001 \
         -advertise-client-urls https://127.0.0.1:4001 -listen-client-urls https://127.0.0.1:4001 \
         -initial-cluster test-node-0=http://127.0.0.1:7001,test-node-1=http://127.0.0.1:7002 \
         -initial-cluster-state new \
         -cert-file=/c/server.crt -key-file=/c/server.key -ca-file=/c/ca.crt");
    assert_eq!(config.client_url, "https://127.0.0.1:4001");
    assert_eq!(config.peer_url, "http://127.0.0.1:7001");
    assert_eq!(config.client_tls.ca, Some(PathBuf::from("/c/ca.crt")));
    assert!(config.client_tls.client_cert_auth);
    assert_eq!(config.initial_cluster.len(), 2);
}

#[test]
fn etcd3_command_line_with_enable_v2() {
    let config = run("--name infra0 --data-dir /var/lib/etcd \
         --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls http://127.0.0.1:2379 \
         --listen-peer-urls http://0.0.0.0:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
         --initial-cluster infra0=http://127.0.0.1:2380 --initial-cluster-token tkn \
         --initial-cluster-state new --heartbeat-interval 100 --election-timeout 1000 \
         --enable-v2=true");
    assert_eq!(config.name, "infra0");
    assert_eq!(config.client_listen, "0.0.0.0:2379");
    assert_eq!(config.client_url, "http://127.0.0.1:2379");
    assert_eq!(config.peer_listen, "0.0.0.0:2380");
    assert_eq!(config.peer_url, "http://127.0.0.1:2380");
    assert_eq!(config.initial_cluster_token, "tkn");
    assert_eq!((config.heartbeat_ms, config.election_ms), (100, 1000));
    assert_eq!(
        err("--enable-v2=maybe"),
        "invalid boolean value \"maybe\" for flag --enable-v2: parse error"
    );
}

// --- environment ---

#[test]
fn environment_fills_settings_not_on_the_command_line() {
    let vars = [
        ("ETCD_NAME", "envnode"),
        ("ETCD_DATA_DIR", "/data/env"),
        ("ETCD_ADDR", "10.0.0.1:4001"),
        ("ETCD_PEER_ADDR", "10.0.0.1:7001"),
        ("ETCD_PEERS", "10.0.0.2:7001,10.0.0.3:7001"),
        ("ETCD_SNAPSHOT_COUNT", "77"),
        ("ETCD_CORS", "*"),
        ("ETCD_MAX_RESULT_BUFFER", "12"),
    ];
    let config = run_env("", &vars);
    assert_eq!(config.name, "envnode");
    assert_eq!(config.data_dir, PathBuf::from("/data/env"));
    assert_eq!(config.client_url, "http://10.0.0.1:4001");
    assert_eq!(config.peer_url, "http://10.0.0.1:7001");
    assert_eq!(config.join, vec!["10.0.0.2:7001", "10.0.0.3:7001"]);
    assert_eq!(config.snapshot_count, 77);
    assert_eq!(config.cors, vec!["*"]);
    assert_eq!(config.history_size, 12);
}

#[test]
fn command_line_wins_over_environment() {
    let vars = [
        ("ETCD_NAME", "envnode"),
        ("ETCD_ADVERTISE_CLIENT_URLS", "http://10.9.9.9:4009"),
    ];
    let config = run_env("-n flagnode -c 127.0.0.1:4005", &vars);
    assert_eq!(config.name, "flagnode");
    assert_eq!(config.client_url, "http://127.0.0.1:4005");
    // The data directory follows the winning name.
    assert_eq!(config.data_dir, PathBuf::from("flagnode.etcd"));
    // A v0.1 short name hides the variable of its long alias.
    assert_eq!(run_env("-n x", &[("ETCD_NAME", "y")]).name, "x");
    // -CF on the command line hides ETCD_PEERS.
    let path = temp_path("peers-env");
    std::fs::write(&path, "f:1").unwrap();
    let config = run_env(
        &format!("-CF {}", path.to_string_lossy()),
        &[("ETCD_PEERS", "e:1")],
    );
    assert_eq!(config.join, vec!["f:1"]);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn snapshotcount_exception_and_preference() {
    assert_eq!(
        run_env("", &[("ETCD_SNAPSHOTCOUNT", "55")]).snapshot_count,
        55
    );
    let both = [("ETCD_SNAPSHOTCOUNT", "55"), ("ETCD_SNAPSHOT_COUNT", "66")];
    assert_eq!(run_env("", &both).snapshot_count, 66);
    assert_eq!(run_env("-snapshotCount 9", &both).snapshot_count, 9);
}

#[test]
fn environment_booleans() {
    assert!(run_env("", &[("ETCD_FORCE", "1")]).force);
    assert!(run_env("", &[("ETCD_FORCE", "yes")]).force);
    assert!(!run_env("", &[("ETCD_FORCE", "0")]).force);
    assert!(!run_env("", &[("ETCD_FORCE", "false")]).force);
    assert!(!run_env("-f=false", &[("ETCD_FORCE", "true")]).force);
    assert!(run_env("", &[("ETCD_SNAPSHOT", "true")]).snapshot);
    assert_eq!(
        run_env("", &[("ETCD_ENABLE_V2", "true")]),
        Config::default()
    );
}

#[test]
fn bad_environment_value_names_the_variable() {
    assert_eq!(
        err_env("", &[("ETCD_SNAPSHOT_COUNT", "abc")]),
        "invalid value \"abc\" for environment variable ETCD_SNAPSHOT_COUNT: parse error"
    );
    assert_eq!(
        err_env("", &[("ETCD_ADDR", "nope")]),
        "invalid value \"nope\" for environment variable ETCD_ADDR: missing port"
    );
    assert!(
        err_env("", &[("ETCD_INITIAL_CLUSTER_STATE", "x")]).contains("ETCD_INITIAL_CLUSTER_STATE")
    );
    // A flag on the command line hides a bad variable.
    assert_eq!(
        run_env("--snapshot-count 5", &[("ETCD_SNAPSHOT_COUNT", "abc")]).snapshot_count,
        5
    );
}

#[test]
fn empty_and_unknown_environment_variables_are_ignored() {
    let vars = [
        ("ETCD_NAME", ""),
        ("ETCD_BOGUS", "1"),
        ("ETCD_N", "x"),
        ("ETCD_CONFIG", "/etc/x"),
        ("ETCD_HELP", "1"),
        ("NAME", "x"),
    ];
    assert_eq!(run_env("", &vars), Config::default());
}

#[test]
fn environment_for_2x_names() {
    let vars = [
        ("ETCD_NAME", "n1"),
        ("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379"),
        ("ETCD_LISTEN_PEER_URLS", "http://0.0.0.0:2380"),
        ("ETCD_PEER_BIND_ADDR", "10.0.0.1"),
        ("ETCD_INITIAL_CLUSTER", "n1=http://127.0.0.1:2380"),
        ("ETCD_INITIAL_CLUSTER_STATE", "existing"),
        ("ETCD_CERT_FILE", "c"),
        ("ETCD_KEY_FILE", "k"),
        ("ETCD_HEARTBEAT_INTERVAL", "100"),
        ("ETCD_ELECTION_TIMEOUT", "1000"),
    ];
    let config = run_env("", &vars);
    assert_eq!(config.client_listen, "0.0.0.0:2379");
    assert_eq!(config.client_url, "https://127.0.0.1:2379");
    // Two variables of one setting: the newer era's name wins.
    assert_eq!(config.peer_listen, "0.0.0.0:2380");
    assert_eq!(config.initial_cluster_state, ClusterState::Existing);
    assert_eq!((config.heartbeat_ms, config.election_ms), (100, 1000));
}

// --- the table and the usage text ---

#[test]
fn flag_names_are_unique_and_listed_in_usage() {
    let text = usage();
    let mut seen = BTreeSet::new();
    for flag in all_flags() {
        assert!(seen.insert(flag.name), "duplicate flag {}", flag.name);
        let head = format!("{} ", flag.name);
        assert!(
            text.lines()
                .any(|l| l.trim_start().trim_start_matches('-').starts_with(&head)),
            "usage lacks -{}",
            flag.name
        );
        assert!(!flag.help.is_empty());
        assert_eq!(
            flag.arg.is_empty(),
            flag.kind == Kind::Bool,
            "{}",
            flag.name
        );
    }
    assert!(text.contains("-h, -help, --help"));
    assert!(text.contains("\n  --listen-client-urls <urls> "));
    assert!(text.contains("\n  -peer-addr <host:port> "));
    assert!(text.contains("[ETCD_PEER_ADDR]"));
    assert!(text.contains("(default 127.0.0.1:4001)"));
    assert!(!text.contains("[ETCD_VERSION]"));
}

#[test]
fn environment_names_follow_the_rule() {
    let vars: Vec<String> = env_vars().into_iter().map(|(v, _)| v).collect();
    for expected in [
        "ETCD_NAME",
        "ETCD_DATA_DIR",
        "ETCD_ADDR",
        "ETCD_BIND_ADDR",
        "ETCD_PEER_ADDR",
        "ETCD_PEER_BIND_ADDR",
        "ETCD_PEERS",
        "ETCD_PEERS_FILE",
        "ETCD_SNAPSHOT_COUNT",
        "ETCD_SNAPSHOTCOUNT",
        "ETCD_CERT_FILE",
        "ETCD_LISTEN_CLIENT_URLS",
        "ETCD_INITIAL_CLUSTER_TOKEN",
        "ETCD_PEER_HEARTBEAT_INTERVAL",
        "ETCD_CLIENT_CERT_AUTH",
    ] {
        assert!(vars.iter().any(|v| v == expected), "{expected}");
    }
    for absent in [
        "ETCD_VERSION",
        "ETCD_N",
        "ETCD_C",
        "ETCD_CONFIG",
        "ETCD_HELP",
        "ETCD_W",
    ] {
        assert!(!vars.iter().any(|v| v == absent), "{absent}");
    }
}
