#!/usr/bin/env python3
"""Take-over logins between two nodes of a cluster (scripts/bench-cluster.sh runs it).

For each of N player names: a fresh login on node A, a second login of the name on A
(a take-over on the same node) and a third on node B (the session on A is ended, its
hook run, before the answer). Prints the three medians in milliseconds:
"same_node other_node fresh". The bench service's login hashes nothing.

    scripts/cluster-logins.py A_HOST:PORT B_HOST:PORT [N]
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "clients", "python"))
import gatehouse_client as gc  # noqa: E402

LOGIN = 4  # the bench service's login route


def address(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def login(where, name):
    conn = gc.Connection(*where)
    start = time.perf_counter()
    conn.request(LOGIN, name.encode(), timeout=10)
    return conn, (time.perf_counter() - start) * 1000


def main():
    a, b = address(sys.argv[1]), address(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    fresh, same, other = [], [], []
    for i in range(n):
        first, ms = login(a, f"p{i}")
        fresh.append(ms)
        second, ms = login(a, f"p{i}")
        same.append(ms)
        third, ms = login(b, f"p{i}")
        other.append(ms)
        for conn in (first, second, third):
            conn.close()
    median = statistics.median
    print(round(median(same), 3), round(median(other), 3), round(median(fresh), 3))


if __name__ == "__main__":
    main()
