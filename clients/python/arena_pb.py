"""The arena messages of proto/arena.proto, with a minimal hand-written proto3 codec.

Standard library only. Every message is a dataclass with ``encode() -> bytes`` and
``decode(data) -> message`` (a classmethod)::

    >>> Move(x=-1, y=2).encode().hex()
    '08011004'
    >>> Move.decode(bytes.fromhex('08011004'))
    Move(x=-1, y=2)

What it implements of the protobuf wire format: varints (up to 10 bytes, 64 bits),
zigzag for ``sint32``, length-delimited strings, bytes and nested messages, repeated
fields (one record per element), and skipping unknown fields of every wire type
(varint, 64-bit, length-delimited, group, 32-bit). Like proto3, fields holding their
default value (``""``, ``0``, ``False``) are not written; a nested message is written
when it is not ``None``. Decoding follows protobuf's rules: the last value of a
scalar field wins, repeated fields append, and a nested message seen twice is merged.
Malformed input raises :class:`DecodeError`.

The proto field ``Chat.from`` is ``Chat.from_`` here (``from`` is a Python keyword).
``Input.target`` is ``None`` when absent (walk in the direction ``dx``, ``dy``), as
a nested message is in protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Type, TypeVar

__all__ = [
    "DecodeError", "Message",
    "PlayerState", "LoginRequest", "LoginReply", "RoomInfo", "RoomList", "JoinRoom",
    "Say", "Move", "Whisper", "WhoReply", "Position", "Input", "Chat", "Body",
    "RoomState", "Delta",
    "PUSH_MESSAGES", "decode_push",
    "encode_varint", "decode_varint",
]

WIRE_VARINT = 0
WIRE_I64 = 1
WIRE_LEN = 2
WIRE_SGROUP = 3
WIRE_EGROUP = 4
WIRE_I32 = 5

_U64 = 1 << 64


class DecodeError(ValueError):
    """Bytes that are not a valid encoding of the message."""


# ------------------------------------------------------------------------- varints


def encode_varint(value: int) -> bytes:
    """Base-128 varint of an unsigned integer below 2**64."""
    if not 0 <= value < _U64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, pos: int) -> Tuple[int, int]:
    """Reads a varint at ``pos``; returns ``(value, next position)``."""
    result = 0
    shift = 0
    for i in range(10):
        if pos >= len(data):
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >= _U64:
                raise DecodeError("varint over 64 bits")
            return result, pos
        shift += 7
    raise DecodeError("varint longer than 10 bytes")


def _zigzag32(value: int) -> int:
    return ((value << 1) ^ (value >> 31)) & 0xFFFFFFFF


def _unzigzag32(raw: int) -> int:
    raw &= 0xFFFFFFFF  # protobuf truncates a wider varint to the field's 32 bits
    return (raw >> 1) ^ -(raw & 1)


# --------------------------------------------------------------------- field kinds

# Each scalar kind: (wire type, encode(value) -> bytes of the value, decode(raw) -> value,
# default, python type check).
_INT32 = (-(1 << 31), (1 << 31) - 1)


def _check_int(value: Any, lo: int, hi: int, kind: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{kind} must be an int in {lo}..{hi}, got {value!r}")
    return value


def _enc_string(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"string field expects str, got {type(value).__name__}")
    data = value.encode("utf-8")
    return encode_varint(len(data)) + data


def _enc_bytes(value: Any) -> bytes:
    data = bytes(value)
    return encode_varint(len(data)) + data


def _dec_string(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DecodeError(f"string field is not valid UTF-8: {e}") from None


_SCALARS: Dict[str, Tuple[int, Any, Any, Any]] = {
    # kind: (wire type, encoder, decoder, default)
    "string": (WIRE_LEN, _enc_string, _dec_string, ""),
    "bytes": (WIRE_LEN, _enc_bytes, bytes, b""),
    "bool": (WIRE_VARINT,
             lambda v: encode_varint(1 if _check_bool(v) else 0), lambda raw: raw != 0, False),
    "uint32": (WIRE_VARINT,
               lambda v: encode_varint(_check_int(v, 0, 0xFFFFFFFF, "uint32")),
               lambda raw: raw & 0xFFFFFFFF, 0),
    "uint64": (WIRE_VARINT,
               lambda v: encode_varint(_check_int(v, 0, _U64 - 1, "uint64")),
               lambda raw: raw, 0),
    "sint32": (WIRE_VARINT,
               lambda v: encode_varint(_zigzag32(_check_int(v, *_INT32, "sint32"))),
               _unzigzag32, 0),
}


def _check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"bool field expects bool, got {type(value).__name__}")
    return value


# ------------------------------------------------------------------------ messages

M = TypeVar("M", bound="Message")


class Message:
    """Base of the arena messages. Subclasses are dataclasses and list their fields in
    ``_proto_``: ``(field number, attribute, kind, repeated)``, where kind is a scalar
    name (``"string"``, ``"sint32"``, ...) or a Message subclass."""

    _proto_: ClassVar[Tuple[Tuple[int, str, Any, bool], ...]] = ()

    def encode(self) -> bytes:
        out = bytearray()
        for number, attr, kind, repeated in self._proto_:
            value = getattr(self, attr)
            values = list(value) if repeated else [value]
            for item in values:
                if isinstance(kind, type) and issubclass(kind, Message):
                    if item is None:
                        continue
                    if not isinstance(item, kind):
                        raise TypeError(f"{type(self).__name__}.{attr} expects {kind.__name__}")
                    body = item.encode()
                    out += encode_varint(number << 3 | WIRE_LEN)
                    out += encode_varint(len(body)) + body
                else:
                    wire, enc, _, default = _SCALARS[kind]
                    if not repeated and item == default and type(item) is type(default):
                        continue  # proto3: defaults are not written
                    out += encode_varint(number << 3 | wire)
                    out += enc(item)
        return bytes(out)

    @classmethod
    def decode(cls: Type[M], data: bytes) -> M:
        message = cls()
        message._merge(bytes(data))
        return message

    def _merge(self, data: bytes) -> None:
        by_number = {number: (attr, kind, repeated)
                     for number, attr, kind, repeated in self._proto_}
        pos = 0
        end = len(data)
        while pos < end:
            key, pos = decode_varint(data, pos)
            number, wire = key >> 3, key & 7
            if number == 0 or key > 0xFFFFFFFF:
                raise DecodeError(f"invalid field key {key}")
            known = by_number.get(number)
            if known is None:
                pos = _skip(data, pos, number, wire)
                continue
            attr, kind, repeated = known
            is_message = isinstance(kind, type) and issubclass(kind, Message)
            expected = WIRE_LEN if is_message else _SCALARS[kind][0]
            if wire != expected:
                raise DecodeError(
                    f"{type(self).__name__}.{attr}: wire type {wire}, expected {expected}")
            if wire == WIRE_LEN:
                length, pos = decode_varint(data, pos)
                if length > end - pos:
                    raise DecodeError(f"{type(self).__name__}.{attr}: truncated")
                raw = data[pos:pos + length]
                pos += length
                if is_message:
                    current = None if repeated else getattr(self, attr)
                    if current is None:
                        value = kind.decode(raw)
                    else:
                        current._merge(raw)  # a message seen twice is merged
                        value = current
                else:
                    value = _SCALARS[kind][2](raw)
            else:
                raw_int, pos = decode_varint(data, pos)
                value = _SCALARS[kind][2](raw_int)
            if repeated:
                getattr(self, attr).append(value)
            else:
                setattr(self, attr, value)


def _skip(data: bytes, pos: int, number: int, wire: int) -> int:
    """Skips the value of an unknown field; returns the position after it."""
    if wire == WIRE_VARINT:
        return decode_varint(data, pos)[1]
    if wire in (WIRE_I64, WIRE_I32):
        size = 8 if wire == WIRE_I64 else 4
        if pos + size > len(data):
            raise DecodeError("truncated fixed-size field")
        return pos + size
    if wire == WIRE_LEN:
        length, pos = decode_varint(data, pos)
        if length > len(data) - pos:
            raise DecodeError("truncated length-delimited field")
        return pos + length
    if wire == WIRE_SGROUP:
        # A (deprecated) group: fields up to the matching end-group key.
        while True:
            if pos >= len(data):
                raise DecodeError("unterminated group")
            key, pos = decode_varint(data, pos)
            inner_number, inner_wire = key >> 3, key & 7
            if inner_wire == WIRE_EGROUP:
                if inner_number != number:
                    raise DecodeError("mismatched end of group")
                return pos
            if inner_number == 0:
                raise DecodeError("invalid field number 0")
            pos = _skip(data, pos, inner_number, inner_wire)
    if wire == WIRE_EGROUP:
        raise DecodeError("end of group without a start")
    raise DecodeError(f"invalid wire type {wire}")


@dataclass
class PlayerState(Message):
    """A player's saved state: loaded at login, saved when the connection ends."""
    name: str = ""
    room: str = ""
    x: int = 0
    y: int = 0
    moves: int = 0   # moves made over the player's whole life
    logins: int = 0  # logins over the player's whole life
    # Server-side only (the Argon2id hash, PHC format): always empty in what a client
    # receives. Decoded like any field, and to be ignored.
    password_hash: str = ""
    _proto_: ClassVar = (
        (1, "name", "string", False),
        (2, "room", "string", False),
        (3, "x", "sint32", False),
        (4, "y", "sint32", False),
        (5, "moves", "uint64", False),
        (6, "logins", "uint64", False),
        (7, "password_hash", "string", False),
    )


@dataclass
class LoginRequest(Message):
    """Route 1 request: log in, or create the player with this password."""
    name: str = ""
    password: str = ""  # 8..128 bytes (UTF-8)
    _proto_: ClassVar = (
        (1, "name", "string", False),
        (2, "password", "string", False),
    )


@dataclass
class LoginReply(Message):
    """Route 1 answer."""
    state: Optional[PlayerState] = None
    _proto_: ClassVar = ((1, "state", PlayerState, False),)


@dataclass
class RoomInfo(Message):
    name: str = ""
    players: int = 0
    _proto_: ClassVar = (
        (1, "name", "string", False),
        (2, "players", "uint32", False),
    )


@dataclass
class RoomList(Message):
    """Route 2 answer: the first 100 rooms and how many there are."""
    rooms: List[RoomInfo] = field(default_factory=list)
    total: int = 0
    _proto_: ClassVar = (
        (1, "rooms", RoomInfo, True),
        (2, "total", "uint32", False),
    )


@dataclass
class JoinRoom(Message):
    """Route 3 request (answer: PlayerState)."""
    room: str = ""
    _proto_: ClassVar = ((1, "room", "string", False),)


@dataclass
class Say(Message):
    """Route 5 request (answer: empty)."""
    text: str = ""
    _proto_: ClassVar = ((1, "text", "string", False),)


@dataclass
class Move(Message):
    """Route 6 request (answer: PlayerState)."""
    x: int = 0
    y: int = 0
    _proto_: ClassVar = (
        (1, "x", "sint32", False),
        (2, "y", "sint32", False),
    )


@dataclass
class Whisper(Message):
    """Route 7 request (answer: empty)."""
    to: str = ""
    text: str = ""
    _proto_: ClassVar = (
        (1, "to", "string", False),
        (2, "text", "string", False),
    )


@dataclass
class WhoReply(Message):
    """Route 8 answer."""
    players: List[str] = field(default_factory=list)  # names, sorted, at most 100
    online: int = 0   # players online on this server
    in_room: int = 0  # players in the asker's room
    _proto_: ClassVar = (
        (1, "players", "string", True),
        (2, "online", "uint32", False),
        (3, "in_room", "uint32", False),
    )


@dataclass
class Position(Message):
    """A point of the world (Input's target)."""
    x: int = 0  # -1000..1000
    y: int = 0  # -1000..1000
    _proto_: ClassVar = (
        (1, "x", "sint32", False),
        (2, "y", "sint32", False),
    )


@dataclass
class Input(Message):
    """Route 9 notify: walk. With a ``target``, walk there and stop; otherwise walk in
    the direction ``dx``, ``dy`` (each -1, 0 or 1) until the next Input; 0, 0 stops."""
    dx: int = 0
    dy: int = 0
    target: Optional[Position] = None
    _proto_: ClassVar = (
        (1, "dx", "sint32", False),
        (2, "dy", "sint32", False),
        (3, "target", Position, False),
    )


@dataclass
class Chat(Message):
    """Route 100 push: chat in the room, or a whisper (``room`` empty)."""
    from_: str = ""
    text: str = ""
    room: str = ""
    whisper: bool = False
    _proto_: ClassVar = (
        (1, "from_", "string", False),
        (2, "text", "string", False),
        (3, "room", "string", False),
        (4, "whisper", "bool", False),
    )


@dataclass
class Body(Message):
    """A player in a room, where they stand."""
    name: str = ""
    x: int = 0
    y: int = 0
    _proto_: ClassVar = (
        (1, "name", "string", False),
        (2, "x", "sint32", False),
        (3, "y", "sint32", False),
    )


@dataclass
class RoomState(Message):
    """Route 103 push: the whole room, to a member that joined it (or asked again by
    joining the room it is in, or whose room restarted), at the room's next tick,
    before that tick's Delta. The next Delta has ``since == tick``."""
    room: str = ""
    tick: int = 0
    players: List[Body] = field(default_factory=list)  # the member itself included
    _proto_: ClassVar = (
        (1, "room", "string", False),
        (2, "tick", "uint64", False),
        (3, "players", Body, True),
    )


@dataclass
class Delta(Message):
    """Route 104 push: what changed in the room during one tick. Apply ``left``, then
    ``entered``, then ``moved``; ``since`` is the tick of the previous Delta (or
    RoomState), so a different value means one was missed."""
    tick: int = 0
    since: int = 0
    moved: List[Body] = field(default_factory=list)    # new positions
    entered: List[Body] = field(default_factory=list)  # players that joined
    left: List[str] = field(default_factory=list)      # names of players that left
    room: str = ""  # the room: a Delta of a room just left may still arrive
    _proto_: ClassVar = (
        (1, "tick", "uint64", False),
        (2, "since", "uint64", False),
        (3, "moved", Body, True),
        (4, "entered", Body, True),
        (5, "left", "string", True),
        (6, "room", "string", False),
    )


#: Push route -> message class.
PUSH_MESSAGES: Dict[int, Type[Message]] = {100: Chat, 103: RoomState, 104: Delta}


def decode_push(route: int, payload: bytes) -> Optional[Message]:
    """Decodes an arena push by its route; None for a route arena does not define."""
    cls = PUSH_MESSAGES.get(route)
    return None if cls is None else cls.decode(payload)


def _check_tables() -> None:
    # Every dataclass field is described once in _proto_, and the other way round.
    for cls in (PlayerState, LoginRequest, LoginReply, RoomInfo, RoomList, JoinRoom, Say,
                Move, Whisper, WhoReply, Position, Input, Chat, Body, RoomState, Delta):
        declared = [f.name for f in fields(cls)]
        described = [attr for _, attr, _, _ in cls._proto_]
        assert declared == described, (cls.__name__, declared, described)


_check_tables()
