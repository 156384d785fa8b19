"""Shared helpers of the interop suite (stdlib only).

* free loopback ports, temp dirs;
* starting / stopping our server (target/debug/etcd) and the reference etcd 3.4;
* a tiny HTTP client that never follows redirects;
* the check reporter: one line per check, a machine-readable summary line at the end.

Every process started here is remembered and killed by PID at exit (atexit + SIGTERM/SIGINT
handlers); every wait is bounded.
"""

import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import re
import urllib.parse
from collections import OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OURS_BIN = os.environ.get("INTEROP_OURS_BIN", os.path.join(REPO, "target", "debug", "etcd"))
REF_BIN = os.environ.get("INTEROP_REF_BIN", "/usr/bin/etcd")
ETCDCTL = os.environ.get("INTEROP_ETCDCTL", "/usr/bin/etcdctl")

_PROCS = []
_TMPDIRS = []
_USED_PORTS = set()


def _cleanup():
    for p in _PROCS:
        if getattr(p, "_interop_group", False):
            # started with start_new_session: its children (etcdctl, the upstream tests'
            # etcd nodes) share its process group id = its pid
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
    for p in _PROCS:
        try:
            p.wait(timeout=5)
        except Exception:
            pass
    del _PROCS[:]
    if not os.environ.get("INTEROP_KEEP_TMP"):
        for d in _TMPDIRS:
            shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup)


def _on_signal(signum, _frame):
    _cleanup()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def track(proc, group=False):
    """Remember a Popen so it is killed at exit (with its process group when group=True,
    for processes started with start_new_session=True)."""
    proc._interop_group = group
    _PROCS.append(proc)
    return proc


def tmpdir(prefix):
    d = tempfile.mkdtemp(prefix="interop-%s-" % prefix)
    _TMPDIRS.append(d)
    return d


# Ports come from 12000-19999: below Linux's ephemeral range (32768-60999 here; outgoing
# connections take their local ports from it, so a port found free there can be grabbed by
# any connect() before our server binds it) and disjoint from the Rust harness's 20000-31999.
# bench/compare.sh uses fixed ports in that range: never hand those out.
PORT_MIN, PORT_MAX = 12000, 19999
PORT_AVOID = frozenset((12379, 12380, 14001, 17001))


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port):
    """Nothing is bound to 127.0.0.1:port (nor to 0.0.0.0:port, which would clash too);
    no SO_REUSEADDR, so a port still in TIME_WAIT counts as taken as well."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _usable(port):
    lo, hi = _ephemeral_range()
    return (PORT_MIN <= port <= PORT_MAX and port not in PORT_AVOID
            and not lo <= port <= hi and port not in _USED_PORTS)


def free_port():
    """A currently free loopback port from PORT_MIN-PORT_MAX, not handed out before in this
    process. The machine may be shared, so never use fixed ports; a port can still be taken
    between this check and the server's bind: Server.start() retries on other ports then."""
    import random
    for _ in range(1000):
        port = random.randint(PORT_MIN, PORT_MAX)
        if _usable(port) and _bindable(port):
            _USED_PORTS.add(port)
            return port
    raise RuntimeError("no free port in %d-%d" % (PORT_MIN, PORT_MAX))


def free_port_block(n):
    """n consecutive free ports (python-etcd's upstream tests number nodes by port)."""
    import random
    for _ in range(1000):
        start = random.randint(PORT_MIN, PORT_MAX - n + 1)
        block = range(start, start + n)
        if all(_usable(p) for p in block) and all(_bindable(p) for p in block):
            _USED_PORTS.update(block)
            return start
    raise RuntimeError("no block of %d free ports in %d-%d" % (n, PORT_MIN, PORT_MAX))


# ---------------------------------------------------------------- HTTP


class Resp(object):
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value), names as sent
        self.body = body  # bytes

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def has_header(self, name):
        return self.header(name) is not None

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def text(self):
        return self.body.decode("utf-8", "replace")


def listening(port):
    """Is something in LISTEN state on 127.0.0.1:port / 0.0.0.0:port (from /proc/net/tcp)?"""
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                local, state = parts[1], parts[3]
                if state == "0A" and int(local.split(":")[1], 16) == port:
                    return True
    except OSError:
        return None
    return False


class Refused(ConnectionRefusedError):
    pass


def request(port, method, path, params=None, form=None, body=None, headers=None, timeout=10.0):
    """One HTTP request to 127.0.0.1:port; never follows redirects. params go into the
    query string, form is url-encoded into the body (Content-Type set)."""
    if params:
        q = urllib.parse.urlencode(params)
        path = path + ("&" if "?" in path else "?") + q
    hdrs = dict(headers or {})
    if form is not None:
        body = urllib.parse.urlencode(form).encode()
        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
    if isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        try:
            conn.connect()
        except ConnectionRefusedError:
            raise Refused("connection to 127.0.0.1:%d refused; a socket is %sin LISTEN state "
                          "on that port" % (port, "" if listening(port) else "NOT "))
        try:
            conn.request(method, path, body=body, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError):
            # The server answered (e.g. 413) and closed before reading the whole body:
            # the answer may still be readable.
            pass
        r = conn.getresponse()
        data = r.read() if method != "HEAD" else b""
        return Resp(r.status, r.reason, r.getheaders(), data)
    finally:
        conn.close()


# ---------------------------------------------------------------- servers


class Server(object):
    """A running single-node server. kind is 'ours' or 'ref'."""

    def __init__(self, kind, name=None, extra_args=None):
        self.kind = kind
        self.name = name or ("node0" if kind == "ours" else "ref0")
        self.client_port = free_port()
        self.peer_port = free_port()
        self.dir = tmpdir(kind)
        self.data_dir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "server.log")
        self.extra_args = list(extra_args or [])
        self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.client_port

    @property
    def peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_port

    def argv(self):
        if self.kind == "ours":
            return [OURS_BIN, "-n", self.name, "-d", self.data_dir,
                    "-c", "127.0.0.1:%d" % self.client_port,
                    "-s", "127.0.0.1:%d" % self.peer_port] + self.extra_args
        return [REF_BIN, "--enable-v2=true", "--name", self.name, "--data-dir", self.data_dir,
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", "%s=%s" % (self.name, self.peer_url)] + self.extra_args

    def start(self, timeout=30.0, attempts=5):
        """Start and wait until ready. A port found free by free_port() can be taken by
        someone else before the server binds it: the server then exits at once saying
        "address already in use", and we start it again on other ports (fresh data dir)."""
        for attempt in range(1, attempts + 1):
            log = open(self.log_path, "wb")
            self.proc = track(subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, cwd=self.dir))
            log.close()
            try:
                self.wait_ready(timeout)
                return self
            except RuntimeError:
                clash = (self.proc.poll() is not None
                         and "address already in use" in self.log_tail(200).lower())
                if not clash or attempt == attempts:
                    raise
            print("[harness] %s server: port %d or %d was taken before it could bind; "
                  "retrying on other ports (attempt %d of %d)" % (
                      self.kind, self.client_port, self.peer_port, attempt + 1, attempts),
                  flush=True)
            self.client_port = free_port()
            self.peer_port = free_port()
            self.data_dir = os.path.join(self.dir, "data-%d" % (attempt + 1))
        raise RuntimeError("unreachable")

    def wait_ready(self, timeout=30.0):
        """Ready = /v2/keys answers, /version has a decided cluster version, and the store
        index has not moved for 1 s (both servers write internal entries at start-up)."""
        deadline = time.time() + timeout
        last_idx, stable_since = None, None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s; log:\n%s" % (
                    self.kind, self.proc.returncode, self.log_tail()))
            try:
                v = request(self.client_port, "GET", "/version", timeout=2)
                ok_version = v.status == 200 and "not_decided" not in v.text()
                r = request(self.client_port, "GET", "/v2/keys/", timeout=2)
                idx = r.header("X-Etcd-Index")
                if ok_version and r.status == 200 and idx is not None:
                    if idx != last_idx:
                        last_idx, stable_since = idx, time.time()
                    elif time.time() - stable_since >= 1.0:
                        return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        raise RuntimeError("%s not ready after %ss; log:\n%s" % (self.kind, timeout, self.log_tail()))

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def died(self):
        """None while running; else a description with the exit status and the log tail."""
        if self.proc is None or self.proc.poll() is None:
            return None
        rc = self.proc.returncode
        how = ("killed by signal %d" % -rc) if rc < 0 else ("exit status %d" % rc)
        return "%s server (pid %d) is gone: %s; last lines of its log:\n%s" % (
            self.kind, self.proc.pid, how, self.log_tail(40))

    def req(self, method, path, **kw):
        return request(self.client_port, method, path, **kw)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


# ---------------------------------------------------------------- reporting


def check_alive(reporter, servers, when="at the end"):
    """One check per server: still running. Returns False if one died."""
    ok = True
    for s in servers:
        d = s.died()
        reporter.check("%s server still running %s" % (s.kind, when), d is None, d or "")
        ok = ok and d is None
    return ok


class ServerDied(Exception):
    pass


class Reporter(object):
    """One line per check: PASS / FAIL / INFO (report-only, counted as skipped)."""

    def __init__(self, section):
        self.section = section
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.failures = []

    def ok(self, name, detail=None):
        self.passed += 1
        print("PASS  %s%s" % (name, (" - " + detail) if detail else ""), flush=True)

    def fail(self, name, detail=""):
        self.failed += 1
        self.failures.append(name)
        print("FAIL  %s" % name, flush=True)
        if detail:
            for line in detail.rstrip("\n").split("\n"):
                print("      | " + line, flush=True)

    def known(self, name, reason, detail=""):
        """A difference already reported as a server bug (listed in the script's KNOWN_BUGS
        with its reason). Printed with its diff; fails the run only with INTEROP_STRICT=1."""
        if os.environ.get("INTEROP_STRICT") == "1":
            self.fail(name + "  [known bug: %s]" % reason, detail)
            return
        self.skipped += 1
        print("XFAIL %s  [known bug: %s]" % (name, reason), flush=True)
        if detail:
            for line in detail.rstrip("\n").split("\n"):
                print("      | " + line, flush=True)

    def report_only(self, name, good, detail=""):
        """A check that must not fail the run (feature not implemented yet)."""
        self.skipped += 1
        print("%s  %s (report only)" % ("INFO" if good else "XFAIL", name), flush=True)
        if detail and not good:
            for line in detail.rstrip("\n").split("\n"):
                print("      | " + line, flush=True)

    def check(self, name, cond, detail=""):
        if cond:
            self.ok(name)
        else:
            self.fail(name, detail)
        return cond

    def finish(self):
        print("[%s] %d passed, %d failed, %d skipped" % (
            self.section, self.passed, self.failed, self.skipped), flush=True)
        print("SUMMARY passed=%d failed=%d skipped=%d" % (self.passed, self.failed, self.skipped),
              flush=True)
        return 1 if self.failed else 0


def pretty(obj):
    return json.dumps(obj, indent=1, sort_keys=False, ensure_ascii=False)


def unified(a, b, la="etcd 3.4", lb="ours"):
    import difflib
    a_lines = a.splitlines() if isinstance(a, str) else pretty(a).splitlines()
    b_lines = b.splitlines() if isinstance(b, str) else pretty(b).splitlines()
    return "\n".join(difflib.unified_diff(a_lines, b_lines, la, lb, lineterm="", n=2))


# ---------------------------------------------------------------- normalization

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?\d+(\.\d+)?(s|ms|µs|us|ns)$")
INORDER_KEY = re.compile(r"/(\d{20})$")


class Ctx(object):
    """Per-server state: base index, captured variables, substitutions."""

    def __init__(self, server):
        self.s = server
        self.base = None
        self.shifts = []  # (first raw index, base) pieces added by realign()
        self.vars = {}
        self.subst = {}  # literal -> placeholder (ids, urls, ports, names)

    def setup(self):
        """Base index (the next write) and placeholders for this server's identity."""
        r = self.s.req("GET", "/v2/keys/")
        self.base = int(r.header("x-etcd-index")) + 1
        m = self.s.req("GET", "/v2/members").json()["members"][0]
        self.vars["memberid"] = m["id"]
        self.vars["peerport"] = self.s.peer_port
        self.vars["url"] = self.s.url
        self.subst.update({
            self.s.url: "<client-url>", self.s.peer_url: "<peer-url>",
            "127.0.0.1:%d" % self.s.client_port: "<client-addr>",
            "127.0.0.1:%d" % self.s.peer_port: "<peer-addr>",
            m["id"]: "<member-id>", self.s.name: "<name>",
        })
        cid = r.header("x-etcd-cluster-id")
        if cid:
            self.subst[cid] = "<cluster-id>"
        return self

    def norm_index(self, v):
        try:
            n = int(v)
        except (TypeError, ValueError):
            return v
        if n == 0 or self.base is None:
            return n
        base = self.base
        for start, b in self.shifts:
            if n >= start:
                base = b
        d = n - base
        return "I%+d" % d

    def fill(self, text):
        """Replace {var} and {var+N} / {var-N} with this server's captured values."""
        if text is None:
            return None

        def rep(m):
            name, off, pad = m.group(2), m.group(3), m.group(1)
            val = self.base if name == "base" else self.vars[name]
            if not off and not pad:
                return str(val)
            val = int(val) + (int(off) if off else 0)
            return ("%020d" % val) if pad else str(val)
        return re.sub(r"\{(pad:)?(\w+)([+-]\d+)?\}", rep, text)

    def scrub(self, text):
        for lit in sorted(self.subst, key=len, reverse=True):
            text = text.replace(lit, self.subst[lit])
        return text


def norm_json(ctx, obj, sort_nodes=True, key=None):
    if isinstance(obj, dict):
        out = OrderedDict()
        for k, v in obj.items():
            if k in ("modifiedIndex", "createdIndex", "index") and isinstance(v, int):
                out[k] = ctx.norm_index(v)
            elif k in ("expiration", "startTime") and isinstance(v, str) and RFC3339_UTC.match(v):
                out[k] = "<RFC3339 UTC>"
            elif k == "uptime" and isinstance(v, str) and GO_DURATION.match(v):
                out[k] = "<duration>"
            elif k == "key" and isinstance(v, str) and INORDER_KEY.search(v):
                m = INORDER_KEY.search(v)
                out[k] = v[:m.start(1)] + "<%s>" % ctx.norm_index(int(m.group(1)))
            elif k == "cause" and isinstance(v, str) and "history has been cleared" in v:
                out[k] = re.sub(r"\[(\d+)/(\d+)\]", lambda m: "[%s/%s]" % (
                    ctx.norm_index(int(m.group(1))), ctx.norm_index(int(m.group(2)))), v)
            elif k == "cause" and isinstance(v, str) and obj.get("errorCode") == 101:
                out[k] = re.sub(r"\[(\d+) != (\d+)\]", lambda m: "[%s != %s]" % (
                    ctx.norm_index(int(m.group(1))), ctx.norm_index(int(m.group(2)))), v)
            elif k == "nodes" and isinstance(v, list):
                items = [norm_json(ctx, x, sort_nodes) for x in v]
                if sort_nodes:
                    items.sort(key=lambda n: str(n.get("key", "")) if isinstance(n, dict) else "")
                out[k] = items
            else:
                out[k] = norm_json(ctx, v, sort_nodes, k)
        return out
    if isinstance(obj, list):
        return [norm_json(ctx, x, sort_nodes) for x in obj]
    if isinstance(obj, str):
        return ctx.scrub(obj)
    return obj


def field_order(obj, acc=None):
    """The key order of every object, by set of keys, to compare Go struct field order
    between objects that have the same fields."""
    if acc is None:
        acc = {}
    if isinstance(obj, dict):
        acc.setdefault(frozenset(obj.keys()), list(obj.keys()))
        for v in obj.values():
            field_order(v, acc)
    elif isinstance(obj, list):
        for v in obj:
            field_order(v, acc)
    return acc


def equal(a, b, key=None):
    if key == "ttl" and isinstance(a, int) and isinstance(b, int):
        return abs(a - b) <= 1
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a.keys()) != list(b.keys()) and set(a.keys()) != set(b.keys()):
            return False
        return all(equal(a[k], b[k], k) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal(x, y, key) for x, y in zip(a, b))
    return a == b


