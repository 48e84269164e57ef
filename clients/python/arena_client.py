"""A client for arena, gatehouse's reference game, on top of gatehouse_client.

    client = ArenaClient("127.0.0.1", 7000)
    me = client.login("alice", "correct horse")  # -> PlayerState
    client.say("hello")
    client.goto(100, -50)                        # walk there (20 units a tick)
    view = client.wait_view(lambda v: v.position("alice") == (100, -50))
    event = client.next_event(timeout=2)         # -> Chat / RoomState / Delta / ...
    whole = client.resync()                      # the whole room again (after a missed Delta)
    client.close()

What this file owns: arena's routes and statuses, :class:`ArenaClient` (requests,
walking, resync, pushes), and :class:`RoomView`, the live picture of the player's
room kept from the RoomState and Delta pushes (players and positions, the room's
tick, missed deltas, restarts; Deltas of a room just left are ignored). The messages
themselves are in ``arena_pb``; the wire protocol in ``gatehouse_client``.

A background thread reads the connection's pushes as they come: it applies
RoomState, Delta and the framework's room-restarted push (route 0xff01) to the
view, then queues every push, decoded, for :meth:`ArenaClient.next_event`.

Errors are :class:`gatehouse_client.RequestError` with ``status`` one of the
``STATUS_*`` constants below (or a framework status), :class:`Kicked` and
:class:`ConnectionClosed`.

Over TLS: ``ArenaClient(host, port, tls=True)`` (the server's certificate checked
against the system's trust store), or with ``cafile="dev-cert.pem"`` to trust a
development certificate alone; see :class:`gatehouse_client.Connection`.

Run it as a script to play a short scripted session against a server started with
``gatehouse serve --service arena``::

    python3 clients/python/arena_client.py --host 127.0.0.1 --port 7000
    python3 clients/python/arena_client.py --port 7443 --tls --cafile dev-cert.pem
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import ssl
import string
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arena_pb as pb  # noqa: E402
from gatehouse_client import (  # noqa: E402
    ROUTE_ROOM_RESTARTED, Connection, ConnectionClosed, Kicked, Push, RequestError,
    RequestTimeout,
)

__all__ = [
    "ArenaClient", "RoomView", "RoomRestarted", "UnknownPush",
    "ROUTE_LOGIN", "ROUTE_ROOMS", "ROUTE_JOIN", "ROUTE_LEAVE", "ROUTE_SAY", "ROUTE_MOVE",
    "ROUTE_WHISPER", "ROUTE_WHO", "ROUTE_INPUT", "ROUTE_CRASH_ROOM",
    "PUSH_CHAT", "PUSH_ROOM_STATE", "PUSH_DELTA", "PUSH_ROOM_RESTARTED",
    "STATUS_NOT_LOGGED_IN", "STATUS_ALREADY_LOGGED_IN", "STATUS_BAD_NAME",
    "STATUS_NO_SUCH_PLAYER", "STATUS_OUT_OF_RANGE", "STATUS_LOGIN_BUSY",
    "STATUS_WRONG_PASSWORD", "STATUS_TOO_MANY_ATTEMPTS", "STATUS_BAD_PASSWORD",
    "STATUS_ROOM_FULL", "STATUS_TOO_MANY_ACCOUNTS", "STATUS_NAMES",
    "LOBBY", "WORLD_EDGE", "MAX_TEXT", "MAX_NAME", "MIN_PASSWORD", "MAX_PASSWORD",
    "TICKS_PER_SECOND", "SPEED",
]

# Routes (proto/arena.proto; crates/arena/src/lib.rs, `routes`).
ROUTE_LOGIN = 1
ROUTE_ROOMS = 2
ROUTE_JOIN = 3
ROUTE_LEAVE = 4
ROUTE_SAY = 5
ROUTE_MOVE = 6
ROUTE_WHISPER = 7
ROUTE_WHO = 8
ROUTE_INPUT = 9        # a notify: no answer
ROUTE_CRASH_ROOM = 10  # fault injection only (403 otherwise)
PUSH_CHAT = 100
PUSH_ROOM_STATE = 103
PUSH_DELTA = 104
PUSH_ROOM_RESTARTED = ROUTE_ROOM_RESTARTED  # the framework's, 0xff01: the room's name

# arena's statuses (proto/arena.proto, at the top; crates/arena/src/lib.rs, `status`).
STATUS_NOT_LOGGED_IN = 1001
STATUS_ALREADY_LOGGED_IN = 1002
STATUS_BAD_NAME = 1003
STATUS_NO_SUCH_PLAYER = 1004
STATUS_OUT_OF_RANGE = 1005
STATUS_LOGIN_BUSY = 1006
STATUS_WRONG_PASSWORD = 1007
STATUS_TOO_MANY_ATTEMPTS = 1008  # wrong passwords for this name or address: wait a minute
STATUS_BAD_PASSWORD = 1009       # not 8 to 128 bytes
STATUS_ROOM_FULL = 1010             # the room, or its share for this address, is full
STATUS_TOO_MANY_ACCOUNTS = 1011     # this address created its share of accounts: later
STATUS_NAMES = {
    1001: "not_logged_in",
    1002: "already_logged_in",
    1003: "bad_name",
    1004: "no_such_player",
    1005: "out_of_range",
    1006: "login_busy",
    1007: "wrong_password",
    1008: "too_many_attempts",
    1009: "bad_password",
    1010: "room_full",
    1011: "too_many_accounts",
}

LOBBY = "lobby"
WORLD_EDGE = 1000     # |x| and |y| at most this
MAX_TEXT = 256        # bytes of a chat or whisper text
MAX_NAME = 24         # characters of a player or room name
MIN_PASSWORD = 8      # bytes of a password (UTF-8)
MAX_PASSWORD = 128
TICKS_PER_SECOND = 20  # a room's ticks (the server's default)
SPEED = 20             # units a walking player covers per tick, along each axis


@dataclass(frozen=True)
class RoomRestarted:
    """The framework's push 0xff01: the player's room crashed and restarted. The
    player is still in it; arena sends a fresh RoomState (every member, from tick 0)
    at the restarted room's next tick."""
    room: str


class UnknownPush:
    """A push on a route arena does not define (kept raw)."""

    def __init__(self, route: int, payload: bytes) -> None:
        self.route = route
        self.payload = payload

    def __repr__(self) -> str:
        return f"UnknownPush(route={self.route}, payload={self.payload.hex()})"


Event = Union[pb.Chat, pb.RoomState, pb.Delta, RoomRestarted, UnknownPush]


# ------------------------------------------------------------------- room view


@dataclass
class RoomView:
    """The player's room as the pushes describe it.

    A RoomState replaces the whole view; a Delta is applied in the order the proto
    asks (``left``, then ``entered``, then ``moved``). A Delta of another room than the
    view's (one the player just left, or sent before the new room's RoomState came) is
    ignored. A Delta whose ``since`` is not the tick of the previous Delta or RoomState
    means at least one was missed: it is still applied (positions are absolute, so
    they stay right), ``missed`` is counted and ``synced`` stays False until the next
    RoomState (:meth:`ArenaClient.resync` asks for one).
    """

    room: str = ""    # "" before the first RoomState
    tick: int = 0     # the tick of the last RoomState or Delta applied
    #: name -> (x, y), the player itself included.
    players: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    synced: bool = False  # a RoomState was applied and no Delta missed since
    missed: int = 0       # Deltas seen out of sequence (since != tick), over the view's life
    deltas: int = 0       # Deltas applied
    restarts: int = 0     # room-restarted pushes for the view's room
    states: int = 0       # RoomStates applied, over the view's life

    def apply_state(self, state: pb.RoomState) -> None:
        """A RoomState: the room from scratch (after a join, a resync, or a restart,
        where the tick starts again from 0)."""
        self.room = state.room
        self.tick = state.tick
        self.players = {body.name: (body.x, body.y) for body in state.players}
        self.synced = True
        self.states += 1

    def apply_delta(self, delta: pb.Delta) -> bool:
        """A Delta; returns False when it shows that one was missed before it. A Delta
        of another room (one just left) is ignored."""
        if delta.room != self.room:
            return True
        in_sequence = delta.since == self.tick
        if not in_sequence:
            self.missed += 1
            self.synced = False
        for name in delta.left:
            self.players.pop(name, None)
        for body in delta.entered:
            self.players[body.name] = (body.x, body.y)
        for body in delta.moved:
            self.players[body.name] = (body.x, body.y)
        self.tick = delta.tick
        self.deltas += 1
        return in_sequence

    def restarted(self, room: str) -> None:
        """The room-restarted push: the view is stale until the RoomState that follows."""
        if room == self.room:
            self.restarts += 1
            self.synced = False

    def position(self, name: str) -> Optional[Tuple[int, int]]:
        """Where ``name`` stands, or None if not in the room."""
        return self.players.get(name)

    def copy(self) -> "RoomView":
        return RoomView(self.room, self.tick, dict(self.players), self.synced,
                        self.missed, self.deltas, self.restarts, self.states)


# ---------------------------------------------------------------------- client

_END = object()  # event queue sentinel: the connection ended


class ArenaClient:
    """One arena player connection. Pass ``connection=`` to wrap an existing
    :class:`Connection` (one made without ``on_push``, and whose pushes nobody else
    reads); other keyword arguments go to :class:`Connection`: ``tls=True`` and
    ``cafile=`` for TLS, ``heartbeat=``, ``connect_timeout=``.

    ``room_events=False`` keeps RoomState and Delta pushes out of :meth:`next_event`
    (they still update :attr:`view`): a client that only watches the view then
    queues nothing while players walk.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 7000, *,
                 connection: Optional[Connection] = None, timeout: float = 5.0,
                 room_events: bool = True, **connection_options) -> None:
        self.conn = connection or Connection(host, port, **connection_options)
        self.timeout = timeout
        self.room_events = room_events
        #: The player's state as last returned by the server (None before login). Its
        #: position is that of the last answer; the live one is in :attr:`view`.
        self.state: Optional[pb.PlayerState] = None
        self._view = RoomView()
        self._last_room_state: Optional[pb.RoomState] = None  # the last one applied
        self._view_changed = threading.Condition()
        self._events: "queue.Queue[object]" = queue.Queue()
        self._end: Optional[BaseException] = None  # why the pushes stopped
        self._pump = threading.Thread(target=self._pump_pushes, daemon=True,
                                      name=f"arena-pushes-{self.conn.peer[1]}")
        self._pump.start()

    # ----------------------------------------------------------------- requests

    def _call(self, route: int, message: Optional[pb.Message] = None) -> bytes:
        payload = message.encode() if message is not None else b""
        return self.conn.request(route, payload, timeout=self.timeout)

    def _state(self, payload: bytes) -> pb.PlayerState:
        self.state = pb.PlayerState.decode(payload)
        return self.state

    def login(self, name: str, password: str) -> pb.PlayerState:
        """Logs in, or creates the player with ``password`` (8 to 128 bytes) on the
        first login of ``name``; returns the saved state. Refusals: STATUS_BAD_NAME,
        STATUS_BAD_PASSWORD, STATUS_WRONG_PASSWORD, STATUS_TOO_MANY_ATTEMPTS (wait a
        minute), STATUS_LOGIN_BUSY (try again), STATUS_ROOM_FULL,
        STATUS_TOO_MANY_ACCOUNTS (try later). Logging in as a player online
        elsewhere kicks that connection (``duplicate_login``). The server kicks
        ``login_timeout`` a connection not logged in within 30 s.
        The room's RoomState push follows, at the room's next tick."""
        reply = pb.LoginReply.decode(
            self._call(ROUTE_LOGIN, pb.LoginRequest(name, password)))
        if reply.state is None:
            raise ConnectionClosed("login reply without a state")  # a server bug
        self.state = reply.state
        return reply.state

    def rooms(self) -> List[pb.RoomInfo]:
        """The rooms in use with their player counts, sorted by name."""
        return pb.RoomList.decode(self._call(ROUTE_ROOMS)).rooms

    def join(self, room: str) -> pb.PlayerState:
        """Moves to ``room`` (created on first join; STATUS_ROOM_FULL if full); its
        RoomState push follows, at the room's next tick. Joining the room the player is
        in sends a fresh RoomState (a resync after a missed Delta: see :meth:`resync`)."""
        return self._state(self._call(ROUTE_JOIN, pb.JoinRoom(room)))

    def resync(self, timeout: Optional[float] = None) -> pb.RoomState:
        """Asks for the whole room again (a JOIN of the room the player is in, as the
        proto says to do after a missed Delta) and waits for the RoomState: returns the
        first RoomState of that room applied to the view after the request was sent
        (the view is then synced). ``timeout`` (default: the client's) bounds the
        wait for it (``RequestTimeout``); STATUS_NOT_LOGGED_IN before login."""
        room = self.state.room if self.state is not None else ""
        with self._view_changed:
            seen = self._view.states
        state = self.join(room)
        found: List[pb.RoomState] = []

        def arrived(view: RoomView) -> bool:
            # Called under the view's lock, which the pump holds while it applies a
            # RoomState and keeps it: the two agree here.
            if view.states > seen and view.room == state.room:
                assert self._last_room_state is not None
                found.append(self._last_room_state)
                return True
            return False

        self.wait_view(arrived, self.timeout if timeout is None else timeout)
        return found[0]

    def leave(self) -> pb.PlayerState:
        """Goes back to the lobby."""
        return self._state(self._call(ROUTE_LEAVE))

    def say(self, text: str) -> None:
        """Says ``text`` to the room (everyone there, this player included, gets a Chat)."""
        self._call(ROUTE_SAY, pb.Say(text))

    def move(self, x: int, y: int) -> pb.PlayerState:
        """Stands at (x, y) at once, both in -1000..1000 (it stops any walk); everyone in
        the room, this player included, sees it in the next Delta."""
        return self._state(self._call(ROUTE_MOVE, pb.Move(x, y)))

    def whisper(self, to: str, text: str) -> None:
        """Sends ``text`` to player ``to``, wherever they are (a Chat with whisper=True)."""
        self._call(ROUTE_WHISPER, pb.Whisper(to, text))

    def who(self) -> pb.WhoReply:
        """Who is online (names, sorted, at most 100), how many, how many in my room."""
        return pb.WhoReply.decode(self._call(ROUTE_WHO))

    def crash_room(self) -> None:
        """Crashes the player's room (fault injection: status 403 unless the server
        runs with it). The room restarts: a RoomRestarted event, then a RoomState."""
        self._call(ROUTE_CRASH_ROOM)

    # ------------------------------------------------------------------ walking
    # Input is a notify: no answer, and nothing happens before login. The walk shows
    # in the Deltas, at SPEED units per tick.

    def walk(self, dx: int, dy: int) -> None:
        """Walks in the direction (dx, dy), each -1, 0 or 1, until the next walk, goto
        or stop (or the edge of the world)."""
        for d in (dx, dy):
            if d not in (-1, 0, 1) or isinstance(d, bool):
                raise ValueError(f"a direction is -1, 0 or 1, got {d!r}")
        self.conn.notify(ROUTE_INPUT, pb.Input(dx, dy).encode())

    def goto(self, x: int, y: int) -> None:
        """Walks to (x, y), both in -1000..1000, and stops there."""
        for v in (x, y):
            if not isinstance(v, int) or isinstance(v, bool) or abs(v) > WORLD_EDGE:
                raise ValueError(f"a coordinate is in -{WORLD_EDGE}..{WORLD_EDGE}, got {v!r}")
        self.conn.notify(ROUTE_INPUT, pb.Input(target=pb.Position(x, y)).encode())

    def stop(self) -> None:
        """Stops walking."""
        self.conn.notify(ROUTE_INPUT, pb.Input().encode())

    # ---------------------------------------------------------------- room view

    @property
    def view(self) -> RoomView:
        """A copy of the room view as it is now."""
        with self._view_changed:
            return self._view.copy()

    def position(self) -> Optional[Tuple[int, int]]:
        """Where this player stands in the room view (None before login or its RoomState)."""
        if self.state is None:
            return None
        with self._view_changed:
            return self._view.position(self.state.name)

    def wait_view(self, match: Callable[[RoomView], bool],
                  timeout: float = 5.0) -> RoomView:
        """Waits until ``match(view)`` is true and returns a copy of that view;
        ``RequestTimeout`` if it is not within ``timeout`` seconds, and the
        connection's end (``Kicked`` / ``ConnectionClosed``) if it ends first."""
        deadline = time.monotonic() + timeout
        with self._view_changed:
            while True:
                if match(self._view):
                    return self._view.copy()
                if self._end is not None:
                    raise self._end
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RequestTimeout(f"the room view did not match in {timeout} s")
                self._view_changed.wait(left)

    # ------------------------------------------------------------------- pushes

    def _pump_pushes(self) -> None:
        """The push thread: view first, then the event queue, until the connection ends."""
        while True:
            try:
                push: Push = self.conn.next_push(None)
            except ConnectionClosed as end:  # Kicked included
                self._finish(end)
                return
            try:
                event = self._decode(push)
            except pb.DecodeError as e:
                # A push arena cannot read: the caller hears of it at next_event.
                self._events.put(e)
                continue
            with self._view_changed:
                if isinstance(event, pb.RoomState):
                    self._view.apply_state(event)
                    self._last_room_state = event
                elif isinstance(event, pb.Delta):
                    self._view.apply_delta(event)
                elif isinstance(event, RoomRestarted):
                    self._view.restarted(event.room)
                # Queued under the lock: once the view shows a push, its event is queued.
                if self.room_events or not isinstance(event, (pb.RoomState, pb.Delta)):
                    self._events.put(event)
                self._view_changed.notify_all()

    def _finish(self, end: BaseException) -> None:
        with self._view_changed:
            self._end = end
            self._view_changed.notify_all()
        self._events.put(_END)

    @staticmethod
    def _decode(push: Push) -> Event:
        if push.route == PUSH_ROOM_RESTARTED:
            return RoomRestarted(push.payload.decode("utf-8", "replace"))
        message = pb.decode_push(push.route, push.payload)
        return message if message is not None else UnknownPush(push.route, push.payload)

    def next_event(self, timeout: Optional[float] = None) -> Event:
        """The next push, decoded: Chat, RoomState, Delta, RoomRestarted (or
        UnknownPush). The room view already includes it.

        Raises ``RequestTimeout`` (a TimeoutError) if none comes in time, and
        ``Kicked`` / ``ConnectionClosed`` once the connection has ended and every push
        received before has been returned (``arena_pb.DecodeError`` for a push that
        could not be decoded).
        """
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            raise RequestTimeout(f"no push in {timeout} s") from None
        if item is _END:
            self._events.put(_END)  # keep telling later callers
            assert self._end is not None
            raise self._end
        if isinstance(item, pb.DecodeError):
            raise item
        return item  # type: ignore[return-value]

    def wait_for(self, match: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        """The first event for which ``match(event)`` is true, skipping (and dropping)
        the others; ``RequestTimeout`` if none comes within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestTimeout(f"no matching event in {timeout} s")
            event = self.next_event(left)
            if match(event):
                return event

    def drain_events(self, wait: float = 0.0) -> List[Event]:
        """Every event already received (waiting up to ``wait`` s for the first one)."""
        events: List[Event] = []
        try:
            events.append(self.next_event(wait))
            while True:
                events.append(self.next_event(0))
        except RequestTimeout:
            pass
        return events

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Disconnects; the server saves the player's state."""
        self.conn.close()
        if threading.current_thread() is not self._pump:
            self._pump.join(5)

    def __enter__(self) -> "ArenaClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -------------------------------------------------------------------- the demo


def _bodies(bodies: List[pb.Body]) -> str:
    return ", ".join(f"{b.name} ({b.x}, {b.y})" for b in bodies)


def _describe(event: Event) -> str:
    if isinstance(event, pb.Chat):
        if event.whisper:
            return f"{event.from_} whispers: {event.text!r}"
        return f"[{event.room}] {event.from_}: {event.text!r}"
    if isinstance(event, pb.RoomState):
        return f"room {event.room} at tick {event.tick}: {_bodies(event.players)}"
    if isinstance(event, pb.Delta):
        parts = [f"tick {event.tick} (since {event.since})"]
        if event.left:
            parts.append("left: " + ", ".join(event.left))
        if event.entered:
            parts.append("entered: " + _bodies(event.entered))
        if event.moved:
            parts.append("moved: " + _bodies(event.moved))
        return "; ".join(parts)
    if isinstance(event, RoomRestarted):
        return f"room {event.room} restarted"
    return repr(event)


def _show_events(who: str, client: ArenaClient, wait: float = 0.3) -> None:
    for event in client.drain_events(wait):
        print(f"    {who} <- {_describe(event)}")


def _show_view(who: str, client: ArenaClient) -> None:
    v = client.view
    players = ", ".join(f"{n} {p}" for n, p in sorted(v.players.items()))
    print(f"    {who} sees {v.room} at tick {v.tick}: {players}"
          f" ({v.missed} deltas missed)")


def _state(s: pb.PlayerState) -> str:
    return f"{s.name} in {s.room} at ({s.x}, {s.y}), {s.moves} moves, {s.logins} logins"


def demo(host: str, port: int, names: Optional[List[str]] = None,
         password: str = "demo-password", **connection_options) -> None:
    """Two players meet in the lobby, chat, move, walk, whisper, and one changes rooms.
    ``connection_options`` go to both players' :class:`Connection` (e.g. ``tls=True``)."""
    suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=4))
    a_name, b_name = names or [f"alice-{suffix}", f"bob-{suffix}"]
    room = f"garden-{suffix}"
    scheme = "tls" if connection_options.get("tls") else "tcp"
    print(f"connecting to {scheme}://{host}:{port}")
    with ArenaClient(host, port, **connection_options) as alice, \
            ArenaClient(host, port, **connection_options) as bob:
        if alice.conn.tls_version:
            print(f"both over {alice.conn.tls_version}")
        print(f"{a_name} logs in: {_state(alice.login(a_name, password))}")
        print(f"{b_name} logs in: {_state(bob.login(b_name, password))}")
        alice.wait_view(lambda v: b_name in v.players)
        _show_events(a_name, alice)

        who = alice.who()
        print(f"who: {who.online} online, {who.in_room} in {a_name}'s room: {who.players}")

        print(f"{a_name} says hello")
        alice.say(f"hello {b_name}!")
        _show_events(a_name, alice)
        _show_events(b_name, bob)

        print(f"{b_name} is placed: {_state(bob.move(3, 4))}")
        alice.wait_view(lambda v: v.position(b_name) == (3, 4))
        _show_events(a_name, alice)

        print(f"{b_name} walks to (60, -40)")
        bob.goto(60, -40)
        alice.wait_view(lambda v: v.position(b_name) == (60, -40))
        _show_events(a_name, alice)
        _show_view(a_name, alice)

        print(f"{a_name} joins {room}: {_state(alice.join(room))}")
        alice.wait_view(lambda v: v.room == room)
        bob.wait_view(lambda v: a_name not in v.players)
        _show_events(a_name, alice)
        _show_events(b_name, bob)

        print(f"{b_name} whispers to {a_name}")
        bob.whisper(a_name, "psst, over here")
        _show_events(a_name, alice)

        print("rooms:", ", ".join(f"{r.name} ({r.players})" for r in alice.rooms()))

        print(f"{a_name} tries to move off the map")
        try:
            alice.move(5000, 0)
        except RequestError as e:
            print(f"    refused: status {e.status} ({STATUS_NAMES.get(e.status, '?')}): {e.text}")

        print(f"{a_name} leaves for the lobby: {_state(alice.leave())}")
        bob.wait_view(lambda v: a_name in v.players)
        _show_events(b_name, bob)
        _show_view(b_name, bob)
        rtt = alice.conn.ping()
        print(f"ping: {rtt * 1000:.2f} ms")
        print("both disconnect (the server saves their state)")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Play a short scripted arena session.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7000)
    parser.add_argument("--names", nargs=2, metavar=("ALICE", "BOB"),
                        help="the two player names (default: random)")
    parser.add_argument("--password", default="demo-password",
                        help="both players' password, 8 to 128 bytes (set on their "
                             "first login; default: %(default)s)")
    parser.add_argument("--tls", action="store_true",
                        help="connect over TLS (to a tls:// listener); the certificate "
                             "must be valid for --host")
    parser.add_argument("--cafile", metavar="PEM",
                        help="with --tls: trust only this certificate file (e.g. the "
                             "dev-cert.pem of `gatehouse dev-cert`) instead of the "
                             "system's trust store")
    args = parser.parse_args(argv)
    if args.cafile and not args.tls:
        parser.error("--cafile goes with --tls")
    tls = {"tls": True, "cafile": args.cafile} if args.tls else {}
    try:
        demo(args.host, args.port, args.names, args.password, **tls)
    except ssl.SSLCertVerificationError as e:
        hint = "" if args.cafile else " (a development certificate? pass it with --cafile)"
        print(f"error: TLS: certificate verify failed: {e.verify_message}{hint}",
              file=sys.stderr)
        return 1
    except Kicked as e:
        print(f"kicked: {e.reason_name} ({e.reason_code}): {e.text}", file=sys.stderr)
        return 1
    except (ConnectionClosed, RequestError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
