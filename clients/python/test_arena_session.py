"""An arena session against a real gatehouse server.

The server: ``GATEHOUSE_ADDR=host:port`` if set (a server someone else runs with
``--service arena``; counts are then only checked as lower bounds, since other
players may be online). Otherwise this module starts its own:

    $GATEHOUSE_BIN (default <repo>/target/debug/gatehouse) serve \\
        --listen tcp://127.0.0.1:0 \\
        --service arena --config <tmp>/gatehouse.toml     # [store] data_dir = <tmp>

reads ``listening on tcp://127.0.0.1:PORT`` from its stdout (one such line per
listener), and stops it with SIGTERM at the end. If the default binary does not
exist the tests are skipped (build it with ``cargo build -p gatehouse-cli``); a
``GATEHOUSE_BIN`` that does not exist is an error.

:class:`FaultDrills` needs a server it can break: it starts a second one from the
same binary with ``--allow-fault-injection``, ``[limits] login_timeout = "2s"`` and
``[game] max_room_players = 3`` (and is skipped when only ``GATEHOUSE_ADDR`` is
given). :class:`TlsListener` starts one with a TLS listener too, on a certificate
from ``gatehouse dev-cert`` (also skipped with only ``GATEHOUSE_ADDR``). Every test
uses fresh random names and passwords; the whole module makes 9 wrong-password
logins from this address, well within arena's 20 a minute.
"""

import json
import os
import queue
import re
import secrets
import shutil
import signal
import ssl
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
    LOBBY, SPEED, STATUS_ALREADY_LOGGED_IN, STATUS_BAD_NAME, STATUS_BAD_PASSWORD,
    STATUS_NO_SUCH_PLAYER, STATUS_NOT_LOGGED_IN, STATUS_OUT_OF_RANGE, STATUS_ROOM_FULL,
    STATUS_TOO_MANY_ATTEMPTS, STATUS_WRONG_PASSWORD, ArenaClient, RoomRestarted,
)

START_TIMEOUT = 30.0   # seconds for the server to print its address
STOP_TIMEOUT = 20.0    # seconds for it to exit after SIGTERM
EVENT_TIMEOUT = 5.0    # seconds to wait for an expected push
DRILL_LOGIN_TIMEOUT = 2.0  # the drill server's limits.login_timeout


class Server:
    """A gatehouse process started by this module (serving ``service``, arena unless
    told otherwise): ``config`` is extra TOML for its
    configuration file (which always sets ``[store] data_dir``), ``args`` extra
    arguments of ``serve``. It listens on TCP (:attr:`host`, :attr:`port`), and with
    ``tls=True`` on TLS too (:attr:`listeners` ``["tls"]``), with a development
    certificate made for it (:attr:`cafile`)."""

    def __init__(self, binary, config="", args=(), tls=False, service="arena"):
        self.tmpdir = tempfile.mkdtemp(prefix="gatehouse-pytest-")
        config_path = os.path.join(self.tmpdir, "gatehouse.toml")
        data_dir = os.path.join(self.tmpdir, "data")
        with open(config_path, "w", encoding="utf-8") as f:
            # A JSON string is a valid TOML basic string (same escapes).
            f.write(f"[store]\ndata_dir = {json.dumps(data_dir, ensure_ascii=False)}\n{config}")
        # Explicit listeners on free ports: the default configuration's fixed ones
        # would collide between servers, and this way the lines to expect are known.
        listen = ["--listen", "tcp://127.0.0.1:0"]
        self.cafile = None
        if tls:
            subprocess.run([binary, "dev-cert", "--out", self.tmpdir], check=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            self.cafile = os.path.join(self.tmpdir, "dev-cert.pem")
            listen += ["--listen", "tls://127.0.0.1:0", "--cert", self.cafile,
                       "--key", os.path.join(self.tmpdir, "dev-key.pem")]
        self.log_path = os.path.join(self.tmpdir, "gatehouse.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", *listen, "--admin-port", "0", "--service", service, "--config", config_path, *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, cwd=self.tmpdir)
        #: transport ("tcp", "tls") -> (host, port), from the "listening on" lines.
        self.listeners = {}
        lines = queue.Queue()
        threading.Thread(target=self._read_stdout, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while len(self.listeners) < (2 if tls else 1):
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"no 'listening on' line in {START_TIMEOUT} s{self.log_tail()}")
            if line is None:
                code = self.proc.wait()
                self.stop()
                raise RuntimeError(f"gatehouse exited with {code} before listening{self.log_tail()}")
            match = re.match(r"listening on (\w+)://\[?([^\]]*?)\]?:(\d+)\s*$", line)
            if match:
                self.listeners[match[1]] = (match[2], int(match[3]))
        self.host, self.port = self.listeners["tcp"]

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

    def finish(self):
        """Stops it and removes its directory; an error if it did not exit cleanly."""
        code = self.stop()
        tail = self.log_tail()
        if not os.environ.get("GATEHOUSE_KEEP_TMP"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        if code != 0:
            raise RuntimeError(f"gatehouse exited with {code} after SIGTERM{tail}")


SERVER = None
BINARY = None        # the binary this module runs servers from (None: GATEHOUSE_ADDR)
ADDR = None          # (host, port)
OWN_SERVER = False   # True: nobody else is online, counts are exact


def setUpModule():
    global SERVER, BINARY, ADDR, OWN_SERVER
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
    BINARY = binary
    ADDR = (SERVER.host, SERVER.port)
    OWN_SERVER = True


def tearDownModule():
    global SERVER
    if SERVER is None:
        return
    server, SERVER = SERVER, None
    server.finish()


def unique(prefix):
    """A fresh valid name (at most 24 characters)."""
    return f"{prefix}-{secrets.token_hex(4)}"


def password():
    """A fresh valid password (22 bytes)."""
    return secrets.token_urlsafe(16)


def has(name):
    """A room-view predicate: ``name`` is in the room."""
    return lambda view: name in view.players


def at(name, x, y):
    """A room-view predicate: ``name`` stands at (x, y)."""
    return lambda view: view.position(name) == (x, y)


class ArenaTestCase(unittest.TestCase):
    """Connections to ``self.addr``, all closed after each test."""

    addr = None  # (host, port); None: the module's server

    def setUp(self):
        self.clients = []

    def tearDown(self):
        for client in self.clients:
            client.close()

    def connect(self, **options):
        client = ArenaClient(*(self.addr or ADDR), **options)
        self.clients.append(client)
        return client

    def player(self, prefix, room=None):
        """A new player, logged in (and moved to ``room`` if given), once its view has
        the RoomState of its room: (client, name, password)."""
        client, name, secret = self.connect(), unique(prefix), password()
        state = client.login(name, secret)
        if room is not None:
            state = client.join(room)
        client.wait_view(lambda v: v.room == state.room and name in v.players, EVENT_TIMEOUT)
        return client, name, secret

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

    def assertNoMissedDeltas(self, *clients):
        for client in clients:
            view = client.view
            self.assertEqual((view.missed, view.synced), (0, True), view)


class ArenaSession(ArenaTestCase):
    # ----------------------------------------------------------------- the session

    def test_two_players_session(self):
        alice_name, bob_name, room = unique("alice"), unique("bob"), unique("room")
        alice_pw, bob_pw = password(), password()
        alice, bob = self.connect(), self.connect()

        # alice logs in (creating the player) and starts in the lobby, seeing herself.
        a = alice.login(alice_name, alice_pw)
        self.assertEqual((a.name, a.room, a.x, a.y, a.moves, a.logins, a.password_hash),
                         (alice_name, LOBBY, 0, 0, 0, 1, ""))
        view = alice.wait_view(has(alice_name), EVENT_TIMEOUT)
        self.assertEqual((view.room, view.position(alice_name)), (LOBBY, (0, 0)))

        # Someone else with the wrong password is refused, and alice is not disturbed.
        intruder = self.connect()
        e = self.assertStatus(STATUS_WRONG_PASSWORD, intruder.login, alice_name, bob_pw)
        self.assertEqual(e.text, "wrong password")
        self.assertFalse(alice.conn.closed)

        # bob logs in: his RoomState has both of them; alice sees him enter in a Delta.
        b = bob.login(bob_name, bob_pw)
        self.assertEqual((b.name, b.room, b.logins), (bob_name, LOBBY, 1))
        whole = bob.wait_for(lambda e: isinstance(e, pb.RoomState), EVENT_TIMEOUT)
        self.assertEqual(whole.room, LOBBY)
        self.assertTrue({alice_name, bob_name} <= {p.name for p in whole.players}, whole)
        entered = alice.wait_for(
            lambda e: isinstance(e, pb.Delta) and bob_name in [p.name for p in e.entered],
            EVENT_TIMEOUT)
        self.assertIn(pb.Body(bob_name, 0, 0), entered.entered)
        self.assertEqual(alice.wait_view(has(bob_name), EVENT_TIMEOUT).position(bob_name), (0, 0))
        self.assertEqual(bob.wait_view(has(alice_name), EVENT_TIMEOUT).position(alice_name), (0, 0))

        # alice says something: everyone in the room, alice included, gets the Chat.
        text = f"hello from {alice_name} ✓"
        alice.say(text)
        expected = pb.Chat(from_=alice_name, text=text, room=LOBBY, whisper=False)
        for client in (alice, bob):
            event = client.wait_for(
                lambda e: isinstance(e, pb.Chat) and e.from_ == alice_name, EVENT_TIMEOUT)
            self.assertEqual(event, expected)

        # bob is placed (MOVE): the answer has the position, and the next Delta shows
        # it to everyone in the room, bob included.
        b = bob.move(3, -4)
        self.assertEqual((b.x, b.y, b.moves), (3, -4, 1))
        for client in (alice, bob):
            self.assertEqual(client.wait_view(at(bob_name, 3, -4), EVENT_TIMEOUT).room, LOBBY)

        # bob walks to a target: alice sees every step of it, one tick apart, at most
        # SPEED units per axis, and bob stops there. 203 units in x: 11 ticks (0.55 s).
        alice.drain_events()
        bob.goto(-200, 150)
        view = alice.wait_view(at(bob_name, -200, 150), EVENT_TIMEOUT)
        steps = [(e.tick, p.x, p.y) for e in alice.drain_events()
                 if isinstance(e, pb.Delta) for p in e.moved if p.name == bob_name]
        self.assertEqual(len(steps), 11, steps)
        self.assertEqual(steps[-1][1:], (-200, 150))
        self.assertEqual([t for t, _, _ in steps], list(range(steps[0][0], steps[0][0] + 11)))
        previous = (3, -4)
        for _, x, y in steps:
            self.assertLessEqual(abs(x - previous[0]), SPEED)
            self.assertLessEqual(abs(y - previous[1]), SPEED)
            previous = (x, y)
        bob.wait_view(at(bob_name, -200, 150), EVENT_TIMEOUT)
        self.assertNoMissedDeltas(alice, bob)

        # bob walks east, then stops, and says so: the room handles his messages in
        # order and pushes in order, so when alice hears him, his last step is in her
        # view. He stays there.
        bob.walk(1, 0)
        alice.wait_view(lambda v: v.position(bob_name)[0] >= -140, EVENT_TIMEOUT)
        bob.stop()
        bob.say("stopped")
        alice.wait_for(lambda e: isinstance(e, pb.Chat) and e.text == "stopped", EVENT_TIMEOUT)
        stopped = alice.view.position(bob_name)
        self.assertEqual(stopped[1], 150)
        self.assertGreaterEqual(stopped[0], -140)
        # Six ticks later he still stands there: alice walks, so that every tick
        # brings her a Delta, and her view shows when six have gone by.
        since, home = alice.view.tick, alice.view.position(alice_name)
        alice.walk(0, 1)
        alice.wait_view(lambda v: v.tick >= since + 6, EVENT_TIMEOUT)
        alice.stop()
        alice.move(*home)
        self.assertEqual(alice.view.position(bob_name), stopped)
        self.assertEqual(bob.wait_view(at(bob_name, *stopped), EVENT_TIMEOUT).room, LOBBY)

        # alice joins a new room: bob (still in the lobby) sees her leave; her view is
        # the new room, with her alone in it.
        a = alice.join(room)
        self.assertEqual((a.name, a.room), (alice_name, room))
        view = alice.wait_view(lambda v: v.room == room, EVENT_TIMEOUT)
        self.assertEqual(view.players, {alice_name: (0, 0)})
        bob.wait_view(lambda v: alice_name not in v.players, EVENT_TIMEOUT)

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

        # alice goes back to the lobby: she gets its whole state, bob sees her come in.
        a = alice.leave()
        self.assertEqual(a.room, LOBBY)
        view = alice.wait_view(lambda v: v.room == LOBBY and bob_name in v.players,
                               EVENT_TIMEOUT)
        self.assertEqual(view.position(bob_name), stopped)
        bob.wait_view(at(alice_name, 0, 0), EVENT_TIMEOUT)
        self.assertNotIn(room, {r.name for r in bob.rooms()}, "empty rooms disappear")
        self.assertNoMissedDeltas(alice, bob)

        # alice disconnects: bob sees her leave the lobby.
        alice.close()
        bob.wait_view(lambda v: alice_name not in v.players, EVENT_TIMEOUT)
        self.assertNoMissedDeltas(bob)

    # ------------------------------------------------------------------ resync

    def test_joining_the_current_room_resyncs(self):
        room = unique("sync")
        alice, alice_name, _ = self.player("alice", room)
        bob, bob_name, _ = self.player("bob", room)
        bob.move(-30, 12)
        alice.goto(40, 0)
        for client in (alice, bob):
            client.wait_view(lambda v: v.players == {alice_name: (40, 0), bob_name: (-30, 12)},
                             EVENT_TIMEOUT)
        before = alice.view
        bob.drain_events()

        # JOIN of the room alice is in: she stays, and gets the whole room again at
        # its next tick (before that tick's Delta, which follows from it).
        whole = alice.resync(EVENT_TIMEOUT)
        self.assertEqual((whole.room, alice.state.room), (room, room))
        self.assertEqual(sorted((p.name, p.x, p.y) for p in whole.players),
                         sorted([(alice_name, 40, 0), (bob_name, -30, 12)]))
        self.assertGreaterEqual(whole.tick, before.tick)
        view = alice.view
        self.assertEqual((view.room, view.states, view.synced), (room, before.states + 1, True))
        self.assertEqual(alice.who().in_room, 2)

        # The room plays on from it: bob's next step is in sequence for alice.
        bob.move(-31, 12)
        alice.wait_view(at(bob_name, -31, 12), EVENT_TIMEOUT)
        bob.wait_view(at(bob_name, -31, 12), EVENT_TIMEOUT)
        self.assertNoMissedDeltas(alice, bob)
        # bob saw alice neither leave nor enter, and got no RoomState of his own.
        for event in bob.drain_events():
            self.assertNotIsInstance(event, pb.RoomState)
            if isinstance(event, pb.Delta):
                self.assertNotIn(alice_name, event.left, event)
                self.assertNotIn(alice_name, [p.name for p in event.entered], event)

        # A resync after a missed Delta (one dropped on purpose here): synced again.
        with alice._view_changed:  # pretend the last Delta was lost
            alice._view.tick -= 1
        bob.move(-32, 12)
        view = alice.wait_view(at(bob_name, -32, 12), EVENT_TIMEOUT)
        self.assertEqual((view.missed, view.synced), (1, False))
        whole = alice.resync(EVENT_TIMEOUT)
        self.assertIn(pb.Body(bob_name, -32, 12), whole.players)
        self.assertTrue(alice.view.synced)

        # LEAVE is a JOIN of the lobby: in the lobby, it resyncs too.
        state = bob.leave()
        bob.wait_view(lambda v: v.room == LOBBY and bob_name in v.players, EVENT_TIMEOUT)
        states = bob.view.states
        self.assertEqual(bob.leave().room, LOBBY)
        view = bob.wait_view(lambda v: v.states == states + 1, EVENT_TIMEOUT)
        self.assertEqual((view.room, view.position(bob_name)), (LOBBY, (state.x, state.y)))

    # ---------------------------------------------------------------- passwords

    def test_passwords(self):
        name, secret = unique("pw"), password()
        first = self.connect()
        self.assertEqual(first.login(name, secret).logins, 1)  # creates the player
        first.close()

        client = self.connect()
        # A wrong password is refused; the same connection may then try again.
        self.assertStatus(STATUS_WRONG_PASSWORD, client.login, name, secret + "x")
        self.assertStatus(STATUS_NOT_LOGGED_IN, client.who)
        state = client.login(name, secret)
        self.assertEqual((state.name, state.logins, state.password_hash), (name, 2, ""))
        client.wait_view(has(name), EVENT_TIMEOUT)

        # Lengths are counted in bytes of UTF-8: 8 to 128.
        other = self.connect()
        for bad in ("", "x" * 7, "é" * 3 + "x", "x" * 129, "é" * 64 + "x"):
            with self.subTest(password=bad):
                self.assertStatus(STATUS_BAD_PASSWORD, other.login, unique("pw"), bad)
        for good in ("x" * 8, "é" * 4, "x" * 128, "é" * 64):
            with self.subTest(password=good):
                fresh = self.connect()
                self.assertEqual(fresh.login(unique("pw"), good).logins, 1)

    def test_too_many_wrong_passwords(self):
        name, secret = unique("guess"), password()
        self.connect().login(name, secret)  # online: wrong guesses do not disturb it
        guesser = self.connect()
        refused = []
        for _ in range(6):  # arena tolerates 5 wrong passwords a minute for one name
            with self.assertRaises(gc.RequestError) as caught:
                guesser.login(name, "not-" + secret)
            refused.append(caught.exception.status)
            if caught.exception.status == STATUS_TOO_MANY_ATTEMPTS:
                break
        self.assertEqual(refused[0], STATUS_WRONG_PASSWORD)
        # Blocked now for a minute: even the right password is refused.
        self.assertStatus(STATUS_TOO_MANY_ATTEMPTS, guesser.login, name, secret)
        self.assertFalse(self.clients[0].conn.closed)

    # ------------------------------------------------------------------- errors

    def test_errors(self):
        client = self.connect()
        # Before login: arena's routes answer 1001 (route 11, STATS, included), others
        # 404.
        self.assertStatus(STATUS_NOT_LOGGED_IN, client.rooms)
        self.assertStatus(STATUS_NOT_LOGGED_IN, client.move, 1, 1)
        self.assertStatus(STATUS_NOT_LOGGED_IN, client.crash_room)
        self.assertStatus(STATUS_NOT_LOGGED_IN, client.resync)
        self.assertStatus(STATUS_NOT_LOGGED_IN, client.conn.request, 11)
        e = self.assertStatus(404, client.conn.request, 12)
        self.assertEqual(e.text, "unknown route 12")
        client.goto(5, 5)  # a notify before login: dropped, no answer, no harm
        # Framework-reserved routes never reach the game; fault injection is off.
        e = self.assertStatus(403, client.conn.request, 0xFFF0)
        self.assertEqual(e.text, "fault injection is disabled (server.allow_fault_injection)")
        e = self.assertStatus(404, client.conn.request, 0xFF00)
        self.assertEqual(e.text, "unknown route 65280")

        # Bad names.
        for bad in ("", "has space", "x" * 25, "semi;colon", "new\nline"):
            with self.subTest(name=bad):
                self.assertStatus(STATUS_BAD_NAME, client.login, bad, password())
        # A payload that is not a LoginRequest.
        self.assertStatus(400, client.conn.request, 1, b"\xff\xff")

        name = unique("err")
        self.assertEqual(client.login(name, password()).name, name)
        self.assertEqual(client.wait_view(has(name), EVENT_TIMEOUT).position(name), (0, 0))
        self.assertStatus(STATUS_ALREADY_LOGGED_IN, client.login, unique("other"), password())
        for x, y in ((1001, 0), (0, -1001), (-5000, 5000)):
            with self.subTest(x=x, y=y):
                self.assertStatus(STATUS_OUT_OF_RANGE, client.move, x, y)
        self.assertEqual(client.move(1000, -1000).x, 1000)  # the edge itself is fine
        self.assertStatus(STATUS_NO_SUCH_PLAYER, client.whisper, unique("nobody"), "hi")
        self.assertStatus(STATUS_OUT_OF_RANGE, client.say, "x" * 257)
        self.assertStatus(STATUS_OUT_OF_RANGE, client.whisper, name, "x" * 257)
        self.assertStatus(STATUS_BAD_NAME, client.join, "bad room")
        # Input is a notify: as a request it is an unknown route. crash_room is
        # refused without fault injection.
        e = self.assertStatus(404, client.conn.request, 9)
        self.assertEqual(e.text, "unknown route 9")
        e = self.assertStatus(403, client.crash_room)
        self.assertEqual(e.text, "fault injection is disabled (server.allow_fault_injection)")
        # Errors do not end the connection, and the goto before login did nothing.
        client.say("x" * 256)
        self.assertIn(name, client.who().players)
        self.assertEqual(client.wait_view(at(name, 1000, -1000), EVENT_TIMEOUT).room, LOBBY)

    # ---------------------------------------------------------- duplicate login

    def test_duplicate_login_kicks_the_old_connection(self):
        name, room, secret = unique("alice"), unique("dup"), password()
        old = self.connect()
        old.login(name, secret)
        old.join(room)
        old.move(5, 6)

        # Only the right password takes the player over.
        self.assertStatus(STATUS_WRONG_PASSWORD, self.connect().login, name, password())
        self.assertFalse(old.conn.closed)

        new = self.connect()
        state = new.login(name, secret)
        # The new login loads what the old connection saved when it was kicked.
        self.assertEqual((state.name, state.room, state.x, state.y), (name, room, 5, 6))
        self.assertEqual((state.moves, state.logins), (1, 2))
        view = new.wait_view(lambda v: v.room == room, EVENT_TIMEOUT)
        self.assertEqual(view.players, {name: (5, 6)})

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
        name, room, secret = unique("alice"), unique("home"), password()
        first = self.connect()
        self.assertEqual(first.login(name, secret).logins, 1)
        first.join(room)
        state = first.move(7, -3)
        self.assertEqual((state.x, state.y, state.room), (7, -3, room))
        first.goto(47, -3)  # where a walk ends is saved too
        first.wait_view(at(name, 47, -3), EVENT_TIMEOUT)
        first.close()

        second = self.connect()
        state = second.login(name, secret)
        self.assertEqual((state.name, state.x, state.y, state.room), (name, 47, -3, room))
        self.assertEqual((state.moves, state.logins), (2, 2))  # a MOVE and an Input
        self.assertEqual(second.wait_view(has(name), EVENT_TIMEOUT).position(name), (47, -3))

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
        self.assertEqual(client.login(name, password()).name, name)  # still alive and well


class FaultDrills(ArenaTestCase):
    """What only a server with fault injection, a short login timeout and small
    rooms shows: room restarts, a room closed for crashing, the login timeout, a
    full room."""

    server = None

    @classmethod
    def setUpClass(cls):
        if BINARY is None:
            raise unittest.SkipTest("needs a server of its own (GATEHOUSE_ADDR is set)")
        cls.server = Server(BINARY, config=(
            f'[limits]\nlogin_timeout = "{DRILL_LOGIN_TIMEOUT:g}s"\n'
            "[game]\nmax_room_players = 3\n"), args=["--allow-fault-injection"])
        cls.addr = (cls.server.host, cls.server.port)

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.finish()

    def test_room_restart(self):
        room = unique("crash")
        alice, alice_name, _ = self.player("alice", room)
        alice.move(7, 8)
        bob, bob_name, _ = self.player("bob", room)
        bob.move(-5, 0)
        cy, cy_name, _ = self.player("cy", room)  # a full room: 3 players
        everyone = {alice_name: (7, 8), bob_name: (-5, 0), cy_name: (0, 0)}
        members = (alice, bob, cy)
        for client in members:
            client.wait_view(lambda v: v.players == everyone, EVENT_TIMEOUT)
            client.drain_events()

        alice.crash_room()
        for client in members:
            # The framework's push, then arena's RoomState of the new life (tick 0):
            # the first one already has every member (they are all back by the
            # restarted room's first tick), where they stood.
            event = client.wait_for(lambda e: not isinstance(e, pb.Delta), EVENT_TIMEOUT)
            self.assertEqual(event, RoomRestarted(room))
            event = client.wait_for(lambda e: not isinstance(e, pb.Delta), EVENT_TIMEOUT)
            self.assertIsInstance(event, pb.RoomState)
            self.assertEqual((event.room, event.tick), (room, 0))
            self.assertEqual({p.name: (p.x, p.y) for p in event.players}, everyone)
            self.assertEqual(len(event.players), 3, event)
            # The ticks starting again is no gap.
            view = client.wait_view(lambda v: v.restarts == 1 and v.synced, EVENT_TIMEOUT)
            self.assertEqual(view.players, everyone)
            self.assertEqual((view.room, view.missed, view.states), (room, 0, 2))

        # The restarted room plays on.
        bob.goto(-20, 40)
        for client in members:
            client.wait_view(at(bob_name, -20, 40), EVENT_TIMEOUT)
        self.assertNoMissedDeltas(*members)
        self.assertEqual(alice.who().in_room, 3)

    def test_room_closed_after_crashing_too_often(self):
        room = unique("doomed")
        alice, alice_name, secret = self.player("alice", room)
        alice.move(-7, 3)
        # Past its restart intensity (3 restarts in 10 s) the room closes, and its
        # members are kicked room_closed.
        with self.assertRaises(gc.Kicked) as caught:
            for _ in range(10):
                alice.crash_room()
                alice.wait_for(lambda e: isinstance(e, pb.RoomState), EVENT_TIMEOUT)
        self.assertEqual((caught.exception.reason_code, caught.exception.reason_name),
                         (14, "room_closed"))
        self.assertGreaterEqual(alice.view.restarts, 3)

        # Reconnecting at once works: the player is in a fresh room of the same name
        # (not the lobby), where it stood.
        again = self.connect()
        state = again.login(alice_name, secret)
        self.assertEqual((state.room, state.x, state.y), (room, -7, 3))
        event = again.wait_for(lambda e: isinstance(e, pb.RoomState), EVENT_TIMEOUT)
        self.assertEqual((event.room, event.tick), (room, 0))  # a new life: tick 0
        self.assertEqual(event.players, [pb.Body(alice_name, -7, 3)])
        view = again.wait_view(lambda v: v.room == room, EVENT_TIMEOUT)
        self.assertEqual((view.players, view.restarts), ({alice_name: (-7, 3)}, 0))
        self.assertEqual({r.name: r.players for r in again.rooms()}.get(room), 1)
        self.assertEqual(again.who().in_room, 1)
        # It plays: a move shows in its next Delta.
        again.move(-8, 3)
        again.wait_view(at(alice_name, -8, 3), EVENT_TIMEOUT)
        self.assertNoMissedDeltas(again)

    def test_login_timeout(self):
        # Pings keep the connection from being idle, not from having to log in.
        client = self.connect(heartbeat=0.2)
        self.assertGreaterEqual(client.conn.ping(), 0)
        end = client.conn.wait_closed(DRILL_LOGIN_TIMEOUT + EVENT_TIMEOUT)
        self.assertIsInstance(end, gc.Kicked)
        self.assertEqual((end.reason_code, end.reason_name), (10, "login_timeout"))
        with self.assertRaises(gc.Kicked):
            client.login(unique("late"), password())

    def test_room_full(self):
        room = unique("full")
        players = [self.player("p", room) for _ in range(3)]
        late, late_name, _ = self.player("late")
        late.drain_events()
        self.assertStatus(STATUS_ROOM_FULL, late.join, room)
        # Still somewhere: back in the lobby, with a fresh RoomState of it.
        self.assertEqual(late.who().in_room, 1)
        event = late.wait_for(lambda e: isinstance(e, pb.RoomState), EVENT_TIMEOUT)
        self.assertEqual(event.room, LOBBY)
        view = late.wait_view(lambda v: v.room == LOBBY and late_name in v.players,
                              EVENT_TIMEOUT)
        self.assertNotIn(players[0][1], view.players)
        # One leaves: there is room again.
        players[0][0].leave()
        self.assertEqual(late.join(room).room, room)
        view = late.wait_view(lambda v: v.room == room, EVENT_TIMEOUT)
        self.assertEqual(set(view.players), {late_name, players[1][1], players[2][1]})



class TlsListener(ArenaTestCase):
    """A server with a TCP and a TLS listener, on a certificate from ``gatehouse
    dev-cert``: the same game behind both, and the certificate really checked."""

    server = None

    @classmethod
    def setUpClass(cls):
        if BINARY is None:
            raise unittest.SkipTest("needs a server of its own (GATEHOUSE_ADDR is set)")
        cls.server = Server(BINARY, tls=True)
        cls.addr = (cls.server.host, cls.server.port)
        cls.tls_addr = cls.server.listeners["tls"]

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.finish()

    def connect_tls(self, **options):
        """A client of the TLS listener that trusts the server's certificate."""
        client = ArenaClient(*self.tls_addr, tls=True, cafile=self.server.cafile, **options)
        self.clients.append(client)
        return client

    def test_tls_player_and_tcp_player_play_in_the_same_room(self):
        room, name, secret = unique("tls"), unique("tls"), password()
        secure = self.connect_tls()
        self.assertIn(secure.conn.tls_version, ("TLSv1.2", "TLSv1.3"))
        secure.login(name, secret)
        secure.join(room)
        plain, plain_name, _ = self.player("tcp", room)
        self.assertIsNone(plain.conn.tls_version)
        secure.wait_view(has(plain_name), EVENT_TIMEOUT)
        plain.wait_view(has(name), EVENT_TIMEOUT)

        # The TLS player talks, is placed and walks: the TCP player sees it all.
        secure.say("over TLS")
        chat = plain.wait_for(lambda e: isinstance(e, pb.Chat) and e.from_ == name,
                              EVENT_TIMEOUT)
        self.assertEqual(chat, pb.Chat(from_=name, text="over TLS", room=room, whisper=False))
        state = secure.move(12, -34)
        self.assertEqual((state.x, state.y), (12, -34))
        plain.wait_view(at(name, 12, -34), EVENT_TIMEOUT)
        secure.goto(72, -34)
        plain.wait_view(at(name, 72, -34), EVENT_TIMEOUT)

        # And the other way round.
        plain.move(-5, 5)
        secure.wait_view(at(plain_name, -5, 5), EVENT_TIMEOUT)
        plain.whisper(name, "psst")
        whisper = secure.wait_for(lambda e: isinstance(e, pb.Chat) and e.whisper, EVENT_TIMEOUT)
        self.assertEqual((whisper.from_, whisper.text), (plain_name, "psst"))
        self.assertEqual(secure.who().in_room, 2)
        self.assertNoMissedDeltas(secure, plain)

        # A TLS player is saved like any other: back over TCP, where it stood.
        secure.close()
        plain.wait_view(lambda v: name not in v.players, EVENT_TIMEOUT)
        state = self.connect().login(name, secret)
        self.assertEqual((state.room, state.x, state.y, state.logins), (room, 72, -34, 2))

    def test_untrusted_certificate_fails_the_handshake_and_the_server_serves_on(self):
        bystander, bystander_name, _ = self.player("tcp")
        # The default trust is the system's, which does not have a development
        # certificate: the handshake fails, with the reason.
        for _ in range(3):
            with self.assertRaises(ssl.SSLCertVerificationError) as caught:
                ArenaClient(*self.tls_addr, tls=True)
            self.assertIn("certificate verify failed", str(caught.exception))
            self.assertEqual(caught.exception.verify_code, 18)  # self-signed

        # The server serves on, on both listeners; the player already online is fine.
        self.assertIsNone(self.server.proc.poll())
        self.assertFalse(bystander.conn.closed)
        secure, name = self.connect_tls(), unique("tls")
        secure.login(name, password())
        secure.say("still here")
        for client in (secure, bystander):
            client.wait_for(lambda e: isinstance(e, pb.Chat) and e.from_ == name, EVENT_TIMEOUT)
        self.assertCount(bystander.who().online, 2, "online")

    def test_one_tls_connection_serves_many_threads(self):
        # Requests from several threads, heartbeats and a stream of Deltas share one
        # TLS session: every answer and every step arrives.
        walker, walker_name, _ = self.player("walker")
        secure, name = self.connect_tls(heartbeat=0.05), unique("tls")
        secure.login(name, password())
        secure.wait_view(has(walker_name), EVENT_TIMEOUT)
        walker.goto(-400, 0)  # 20 ticks of Deltas while the threads work
        failures = []

        def ask():
            try:
                for _ in range(40):
                    self.assertIn(name, secure.who().players)
            except Exception as e:  # noqa: BLE001 (reported below)
                failures.append(e)

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(EVENT_TIMEOUT * 4)
        self.assertEqual(failures, [])
        secure.wait_view(at(walker_name, -400, 0), EVENT_TIMEOUT)
        self.assertNoMissedDeltas(secure)
        self.assertGreater(secure.conn.pongs_received, 0)
        self.assertFalse(secure.conn.closed)

    def test_demo_script_plays_over_tls(self):
        host, port = self.tls_addr
        script = [sys.executable, os.path.join(HERE, "arena_client.py"),
                  "--host", host, "--port", str(port), "--tls"]
        run = subprocess.run([*script, "--cafile", self.server.cafile],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("both over TLSv1.", run.stdout)
        self.assertIn("both disconnect", run.stdout)
        # Without the certificate: a clear error, and a hint at --cafile.
        run = subprocess.run(script, capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, 1, run.stdout + run.stderr)
        self.assertIn("error: TLS: certificate verify failed", run.stderr)
        self.assertIn("--cafile", run.stderr)

    def test_cafile_goes_with_tls(self):
        with self.assertRaises(ValueError):
            gc.Connection(*self.tls_addr, cafile=self.server.cafile)


if __name__ == "__main__":
    unittest.main()
