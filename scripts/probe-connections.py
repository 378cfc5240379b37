#!/usr/bin/env python3
"""Holds idle and slowloris connections against a running `aisle serve` and measures whether
/healthz and /search still answer, and how soon the server closes the hostile connections.

Opt-in, standard library only (docs/reliability.md quotes its output):

    ulimit -n 1024; aisle serve --addr 127.0.0.1:8080 &
    python3 scripts/probe-connections.py --url http://127.0.0.1:8080 --idle 1100 --slow 200

Each slowloris connection sends a request head that never ends, one byte every second.
"""

import argparse
import resource
import socket
import time
import urllib.error
import urllib.parse
import urllib.request


def probe(url, timeout):
    """(HTTP status or the error, seconds) of one GET on a new connection."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except Exception as e:  # a timeout or a refused connection is the figure we want
        status = type(e).__name__
    return status, time.monotonic() - start


def closed(sock):
    """Whether the server has closed `sock` (EOF or reset), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    ap.add_argument("--idle", type=int, default=1100, help="connections that send nothing")
    ap.add_argument("--slow", type=int, default=200, help="slowloris connections (1 byte/s)")
    ap.add_argument("--seconds", type=float, default=30, help="how long to hold them")
    ap.add_argument("--probes", type=int, default=20, help="/healthz and /search probes")
    ap.add_argument("--query", default="usb cable")
    ap.add_argument("--probe-timeout", type=float, default=10.0)
    ap.add_argument("--connect-phase", type=float, default=15.0,
                    help="seconds at most for opening the connections")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.idle + args.slow + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))
    u = urllib.parse.urlparse(args.url)
    addr = (u.hostname, u.port or 80)

    hostile = []
    start = time.monotonic()
    failed = 0
    for i in range(args.idle + args.slow):
        # A server out of descriptors stops accepting; once its accept queue is full each
        # connect waits out its timeout, so the opening phase gets a deadline of its own.
        if time.monotonic() - start > args.connect_phase:
            failed += args.idle + args.slow - i
            break
        try:
            s = socket.create_connection(addr, timeout=1)
        except OSError:
            failed += 1
            continue
        if i >= args.idle:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        hostile.append((i >= args.idle, s))
    print(
        f"opened {len(hostile)} connections ({args.idle} idle, {args.slow} slowloris asked; "
        f"{failed} failed or not tried) in {time.monotonic() - start:.2f} s"
    )
    start = time.monotonic()

    paths = ["/healthz", "/search?" + urllib.parse.urlencode({"q": args.query, "k": 10})]
    results = []
    closed_at = {}
    next_probe = time.monotonic()
    interval = args.seconds / max(args.probes, 1)
    while time.monotonic() - start < args.seconds:
        now = time.monotonic()
        for idx, (slow, s) in enumerate(hostile):
            if idx in closed_at:
                continue
            if closed(s):
                closed_at[idx] = now - start
            elif slow:
                try:
                    s.send(b"a")
                except OSError:
                    closed_at[idx] = now - start
        if now >= next_probe and len(results) < args.probes:
            path = paths[len(results) % 2]
            results.append((path,) + probe(args.url + path, args.probe_timeout))
            next_probe = now + interval
        time.sleep(max(0.0, min(1.0, next_probe - time.monotonic())))

    ok = [r for r in results if r[1] == 200]
    worst = max((r[2] for r in results), default=0.0)
    print(f"probes: {len(ok)}/{len(results)} answered 200, slowest {worst * 1000:.1f} ms")
    for path in paths:
        times = sorted(r[2] for r in results if r[0] == path)
        statuses = sorted({str(r[1]) for r in results if r[0] == path})
        if times:
            print(
                f"  {path.split('?')[0]}: {len(times)} probes, statuses {','.join(statuses)}, "
                f"median {times[len(times) // 2] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms"
            )
    for kind, slow in (("idle", False), ("slowloris", True)):
        ids = [i for i, (s, _) in enumerate(hostile) if s == slow]
        shut = sorted(closed_at[i] for i in ids if i in closed_at)
        last = f", the last after {shut[-1]:.1f} s" if shut else ""
        print(
            f"{kind}: {len(shut)} of {len(ids)} closed by the server within "
            f"{args.seconds:.0f} s{last}"
        )
    for _, s in hostile:
        s.close()


if __name__ == "__main__":
    main()
