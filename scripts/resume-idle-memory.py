#!/usr/bin/env python3
"""What an idle resumable session costs the server in memory: the release build of the
bench service, N idle connections that only pinged, then N that logged in and
acknowledged the answer (each then holds a resumable session, quiet a second later:
its counts), with
resume on and again with `[resume] window = "0s"` (logged in, no session). Prints the
server's RSS growth per connection for each, and the differences. With `--heap` the
growth of the heap glibc has in use (its chunks, headers included: `malloc_stats`,
called through gdb) is compared instead, N logged-in connections with and without
a session: RSS also counts memory the allocator holds freed, and varies by tens of
bytes per connection from run to run. Loopback only; it stops the server it
started.

    cargo build --release -p gatehouse-cli
    python3 scripts/resume-idle-memory.py [--connections 2000] [--heap]
"""

import argparse
import os
import re
import socket
import struct
import subprocess
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BINARY = os.path.join(ROOT, "target", "release", "gatehouse")
CONFIG = os.path.join(ROOT, "bench", "gatehouse-bench.toml")


def frame(body):
    return struct.pack(">I", len(body)) + body


def read_frame(sock):
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data
    (length,) = struct.unpack(">I", exactly(4))
    return exactly(length)


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def heap_in_use(server, log):
    """The bytes glibc's malloc has in use in the server now (every arena, mmapped
    chunks included): `malloc_stats()` called through gdb writes them to the
    server's stderr, which goes to `log`."""
    subprocess.run(["gdb", "-p", str(server.pid), "-batch", "-ex", "call (void)malloc_stats()"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(log) as f:
        totals = re.findall(r"Total \(incl\. mmap\):\s*system bytes\s*=\s*\d+\s*"
                            r"in use bytes\s*=\s*(\d+)", f.read())
    return int(totals[-1])


def measure(config, count, heap_log=None):
    """Bytes of RSS per connection: (pinged only, logged in); with `heap_log` (where
    the server's stderr goes), the logged-in connections only, in heap bytes."""
    command = [BINARY, "serve", "--service", "bench", "--config", config, "--port", "0",
               "--admin-port", "0", "--log", "warn"]
    stderr = open(heap_log, "w") if heap_log else subprocess.DEVNULL
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
    try:
        port = None
        while port is None:
            line = server.stdout.readline().decode()
            if not line:
                raise RuntimeError("the server exited")
            match = re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", line)
            port = int(match[1]) if match else None
        held, per = [], {}
        for mode in ("logged in",) if heap_log else ("pinged", "logged in"):
            time.sleep(0.5)
            if heap_log:
                before = heap_in_use(server, heap_log)
            else:
                before = rss(server.pid)
            for i in range(count):
                sock = socket.create_connection(("127.0.0.1", port))
                if mode == "pinged":
                    sock.sendall(frame(bytes([5, 1])))
                    while read_frame(sock)[0] != 6:  # its pong
                        pass
                else:
                    name = f"idle-{i}".encode()
                    sock.sendall(frame(struct.pack(">BIH", 1, 1, 4) + name))  # login
                    while read_frame(sock)[0] != 3:  # its response, after the session
                        pass
                    # Acknowledged, as a resuming client does within a second (a
                    # server without a session ignores it).
                    sock.sendall(frame(struct.pack(">BQ", 11, 1)))
                held.append(sock)
            time.sleep(2.0)  # a session lets its replay go a second after it went quiet
            if heap_log:
                return {"heap": (heap_in_use(server, heap_log) - before) / count}
            per[mode] = (rss(server.pid) - before) / count
        for sock in held:
            sock.close()
        return per
    finally:
        server.terminate()
        server.wait()
        if heap_log:
            stderr.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--heap", action="store_true",
                        help="compare the heap in use (glibc, through gdb), not RSS")
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as off:
        with open(CONFIG) as f:
            off.write(f.read() + '\n[resume]\nwindow = "0s"\n')
    if args.heap:
        with tempfile.TemporaryDirectory() as scratch:
            try:
                on = measure(CONFIG, args.connections, os.path.join(scratch, "on.log"))
                without = measure(off.name, args.connections, os.path.join(scratch, "off.log"))
            finally:
                os.unlink(off.name)
        print(f"{args.connections} logged-in connections, heap in use per connection (bytes):")
        print(f"  no session:           {without['heap']:7.0f}")
        print(f"  resumable session:    {on['heap']:7.0f}")
        print(f"  the session's own cost: {on['heap'] - without['heap']:5.0f}")
        return
    try:
        on = measure(CONFIG, args.connections)
        without = measure(off.name, args.connections)
    finally:
        os.unlink(off.name)
    print(f"{args.connections} connections, RSS growth per connection (bytes):")
    print(f"  pinged only:                 {on['pinged']:7.0f}")
    print(f"  logged in, no session:       {without['logged in']:7.0f}")
    print(f"  logged in, resumable session:{on['logged in']:7.0f}")
    print(f"  the session's own cost:      {on['logged in'] - without['logged in']:7.0f}")


if __name__ == "__main__":
    main()
