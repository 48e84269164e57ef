// The test vectors of docs/PROTOCOL.md against gatehouse.js's codec. Both fenced
// blocks (```vectors and ```invalid-vectors) are read from the document itself, so
// this client is checked against the same text as the Rust implementation.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import {
  decodeBody, describe, encodeBody, fromHex, kickReasonName, KICK_REASONS, MalformedFrame,
  MAX_FRAME_BYTES, toHex,
} from '../gatehouse.js';

const PROTOCOL_MD = new URL('../../../docs/PROTOCOL.md', import.meta.url);
// At the time of writing the document has 40 valid and 18 invalid vectors; fewer
// means the blocks were not found or not parsed.
const MIN_VALID = 40;
const MIN_INVALID = 18;
const MALFORMED_ERRORS = new Set(['unknown_kind', 'truncated', 'nonce_too_long', 'kick_text_not_utf8',
  'trailing_bytes']);

/** The rows of the fenced block opened with ```<info>, without comments and blanks. */
function readBlock(text, info) {
  const match = new RegExp('^```' + info + '[ \\t]*\\n([\\s\\S]*?)^```', 'm').exec(text);
  assert.ok(match, `no \`\`\`${info} block in PROTOCOL.md`);
  return match[1].split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => {
      const first = line.indexOf('|');
      const second = line.indexOf('|', first + 1);
      assert.ok(first > 0 && second > first, `bad vector line: ${line}`);
      return [line.slice(0, first), line.slice(first + 1, second), line.slice(second + 1)].map((p) => p.trim());
    });
}

const text = readFileSync(PROTOCOL_MD, 'utf8');
const VALID = readBlock(text, 'vectors');
const INVALID = readBlock(text, 'invalid-vectors');

/** The frame a canonical decoded form stands for (the inverse of describe). */
function parseForm(form) {
  if (form === 'empty') return { kind: 'empty' };
  const space = form.indexOf(' ');
  const kind = form.slice(0, space);
  const rest = form.slice(space + 1);
  if (kind === 'kick') {
    const m = /^reason=(\d+) text="(.*)"$/s.exec(rest);
    assert.ok(m, `bad kick form ${form}`);
    return { kind, reason: Number(m[1]), text: m[2] };
  }
  const fields = Object.fromEntries(rest.split(' ').map((item) => {
    const eq = item.indexOf('=');
    assert.ok(eq > 0, `bad field ${item} in ${form}`);
    return [item.slice(0, eq), item.slice(eq + 1)];
  }));
  const number = (key) => Number(fields[key]);
  const u64 = (key) => BigInt(fields[key]);
  const bytes = (key) => fromHex(fields[key]);
  const frames = {
    request: () => ({ kind, id: number('id'), route: number('route'), payload: bytes('payload') }),
    notify: () => ({ kind, route: number('route'), payload: bytes('payload') }),
    response: () => ({ kind, id: number('id'), status: number('status'), payload: bytes('payload') }),
    push: () => ({ kind, route: number('route'), payload: bytes('payload') }),
    ping: () => ({ kind, nonce: bytes('nonce') }),
    pong: () => ({ kind, nonce: bytes('nonce') }),
    session: () => ({ kind, id: u64('id'), windowMs: number('window_ms'), token: bytes('token') }),
    resume: () => ({ kind, id: u64('id'), received: u64('received'), token: bytes('token') }),
    resumed: () => ({ kind, received: u64('received') }),
    ack: () => ({ kind, count: u64('count') }),
  };
  assert.ok(frames[kind], `unknown kind in ${form}`);
  const frame = frames[kind]();
  const camel = (key) => key.replace(/_(.)/g, (_, c) => c.toUpperCase()); // window_ms: windowMs
  assert.deepEqual(Object.keys(fields).map(camel).sort(), Object.keys(frame).filter((k) => k !== 'kind').sort(),
    `fields of ${form}`);
  return frame;
}

/** The body of a whole frame, after checking its 4-byte length prefix. */
function bodyOf(frameHex) {
  const frame = fromHex(frameHex);
  const length = new DataView(frame.buffer).getUint32(0);
  assert.equal(length, frame.length - 4, 'the length prefix matches the body');
  return frame.subarray(4);
}

test('PROTOCOL.md has enough vectors, with unique names', () => {
  assert.ok(VALID.length >= MIN_VALID, `${VALID.length} valid vectors`);
  assert.ok(INVALID.length >= MIN_INVALID, `${INVALID.length} invalid vectors`);
  const names = [...VALID, ...INVALID].map(([name]) => name);
  assert.equal(new Set(names).size, names.length);
});

test('valid vectors decode to their stated form', async (t) => {
  for (const [name, frameHex, form] of VALID) {
    await t.test(name, () => {
      const frame = decodeBody(bodyOf(frameHex));
      assert.equal(describe(frame), form);
      assert.deepEqual(frame, parseForm(form));
    });
  }
});

test('valid vectors encode to the same bytes (without the length prefix)', async (t) => {
  for (const [name, frameHex, form] of VALID) {
    await t.test(name, () => {
      assert.equal(toHex(encodeBody(parseForm(form))), toHex(bodyOf(frameHex)));
    });
  }
});

test('invalid bodies are rejected with the stated error', async (t) => {
  for (const [name, bodyHex, error] of INVALID) {
    await t.test(name, () => {
      assert.ok(MALFORMED_ERRORS.has(error), `known error ${error}`);
      assert.throws(() => decodeBody(fromHex(bodyHex)),
        (e) => e instanceof MalformedFrame && e.error === error);
    });
  }
});

test('decoding takes an ArrayBuffer (what a WebSocket delivers) and copies payloads', () => {
  const body = fromHex('0400016869');
  const frame = decodeBody(body.buffer);
  assert.deepEqual(frame, { kind: 'push', route: 1, payload: fromHex('6869') });
  body[3] = 0; // the socket's buffer may be reused
  assert.equal(toHex(frame.payload), '6869');
});

test('the largest body passes the encoder; its size is what Client refuses past', () => {
  const big = { kind: 'push', route: 1, payload: new Uint8Array(MAX_FRAME_BYTES - 3) };
  assert.equal(encodeBody(big).length, MAX_FRAME_BYTES);
  assert.deepEqual(decodeBody(encodeBody(big)), big);
});

test('a kick text keeps a leading byte-order mark', () => {
  const frame = decodeBody(fromHex('070005efbbbf6869'));
  assert.equal(frame.text, '\ufeffhi');
  assert.equal(toHex(encodeBody(frame)), '070005efbbbf6869');
});

test('the encoder refuses fields out of range and things that are not frames', () => {
  for (const frame of [
    { kind: 'request', id: 2 ** 32, route: 1 }, { kind: 'request', id: -1, route: 1 },
    { kind: 'request', id: 1, route: 2 ** 16 }, { kind: 'request', id: 1.5, route: 1 },
    { kind: 'notify', route: -1 }, { kind: 'response', id: 0, status: 70000 },
    { kind: 'ping', nonce: new Uint8Array(65) }, { kind: 'pong', nonce: new Uint8Array(65) },
    { kind: 'kick', reason: 2 ** 16, text: '' },
  ]) {
    assert.throws(() => encodeBody(frame), RangeError, JSON.stringify(frame));
  }
  for (const frame of [null, {}, { kind: 'hello' }, { kind: 'kick', reason: 1, text: 5 }]) {
    assert.throws(() => encodeBody(frame), TypeError);
  }
});

test('kick reason names', () => {
  assert.equal(kickReasonName(6), 'duplicate_login');
  assert.equal(kickReasonName(13), 'kicked');
  assert.equal(kickReasonName(14), 'room_closed');
  assert.equal(kickReasonName(1000), 'game_kick');
  assert.equal(kickReasonName(99), 'kicked');
  assert.equal(kickReasonName(15), 'resume_failed');
  assert.equal(Object.keys(KICK_REASONS).length, 15);
});
