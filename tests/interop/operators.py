#!/usr/bin/env python3
"""Operators' features end to end with real tools: Debian's discovery service
(`discovery.etcd.io`, backed by a node of ours) bootstraps three members from one token and
refuses a fourth; a proxy started from the same token serves etcdctl (v2) and a watch while
a member is killed; a readonly proxy refuses writes.

Every process is started on free loopback ports in temp dirs and killed by PID at exit.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import harness as H

R = H.Reporter("operators")
DISCOVERY_BIN = os.environ.get("INTEROP_DISCOVERY_BIN", shutil.which("discovery.etcd.io")
                               or "/usr/bin/discovery.etcd.io")


class Member(object):
    """One of our processes started with 2.x flags."""

    def __init__(self, name, extra):
        self.name = name
        self.client_port = H.free_port()
        self.peer_port = H.free_port()
        self.dir = H.tmpdir("op-" + name)
        self.extra = list(extra)
        self.proc = None
        self.log_path = os.path.join(self.dir, "server.log")

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.client_port

    @property
    def peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_port

    def argv(self):
        return [H.OURS_BIN, "-v", "--name", self.name,
                "--data-dir", os.path.join(self.dir, "data"),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url] + self.extra

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = H.track(subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=self.dir))
        log.close()
        return self

    def ready(self, timeout=40.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if H.request(self.client_port, "GET", "/v2/keys/", timeout=2).status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def etcdctl(endpoint, *args, timeout=15):
    env = {"ETCDCTL_API": "2", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    p = subprocess.run([H.ETCDCTL, "--endpoints", endpoint] + list(args), env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def main():
    for tool in (DISCOVERY_BIN, H.ETCDCTL, H.OURS_BIN):
        if not os.path.exists(tool):
            R.fail("%s present" % tool)
            return R.finish()

    backend = H.Server("ours", name="registry").start()
    dport = H.free_port()
    dlog = open(os.path.join(backend.dir, "discovery.log"), "wb")
    durl_base = "http://127.0.0.1:%d" % dport
    H.track(subprocess.Popen([DISCOVERY_BIN, "-e", backend.url, "-a", "127.0.0.1:%d" % dport,
                              "-h", durl_base], stdout=dlog, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL))
    dlog.close()
    token = None
    deadline = time.time() + 15
    while time.time() < deadline and token is None:
        try:
            r = H.request(dport, "GET", "/new", params={"size": "3"}, timeout=3)
            if r.status == 200 and r.text().startswith(durl_base + "/"):
                token = r.text().strip()
        except OSError:
            time.sleep(0.2)
    if not R.check("the discovery service hands out a token for size 3", token is not None):
        return R.finish()
    print("token %s" % token, flush=True)

    members = [Member("m%d" % i, ["--discovery", token]) for i in (1, 2, 3)]
    for m in members:
        m.start()
        time.sleep(0.3)
    ok = all(m.ready() for m in members)
    R.check("three members started with one token all become ready", ok,
            "\n".join("%s:\n%s" % (m.name, m.log_tail()) for m in members))
    if not ok:
        return R.finish()

    code, out, err = etcdctl(members[0].url, "member", "list")
    names = sorted(line.split("name=")[1].split()[0] for line in out.splitlines() if "name=" in line)
    R.check("etcdctl member list shows the three members", code == 0 and names == ["m1", "m2", "m3"],
            out + err)
    leaders = [line for line in out.splitlines() if "isLeader=true" in line]
    R.check("one of them leads", len(leaders) == 1, out)

    fourth = Member("m4", ["--discovery", token]).start()
    try:
        rc = fourth.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        rc = None
    R.check("a fourth member exits 1 (the cluster is full)",
            rc == 1 and "the cluster is full" in fourth.log_tail(), "exit %s\n%s" % (rc, fourth.log_tail()))
    fourth.kill()

    # A proxy from the same token.
    proxy = Member("proxy", ["--proxy", "on", "--discovery", token, "--proxy-failure-wait", "1000"])
    proxy.start()
    R.check("a proxy started with the token becomes ready", proxy.ready(), proxy.log_tail())
    code, out, err = etcdctl(proxy.url, "set", "/op/a", "hello")
    R.check("etcdctl set through the proxy", code == 0 and out.strip() == "hello", out + err)
    code, out, err = etcdctl(members[2].url, "get", "/op/a")
    R.check("the member sees the write made through the proxy", code == 0 and out.strip() == "hello",
            out + err)
    code, out, err = etcdctl(proxy.url, "member", "list")
    R.check("etcdctl member list through the proxy", code == 0 and out.count("name=") == 3, out + err)

    # etcdctl watch through the proxy while a member is killed.
    env = {"ETCDCTL_API": "2", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    watch = H.track(subprocess.Popen([H.ETCDCTL, "--endpoints", proxy.url, "watch", "--forever",
                                      "/op/w"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT))
    lines = []
    reader = threading.Thread(target=lambda: [lines.append(l.decode().strip())
                                              for l in iter(watch.stdout.readline, b"")])
    reader.daemon = True
    reader.start()
    time.sleep(0.8)
    code, out, _ = etcdctl(members[0].url, "member", "list")
    leader = next((m for m in members if "name=%s " % m.name in next(
        (l for l in out.splitlines() if "isLeader=true" in l), "")), None)
    victim = next(m for m in members if m is not leader)
    failures = []
    for i in range(8):
        if i == 3:
            victim.kill()
        for _ in range(50):
            code, out, err = etcdctl(proxy.url, "set", "/op/w", "v%d" % i)
            if code == 0:
                break
            time.sleep(0.1)
        else:
            failures.append("v%d: %s" % (i, err))
        time.sleep(0.15)
    R.check("writes through the proxy go on after %s is killed" % victim.name, not failures,
            "\n".join(failures))
    deadline = time.time() + 10
    want = ["v%d" % i for i in range(8)]
    while time.time() < deadline and [l for l in lines if l.startswith("v")][-1:] != want[-1:]:
        time.sleep(0.1)
    watch.kill()
    got = [l for l in lines if l.startswith("v")]
    # etcdctl watch --forever re-watches from the next index after a break: it may miss
    # nothing; it prints each value once.
    R.check("etcdctl watch --forever through the proxy saw every value in order", got == want,
            "got %r" % got)

    ro = Member("ro", ["--proxy", "readonly", "--initial-cluster",
                       ",".join("%s=%s" % (m.name, m.peer_url) for m in members)]).start()
    R.check("a readonly proxy becomes ready", ro.ready(), ro.log_tail())
    r = H.request(ro.client_port, "PUT", "/v2/keys/op/ro", form={"value": "x"})
    R.check("the readonly proxy refuses a write with 501", r.status == 501, "%d %s" % (r.status, r.text()))
    r = H.request(ro.client_port, "GET", "/v2/keys/op/a")
    R.check("the readonly proxy serves reads", r.status == 200 and json.loads(r.text())["node"]["value"] == "hello",
            "%d %s" % (r.status, r.text()))

    for m in members + [proxy, ro]:
        m.kill()
    backend.stop()
    return R.finish()


if __name__ == "__main__":
    sys.exit(main())
