/**
 * gatehouse.js: the gatehouse wire protocol (docs/PROTOCOL.md) over WebSocket, for
 * browsers and Node (>= 20). No dependencies, no build step: an ES module.
 *
 * What it owns:
 *  - the envelope codec: `encodeBody` / `decodeBody` for every kind (frames are
 *    plain objects such as `{ kind: 'request', id, route, payload }`), the validation
 *    PROTOCOL.md lists (`MalformedFrame` with `.error` = `unknown_kind`,
 *    `truncated`, `nonce_too_long` or `kick_text_not_utf8`), and `describe`, the
 *    canonical text of the test vectors;
 *  - the names of statuses and kick reasons, and `reconnectDelay`, the reconnect
 *    policy of PROTOCOL.md's kick table as a pure function;
 *  - `Client`: one connection at a time over an injectable WebSocket constructor,
 *    with request ids and timeouts, notifies, pushes by route, heartbeats, typed
 *    kicks, reconnection with backoff chosen by the kick reason, and session resume
 *    (`SessionNumbering`): a lost connection of a session the server offered is
 *    resumed on a new one, nothing lost or sent twice.
 *
 * The WebSocket mapping: one binary message is one frame body (the envelope without
 * the 4-byte length prefix); an empty binary message is the empty frame. A kick is
 * the kick envelope, then a close frame with code 4000 + reason (4999 for a game's
 * own codes, 1000 and up, which only the envelope carries); a close with such a code
 * and no envelope before it is taken as that kick.
 */

/** Largest frame body, in bytes (the server's `limits.max_frame_bytes`). */
export const MAX_FRAME_BYTES = 262144;
/** Longest ping or pong nonce. */
export const MAX_NONCE_BYTES = 64;
/** The framework's push "room restarted"; its payload is the room's name (UTF-8). */
export const ROUTE_ROOM_RESTARTED = 0xff01;
/** The framework's push "announcement" (the operators'); its payload is the text (UTF-8). */
export const ROUTE_ANNOUNCEMENT = 0xff02;
/**
 * The framework's request "end session": the client leaves on purpose. `close()`
 * needs no such request: its WebSocket close frame tells the server the same.
 */
export const ROUTE_END_SESSION = 0xff10;
/**
 * The close code a client gives a connection it abandons as lost, to resume the
 * session on a new one (PROTOCOL.md, "WebSocket"): not a goodbye.
 */
const CLOSE_TO_RESUME = 4000;
/** Close codes 4000 + kick reason carry a kick in the WebSocket close frame. */
export const KICK_CLOSE_BASE = 4000;

/**
 * The kick reason a WebSocket close code stands for when the kick envelope did not
 * arrive: 4000-4998 the framework's reasons, 4999 a game's own (then `kicked`, 13);
 * null for any other code.
 */
export function kickFromCloseCode(code) {
  if (code >= KICK_CLOSE_BASE && code <= KICK_CLOSE_BASE + 998) return code - KICK_CLOSE_BASE;
  if (code === KICK_CLOSE_BASE + 999) return 13;
  return null;
}

/** Envelope kind bytes. */
export const Kind = Object.freeze({
  REQUEST: 1, NOTIFY: 2, RESPONSE: 3, PUSH: 4, PING: 5, PONG: 6, KICK: 7,
  SESSION: 8, RESUME: 9, RESUMED: 10, ACK: 11,
});
const KIND_NAMES = ['', 'request', 'notify', 'response', 'push', 'ping', 'pong', 'kick',
  'session', 'resume', 'resumed', 'ack'];

/** Bytes of a session's resume token. */
export const TOKEN_BYTES = 32;

/** Framework response statuses (games use 1000 and up). */
export const STATUS_NAMES = Object.freeze({
  0: 'ok', 400: 'bad_request', 403: 'forbidden', 404: 'unknown_route',
  500: 'internal_error', 503: 'unavailable',
});

/** Kick reason codes (PROTOCOL.md, "Kick reasons"). */
export const KICK_REASONS = Object.freeze({
  1: 'idle', 2: 'dos', 3: 'server_full', 4: 'shutdown', 5: 'server_restart',
  6: 'duplicate_login', 7: 'protocol_error', 8: 'slow_consumer', 9: 'frame_too_large',
  10: 'login_timeout', 11: 'too_many_from_ip', 12: 'internal_error', 13: 'kicked',
  14: 'room_closed', 15: 'resume_failed',
});

/** The framework's name of a status; `game_error` from 1000 up, else `error`. */
export function statusName(status) {
  return STATUS_NAMES[status] ?? (status >= 1000 ? 'game_error' : 'error');
}

/**
 * The name of a kick reason. Codes from 1000 up are the game's (`game_kick`); an
 * unknown framework code is to be treated like `kicked`, so that is its name.
 */
export function kickReasonName(reason) {
  return KICK_REASONS[reason] ?? (reason >= 1000 ? 'game_kick' : 'kicked');
}

// ------------------------------------------------------------------------ errors

/** Base class of the errors this module raises on purpose. */
export class GatehouseError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** A body that cannot be decoded; `error` names the problem as PROTOCOL.md does. */
export class MalformedFrame extends GatehouseError {
  constructor(error, detail) {
    super(`${error}: ${detail}`);
    this.error = error;
    this.detail = detail;
  }
}

/** A response with a non-zero status: `status`, `text` (the payload as UTF-8), `payload`. */
export class RequestError extends GatehouseError {
  constructor(status, payload) {
    const text = lenientUtf8.decode(payload);
    super(`status ${status} (${statusName(status)}): ${text}`);
    this.status = status;
    this.text = text;
    this.payload = payload;
  }
}

/** No answer in time. The connection stays open; a late answer is dropped. */
export class RequestTimeout extends GatehouseError {}

/**
 * The connection is closed (by the client, by the server without a kick, or lost).
 * `code` is the WebSocket close code when the socket's close ended it (1006: lost),
 * else null; `byClient` is true after `close()`. Pages word their notices by them.
 */
export class ConnectionClosed extends GatehouseError {
  constructor(message, { code = null, byClient = false } = {}) {
    super(message);
    this.code = code;
    this.byClient = byClient;
  }
}

/** A kick from the server: `reason` (the code), `name`, `text`. */
export class Kick {
  constructor(reason, text = '') {
    this.reason = reason;
    this.text = text;
  }

  get name() {
    return kickReasonName(this.reason);
  }

  toString() {
    return `${this.name} (${this.reason})${this.text ? `: ${this.text}` : ''}`;
  }
}

/** The connection ended with a kick; `kick` says why. */
export class Kicked extends ConnectionClosed {
  constructor(kick) {
    super(`kicked: ${kick}`);
    this.kick = kick;
  }
}

// ------------------------------------------------------------------------- codec

const utf8Encoder = new TextEncoder();
// Strict for kick texts (a bad one is malformed); ignoreBOM keeps a leading U+FEFF
// as the text's own character, as the server's decoder does.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const lenientUtf8 = new TextDecoder('utf-8', { ignoreBOM: true });

/** Bytes from a Uint8Array, any ArrayBuffer view, an ArrayBuffer, a string (UTF-8) or nothing. */
export function toBytes(data) {
  if (data === undefined || data === null) return new Uint8Array(0);
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (typeof data === 'string') return utf8Encoder.encode(data);
  throw new TypeError(`expected bytes, got ${Object.prototype.toString.call(data)}`);
}

/** Lowercase hex of bytes. */
export function toHex(bytes) {
  return Array.from(toBytes(bytes), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Bytes of a hex string (spaces allowed). */
export function fromHex(hex) {
  const clean = hex.replace(/\s+/g, '');
  if (clean.length % 2 !== 0 || /[^0-9a-f]/i.test(clean)) throw new SyntaxError(`not hex: ${hex}`);
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function checkUint(value, bits, what) {
  const max = 2 ** bits - 1;
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${what} must be an integer in 0..${max}, got ${value}`);
  }
}

/** A u64 (a BigInt, or a Number that is a safe integer) as a BigInt. */
function checkU64(value, what) {
  const big = typeof value === 'bigint' ? value : Number.isSafeInteger(value) ? BigInt(value) : null;
  if (big === null || big < 0n || big >= 2n ** 64n) {
    throw new RangeError(`${what} must be an integer in 0..2^64-1, got ${value}`);
  }
  return big;
}

function checkToken(token) {
  const bytes = toBytes(token);
  if (bytes.length !== TOKEN_BYTES) {
    throw new RangeError(`a token is ${TOKEN_BYTES} bytes, got ${bytes.length}`);
  }
  return bytes;
}

function checkNonce(nonce) {
  const bytes = toBytes(nonce);
  if (bytes.length > MAX_NONCE_BYTES) {
    throw new RangeError(`a nonce is at most ${MAX_NONCE_BYTES} bytes, got ${bytes.length}`);
  }
  return bytes;
}

/** `kind` byte, fixed header fields (each [bytes, value]), then the rest. */
function assemble(kind, fields, rest) {
  const headerLength = 1 + fields.reduce((n, [size]) => n + size, 0);
  const body = new Uint8Array(headerLength + rest.length);
  const view = new DataView(body.buffer);
  body[0] = kind;
  let at = 1;
  for (const [size, value] of fields) {
    if (size === 8) view.setBigUint64(at, value);
    else if (size === 4) view.setUint32(at, value);
    else view.setUint16(at, value);
    at += size;
  }
  body.set(rest, headerLength);
  return body;
}

/**
 * The body of a frame (no length prefix): what one WebSocket binary message holds.
 * Throws RangeError for a field out of range (an id over u32, a route, status or
 * reason over u16, a nonce over 64 bytes) and TypeError for something not a frame.
 */
export function encodeBody(frame) {
  switch (frame?.kind) {
    case 'empty':
      return new Uint8Array(0);
    case 'request':
      checkUint(frame.id, 32, 'id');
      checkUint(frame.route, 16, 'route');
      return assemble(Kind.REQUEST, [[4, frame.id], [2, frame.route]], toBytes(frame.payload));
    case 'response':
      checkUint(frame.id, 32, 'id');
      checkUint(frame.status, 16, 'status');
      return assemble(Kind.RESPONSE, [[4, frame.id], [2, frame.status]], toBytes(frame.payload));
    case 'notify':
    case 'push':
      checkUint(frame.route, 16, 'route');
      return assemble(frame.kind === 'notify' ? Kind.NOTIFY : Kind.PUSH,
        [[2, frame.route]], toBytes(frame.payload));
    case 'ping':
    case 'pong':
      return assemble(frame.kind === 'ping' ? Kind.PING : Kind.PONG, [], checkNonce(frame.nonce));
    case 'kick':
      checkUint(frame.reason, 16, 'reason');
      if (typeof frame.text !== 'string') throw new TypeError('a kick text is a string');
      return assemble(Kind.KICK, [[2, frame.reason]], utf8Encoder.encode(frame.text));
    case 'session':
      checkUint(frame.windowMs, 32, 'windowMs');
      return assemble(Kind.SESSION, [[8, checkU64(frame.id, 'id')], [4, frame.windowMs]],
        checkToken(frame.token));
    case 'resume':
      return assemble(Kind.RESUME,
        [[8, checkU64(frame.id, 'id')], [8, checkU64(frame.received, 'received')]], checkToken(frame.token));
    case 'resumed':
      return assemble(Kind.RESUMED, [[8, checkU64(frame.received, 'received')]], new Uint8Array(0));
    case 'ack':
      return assemble(Kind.ACK, [[8, checkU64(frame.count, 'count')]], new Uint8Array(0));
    default:
      throw new TypeError(`not a frame: ${JSON.stringify(frame)}`);
  }
}

/** The session kinds' whole body lengths: they have no payload, so more is an error. */
const FIXED_LENGTH = { [Kind.SESSION]: 45, [Kind.RESUME]: 49, [Kind.RESUMED]: 9, [Kind.ACK]: 9 };

function exactly(body) {
  const length = FIXED_LENGTH[body[0]];
  if (body.length !== length) {
    throw new MalformedFrame(body.length < length ? 'truncated' : 'trailing_bytes',
      `kind ${body[0]} is ${length} bytes, got ${body.length}`);
  }
}

function needs(body, length) {
  if (body.length < length) {
    throw new MalformedFrame('truncated', `kind ${body[0]} needs ${length} bytes, got ${body.length}`);
  }
}

/**
 * Decodes one frame body (a whole WebSocket binary message). Payloads, nonces and
 * texts are copies. Throws MalformedFrame for the malformed bodies of PROTOCOL.md.
 */
export function decodeBody(data) {
  const body = toBytes(data);
  if (body.length === 0) return { kind: 'empty' };
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const kind = body[0];
  switch (kind) {
    case Kind.REQUEST:
      needs(body, 7);
      return { kind: 'request', id: view.getUint32(1), route: view.getUint16(5), payload: body.slice(7) };
    case Kind.RESPONSE:
      needs(body, 7);
      return { kind: 'response', id: view.getUint32(1), status: view.getUint16(5), payload: body.slice(7) };
    case Kind.NOTIFY:
    case Kind.PUSH:
      needs(body, 3);
      return { kind: KIND_NAMES[kind], route: view.getUint16(1), payload: body.slice(3) };
    case Kind.PING:
    case Kind.PONG:
      if (body.length - 1 > MAX_NONCE_BYTES) {
        throw new MalformedFrame('nonce_too_long',
          `nonce of ${body.length - 1} bytes, at most ${MAX_NONCE_BYTES}`);
      }
      return { kind: KIND_NAMES[kind], nonce: body.slice(1) };
    case Kind.KICK: {
      needs(body, 3);
      let text;
      try {
        text = strictUtf8.decode(body.subarray(3));
      } catch (e) {
        throw new MalformedFrame('kick_text_not_utf8', e.message);
      }
      return { kind: 'kick', reason: view.getUint16(1), text };
    }
    case Kind.SESSION:
      exactly(body);
      return { kind: 'session', id: view.getBigUint64(1), windowMs: view.getUint32(9), token: body.slice(13) };
    case Kind.RESUME:
      exactly(body);
      return { kind: 'resume', id: view.getBigUint64(1), received: view.getBigUint64(9), token: body.slice(17) };
    case Kind.RESUMED:
      exactly(body);
      return { kind: 'resumed', received: view.getBigUint64(1) };
    case Kind.ACK:
      exactly(body);
      return { kind: 'ack', count: view.getBigUint64(1) };
    default:
      throw new MalformedFrame('unknown_kind', `kind byte 0x${kind.toString(16).padStart(2, '0')}`);
  }
}

/** The canonical text form of PROTOCOL.md's test vectors, e.g. `ping nonce=00ff`. */
export function describe(frame) {
  switch (frame.kind) {
    case 'empty': return 'empty';
    case 'request': return `request id=${frame.id} route=${frame.route} payload=${toHex(frame.payload)}`;
    case 'notify': return `notify route=${frame.route} payload=${toHex(frame.payload)}`;
    case 'response': return `response id=${frame.id} status=${frame.status} payload=${toHex(frame.payload)}`;
    case 'push': return `push route=${frame.route} payload=${toHex(frame.payload)}`;
    case 'ping': return `ping nonce=${toHex(frame.nonce)}`;
    case 'pong': return `pong nonce=${toHex(frame.nonce)}`;
    case 'kick': return `kick reason=${frame.reason} text="${frame.text}"`;
    case 'session': return `session id=${frame.id} window_ms=${frame.windowMs} token=${toHex(frame.token)}`;
    case 'resume': return `resume id=${frame.id} received=${frame.received} token=${toHex(frame.token)}`;
    case 'resumed': return `resumed received=${frame.received}`;
    case 'ack': return `ack count=${frame.count}`;
    default: throw new TypeError(`not a frame: ${JSON.stringify(frame)}`);
  }
}

// ---------------------------------------------------------------- reconnecting

/**
 * How each kick reason reconnects (PROTOCOL.md's table): `now` (a few hundred ms
 * of jitter), `short` (a short delay, doubling), `long` (1 s doubling to 30-60 s),
 * `never` (not automatically: a bug, or someone else's decision).
 */
export const RECONNECT_POLICY = Object.freeze({
  idle: 'short',
  dos: 'long',
  server_full: 'long',
  shutdown: 'short',
  server_restart: 'now',
  duplicate_login: 'never',
  protocol_error: 'never',
  slow_consumer: 'short',
  frame_too_large: 'never',
  login_timeout: 'short',
  too_many_from_ip: 'long',
  internal_error: 'short',
  kicked: 'never',
  room_closed: 'now',
  resume_failed: 'now', // log in again, as a new session
});

/** The policy name for a kick reason code, or for `null` (closed without a kick). */
export function reconnectPolicy(reason) {
  if (reason === null || reason === undefined) return 'short'; // lost: back off
  if (reason >= 1000) return 'never'; // a game's own code: its documentation decides
  return RECONNECT_POLICY[KICK_REASONS[reason]] ?? 'never'; // unknown: like `kicked`
}

/** `now`: at most this much jitter. */
export const RECONNECT_JITTER_MS = 300;
const BACKOFF = Object.freeze({
  short: { base: 500, cap: 10_000 }, // [0.5, 1) s, doubling to [10, 20) s
  long: { base: 1000, cap: 30_000 }, // [1, 2) s, doubling to [30, 60) s
});

/**
 * Milliseconds to wait before reconnecting attempt number `attempt` (0 for the
 * first) after a connection ended with kick `reason` (a code, or null for no kick),
 * or null for "do not reconnect automatically". `random` returns [0, 1) as
 * Math.random does; the jitter is `random` times the step, on top of it.
 */
export function reconnectDelay(reason, attempt = 0, random = Math.random) {
  const policy = reconnectPolicy(reason);
  if (policy === 'never') return null;
  if (policy === 'now') return Math.floor(random() * RECONNECT_JITTER_MS);
  const { base, cap } = BACKOFF[policy];
  const step = Math.min(cap, base * 2 ** Math.min(Math.max(0, attempt), 20));
  return Math.floor(step * (1 + random()));
}

// ------------------------------------------------------------------- resuming

/** Acknowledge after this many of the server's frames, or this long after the oldest. */
const ACK_EVERY_FRAMES = 32n;
const ACK_WITHIN_MS = 1000;

/**
 * What a resumable session counts and keeps (PROTOCOL.md, "session, resume, resumed
 * and ack"), without I/O. Before a session is offered: the frames sent since the
 * oldest unanswered request. The response after the `session` frame names the
 * request that draws the line; the requests and notifies sent after it are numbered
 * from 1 and kept until the server acknowledges them; the server's responses and
 * pushes are counted from that response on. Counts are BigInts (u64 on the wire).
 */
export class SessionNumbering {
  /** The session ({id, windowMs, token}) once its line is drawn, else null. */
  session = null;
  /** The server's numbered frames received. */
  received = 0n;
  #log = []; // [{id (null for a notify), body}] before the line
  #offered = null;
  #acked = 0n;
  #ackDue = null;
  #unacked = []; // our numbered frames' bodies, oldest first
  #first = 1n; // the number of #unacked[0]

  /** A request or notify was sent (or is to be, once resumed). */
  sent(frame, body) {
    if (frame.kind !== 'request' && frame.kind !== 'notify') return;
    if (this.session) this.#unacked.push(body);
    else this.#log.push({ id: frame.kind === 'request' ? frame.id : null, body });
  }

  /** A response to request `id` came at `now` (ms); `pending(id)`: still unanswered. */
  response(id, now, pending) {
    if (this.#offered) {
      const at = this.#log.findIndex((entry) => entry.id === id);
      const after = at < 0 ? this.#log.length : at + 1;
      this.#unacked = this.#log.slice(after).map((entry) => entry.body);
      this.#log = [];
      this.session = this.#offered;
      this.#offered = null;
    }
    if (this.session) {
      this.#numbered(now);
      return;
    }
    while (this.#log.length && (this.#log[0].id === null || !pending(this.#log[0].id))) {
      this.#log.shift();
    }
  }

  /** A push came at `now`. */
  push(now) {
    if (this.session) this.#numbered(now);
  }

  #numbered(now) {
    this.received += 1n;
    this.#ackDue ??= now + ACK_WITHIN_MS;
    if (this.received - this.#acked >= ACK_EVERY_FRAMES) this.#ackDue = now;
  }

  /** A `session` frame: the offer at the login, or a fresh token after a resume. */
  offer(frame) {
    const session = { id: frame.id, windowMs: frame.windowMs, token: frame.token };
    if (this.session) this.session = session;
    else this.#offered = session;
  }

  /** The server acknowledged our first `count` numbered frames. */
  ack(count) {
    if (!this.session) return;
    const sent = this.#first - 1n + BigInt(this.#unacked.length);
    if (count > sent) throw new MalformedFrame('ack_beyond_sent', `an ack of ${count}, ${sent} sent`);
    while (this.#first <= count && this.#unacked.length) {
      this.#unacked.shift();
      this.#first += 1n;
    }
  }

  /** When an acknowledgement is due (ms), or null. */
  get ackDue() { return this.#ackDue; }

  /** The ack frame to send at `now`, if one is due. */
  takeAck(now) {
    if (this.#ackDue === null || now < this.#ackDue) return null;
    this.#ackDue = null;
    if (this.received <= this.#acked) return null;
    this.#acked = this.received;
    return { kind: 'ack', count: this.received };
  }

  /** The `resume` frame a new connection opens with, or null without a session. */
  resumeFrame() {
    if (!this.session) return null;
    return { kind: 'resume', id: this.session.id, received: this.received, token: this.session.token };
  }

  /** The server resumed at `received` of our frames: the bodies to send again. */
  resumed(received) {
    const sent = this.#first - 1n + BigInt(this.#unacked.length);
    if (received > sent || received + 1n < this.#first) {
      throw new MalformedFrame('bad_resume', `resumed at ${received}; ${sent} sent, before ${this.#first} acknowledged`);
    }
    while (this.#first <= received) {
      this.#unacked.shift();
      this.#first += 1n;
    }
    if (this.#acked > this.received) this.#acked = this.received;
    return [...this.#unacked];
  }
}

// ------------------------------------------------------------------------ client

const defaultTimers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (id) => globalThis.clearTimeout(id),
  now: () => globalThis.performance.now(),
};

const HEARTBEAT_NONCE_FLAG = 1n << 63n; // marks a nonce that carries its send time

/**
 * A gatehouse connection over WebSocket, reconnecting by itself after a kick or a
 * lost connection as PROTOCOL.md's kick table says.
 *
 * Options (all optional): `WebSocket` (the constructor; the global one by default),
 * `requestTimeout` (ms, 10 000), `heartbeat` (ms: ping when nothing was sent, or
 * nothing received, for this long; 15 000; 0 turns it off), `deadAfter` (ms: close
 * when no frame at all arrived for this long; 30 000; 0 turns it off),
 * `maxMessageBytes` (262 144), `reconnect` (true), `reconnectPolicy(reason, attempt,
 * random)` (`reconnectDelay` by default), `onReconnect(client)` (awaited after each
 * reconnection: log in again there), `resume` (true: resume a session the server
 * offered when the connection is lost), `random` and `timers` ({setTimeout,
 * clearTimeout, now}: for tests).
 *
 * Session resume: when a session the server offered loses its connection (not a
 * kick, not `close()`), the client connects again within the server's window and
 * resumes it: waiting requests get their answers, pushes go on, requests and
 * notifies made meanwhile are sent once it is back, and nothing is lost or twice. A
 * resume the server refuses is a `resume_failed` kick: the requests fail, and the
 * client reconnects and calls `onReconnect`, to log in again.
 *
 * Events (an EventTarget; `event.detail` says more): `open` ({url, reconnected}),
 * `push` ({route, payload}), `kick` (the Kick), `close` ({error, kick, reconnectIn:
 * ms or null}), `reconnecting` ({attempt, delay, kick}), `reconnected` (after
 * `onReconnect` resolved), `resuming` ({error, attempt}: the connection was lost and
 * the session is being resumed), `resumed` ({resumes}), `error` ({error}:
 * `onReconnect` failed; the connection stays open).
 */
export class Client extends EventTarget {
  /** Awaited after each automatic reconnection (before `reconnected`). */
  onReconnect;
  /** Round trip of the last answered ping, in ms (null before any). */
  lastRtt = null;

  #options;
  #timers;
  #ws = null;
  #state = 'idle'; // idle | connecting | open | closed
  #url = null;
  #end = null; // why the last connection ended
  #kick = null; // the kick that ended it, if one did
  #pending = new Map(); // request id -> {resolve, reject, timer}
  #pings = new Map(); // nonce hex -> {resolve, reject, timer, sent}
  #pushHandlers = new Map(); // route -> Set of handlers
  #nextId = 1;
  #nextNonce = 1;
  #lastSent = 0;
  #lastReceived = 0;
  #lastBeat = 0;
  #heartbeatTimer = null;
  #reconnectTimer = null;
  #attempt = 0; // reconnections since the server last served this client
  #everOpened = false;
  #userClosed = false;
  #connecting = null; // {resolve, reject} of the pending connect()
  #numbering = new SessionNumbering();
  #resuming = null; // {error, deadline, attempt} while a lost session is resumed
  #awaitingResumed = false; // a resume was sent on this connection; no answer yet
  #resumes = 0;

  constructor(options = {}) {
    super();
    this.#options = {
      WebSocket: globalThis.WebSocket,
      requestTimeout: 10_000,
      heartbeat: 15_000,
      deadAfter: 30_000,
      maxMessageBytes: MAX_FRAME_BYTES,
      reconnect: true,
      resume: true,
      reconnectPolicy: reconnectDelay,
      random: Math.random,
      ...options,
    };
    this.#timers = { ...defaultTimers, ...options.timers };
    this.onReconnect = options.onReconnect;
  }

  /** `idle`, `connecting`, `open`, `resuming` (a lost session comes back) or `closed`. */
  get state() { return this.#state; }
  /** Sessions resumed on a new connection so far. */
  get resumes() { return this.#resumes; }
  /** The URL given to connect(). */
  get url() { return this.#url; }
  /** The kick that ended the last connection (null if none did). */
  get kick() { return this.#kick; }
  /** Requests waiting for their response. */
  get outstanding() { return this.#pending.size; }

  /**
   * Opens the connection; resolves once the WebSocket is open. Rejects with
   * ConnectionClosed if it closes before opening (no automatic retry for a first
   * connection that never opened).
   */
  connect(url) {
    if (this.#state === 'open' || this.#state === 'connecting') {
      return Promise.reject(new GatehouseError(`already ${this.#state}`));
    }
    this.#cancelReconnect();
    this.#url = url;
    this.#userClosed = false;
    this.#everOpened = false;
    this.#attempt = 0;
    return this.#open(false);
  }

  /**
   * Closes the connection for good: no reconnection; outstanding requests fail. The
   * WebSocket close frame tells the server the client left on purpose: a session it
   * offered ends at once instead of waiting for a resume.
   */
  close() {
    this.#userClosed = true;
    this.#cancelReconnect();
    if (this.#state === 'open' || this.#state === 'connecting' || this.#state === 'resuming') {
      this.#finish(new ConnectionClosed('closed by the client', { byClient: true }));
    }
    this.#state = 'closed';
  }

  /**
   * Sends a request; resolves with the response payload (a Uint8Array) for status
   * 0, rejects with RequestError for another status, RequestTimeout after `timeout`
   * ms (option `requestTimeout` by default; 0: no timeout), Kicked or
   * ConnectionClosed if the connection ends first, RangeError for a message over
   * the maximum. `payload`: bytes, or a string sent as UTF-8.
   */
  request(route, payload, { timeout = this.#options.requestTimeout } = {}) {
    return new Promise((resolve, reject) => {
      const id = this.#takeId();
      this.#send({ kind: 'request', id, route, payload });
      const timer = timeout > 0
        ? this.#timers.setTimeout(() => {
          this.#pending.delete(id);
          reject(new RequestTimeout(`no response to request ${id} (route ${route}) in ${timeout} ms`));
        }, timeout)
        : null;
      this.#pending.set(id, { resolve, reject, timer });
    });
  }

  /** Sends a notify (never answered). Throws if closed or too large. */
  notify(route, payload) {
    this.#send({ kind: 'notify', route, payload });
  }

  /** Sends an empty frame (a keepalive, never answered). */
  sendEmpty() {
    this.#send({ kind: 'empty' });
  }

  /** Sends a ping; resolves with the round trip in ms when its pong arrives. */
  ping({ timeout = this.#options.requestTimeout } = {}) {
    return new Promise((resolve, reject) => {
      const nonce = new Uint8Array(8);
      new DataView(nonce.buffer).setBigUint64(0, BigInt(this.#nextNonce++));
      const key = toHex(nonce);
      this.#send({ kind: 'ping', nonce });
      const timer = timeout > 0
        ? this.#timers.setTimeout(() => {
          this.#pings.delete(key);
          reject(new RequestTimeout(`no pong in ${timeout} ms`));
        }, timeout)
        : null;
      this.#pings.set(key, { resolve, reject, timer, sent: this.#timers.now() });
    });
  }

  /**
   * Calls `handler(payload, route)` for every push on `route`; returns a function
   * that removes it. Every push is also a `push` event.
   */
  onPush(route, handler) {
    if (!this.#pushHandlers.has(route)) this.#pushHandlers.set(route, new Set());
    this.#pushHandlers.get(route).add(handler);
    return () => this.#pushHandlers.get(route)?.delete(handler);
  }

  // ------------------------------------------------------------- internals

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #takeId() {
    // A wrapping u32 counter, skipping 0 and ids still outstanding.
    for (;;) {
      const id = this.#nextId;
      this.#nextId = (this.#nextId + 1) % 2 ** 32;
      if (id !== 0 && !this.#pending.has(id)) return id;
    }
  }

  #send(frame) {
    const away = this.#state === 'resuming' || this.#awaitingResumed;
    if (this.#state !== 'open' && !away) {
      throw this.#end ?? new ConnectionClosed(`not connected (${this.#state})`);
    }
    const body = encodeBody(frame);
    if (body.length > this.#options.maxMessageBytes) {
      throw new RangeError(
        `a message of ${body.length} bytes is over the maximum of ${this.#options.maxMessageBytes}`);
    }
    this.#numbering.sent(frame, body); // requests and notifies: kept, and sent again once resumed
    if (away) return; // the rest (pings, acks) is of no use to a connection that is gone
    this.#ws.send(body); // a Uint8Array: always a binary message, never text
    this.#lastSent = this.#timers.now();
  }

  #open(reconnected, resuming = false) {
    return new Promise((resolve, reject) => {
      if (!resuming) {
        this.#state = 'connecting';
        this.#end = null;
        this.#kick = null;
      }
      if (!reconnected) this.#connecting = { resolve, reject };
      let ws;
      try {
        const WebSocketClass = this.#options.WebSocket;
        if (typeof WebSocketClass !== 'function') {
          throw new TypeError('no WebSocket constructor: pass options.WebSocket');
        }
        ws = new WebSocketClass(this.#url);
        ws.binaryType = 'arraybuffer';
      } catch (e) {
        this.#finish(new ConnectionClosed(`cannot connect to ${this.#url}: ${e.message}`));
        if (reconnected) resolve();
        return;
      }
      this.#ws = ws;
      // Events of a socket this client has let go of are ignored.
      ws.addEventListener('open', () => {
        if (ws === this.#ws) {
          if (resuming) this.#openedToResume();
          else this.#opened(reconnected);
        }
        resolve();
      });
      ws.addEventListener('message', (event) => {
        if (ws === this.#ws) this.#received(event.data);
      });
      ws.addEventListener('close', (event) => {
        if (ws === this.#ws) this.#closed(event);
        resolve(); // a reconnection's end is handled by #finish; the first one rejected there
      });
    });
  }

  /** A new connection for the lost session: it opens with the resume. */
  #openedToResume() {
    const now = this.#timers.now();
    this.#ws.send(encodeBody(this.#numbering.resumeFrame()));
    this.#awaitingResumed = true;
    this.#lastSent = now;
    this.#lastReceived = now;
    this.#lastBeat = now;
  }

  /** The server answered the resume with `frame`. */
  #answeredResume(frame) {
    this.#awaitingResumed = false;
    if (frame.kind === 'kick') {
      // Refused: the session is over; log in again on a fresh one (reconnect policy).
      this.#resuming = null;
      this.#numbering = new SessionNumbering();
      this.#finish(new Kicked(new Kick(frame.reason, frame.text)));
      return;
    }
    let again;
    try {
      if (frame.kind !== 'resumed') throw new MalformedFrame('unexpected', `${frame.kind} for a resume`);
      again = this.#numbering.resumed(frame.received);
    } catch (e) {
      this.#resuming = null;
      this.#numbering = new SessionNumbering();
      this.#finish(new ConnectionClosed(`resume failed: ${e.message}`));
      return;
    }
    for (const body of again) this.#ws.send(body);
    this.#resuming = null;
    this.#state = 'open';
    this.#resumes += 1;
    this.#attempt = 0;
    this.#scheduleHeartbeat();
    this.#emit('resumed', { resumes: this.#resumes });
  }

  async #opened(reconnected) {
    this.#state = 'open';
    this.#everOpened = true;
    const now = this.#timers.now();
    this.#lastSent = now;
    this.#lastReceived = now;
    this.#lastBeat = now;
    this.#connecting = null;
    this.#scheduleHeartbeat();
    this.#emit('open', { url: this.#url, reconnected });
    if (!reconnected) return;
    const ws = this.#ws;
    try {
      await this.onReconnect?.(this);
    } catch (error) {
      if (ws === this.#ws) this.#emit('error', { error });
      return;
    }
    if (ws === this.#ws && this.#state === 'open') this.#emit('reconnected', { url: this.#url });
  }

  #received(data) {
    if (typeof data === 'string') {
      this.#finish(new ConnectionClosed('the server sent a text message (envelopes travel in binary messages)'));
      return;
    }
    let frame;
    try {
      const body = toBytes(data);
      if (body.length > this.#options.maxMessageBytes) {
        throw new MalformedFrame('frame_too_large', `a message of ${body.length} bytes`);
      }
      frame = decodeBody(body);
    } catch (e) {
      this.#finish(new ConnectionClosed(`malformed frame from the server: ${e.message}`));
      return;
    }
    const now = this.#timers.now();
    this.#lastReceived = now;
    if (this.#awaitingResumed) {
      this.#answeredResume(frame);
      return;
    }
    if (frame.kind === 'kick') {
      this.#finish(new Kicked(new Kick(frame.reason, frame.text)));
      return;
    }
    this.#attempt = 0; // the server serves this client: backoff starts over next time
    switch (frame.kind) {
      case 'response': {
        const waiter = this.#pending.get(frame.id);
        if (!waiter) { // timed out: dropped (and counted)
          this.#numbered('response', frame.id, now);
          return;
        }
        this.#pending.delete(frame.id);
        if (waiter.timer !== null) this.#timers.clearTimeout(waiter.timer);
        if (frame.status === 0) waiter.resolve(frame.payload);
        else waiter.reject(new RequestError(frame.status, frame.payload));
        this.#numbered('response', frame.id, now);
        return;
      }
      case 'push':
        this.#numbered('push', null, now);
        for (const handler of this.#pushHandlers.get(frame.route) ?? []) {
          try {
            handler(frame.payload, frame.route);
          } catch (e) {
            console.error(`push handler for route ${frame.route} failed`, e); // reading goes on
          }
        }
        this.#emit('push', { route: frame.route, payload: frame.payload });
        return;
      case 'ping':
        this.#send({ kind: 'pong', nonce: frame.nonce });
        return;
      case 'pong':
        this.#ponged(frame.nonce);
        return;
      case 'empty':
        return;
      case 'session':
        this.#numbering.offer(frame);
        return;
      case 'ack':
        try {
          this.#numbering.ack(frame.count);
        } catch (e) {
          this.#finish(new ConnectionClosed(`from the server: ${e.message}`));
        }
        return;
      default: // request, notify, resume, or a resumed never asked for: not for a client
        this.#finish(new ConnectionClosed(`unexpected ${frame.kind} from the server`));
    }
  }

  /** Counts a response or push of a session, and acknowledges when it is time. */
  #numbered(kind, id, now) {
    if (kind === 'response') this.#numbering.response(id, now, (pending) => this.#pending.has(pending));
    else this.#numbering.push(now);
    this.#sendAck(now);
  }

  #sendAck(now) {
    const ack = this.#numbering.takeAck(now);
    if (ack && this.#state === 'open' && !this.#awaitingResumed) this.#send(ack);
  }

  #ponged(nonce) {
    const key = toHex(nonce);
    const waiter = this.#pings.get(key);
    if (waiter) {
      this.#pings.delete(key);
      if (waiter.timer !== null) this.#timers.clearTimeout(waiter.timer);
      this.lastRtt = this.#timers.now() - waiter.sent;
      waiter.resolve(this.lastRtt);
    } else if (nonce.length === 8) {
      const value = new DataView(nonce.buffer, nonce.byteOffset, 8).getBigUint64(0);
      if (value & HEARTBEAT_NONCE_FLAG) {
        const sentMicros = Number(value & ~HEARTBEAT_NONCE_FLAG);
        this.lastRtt = Math.max(0, this.#timers.now() - sentMicros / 1000);
      }
    }
  }

  #closed(event) {
    const code = event.code ?? 1006;
    const reason = kickFromCloseCode(code);
    if (reason !== null) {
      this.#finish(new Kicked(new Kick(reason, event.reason ?? '')));
    } else {
      const reason = event.reason ? `: ${event.reason}` : '';
      this.#finish(new ConnectionClosed(`connection lost (close code ${code}${reason})`, { code }));
    }
  }

  #scheduleHeartbeat() {
    const { heartbeat, deadAfter } = this.#options;
    if (!heartbeat && !deadAfter) return;
    // Often enough for a session's acknowledgements (due a second after a frame).
    const every = Math.min(this.#numbering.session ? 250 : 1000, (heartbeat || deadAfter) / 4);
    this.#heartbeatTimer = this.#timers.setTimeout(() => this.#beat(), every);
  }

  #beat() {
    this.#heartbeatTimer = null;
    if (this.#state !== 'open') return;
    const { heartbeat, deadAfter } = this.#options;
    const now = this.#timers.now();
    this.#sendAck(now);
    if (deadAfter && now - this.#lastReceived >= deadAfter) {
      this.#finish(new ConnectionClosed(`no frame from the server for ${deadAfter} ms`));
      return;
    }
    // Ping when nothing was sent for a while (the server's idle timer), and also when
    // nothing came back for a while (so that a live server has something to answer).
    const quietSince = Math.max(this.#lastReceived, this.#lastBeat);
    if (heartbeat && (now - this.#lastSent >= heartbeat || now - quietSince >= heartbeat)) {
      const nonce = new Uint8Array(8);
      const micros = BigInt(Math.max(0, Math.round(now * 1000)));
      new DataView(nonce.buffer).setBigUint64(0, HEARTBEAT_NONCE_FLAG | (micros & ~HEARTBEAT_NONCE_FLAG));
      this.#send({ kind: 'ping', nonce });
      this.#lastBeat = now;
    }
    this.#scheduleHeartbeat();
  }

  #cancelReconnect() {
    if (this.#reconnectTimer !== null) this.#timers.clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
  }

  /**
   * The connection of a session the server offered was lost (`error`): keeps what
   * waits, and tries new connections to resume it until the window ends; then gives
   * up (the usual end, with a reconnection that logs in again).
   */
  #lose(error) {
    const ws = this.#ws;
    this.#ws = null;
    this.#awaitingResumed = false;
    if (this.#heartbeatTimer !== null) this.#timers.clearTimeout(this.#heartbeatTimer);
    this.#heartbeatTimer = null;
    try {
      // Not 1000: the server would take a normal close for a goodbye and end the session.
      ws?.close(CLOSE_TO_RESUME, 'lost; resuming');
    } catch {
      // already closing
    }
    for (const waiter of this.#pings.values()) {
      if (waiter.timer !== null) this.#timers.clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    this.#pings.clear();
    const now = this.#timers.now();
    this.#resuming ??= { error, deadline: now + this.#numbering.session.windowMs, attempt: 0 };
    this.#state = 'resuming';
    const resuming = this.#resuming;
    if (now >= resuming.deadline) {
      // Not back in time: the session is over.
      this.#resuming = null;
      this.#numbering = new SessionNumbering();
      this.#finish(resuming.error);
      return;
    }
    resuming.attempt += 1;
    this.#emit('resuming', { error, attempt: resuming.attempt });
    const delay = Math.min(1000, 50 * 2 ** Math.min(resuming.attempt - 1, 5));
    this.#reconnectTimer = this.#timers.setTimeout(() => {
      this.#reconnectTimer = null;
      if (!this.#userClosed && this.#state === 'resuming') this.#open(true, true);
    }, Math.min(delay, Math.max(0, resuming.deadline - now)));
  }

  /** Ends the current connection once: fails its waiters, tells why, maybe reconnects. */
  #finish(error) {
    const lost = !(error instanceof Kicked) && !this.#userClosed && !error.byClient
      && this.#options.resume && this.#numbering.session !== null;
    if (lost) {
      this.#lose(error);
      return;
    }
    this.#resuming = null;
    this.#awaitingResumed = false;
    const ws = this.#ws;
    this.#ws = null;
    this.#state = 'closed';
    this.#end = error;
    this.#kick = error instanceof Kicked ? error.kick : null;
    if (this.#heartbeatTimer !== null) this.#timers.clearTimeout(this.#heartbeatTimer);
    this.#heartbeatTimer = null;
    try {
      ws?.close(1000); // close promptly after a kick, as PROTOCOL.md asks
    } catch {
      // already closing
    }
    for (const waiters of [this.#pending, this.#pings]) {
      for (const waiter of waiters.values()) {
        if (waiter.timer !== null) this.#timers.clearTimeout(waiter.timer);
        waiter.reject(error);
      }
      waiters.clear();
    }
    if (this.#connecting) {
      this.#connecting.reject(error);
      this.#connecting = null;
    }
    if (this.#kick) this.#emit('kick', this.#kick);

    let delay = null;
    if (!this.#userClosed && this.#everOpened && this.#options.reconnect) {
      delay = this.#options.reconnectPolicy(this.#kick?.reason ?? null, this.#attempt, this.#options.random);
    }
    this.#emit('close', { error, kick: this.#kick, reconnectIn: delay });
    // A close listener may have closed the client for good, or connected it again.
    if (delay === null || this.#userClosed || this.#state !== 'closed') return;
    this.#attempt += 1;
    this.#emit('reconnecting', { attempt: this.#attempt, delay, kick: this.#kick });
    this.#reconnectTimer = this.#timers.setTimeout(() => {
      this.#reconnectTimer = null;
      if (!this.#userClosed) this.#open(true);
    }, delay);
  }
}
