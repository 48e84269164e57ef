"""Session resume against the real binary, through a proxy that cuts connections.

The server: ``$GATEHOUSE_BIN serve --service bench`` (as test_arena_session starts
arena), whose bench service offers session resume once a connection logs in. The
proxy sits between this client and it; cutting it closes both sides of every
connection open through it, as a network that drops would. The client must come
back with nothing lost and nothing run twice: every push once and in order, every
request answered once; and a client that closes ends its session (nothing can
resume it after). Skipped, like test_arena_session, when the binary is not
built (and ``GATEHOUSE_BIN`` unset).
"""

import os
import socket
import struct
import sys
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gatehouse_client as gc  # noqa: E402
from test_arena_session import REPO_ROOT, Server  # noqa: E402

# The bench service's routes (crates/gatehouse/src/bench_service.rs).
LOGIN = 4
INCREMENT = 5
PUSH_NUMBERS = 6

TIMEOUT = 10.0


class Proxy:
    """A TCP proxy on 127.0.0.1 to ``port``; :meth:`cut` closes both sides of every
    connection open through it (later ones are forwarded as usual)."""

    def __init__(self, port):
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def cut(self):
        with self.lock:
            cut, self.open = self.open, []
        for sock in cut:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.listener.close()
        self.cut()


class Resume(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = os.environ.get("GATEHOUSE_BIN") or os.path.join(
            REPO_ROOT, "target", "debug", "gatehouse")
        if not os.path.exists(binary):
            raise unittest.SkipTest(f"{binary} not built (cargo build -p gatehouse-cli)")
        cls.server = Server(binary, service="bench")

    @classmethod
    def tearDownClass(cls):
        cls.server.finish()

    def setUp(self):
        self.proxy = Proxy(self.server.port)
        self.addCleanup(self.proxy.close)

    def connect(self):
        conn = gc.Connection("127.0.0.1", self.proxy.port)
        self.addCleanup(conn.close)
        conn.request(LOGIN, b"py", timeout=TIMEOUT)
        return conn

    def test_a_cut_during_pushes_and_pipelined_increments_loses_nothing_and_runs_nothing_twice(self):
        conn = self.connect()
        conn.request(PUSH_NUMBERS, struct.pack(">I", 200), timeout=TIMEOUT)
        with ThreadPoolExecutor(max_workers=50) as pool:
            counts = [pool.submit(conn.request, INCREMENT, b"", TIMEOUT) for _ in range(50)]
            pushes = []
            while len(pushes) < 200:
                push = conn.next_push(timeout=TIMEOUT)
                pushes.append(struct.unpack(">I", push.payload)[0])
                if len(pushes) == 10:
                    self.proxy.cut()
            counts = sorted(struct.unpack(">Q", f.result())[0] for f in counts)
        self.assertEqual(pushes, list(range(200)), "every push once, in order")
        self.assertEqual(counts, list(range(1, 51)), "each increment ran once")
        self.assertEqual(conn.resumes, 1)
        self.assertFalse(conn.closed)

    def test_a_session_resumes_again_after_a_second_cut(self):
        conn = self.connect()
        self.assertEqual(conn.request(INCREMENT, timeout=TIMEOUT), struct.pack(">Q", 1))
        for n in (2, 3):
            self.proxy.cut()
            deadline = time.monotonic() + TIMEOUT
            while conn.resumes < n - 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(conn.request(INCREMENT, timeout=TIMEOUT), struct.pack(">Q", n))
        self.assertEqual(conn.resumes, 2)

    def test_a_closed_connection_ends_its_session_so_nothing_can_resume_it(self):
        conn = self.connect()
        resume, _ = conn._numbering.resume()
        conn.close()
        # Had the server kept the session for a resume, this would take it over.
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=TIMEOUT) as raw:
            raw.sendall(gc.encode_frame(resume))
            frames = gc.FrameBuffer()
            kick = None
            while kick is None:
                data = raw.recv(65536)
                self.assertTrue(data, "the server closed without a kick")
                frames.feed(data)
                kick = next((f for f in frames if isinstance(f, gc.Kick)), None)
        self.assertEqual(kick.reason, 15, kick.text)  # resume_failed
        self.assertTrue(kick.text.startswith("unknown"), kick.text)


if __name__ == "__main__":
    unittest.main()
