#!/usr/bin/env python3
"""What an idle resumable session costs the server in memory: the release build of the
bench service, N idle connections that only pinged, then N that logged in and
acknowledged the answer (each then holds a resumable session: its log, registry entry
and handoff slot), with resume
on and again with `[resume] window = "0s"` (logged in, no session). Prints the server's
RSS growth per connection for each, and the differences. Loopback only; it stops the
server it started.

    cargo build --release -p gatehouse-cli
    python3 scripts/resume-idle-memory.py [--connections 2000]
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


def measure(config, count):
    """Bytes of RSS per connection: (pinged only, logged in)."""
    server = subprocess.Popen(
        [BINARY, "serve", "--service", "bench", "--config", config, "--port", "0",
         "--admin-port", "0", "--log", "warn"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        port = None
        while port is None:
            line = server.stdout.readline().decode()
            if not line:
                raise RuntimeError("the server exited")
            match = re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", line)
            port = int(match[1]) if match else None
        held, per = [], {}
        for mode in ("pinged", "logged in"):
            time.sleep(0.5)
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
            time.sleep(1.0)
            per[mode] = (rss(server.pid) - before) / count
        for sock in held:
            sock.close()
        return per
    finally:
        server.terminate()
        server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as off:
        with open(CONFIG) as f:
            off.write(f.read() + '\n[resume]\nwindow = "0s"\n')
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
