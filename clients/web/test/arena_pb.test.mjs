// arena_pb.js: the hand-written proto3 codec of the arena messages, with the
// fixtures of clients/python/test_arena_pb.py (hand-worked encodings, decoding
// rules, malformed input) and random round trips.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as pb from '../arena_pb.js';
import { fromHex as h, toHex } from '../gatehouse.js';

const I32_MIN = -(2 ** 31);
const I32_MAX = 2 ** 31 - 1;
const U64_MAX = (1n << 64n) - 1n;

const body = (name, x = 0, y = 0) => pb.Body.create({ name, x, y });

test('varints round trip, and bad ones are refused', () => {
  for (const [value, encoded] of [[0n, '00'], [1n, '01'], [127n, '7f'], [128n, '8001'],
    [300n, 'ac02'], [U64_MAX, 'ffffffffffffffffff01']]) {
    assert.equal(toHex(pb.encodeVarint(value)), encoded);
    assert.deepEqual(pb.decodeVarint(h(encoded), 0), [value, encoded.length / 2]);
  }
  for (const data of ['', '80', 'ffff', 'ffffffffffffffffff02', 'ffffffffffffffffffff01']) {
    assert.throws(() => pb.decodeVarint(h(data), 0), pb.DecodeError, data);
  }
  assert.throws(() => pb.encodeVarint(-1), RangeError);
  assert.throws(() => pb.encodeVarint(1n << 64n), RangeError);
});

// Bytes worked out by hand from the protobuf encoding rules (test_arena_pb.py).
const KNOWN = [
  [pb.Move, { x: -1, y: 2 }, '0801 1004'], // zigzag: -1 -> 1, 2 -> 4
  [pb.Move, { x: 1000, y: -1000 }, '08d00f 10cf0f'],
  [pb.Move, { x: I32_MIN, y: I32_MAX }, '08ffffffff0f 10feffffff0f'],
  [pb.Move, {}, ''], // proto3: defaults omitted
  [pb.LoginRequest, { name: 'alice' }, '0a05616c696365'],
  [pb.LoginRequest, { name: 'åb' }, '0a03c3a562'], // length in bytes
  [pb.LoginRequest, { name: 'alice', password: 'password1' }, '0a05616c696365 1209 70617373776f726431'],
  [pb.LoginRequest, { password: 'pässwörd' }, '120a 70c3a4737377c3b67264'],
  [pb.Say, { text: '' }, ''],
  [pb.Whisper, { to: 'bo', text: 'hi' }, '0a02626f 12026869'],
  [pb.JoinRoom, { room: 'r1' }, '0a027231'],
  [pb.PlayerState, { name: 'a', room: 'lobby', x: 7, y: -3, moves: 300n, logins: 2n },
    '0a0161 12056c6f626279 180e 2005 28ac02 3002'],
  [pb.PlayerState, { name: 'a', password_hash: '$h' }, '0a0161 3a02 2468'], // field 7
  [pb.LoginReply, { state: pb.PlayerState.create({ name: 'a' }) }, '0a03 0a0161'],
  [pb.LoginReply, { state: pb.PlayerState.create() }, '0a00'], // present but empty
  [pb.LoginReply, {}, ''],
  [pb.RoomList, { rooms: [pb.RoomInfo.create({ name: 'lobby', players: 2 }), pb.RoomInfo.create({ name: 'x' })] },
    '0a09 0a056c6f626279 1002 0a03 0a0178'],
  [pb.WhoReply, { players: ['a', '', 'b'], online: 3, in_room: 1 }, '0a0161 0a00 0a0162 1003 1801'], // repeated: empty kept
  [pb.Chat, { from: 'bob', text: 'hi', room: '', whisper: true }, '0a03626f62 12026869 2001'],
  // Walking: a direction, a target (a nested Position), or nothing (stop).
  [pb.Position, { x: -1000, y: 1000 }, '08cf0f 10d00f'],
  [pb.Input, { dx: -1, dy: 1 }, '0801 1002'],
  [pb.Input, { dx: 1, dy: -1 }, '0802 1001'],
  [pb.Input, {}, ''], // stop: empty payload
  [pb.Input, { target: pb.Position.create({ x: -5, y: 7 }) }, '1a04 0809 100e'],
  [pb.Input, { target: pb.Position.create() }, '1a00'], // walk to (0, 0), not stop
  // The room: bodies, the whole state, and one tick's delta.
  [pb.Body, { name: 'bo', x: -3, y: 4 }, '0a02626f 1005 1808'],
  [pb.Body, { name: 'n', x: 0, y: -1 }, '0a016e 1801'],
  [pb.Body, { x: I32_MIN, y: I32_MAX }, '10ffffffff0f 18feffffff0f'],
  [pb.RoomState, { room: 'lobby', tick: 42n, players: [body('a'), body('bo', -3, 4)] },
    '0a056c6f626279 102a 1a03 0a0161 1a08 0a02626f10051808'],
  [pb.RoomState, { room: 'r', tick: 0n, players: [] }, '0a0172'], // empty repeated: no bytes
  [pb.RoomState, { room: 'r', players: [body('')] }, '0a0172 1a00'], // one empty body is kept
  // Delta.room is field 6, length-delimited: key 6 << 3 | 2 = 0x32.
  [pb.Delta, { tick: 2n, since: 1n, room: 'r' }, '0802 1001 3201 72'],
  [pb.Delta, { tick: 300n, since: 299n, moved: [body('a', -1, -1)], entered: [body('b', 1000, -1000)],
    left: ['c', 'd'], room: 'lobby' },
  '08ac02 10ab02 1a07 0a016110011801 2209 0a016210d00f18cf0f 2a0163 2a0164 3205 6c6f626279'],
  [pb.Delta, { room: 'ålesund' }, '3208 c3a56c6573756e64'],
  [pb.Delta, { room: 'x'.repeat(24) }, '3218' + '78'.repeat(24)],
  [pb.Delta, { tick: U64_MAX, left: [''] }, '08ffffffffffffffffff01 2a00'], // room omitted
];

test('known encodings: encode', () => {
  for (const [type, fields, encoded] of KNOWN) {
    assert.equal(toHex(type.encode(type.create(fields))), toHex(h(encoded)), `${type.name} ${encoded}`);
  }
});

test('known encodings: decode', () => {
  for (const [type, fields, encoded] of KNOWN) {
    assert.deepEqual(type.decode(h(encoded)), type.create(fields), `${type.name} ${encoded}`);
  }
});

test('unknown fields of every wire type are skipped', () => {
  const unknown = 'b801 ac02' // field 23, varint
    + 'c101 0102030405060708' // field 24, 64-bit
    + 'ca01 03 616263' // field 25, length-delimited
    + 'd301 0801 1a0178 d401' // field 26, a group with two fields inside
    + 'dd01 01020304' // field 27, 32-bit
    + '3800'; // field 7 (unknown in Move), varint
  assert.deepEqual(pb.Move.decode(h('0801' + unknown + '1004')), { x: -1, y: 2 });
  // Inside the nested PlayerState: field 8 (7 is password_hash), a varint.
  assert.deepEqual(pb.LoginReply.decode(h('0a05 0a0161 4001' + unknown)),
    { state: pb.PlayerState.create({ name: 'a' }) });
});

test('the last scalar wins and a nested message seen twice is merged', () => {
  assert.deepEqual(pb.Move.decode(h('0802 0804')), { x: 2, y: 0 });
  assert.deepEqual(pb.LoginReply.decode(h('0a03 0a0161 0a02 1801 0a03 0a0162')),
    { state: pb.PlayerState.create({ name: 'b', x: -1 }) });
});

test('wide varints truncate to 32 bits, and any non-zero bool is true', () => {
  assert.equal(pb.RoomInfo.decode(h('10 ffffffffffffffffff01')).players, 0xffffffff);
  assert.equal(pb.Move.decode(h('08 feffffffffffffffff01')).x, I32_MAX);
  assert.equal(pb.Chat.decode(h('2005')).whisper, true);
});

test('repeated fields may interleave; each keeps its own order', () => {
  const data = h('3201 72 2a0163 1a03 0a0161 2203 0a0162 08 05 2a0164 1a03 0a0165');
  assert.deepEqual(pb.Delta.decode(data), pb.Delta.create({
    tick: 5n, moved: [body('a'), body('e')], entered: [body('b')], left: ['c', 'd'], room: 'r',
  }));
});

test('Delta.room: the last wins, empty is "", fields around it are skipped', () => {
  assert.deepEqual(pb.Delta.decode(h('3201 61 0802 3201 62')), pb.Delta.create({ tick: 2n, room: 'b' }));
  assert.deepEqual(pb.Delta.decode(h('3200 1001')), pb.Delta.create({ since: 1n }));
  assert.deepEqual(pb.Delta.decode(h('0802 1001 3a0178 3201 72 4001')),
    pb.Delta.create({ tick: 2n, since: 1n, room: 'r' }));
  for (const bad of ['3001', '3202 72', '3201 ff']) { // varint, truncated, not UTF-8
    assert.throws(() => pb.Delta.decode(h(bad)), pb.DecodeError, bad);
  }
  assert.throws(() => pb.Delta.encode({ room: new Uint8Array([0x72]) }), TypeError);
});

test('a password hash from a server is decoded like any field', () => {
  const state = pb.PlayerState.decode(h('0a0161 3a0a 246172676f6e32696424 3002'));
  assert.deepEqual([state.name, state.password_hash, state.logins], ['a', '$argon2id$', 2n]);
});

test('malformed input is refused', () => {
  const cases = {
    'truncated key': '80',
    'truncated string': '0a05616c',
    'string not utf-8': '0a01ff',
    'wrong wire type for a string': '0801',
    'wrong wire type for a sint32': '1a0101', // PlayerState.x, length-delimited
    'field number 0': '0001',
    'truncated 64-bit': 'c10101',
    'truncated 32-bit': 'dd0101',
    'invalid wire type 6': 'be01',
    'invalid wire type 7': 'bf01',
    'stray end group': 'd401',
    'unterminated group': 'd3010801',
    'mismatched end group': 'd301dc01',
    'length past the end': 'ca0105',
    'key over 32 bits': '8080808010',
  };
  for (const [name, data] of Object.entries(cases)) {
    assert.throws(() => pb.PlayerState.decode(h(data)), pb.DecodeError, name);
  }
});

test('the encoder checks ranges and types', () => {
  for (const [type, fields] of [[pb.Move, { x: 2 ** 31 }], [pb.Move, { y: I32_MIN - 1 }],
    [pb.RoomInfo, { players: -1 }], [pb.PlayerState, { moves: 1n << 64n }], [pb.Move, { x: 1.5 }],
    [pb.Body, { x: I32_MIN - 1 }], [pb.Input, { dy: 2 ** 31 }], [pb.Delta, { tick: -1n }],
    [pb.RoomState, { tick: 1n << 64n }], [pb.PlayerState, { moves: 2 ** 60 }]]) {
    assert.throws(() => type.encode(fields), RangeError, `${type.name} ${JSON.stringify(fields, (k, v) => (typeof v === 'bigint' ? `${v}n` : v))}`);
  }
  for (const [type, fields] of [[pb.Move, { x: -1, y: 1000 }], [pb.Input, { dx: -1 }],
    [pb.Body, { name: 'a', x: -1000, y: -1 }], [pb.PlayerState, { moves: 5 }]]) {
    type.encode(fields); // in range, negative included; a small uint64 may be a number
  }
  for (const [type, fields] of [[pb.Say, { text: new Uint8Array(1) }], [pb.Chat, { whisper: 1 }],
    [pb.LoginReply, { state: 'x' }], [pb.Input, { target: [1, 2] }], [pb.RoomState, { players: ['a'] }],
    [pb.Delta, { left: [new Uint8Array(1)] }], [pb.Move, { x: '1' }], [pb.Delta, { left: 'a' }]]) {
    assert.throws(() => type.encode(fields), TypeError, `${type.name}`);
  }
});

test('the push table', () => {
  assert.deepEqual(pb.decodePush(100, h('0a0161 2001')), pb.Chat.create({ from: 'a', whisper: true }));
  assert.deepEqual(pb.decodePush(103, h('0a0172 1a00')), pb.RoomState.create({ room: 'r', players: [body('')] }));
  assert.deepEqual(pb.decodePush(104, h('0802 1001 3201 72')), pb.Delta.create({ tick: 2n, since: 1n, room: 'r' }));
  for (const route of [7, 101, 102, 0xff01]) assert.equal(pb.decodePush(route, new Uint8Array()), null);
});

/** A small deterministic generator (mulberry32): reproducible "random" round trips. */
function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo, hi) => lo + Math.floor(next() * (hi - lo + 1));
  const choice = (items) => items[Math.floor(next() * items.length)];
  const u64 = () => choice([0n, 1n, U64_MAX, (BigInt(int(0, 2 ** 32 - 1)) << 32n) | BigInt(int(0, 2 ** 32 - 1))]);
  return { int, choice, u64 };
}

test('random messages survive encode then decode', () => {
  const r = rng(20261126);
  const coordinate = () => r.choice([r.int(-1000, 1000), 0, -1, I32_MIN, I32_MAX]);
  const name = () => Array.from({ length: r.int(0, 24) }, () => r.choice([...'abcé_-9漢'])).join('');
  const aBody = () => body(name(), coordinate(), coordinate());
  const bodies = () => Array.from({ length: r.choice([0, 0, 1, 3, 20]) }, aBody);
  for (let i = 0; i < 300; i++) {
    const messages = [
      [pb.RoomState, { room: name(), tick: r.u64(), players: bodies() }],
      [pb.Delta, { tick: r.u64(), since: r.u64(), moved: bodies(), entered: bodies(),
        left: Array.from({ length: r.choice([0, 0, 1, 4]) }, name), room: name() }],
      [pb.Input, { dx: r.int(-1, 1), dy: r.int(-1, 1),
        target: r.choice([null, pb.Position.create({ x: coordinate(), y: coordinate() })]) }],
      [pb.LoginRequest, { name: name(), password: 'p'.repeat(r.int(0, 128)) }],
      [pb.PlayerState, { name: name(), room: name(), x: coordinate(), y: coordinate(),
        moves: r.u64(), logins: r.u64(), password_hash: '' }],
      [pb.Chat, { from: name(), text: name(), room: name(), whisper: r.choice([true, false]) }],
      [pb.WhoReply, { players: Array.from({ length: r.int(0, 5) }, name), online: r.int(0, 2 ** 32 - 1), in_room: r.int(0, 9) }],
    ];
    for (const [type, fields] of messages) {
      const message = type.create(fields);
      assert.deepEqual(type.decode(type.encode(message)), message);
    }
  }
});

test('negative coordinates zigzag into small varints', () => {
  for (const [value, raw] of [[0, 0], [-1, 1], [1, 2], [-2, 3], [2, 4], [-1000, 1999], [1000, 2000],
    [I32_MIN, 0xffffffff], [I32_MAX, 0xfffffffe]]) {
    const encoded = pb.Position.encode({ x: value });
    const expected = value === 0 ? '' : '08' + toHex(pb.encodeVarint(raw));
    assert.equal(toHex(encoded), expected);
    assert.equal(pb.Position.decode(encoded).x, value);
  }
  assert.ok(pb.Body.encode({ name: '', x: -1000, y: -1000 }).length <= 6);
});

test('int32 (not in arena.proto, for other games): a negative one takes 10 bytes', () => {
  const Score = pb.defineMessage('Score', [[1, 'points', 'int32'], [2, 'tags', 'string', true]]);
  for (const [points, encoded] of [[-1, '08ffffffffffffffffff01'], [1, '0801'], [I32_MIN, '0880808080f8ffffffff01'],
    [I32_MAX, '08ffffffff07'], [0, '']]) {
    assert.equal(toHex(Score.encode({ points })), encoded);
    assert.deepEqual(Score.decode(h(encoded)), { points, tags: [] });
  }
  assert.throws(() => Score.encode({ points: 2 ** 31 }), RangeError);
});

test('messages take an ArrayBuffer too', () => {
  assert.deepEqual(pb.Move.decode(h('0801 1004').buffer), { x: -1, y: 2 });
});
