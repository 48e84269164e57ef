"""An arena session against a real gatehouse server.

The server: ``GATEHOUSE_ADDR=host:port`` if set (a server someone else runs with
``--service arena``; counts are then only checked as lower bounds, since other
players may be online). Otherwise this module starts its own:

    $GATEHOUSE_BIN (default <repo>/target/debug/gatehouse) serve --port 0 \\
        --service arena --config <tmp>/gatehouse.toml     # [store] data_dir = <tmp>

reads ``listening on 127.0.0.1:PORT`` from its stdout, and stops it with SIGTERM at
the end. If the default binary does not exist the tests are skipped (build it with
``cargo build -p gatehouse-cli``); a ``GATEHOUSE_BIN`` that does not exist is an error.
"""

import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import arena_pb as pb  # noqa: E402
import gatehouse_client as gc  # noqa: E402
from arena_client import (  # noqa: E402
    LOBBY, STATUS_ALREADY_LOGGED_IN, STATUS_BAD_NAME, STATUS_NO_SUCH_PLAYER,
    STATUS_NOT_LOGGED_IN, STATUS_OUT_OF_RANGE, ArenaClient,
)

START_TIMEOUT = 30.0   # seconds for the server to print its address
STOP_TIMEOUT = 20.0    # seconds for it to exit after SIGTERM
EVENT_TIMEOUT = 5.0    # seconds to wait for an expected push


class Server:
    """The gatehouse process this module started (None when GATEHOUSE_ADDR is used)."""

    def __init__(self, binary):
        self.tmpdir = tempfile.mkdtemp(prefix="gatehouse-pytest-")
        config = os.path.join(self.tmpdir, "gatehouse.toml")
        data_dir = os.path.join(self.tmpdir, "data")
        with open(config, "w", encoding="utf-8") as f:
            # A JSON string is a valid TOML basic string (same escapes).
            f.write(f"[store]\ndata_dir = {json.dumps(data_dir, ensure_ascii=False)}\n")
        self.log_path = os.path.join(self.tmpdir, "gatehouse.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", "--port", "0", "--service", "arena", "--config", config],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, cwd=self.tmpdir)
        lines = queue.Queue()
        threading.Thread(target=self._read_stdout, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"no 'listening on' line in {START_TIMEOUT} s{self.log_tail()}")
            if line is None:
                code = self.proc.wait()
                self.stop()
                raise RuntimeError(f"gatehouse exited with {code} before listening{self.log_tail()}")
            if line.startswith("listening on "):
                host, _, port = line[len("listening on "):].strip().rpartition(":")
                self.host, self.port = host.strip("[]"), int(port)
                return

    def _read_stdout(self, lines):
        for raw in self.proc.stdout:
            lines.put(raw.decode("utf-8", "replace"))
        lines.put(None)

    def log_tail(self, n=30):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                tail = f.readlines()[-n:]
        except OSError:
            return ""
        return "\n--- gatehouse log (tail) ---\n" + "".join(tail)

    def stop(self):
        """SIGTERM, then wait; returns the exit code."""
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        return code


SERVER = None
ADDR = None          # (host, port)
OWN_SERVER = False   # True: nobody else is online, counts are exact


def setUpModule():
    global SERVER, ADDR, OWN_SERVER
    addr = os.environ.get("GATEHOUSE_ADDR")
    if addr:
        host, _, port = addr.rpartition(":")
        ADDR = (host.strip("[]") or "127.0.0.1", int(port))
        return
    binary = os.environ.get("GATEHOUSE_BIN")
    if binary is None:
        binary = os.path.join(REPO_ROOT, "target", "debug", "gatehouse")
        if not os.path.exists(binary):
            raise unittest.SkipTest(
                f"{binary} not built (cargo build -p gatehouse-cli), and GATEHOUSE_ADDR unset")
    SERVER = Server(binary)
    ADDR = (SERVER.host, SERVER.port)
    OWN_SERVER = True


def tearDownModule():
    global SERVER
    if SERVER is None:
        return
    server, SERVER = SERVER, None
    code = server.stop()
    tail = server.log_tail()
    if not os.environ.get("GATEHOUSE_KEEP_TMP"):
        shutil.rmtree(server.tmpdir, ignore_errors=True)
    if code != 0:
        raise RuntimeError(f"gatehouse exited with {code} after SIGTERM{tail}")


def unique(prefix):
    """A fresh valid name (at most 24 characters)."""
    return f"{prefix}-{secrets.token_hex(4)}"


class ArenaSession(unittest.TestCase):
    def setUp(self):
        self.clients = []

    def tearDown(self):
        for client in self.clients:
            client.close()

    def connect(self, **options):
        client = ArenaClient(*ADDR, **options)
        self.clients.append(client)
        return client

    def assertCount(self, actual, expected, what):
        """Exact on our own server; a lower bound on a shared one."""
        if OWN_SERVER:
            self.assertEqual(actual, expected, what)
        else:
            self.assertGreaterEqual(actual, expected, what)

    def assertStatus(self, status, call, *args):
        with self.assertRaises(gc.RequestError) as caught:
            call(*args)
        self.assertEqual(caught.exception.status, status, caught.exception)
        return caught.exception

    # ----------------------------------------------------------------- the session

    def test_two_players_session(self):
        alice_name, bob_name, room = unique("alice"), unique("bob"), unique("room")
        alice, bob = self.connect(), self.connect()

        # Both log in and start in the lobby.
        a = alice.login(alice_name)
        self.assertEqual((a.name, a.room, a.x, a.y, a.moves, a.logins),
                         (alice_name, LOBBY, 0, 0, 0, 1))
        b = bob.login(bob_name)
        self.assertEqual((b.name, b.room, b.logins), (bob_name, LOBBY, 1))
        # alice hears bob enter the lobby.
        event = alice.wait_for(lambda e: isinstance(e, pb.RoomEvent) and e.name == bob_name,
                               EVENT_TIMEOUT)
        self.assertEqual(event, pb.RoomEvent(bob_name, LOBBY, joined=True))

        # alice says something: everyone in the room, alice included, gets the Chat.
        text = f"hello from {alice_name} ✓"
        alice.say(text)
        expected = pb.Chat(from_=alice_name, text=text, room=LOBBY, whisper=False)
        for client in (alice, bob):
            event = client.wait_for(
                lambda e: isinstance(e, pb.Chat) and e.from_ == alice_name, EVENT_TIMEOUT)
            self.assertEqual(event, expected)

        # bob moves: alice (in the room) gets Moved, bob himself does not.
        b = bob.move(3, -4)
        self.assertEqual((b.x, b.y, b.moves), (3, -4, 1))
        event = alice.wait_for(lambda e: isinstance(e, pb.Moved) and e.name == bob_name,
                               EVENT_TIMEOUT)
        self.assertEqual(event, pb.Moved(bob_name, 3, -4))

        # alice joins a new room: bob (still in the lobby) sees her leave.
        a = alice.join(room)
        self.assertEqual((a.name, a.room), (alice_name, room))
        event = bob.wait_for(lambda e: isinstance(e, pb.RoomEvent) and e.name == alice_name,
                             EVENT_TIMEOUT)
        self.assertEqual(event, pb.RoomEvent(alice_name, LOBBY, joined=False))

        # bob whispers to alice across rooms.
        bob.whisper(alice_name, "psst")
        event = alice.wait_for(lambda e: isinstance(e, pb.Chat) and e.from_ == bob_name,
                               EVENT_TIMEOUT)
        self.assertEqual(event, pb.Chat(from_=bob_name, text="psst", room="", whisper=True))

        # who: both online; alice alone in her room, bob in the lobby.
        who = alice.who()
        self.assertIn(alice_name, who.players)
        self.assertIn(bob_name, who.players)
        self.assertEqual(who.players, sorted(who.players))
        self.assertCount(who.online, 2, "online")
        self.assertGreaterEqual(who.online, len(who.players))
        self.assertEqual(who.in_room, 1, "in alice's own room")
        self.assertCount(bob.who().in_room, 1, "in the lobby")

        # rooms: the lobby and alice's room, with their counts, sorted by name.
        rooms = {r.name: r.players for r in bob.rooms()}
        self.assertEqual(rooms.get(room), 1)
        self.assertCount(rooms.get(LOBBY, 0), 1, "players in the lobby")
        if OWN_SERVER:
            self.assertEqual(sorted(rooms), sorted([LOBBY, room]))
        names = [r.name for r in bob.rooms()]
        self.assertEqual(names, sorted(names))

        # alice goes back to the lobby; bob sees her come in.
        a = alice.leave()
        self.assertEqual(a.room, LOBBY)
        event = bob.wait_for(lambda e: isinstance(e, pb.RoomEvent) and e.name == alice_name,
                             EVENT_TIMEOUT)
        self.assertEqual(event, pb.RoomEvent(alice_name, LOBBY, joined=True))
        self.assertNotIn(room, {r.name for r in bob.rooms()}, "empty rooms disappear")

        # bob never got a Moved about himself.
        self.assertFalse([e for e in bob.drain_events(0.2)
                          if isinstance(e, pb.Moved) and e.name == bob_name])

        # alice disconnects: bob sees her leave the lobby.
        alice.close()
        event = bob.wait_for(lambda e: isinstance(e, pb.RoomEvent) and e.name == alice_name,
                             EVENT_TIMEOUT)
        self.assertEqual(event, pb.RoomEvent(alice_name, LOBBY, joined=False))

    # ------------------------------------------------------------------- errors

    def test_errors(self):
        client = self.connect()
        # Before login: arena's routes answer 1001, others 404.
        self.assertStatus(STATUS_NOT_LOGGED_IN, client.rooms)
        self.assertStatus(STATUS_NOT_LOGGED_IN, client.move, 1, 1)
        e = self.assertStatus(404, client.conn.request, 9)
        self.assertEqual(e.text, "unknown route 9")
        # Framework-reserved routes never reach the game; fault injection is off.
        e = self.assertStatus(403, client.conn.request, 0xFFF0)
        self.assertEqual(e.text, "fault injection is disabled (server.allow_fault_injection)")
        e = self.assertStatus(404, client.conn.request, 0xFF00)
        self.assertEqual(e.text, "unknown route 65280")

        # Bad names.
        for bad in ("", "has space", "x" * 25, "semi;colon", "new\nline"):
            with self.subTest(name=bad):
                self.assertStatus(STATUS_BAD_NAME, client.login, bad)
        # A payload that is not a LoginRequest.
        self.assertStatus(400, client.conn.request, 1, b"\xff\xff")

        name = unique("err")
        self.assertEqual(client.login(name).name, name)
        self.assertStatus(STATUS_ALREADY_LOGGED_IN, client.login, unique("other"))
        for x, y in ((1001, 0), (0, -1001), (-5000, 5000)):
            with self.subTest(x=x, y=y):
                self.assertStatus(STATUS_OUT_OF_RANGE, client.move, x, y)
        self.assertEqual(client.move(1000, -1000).x, 1000)  # the edge itself is fine
        self.assertStatus(STATUS_NO_SUCH_PLAYER, client.whisper, unique("nobody"), "hi")
        self.assertStatus(STATUS_OUT_OF_RANGE, client.say, "x" * 257)
        self.assertStatus(STATUS_OUT_OF_RANGE, client.whisper, name, "x" * 257)
        self.assertStatus(STATUS_BAD_NAME, client.join, "bad room")
        self.assertStatus(404, client.conn.request, 9)
        # Errors do not end the connection.
        client.say("x" * 256)
        self.assertIn(name, client.who().players)

    # ---------------------------------------------------------- duplicate login

    def test_duplicate_login_kicks_the_old_connection(self):
        name, room = unique("alice"), unique("dup")
        old = self.connect()
        old.login(name)
        old.join(room)
        old.move(5, 6)

        new = self.connect()
        state = new.login(name)
        # The new login loads what the old connection saved when it was kicked.
        self.assertEqual((state.name, state.room, state.x, state.y), (name, room, 5, 6))
        self.assertEqual((state.moves, state.logins), (1, 2))

        # The old connection gets the kick (after any pushes it had queued).
        with self.assertRaises(gc.Kicked) as caught:
            old.wait_for(lambda e: False, EVENT_TIMEOUT)
        kicked = caught.exception
        self.assertEqual((kicked.reason_code, kicked.reason_name), (6, "duplicate_login"))
        self.assertIsInstance(old.conn.close_reason, gc.Kicked)
        with self.assertRaises(gc.Kicked):
            old.who()

        # The new connection is the one online, once.
        who = new.who()
        self.assertEqual(who.players.count(name), 1)
        self.assertEqual(who.in_room, 1)
        self.assertEqual({r.name: r.players for r in new.rooms()}.get(room), 1)

    # --------------------------------------------------------- state survives

    def test_state_survives_a_reconnect(self):
        name, room = unique("alice"), unique("home")
        first = self.connect()
        self.assertEqual(first.login(name).logins, 1)
        first.join(room)
        state = first.move(7, -3)
        self.assertEqual((state.x, state.y, state.room), (7, -3, room))
        first.close()

        second = self.connect()
        state = second.login(name)
        self.assertEqual((state.name, state.x, state.y, state.room), (name, 7, -3, room))
        self.assertEqual((state.moves, state.logins), (1, 2))

    # ---------------------------------------------------------- keepalive

    def test_heartbeat_and_ping(self):
        client = self.connect(heartbeat=0.1)
        rtt = client.conn.ping()
        self.assertGreaterEqual(rtt, 0)
        deadline = time.monotonic() + EVENT_TIMEOUT
        while client.conn.pongs_received < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(client.conn.pongs_received, 3)
        self.assertIsNotNone(client.conn.last_rtt)
        client.conn.send_empty()
        name = unique("beat")
        self.assertEqual(client.login(name).name, name)  # still alive and well


if __name__ == "__main__":
    unittest.main()
