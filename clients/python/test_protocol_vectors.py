"""The test vectors of docs/PROTOCOL.md against gatehouse_client's codec.

Both fenced blocks (```vectors and ```invalid-vectors) are read from the document
itself, so the client is checked against the same text the Rust implementation is.
"""

import os
import re
import socket
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gatehouse_client as gc  # noqa: E402

PROTOCOL_MD = os.path.join(HERE, "..", "..", "docs", "PROTOCOL.md")

# At the time of writing the document has 40 valid and 18 invalid vectors; fewer
# than these means the blocks were not found or not parsed.
MIN_VALID = 40
MIN_INVALID = 18
MALFORMED_ERRORS = {"unknown_kind", "truncated", "nonce_too_long", "kick_text_not_utf8",
                    "trailing_bytes"}
EVENT_TIMEOUT = 5.0  # seconds for something expected to happen (a deadline, not a pause)


def read_block(text, info):
    """The lines of the fenced block opened with ```<info>, without comments and blanks."""
    match = re.search(r"^```" + re.escape(info) + r"[ \t]*\n(.*?)^```", text, re.S | re.M)
    if match is None:
        raise AssertionError(f"no ```{info} block in {PROTOCOL_MD}")
    rows = []
    for line in match.group(1).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|", 2)]
        if len(parts) != 3:
            raise AssertionError(f"bad vector line in ```{info}: {line!r}")
        rows.append(tuple(parts))
    return rows


def load_vectors():
    with open(PROTOCOL_MD, encoding="utf-8") as f:
        text = f.read()
    return read_block(text, "vectors"), read_block(text, "invalid-vectors")


def parse_form(form):
    """The frame a canonical decoded form stands for (the inverse of gc.describe)."""
    if form == "empty":
        return gc.Empty()
    kind, _, rest = form.partition(" ")
    if kind == "kick":
        m = re.fullmatch(r'reason=(\d+) text="(.*)"', rest, re.S)
        if m is None:
            raise ValueError(f"bad kick form {form!r}")
        return gc.Kick(int(m.group(1)), m.group(2))
    fields = {}
    for item in rest.split(" "):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"bad field {item!r} in {form!r}")
        fields[key] = value
    hexed = lambda key: bytes.fromhex(fields.pop(key))  # noqa: E731
    number = lambda key: int(fields.pop(key))  # noqa: E731
    if kind == "request":
        frame = gc.Request(number("id"), number("route"), hexed("payload"))
    elif kind == "notify":
        frame = gc.Notify(number("route"), hexed("payload"))
    elif kind == "response":
        frame = gc.Response(number("id"), number("status"), hexed("payload"))
    elif kind == "push":
        frame = gc.Push(number("route"), hexed("payload"))
    elif kind == "ping":
        frame = gc.Ping(hexed("nonce"))
    elif kind == "pong":
        frame = gc.Pong(hexed("nonce"))
    elif kind == "session":
        frame = gc.Session(number("id"), number("window_ms"), hexed("token"))
    elif kind == "resume":
        frame = gc.Resume(number("id"), number("received"), hexed("token"))
    elif kind == "resumed":
        frame = gc.Resumed(number("received"))
    elif kind == "ack":
        frame = gc.Ack(number("count"))
    else:
        raise ValueError(f"unknown kind in {form!r}")
    if fields:
        raise ValueError(f"unexpected fields {sorted(fields)} in {form!r}")
    return frame


VALID, INVALID = load_vectors()


class ProtocolVectors(unittest.TestCase):
    def test_enough_vectors(self):
        self.assertGreaterEqual(len(VALID), MIN_VALID)
        self.assertGreaterEqual(len(INVALID), MIN_INVALID)
        names = [name for name, _, _ in VALID + INVALID]
        self.assertEqual(len(names), len(set(names)), "vector names are unique")

    def test_valid_vectors_decode(self):
        for name, frame_hex, form in VALID:
            with self.subTest(name):
                frame = gc.decode_frame(bytes.fromhex(frame_hex))
                self.assertEqual(gc.describe(frame), form)
                self.assertEqual(frame, parse_form(form))

    def test_valid_vectors_encode(self):
        for name, frame_hex, form in VALID:
            with self.subTest(name):
                self.assertEqual(gc.encode_frame(parse_form(form)).hex(), frame_hex)

    def test_valid_vectors_through_a_stream(self):
        # All frames back to back, fed one byte at a time, then all at once.
        stream = b"".join(bytes.fromhex(h) for _, h, _ in VALID)
        expected = [form for _, _, form in VALID]
        for chunk in (1, 7, len(stream)):
            buf = gc.FrameBuffer()
            got = []
            for i in range(0, len(stream), chunk):
                buf.feed(stream[i:i + chunk])
                got.extend(gc.describe(f) for f in buf)
            self.assertEqual(got, expected, f"chunks of {chunk}")
            self.assertEqual(len(buf), 0)

    def test_invalid_vectors_raise(self):
        for name, body_hex, error in INVALID:
            with self.subTest(name):
                self.assertIn(error, MALFORMED_ERRORS)
                body = bytes.fromhex(body_hex)
                with self.assertRaises(gc.MalformedFrame) as caught:
                    gc.decode_body(body)
                self.assertEqual(caught.exception.error, error)
                # The same body with its length header, whole and through a stream.
                frame = len(body).to_bytes(4, "big") + body
                with self.assertRaises(gc.MalformedFrame) as caught:
                    gc.decode_frame(frame)
                self.assertEqual(caught.exception.error, error)
                buf = gc.FrameBuffer()
                buf.feed(frame)
                with self.assertRaises(gc.MalformedFrame):
                    list(buf)


class FramingLimits(unittest.TestCase):
    def test_largest_body_passes_one_more_does_not(self):
        big = gc.Push(1, b"x" * (gc.MAX_FRAME_BYTES - 3))
        frame = gc.encode_frame(big)
        self.assertEqual(frame[:4].hex(), "00040000")
        self.assertEqual(gc.decode_frame(frame), big)
        with self.assertRaises(ValueError):
            gc.encode_frame(gc.Push(1, b"x" * (gc.MAX_FRAME_BYTES - 2)))

    def test_oversized_header_rejected_before_the_body(self):
        buf = gc.FrameBuffer()
        buf.feed(bytes.fromhex("00040001"))  # only the header: no body buffered yet
        with self.assertRaises(gc.MalformedFrame) as caught:
            list(buf)
        self.assertEqual(caught.exception.error, "frame_too_large")
        with self.assertRaises(gc.MalformedFrame):
            gc.decode_frame(bytes.fromhex("ffffffff"))

    def test_partial_frames_wait(self):
        buf = gc.FrameBuffer()
        for byte in bytes.fromhex("000000090100000007000168"):
            self.assertEqual(list(buf), [])
            buf.feed(bytes([byte]))
        self.assertEqual(list(buf), [])  # one byte still missing
        buf.feed(b"i")
        self.assertEqual(list(buf), [gc.Request(7, 1, b"hi")])

    def test_decode_frame_needs_a_whole_frame(self):
        for data in (b"", b"\x00\x00", bytes.fromhex("0000000901"), bytes.fromhex("0000000000")):
            with self.subTest(data.hex()):
                with self.assertRaises(gc.MalformedFrame) as caught:
                    gc.decode_frame(data)
                self.assertEqual(caught.exception.error, "bad_length")

    def test_encoder_refuses_out_of_range_fields(self):
        for frame in (gc.Request(1 << 32, 1), gc.Request(-1, 1), gc.Request(1, 1 << 16),
                      gc.Notify(-1), gc.Response(0, 70000), gc.Ping(b"x" * 65),
                      gc.Pong(b"x" * 65), gc.Kick(1 << 16, ""), gc.Ack(1 << 64),
                      gc.Session(1, 1 << 32, bytes(32)), gc.Resume(1, 2, bytes(31))):
            with self.subTest(frame):
                with self.assertRaises(ValueError):
                    gc.encode_frame(frame)

    def test_kick_reason_names(self):
        self.assertEqual(gc.kick_reason_name(6), "duplicate_login")
        self.assertEqual(gc.kick_reason_name(13), "kicked")
        self.assertEqual(gc.kick_reason_name(14), "room_closed")
        self.assertEqual(gc.kick_reason_name(1000), "game_kick")
        self.assertEqual(gc.kick_reason_name(99), "kicked")
        self.assertEqual(gc.kick_reason_name(15), "resume_failed")
        self.assertEqual(len(gc.KICK_REASONS), 15)


class FakeServer:
    """A one-connection TCP server whose script gets the accepted socket."""

    def __init__(self, script):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script):
        try:
            sock, _ = self.listener.accept()
            with sock:
                script(sock)
        except BaseException as e:  # reported by join()
            self.error = e
        finally:
            self.listener.close()

    def join(self):
        self.thread.join(EVENT_TIMEOUT)
        if self.thread.is_alive():
            raise AssertionError(f"the fake server's script did not finish in {EVENT_TIMEOUT} s")
        if self.error is not None:
            raise self.error


def _recv_exactly(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def read_frame(sock):
    """The next frame the client sent (None at end of stream). Reads exactly one frame,
    so frames the client sent back to back are left for the next call."""
    header = _recv_exactly(sock, 4)
    if header is None:
        return None
    body = _recv_exactly(sock, int.from_bytes(header, "big"))
    return None if body is None else gc.decode_body(body)


class ConnectionAgainstAFakeServer(unittest.TestCase):
    """Connection behaviour that a real server cannot be made to show on demand."""

    def test_request_push_ping_and_kick(self):
        def script(sock):
            req = read_frame(sock)
            assert isinstance(req, gc.Request) and req.route == 5, req
            # A push, a server ping and an empty frame before the answer, coalesced
            # with it into one write.
            sock.sendall(gc.encode_frame(gc.Push(100, b"p1")) + gc.encode_frame(gc.Ping(b"n"))
                         + gc.encode_frame(gc.Empty())
                         + gc.encode_frame(gc.Response(req.id, 0, b"ok")))
            assert read_frame(sock) == gc.Pong(b"n")
            req = read_frame(sock)
            sock.sendall(gc.encode_frame(gc.Response(req.id, 1003, b"bad name")))
            req = read_frame(sock)  # never answered: a kick instead
            sock.sendall(gc.encode_frame(gc.Kick(6, "logged in from another connection")))
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass

        server = FakeServer(script)
        conn = gc.Connection("127.0.0.1", server.port, heartbeat=None)
        try:
            self.assertEqual(conn.request(5, b"x"), b"ok")
            self.assertEqual(conn.next_push(1), gc.Push(100, b"p1"))
            with self.assertRaises(gc.RequestError) as caught:
                conn.request(6)
            self.assertEqual((caught.exception.status, caught.exception.text), (1003, "bad name"))
            with self.assertRaises(gc.Kicked) as caught:
                conn.request(7)
            kicked = caught.exception
            self.assertEqual((kicked.reason_code, kicked.reason_name), (6, "duplicate_login"))
            self.assertEqual(kicked.text, "logged in from another connection")
            with self.assertRaises(gc.Kicked):
                conn.next_push(1)
            with self.assertRaises(gc.Kicked):
                conn.notify(1)
        finally:
            conn.close()
        server.join()

    def test_malformed_frame_from_the_server_closes(self):
        def script(sock):
            read_frame(sock)
            sock.sendall(bytes.fromhex("00000001ff"))  # unknown kind
            while sock.recv(4096):
                pass

        server = FakeServer(script)
        with gc.Connection("127.0.0.1", server.port, heartbeat=None) as conn:
            with self.assertRaises(gc.ConnectionClosed) as caught:
                conn.request(1, timeout=5)
            self.assertNotIsInstance(caught.exception, gc.Kicked)
            self.assertIn("unknown_kind", str(caught.exception))
        server.join()

    def test_oversized_header_from_the_server_closes(self):
        def script(sock):
            read_frame(sock)
            sock.sendall(bytes.fromhex("7fffffff"))  # and never the body
            while sock.recv(4096):
                pass

        server = FakeServer(script)
        with gc.Connection("127.0.0.1", server.port, heartbeat=None) as conn:
            with self.assertRaises(gc.ConnectionClosed) as caught:
                conn.request(1, timeout=5)
            self.assertIn("frame_too_large", str(caught.exception))
        server.join()

    def test_close_without_kick_and_timeouts(self):
        def script(sock):
            read_frame(sock)  # a request left unanswered
            read_frame(sock)  # a second one, then the server goes away

        server = FakeServer(script)
        with gc.Connection("127.0.0.1", server.port, heartbeat=None) as conn:
            with self.assertRaises(gc.RequestTimeout):
                conn.request(1, timeout=0.2)
            with self.assertRaises(gc.RequestTimeout):
                conn.next_push(0.05)
            with self.assertRaises(gc.ConnectionClosed) as caught:
                conn.request(2, timeout=5)
            self.assertNotIsInstance(caught.exception, gc.Kicked)
            self.assertIsNotNone(conn.wait_closed(1))
        server.join()

    def test_heartbeat_pings_when_idle(self):
        seen = []

        def script(sock):
            for _ in range(2):
                frame = read_frame(sock)
                seen.append(frame)
                sock.sendall(gc.encode_frame(gc.Pong(frame.nonce)))

        server = FakeServer(script)
        with gc.Connection("127.0.0.1", server.port, heartbeat=0.1) as conn:
            server.join()
            self.assertEqual([type(f) for f in seen], [gc.Ping, gc.Ping])
            self.assertTrue(all(len(f.nonce) == 8 for f in seen))
            # Both pongs were sent; wait for the client to have read them.
            deadline = time.monotonic() + EVENT_TIMEOUT
            while conn.pongs_received < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(conn.pongs_received, 2)
            self.assertIsNotNone(conn.last_rtt)

    def test_dead_connection_detected(self):
        def script(sock):
            while read_frame(sock) is not None:  # reads pings, answers nothing
                pass

        server = FakeServer(script)
        with gc.Connection("127.0.0.1", server.port, heartbeat=0.05, dead_after=0.3) as conn:
            why = conn.wait_closed(5)
            self.assertIsInstance(why, gc.ConnectionClosed)
            self.assertIn("after a ping", str(why))
        server.join()


if __name__ == "__main__":
    unittest.main()
