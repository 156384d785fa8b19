#!/usr/bin/env python3
"""Summary tables for bench/compare.sh, bench/compare_cluster.sh and bench/scale.sh.

usage: summarize.py runs RUNS_FILE ETCD_LABEL
       summarize.py scale ETCD_LABEL RESULT.json...

`runs`: RUNS_FILE has one line per etcd-bench run, tab-separated:
round, server (ours|etcd), 1-minute load average, target (`-`, `all`, `leader`,
`follower`), path of the saved etcd-bench table. Prints a markdown table of the
medians over the rounds per server and workload with the ratio ours/etcd, then
one row per run with its load average and req/s per workload.

`scale`: each RESULT.json is one server's result written by bench/scale.sh.
Prints one markdown table, a column per server.
"""
import json
import re
import statistics
import sys

SERVERS = ("etcd", "ours")
TARGETS = {"-": "", "all": "all members", "leader": "leader", "follower": "a follower"}


def parse_table(path):
    """Rows of an etcd-bench table: {workload: dict}."""
    rows = {}
    with open(path) as f:
        for line in f:
            cols = line.split()
            if not cols or cols[0] == "workload":
                continue
            name = cols[0]
            row = {"conns": cols[1]}
            if len(cols) < 10 or cols[2] == "-":
                row["status"] = "unsupported" if "unsupported" in line else "failed"
            else:
                row["status"] = "ok" if cols[3] == "0" else "errors"
                row["errors"] = int(cols[3])
                row["rate"] = None if cols[5] == "-" else float(cols[5])
                row["p50"] = None if cols[6] == "-" else float(cols[6])
                m = re.search(r"\b412=(\d+)", line)
                if m:
                    row["conflicts"] = int(m.group(1))
            rows[name] = row
    return rows


def fmt_rate(v):
    return "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def fmt_ms(v):
    return "-" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}"


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def runs(runs_file, etcd_label):
    records = []
    with open(runs_file) as f:
        for line in f:
            if not line.strip():
                continue
            rnd, server, load, target, path = line.rstrip("\n").split("\t")
            records.append((int(rnd), server, load, target, parse_table(path)))
    if not records:
        print("(no runs)")
        return
    # (target, workload) in first-seen order.
    keys = []
    for _, _, _, target, rows in records:
        for w in rows:
            if (target, w) not in keys:
                keys.append((target, w))
    rounds = max(r for r, *_ in records)
    show_target = any(t != "-" for t, _ in keys)
    label = {"etcd": etcd_label, "ours": "ours"}

    print(f"Medians of {rounds} round(s); req/s > 1 and p50 < 1 favour ours in the ratios.\n")
    head = ["workload"] + (["to"] if show_target else []) + [
        "conns",
        f"{label['etcd']} req/s",
        "ours req/s",
        "ours/etcd",
        f"{label['etcd']} p50 ms",
        "ours p50 ms",
        "p50 ours/etcd",
        "notes",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for target, w in keys:
        med = {}
        notes = []
        conns = "-"
        for s in SERVERS:
            rows = [rs[w] for _, srv, _, t, rs in records if srv == s and t == target and w in rs]
            good = [r for r in rows if r["status"] in ("ok", "errors")]
            bad = sorted({r["status"] for r in rows} - {"ok", "errors"})
            errs = sum(r.get("errors", 0) for r in good)
            if rows:
                conns = rows[0]["conns"]
            if bad:
                notes.append(f"{s}: {', '.join(bad)} in {len(rows) - len(good)} of {len(rows)} runs")
            if errs:
                notes.append(f"{s}: {errs} errors")
            med[s] = {
                "rate": median([r["rate"] for r in good]),
                "p50": median([r["p50"] for r in good]),
                "conflicts": median([r.get("conflicts") for r in good]),
            }
        if any(med[s]["conflicts"] is not None for s in SERVERS):
            c = ", ".join(
                f"{s} {med[s]['conflicts']:,.0f}" for s in SERVERS if med[s]["conflicts"] is not None
            )
            notes.insert(0, f"req/s = successful swaps/s; 412s (median): {c}")
        cells = [w] + ([TARGETS.get(target, target)] if show_target else []) + [
            conns,
            fmt_rate(med["etcd"]["rate"]),
            fmt_rate(med["ours"]["rate"]),
            ratio(med["ours"]["rate"], med["etcd"]["rate"]),
            fmt_ms(med["etcd"]["p50"]),
            fmt_ms(med["ours"]["p50"]),
            ratio(med["ours"]["p50"], med["etcd"]["p50"]),
            "; ".join(notes),
        ]
        print("| " + " | ".join(cells) + " |")

    print("\nEvery run (req/s per workload):\n")
    cols = [f"{w}" + (f" ({TARGETS.get(t, t)})" if show_target else "") for t, w in keys]
    head = ["round", "server", "load avg 1m"] + cols
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    seen_runs = []
    for rnd, server, load, _, _ in records:
        if (rnd, server) not in [(r, s) for r, s, _ in seen_runs]:
            seen_runs.append((rnd, server, load))
    for rnd, server, load in seen_runs:
        cells = [str(rnd), label[server], load]
        for target, w in keys:
            v = "-"
            for r, s, _, t, rs in records:
                if r == rnd and s == server and t == target and w in rs:
                    row = rs[w]
                    v = fmt_rate(row.get("rate")) if row["status"] in ("ok", "errors") else row["status"]
            cells.append(v)
        print("| " + " | ".join(cells) + " |")


def get(d, *path):
    for p in path:
        if not isinstance(d, dict) or d.get(p) is None:
            return None
        d = d[p]
    return d


def scale(etcd_label, files):
    results = []
    for path in files:
        with open(path) as f:
            results.append(json.load(f))
    order = {"etcd": 0, "ours": 1}
    results.sort(key=lambda r: order.get(r["server"], 9))
    label = {"etcd": etcd_label, "ours": "ours"}
    both = {r["server"] for r in results} == {"etcd", "ours"}

    def mb(kb):
        return None if kb is None else kb / 1024

    def num(v, digits=1):
        return "-" if v is None else f"{v:,.{digits}f}"

    metrics = [
        ("load average (1 min) before the load", lambda r: r.get("loadavg"), None, False),
        ("keys written (errors)", lambda r: "{} ({})".format(
            num(get(r, "scale", "load", "ok"), 0), num(get(r, "scale", "load", "errors"), 0)), None, False),
        ("load duration, s", lambda r: get(r, "scale", "load", "secs"), 1, False),
        ("writes/s", lambda r: get(r, "scale", "load", "writes_per_sec"), 0, True),
        ("load write p50 / p99, ms", lambda r: "{} / {}".format(
            num(get(r, "scale", "load", "p50_ms")), num(get(r, "scale", "load", "p99_ms"))), None, False),
        ("**probe max, ms**", lambda r: get(r, "scale", "probe", "max_ms"), 1, True),
        ("probe max started, s into the load", lambda r: get(r, "scale", "probe", "max_at_secs"), 1, False),
        ("probe p99, ms", lambda r: get(r, "scale", "probe", "p99_ms"), 1, True),
        ("probe p50, ms", lambda r: get(r, "scale", "probe", "p50_ms"), 2, True),
        ("probe writes (errors)", lambda r: "{} ({})".format(
            num(get(r, "scale", "probe", "writes"), 0), num(get(r, "scale", "probe", "errors"), 0)), None, False),
        ("VmHWM after the load, MB", lambda r: mb(get(r, "scale", "memory", "hwm_kb")), 0, True),
        ("max VmRSS sampled every 100 ms, MB", lambda r: mb(get(r, "scale", "memory", "max_rss_kb")), 0, True),
        ("VmRSS after {} s quiet, MB", lambda r: mb(get(r, "scale", "memory", "rss_after_kb")), 0, True),
        ("VmHWM after {} s quiet, MB", lambda r: mb(get(r, "scale", "memory", "hwm_after_settle_kb")), 0, True),
        ("data dir after the load, MB", lambda r: mb(r.get("data_kb")), 0, True),
        ("stop: SIGTERM to exit, s", lambda r: None if r.get("stop_ms") is None else r["stop_ms"] / 1000, 2, True),
        ("**restart: spawn to GET 200, s**", lambda r: None if r.get("restart_ms") is None else r["restart_ms"] / 1000, 2, True),
        ("VmRSS after the restart, MB", lambda r: mb(r.get("restart_rss_kb")), 0, True),
    ]
    settle = next((get(r, "scale", "settle_secs") for r in results if get(r, "scale", "settle_secs") is not None), 5)
    keys = next((get(r, "scale", "keys") for r in results if get(r, "scale", "keys") is not None), "?")
    vs = next((get(r, "scale", "value_size") for r in results if get(r, "scale", "value_size") is not None), "?")
    conns = next((get(r, "scale", "conns") for r in results if get(r, "scale", "conns") is not None), "?")
    period = next((get(r, "scale", "probe", "period_ms") for r in results
                   if get(r, "scale", "probe", "period_ms") is not None), "?")
    print(f"{keys:,} keys x {vs} B at {conns} connections, probe writer every {period:g} ms.\n"
          if isinstance(keys, int) and isinstance(period, (int, float)) else "")
    head = ["metric"] + [label.get(r["server"], r["server"]) for r in results] + (["ours/etcd"] if both else [])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, fn, digits, numeric in metrics:
        name = name.format(f"{settle:g}")
        vals = [fn(r) for r in results]
        cells = [name]
        for v in vals:
            if isinstance(v, str) or v is None:
                cells.append("-" if v is None else v)
            else:
                cells.append(num(v, digits))
        if both:
            cells.append(ratio(vals[1], vals[0]) if numeric and not isinstance(vals[0], str) else "")
        print("| " + " | ".join(cells) + " |")
    for r in results:
        for why in r.get("problems", []):
            print(f"\n{label.get(r['server'], r['server'])}: {why}")


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "runs":
        runs(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "scale":
        scale(sys.argv[2], sys.argv[3:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
