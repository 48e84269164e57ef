"""A gatehouse client: the wire protocol of docs/PROTOCOL.md, standard library only.

Two layers:

* a codec: the frame messages (:class:`Empty`, :class:`Request`, :class:`Notify`,
  :class:`Response`, :class:`Push`, :class:`Ping`, :class:`Pong`, :class:`Kick`),
  :func:`encode_frame` / :func:`encode_body`, :func:`decode_body` /
  :func:`decode_frame`, and :class:`FrameBuffer`, which cuts frames out of a TCP byte
  stream.  Malformed input raises :class:`MalformedFrame` (a :class:`ProtocolError`)
  whose ``error`` is one of the names PROTOCOL.md uses (``unknown_kind``,
  ``truncated``, ``nonce_too_long``, ``kick_text_not_utf8``, ``frame_too_large``).
  Decoding never waits for more input: it works on the bytes it is given.

* :class:`Connection`: a blocking connection, over TCP or TLS, with a background
  reader thread. ``request()`` sends a request and waits for its response,
  ``notify()`` sends a notify, pushes are queued for ``next_push()``, pings are sent
  automatically when nothing was sent for ``heartbeat`` seconds, and ``close()`` ends
  it all. When the server offers session resume (a game that opts in), a lost
  connection is resumed on a new one within the server's window, with nothing lost
  or sent twice (``resumes`` counts them); a refused resume ends the connection with
  :class:`Kicked` ``resume_failed``: log in again. ``tls=True`` speaks TLS (the same frames inside): the server's certificate
  is checked against the system's trust store, or against ``cafile`` alone (e.g. the
  one ``gatehouse dev-cert`` writes); :func:`tls_context` makes those settings.

    >>> with Connection("127.0.0.1", 7000) as conn:          # doctest: +SKIP
    ...     conn.request(1, b"hi")                           # the bench echo
    b'hi'
    >>> Connection("localhost", 7443, tls=True, cafile="dev-cert.pem")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Union

__all__ = [
    "MAX_FRAME_BYTES", "MAX_NONCE_BYTES", "RESERVED_ROUTES", "ROUTE_ANNOUNCEMENT", "ROUTE_END_SESSION", "ROUTE_ROOM_RESTARTED",
    "KIND_REQUEST", "KIND_NOTIFY", "KIND_RESPONSE", "KIND_PUSH", "KIND_PING",
    "KIND_PONG", "KIND_KICK", "KIND_SESSION", "KIND_RESUME", "KIND_RESUMED", "KIND_ACK",
    "TOKEN_BYTES",
    "Empty", "Request", "Notify", "Response", "Push", "Ping", "Pong", "Kick",
    "Session", "Resume", "Resumed", "Ack", "Frame",
    "encode_body", "encode_frame", "decode_body", "decode_frame", "describe",
    "FrameBuffer",
    "STATUS_NAMES", "KICK_REASONS", "status_name", "kick_reason_name",
    "GatehouseError", "ProtocolError", "MalformedFrame", "RequestError",
    "ConnectionClosed", "Kicked", "RequestTimeout",
    "Connection", "tls_context",
]

# --------------------------------------------------------------------------- limits

#: Largest frame body (the 4-byte length header not counted): 256 KiB.
MAX_FRAME_BYTES = 262144
#: Longest ping or pong nonce.
MAX_NONCE_BYTES = 64
#: Request routes from 0xff00 up belong to the framework.
RESERVED_ROUTES = range(0xFF00, 0x10000)
#: The framework's push "room restarted": the payload is the room's name (UTF-8).
ROUTE_ROOM_RESTARTED = 0xFF01
#: The framework's push "announcement" (the operators', the admin API's broadcast):
#: its payload is the text, UTF-8.
ROUTE_ANNOUNCEMENT = 0xFF02
#: The framework's request "end session": the client leaves on purpose, so the server
#: does not keep its session for a resume (:meth:`Connection.close` sends it).
ROUTE_END_SESSION = 0xFF10

KIND_REQUEST = 0x01
KIND_NOTIFY = 0x02
KIND_RESPONSE = 0x03
KIND_PUSH = 0x04
KIND_PING = 0x05
KIND_PONG = 0x06
KIND_KICK = 0x07
KIND_SESSION = 0x08
KIND_RESUME = 0x09
KIND_RESUMED = 0x0A
KIND_ACK = 0x0B

#: Bytes of a session's resume token.
TOKEN_BYTES = 32

_U32 = struct.Struct(">I")
_HDR_ID_U16 = struct.Struct(">BIH")   # kind, id, route/status
_HDR_U16 = struct.Struct(">BH")       # kind, route/reason
_SESSION = struct.Struct(">BQI32s")   # kind, id, window_ms, token
_RESUME = struct.Struct(">BQQ32s")    # kind, id, received, token
_COUNT = struct.Struct(">BQ")         # kind, received/count (resumed, ack)

# ------------------------------------------------------------------ names and codes

#: Framework response statuses (games use 1000 and up).
STATUS_NAMES: Dict[int, str] = {
    0: "ok",
    400: "bad_request",
    403: "forbidden",
    404: "unknown_route",
    500: "internal_error",
    503: "unavailable",
}

#: Kick reason codes, as in PROTOCOL.md "Kick reasons".
KICK_REASONS: Dict[int, str] = {
    1: "idle",
    2: "dos",
    3: "server_full",
    4: "shutdown",
    5: "server_restart",
    6: "duplicate_login",
    7: "protocol_error",
    8: "slow_consumer",
    9: "frame_too_large",
    10: "login_timeout",
    11: "too_many_from_ip",
    12: "internal_error",
    13: "kicked",
    14: "room_closed",
    15: "resume_failed",
}


def status_name(status: int) -> str:
    """The framework's name of a status, ``game_error`` for 1000 and up, else ``error``."""
    if status in STATUS_NAMES:
        return STATUS_NAMES[status]
    return "game_error" if status >= 1000 else "error"


def kick_reason_name(reason: int) -> str:
    """The name of a kick reason code.

    Codes of 1000 and up are the game's own (``game_kick``); an unknown framework code
    is to be treated like ``kicked``, as PROTOCOL.md says, so that is its name here.
    """
    if reason in KICK_REASONS:
        return KICK_REASONS[reason]
    return "game_kick" if reason >= 1000 else "kicked"


# ----------------------------------------------------------------------- exceptions


class GatehouseError(Exception):
    """Base class of every error this module raises on purpose."""


class ProtocolError(GatehouseError):
    """The peer broke the wire protocol (or the caller asked to send something invalid)."""


class MalformedFrame(ProtocolError, ValueError):
    """A frame or body that cannot be decoded.

    ``error`` names the problem as PROTOCOL.md does: ``unknown_kind``, ``truncated``,
    ``nonce_too_long``, ``kick_text_not_utf8``, or ``frame_too_large`` (a length header
    over the maximum) and ``bad_length`` (a whole frame whose header does not match
    its size, from :func:`decode_frame` only).
    """

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error
        self.detail = detail


class RequestError(GatehouseError):
    """A response with a non-zero status.

    ``text`` is the payload read as UTF-8 (undecodable bytes replaced); ``payload`` is
    the raw payload, for games whose error payloads are not text.
    """

    def __init__(self, status: int, text: str, payload: bytes = b"") -> None:
        super().__init__(f"status {status} ({status_name(status)}): {text}")
        self.status = status
        self.text = text
        self.payload = payload


class ConnectionClosed(GatehouseError):
    """The connection is closed (by us, by the server without a kick, or it failed)."""


class Kicked(ConnectionClosed):
    """The server kicked this connection: ``reason_code``, ``reason_name``, ``text``."""

    def __init__(self, reason_code: int, reason_name: str, text: str) -> None:
        super().__init__(f"kicked: {reason_name} ({reason_code}): {text}")
        self.reason_code = reason_code
        self.reason_name = reason_name
        self.text = text


class RequestTimeout(GatehouseError, TimeoutError):
    """No response (or pong, or push) within the timeout; the connection stays open."""


# ---------------------------------------------------------------------- frame types


@dataclass(frozen=True)
class Empty:
    """An empty frame (length 0): a keepalive."""


@dataclass(frozen=True)
class Request:
    id: int
    route: int
    payload: bytes = b""


@dataclass(frozen=True)
class Notify:
    route: int
    payload: bytes = b""


@dataclass(frozen=True)
class Response:
    id: int
    status: int
    payload: bytes = b""


@dataclass(frozen=True)
class Push:
    route: int
    payload: bytes = b""


@dataclass(frozen=True)
class Ping:
    nonce: bytes = b""


@dataclass(frozen=True)
class Pong:
    nonce: bytes = b""


@dataclass(frozen=True)
class Kick:
    reason: int
    text: str = ""

    @property
    def reason_name(self) -> str:
        return kick_reason_name(self.reason)


@dataclass(frozen=True)
class Session:
    """Server to client: the session can be resumed for ``window_ms`` after a loss."""
    id: int
    window_ms: int
    token: bytes


@dataclass(frozen=True)
class Resume:
    """Client to server, first frame only: take the session over."""
    id: int
    received: int
    token: bytes


@dataclass(frozen=True)
class Resumed:
    """Server to client: the resume took; the server has ``received`` requests and notifies."""
    received: int


@dataclass(frozen=True)
class Ack:
    """Either way: the first ``count`` numbered frames of the session arrived."""
    count: int


Frame = Union[Empty, Request, Notify, Response, Push, Ping, Pong, Kick, Session, Resume, Resumed, Ack]


# ---------------------------------------------------------------------------- codec


def _check_uint(value: int, bits: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise ValueError(f"{what} must be an integer in 0..{(1 << bits) - 1}, got {value!r}")


def _check_nonce(nonce: bytes) -> bytes:
    nonce = bytes(nonce)
    if len(nonce) > MAX_NONCE_BYTES:
        raise ValueError(f"a nonce is at most {MAX_NONCE_BYTES} bytes, got {len(nonce)}")
    return nonce


def encode_body(frame: Frame) -> bytes:
    """The body of a frame (no length header); ``b""`` for :class:`Empty`.

    Raises ``ValueError`` for a field out of range (an id over u32, a route over u16,
    a nonce over 64 bytes) and ``TypeError`` for something that is not a frame.
    """
    if isinstance(frame, (Request, Response)):
        second = frame.route if isinstance(frame, Request) else frame.status
        _check_uint(frame.id, 32, "id")
        _check_uint(second, 16, "route" if isinstance(frame, Request) else "status")
        kind = KIND_REQUEST if isinstance(frame, Request) else KIND_RESPONSE
        return _HDR_ID_U16.pack(kind, frame.id, second) + bytes(frame.payload)
    if isinstance(frame, (Notify, Push)):
        _check_uint(frame.route, 16, "route")
        kind = KIND_NOTIFY if isinstance(frame, Notify) else KIND_PUSH
        return _HDR_U16.pack(kind, frame.route) + bytes(frame.payload)
    if isinstance(frame, (Ping, Pong)):
        kind = KIND_PING if isinstance(frame, Ping) else KIND_PONG
        return bytes([kind]) + _check_nonce(frame.nonce)
    if isinstance(frame, Kick):
        _check_uint(frame.reason, 16, "reason")
        return _HDR_U16.pack(KIND_KICK, frame.reason) + frame.text.encode("utf-8")
    if isinstance(frame, Session):
        _check_uint(frame.id, 64, "id")
        _check_uint(frame.window_ms, 32, "window_ms")
        return _SESSION.pack(KIND_SESSION, frame.id, frame.window_ms, _check_token(frame.token))
    if isinstance(frame, Resume):
        _check_uint(frame.id, 64, "id")
        _check_uint(frame.received, 64, "received")
        return _RESUME.pack(KIND_RESUME, frame.id, frame.received, _check_token(frame.token))
    if isinstance(frame, Resumed):
        _check_uint(frame.received, 64, "received")
        return _COUNT.pack(KIND_RESUMED, frame.received)
    if isinstance(frame, Ack):
        _check_uint(frame.count, 64, "count")
        return _COUNT.pack(KIND_ACK, frame.count)
    if isinstance(frame, Empty):
        return b""
    raise TypeError(f"not a frame: {frame!r}")


def _check_token(token: bytes) -> bytes:
    token = bytes(token)
    if len(token) != TOKEN_BYTES:
        raise ValueError(f"a token is {TOKEN_BYTES} bytes, got {len(token)}")
    return token


#: The session kinds' whole body lengths (they have no payload: more is an error).
_FIXED = {KIND_SESSION: _SESSION, KIND_RESUME: _RESUME, KIND_RESUMED: _COUNT, KIND_ACK: _COUNT}


def encode_frame(frame: Frame, max_body: int = MAX_FRAME_BYTES) -> bytes:
    """The whole frame: the 4-byte big-endian length, then the body.

    Raises ``ValueError`` if the body would be longer than ``max_body`` (the server
    would kick the connection for it).
    """
    body = encode_body(frame)
    if len(body) > max_body:
        raise ValueError(f"frame body of {len(body)} bytes is over the maximum of {max_body}")
    return _U32.pack(len(body)) + body


def decode_body(body: bytes) -> Frame:
    """Decodes one frame body (without its length header). Raises :class:`MalformedFrame`."""
    body = bytes(body)
    if not body:
        return Empty()
    kind = body[0]
    if kind in (KIND_REQUEST, KIND_RESPONSE):
        if len(body) < 7:
            raise MalformedFrame("truncated", f"kind {kind} needs 7 bytes, got {len(body)}")
        _, ident, second = _HDR_ID_U16.unpack_from(body)
        if kind == KIND_REQUEST:
            return Request(ident, second, body[7:])
        return Response(ident, second, body[7:])
    if kind in (KIND_NOTIFY, KIND_PUSH):
        if len(body) < 3:
            raise MalformedFrame("truncated", f"kind {kind} needs 3 bytes, got {len(body)}")
        _, route = _HDR_U16.unpack_from(body)
        return Notify(route, body[3:]) if kind == KIND_NOTIFY else Push(route, body[3:])
    if kind in (KIND_PING, KIND_PONG):
        nonce = body[1:]
        if len(nonce) > MAX_NONCE_BYTES:
            raise MalformedFrame(
                "nonce_too_long", f"nonce of {len(nonce)} bytes, at most {MAX_NONCE_BYTES}")
        return Ping(nonce) if kind == KIND_PING else Pong(nonce)
    if kind == KIND_KICK:
        if len(body) < 3:
            raise MalformedFrame("truncated", f"kick needs 3 bytes, got {len(body)}")
        _, reason = _HDR_U16.unpack_from(body)
        try:
            text = body[3:].decode("utf-8")  # strict: also rejects surrogates
        except UnicodeDecodeError as e:
            raise MalformedFrame("kick_text_not_utf8", str(e)) from None
        return Kick(reason, text)
    if kind in _FIXED:
        layout = _FIXED[kind]
        if len(body) != layout.size:
            error = "truncated" if len(body) < layout.size else "trailing_bytes"
            raise MalformedFrame(error, f"kind {kind} is {layout.size} bytes, got {len(body)}")
        _, *fields = layout.unpack(body)
        return {KIND_SESSION: Session, KIND_RESUME: Resume,
                KIND_RESUMED: Resumed, KIND_ACK: Ack}[kind](*fields)
    raise MalformedFrame("unknown_kind", f"kind byte 0x{kind:02x}")


def decode_frame(data: bytes, max_body: int = MAX_FRAME_BYTES) -> Frame:
    """Decodes exactly one whole frame (length header included)."""
    data = bytes(data)
    if len(data) < 4:
        raise MalformedFrame("bad_length", f"a frame needs a 4-byte header, got {len(data)} bytes")
    (length,) = _U32.unpack_from(data)
    if length > max_body:
        raise MalformedFrame("frame_too_large", f"header announces {length} bytes, max {max_body}")
    if len(data) != 4 + length:
        raise MalformedFrame(
            "bad_length", f"header announces {length} body bytes, {len(data) - 4} present")
    return decode_body(data[4:])


def describe(frame: Frame) -> str:
    """The canonical text form of PROTOCOL.md's test vectors, e.g. ``ping nonce=00ff``."""
    if isinstance(frame, Empty):
        return "empty"
    if isinstance(frame, Request):
        return f"request id={frame.id} route={frame.route} payload={frame.payload.hex()}"
    if isinstance(frame, Notify):
        return f"notify route={frame.route} payload={frame.payload.hex()}"
    if isinstance(frame, Response):
        return f"response id={frame.id} status={frame.status} payload={frame.payload.hex()}"
    if isinstance(frame, Push):
        return f"push route={frame.route} payload={frame.payload.hex()}"
    if isinstance(frame, Ping):
        return f"ping nonce={frame.nonce.hex()}"
    if isinstance(frame, Pong):
        return f"pong nonce={frame.nonce.hex()}"
    if isinstance(frame, Kick):
        return f'kick reason={frame.reason} text="{frame.text}"'
    if isinstance(frame, Session):
        return f"session id={frame.id} window_ms={frame.window_ms} token={frame.token.hex()}"
    if isinstance(frame, Resume):
        return f"resume id={frame.id} received={frame.received} token={frame.token.hex()}"
    if isinstance(frame, Resumed):
        return f"resumed received={frame.received}"
    if isinstance(frame, Ack):
        return f"ack count={frame.count}"
    raise TypeError(f"not a frame: {frame!r}")


class FrameBuffer:
    """Cuts frames out of a byte stream: ``feed()`` bytes as they arrive, then iterate.

    A length header over ``max_body`` raises :class:`MalformedFrame`
    (``frame_too_large``) as soon as its 4 bytes are in, before any of the body is
    buffered, as the server does. After an error the buffer is unusable.
    """

    def __init__(self, max_body: int = MAX_FRAME_BYTES) -> None:
        self.max_body = max_body
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def __len__(self) -> int:
        return len(self._buf)

    def next_body(self) -> Optional[bytes]:
        """The next complete body (``b""`` for an empty frame), or None if incomplete."""
        if len(self._buf) < 4:
            return None
        (length,) = _U32.unpack_from(self._buf)
        if length > self.max_body:
            raise MalformedFrame(
                "frame_too_large", f"header announces {length} bytes, max {self.max_body}")
        if len(self._buf) < 4 + length:
            return None
        body = bytes(self._buf[4:4 + length])
        del self._buf[:4 + length]
        return body

    def __iter__(self):
        """Yields every complete frame, decoded."""
        while True:
            body = self.next_body()
            if body is None:
                return
            yield decode_body(body)


# ----------------------------------------------------------------------- connection


def tls_context(cafile: Optional[str] = None) -> ssl.SSLContext:
    """The client's TLS settings: TLS 1.2 at least, the host name checked, and the
    server's certificate checked against the system's trust store, or against
    ``cafile`` (a PEM file, e.g. ``gatehouse dev-cert``'s ``dev-cert.pem``) alone."""
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _open(host: str, port: int, context: Optional[ssl.SSLContext],
          timeout: float) -> Union[socket.socket, "_TlsSocket"]:
    """A connected socket (TLS over it with ``context``), the connect and the
    handshake bounded by ``timeout``; then blocking."""
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = raw if context is None else _TlsSocket(raw, context, host)
    except BaseException:
        raw.close()
        raise
    raw.settimeout(None)
    return sock


# Where the platform has it: a close_notify must not block on a full send buffer.
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


class _TlsSocket:
    """TLS over a connected socket, for one reader thread and any number of senders.

    OpenSSL must not read and write one connection from two threads at once, which a
    blocking ``ssl.SSLSocket`` shared by :class:`Connection`'s reader and its senders
    would do. So the TLS state works on memory buffers, touched only under
    ``_tls_lock`` and never while the socket blocks; ``_send_lock`` keeps the
    encrypted records in order on the wire. The handshake is done in the constructor,
    within the socket's timeout.
    """

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str) -> None:
        self._sock = sock
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing,
                                     server_hostname=server_hostname)
        self._tls_lock = threading.Lock()
        self._send_lock = threading.Lock()
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                with contextlib.suppress(OSError):
                    self._flush()  # the alert, so the server learns why
                raise
            self._flush()
            self._receive()
        self._flush()

    def version(self) -> Optional[str]:
        return self._tls.version()

    def getpeername(self):
        return self._sock.getpeername()

    def recv(self, size: int) -> bytes:
        while True:
            with self._tls_lock:
                try:
                    return self._tls.read(size)  # b"" after a close_notify
                except ssl.SSLWantReadError:
                    answer = self._outgoing.pending  # e.g. to a key update
            if answer:
                self._flush()
            if not self._receive():
                # The end of the stream, with or without a close_notify: a frame cut
                # short shows as such one layer up.
                return b""

    def sendall(self, data: bytes) -> None:
        with self._tls_lock:
            self._tls.write(data)
        self._flush()

    def shutdown(self, how: int) -> None:
        # A close_notify first, so that the server sees a clean end rather than a cut
        # one; but never wait for it: a sender blocked on the socket keeps the lock.
        if self._send_lock.acquire(blocking=False):
            try:
                with self._tls_lock:
                    with contextlib.suppress(ssl.SSLError):
                        self._tls.unwrap()  # queues the close_notify
                    alert = self._outgoing.read()
                self._sock.send(alert, _DONTWAIT)
            except OSError:
                pass
            finally:
                self._send_lock.release()
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()

    def _flush(self) -> None:
        """Sends every encrypted byte waiting, in order (whoever produced them)."""
        with self._send_lock:
            with self._tls_lock:
                data = self._outgoing.read()
            if data:
                self._sock.sendall(data)

    def _receive(self) -> bool:
        """Moves what the socket has into the TLS state; False at the end of the stream."""
        data = self._sock.recv(65536)
        with self._tls_lock:
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()
        return bool(data)


#: An acknowledgement is sent once this many of the server's frames are unacknowledged,
#: or this many seconds after the oldest arrived (PROTOCOL.md).
ACK_EVERY_FRAMES = 32
ACK_WITHIN = 1.0


class _Numbering:
    """What a resumable session counts and keeps (PROTOCOL.md, "session, resume,
    resumed and ack"). Before a session is offered: the frames sent since the oldest
    unanswered request. The response after the ``session`` frame names the request
    that draws the line; the requests and notifies sent after it are numbered from 1
    and kept until the server acknowledges them. The server's responses and pushes
    are counted from that response on. Used under the connection's send lock (sent)
    and by its reader (the rest); the lock is held for both."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list = []            # [(id or None, body)] before the line
        self.offered: Optional[Session] = None
        self.session: Optional[Session] = None
        self.received = 0              # the server's numbered frames
        self.acked = 0                 # the count acknowledged to the server
        self.ack_due: Optional[float] = None
        self.unacked: list = []        # our numbered frames' bodies, oldest first
        self.first = 1                 # the number of unacked[0]

    def sent(self, frame: Frame, body: bytes) -> None:
        if not isinstance(frame, (Request, Notify)):
            return
        with self.lock:
            if self.session is not None:
                self.unacked.append(body)
            else:
                self.log.append((frame.id if isinstance(frame, Request) else None, body))

    def response(self, ident: int, pending: Callable[[int], bool]) -> None:
        with self.lock:
            if self.offered is not None:
                ids = [i for i, _ in self.log]
                after = ids.index(ident) + 1 if ident in ids else len(self.log)
                self.unacked = [body for _, body in self.log[after:]]
                self.log = []
                self.session, self.offered = self.offered, None
            if self.session is not None:
                self._numbered()
            else:
                while self.log and (self.log[0][0] is None or not pending(self.log[0][0])):
                    self.log.pop(0)

    def push(self) -> None:
        with self.lock:
            if self.session is not None:
                self._numbered()

    def _numbered(self) -> None:
        self.received += 1
        now = time.monotonic()
        if self.ack_due is None:
            self.ack_due = now + ACK_WITHIN
        if self.received - self.acked >= ACK_EVERY_FRAMES:
            self.ack_due = now

    def offer(self, session: Session) -> None:
        with self.lock:
            if self.session is not None:
                self.session = session  # after a resume: a fresh token
            else:
                self.offered = session

    def ack(self, count: int) -> None:
        with self.lock:
            if self.session is None:
                return
            sent = self.first - 1 + len(self.unacked)
            if count > sent:
                raise MalformedFrame("ack_beyond_sent", f"ack of {count}, {sent} sent")
            drop = max(0, min(count - self.first + 1, len(self.unacked)))
            del self.unacked[:drop]
            self.first += drop

    def take_ack(self, now: float) -> Optional[Ack]:
        with self.lock:
            if self.ack_due is None or now < self.ack_due:
                return None
            self.ack_due = None
            if self.received <= self.acked:
                return None
            self.acked = self.received
            return Ack(self.received)

    def resume(self) -> Optional[Tuple[Resume, float]]:
        with self.lock:
            if self.session is None:
                return None
            return (Resume(self.session.id, self.received, self.session.token),
                    self.session.window_ms / 1000)

    def resumed(self, received: int) -> list:
        """What to send again after a resume at ``received`` of our frames."""
        with self.lock:
            sent = self.first - 1 + len(self.unacked)
            if received > sent or received + 1 < self.first:
                raise MalformedFrame(
                    "bad_resume", f"resumed at {received}; {sent} sent, before {self.first} acked")
            drop = received - self.first + 1
            del self.unacked[:drop]
            self.first += drop
            self.acked = min(self.acked, self.received)
            return list(self.unacked)


class _Pending:
    __slots__ = ("event", "response")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.response: Optional[Response] = None


_CLOSED = object()  # queue sentinel: the connection ended


class Connection:
    """A client connection with a background reader thread.

    :param heartbeat: send a ping whenever nothing was sent for this many seconds
        (PROTOCOL.md recommends a quarter of the server's 60 s idle timeout: 15 s).
        ``None`` or ``0`` turns heartbeats off.
    :param dead_after: if a heartbeat ping got no frame at all back for this many
        seconds, the connection is considered dead and closed. ``None`` disables it.
    :param on_push: optional callback ``f(Push)`` called on the reader thread for every
        push *instead of* queueing it for :meth:`next_push`. Keep it short, and do not
        call :meth:`request` or :meth:`ping` from it (their answer would never be read).
    :param tls: ``True`` to speak TLS with :func:`tls_context`'s settings (the
        certificate must be valid for ``host``), or an ``ssl.SSLContext`` of your own.
        A certificate that is not trusted raises ``ssl.SSLCertVerificationError``
        from the constructor; other TLS failures ``ssl.SSLError``.
    :param cafile: with ``tls=True``: trust only the certificates in this PEM file
        (a development certificate) instead of the system's.
    :param resume: resume a session the server offered when the connection is lost
        (not after a kick or :meth:`close`), trying until the server's window ends.

    Thread-safe: any thread may call :meth:`request`, :meth:`notify`, :meth:`ping` and
    :meth:`close`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = 10.0,
        heartbeat: Optional[float] = 15.0,
        dead_after: Optional[float] = 15.0,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        on_push: Optional[Callable[[Push], None]] = None,
        tls: Union[bool, ssl.SSLContext] = False,
        cafile: Optional[str] = None,
        resume: bool = True,
    ) -> None:
        own_context = isinstance(tls, ssl.SSLContext)
        if cafile is not None and (own_context or not tls):
            raise ValueError("cafile goes with tls=True (an SSLContext has its own trust)")
        context = tls if own_context else tls_context(cafile) if tls else None
        self.max_frame_bytes = max_frame_bytes
        self._on_push = on_push
        self._address = (host, port, context, connect_timeout)
        self._resume = resume
        self._numbering = _Numbering()
        #: Sessions resumed on a new connection so far.
        self.resumes = 0
        self._sock: Union[socket.socket, _TlsSocket] = _open(*self._address)
        self.peer: Tuple[str, int] = self._sock.getpeername()[:2]
        #: The TLS version in use ("TLSv1.3"), or None over plain TCP.
        self.tls_version: Optional[str] = (
            self._sock.version() if isinstance(self._sock, _TlsSocket) else None)

        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._pending: Dict[int, _Pending] = {}
        self._pings: Dict[bytes, threading.Event] = {}
        self._ids = itertools.count(1)
        self._nonces = itertools.count(1)
        self._pushes: "queue.Queue[object]" = queue.Queue()
        self._closed = threading.Event()
        self._end: Optional[ConnectionClosed] = None  # why it ended

        now = time.monotonic()
        self._last_sent = now
        self._last_received = now
        self._ping_outstanding_since: Optional[float] = None
        #: Round-trip time of the last answered ping, in seconds (None before any).
        self.last_rtt: Optional[float] = None
        #: Pongs received so far.
        self.pongs_received = 0
        #: The kick that ended the connection, if one did.
        self.kick: Optional[Kick] = None

        self._reader = threading.Thread(
            target=self._read_loop, name=f"gatehouse-reader-{self.peer[1]}", daemon=True)
        self._reader.start()
        self._heartbeat = heartbeat or None
        self._dead_after = dead_after
        self._beater: Optional[threading.Thread] = None
        if self._heartbeat:
            self._beater = threading.Thread(
                target=self._heartbeat_loop, name="gatehouse-heartbeat", daemon=True)
            self._beater.start()

    # ---------------------------------------------------------------- public API

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def close_reason(self) -> Optional[ConnectionClosed]:
        """Why the connection ended (a :class:`Kicked` for a kick), or None while open."""
        return self._end

    def request(self, route: int, payload: bytes = b"", timeout: Optional[float] = 5.0) -> bytes:
        """Sends a request and returns the payload of its response (status 0).

        Raises :class:`RequestError` for a non-zero status, :class:`Kicked` if the
        server kicked the connection before answering, :class:`ConnectionClosed` if it
        closed otherwise, :class:`RequestTimeout` if no response came in time (the
        connection stays usable; a late response is dropped).
        """
        _check_uint(route, 16, "route")
        pending = _Pending()
        with self._state_lock:
            self._raise_if_closed()
            while True:
                # A wrapping u32 counter, skipping 0 and ids still outstanding.
                ident = next(self._ids) & 0xFFFFFFFF
                if ident and ident not in self._pending:
                    break
            self._pending[ident] = pending
        try:
            self._send(Request(ident, route, bytes(payload)))
            if not pending.event.wait(timeout):
                raise RequestTimeout(f"no response to request {ident} (route {route}) in {timeout} s")
        finally:
            with self._state_lock:
                self._pending.pop(ident, None)
        response = pending.response
        if response is None:  # woken by the end of the connection
            self._raise_if_closed()
            raise ConnectionClosed("connection closed")  # pragma: no cover
        if response.status != 0:
            raise RequestError(
                response.status, response.payload.decode("utf-8", "replace"), response.payload)
        return response.payload

    def notify(self, route: int, payload: bytes = b"") -> None:
        """Sends a notify (no answer ever)."""
        self._send(Notify(route, bytes(payload)))

    def send_empty(self) -> None:
        """Sends an empty frame (a keepalive with no answer)."""
        self._send(Empty())

    def ping(self, timeout: Optional[float] = 5.0) -> float:
        """Sends a ping and waits for its pong; returns the round-trip time in seconds."""
        nonce = struct.pack(">Q", next(self._nonces))
        event = threading.Event()
        with self._state_lock:
            self._raise_if_closed()
            self._pings[nonce] = event
        start = time.monotonic()
        try:
            self._send(Ping(nonce))
            if not event.wait(timeout):
                raise RequestTimeout(f"no pong in {timeout} s")
        finally:
            with self._state_lock:
                self._pings.pop(nonce, None)
        self._raise_if_closed()
        self.last_rtt = time.monotonic() - start
        return self.last_rtt

    def next_push(self, timeout: Optional[float] = None) -> Push:
        """The next push, waiting up to ``timeout`` seconds (None: forever).

        Pushes that arrived before the connection ended are still returned; after
        them it raises :class:`Kicked` or :class:`ConnectionClosed`. Raises
        :class:`RequestTimeout` (a ``TimeoutError``) if none arrives in time.
        """
        try:
            item = self._pushes.get(timeout=timeout)
        except queue.Empty:
            raise RequestTimeout(f"no push in {timeout} s") from None
        if item is _CLOSED:
            self._pushes.put(_CLOSED)  # keep telling later callers
            assert self._end is not None
            raise self._end
        assert isinstance(item, Push)
        return item

    def wait_closed(self, timeout: Optional[float] = None) -> Optional[ConnectionClosed]:
        """Waits until the connection ends; returns why (a :class:`Kicked` for a kick),
        or None on timeout."""
        self._closed.wait(timeout)
        return self._end

    def close(self) -> None:
        """Closes the connection; outstanding requests fail with :class:`ConnectionClosed`.
        A session the server offered is ended first (the end session request, waited
        for at most a second): the server then does not keep it for a resume."""
        if (self._numbering.resume() is not None and not self.closed
                and threading.current_thread() is not self._reader):
            try:
                self.request(ROUTE_END_SESSION, timeout=1.0)
            except GatehouseError:
                pass  # closing anyway: at worst the session waits out its window
        self._finish(ConnectionClosed("closed by the client"))
        if threading.current_thread() is not self._reader:
            self._reader.join(5)
        if self._beater is not None and threading.current_thread() is not self._beater:
            self._beater.join(5)

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _lost(self, why: str) -> Optional[FrameBuffer]:
        """The reader found the connection lost: resumes the session on a new one
        (senders wait meanwhile) and returns the new connection's frame buffer, or
        ends the connection and returns None."""
        with self._send_lock:
            if self._end is not None:
                return None
            resume = self._numbering.resume() if self._resume else None
            if resume is None:
                self._finish(ConnectionClosed(why))
                return None
            with contextlib.suppress(OSError):
                self._sock.close()
            frame, window = resume
            deadline = time.monotonic() + window
            backoff = 0.05
            while not self._closed.is_set() and time.monotonic() < deadline:
                try:
                    sock, first, frames = self._resume_on_new_connection(frame, deadline)
                except (OSError, ssl.SSLError, MalformedFrame):
                    time.sleep(backoff)  # the network may still be down
                    backoff = min(backoff * 2, 1.0)
                    continue
                self._sock = sock
                if isinstance(first, Kick):
                    self.kick = first
                    self._finish(Kicked(first.reason, first.reason_name, first.text))
                    return None
                try:
                    if not isinstance(first, Resumed):
                        raise MalformedFrame("unexpected", f"{describe(first)} for a resume")
                    for body in self._numbering.resumed(first.received):
                        sock.sendall(_U32.pack(len(body)) + body)
                except (OSError, MalformedFrame) as e:
                    self._finish(ConnectionClosed(f"resume failed: {e}"))
                    return None
                self._last_sent = self._last_received = time.monotonic()
                self._ping_outstanding_since = None
                self.resumes += 1
                return frames
            self._finish(ConnectionClosed(f"{why}; not resumed within {window} s"))
            return None

    def _resume_on_new_connection(self, frame: Resume, deadline: float):
        """Connects again, sends ``frame``, and reads the first frame back; returns
        the socket, that frame, and the buffer holding what came behind it."""
        host, port, context, connect_timeout = self._address
        timeout = max(0.01, min(connect_timeout, deadline - time.monotonic()))
        sock = _open(host, port, context, timeout)
        raw = sock._sock if isinstance(sock, _TlsSocket) else sock
        try:
            sock.sendall(encode_frame(frame))
            raw.settimeout(timeout)
            frames = FrameBuffer(self.max_frame_bytes)
            while True:
                body = frames.next_body()
                if body is not None:
                    raw.settimeout(None)
                    return sock, decode_body(body), frames
                data = sock.recv(65536)
                if not data:
                    raise OSError("closed before answering the resume")
                frames.feed(data)
        except BaseException:
            sock.close()
            raise

    def _resumable(self) -> bool:
        return self._resume and self._numbering.resume() is not None

    def _send_ack(self) -> None:
        """Acknowledges the server's frames, if it is time."""
        ack = self._numbering.take_ack(time.monotonic())
        if ack is not None:
            with contextlib.suppress(ConnectionClosed):
                self._send(ack)

    def _raise_if_closed(self) -> None:
        if self._end is not None:
            raise self._end

    def _send(self, frame: Frame) -> None:
        data = encode_frame(frame, self.max_frame_bytes)
        with self._send_lock:
            self._raise_if_closed()
            self._numbering.sent(frame, data[4:])
            try:
                self._sock.sendall(data)
            except OSError as e:
                if self._resumable():
                    # Kept: the reader resumes and sends it again.
                    with contextlib.suppress(OSError):
                        self._sock.shutdown(socket.SHUT_RDWR)
                else:
                    self._finish(ConnectionClosed(f"send failed: {e}"))
                    self._raise_if_closed()
            self._last_sent = time.monotonic()

    def _finish(self, why: ConnectionClosed) -> None:
        """Ends the connection once: records why, closes the socket, wakes every waiter."""
        with self._state_lock:
            if self._end is not None:
                return
            self._end = why
            pending = list(self._pending.values())
            pings = list(self._pings.values())
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._closed.set()
        for p in pending:
            p.event.set()
        for event in pings:
            event.set()
        self._pushes.put(_CLOSED)

    def _read_loop(self) -> None:
        frames = FrameBuffer(self.max_frame_bytes)
        try:
            while not self._closed.is_set():
                try:
                    data = self._sock.recv(65536)
                    lost = None if data else "the server closed the connection (no kick)"
                except OSError as e:
                    data, lost = b"", f"connection lost: {e}"
                if lost is not None:
                    resumed = self._lost(lost)
                    if resumed is None:
                        return
                    frames = resumed
                frames.feed(data)
                for frame in frames:
                    self._last_received = time.monotonic()
                    self._ping_outstanding_since = None
                    if self._dispatch(frame):
                        return
                self._send_ack()
        except MalformedFrame as e:
            # PROTOCOL.md: treat a malformed frame from the server like the server does.
            self._finish(ConnectionClosed(f"malformed frame from the server: {e}"))
        except BaseException as e:  # never leave waiters hanging
            self._finish(ConnectionClosed(f"reader failed: {e!r}"))
            raise

    def _dispatch(self, frame: Frame) -> bool:
        """Handles one frame from the server; True when the connection is over."""
        if isinstance(frame, Response):
            with self._state_lock:
                pending = self._pending.get(frame.id)
            if pending is not None and pending.response is None:
                pending.response = frame
                pending.event.set()
            self._numbering.response(frame.id, lambda i: i in self._pending)
        elif isinstance(frame, Push):
            self._numbering.push()
            if self._on_push is not None:
                self._on_push(frame)
            else:
                self._pushes.put(frame)
        elif isinstance(frame, Pong):
            self.pongs_received += 1
            with self._state_lock:
                event = self._pings.get(frame.nonce)
            if event is not None:
                event.set()
            if len(frame.nonce) == 8 and frame.nonce[:1] == b"\x80":
                sent = struct.unpack(">Q", frame.nonce)[0] & ~(1 << 63)
                self.last_rtt = max(0.0, time.monotonic() - sent / 1e6)
        elif isinstance(frame, Ping):
            try:
                self._send(Pong(frame.nonce))
            except ConnectionClosed:
                return True
        elif isinstance(frame, Kick):
            self.kick = frame
            self._finish(Kicked(frame.reason, frame.reason_name, frame.text))
            return True
        elif isinstance(frame, Session):
            self._numbering.offer(frame)
        elif isinstance(frame, Ack):
            self._numbering.ack(frame.count)
        elif isinstance(frame, Empty):
            pass
        else:
            # A request, notify, resume, or a resumed out of turn: not for a client.
            self._finish(ConnectionClosed(f"unexpected frame from the server: {describe(frame)}"))
            return True
        return False

    def _heartbeat_loop(self) -> None:
        assert self._heartbeat
        # Often enough for the acknowledgements a session owes (due 1 s after a frame).
        tick = min(self._heartbeat / 4, 0.25)
        while not self._closed.wait(tick):
            now = time.monotonic()
            self._send_ack()
            since = self._ping_outstanding_since
            if (since is not None and self._dead_after is not None
                    and now - since > self._dead_after):
                if self._resumable():
                    # The reader wakes to a dead socket, and resumes.
                    self._ping_outstanding_since = None
                    with contextlib.suppress(OSError):
                        self._sock.shutdown(socket.SHUT_RDWR)
                    continue
                self._finish(ConnectionClosed(
                    f"no frame from the server for {self._dead_after} s after a ping"))
                return
            if now - self._last_sent >= self._heartbeat:
                # The nonce carries the send time (µs, monotonic) with the top bit set,
                # so the reader can compute the round trip without a table.
                nonce = struct.pack(">Q", (1 << 63) | int(now * 1e6))
                # Before sending: the reader clears it when any frame comes back.
                if self._ping_outstanding_since is None:
                    self._ping_outstanding_since = now
                try:
                    self._send(Ping(nonce))
                except ConnectionClosed:
                    return
