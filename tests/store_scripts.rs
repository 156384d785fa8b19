//! Ring 2 of the test suite: scripted store tests (golden files).
//!
//! Every file `tests/scripts/*.txt` is one test case: a list of commands run against a fresh
//! [`Store`] (history size 1000), each followed by the output a human checked against
//! docs/api.md. The runner replays the commands, renders what the store did and compares it
//! with the expected lines. Nothing reads a clock: the script has its own `now`, which starts
//! at 2030-01-01T00:00:00Z and moves only with `clock`, so every run is identical.
//!
//! Writing a new script: write the commands, run
//! `UPDATE_GOLDEN=1 cargo test --test store_scripts NAME` (NAME = the file's stem, so only
//! that file is rewritten), then REVIEW every generated `>` line against the spec before
//! committing it. An expected line is what the spec says, not what the store happens to
//! print: where they disagree the line is corrected by hand and the test fails until the
//! store is fixed, so never regenerate a file wholesale without reviewing `git diff`.
//! Without `UPDATE_GOLDEN` any difference fails the test with the file, the line, both
//! versions and where they part. A new file must also be listed in `scripts!` below (a test
//! fails while one is missing).
//!
//! # Format
//!
//! ```text
//! # a comment; blank lines and comments are kept by UPDATE_GOLDEN
//! set /a value=1                  a command, one per line
//! > {"action":"set",...}           its output, one `> ` line each (none for silent commands)
//! ```
//!
//! Values with spaces are quoted: `value="Hello world"` (`\"`, `\\`, `\n` escape inside).
//! A leading `v1` renders the output the v1 way (`v1_event_json`, `v1_get_json`, v1 error
//! messages) instead of the v2 JSON (`v2_event_json`).
//!
//! Writes (applied as [`Command`]s; output: the event, `(no event) index=N`, or the error):
//! * `set KEY [value=V] [dir] [ttl=S] [expire_at=UNIX_S] [refresh] [novalue]`
//! * `create KEY [value=V] [dir] [unique] [ttl=S] [expire_at=UNIX_S] [novalue]`
//! * `update KEY [value=V] [ttl=S] [expire_at=UNIX_S] [refresh] [novalue]`
//! * `cas KEY [prevValue=V] [prevIndex=N] [value=V] [ttl=S] [expire_at=UNIX_S] [refresh]`
//! * `cad KEY [prevValue=V] [prevIndex=N]` (compare-and-delete)
//! * `delete KEY [dir] [recursive]`
//! * `register NAME peer=URL client=URL`, `unregister NAME` (the machine registry)
//! * `expire` applies `Command::Expire { now }` and prints every event it produced (read back
//!   from the history), or `(none)`.
//!
//! `ttl=S` is whole seconds from the script's now; `expire_at=S` is an absolute Unix time in
//! seconds. A write without `value=` stores `""` (unless `dir`).
//!
//! Reads and watches:
//! * `get KEY [recursive] [sorted] [hidden]` (`hidden`: list `_` children too)
//! * `watch NAME KEY [recursive] [stream] [hidden] [since=N]` registers watcher NAME and prints
//!   `watching index=N` (the index at registration) or the error; with the `v1` prefix a start
//!   index older than the history waits instead of failing (`OnCleared::WaitForNext`).
//! * `events NAME` prints what NAME received since the last `events`, one event a line, then
//!   `(closed)` if the watcher has ended; `(none)` if nothing came and it is still open.
//! * `unwatch NAME`, `watchers` (prints the count of registered watchers)
//!
//! Script state: `clock +5s` / `+250ms` / `+1ns` (silent), `now` (prints the time), `index`
//! (prints the store index), `history N` (only before the first command that touches the
//! store: sets the history size).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use etcd::command::Command;
use etcd::error::EtcdError;
use etcd::go::rfc3339_nanos;
use etcd::state::State;
use etcd::store::json::{v1_event_json, v1_get_json, v2_event_json};
use etcd::store::watch::Watcher;
use etcd::store::{Action, Event, OnCleared};
use tokio::sync::mpsc::error::TryRecvError;

const NANOS: i64 = 1_000_000_000;
/// 2030-01-01T00:00:00Z, where every script's clock starts.
const START: i64 = 1_893_456_000 * NANOS;
const DEFAULT_HISTORY: usize = 1000;

macro_rules! scripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_script(stringify!($name));
            }
        )*
        const LISTED: &[&str] = &[$(stringify!($name)),*];
    };
}

scripts!(basics, dirs, cas, ttl, watch, unique, v1, registry);

#[test]
fn every_script_file_has_a_test() {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(scripts_dir()).expect("tests/scripts exists") {
        let path = entry.expect("readable directory").path();
        if path.extension().is_some_and(|e| e == "txt") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if !LISTED.contains(&stem.as_str()) {
                missing.push(stem);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "add these scripts to `scripts!` in tests/store_scripts.rs: {missing:?}"
    );
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts")
}

// -------------------------------------------------------------------------------------------
// the file: commands, their expected output, and everything else kept verbatim

enum Item {
    /// A comment or blank line.
    Other(String),
    Command {
        line_no: usize,
        text: String,
        expected: Vec<String>,
    },
}

fn parse_file(name: &str, content: &str) -> Vec<Item> {
    let mut items = Vec::new();
    for (i, line) in content.lines().enumerate() {
        let line_no = i + 1;
        if let Some(rest) = line.strip_prefix('>') {
            let out = rest.strip_prefix(' ').unwrap_or(rest).to_string();
            match items.last_mut() {
                Some(Item::Command { expected, .. }) => expected.push(out),
                _ => panic!("{name}.txt:{line_no}: an output line `>` must follow a command"),
            }
        } else if line.trim().is_empty() || line.trim_start().starts_with('#') {
            items.push(Item::Other(line.to_string()));
        } else {
            items.push(Item::Command {
                line_no,
                text: line.trim().to_string(),
                expected: Vec::new(),
            });
        }
    }
    items
}

fn run_script(name: &str) {
    let path = scripts_dir().join(format!("{name}.txt"));
    let content = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let items = parse_file(name, &content);
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");

    let mut runner = Runner::new();
    let mut rewritten = String::new();
    let mut diffs = String::new();
    for item in &items {
        match item {
            Item::Other(line) => {
                rewritten.push_str(line);
                rewritten.push('\n');
            }
            Item::Command {
                line_no,
                text,
                expected,
            } => {
                let actual = runner
                    .run(text)
                    .unwrap_or_else(|e| panic!("{name}.txt:{line_no}: `{text}`: {e}"));
                rewritten.push_str(text);
                rewritten.push('\n');
                for out in &actual {
                    rewritten.push_str("> ");
                    rewritten.push_str(out);
                    rewritten.push('\n');
                }
                if &actual != expected {
                    let _ = writeln!(diffs, "{name}.txt:{line_no}: {text}");
                    for (sign, lines) in [("-", expected), ("+", &actual)] {
                        for l in lines {
                            let _ = writeln!(diffs, "  {sign} > {l}");
                        }
                    }
                    for (e, a) in expected.iter().zip(&actual) {
                        if let Some(hint) = first_difference(e, a) {
                            let _ = writeln!(diffs, "    {hint}");
                        }
                    }
                }
            }
        }
    }

    if update {
        if rewritten != content {
            std::fs::write(&path, rewritten)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            eprintln!("updated {}", path.display());
        }
        return;
    }
    assert!(
        diffs.is_empty(),
        "{name}.txt: output differs from the expected lines (- expected, + actual); if the \
         new output is right (check docs/api.md), rerun with \
         `UPDATE_GOLDEN=1 cargo test --test store_scripts {name}` and review `git diff`\n{diffs}"
    );
}

/// Where two output lines part ways, so a one-field change in a long JSON line is easy to
/// spot: `from character 40: - "modifiedIndex":6,"cre | + "value":"","modifiedInd`.
fn first_difference(expected: &str, actual: &str) -> Option<String> {
    if expected == actual {
        return None;
    }
    let (e, a): (Vec<char>, Vec<char>) = (expected.chars().collect(), actual.chars().collect());
    let at = e.iter().zip(&a).take_while(|(x, y)| x == y).count();
    let snippet = |s: &[char]| s.iter().skip(at).take(24).collect::<String>();
    Some(format!(
        "from character {}: - {} | + {}",
        at + 1,
        snippet(&e),
        snippet(&a)
    ))
}

// -------------------------------------------------------------------------------------------
// running commands

struct Runner {
    state: State,
    now: i64,
    watchers: BTreeMap<String, Watcher>,
    /// Set once a command touched the store; `history` must come before.
    started: bool,
}

/// A command line split into its words: an optional `v1` prefix, the verb, positional
/// arguments, `name=value` options and bare flags.
struct Args {
    v1: bool,
    verb: String,
    positional: Vec<String>,
    options: BTreeMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    fn parse(line: &str) -> Result<Args, String> {
        let mut words = split_words(line)?.into_iter();
        let mut verb = words.next().ok_or("empty command")?;
        let v1 = verb == "v1";
        if v1 {
            verb = words.next().ok_or("`v1` needs a command after it")?;
        }
        let mut args = Args {
            v1,
            verb,
            positional: Vec::new(),
            options: BTreeMap::new(),
            flags: Vec::new(),
        };
        for w in words {
            match w.split_once('=') {
                Some((k, v)) if !k.is_empty() && !k.starts_with('/') => {
                    args.options.insert(k.to_string(), v.to_string());
                }
                // The first plain word (a key, a watcher name...) and anything that looks
                // like a key or a duration is positional; other plain words are flags.
                _ if args.positional.is_empty() || w.starts_with('/') || w.starts_with('+') => {
                    args.positional.push(w)
                }
                _ => args.flags.push(w),
            }
        }
        Ok(args)
    }

    /// Check that only the named options and flags were given.
    fn allow(&self, options: &[&str], flags: &[&str], positional: usize) -> Result<(), String> {
        if let Some(o) = self.options.keys().find(|o| !options.contains(&o.as_str())) {
            return Err(format!("unknown option `{o}=` (allowed: {options:?})"));
        }
        if let Some(f) = self.flags.iter().find(|f| !flags.contains(&f.as_str())) {
            return Err(format!("unknown flag `{f}` (allowed: {flags:?})"));
        }
        if self.positional.len() != positional {
            return Err(format!(
                "expected {positional} positional argument(s), got {:?}",
                self.positional
            ));
        }
        Ok(())
    }

    fn flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    fn opt(&self, o: &str) -> Option<String> {
        self.options.get(o).cloned()
    }

    fn num(&self, o: &str) -> Result<Option<i64>, String> {
        self.options
            .get(o)
            .map(|v| v.parse().map_err(|_| format!("`{o}={v}` is not a number")))
            .transpose()
    }

    fn key(&self) -> String {
        self.positional[0].clone()
    }
}

/// Split on whitespace; a double-quoted part (`value="a b"`) keeps its spaces.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err("unterminated quote".into()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => cur.push('\n'),
                            Some(e) => cur.push(e),
                            None => return Err("dangling backslash".into()),
                        },
                        Some(c) => cur.push(c),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// `+5s`, `+250ms`, `+7ns` -> nanoseconds.
fn parse_duration(s: &str) -> Result<i64, String> {
    let body = s
        .strip_prefix('+')
        .ok_or_else(|| format!("clock moves forward only: `+5s`, not `{s}`"))?;
    let (num, unit) = if let Some(n) = body.strip_suffix("ms") {
        (n, 1_000_000)
    } else if let Some(n) = body.strip_suffix("ns") {
        (n, 1)
    } else if let Some(n) = body.strip_suffix('s') {
        (n, NANOS)
    } else {
        return Err(format!("duration needs a unit (s, ms, ns): `{s}`"));
    };
    let n: i64 = num.parse().map_err(|_| format!("bad duration `{s}`"))?;
    Ok(n * unit)
}

impl Runner {
    fn new() -> Runner {
        Runner {
            state: State::new(DEFAULT_HISTORY),
            now: START,
            watchers: BTreeMap::new(),
            started: false,
        }
    }

    fn run(&mut self, line: &str) -> Result<Vec<String>, String> {
        let a = Args::parse(line)?;
        match a.verb.as_str() {
            "history" => {
                a.allow(&[], &[], 1)?;
                if self.started {
                    return Err("`history` must come before the first store command".into());
                }
                let n = a.positional[0]
                    .parse()
                    .map_err(|_| "history size must be a number")?;
                self.state = State::new(n);
                Ok(vec![])
            }
            "clock" => {
                a.allow(&[], &[], 1)?;
                self.now += parse_duration(&a.positional[0])?;
                Ok(vec![])
            }
            "now" => {
                a.allow(&[], &[], 0)?;
                Ok(vec![rfc3339_nanos(self.now)])
            }
            "index" => {
                a.allow(&[], &[], 0)?;
                Ok(vec![format!("index={}", self.state.store.index())])
            }
            "watchers" => {
                a.allow(&[], &[], 0)?;
                Ok(vec![format!(
                    "watchers={}",
                    self.state.store.watcher_count()
                )])
            }
            "get" => {
                a.allow(&[], &["recursive", "sorted", "hidden"], 1)?;
                self.started = true;
                // Listings always come out sorted (the tree is a BTreeMap); `sorted` is
                // accepted so scripts read like the requests they model.
                Ok(vec![match self
                    .state
                    .store
                    .get(&a.key(), a.flag("recursive"), a.flag("hidden"))
                {
                    Ok(view) if a.v1 => v1_get_json(&view, self.state.store.index(), self.now),
                    Ok(view) => trim(v2_event_json(Action::Get, &view, None, self.now, false)),
                    Err(e) => render_error(&e, a.v1),
                }])
            }
            "watch" => self.watch(&a),
            "events" => {
                a.allow(&[], &[], 1)?;
                let name = &a.positional[0];
                let now = self.now;
                let w = self
                    .watchers
                    .get_mut(name)
                    .ok_or_else(|| format!("no watcher named `{name}`"))?;
                let mut out = Vec::new();
                let closed = loop {
                    match w.rx.try_recv() {
                        Ok(ev) => out.push(render_event(&ev, now, a.v1, false)),
                        Err(TryRecvError::Empty) => break false,
                        Err(TryRecvError::Disconnected) => break true,
                    }
                };
                if closed {
                    out.push("(closed)".into());
                } else if out.is_empty() {
                    out.push("(none)".into());
                }
                Ok(out)
            }
            "unwatch" => {
                a.allow(&[], &[], 1)?;
                let name = &a.positional[0];
                let w = self
                    .watchers
                    .remove(name)
                    .ok_or_else(|| format!("no watcher named `{name}`"))?;
                self.state.store.unwatch(&w);
                Ok(vec![])
            }
            "expire" => {
                a.allow(&[], &[], 0)?;
                self.started = true;
                self.expire(a.v1)
            }
            _ => {
                let cmd = self.command(&a)?;
                self.started = true;
                let novalue = a.flag("novalue");
                Ok(vec![match cmd.apply(&mut self.state).into_key() {
                    Ok(Some(ev)) => render_event(&ev, self.now, a.v1, novalue),
                    Ok(None) => format!("(no event) index={}", self.state.store.index()),
                    Err(e) => render_error(&e, a.v1),
                }])
            }
        }
    }

    fn expire_at(&self, a: &Args) -> Result<Option<i64>, String> {
        match (a.num("ttl")?, a.num("expire_at")?) {
            (Some(_), Some(_)) => Err("give `ttl=` or `expire_at=`, not both".into()),
            (Some(ttl), None) => Ok(Some(self.now + ttl * NANOS)),
            (None, Some(at)) => Ok(Some(at * NANOS)),
            (None, None) => Ok(None),
        }
    }

    /// Build the write command a line describes.
    fn command(&self, a: &Args) -> Result<Command, String> {
        let value = a.opt("value");
        let prev_index = a
            .num("prevIndex")?
            .map(|i| u64::try_from(i).map_err(|_| "prevIndex must not be negative"))
            .transpose()?;
        Ok(match a.verb.as_str() {
            "set" => {
                a.allow(
                    &["value", "ttl", "expire_at"],
                    &["dir", "refresh", "novalue"],
                    1,
                )?;
                Command::Set {
                    key: a.key(),
                    value: if a.flag("dir") {
                        None
                    } else {
                        Some(value.unwrap_or_default())
                    },
                    expire_at: self.expire_at(a)?,
                    refresh: a.flag("refresh"),
                }
            }
            "create" => {
                a.allow(
                    &["value", "ttl", "expire_at"],
                    &["dir", "unique", "novalue"],
                    1,
                )?;
                Command::Create {
                    key: a.key(),
                    value: if a.flag("dir") {
                        None
                    } else {
                        Some(value.unwrap_or_default())
                    },
                    expire_at: self.expire_at(a)?,
                    unique: a.flag("unique"),
                }
            }
            "update" => {
                a.allow(&["value", "ttl", "expire_at"], &["refresh", "novalue"], 1)?;
                Command::Update {
                    key: a.key(),
                    value: value.unwrap_or_default(),
                    expire_at: self.expire_at(a)?,
                    refresh: a.flag("refresh"),
                }
            }
            "cas" => {
                a.allow(
                    &["value", "prevValue", "prevIndex", "ttl", "expire_at"],
                    &["refresh", "novalue"],
                    1,
                )?;
                Command::CompareAndSwap {
                    key: a.key(),
                    prev_value: a.opt("prevValue"),
                    prev_index,
                    value: value.unwrap_or_default(),
                    expire_at: self.expire_at(a)?,
                    refresh: a.flag("refresh"),
                }
            }
            "cad" => {
                a.allow(&["prevValue", "prevIndex"], &[], 1)?;
                Command::CompareAndDelete {
                    key: a.key(),
                    prev_value: a.opt("prevValue"),
                    prev_index,
                }
            }
            "delete" => {
                a.allow(&[], &["dir", "recursive"], 1)?;
                Command::Delete {
                    key: a.key(),
                    dir: a.flag("dir"),
                    recursive: a.flag("recursive"),
                }
            }
            "register" => {
                a.allow(&["peer", "client"], &[], 1)?;
                Command::Register {
                    name: a.positional[0].clone(),
                    peer_url: a.opt("peer").ok_or("register needs peer=")?,
                    client_url: a.opt("client").ok_or("register needs client=")?,
                }
            }
            "unregister" => {
                a.allow(&[], &[], 1)?;
                Command::Unregister {
                    name: a.positional[0].clone(),
                    id: None,
                }
            }
            other => return Err(format!("unknown command `{other}`")),
        })
    }

    fn watch(&mut self, a: &Args) -> Result<Vec<String>, String> {
        a.allow(&["since"], &["recursive", "stream", "hidden"], 2)?;
        let name = a.positional[0].clone();
        let key = a.positional[1].clone();
        if self.watchers.contains_key(&name) {
            return Err(format!("watcher `{name}` exists already"));
        }
        let since = a
            .num("since")?
            .map(|i| u64::try_from(i).map_err(|_| "since must not be negative"))
            .transpose()?;
        let on_cleared = if a.v1 {
            OnCleared::WaitForNext
        } else {
            OnCleared::Error
        };
        self.started = true;
        Ok(vec![match self.state.store.watch(
            &key,
            a.flag("recursive"),
            a.flag("stream"),
            since,
            a.flag("hidden"),
            on_cleared,
        ) {
            Ok(w) => {
                let line = format!("watching index={}", w.start_index);
                self.watchers.insert(name, w);
                line
            }
            Err(e) => render_error(&e, a.v1),
        }])
    }

    /// Apply `Command::Expire { now }`; the command answers nothing, so read the events it
    /// produced back from the history (each expired node is one index).
    fn expire(&mut self, v1: bool) -> Result<Vec<String>, String> {
        let before = self.state.store.index();
        let res = Command::Expire { now: self.now }
            .apply(&mut self.state)
            .into_key();
        let mut out = Vec::new();
        match res {
            Ok(None) => {}
            Ok(Some(ev)) => out.push(format!(
                "(unexpected answer) {}",
                render_event(&ev, self.now, v1, false)
            )),
            Err(e) => out.push(render_error(&e, v1)),
        }
        for i in before + 1..=self.state.store.index() {
            let mut w = self
                .state
                .store
                .watch("/", true, false, Some(i), true, OnCleared::Error)
                .map_err(|e| format!("event {i} is not in the history: {e}"))?;
            match w.rx.try_recv() {
                Ok(ev) if ev.index() == i => out.push(render_event(&ev, self.now, v1, false)),
                Ok(ev) => out.push(format!(
                    "(history has no event {i}; next is {})",
                    render_event(&ev, self.now, v1, false)
                )),
                Err(_) => {
                    self.state.store.unwatch(&w);
                    out.push(format!("(history has no event {i})"));
                }
            }
        }
        if out.is_empty() {
            out.push("(none)".into());
        }
        Ok(out)
    }
}

fn trim(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
    }
    s
}

fn render_event(ev: &Event, now: i64, v1: bool, novalue: bool) -> String {
    if v1 {
        v1_event_json(ev, now)
    } else {
        trim(v2_event_json(
            ev.action,
            &ev.node,
            ev.prev_node.as_ref(),
            now,
            novalue,
        ))
    }
}

fn render_error(e: &EtcdError, v1: bool) -> String {
    let message = if v1 {
        e.code.message_v1()
    } else {
        e.code.message_v2()
    };
    let mut s = format!("error {} {message:?}", e.code.number());
    if !e.cause.is_empty() {
        let _ = write!(s, " cause={:?}", e.cause);
    }
    let _ = write!(s, " index={}", e.index);
    s
}
