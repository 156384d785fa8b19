#!/usr/bin/env python3
"""python-etcd's OWN integration tests (from its PyPI sdist) against our binary.

Usage: pyetcd_upstream.py <python-etcd sdist .tar.gz>   (run with the venv's python)

The sdist's tests start servers through src/etcd/tests/integration/helpers.py with etcd 2.x
flags (-name, -data-dir, -listen-client-urls, -initial-cluster ...), finding `etcd` on PATH.
We run them twice, in parallel, from two extracted copies:
* with our target/debug/etcd as `etcd` (a symlink in a temp dir put first on PATH);
* with etcd 3.4 as the control (a wrapper adding --enable-v2=true, which 3.4 needs).
A test that passes on the control and fails on ours is a FAIL; one that fails on the control
too is listed as INFO (python-etcd 0.4.5 vs 2.3+ servers), not counted.

Adaptations of the copies (listed so nobody wonders):
* the fixed ports 6001-6004 / 8001 are moved to free port blocks (the machine may be shared);
* helpers.py: the fixed 2 s sleep after starting a node becomes "wait until its client port
  accepts connections" (max 20 s); the 2 s pause after killing a node stays when a test
  kills one (kill_one) and is dropped when the teardown stops them all (stop);
* `nose` (only nose.tools.nottest is used) and `OpenSSL` (only used by the TLS fixtures)
  are stubbed, so neither has to be installed; nose does not run on Python 3.11 anyway.
Excluded: test_ssl (needs pyOpenSSL-made fixtures and TLS flags; TLS is covered by our own
tests) and the unit tests (they mock the network and never reach a server).
Auth tests (etcd/tests/test_auth.py) are report-only while our server does not serve
/v2/auth, like the other auth sections.
"""

import os
import re
import signal
import subprocess
import sys
import tarfile
import time

import harness as H

R = H.Reporter("python-etcd upstream tests")
MODULES = ["etcd.tests.integration.test_simple", "etcd.tests.test_auth"]
EXCLUDED = {
    "etcd.tests.integration.test_ssl": "needs pyOpenSSL-generated CA/certs and TLS flags "
                                       "outside the v2 contract under test",
}
TIMEOUT = 300

RUNNER = r'''
import sys, unittest
class Result(unittest.TextTestResult):
    def _out(self, test, outcome):
        sys.__stdout__.write("RESULT %s %s\n" % (test.id(), outcome)); sys.__stdout__.flush()
    def addSuccess(self, test):
        super().addSuccess(test); self._out(test, "ok")
    def addFailure(self, test, err):
        super().addFailure(test, err); self._out(test, "FAIL")
    def addError(self, test, err):
        super().addError(test, err)
        self._out(test, "ERROR")
    def addSkip(self, test, reason):
        super().addSkip(test, reason); self._out(test, "skip")
suite = unittest.defaultTestLoader.loadTestsFromNames(sys.argv[1:])
r = unittest.TextTestRunner(verbosity=1, resultclass=Result, stream=sys.stderr).run(suite)
'''

HELPER_WAIT = '''
        import socket as _s
        _deadline = time.time() + 20
        while time.time() < _deadline and daemon.poll() is None:
            try:
                _s.create_connection(("127.0.0.1", self.port_range_start + slot), 0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.3)
'''


def prepare(sdist, kind, binary_argv):
    """Extract a copy, patch ports and helpers, make the PATH dir. Returns (src, env)."""
    root = H.tmpdir("pyup-" + kind)
    with tarfile.open(sdist) as t:
        t.extractall(root)
    top = [d for d in os.listdir(root) if d.startswith("python-etcd")][0]
    src = os.path.join(root, top, "src")
    client0 = H.free_port_block(4)
    peer0 = H.free_port_block(3)
    ports = {"6001": client0, "6002": client0 + 1, "6003": client0 + 2, "6004": client0 + 3,
             "8001": peer0}
    for rel in ("etcd/tests/integration/test_simple.py", "etcd/tests/test_auth.py"):
        p = os.path.join(src, rel)
        text = open(p).read()
        text = re.sub(r"\b(600[1-4]|8001)\b", lambda m: str(ports[m.group(1)]), text)
        open(p, "w").write(text)
    hp = os.path.join(src, "etcd/tests/integration/helpers.py")
    text = open(hp).read()
    text = text.replace("        log.debug('Started %d' % daemon.pid)\n", HELPER_WAIT +
                        "        log.debug('Started %d' % daemon.pid)\n", 1)
    text = text.replace("        self.processes[slot] = (directory, daemon)",
                        "        self.processes[slot] = (directory, daemon)")
    # the sleep(2) right after Popen (start) and after kill()
    text = text.replace("        log.debug('Params: %s' % daemon_args)\n        time.sleep(2)\n",
                        "        log.debug('Params: %s' % daemon_args)\n")
    # kill_one() keeps its 2 s pause (the cluster tests kill a node and go on with the
    # others: the survivors need it to elect a leader); stop() (teardown) kills without it
    text = text.replace("        process.kill()\n        time.sleep(2)\n",
                        "        process.kill()\n        process.wait()\n"
                        "        if pause:\n            time.sleep(2)\n")
    text = text.replace("    def kill_one(self, slot):", "    def kill_one(self, slot, pause=True):")
    text = text.replace("            self.kill_one(key)", "            self.kill_one(key, pause=False)")
    open(hp, "w").write(text)
    stubs = os.path.join(root, "stubs")
    os.makedirs(os.path.join(stubs, "nose"))
    os.makedirs(os.path.join(stubs, "OpenSSL"))
    open(os.path.join(stubs, "nose", "__init__.py"), "w").write("")
    open(os.path.join(stubs, "nose", "tools.py"), "w").write(
        "def nottest(f):\n    f.__test__ = False\n    return f\n")
    open(os.path.join(stubs, "OpenSSL", "__init__.py"), "w").write("")
    open(os.path.join(stubs, "OpenSSL", "crypto.py"), "w").write(
        "def __getattr__(name):\n    raise ImportError('OpenSSL stub: TLS tests are excluded')\n")
    open(os.path.join(root, "runner.py"), "w").write(RUNNER)
    bindir = os.path.join(root, "bin")
    os.makedirs(bindir)
    exe = os.path.join(bindir, "etcd")
    if len(binary_argv) == 1:
        os.symlink(binary_argv[0], exe)
    else:
        with open(exe, "w") as f:
            f.write("#!/bin/sh\nexec %s \"$@\"\n" % " ".join(binary_argv))
        os.chmod(exe, 0o755)
    tmp = os.path.join(root, "tmp")
    os.makedirs(tmp)
    env = dict(os.environ)
    env.update({"PATH": bindir + os.pathsep + env.get("PATH", ""),
                "PYTHONPATH": os.pathsep.join([src, stubs]), "TMPDIR": tmp,
                "PYTHONWARNINGS": "ignore"})
    return root, src, env, ports


def start(kind, sdist, argv):
    root, src, env, ports = prepare(sdist, kind, argv)
    log = open(os.path.join(root, "run.log"), "w+")
    p = H.track(subprocess.Popen([sys.executable, os.path.join(root, "runner.py")] + MODULES,
                                 cwd=src, env=env, stdout=subprocess.PIPE, stderr=log,
                                 stdin=subprocess.DEVNULL, start_new_session=True, text=True), group=True)
    return {"proc": p, "log": log, "root": root, "ports": ports}


def finish(run, deadline):
    p = run["proc"]
    try:
        out, _ = p.communicate(timeout=max(1, deadline - time.time()))
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        out = ""
    # the tests' own etcd children share the process group: kill leftovers by group id
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass
    if timed_out:
        out, _ = p.communicate()
    results = {}
    for line in (out or "").splitlines():
        m = re.match(r"^RESULT (\S+) (\S+)$", line)
        if m:
            results[m.group(1)] = m.group(2)
    run["log"].seek(0)
    return results, run["log"].read(), timed_out


def failure_text(log, test_id):
    """The unittest traceback block of one test from the runner's stderr."""
    name = test_id.rsplit(".", 1)[1]
    blocks = re.split(r"\n={50,}\n", "\n" + log)
    for b in blocks:
        head = b.split("\n", 1)[0]
        if name in head and test_id.rsplit(".", 2)[1] in head:
            parts = re.split(r"\n-{50,}\n", b)
            body = parts[1] if len(parts) > 1 else parts[0]
            return "\n".join(body.strip().split("\n")[-6:])
    return ""


def main():
    sdist = sys.argv[1]
    r = None
    srv = H.Server("ours").start()
    resp = srv.req("GET", "/v2/auth/enable")
    try:
        auth_live = resp.status == 200 and "enabled" in resp.json()
    except ValueError:
        auth_live = False
    srv.stop()
    for mod, why in EXCLUDED.items():
        print("EXCLUDED %s: %s" % (mod, why), flush=True)
    t0 = time.time()
    runs = {"ours": start("ours", sdist, [H.OURS_BIN]),
            "ref": start("ref", sdist, [H.REF_BIN, "--enable-v2=true"])}
    deadline = time.time() + TIMEOUT
    res = {k: finish(v, deadline) for k, v in runs.items()}
    print("python-etcd upstream integration tests ran in %.0fs (ours and 3.4 in parallel)"
          % (time.time() - t0), flush=True)
    ours, ours_log, ours_to = res["ours"]
    ref, ref_log, ref_to = res["ref"]
    if ours_to or ref_to:
        R.fail("upstream test run finished within %ds" % TIMEOUT,
               "timed out: %s" % [k for k in res if res[k][2]])
    if not ref:
        R.fail("control run on etcd 3.4 produced results", ref_log[-3000:])
    for test_id in sorted(set(ours) | set(ref)):
        o, c = ours.get(test_id, "missing"), ref.get(test_id, "missing")
        short = test_id.replace("etcd.tests.", "")
        is_auth = ".test_auth." in test_id
        if c != "ok":
            R.report_only("upstream %s  [%s on etcd 3.4 too; ours: %s]" % (short, c, o), True)
            print("      | 3.4: " + failure_text(ref_log, test_id).replace("\n", "\n      | 3.4: "),
                  flush=True)
            continue
        if is_auth and not auth_live:
            R.report_only("upstream %s  (ours: %s)" % (short, o), o == "ok",
                          failure_text(ours_log, test_id))
            continue
        if o == "ok":
            R.ok("upstream " + short)
        else:
            R.fail("upstream %s  [ours: %s, 3.4: ok]" % (short, o), failure_text(ours_log, test_id))
    return R.finish()


if __name__ == "__main__":
    sys.exit(main())
