"""A client for arena, gatehouse's reference game, on top of gatehouse_client.

    client = ArenaClient("127.0.0.1", 7000)
    me = client.login("alice")            # -> PlayerState
    client.say("hello")
    event = client.next_event(timeout=2)  # -> Chat / Moved / RoomEvent
    client.close()

Errors are :class:`gatehouse_client.RequestError` with ``status`` one of the
``STATUS_*`` constants below (or a framework status), :class:`Kicked` and
:class:`ConnectionClosed`.

Run it as a script to play a short scripted session against a server started with
``gatehouse serve --service arena``::

    python3 clients/python/arena_client.py --host 127.0.0.1 --port 7000
"""

from __future__ import annotations

import argparse
import os
import random
import string
import sys
import time
from typing import Callable, List, Optional, Union

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arena_pb as pb  # noqa: E402
from gatehouse_client import (  # noqa: E402
    Connection, ConnectionClosed, Kicked, Push, RequestError, RequestTimeout,
)

__all__ = [
    "ArenaClient", "UnknownPush",
    "ROUTE_LOGIN", "ROUTE_ROOMS", "ROUTE_JOIN", "ROUTE_LEAVE", "ROUTE_SAY", "ROUTE_MOVE",
    "ROUTE_WHISPER", "ROUTE_WHO", "PUSH_CHAT", "PUSH_MOVED", "PUSH_ROOM_EVENT",
    "STATUS_NOT_LOGGED_IN", "STATUS_ALREADY_LOGGED_IN", "STATUS_BAD_NAME",
    "STATUS_NO_SUCH_PLAYER", "STATUS_OUT_OF_RANGE", "STATUS_LOGIN_BUSY", "STATUS_NAMES",
    "LOBBY", "WORLD_EDGE", "MAX_TEXT", "MAX_NAME",
]

# Routes (crates/arena/src/lib.rs, `routes`).
ROUTE_LOGIN = 1
ROUTE_ROOMS = 2
ROUTE_JOIN = 3
ROUTE_LEAVE = 4
ROUTE_SAY = 5
ROUTE_MOVE = 6
ROUTE_WHISPER = 7
ROUTE_WHO = 8
PUSH_CHAT = 100
PUSH_MOVED = 101
PUSH_ROOM_EVENT = 102

# arena's statuses (crates/arena/src/lib.rs, `status`).
STATUS_NOT_LOGGED_IN = 1001
STATUS_ALREADY_LOGGED_IN = 1002
STATUS_BAD_NAME = 1003
STATUS_NO_SUCH_PLAYER = 1004
STATUS_OUT_OF_RANGE = 1005
STATUS_LOGIN_BUSY = 1006
STATUS_NAMES = {
    1001: "not_logged_in",
    1002: "already_logged_in",
    1003: "bad_name",
    1004: "no_such_player",
    1005: "out_of_range",
    1006: "login_busy",
}

LOBBY = "lobby"
WORLD_EDGE = 1000  # |x| and |y| at most this
MAX_TEXT = 256     # bytes of a chat or whisper text
MAX_NAME = 24      # characters of a player or room name


class UnknownPush:
    """A push on a route arena does not define (kept raw)."""

    def __init__(self, route: int, payload: bytes) -> None:
        self.route = route
        self.payload = payload

    def __repr__(self) -> str:
        return f"UnknownPush(route={self.route}, payload={self.payload.hex()})"


Event = Union[pb.Chat, pb.Moved, pb.RoomEvent, UnknownPush]


class ArenaClient:
    """One arena player connection. Pass ``connection=`` to wrap an existing
    :class:`Connection`; other keyword arguments go to :class:`Connection`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 7000, *,
                 connection: Optional[Connection] = None, timeout: float = 5.0,
                 **connection_options) -> None:
        self.conn = connection or Connection(host, port, **connection_options)
        self.timeout = timeout
        #: The player's state as last returned by the server (None before login).
        self.state: Optional[pb.PlayerState] = None

    # ----------------------------------------------------------------- requests

    def _call(self, route: int, message: Optional[pb.Message] = None) -> bytes:
        payload = message.encode() if message is not None else b""
        return self.conn.request(route, payload, timeout=self.timeout)

    def _state(self, payload: bytes) -> pb.PlayerState:
        self.state = pb.PlayerState.decode(payload)
        return self.state

    def login(self, name: str) -> pb.PlayerState:
        """Logs in (or creates) the player; returns the saved state. Logging in as a
        player online elsewhere kicks that connection (``duplicate_login``)."""
        reply = pb.LoginReply.decode(self._call(ROUTE_LOGIN, pb.LoginRequest(name)))
        if reply.state is None:
            raise ConnectionClosed("login reply without a state")  # a server bug
        self.state = reply.state
        return reply.state

    def rooms(self) -> List[pb.RoomInfo]:
        """The rooms in use with their player counts, sorted by name."""
        return pb.RoomList.decode(self._call(ROUTE_ROOMS)).rooms

    def join(self, room: str) -> pb.PlayerState:
        """Moves to ``room`` (created on first join)."""
        return self._state(self._call(ROUTE_JOIN, pb.JoinRoom(room)))

    def leave(self) -> pb.PlayerState:
        """Goes back to the lobby."""
        return self._state(self._call(ROUTE_LEAVE))

    def say(self, text: str) -> None:
        """Says ``text`` to the room (everyone there, this player included, gets a Chat)."""
        self._call(ROUTE_SAY, pb.Say(text))

    def move(self, x: int, y: int) -> pb.PlayerState:
        """Moves to (x, y), both in -1000..1000; the others in the room get Moved."""
        return self._state(self._call(ROUTE_MOVE, pb.Move(x, y)))

    def whisper(self, to: str, text: str) -> None:
        """Sends ``text`` to player ``to``, wherever they are (a Chat with whisper=True)."""
        self._call(ROUTE_WHISPER, pb.Whisper(to, text))

    def who(self) -> pb.WhoReply:
        """Who is online (names, sorted, at most 100), how many, how many in my room."""
        return pb.WhoReply.decode(self._call(ROUTE_WHO))

    # ------------------------------------------------------------------- pushes

    def next_event(self, timeout: Optional[float] = None) -> Event:
        """The next push, decoded: Chat, Moved, RoomEvent (or UnknownPush).

        Raises ``RequestTimeout`` (a TimeoutError) if none comes in time, and
        ``Kicked`` / ``ConnectionClosed`` once the connection has ended and every push
        received before has been returned.
        """
        push: Push = self.conn.next_push(timeout)
        message = pb.decode_push(push.route, push.payload)
        return message if message is not None else UnknownPush(push.route, push.payload)

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

    def __enter__(self) -> "ArenaClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -------------------------------------------------------------------- the demo


def _describe(event: Event) -> str:
    if isinstance(event, pb.Chat):
        if event.whisper:
            return f"{event.from_} whispers: {event.text!r}"
        return f"[{event.room}] {event.from_}: {event.text!r}"
    if isinstance(event, pb.Moved):
        return f"{event.name} moved to ({event.x}, {event.y})"
    if isinstance(event, pb.RoomEvent):
        return f"{event.name} {'entered' if event.joined else 'left'} {event.room}"
    return repr(event)


def _show_events(who: str, client: ArenaClient, wait: float = 0.3) -> None:
    for event in client.drain_events(wait):
        print(f"    {who} <- {_describe(event)}")


def _state(s: pb.PlayerState) -> str:
    return f"{s.name} in {s.room} at ({s.x}, {s.y}), {s.moves} moves, {s.logins} logins"


def demo(host: str, port: int, names: Optional[List[str]] = None) -> None:
    """Two players meet in the lobby, chat, move, whisper, and one changes rooms."""
    suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=4))
    a_name, b_name = names or [f"alice-{suffix}", f"bob-{suffix}"]
    room = f"garden-{suffix}"
    print(f"connecting to {host}:{port}")
    with ArenaClient(host, port) as alice, ArenaClient(host, port) as bob:
        print(f"{a_name} logs in: {_state(alice.login(a_name))}")
        print(f"{b_name} logs in: {_state(bob.login(b_name))}")
        _show_events(a_name, alice)

        who = alice.who()
        print(f"who: {who.online} online, {who.in_room} in {a_name}'s room: {who.players}")

        print(f"{a_name} says hello")
        alice.say(f"hello {b_name}!")
        _show_events(a_name, alice)
        _show_events(b_name, bob)

        print(f"{b_name} moves: {_state(bob.move(3, 4))}")
        _show_events(a_name, alice)

        print(f"{a_name} joins {room}: {_state(alice.join(room))}")
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
        _show_events(b_name, bob)
        rtt = alice.conn.ping()
        print(f"ping: {rtt * 1000:.2f} ms")
        print("both disconnect (the server saves their state)")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Play a short scripted arena session.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7000)
    parser.add_argument("--names", nargs=2, metavar=("ALICE", "BOB"),
                        help="the two player names (default: random)")
    args = parser.parse_args(argv)
    try:
        demo(args.host, args.port, args.names)
    except Kicked as e:
        print(f"kicked: {e.reason_name} ({e.reason_code}): {e.text}", file=sys.stderr)
        return 1
    except (ConnectionClosed, RequestError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
