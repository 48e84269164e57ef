#!/usr/bin/env python3
"""Checks that a server speaks gatehouse's bench service byte for byte.

    python3 bench/anchors_check.py 127.0.0.1:PORT            # wire checks
    python3 bench/anchors_check.py 127.0.0.1:PORT --load 2000  # + N connections

Works against the Erlang anchor (bench/erlang/run.sh), the tokio limit
server (gatehouse-limit) and `gatehouse serve --service bench`. The server
should have no other clients (counts are checked exactly). Standard library
only; every socket has a timeout, so the script always ends by itself.
"""

import argparse
import socket
import struct
import sys
import time

TIMEOUT = 10.0


def short(hex_text: str) -> str:
    return hex_text if len(hex_text) <= 80 else f"{hex_text[:64]}... ({len(hex_text) // 2} bytes)"


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def request(req_id: int, route: int, payload: bytes = b"") -> bytes:
    return frame(struct.pack(">BIH", 1, req_id, route) + payload)


def notify(route: int, payload: bytes = b"") -> bytes:
    return frame(struct.pack(">BH", 2, route) + payload)


class Conn:
    def __init__(self, addr, source=None):
        self.sock = socket.create_connection(addr, timeout=TIMEOUT, source_address=source)
        self.buf = bytearray()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def read_frame(self) -> bytes:
        """The next whole frame, 4-byte length included; b"" at end of stream."""
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack_from(">I", self.buf)
                if len(self.buf) >= 4 + n:
                    out = bytes(self.buf[: 4 + n])
                    del self.buf[: 4 + n]
                    return out
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buf:
                    raise AssertionError(f"stream ended inside a frame: {self.buf.hex()}")
                return b""
            self.buf += chunk

    def expect(self, want_hex: str, what: str):
        got = self.read_frame().hex()
        if got != want_hex:
            raise AssertionError(f"{what}: expected {want_hex}, got {got}")
        print(f"ok  {what}: {short(got)}")

    def expect_set(self, want_hexes, what: str):
        """Frames whose relative order is not guaranteed."""
        got = sorted(self.read_frame().hex() for _ in want_hexes)
        if got != sorted(want_hexes):
            raise AssertionError(f"{what}: expected {sorted(want_hexes)}, got {got}")
        print(f"ok  {what}: {' '.join(got)}")

    def expect_closed(self, what: str):
        try:
            data = self.read_frame()
        except ConnectionResetError:
            data = b""
        if data:
            raise AssertionError(f"{what}: expected end of stream, got {data.hex()}")
        print(f"ok  {what}: closed")

    def close(self):
        self.sock.close()


def count_is(conn: Conn, req_id: int, want: int, what: str):
    """Count requests, retried briefly: registration and removal may be casts."""
    deadline = time.monotonic() + 5
    while True:
        conn.send(request(req_id, 3))
        got = conn.read_frame().hex()
        want_hex = frame(struct.pack(">BIHI", 3, req_id, 0, want)).hex()
        if got == want_hex:
            print(f"ok  {what}: {got}")
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: expected {want_hex}, got {got}")
        time.sleep(0.05)


def wire_checks(addr):
    a = Conn(addr)
    b = Conn(addr)
    # Vectors from docs/PROTOCOL.md.
    a.send(bytes.fromhex("00000009010000000700016869"))
    a.expect("00000009030000000700006869", "echo request id=7 'hi'")
    a.send(bytes.fromhex("0000000701000000080001"))
    a.expect("0000000703000000080000", "echo, empty payload")
    count_is(a, 10, 2, "count with two connections")
    a.send(bytes.fromhex("0000000c0100000009000268656c6c6f"))
    a.expect_set(
        ["0000000703000000090000", "0000000804000268656c6c6f"],
        "broadcast: response + own push",
    )
    b.expect("0000000804000268656c6c6f", "broadcast push on the other connection")
    a.send(bytes.fromhex("00000009050000018f2a3b4c5d"))
    a.expect("00000009060000018f2a3b4c5d", "ping 8-byte nonce -> pong")
    a.send(bytes.fromhex("0000000105"))
    a.expect("0000000106", "ping empty nonce -> pong")
    a.send(bytes.fromhex("00000000") + bytes.fromhex("0000000105"))
    a.expect("0000000106", "empty frame ignored, then pong")
    a.send(bytes.fromhex("000000050200016869"))
    a.expect("000000050400016869", "notify echo -> push route 1")
    b.send(bytes.fromhex("00000003020002"))
    b.expect("00000003040002", "notify broadcast (empty) -> own push")
    a.expect("00000003040002", "notify broadcast (empty) -> other push")
    a.send(bytes.fromhex("0000000502000900ff") + bytes.fromhex("0000000106"))
    a.send(bytes.fromhex("0000000701ffffffff0009"))
    a.expect(
        "0000001603ffffffff0194756e6b6e6f776e20726f7574652039",
        "unknown notify ignored, pong ignored, request route 9 -> 404",
    )
    # Pipelined: several requests in one write, answers in order.
    a.send(request(1, 1, b"x") + request(2, 1, b"yy") + frame(b"\x05z"))
    a.expect(frame(struct.pack(">BIH", 3, 1, 0) + b"x").hex(), "pipelined echo 1")
    a.expect(frame(struct.pack(">BIH", 3, 2, 0) + b"yy").hex(), "pipelined echo 2")
    a.expect(frame(b"\x06z").hex(), "pipelined pong")
    # The largest legal body: 262144 bytes (header 00040000), echoed as a
    # response body of the same size.
    big = (bytes(range(256)) * 1025)[: 262144 - 7]
    a.send(request(3, 1, big))
    a.expect(frame(struct.pack(">BIH", 3, 3, 0) + big).hex(), "echo with a 262144-byte body")
    b.close()
    count_is(a, 11, 1, "count after the other connection closed")

    # Malformed body: kick protocol_error (7), then close.
    c = Conn(addr)
    c.send(bytes.fromhex("0000000100"))
    c.expect(
        "000000200700076d616c666f726d6564206f7220756e6578706563746564206672616d65",
        "kind 0 -> kick protocol_error",
    )
    c.expect_closed("after the kick")
    c.close()
    # Oversized header: the connection ends (a kick frame_too_large first, or,
    # in the Erlang anchor, the inet driver's emsgsize: no kick).
    d = Conn(addr)
    d.send(bytes.fromhex("00040001"))
    first = d.read_frame()
    if first:
        assert first.hex() == "000000210700096672616d65206c6172676572207468616e20323632313434206279746573", first.hex()
        print(f"ok  oversized header -> kick frame_too_large: {first.hex()}")
        d.expect_closed("after the kick")
    else:
        print("ok  oversized header -> closed (no kick)")
    d.close()
    count_is(a, 12, 1, "count back to one")
    a.close()


def load(addr, n):
    """n connections at once from this process (n below its ~20,000 file limit)."""
    t0 = time.monotonic()
    conns = []
    for _ in range(n):
        conns.append(Conn(addr))
    print(f"ok  {n} connections open in {time.monotonic() - t0:.2f}s")
    for c in conns:
        c.send(bytes.fromhex("0000000105"))
    for c in conns:
        got = c.read_frame()
        assert got == bytes.fromhex("0000000106"), got.hex()
    print(f"ok  {n} pongs")
    count_is(conns[0], 1, n, f"count = {n}")
    conns[-1].send(request(2, 2, b"all"))
    for c in conns:
        got = {c.read_frame().hex()}
        if c is conns[-1]:
            got.add(c.read_frame().hex())
        want = {"00000006040002616c6c"}
        if c is conns[-1]:
            want.add("0000000703000000020000")
        assert got == want, (got, want)
    print(f"ok  broadcast reached all {n}")
    for c in conns[1:]:
        c.close()
    count_is(conns[0], 3, 1, "count after closing the others")
    conns[0].close()
    print(f"ok  load done in {time.monotonic() - t0:.2f}s")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("addr", help="HOST:PORT")
    p.add_argument("--load", type=int, default=0, help="also open this many connections")
    args = p.parse_args()
    host, port = args.addr.rsplit(":", 1)
    addr = (host, int(port))
    wire_checks(addr)
    if args.load:
        load(addr, args.load)
    print("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL {e}", file=sys.stderr)
        sys.exit(1)
