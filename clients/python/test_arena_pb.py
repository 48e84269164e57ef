"""arena_pb: the hand-written proto3 codec of the arena messages."""

import os
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
        (pb.LoginRequest("alice"), "0a05616c696365"),
        (pb.LoginRequest("åb"), "0a03c3a562"),                    # length in bytes
        (pb.Say(""), ""),
        (pb.Whisper("bo", "hi"), "0a02626f 12026869"),
        (pb.JoinRoom("r1"), "0a027231"),
        (pb.PlayerState("a", "lobby", 7, -3, 300, 2),
         "0a0161 12056c6f626279 180e 2005 28ac02 3002"),
        (pb.LoginReply(pb.PlayerState("a")), "0a03 0a0161"),
        (pb.LoginReply(pb.PlayerState()), "0a00"),                # present but empty
        (pb.LoginReply(), ""),
        (pb.RoomList([pb.RoomInfo("lobby", 2), pb.RoomInfo("x", 0)]),
         "0a09 0a056c6f626279 1002 0a03 0a0178"),
        (pb.WhoReply(["a", "", "b"], online=3, in_room=1),
         "0a0161 0a00 0a0162 1003 1801"),                         # repeated: empty kept
        (pb.Chat(from_="bob", text="hi", room="", whisper=True),
         "0a03626f62 12026869 2001"),
        (pb.Moved("n", 0, -1), "0a016e 1801"),
        (pb.RoomEvent("n", "lobby", joined=False), "0a016e 12056c6f626279"),
        (pb.RoomEvent("n", "r", joined=True), "0a016e 120172 1801"),
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
        self.assertEqual(pb.LoginReply.decode(h("0a05 0a0161 3801") + h(unknown)),
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
        self.assertTrue(pb.RoomEvent.decode(h("1805")).joined)

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
        for message in (pb.Say(b"bytes"), pb.RoomEvent(joined=1), pb.LoginReply("x")):
            with self.subTest(message):
                with self.assertRaises(TypeError):
                    message.encode()

    def test_push_table(self):
        self.assertEqual(pb.decode_push(100, h("0a0161 2001")), pb.Chat(from_="a", whisper=True))
        self.assertEqual(pb.decode_push(101, h("1002")), pb.Moved(x=1))
        self.assertEqual(pb.decode_push(102, h("1801")), pb.RoomEvent(joined=True))
        self.assertIsNone(pb.decode_push(7, b""))


if __name__ == "__main__":
    unittest.main()
