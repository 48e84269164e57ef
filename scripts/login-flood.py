#!/usr/bin/env python3
"""How long a legitimate arena login takes while other addresses flood the server
with account creations (each one an Argon2id hash).

Against a running arena server (``--addr``): first creates ``--players`` accounts
from 127.0.0.1, then starts the flood, ``--flooders`` connections from each of
127.0.0.2 .. 127.0.0.(1 + ``--flood-addresses``), each creating a new account as soon
as its previous login is answered; after ``--warmup`` seconds it logs those players
in from 127.0.0.1, one after another every ``--every`` seconds, for ``--duration``
seconds, and times each login (request sent to answer read). Prints one JSON line:
the legitimate logins' p50, p99 and max in milliseconds, how many failed, and what
the flood got (statuses, answers and accounts per second over the whole flood).

Linux routes all of 127.0.0.0/8 to loopback, so the source addresses need no
setup. Standard library only, plus ``clients/python`` for the wire format. Used by
``scripts/bench-logins.sh``.
"""

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import sys
import threading
import time
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "clients", "python"))

import arena_pb as pb  # noqa: E402
import gatehouse_client as gc  # noqa: E402

ROUTE_LOGIN = 1


def login(addr, source, name, password, timeout=30.0):
    """Connects from ``source``, logs in, closes: (status, seconds from request to answer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.bind((source, 0))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect(addr)
        payload = pb.LoginRequest(name=name, password=password).encode()
        frame = gc.encode_frame(gc.Request(id=1, route=ROUTE_LOGIN, payload=payload))
        sent = time.monotonic()
        sock.sendall(frame)
        frames = gc.FrameBuffer()
        while True:
            data = sock.recv(65536)
            if not data:
                return "closed", time.monotonic() - sent
            frames.feed(data)
            for frame in frames:
                if isinstance(frame, gc.Response):
                    return frame.status, time.monotonic() - sent
                if isinstance(frame, gc.Kick):
                    return f"kick {frame.reason_name}", time.monotonic() - sent
    except OSError as e:
        return f"error {type(e).__name__}", 0.0
    finally:
        sock.close()


def flood(addr, args, run, stop, results):
    """The flooding process: ``args.flooders`` threads per flooding address, each
    creating accounts one after another until ``stop``; then the statuses they got
    and for how long they flooded."""
    statuses = Counter()
    lock = threading.Lock()
    started = time.monotonic()

    def worker(source, w):
        n = 0
        while not stop.is_set():
            name = "not a name" if args.invalid_names else f"f{run}-{source.split('.')[-1]}-{w}-{n}"
            status, _ = login(addr, source, name, "flood-password")
            n += 1
            with lock:
                statuses[str(status)] += 1

    threads = []
    for a in range(args.flood_addresses):
        source = f"127.0.0.{2 + a}"
        for w in range(args.flooders):
            thread = threading.Thread(target=worker, args=(source, w), daemon=True)
            thread.start()
            threads.append(thread)
    stop.wait()
    for thread in threads:
        thread.join(timeout=35)
    results.put((dict(sorted(statuses.items())), time.monotonic() - started))


def percentile(values, p):
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:7000")
    parser.add_argument("--flood-addresses", type=int, default=1)
    parser.add_argument("--flooders", type=int, default=32, help="connections per flooding address")
    parser.add_argument("--players", type=int, default=8, help="legitimate accounts, logged in in turn")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=0.1, help="seconds between legitimate logins")
    parser.add_argument("--invalid-names", action="store_true",
                        help="flood with logins refused at once (a bad name): the cost of "
                             "the connections alone, for reference")
    args = parser.parse_args()
    host, port = args.addr.rsplit(":", 1)
    addr = (host, int(port))
    run = f"{os.getpid():x}{int(time.time()) % 100000:x}"

    players = [f"legit{run}-{i}" for i in range(args.players)]
    for name in players:
        status, _ = login(addr, "127.0.0.1", name, "legit-password")
        if status != 0:
            sys.exit(f"cannot create {name}: status {status}")

    # The flood runs in a process of its own, so that its threads do not slow the
    # measuring one down (one interpreter lock each).
    stop = multiprocessing.Event()
    results = multiprocessing.Queue()
    flooder = multiprocessing.Process(target=flood, args=(addr, args, run, stop, results))
    flooder.start()

    time.sleep(args.warmup)
    started = time.monotonic()
    times, failures = [], Counter()
    i = 0
    while time.monotonic() - started < args.duration:
        status, took = login(addr, "127.0.0.1", players[i % len(players)], "legit-password")
        i += 1
        if status == 0:
            times.append(took)
        else:
            failures[str(status)] += 1
        time.sleep(args.every)
    stop.set()
    statuses, flooded = results.get(timeout=60)
    flooder.join(timeout=60)

    ms = lambda s: None if s is None else round(s * 1000, 1)  # noqa: E731
    print(json.dumps({
        "flood_addresses": args.flood_addresses,
        "flooders_per_address": args.flooders,
        "logins": len(times),
        "login_failures": dict(failures),
        "login_p50_ms": ms(statistics.median(times) if times else None),
        "login_p99_ms": ms(percentile(times, 99)),
        "login_max_ms": ms(max(times) if times else None),
        "flood_answers_per_sec": round(sum(statuses.values()) / flooded, 1),
        "flood_accounts_per_sec": round(statuses.get("0", 0) / flooded, 1),
        "flood_statuses": statuses,
    }))


if __name__ == "__main__":
    main()
