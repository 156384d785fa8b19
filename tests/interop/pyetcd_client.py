#!/usr/bin/env python3
"""python-etcd (PyPI, 0.4.x) client API against our server, with etcd 3.4 as the control.

Run with the venv's python (python-etcd installed). Every check runs against etcd 3.4 first
and then against ours, each time with fresh clients and its own key prefix:
* passes on both            -> PASS
* passes on 3.4, not ours   -> FAIL (our server breaks the client)
* fails on 3.4              -> FAIL as well: the check itself is wrong (control failed)
The auth checks are report-only while our server does not serve /v2/auth, and a check that
fails on 3.4 too there is an incompatibility of python-etcd with 2.3+/3.4 servers (INFO).
"""

import re
import sys
import threading
import time
import traceback

import etcd
from etcd import auth as etcd_auth

import harness as H

R = H.Reporter("python-etcd client")
CHECKS = []
AUTH_CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def auth_check(fn):
    AUTH_CHECKS.append(fn)
    return fn


class Env(object):
    def __init__(self, server):
        self.s = server
        self.port = server.client_port
        self.url = server.url

    def client(self, **kw):
        return etcd.Client(host="127.0.0.1", port=self.port, **kw)


def expect(exc, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except exc:
        return
    except Exception as e:
        raise AssertionError("expected %s, got %r" % (exc.__name__, e))
    raise AssertionError("expected %s, nothing raised" % exc.__name__)


def eq(a, b, what=""):
    assert a == b, "%s: %r != %r" % (what, a, b)


# ------------------------------------------------------------------ checks


@check
def version_info(env):
    c = env.client()
    assert re.match(r"^\d+\.\d+\.\d+$", c.version), c.version
    assert re.match(r"^\d+\.\d+\.\d+$", c.cluster_version), c.cluster_version


@check
def write_read(env):
    c = env.client()
    r = c.write("/py/wr/k", "v")
    eq(r.action, "set", "action")
    eq(r.key, "/py/wr/k", "key")
    eq(r.value, "v", "value")
    assert isinstance(r.modifiedIndex, int) and r.modifiedIndex == r.createdIndex
    eq(r.etcd_index, r.modifiedIndex, "X-Etcd-Index of a write")
    assert r.raft_index and r.raft_index > 0, "X-Raft-Index %r" % r.raft_index
    g = c.read("/py/wr/k")
    eq(g.action, "get", "action")
    eq(g.value, "v", "value")
    eq(g.modifiedIndex, r.modifiedIndex, "modifiedIndex")
    w2 = c.write("/py/wr/k", "v2")
    eq(w2._prev_node.value, "v", "prevNode.value")


@check
def set_get_contains_delete(env):
    c = env.client()
    expect(etcd.EtcdKeyNotFound, c.get, "/py/sgd")
    assert "/py/sgd" not in c
    eq(c.set("/py/sgd", "x").value, "x", "set")
    assert "/py/sgd" in c
    eq(c.get("/py/sgd").value, "x", "get")
    d = c.delete("/py/sgd")
    eq(d.action, "delete", "action")
    eq(d.key, "/py/sgd", "key")
    assert "/py/sgd" not in c
    expect(etcd.EtcdKeyNotFound, c.read, "/py/sgd")


@check
def update_object(env):
    c = env.client()
    c.set("/py/upd", 3)
    r = c.get("/py/upd")
    r.value = int(r.value) + 3
    n = c.update(r)
    eq(n.value, "6", "updated value")
    eq(n.action, "compareAndSwap", "action")
    expect(ValueError, c.update, r)  # stale prevIndex


@check
def test_and_set(env):
    c = env.client()
    c.set("/py/tas", "old")
    r = c.test_and_set("/py/tas", "new", "old")
    eq(r.value, "new", "value")
    expect(ValueError, c.test_and_set, "/py/tas", "x", "old")
    expect(etcd.EtcdCompareFailed, c.test_and_set, "/py/tas", "x", "old")


@check
def prev_exist(env):
    c = env.client()
    r = c.write("/py/pe", "a", prevExist=False)
    eq(r.action, "create", "action")
    expect(etcd.EtcdAlreadyExist, c.write, "/py/pe", "b", prevExist=False)
    r = c.write("/py/pe", "b", prevExist=True)
    eq(r.action, "update", "action")
    expect(etcd.EtcdKeyNotFound, c.write, "/py/pe-missing", "b", prevExist=True)


@check
def prev_value_prev_index(env):
    c = env.client()
    r = c.write("/py/pv", "a")
    r2 = c.write("/py/pv", "b", prevValue="a")
    eq(r2.action, "compareAndSwap", "action")
    expect(etcd.EtcdCompareFailed, c.write, "/py/pv", "c", prevValue="a")
    r3 = c.write("/py/pv", "c", prevIndex=r2.modifiedIndex)
    eq(r3.value, "c", "value")
    expect(etcd.EtcdCompareFailed, c.write, "/py/pv", "d", prevIndex=r.modifiedIndex)
    expect(etcd.EtcdCompareFailed, c.delete, "/py/pv", prevValue="nope")
    expect(etcd.EtcdCompareFailed, c.delete, "/py/pv", prevIndex=r.modifiedIndex)
    d = c.delete("/py/pv", prevIndex=r3.modifiedIndex)
    eq(d.action, "compareAndDelete", "action")


@check
def directories(env):
    c = env.client()
    r = c.write("/py/dir", None, dir=True)
    assert r.dir, "dir flag"
    expect(etcd.EtcdNotFile, c.write, "/py/dir", None, dir=True)
    expect(etcd.EtcdAlreadyExist, c.write, "/py/dir", None, dir=True, prevExist=False)
    expect(etcd.EtcdNotFile, c.write, "/py/dir", "value")
    c.write("/py/dir/a", "1")
    c.write("/py/dir/sub/b", "2")
    c.write("/py/dir/_hidden", "h")
    top = c.read("/py/dir")
    eq(sorted(ch.key for ch in top.children), ["/py/dir/a", "/py/dir/sub"], "children")
    rec = c.read("/py/dir", recursive=True)
    eq(sorted(l.value for l in rec.leaves), ["1", "2"], "leaves")
    c.write("/py/key", "k")
    expect(etcd.EtcdNotDir, c.write, "/py/key/under", "x")
    expect(etcd.EtcdNotFile, c.delete, "/py/dir")
    expect(etcd.EtcdDirNotEmpty, c.delete, "/py/dir", dir=True)
    expect(etcd.EtcdRootReadOnly, c.delete, "/", recursive=True)
    d = c.delete("/py/dir", recursive=True)
    eq(d.action, "delete", "action")
    assert d.dir, "deleted node is a dir"
    c.write("/py/emptydir", None, dir=True)
    c.delete("/py/emptydir", dir=True)
    expect(etcd.EtcdKeyNotFound, c.read, "/py/emptydir")


@check
def empty_dir_read(env):
    c = env.client()
    c.write("/py/ed", None, dir=True)
    r = c.read("/py/ed")
    assert r.dir
    eq(r._children, [], "_children")
    # python-etcd's children/leaves yield the directory itself when it has no children
    eq([ch.key for ch in r.children], ["/py/ed"], "children of an empty dir")


@check
def ttl_and_refresh(env):
    c = env.client()
    r = c.write("/py/ttl", "v", ttl=100)
    assert abs(r.ttl - 100) <= 1, r.ttl
    assert r.expiration, "expiration"
    r = c.refresh("/py/ttl", ttl=200)
    assert abs(r.ttl - 200) <= 1, r.ttl
    eq(r.value, "v", "value kept by refresh")
    r = c.write("/py/ttl", "v2")
    eq(r.ttl, None, "ttl removed by a set without ttl")
    expect(etcd.EtcdValueError, c.write, "/py/ttl", "v", ttl="abc")
    expect(etcd.EtcdKeyNotFound, c.refresh, "/py/ttl-missing", ttl=10)


@check
def ttl_expiry(env):
    c = env.client()
    c.write("/py/exp", "v", ttl=1)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            c.read("/py/exp")
        except etcd.EtcdKeyNotFound:
            return
        time.sleep(0.2)
    raise AssertionError("key with ttl=1 still there after 10 s")


@check
def directory_ttl_update(env):
    # python-etcd's own integration test test_directory_ttl_update
    c = env.client()
    c.write("/py/dttl", None, dir=True, ttl=30)
    res = c.write("/py/dttl", None, dir=True, ttl=31, prevExist=True)
    eq(res.ttl, 31, "ttl")
    res = c.get("/py/dttl")
    res.ttl = 120
    new_res = c.update(res)
    eq(new_res.ttl, 120, "ttl via update()")


@check
def in_order_append(env):
    c = env.client()
    keys = [c.write("/py/queue", "job%d" % i, append=True).key for i in range(3)]
    for k in keys:
        assert re.match(r"^/py/queue/\d{20}$", k), k
    eq(keys, sorted(keys), "increasing names")
    r = c.read("/py/queue", sorted=True)
    eq([ch.value for ch in r.children], ["job0", "job1", "job2"], "sorted children")
    r = c.write("/py/queue", "ttljob", append=True, ttl=100)
    assert abs(r.ttl - 100) <= 1


@check
def watch_with_index(env):
    c = env.client()
    first = c.set("/py/wi", "v0").modifiedIndex
    c.set("/py/wi", "v1")
    c.set("/py/wi", "v2")
    eq(c.watch("/py/wi", index=first).value, "v0", "watch index=first")
    eq(c.watch("/py/wi", index=first + 1).value, "v1", "watch index=first+1")
    ev = c.watch("/py/wi", index=first + 2)
    eq(ev.value, "v2", "watch index=first+2")
    eq(ev._prev_node.value, "v1", "prevNode in watch event")


@check
def watch_live(env):
    c = env.client()
    old = c.set("/py/wl", "old").modifiedIndex
    watchers0 = c.store_stats["watchers"]
    out = {}

    def watcher():
        try:
            # index= the event after "old": a set that lands before the watch is in place
            # is still delivered (from the history) instead of being missed
            out["ev"] = env.client().watch("/py/wl", index=old + 1, timeout=10)
        except Exception as e:
            out["err"] = e
    t = threading.Thread(target=watcher)
    t.daemon = True
    t.start()
    # the watch is live once the server counts it (bounded; waitIndex covers a late one)
    deadline = time.time() + 10
    while (t.is_alive() and c.store_stats["watchers"] <= watchers0
           and time.time() < deadline):
        time.sleep(0.02)
    c.set("/py/wl", "new")
    t.join(12)
    assert "ev" in out, "no event: %r" % out.get("err")
    eq(out["ev"].value, "new", "value")
    eq(out["ev"].action, "set", "action")


@check
def watch_timeout(env):
    c = env.client()
    expect(etcd.EtcdWatchTimedOut, c.watch, "/py/wt", timeout=0.5)


@check
def eternal_watch(env):
    c = env.client()
    first = c.set("/py/ew", "e0").modifiedIndex
    c.set("/py/ew", "e1")
    c.set("/py/ew", "e2")
    gen = c.eternal_watch("/py/ew", index=first)
    eq([next(gen).value for _ in range(3)], ["e0", "e1", "e2"], "events")


@check
def recursive_watch(env):
    c = env.client()
    first = c.set("/py/rw/a", "1").modifiedIndex
    c.set("/py/rw/b/c", "2")
    ev = c.watch("/py/rw", index=first + 1, recursive=True)
    eq(ev.key, "/py/rw/b/c", "key")
    expect(etcd.EtcdWatchTimedOut, c.watch, "/py/rw", index=first + 1, timeout=0.5)  # not recursive


@check
def recursive_sorted_read(env):
    c = env.client()
    for k in ("b", "a/z", "a/y", "c", "_h"):
        c.set("/py/tree/" + k, k)
    r = c.read("/py/tree", recursive=True, sorted=True)
    eq([l.key for l in r.leaves], ["/py/tree/a/y", "/py/tree/a/z", "/py/tree/b", "/py/tree/c"],
       "leaves in order")
    r = c.get("/py/tree")
    eq(sorted(ch.key for ch in r.children), ["/py/tree/a", "/py/tree/b", "/py/tree/c"], "children")


@check
def pop(env):
    c = env.client()
    c.set("/py/pop", "val")
    eq(c.pop("/py/pop").value, "val", "pop returns the previous value")


@check
def members_leader_machines(env):
    c = env.client()
    m = c.members
    eq(len(m), 1, "one member")
    mid, member = list(m.items())[0]
    eq(sorted(member.keys()), ["clientURLs", "id", "name", "peerURLs"], "member fields")
    eq(member["id"], mid, "id")
    eq(member["clientURLs"], [env.url], "clientURLs")
    eq(member["peerURLs"], [env.s.peer_url], "peerURLs")
    eq(c.leader["clientURLs"], [env.url], "leader clientURLs")
    eq(c.machines, [env.url], "machines")


@check
def stats(env):
    c = env.client()
    s = c.stats
    for k in ("name", "id", "state", "startTime", "leaderInfo"):
        assert k in s, "stats/self lacks %s: %r" % (k, s)
    eq(s["state"], "StateLeader", "state")
    eq(set(c.store_stats.keys()) >= {"getsSuccess", "setsSuccess", "watchers", "expireCount"},
       True, "store stats keys")
    ls = c.leader_stats
    eq(sorted(ls.keys()), ["followers", "leader"], "leader stats keys")
    eq(ls["leader"], s["id"], "leader id")


@check
def reconnect_clients(env):
    c = env.client(allow_reconnect=True)
    eq(c.set("/py/rc", "x").value, "x", "allow_reconnect client")
    c2 = etcd.Client(host=(("127.0.0.1", env.port),), allow_reconnect=True)
    eq(c2.get("/py/rc").value, "x", "host tuple client")
    c3 = etcd.Client(host="127.0.0.1", port=env.port, allow_redirect=False)
    eq(c3.get("/py/rc").value, "x", "no-redirect client")


@check
def lock_recipe(env):
    c = env.client()
    lock = etcd.Lock(c, "pylock")
    assert lock.acquire(blocking=True, lock_ttl=60), "acquire"
    assert lock.is_acquired, "is_acquired"
    other = etcd.Lock(env.client(), "pylock")
    assert not other.acquire(blocking=False, lock_ttl=60), "second lock must not be acquired"
    lock.release()
    assert not lock.is_acquired, "released"
    assert other.acquire(blocking=True, lock_ttl=60, timeout=5), "second lock after release"
    other.release()


@check
def quoted_keys(env):
    c = env.client()
    c.set("/py/sp ace/\u00e9t\u00e9", "u")
    eq(c.get("/py/sp ace/\u00e9t\u00e9").value, "u", "value")
    r = c.read("/py/sp ace")
    eq([ch.key for ch in r.children], ["/py/sp ace/\u00e9t\u00e9"], "child key")


# ------------------------------------------------------------------ auth (report-only until live)


@auth_check
def auth_enable_enforce(env):
    c = env.client()
    u = etcd_auth.EtcdUser(c, "root")
    u.password = "rootpw"
    u.write()
    r = etcd_auth.EtcdRole(c, "pyrole")
    r.grant("/py/auth/*", "RW")
    r.write()
    r2 = etcd_auth.EtcdRole(c, "pyrole")
    r2.read()
    eq(r2.acls, {"/py/auth/*": "RW"}, "acls")
    u2 = etcd_auth.EtcdUser(c, "pyuser")
    u2.password = "pw"
    u2.roles = ["pyrole"]
    u2.write()
    rc = etcd.Client(host="127.0.0.1", port=env.port, username="root", password="rootpw")
    a = etcd_auth.Auth(rc)
    eq(a.active, False, "auth off")
    a.active = True
    try:
        assert a.active, "auth enabled"
        # enabling creates role guest with /* read-write: remove it so anonymous is denied
        etcd_auth.EtcdRole(rc, "guest").delete()
        uc = etcd.Client(host="127.0.0.1", port=env.port, username="pyuser", password="pw")
        uc.set("/py/auth/x", "1")
        expect(etcd.EtcdInsufficientPermissions, uc.set, "/py/other", "1")
        expect(etcd.EtcdInsufficientPermissions, c.get, "/py/auth/x")
        bad = etcd.Client(host="127.0.0.1", port=env.port, username="pyuser", password="no")
        expect(etcd.EtcdInsufficientPermissions, bad.get, "/py/auth/x")
    finally:
        a.active = False
    etcd_auth.EtcdUser(c, "pyuser").delete()
    etcd_auth.EtcdRole(c, "pyrole").delete()


@auth_check
def auth_user_read(env):
    # GET /v2/auth/users/<u> answers role objects from 2.3 on; python-etcd expects names
    c = env.client()
    u = etcd_auth.EtcdUser(c, "pyreader")
    u.password = "pw"
    u.roles = ["root"]
    u.write()
    u2 = etcd_auth.EtcdUser(c, "pyreader")
    u2.read()
    eq(u2.roles, {"root"}, "roles")


@auth_check
def auth_names(env):
    # python-etcd expects the 2.2 listing shape ({"users":["a"]}); 2.3+ servers answer objects
    c = env.client()
    eq(sorted(etcd_auth.EtcdUser(c, "root").names), ["pyreader", "root"], "user names")


# ------------------------------------------------------------------ driver


def run_one(fn, env):
    try:
        fn(env)
        return None
    except Exception as e:
        return "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc(limit=4))


def main():
    ref = H.Server("ref").start()
    ours = H.Server("ours").start()
    print("python-etcd %s; 3.4 on :%d, ours on :%d" % (
        getattr(etcd, "__version__", "?"), ref.client_port, ours.client_port), flush=True)
    r = ours.req("GET", "/v2/auth/enable")
    try:
        auth_live = r.status == 200 and "enabled" in r.json()
    except ValueError:
        auth_live = False
    envs = (Env(ref), Env(ours))
    for fn in CHECKS:
        ref_err, ours_err = run_one(fn, envs[0]), run_one(fn, envs[1])
        name = "python-etcd: " + fn.__name__
        if ref_err:
            R.fail(name + "  [control failed on etcd 3.4: the check is wrong]", ref_err)
        elif ours_err:
            R.fail(name, ours_err)
        else:
            R.ok(name)
    print("--- auth: %s" % ("our server serves /v2/auth: checks count" if auth_live else
                            "our server does not serve /v2/auth yet: report only"), flush=True)
    for fn in AUTH_CHECKS:
        ref_err, ours_err = run_one(fn, envs[0]), run_one(fn, envs[1])
        name = "python-etcd auth: " + fn.__name__
        if ref_err:
            R.report_only(name + "  [fails on etcd 3.4 too: python-etcd vs 2.3+ servers]",
                          True, "")
            print("      | 3.4: " + ref_err.split("\n")[0], flush=True)
        elif not auth_live:
            R.report_only(name, ours_err is None, ours_err or "")
        elif ours_err:
            R.fail(name, ours_err)
        else:
            R.ok(name)
    H.check_alive(R, [ref, ours])
    return R.finish()


if __name__ == "__main__":
    sys.exit(main())
