#!/usr/bin/env python3
"""Memory cost of idle long-poll watchers on a running server.

usage: bench/watch_memory.py HOST PORT N PID

Opens N connections to HOST:PORT, each with one `GET /v2/keys/wm/k?wait=true` that stays
pending, waits 2 s, and prints the resident set size of process PID before, with the N
watchers, and 3 s after they were all closed. Run it once against our server and once against
etcd 3.4 (`etcd --enable-v2=true ...`), each freshly started. Raises its own open-files limit
to the hard limit; N must stay below it.
"""
import asyncio
import resource
import sys


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


async def open_watch(host, port, conns):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /v2/keys/wm/k?wait=true HTTP/1.1\r\nHost: bench\r\n\r\n")
    await writer.drain()
    conns.append((reader, writer))


async def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    host, port, n, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = rss_kb(pid)
    conns = []
    for start in range(0, n, 500):
        await asyncio.gather(*(open_watch(host, port, conns) for _ in range(start, min(n, start + 500))))
    await asyncio.sleep(2)
    full = rss_kb(pid)
    print(f"RSS before: {before} KB; with {n} watchers: {full} KB; "
          f"per watcher: {(full - before) * 1024 / n:.0f} bytes")
    for _, writer in conns:
        writer.close()
    await asyncio.sleep(3)
    print(f"RSS 3 s after closing them: {rss_kb(pid)} KB")


asyncio.run(main())
