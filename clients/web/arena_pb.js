/**
 * arena_pb.js: the arena messages of proto/arena.proto, with a small hand-written
 * proto3 codec (the same rules as clients/python/arena_pb.py). No dependencies.
 *
 * Each message is an object with `create(fields)` (every field, defaults filled in),
 * `encode(message) -> Uint8Array` and `decode(bytes) -> message`:
 *
 *     Move.encode({ x: -1, y: 2 })          // Uint8Array [0x08, 0x01, 0x10, 0x04]
 *     Move.decode(bytes)                    // { x: -1, y: 2 }
 *
 * Messages are plain objects. Field types in JavaScript: string -> string, bool ->
 * boolean, uint32 / sint32 / int32 -> number, uint64 -> BigInt (ticks and counters
 * may pass 2**53), repeated -> array, nested message -> object or null when absent
 * (`Input.target`: null walks in the direction dx, dy).
 *
 * Wire format covered: varints up to 10 bytes (64 bits), zigzag for sint32, negative
 * int32 as 10-byte varints, length-delimited strings and nested messages, repeated
 * fields (one record per element), and skipping unknown fields of every wire type
 * (varint, 64-bit, length-delimited, group, 32-bit). Like proto3, a field holding
 * its default is not written; a nested message is written when not null. Decoding
 * follows protobuf: the last scalar wins, repeated fields append, a nested message
 * seen twice is merged. Malformed input throws DecodeError; the encoder throws
 * RangeError for a number out of range and TypeError for a value of the wrong type.
 */

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_SGROUP = 3;
const WIRE_EGROUP = 4;
const WIRE_I32 = 5;

const U64_MAX = (1n << 64n) - 1n;
const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/** Bytes that are not a valid encoding of the message. */
export class DecodeError extends Error {
  constructor(message) {
    super(message);
    this.name = 'DecodeError';
  }
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// ------------------------------------------------------------------------ writing

/** Collects bytes; grows as needed. */
class Writer {
  #bytes = new Uint8Array(64);
  #length = 0;

  #reserve(n) {
    if (this.#length + n <= this.#bytes.length) return;
    const grown = new Uint8Array(Math.max(this.#bytes.length * 2, this.#length + n));
    grown.set(this.#bytes.subarray(0, this.#length));
    this.#bytes = grown;
  }

  byte(b) {
    this.#reserve(1);
    this.#bytes[this.#length++] = b;
  }

  bytes(data) {
    this.#reserve(data.length);
    this.#bytes.set(data, this.#length);
    this.#length += data.length;
  }

  /** An unsigned varint of a number below 2**32 (or any safe non-negative integer). */
  varint(value) {
    while (value > 0x7f) {
      this.byte((value % 128) | 0x80);
      value = Math.floor(value / 128);
    }
    this.byte(value);
  }

  /** An unsigned varint of a BigInt below 2**64. */
  varint64(value) {
    while (value > 0x7fn) {
      this.byte(Number(value & 0x7fn) | 0x80);
      value >>= 7n;
    }
    this.byte(Number(value));
  }

  key(number, wire) {
    this.varint(number * 8 + wire);
  }

  finish() {
    return this.#bytes.slice(0, this.#length);
  }
}

/** The varint encoding of an unsigned integer below 2**64 (a number or a BigInt). */
export function encodeVarint(value) {
  const writer = new Writer();
  const big = BigInt(value);
  if (big < 0n || big > U64_MAX) throw new RangeError(`varint out of range: ${value}`);
  writer.varint64(big);
  return writer.finish();
}

// ------------------------------------------------------------------------ reading

/**
 * Reads a varint at `pos`: returns [lo, hi, next position], the low and high 32
 * bits as unsigned numbers (so that 32-bit fields need no BigInt).
 */
function readVarint(bytes, pos) {
  let lo = 0;
  let hi = 0;
  for (let i = 0; i < 10; i++) {
    if (pos >= bytes.length) throw new DecodeError('truncated varint');
    const b = bytes[pos++];
    const bits = b & 0x7f;
    if (i < 4) lo |= bits << (7 * i);
    else if (i === 4) {
      lo |= (bits & 0x0f) << 28;
      hi |= bits >> 4;
    } else hi |= bits << (7 * i - 32);
    if (!(b & 0x80)) {
      if (i === 9 && b > 1) throw new DecodeError('varint over 64 bits');
      return [lo >>> 0, hi >>> 0, pos];
    }
  }
  throw new DecodeError('varint longer than 10 bytes');
}

/** Reads a varint at `pos`: returns [value as a BigInt, next position]. */
export function decodeVarint(bytes, pos = 0) {
  const [lo, hi, next] = readVarint(bytes, pos);
  return [(BigInt(hi) << 32n) | BigInt(lo), next];
}

function readLength(bytes, pos, what) {
  const [lo, hi, next] = readVarint(bytes, pos);
  if (hi !== 0 || lo > bytes.length - next) throw new DecodeError(`${what}: truncated`);
  return [lo, next];
}

/** Skips the value of an unknown field; returns the position after it. */
function skipField(bytes, pos, number, wire) {
  switch (wire) {
    case WIRE_VARINT:
      return readVarint(bytes, pos)[2];
    case WIRE_I64:
    case WIRE_I32: {
      const size = wire === WIRE_I64 ? 8 : 4;
      if (pos + size > bytes.length) throw new DecodeError('truncated fixed-size field');
      return pos + size;
    }
    case WIRE_LEN: {
      const [length, at] = readLength(bytes, pos, 'length-delimited field');
      return at + length;
    }
    case WIRE_SGROUP:
      // A (deprecated) group: fields up to the matching end-group key.
      for (;;) {
        if (pos >= bytes.length) throw new DecodeError('unterminated group');
        const [key, , at] = readVarint(bytes, pos);
        const innerNumber = key >>> 3;
        const innerWire = key & 7;
        if (innerWire === WIRE_EGROUP) {
          if (innerNumber !== number) throw new DecodeError('mismatched end of group');
          return at;
        }
        if (innerNumber === 0) throw new DecodeError('invalid field number 0');
        pos = skipField(bytes, at, innerNumber, innerWire);
      }
    case WIRE_EGROUP:
      throw new DecodeError('end of group without a start');
    default:
      throw new DecodeError(`invalid wire type ${wire}`);
  }
}

// ------------------------------------------------------------------ scalar kinds

function checkInteger(value, min, max, kind) {
  if (typeof value !== 'number') throw new TypeError(`${kind} expects a number, got ${typeof value}`);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${kind} must be an integer in ${min}..${max}, got ${value}`);
  }
  return value;
}

/** Each scalar kind: its wire type, default, writer and reader (from [lo, hi] or bytes). */
const SCALARS = {
  string: {
    wire: WIRE_LEN,
    zero: () => '',
    isDefault: (v) => v === '',
    write(w, v) {
      if (typeof v !== 'string') throw new TypeError(`string field expects a string, got ${typeof v}`);
      const data = utf8Encoder.encode(v);
      w.varint(data.length);
      w.bytes(data);
    },
    read(raw) {
      try {
        return utf8Decoder.decode(raw);
      } catch {
        throw new DecodeError('string field is not valid UTF-8');
      }
    },
  },
  bool: {
    wire: WIRE_VARINT,
    zero: () => false,
    isDefault: (v) => v === false,
    write(w, v) {
      if (typeof v !== 'boolean') throw new TypeError(`bool field expects a boolean, got ${typeof v}`);
      w.varint(v ? 1 : 0);
    },
    read: (lo, hi) => (lo | hi) !== 0,
  },
  uint32: {
    wire: WIRE_VARINT,
    zero: () => 0,
    isDefault: (v) => v === 0,
    write: (w, v) => w.varint(checkInteger(v, 0, 2 ** 32 - 1, 'uint32')),
    read: (lo) => lo, // protobuf truncates a wider varint to the field's 32 bits
  },
  int32: {
    wire: WIRE_VARINT,
    zero: () => 0,
    isDefault: (v) => v === 0,
    write(w, v) {
      checkInteger(v, INT32_MIN, INT32_MAX, 'int32');
      // A negative int32 is sign-extended to 64 bits: 10 bytes on the wire.
      if (v < 0) w.varint64(BigInt.asUintN(64, BigInt(v)));
      else w.varint(v);
    },
    read: (lo) => lo | 0,
  },
  sint32: {
    wire: WIRE_VARINT,
    zero: () => 0,
    isDefault: (v) => v === 0,
    write(w, v) {
      checkInteger(v, INT32_MIN, INT32_MAX, 'sint32');
      w.varint(((v << 1) ^ (v >> 31)) >>> 0); // zigzag: 0, -1, 1, -2 -> 0, 1, 2, 3
    },
    read: (lo) => (lo >>> 1) ^ -(lo & 1),
  },
  uint64: {
    wire: WIRE_VARINT,
    zero: () => 0n,
    isDefault: (v) => v === 0n || v === 0,
    write(w, v) {
      let big = v;
      if (typeof v === 'number') {
        if (!Number.isSafeInteger(v)) throw new RangeError(`uint64 given as a number must be a safe integer, got ${v}`);
        big = BigInt(v);
      } else if (typeof v !== 'bigint') {
        throw new TypeError(`uint64 expects a BigInt, got ${typeof v}`);
      }
      if (big < 0n || big > U64_MAX) throw new RangeError(`uint64 must be in 0..2**64-1, got ${v}`);
      w.varint64(big);
    },
    read: (lo, hi) => (BigInt(hi) << 32n) | BigInt(lo),
  },
};

// ---------------------------------------------------------------------- messages

/**
 * Defines a message from its fields: [number, name, kind, repeated?], where kind is
 * a scalar name (`string`, `bool`, `uint32`, `int32`, `sint32`, `uint64`) or a
 * function returning another message (so that order does not matter). Exported so
 * that another game can describe its own messages the same way.
 */
export function defineMessage(typeName, fieldList) {
  const fields = fieldList.map(([number, name, kind, repeated = false]) => ({ number, name, kind, repeated }));
  const byNumber = new Map(fields.map((f) => [f.number, f]));
  const nested = (f) => (typeof f.kind === 'function' ? f.kind() : null);

  const type = {
    name: typeName,
    fields,

    /** Every field, with defaults for those not given. */
    create(values = {}) {
      const out = {};
      for (const f of fields) {
        if (f.repeated) out[f.name] = [];
        else if (nested(f)) out[f.name] = null;
        else out[f.name] = SCALARS[f.kind].zero();
      }
      return Object.assign(out, values);
    },

    encode(value) {
      const writer = new Writer();
      type.write(writer, value);
      return writer.finish();
    },

    write(writer, value) {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        throw new TypeError(`${typeName} expects an object, got ${Array.isArray(value) ? 'an array' : typeof value}`);
      }
      for (const f of fields) {
        const v = value[f.name];
        if (v === undefined || v === null) continue; // absent: the default
        if (f.repeated && !Array.isArray(v)) throw new TypeError(`${typeName}.${f.name} expects an array`);
        const items = f.repeated ? v : [v];
        const sub = nested(f);
        for (const item of items) {
          if (sub) {
            const body = sub.encode(item);
            writer.key(f.number, WIRE_LEN);
            writer.varint(body.length);
            writer.bytes(body);
          } else {
            const scalar = SCALARS[f.kind];
            if (!f.repeated && scalar.isDefault(item)) continue; // proto3: defaults are not written
            writer.key(f.number, scalar.wire);
            scalar.write(writer, item);
          }
        }
      }
    },

    decode(data) {
      const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
      const out = type.create();
      type.merge(out, bytes);
      return out;
    },

    merge(out, bytes) {
      let pos = 0;
      while (pos < bytes.length) {
        const [key, keyHi, at] = readVarint(bytes, pos);
        pos = at;
        const number = key >>> 3;
        const wire = key & 7;
        if (keyHi !== 0 || number === 0) throw new DecodeError(`invalid field key at byte ${pos}`);
        const f = byNumber.get(number);
        if (!f) {
          pos = skipField(bytes, pos, number, wire);
          continue;
        }
        const sub = nested(f);
        const expected = sub ? WIRE_LEN : SCALARS[f.kind].wire;
        if (wire !== expected) {
          throw new DecodeError(`${typeName}.${f.name}: wire type ${wire}, expected ${expected}`);
        }
        let value;
        if (wire === WIRE_LEN) {
          const [length, start] = readLength(bytes, pos, `${typeName}.${f.name}`);
          const raw = bytes.subarray(start, start + length);
          pos = start + length;
          if (sub) {
            const current = f.repeated ? null : out[f.name];
            if (current) {
              sub.merge(current, raw); // a message seen twice is merged
              value = current;
            } else {
              value = sub.decode(raw);
            }
          } else {
            value = SCALARS[f.kind].read(raw);
          }
        } else {
          const [lo, hi, next] = readVarint(bytes, pos);
          pos = next;
          value = SCALARS[f.kind].read(lo, hi);
        }
        if (f.repeated) out[f.name].push(value);
        else out[f.name] = value;
      }
    },
  };
  return Object.freeze(type);
}

/** A player's saved state (`password_hash` is always empty in what a client receives). */
export const PlayerState = defineMessage('PlayerState', [
  [1, 'name', 'string'],
  [2, 'room', 'string'],
  [3, 'x', 'sint32'],
  [4, 'y', 'sint32'],
  [5, 'moves', 'uint64'],
  [6, 'logins', 'uint64'],
  [7, 'password_hash', 'string'],
]);

/** Route 1 request: log in, or create the player with this password (8..128 bytes). */
export const LoginRequest = defineMessage('LoginRequest', [
  [1, 'name', 'string'],
  [2, 'password', 'string'],
]);

/** Route 1 answer. */
export const LoginReply = defineMessage('LoginReply', [[1, 'state', () => PlayerState]]);

export const RoomInfo = defineMessage('RoomInfo', [
  [1, 'name', 'string'],
  [2, 'players', 'uint32'],
]);

/** Route 2 answer: the first 100 rooms and how many there are. */
export const RoomList = defineMessage('RoomList', [
  [1, 'rooms', () => RoomInfo, true],
  [2, 'total', 'uint32'],
]);

/** Route 3 request (answer: PlayerState). */
export const JoinRoom = defineMessage('JoinRoom', [[1, 'room', 'string']]);

/** Route 5 request (answer: empty). */
export const Say = defineMessage('Say', [[1, 'text', 'string']]);

/** Route 6 request (answer: PlayerState). */
export const Move = defineMessage('Move', [
  [1, 'x', 'sint32'],
  [2, 'y', 'sint32'],
]);

/** Route 7 request (answer: empty). */
export const Whisper = defineMessage('Whisper', [
  [1, 'to', 'string'],
  [2, 'text', 'string'],
]);

/** Route 8 answer. */
export const WhoReply = defineMessage('WhoReply', [
  [1, 'players', 'string', true],
  [2, 'online', 'uint32'],
  [3, 'in_room', 'uint32'],
]);

/** A point of the world (Input's target), -1000..1000 each. */
export const Position = defineMessage('Position', [
  [1, 'x', 'sint32'],
  [2, 'y', 'sint32'],
]);

/** Route 9 notify: walk to `target`, or in the direction dx, dy (0, 0 stops). */
export const Input = defineMessage('Input', [
  [1, 'dx', 'sint32'],
  [2, 'dy', 'sint32'],
  [3, 'target', () => Position],
]);

/** Route 11 answer. */
export const ServerStats = defineMessage('ServerStats', [
  [1, 'ticks', 'uint64'],
  [2, 'late_ticks', 'uint64'],
  [3, 'lateness_p50_us', 'uint64'],
  [4, 'lateness_p99_us', 'uint64'],
  [5, 'lateness_max_us', 'uint64'],
  [6, 'rooms', 'uint32'],
  [7, 'online', 'uint32'],
]);

/** Route 100 push: chat in the room, or a whisper (`room` empty). */
export const Chat = defineMessage('Chat', [
  [1, 'from', 'string'],
  [2, 'text', 'string'],
  [3, 'room', 'string'],
  [4, 'whisper', 'bool'],
]);

/** A player in a room, where they stand. */
export const Body = defineMessage('Body', [
  [1, 'name', 'string'],
  [2, 'x', 'sint32'],
  [3, 'y', 'sint32'],
]);

/** Route 103 push: the whole room; the next Delta has since == tick. */
export const RoomState = defineMessage('RoomState', [
  [1, 'room', 'string'],
  [2, 'tick', 'uint64'],
  [3, 'players', () => Body, true],
]);

/** Route 104 push: one tick's changes. Apply left, then entered, then moved. */
export const Delta = defineMessage('Delta', [
  [1, 'tick', 'uint64'],
  [2, 'since', 'uint64'],
  [3, 'moved', () => Body, true],
  [4, 'entered', () => Body, true],
  [5, 'left', 'string', true],
  [6, 'room', 'string'],
]);

/** Push route -> message. */
export const PUSH_MESSAGES = Object.freeze({ 100: Chat, 103: RoomState, 104: Delta });

/** Decodes an arena push by its route; null for a route arena does not define. */
export function decodePush(route, payload) {
  const type = PUSH_MESSAGES[route];
  return type ? type.decode(payload) : null;
}
