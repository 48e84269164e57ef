"""arena_pb: the hand-written proto3 codec of the arena messages (hand-worked
encodings, decoding rules, malformed input, random round trips)."""

import os
import random
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arena_pb as pb  # noqa: E402


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


class Varints(unittest.TestCase):
    def test_round_trip(self):
        for value, encoded in ((0, "00"), (1, "01"), (127, "7f"), (128, "8001"),
                               (300, "ac02"), ((1 << 64) - 1, "ffffffffffffffffff01")):
            with self.subTest(value):
                self.assertEqual(pb.encode_varint(value).hex(), encoded)
                self.assertEqual(pb.decode_varint(h(encoded), 0), (value, len(h(encoded))))

    def test_bad_varints(self):
        for data in ("", "80", "ffff", "ffffffffffffffffff02", "ffffffffffffffffffff01"):
            with self.subTest(data):
                with self.assertRaises(pb.DecodeError):
                    pb.decode_varint(h(data), 0)
        with self.assertRaises(ValueError):
            pb.encode_varint(-1)


class KnownEncodings(unittest.TestCase):
    """Bytes worked out by hand from the protobuf encoding rules."""

    CASES = [
        (pb.Move(x=-1, y=2), "0801 1004"),                       # zigzag: -1 -> 1, 2 -> 4
        (pb.Move(x=1000, y=-1000), "08d00f 10cf0f"),
        (pb.Move(x=-(1 << 31), y=(1 << 31) - 1), "08ffffffff0f 10feffffff0f"),
        (pb.Move(), ""),                                         # proto3: defaults omitted
        (pb.LoginRequest("alice"), "0a05616c696365"),             # no password: omitted
        (pb.LoginRequest("åb"), "0a03c3a562"),                    # length in bytes
        (pb.LoginRequest("alice", "password1"), "0a05616c696365 1209 70617373776f726431"),
        (pb.LoginRequest(password="pässwörd"), "120a 70c3a4737377c3b67264"),
        (pb.Say(""), ""),
        (pb.Whisper("bo", "hi"), "0a02626f 12026869"),
        (pb.JoinRoom("r1"), "0a027231"),
        (pb.PlayerState("a", "lobby", 7, -3, 300, 2),
         "0a0161 12056c6f626279 180e 2005 28ac02 3002"),
        (pb.PlayerState("a", password_hash="$h"), "0a0161 3a02 2468"),  # field 7
        (pb.LoginReply(pb.PlayerState("a")), "0a03 0a0161"),
        (pb.LoginReply(pb.PlayerState()), "0a00"),                # present but empty
        (pb.LoginReply(), ""),
        (pb.RoomList([pb.RoomInfo("lobby", 2), pb.RoomInfo("x", 0)]),
         "0a09 0a056c6f626279 1002 0a03 0a0178"),
        (pb.WhoReply(["a", "", "b"], online=3, in_room=1),
         "0a0161 0a00 0a0162 1003 1801"),                         # repeated: empty kept
        (pb.Chat(from_="bob", text="hi", room="", whisper=True),
         "0a03626f62 12026869 2001"),
        # Walking: a direction, a target (a nested Position), or nothing (stop).
        (pb.Position(-1000, 1000), "08cf0f 10d00f"),
        (pb.Input(dx=-1, dy=1), "0801 1002"),
        (pb.Input(dx=1, dy=-1), "0802 1001"),
        (pb.Input(), ""),                                         # stop: empty payload
        (pb.Input(target=pb.Position(-5, 7)), "1a04 0809 100e"),
        (pb.Input(target=pb.Position()), "1a00"),                 # walk to (0, 0), not stop
        # The room: bodies, the whole state, and one tick's delta.
        (pb.Body("bo", -3, 4), "0a02626f 1005 1808"),
        (pb.Body("n", 0, -1), "0a016e 1801"),
        (pb.Body(x=-(1 << 31), y=(1 << 31) - 1), "10ffffffff0f 18feffffff0f"),
        (pb.RoomState("lobby", 42, [pb.Body("a"), pb.Body("bo", -3, 4)]),
         "0a056c6f626279 102a 1a03 0a0161 1a08 0a02626f10051808"),
        (pb.RoomState("r", 0, []), "0a0172"),                     # empty repeated: no bytes
        (pb.RoomState("r", players=[pb.Body()]), "0a0172 1a00"),  # one empty body is kept
        # Delta.room is field 6, length-delimited: key 6 << 3 | 2 = 0x32.
        (pb.Delta(tick=2, since=1, room="r"), "0802 1001 3201 72"),  # nothing changed
        (pb.Delta(tick=300, since=299, moved=[pb.Body("a", -1, -1)],
                  entered=[pb.Body("b", 1000, -1000)], left=["c", "d"], room="lobby"),
         "08ac02 10ab02 1a07 0a016110011801 2209 0a016210d00f18cf0f 2a0163 2a0164"
         " 3205 6c6f626279"),
        (pb.Delta(room="ålesund"), "3208 c3a56c6573756e64"),       # length in bytes
        (pb.Delta(room="x" * 24), "3218" + "78" * 24),
        (pb.Delta(tick=(1 << 64) - 1, left=[""]), "08ffffffffffffffffff01 2a00"),  # room omitted
    ]

    def test_encode(self):
        for message, encoded in self.CASES:
            with self.subTest(message):
                self.assertEqual(message.encode().hex(), h(encoded).hex())

    def test_decode(self):
        for message, encoded in self.CASES:
            with self.subTest(message):
                self.assertEqual(type(message).decode(h(encoded)), message)


class DecodingRules(unittest.TestCase):
    def test_unknown_fields_of_every_wire_type_are_skipped(self):
        unknown = (
            "b801 ac02"                     # field 23, varint
            "c101 0102030405060708"         # field 24, 64-bit
            "ca01 03 616263"                # field 25, length-delimited
            "d301 0801 1a0178 d401"         # field 26, a group with two fields inside
            "dd01 01020304"                 # field 27, 32-bit
            "3800"                          # field 7 (unknown in Move) varint
        )
        data = h("0801" + unknown + "1004")
        self.assertEqual(pb.Move.decode(data), pb.Move(-1, 2))
        # Inside the nested PlayerState: field 8 (7 is password_hash now), a varint.
        self.assertEqual(pb.LoginReply.decode(h("0a05 0a0161 4001") + h(unknown)),
                         pb.LoginReply(pb.PlayerState("a")))

    def test_last_scalar_wins_and_messages_merge(self):
        self.assertEqual(pb.Move.decode(h("0802 0804")), pb.Move(x=2))
        data = h("0a03 0a0161" "0a02 1801" "0a03 0a0162")
        self.assertEqual(pb.LoginReply.decode(data), pb.LoginReply(pb.PlayerState("b", x=-1)))

    def test_wide_varints_truncate_to_32_bits(self):
        # A negative int32 sent as 10 bytes, in uint32 and sint32 fields.
        self.assertEqual(pb.RoomInfo.decode(h("10 ffffffffffffffffff01")).players, 0xFFFFFFFF)
        self.assertEqual(pb.Move.decode(h("08 feffffffffffffffff01")).x, (1 << 31) - 1)

    def test_bool_any_nonzero_is_true(self):
        self.assertTrue(pb.Chat.decode(h("2005")).whisper)

    def test_repeated_fields_may_interleave(self):
        # Records of different repeated fields mixed up: each list keeps its own order.
        # The room may come anywhere, first included.
        data = h("3201 72 2a0163 1a03 0a0161 2203 0a0162 08 05 2a0164 1a03 0a0165")
        self.assertEqual(pb.Delta.decode(data), pb.Delta(
            tick=5, moved=[pb.Body("a"), pb.Body("e")], entered=[pb.Body("b")],
            left=["c", "d"], room="r"))

    def test_delta_room(self):
        # A scalar: the last one wins; an empty one (written or not) is "".
        self.assertEqual(pb.Delta.decode(h("3201 61 0802 3201 62")), pb.Delta(tick=2, room="b"))
        self.assertEqual(pb.Delta.decode(h("3200 1001")), pb.Delta(since=1))
        # A server's Delta before field 6 existed decodes with room "", and a field
        # after 6 (unknown here) is skipped around it.
        self.assertEqual(pb.Delta.decode(h("0802 1001 3a0178 3201 72 4001")),
                         pb.Delta(tick=2, since=1, room="r"))
        for bad in ("3001", "3202 72", "3201 ff"):  # varint, truncated, not UTF-8
            with self.subTest(bad):
                with self.assertRaises(pb.DecodeError):
                    pb.Delta.decode(h(bad))
        with self.assertRaises(TypeError):
            pb.Delta(room=b"r").encode()

    def test_password_hash_from_a_server_is_decoded(self):
        # Clients receive it empty; decoding one that is not must still work.
        state = pb.PlayerState.decode(h("0a0161 3a0a 246172676f6e32696424 3002"))
        self.assertEqual((state.name, state.password_hash, state.logins),
                         ("a", "$argon2id$", 2))

    def test_malformed(self):
        cases = {
            "truncated key": "80",
            "truncated string": "0a05616c",
            "string not utf-8": "0a01ff",
            "wrong wire type for a string": "0801",
            "wrong wire type for a sint32": "1a0101",      # PlayerState.x, length-delimited
            "field number 0": "0001",
            "truncated 64-bit": "c10101",
            "truncated 32-bit": "dd0101",
            "invalid wire type 6": "be01",
            "invalid wire type 7": "bf01",
            "stray end group": "d401",
            "unterminated group": "d3010801",
            "mismatched end group": "d301dc01",
            "length past the end": "ca0105",
        }
        for name, data in cases.items():
            with self.subTest(name):
                with self.assertRaises(pb.DecodeError):
                    pb.PlayerState.decode(h(data))

    def test_encoder_checks_ranges_and_types(self):
        for message in (pb.Move(x=1 << 31), pb.Move(y=-(1 << 31) - 1), pb.RoomInfo(players=-1),
                        pb.PlayerState(moves=1 << 64), pb.Move(x="1")):
            with self.subTest(message):
                with self.assertRaises(ValueError):
                    message.encode()
        for message in (pb.Move(x=-1, y=1000), pb.Input(dx=-1), pb.Body("a", -1000, -1)):
            with self.subTest(message):
                message.encode()  # in range, negative included
        for message in (pb.Body(x=-(1 << 31) - 1), pb.Input(dy=1 << 31),
                        pb.Delta(tick=-1), pb.RoomState(tick=1 << 64)):
            with self.subTest(message):
                with self.assertRaises(ValueError):
                    message.encode()
        for message in (pb.Say(b"bytes"), pb.Chat(whisper=1), pb.LoginReply("x"),
                        pb.Input(target=(1, 2)), pb.RoomState(players=["a"]),
                        pb.Delta(left=[b"a"])):
            with self.subTest(message):
                with self.assertRaises(TypeError):
                    message.encode()

    def test_push_table(self):
        self.assertEqual(pb.decode_push(100, h("0a0161 2001")), pb.Chat(from_="a", whisper=True))
        self.assertEqual(pb.decode_push(103, h("0a0172 1a00")),
                         pb.RoomState("r", players=[pb.Body()]))
        self.assertEqual(pb.decode_push(104, h("0802 1001 3201 72")),
                         pb.Delta(tick=2, since=1, room="r"))
        # Moved (101) and RoomEvent (102) are gone from the protocol.
        for route in (7, 101, 102, 0xFF01):
            with self.subTest(route):
                self.assertIsNone(pb.decode_push(route, b""))


class RoundTrips(unittest.TestCase):
    """Random messages survive encode then decode (a fixed seed: reproducible)."""

    def test_random_room_messages(self):
        rng = random.Random(20261126)

        def coordinate():
            # Mostly the world's range, negatives included, sometimes the sint32 extremes.
            return rng.choice([rng.randint(-1000, 1000), 0, -1, -(1 << 31), (1 << 31) - 1])

        def body():
            name = "".join(rng.choice("abcé_-9漢") for _ in range(rng.randint(0, 24)))
            return pb.Body(name, coordinate(), coordinate())

        def bodies():
            return [body() for _ in range(rng.choice([0, 0, 1, 3, 20]))]  # often empty

        for _ in range(300):
            tick = rng.choice([0, 1, rng.randrange(1 << 64), (1 << 64) - 1])
            messages = [
                pb.RoomState(body().name, tick, bodies()),
                pb.Delta(tick, rng.randrange(1 << 64), bodies(), bodies(),
                         [body().name for _ in range(rng.choice([0, 0, 1, 4]))],
                         body().name),  # the room: sometimes "" (not written)
                pb.Input(rng.randint(-1, 1), rng.randint(-1, 1),
                         rng.choice([None, pb.Position(coordinate(), coordinate())])),
                pb.LoginRequest(body().name, "p" * rng.randint(0, 128)),
                pb.PlayerState(body().name, body().name, coordinate(), coordinate(),
                               rng.randrange(1 << 64), rng.randrange(1 << 64), ""),
            ]
            for message in messages:
                with self.subTest(message):
                    self.assertEqual(type(message).decode(message.encode()), message)

    def test_negative_coordinates_zigzag(self):
        # sint32 zigzag: 0, -1, 1, -2, 2, ... are 0, 1, 2, 3, 4, ...: small either way.
        for value, raw in ((0, 0), (-1, 1), (1, 2), (-2, 3), (2, 4), (-1000, 1999),
                           (1000, 2000), (-(1 << 31), 0xFFFFFFFF), ((1 << 31) - 1, 0xFFFFFFFE)):
            with self.subTest(value):
                encoded = pb.Position(x=value).encode()
                expected = b"" if value == 0 else b"\x08" + pb.encode_varint(raw)
                self.assertEqual(encoded, expected)
                self.assertEqual(pb.Position.decode(encoded).x, value)
        self.assertLessEqual(len(pb.Body("", -1000, -1000).encode()), 6)


if __name__ == "__main__":
    unittest.main()
