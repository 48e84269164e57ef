"""arena_client without a real server: the RoomView rules (RoomState, Delta order,
missed deltas, Deltas of another room, restarts), and ArenaClient against a
scripted fake server (what login, walking and resync send, how pushes reach the
view and the events, the connection's end)."""

import os
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arena_pb as pb  # noqa: E402
import gatehouse_client as gc  # noqa: E402
from arena_client import (  # noqa: E402
    PUSH_DELTA, PUSH_ROOM_RESTARTED, PUSH_ROOM_STATE, ROUTE_INPUT, ROUTE_JOIN, ROUTE_LOGIN,
    STATUS_NOT_LOGGED_IN, ArenaClient, RoomRestarted, RoomView, UnknownPush,
)
from test_protocol_vectors import FakeServer, read_frame  # noqa: E402

TIMEOUT = 5.0


def state(room, tick, *bodies):
    return pb.RoomState(room, tick, [pb.Body(*b) for b in bodies])


def delta(room, tick, since, moved=(), entered=(), left=()):
    return pb.Delta(tick, since, [pb.Body(*b) for b in moved],
                    [pb.Body(*b) for b in entered], list(left), room)


class RoomViewRules(unittest.TestCase):
    def test_state_then_deltas_in_sequence(self):
        view = RoomView()
        self.assertEqual((view.room, view.synced, view.players), ("", False, {}))
        view.apply_state(state("lobby", 7, ("me", 0, 0), ("bo", -3, 4)))
        self.assertEqual((view.room, view.tick, view.synced), ("lobby", 7, True))
        self.assertEqual(view.players, {"me": (0, 0), "bo": (-3, 4)})

        self.assertTrue(view.apply_delta(
            delta("lobby", 8, 7, entered=[("me", 0, 0), ("cy", 5, 5)])))
        self.assertTrue(view.apply_delta(
            delta("lobby", 10, 8, moved=[("bo", -23, 4)], left=["cy"])))
        self.assertEqual(view.players, {"me": (0, 0), "bo": (-23, 4)})
        self.assertEqual((view.tick, view.deltas, view.missed, view.synced, view.states),
                         (10, 2, 0, True, 1))
        self.assertEqual(view.position("bo"), (-23, 4))
        self.assertIsNone(view.position("cy"))

    def test_left_then_entered_then_moved(self):
        view = RoomView()
        view.apply_state(state("r", 1, ("a", 1, 1)))
        # a's old connection left and its new one entered in the same tick, then moved.
        view.apply_delta(delta("r", 2, 1, left=["a"], entered=[("a", 5, 5)],
                               moved=[("a", 6, 6)]))
        self.assertEqual(view.players, {"a": (6, 6)})
        # Left and entered by different players: left applies first.
        view.apply_delta(delta("r", 3, 2, left=["a", "b"], entered=[("b", 0, 0)]))
        self.assertEqual(view.players, {"b": (0, 0)})

    def test_a_missed_delta_is_counted_and_still_applied(self):
        view = RoomView()
        view.apply_state(state("r", 4, ("a", 0, 0)))
        self.assertFalse(view.apply_delta(delta("r", 9, 6, moved=[("a", 40, 0)])))  # 4..6 lost
        self.assertEqual((view.missed, view.synced, view.tick), (1, False, 9))
        self.assertEqual(view.position("a"), (40, 0))
        self.assertTrue(view.apply_delta(delta("r", 10, 9)))
        self.assertEqual((view.missed, view.synced), (1, False))  # until a RoomState
        view.apply_state(state("r", 12, ("a", 60, 0)))  # a resync: the same room again
        self.assertEqual((view.missed, view.synced, view.states), (1, True, 2))
        self.assertTrue(view.apply_delta(delta("r", 13, 12)))
        self.assertEqual((view.missed, view.synced, view.tick), (1, True, 13))

    def test_restart_then_state_from_tick_zero(self):
        view = RoomView()
        view.apply_state(state("r", 50, ("a", 1, 2), ("b", 3, 4)))
        view.restarted("other")  # not this room
        self.assertEqual((view.restarts, view.synced), (0, True))
        view.restarted("r")
        self.assertEqual((view.restarts, view.synced), (1, False))
        # The restarted room counts ticks from 0 again; that is no missed delta. Its
        # RoomState has every member (sent at its first tick, once all are back), and
        # that tick's Delta has them all entering again: "put here".
        view.apply_state(state("r", 0, ("a", 1, 2), ("b", 3, 4)))
        self.assertEqual((view.synced, view.tick), (True, 0))
        self.assertEqual(view.players, {"a": (1, 2), "b": (3, 4)})
        self.assertTrue(view.apply_delta(delta("r", 1, 0, entered=[("a", 1, 2), ("b", 3, 4)])))
        self.assertEqual((view.missed, view.synced, view.tick), (0, True, 1))
        self.assertEqual(view.players, {"a": (1, 2), "b": (3, 4)})

    def test_a_delta_of_another_room_is_ignored(self):
        view = RoomView()
        # Before any RoomState the view has no room: no Delta belongs to it.
        self.assertTrue(view.apply_delta(delta("lobby", 5, 4, entered=[("a", 1, 1)])))
        self.assertEqual(view, RoomView())

        view.apply_state(state("lobby", 5, ("me", 0, 0), ("a", 1, 1)))
        self.assertTrue(view.apply_delta(delta("lobby", 6, 5, moved=[("a", 2, 2)])))
        # The player joined "garden": its RoomState replaces the lobby's.
        view.apply_state(state("garden", 40, ("me", 0, 0), ("g", 9, 9)))
        before = view.copy()
        # A Delta of the lobby still in flight: ignored whole. Neither a missed Delta
        # (its since is not the view's tick) nor a change (nobody moves, enters or
        # leaves, the tick stays).
        late = delta("lobby", 7, 6, moved=[("g", -1, -1)], entered=[("a", 3, 3)], left=["me"])
        self.assertTrue(view.apply_delta(late))
        self.assertEqual(view, before)
        self.assertEqual((view.room, view.tick, view.missed, view.synced, view.deltas),
                         ("garden", 40, 0, True, 1))
        # The room's own Deltas go on applying from its RoomState's tick.
        self.assertTrue(view.apply_delta(delta("garden", 41, 40, moved=[("g", 8, 9)])))
        self.assertEqual(view.players, {"me": (0, 0), "g": (8, 9)})
        self.assertEqual((view.tick, view.missed, view.deltas), (41, 0, 2))
        # Rooms are told apart by their exact names.
        self.assertTrue(view.apply_delta(delta("Garden", 99, 1, left=["g"])))
        self.assertTrue(view.apply_delta(delta("", 99, 1, left=["g"])))
        self.assertEqual((view.tick, view.missed, view.position("g")), (41, 0, (8, 9)))

    def test_copy_is_independent(self):
        view = RoomView()
        view.apply_state(state("r", 1, ("a", 0, 0)))
        copy = view.copy()
        view.apply_delta(delta("r", 2, 1, moved=[("a", 9, 9)]))
        self.assertEqual((copy.position("a"), copy.tick), ((0, 0), 1))
        self.assertEqual(copy, RoomView("r", 1, {"a": (0, 0)}, True, 0, 0, 0, 1))


def push(route, message):
    payload = message if isinstance(message, bytes) else message.encode()
    return gc.encode_frame(gc.Push(route, payload))


def answer(request, message):
    """A status-0 answer to ``request``."""
    return gc.encode_frame(gc.Response(request.id, 0, message.encode()))


class ClientAgainstAFakeServer(unittest.TestCase):
    def test_login_view_walking_restart_and_end(self):
        seen = {}

        def script(sock):
            req = read_frame(sock)
            seen["login"] = (req.route, pb.LoginRequest.decode(req.payload))
            me = pb.PlayerState("me", "lobby", 0, 0, 0, 1)
            # As arena does: the answer, then at the room's next tick the RoomState and
            # that tick's Delta, then more Deltas.
            sock.sendall(answer(req, pb.LoginReply(me))
                         + push(PUSH_ROOM_STATE, state("lobby", 3, ("me", 0, 0), ("bo", 1, 1)))
                         + push(PUSH_DELTA, delta("lobby", 4, 3, entered=[("me", 0, 0)]))
                         + push(PUSH_DELTA, delta("lobby", 6, 4, moved=[("bo", -19, 1)])))
            seen["inputs"] = [read_frame(sock) for _ in range(4)]
            sock.sendall(push(PUSH_DELTA, delta("lobby", 9, 7, moved=[("me", 20, -20)]))  # 7 lost
                         # Another room's Delta: an event, but not the view's.
                         + push(PUSH_DELTA, delta("old", 10, 9, moved=[("bo", 500, 500)]))
                         + push(100, pb.Chat(from_="bo", text="hi", room="lobby"))
                         + push(PUSH_ROOM_RESTARTED, b"lobby")
                         # After a restart the RoomState has every member.
                         + push(PUSH_ROOM_STATE, state("lobby", 0, ("me", 20, -20), ("bo", 5, 5)))
                         + push(PUSH_DELTA,
                                delta("lobby", 1, 0, entered=[("me", 20, -20), ("bo", 5, 5)]))
                         + push(999, b"\x01"))
            read_frame(sock)  # the client's next request: answered with a kick
            sock.sendall(gc.encode_frame(gc.Kick(14, "room lobby closed after crashing")))
            sock.shutdown(socket.SHUT_RDWR)

        server = FakeServer(script)
        client = ArenaClient("127.0.0.1", server.port, heartbeat=None)
        try:
            me = client.login("me", "correct horse")
            self.assertEqual((me.name, me.logins), ("me", 1))
            self.assertEqual(seen["login"], (ROUTE_LOGIN, pb.LoginRequest("me", "correct horse")))
            view = client.wait_view(lambda v: v.tick == 6, TIMEOUT)
            self.assertEqual(view.players, {"me": (0, 0), "bo": (-19, 1)})
            self.assertEqual(client.position(), (0, 0))

            client.walk(1, -1)
            client.goto(-1000, 1000)
            client.stop()
            client.walk(0, 0)
            for bad in ((2, 0), (0, -2), (True, 0)):
                with self.assertRaises(ValueError):
                    client.walk(*bad)
            for bad in ((1001, 0), (0, -1001), (0.5, 0)):
                with self.assertRaises(ValueError):
                    client.goto(*bad)

            # Past the restart: a fresh RoomState from tick 0, then its first delta. The
            # other room's Delta was left out (not applied, not counted, not missed).
            view = client.wait_view(lambda v: v.restarts == 1 and v.deltas == 4, TIMEOUT)
            self.assertEqual((view.room, view.tick, view.missed, view.synced, view.states),
                             ("lobby", 1, 1, True, 2))
            self.assertEqual(view.players, {"me": (20, -20), "bo": (5, 5)})

            # Every push is an event too, in order, after the view took it in.
            events = client.drain_events(TIMEOUT)
            kinds = [type(e).__name__ for e in events]
            self.assertEqual(kinds, ["RoomState", "Delta", "Delta", "Delta", "Delta", "Chat",
                                     "RoomRestarted", "RoomState", "Delta", "UnknownPush"])
            self.assertEqual(events[4].room, "old")
            self.assertEqual(events[6], RoomRestarted("lobby"))
            self.assertIsInstance(events[9], UnknownPush)

            with self.assertRaises(gc.Kicked) as caught:
                client.who()
            self.assertEqual(caught.exception.reason_name, "room_closed")
            with self.assertRaises(gc.Kicked):
                client.next_event(TIMEOUT)
            with self.assertRaises(gc.Kicked):
                client.wait_view(lambda v: False, TIMEOUT)
        finally:
            client.close()
        server.join()

        inputs = seen["inputs"]
        self.assertTrue(all(isinstance(f, gc.Notify) and f.route == ROUTE_INPUT for f in inputs))
        self.assertEqual([pb.Input.decode(f.payload) for f in inputs], [
            pb.Input(1, -1), pb.Input(target=pb.Position(-1000, 1000)), pb.Input(), pb.Input()])
        self.assertEqual(inputs[2].payload, b"")  # stop: an empty Input

    def test_resync_joins_the_room_again_and_waits_for_its_state(self):
        seen = {}

        def script(sock):
            req = read_frame(sock)
            me = pb.PlayerState("me", "r", 5, 5, 0, 2)
            sock.sendall(answer(req, pb.LoginReply(me))
                         + push(PUSH_ROOM_STATE, state("r", 3, ("me", 5, 5), ("bo", 0, 0)))
                         + push(PUSH_DELTA, delta("r", 5, 4, moved=[("bo", 1, 1)])))  # 4 lost
            req = read_frame(sock)
            seen["resync"] = (req.route, pb.JoinRoom.decode(req.payload))
            # The answer; a Delta already on its way; then, at the next tick, the whole
            # room and that tick's Delta.
            sock.sendall(answer(req, me)
                         + push(PUSH_DELTA, delta("r", 6, 5, moved=[("bo", 2, 2)]))
                         + push(PUSH_ROOM_STATE,
                                state("r", 6, ("me", 5, 5), ("bo", 2, 2), ("cy", 0, 0)))
                         + push(PUSH_DELTA, delta("r", 7, 6, moved=[("cy", 1, 1)])))
            req = read_frame(sock)
            seen["again"] = (req.route, pb.JoinRoom.decode(req.payload))
            sock.sendall(answer(req, me))  # and no RoomState this time
            while sock.recv(4096):
                pass

        server = FakeServer(script)
        with ArenaClient("127.0.0.1", server.port, heartbeat=None) as client:
            client.login("me", "correct horse")
            view = client.wait_view(lambda v: v.deltas == 1, TIMEOUT)
            self.assertEqual((view.missed, view.synced), (1, False))

            whole = client.resync(TIMEOUT)
            self.assertEqual(seen["resync"], (ROUTE_JOIN, pb.JoinRoom("r")))
            self.assertEqual(whole, state("r", 6, ("me", 5, 5), ("bo", 2, 2), ("cy", 0, 0)))
            view = client.wait_view(lambda v: v.tick == 7, TIMEOUT)
            self.assertEqual((view.synced, view.missed, view.states), (True, 1, 2))
            self.assertEqual(view.players, {"me": (5, 5), "bo": (2, 2), "cy": (1, 1)})

            # A RoomState that does not come (the one before does not count).
            with self.assertRaises(gc.RequestTimeout):
                client.resync(0.3)
            self.assertEqual(seen["again"], (ROUTE_JOIN, pb.JoinRoom("r")))
        server.join()

    def test_resync_before_login_is_refused_by_the_server(self):
        def script(sock):
            req = read_frame(sock)
            # What arena answers on every route but login before it.
            payload = (req.route, pb.JoinRoom.decode(req.payload))
            sock.sendall(gc.encode_frame(gc.Response(
                req.id, STATUS_NOT_LOGGED_IN, repr(payload).encode())))
            while sock.recv(4096):
                pass

        server = FakeServer(script)
        with ArenaClient("127.0.0.1", server.port, heartbeat=None) as client:
            with self.assertRaises(gc.RequestError) as caught:
                client.resync(TIMEOUT)
            self.assertEqual(caught.exception.status, STATUS_NOT_LOGGED_IN)
            self.assertEqual(caught.exception.text, repr((ROUTE_JOIN, pb.JoinRoom(""))))
        server.join()

    def test_room_events_off_keeps_the_view_only(self):
        def script(sock):
            read_frame(sock)  # an empty frame from the test: the client is there
            sock.sendall(push(PUSH_ROOM_STATE, state("r", 1, ("a", 0, 0)))
                         + push(PUSH_DELTA, delta("r", 2, 1, moved=[("a", 1, 0)]))
                         + push(100, pb.Chat(from_="a", text="x", room="r")))
            while sock.recv(4096):
                pass

        server = FakeServer(script)
        with ArenaClient("127.0.0.1", server.port, heartbeat=None, room_events=False) as client:
            client.conn.send_empty()
            self.assertEqual(client.wait_view(lambda v: v.tick == 2, TIMEOUT).position("a"), (1, 0))
            self.assertEqual(client.next_event(TIMEOUT), pb.Chat(from_="a", text="x", room="r"))
            self.assertEqual(client.drain_events(0.1), [])
        server.join()


if __name__ == "__main__":
    unittest.main()
