// gatehouse.js's Client against a fake WebSocket and a fake clock: request ids and
// out-of-order responses, timeouts, error statuses, pushes, pings both ways,
// heartbeats, kicks, reconnection by kick reason, failing outstanding requests,
// the message size cap, and binary-only sending.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  Client, ConnectionClosed, Kick, Kicked, MAX_FRAME_BYTES, reconnectDelay, reconnectPolicy,
  RequestError, RequestTimeout, toHex, kickFromCloseCode } from '../gatehouse.js';
import { FakeClock, fakeWebSocket, settle } from '../testing/fakes.mjs';

const URL = 'ws://game.test/ws';
const bytes = (text) => new TextEncoder().encode(text);
const text = (data) => new TextDecoder().decode(data);
/** For a promise the test does not wait for: its failure is not the point. */
const ignore = (promise) => { promise.catch(() => {}); };

/** A client on a fake socket and clock, connected; `socket` is its current socket. */
async function connected(options = {}) {
  const { FakeWebSocket, sockets } = fakeWebSocket();
  const clock = new FakeClock();
  const client = new Client({ WebSocket: FakeWebSocket, timers: clock.timers, random: () => 0, ...options });
  const events = [];
  for (const type of ['open', 'push', 'kick', 'close', 'reconnecting', 'reconnected', 'error']) {
    client.addEventListener(type, (event) => events.push([type, event.detail]));
  }
  const opening = client.connect(URL);
  assert.equal(sockets.length, 1);
  sockets[0].accept();
  await opening;
  return { client, clock, sockets, events, get socket() { return sockets.at(-1); } };
}

test('connect opens one binary socket to the URL', async () => {
  const t = await connected();
  assert.equal(t.socket.url, URL);
  assert.equal(t.socket.binaryType, 'arraybuffer');
  assert.equal(t.client.state, 'open');
  assert.deepEqual(t.events, [['open', { url: URL, reconnected: false }]]);
});

test('requests get ids; responses are matched by id, out of order', async () => {
  const t = await connected();
  const first = t.client.request(5, bytes('one'));
  const second = t.client.request(6, 'two');
  const sent = t.socket.takeFrames();
  assert.deepEqual(sent.map(({ kind, id, route }) => [kind, id, route]), [['request', 1, 5], ['request', 2, 6]]);
  assert.equal(text(sent[1].payload), 'two');
  t.socket.deliver({ kind: 'response', id: 99, status: 0, payload: bytes('nobody waits') });
  t.socket.deliver({ kind: 'response', id: 2, status: 0, payload: bytes('second') });
  t.socket.deliver({ kind: 'response', id: 1, status: 0, payload: bytes('first') });
  assert.equal(text(await second), 'second');
  assert.equal(text(await first), 'first');
  assert.equal(t.client.outstanding, 0);
  // The next id goes on from there.
  ignore(t.client.request(7));
  assert.equal(t.socket.takeFrames()[0].id, 3);
});

test('a request times out; a late response is dropped and the connection stays', async () => {
  const t = await connected();
  const slow = t.client.request(1, 'x', { timeout: 200 });
  const { id } = t.socket.takeFrames()[0];
  t.clock.advance(199);
  await settle();
  t.clock.advance(1);
  await assert.rejects(slow, RequestTimeout);
  t.socket.deliver({ kind: 'response', id, status: 0, payload: bytes('late') });
  assert.equal(t.client.state, 'open');
  const next = t.client.request(1, 'y');
  t.socket.deliver({ kind: 'response', id: t.socket.takeFrames()[0].id, status: 0, payload: bytes('ok') });
  assert.equal(text(await next), 'ok');
});

test('the default request timeout comes from the options', async () => {
  const t = await connected({ requestTimeout: 1000 });
  const request = t.client.request(1);
  t.clock.advance(1000);
  await assert.rejects(request, RequestTimeout);
});

test('a non-zero status is a RequestError with the status and the payload text', async () => {
  const t = await connected();
  const framework = t.client.request(9);
  const game = t.client.request(3);
  const [a, b] = t.socket.takeFrames();
  t.socket.deliver({ kind: 'response', id: a.id, status: 404, payload: bytes('unknown route 9') });
  t.socket.deliver({ kind: 'response', id: b.id, status: 1003, payload: bytes('bad room name') });
  await assert.rejects(framework, (e) => e instanceof RequestError && e.status === 404
    && e.text === 'unknown route 9' && /unknown_route/.test(e.message));
  await assert.rejects(game, (e) => e instanceof RequestError && e.status === 1003
    && e.text === 'bad room name' && toHex(e.payload) === toHex(bytes('bad room name')));
});

test('pushes go to the handlers of their route and to push events', async () => {
  const t = await connected();
  const got = [];
  const off = t.client.onPush(100, (payload, route) => got.push([route, text(payload)]));
  t.client.onPush(100, () => { throw new Error('a broken handler'); }); // does not stop reading
  t.client.onPush(104, (payload) => got.push([104, text(payload)]));
  const quiet = console.error;
  console.error = () => {};
  try {
    t.socket.deliver({ kind: 'push', route: 100, payload: bytes('chat') });
    t.socket.deliver({ kind: 'push', route: 104, payload: bytes('delta') });
    t.socket.deliver({ kind: 'push', route: 7, payload: bytes('nobody') });
    off();
    t.socket.deliver({ kind: 'push', route: 100, payload: bytes('after off') });
  } finally {
    console.error = quiet;
  }
  assert.deepEqual(got, [[100, 'chat'], [104, 'delta']]);
  const pushes = t.events.filter(([type]) => type === 'push').map(([, d]) => [d.route, text(d.payload)]);
  assert.deepEqual(pushes, [[100, 'chat'], [104, 'delta'], [7, 'nobody'], [100, 'after off']]);
  assert.equal(t.client.state, 'open');
});

test('a ping from the server is answered with a pong of the same nonce; empty frames are ignored', async () => {
  const t = await connected();
  t.socket.deliver({ kind: 'ping', nonce: bytes('nonce-1') });
  t.socket.deliver({ kind: 'empty' });
  t.socket.deliver({ kind: 'ping', nonce: new Uint8Array(0) });
  assert.deepEqual(t.socket.takeFrames(), [
    { kind: 'pong', nonce: bytes('nonce-1') }, { kind: 'pong', nonce: new Uint8Array(0) },
  ]);
  assert.equal(t.client.state, 'open');
});

test('ping() resolves with the round trip when its pong comes back', async () => {
  const t = await connected();
  const rtt = t.client.ping();
  const [ping] = t.socket.takeFrames();
  assert.equal(ping.kind, 'ping');
  t.clock.advance(42);
  t.socket.deliver({ kind: 'pong', nonce: ping.nonce });
  assert.equal(await rtt, 42);
  assert.equal(t.client.lastRtt, 42);
});

test('a heartbeat ping goes out after 15 s without sending, and measures the round trip', async () => {
  const t = await connected();
  t.clock.advance(14_000);
  assert.deepEqual(t.socket.takeFrames(), []);
  t.socket.deliver({ kind: 'push', route: 1, payload: new Uint8Array(0) }); // the server is not quiet
  t.client.notify(9, 'walk'); // sending resets the clock
  t.clock.advance(14_999);
  assert.deepEqual(t.socket.takeFrames().map((f) => f.kind), ['notify']);
  t.clock.advance(1000);
  const [ping, ...rest] = t.socket.takeFrames();
  assert.equal(ping.kind, 'ping');
  assert.equal(rest.length, 0);
  assert.equal(ping.nonce.length, 8);
  assert.ok(ping.nonce[0] & 0x80, 'a heartbeat nonce carries its send time, top bit set');
  const sentMicros = new DataView(ping.nonce.buffer).getBigUint64(0) & ~(1n << 63n);
  assert.equal(sentMicros, 29_000_000n, 'sent at the first heartbeat check after 15 s');
  t.clock.advance(30);
  t.socket.deliver({ kind: 'pong', nonce: ping.nonce });
  assert.equal(t.client.lastRtt, t.clock.now - 29_000);
});

test('a quiet server gets a ping even while the client keeps sending notifies', async () => {
  const t = await connected();
  for (let i = 0; i < 16; i++) {
    t.client.notify(9, 'walk');
    t.clock.advance(1000);
  }
  const kinds = t.socket.takeFrames().map((f) => f.kind);
  assert.equal(kinds.filter((k) => k === 'ping').length, 1);
});

test('no frame at all for 30 s closes the connection as dead, and it reconnects with backoff', async () => {
  const t = await connected();
  const waiting = t.client.request(1, '', { timeout: 0 });
  t.clock.advance(29_999);
  assert.equal(t.client.state, 'open');
  t.clock.advance(1);
  assert.equal(t.client.state, 'closed');
  await assert.rejects(waiting, (e) => e instanceof ConnectionClosed && !(e instanceof Kicked)
    && /no frame from the server/.test(e.message));
  assert.deepEqual(t.socket.closedWith, { code: 1000, reason: undefined });
  const close = t.events.find(([type]) => type === 'close')[1];
  assert.equal(close.kick, null);
  assert.equal(close.reconnectIn, reconnectDelay(null, 0, () => 0));
});

test('a kick is typed, fails what waits, closes the socket, and duplicate_login does not reconnect', async () => {
  const t = await connected();
  const waiting = t.client.request(1);
  t.socket.deliver({ kind: 'kick', reason: 6, text: 'logged in from another connection' });
  await assert.rejects(waiting, (e) => e instanceof Kicked && e.kick.reason === 6
    && e.kick.name === 'duplicate_login' && e.kick.text === 'logged in from another connection');
  assert.equal(t.socket.closedWith.code, 1000, 'the client closes promptly after a kick');
  t.socket.end(4006, 'logged in from another connection'); // the close frame that follows: ignored
  const kicks = t.events.filter(([type]) => type === 'kick').map(([, kick]) => kick);
  assert.equal(kicks.length, 1);
  assert.ok(kicks[0] instanceof Kick);
  assert.equal(String(kicks[0]), 'duplicate_login (6): logged in from another connection');
  assert.deepEqual(t.client.kick, kicks[0]);
  assert.equal(t.events.find(([type]) => type === 'close')[1].reconnectIn, null);
  t.clock.advance(10 * 60_000);
  assert.equal(t.sockets.length, 1, 'no reconnection');
  assert.equal(t.client.state, 'closed');
  await assert.rejects(t.client.request(1), Kicked);
  assert.throws(() => t.client.notify(1), Kicked);
});

test('a close code 4000 + reason without the envelope is taken as that kick', async () => {
  const t = await connected();
  t.socket.end(4003, 'server full');
  const [, kick] = t.events.find(([type]) => type === 'kick');
  assert.deepEqual([kick.reason, kick.name, kick.text], [3, 'server_full', 'server full']);
  assert.equal(t.events.find(([type]) => type === 'close')[1].reconnectIn, 1000);
});

test('after server_restart it reconnects at once, runs the reconnect hook, then says reconnected', async () => {
  const hooked = [];
  const t = await connected({
    random: () => 0.5,
    onReconnect: async (client) => {
      hooked.push(client.state);
      const login = client.request(1, 'alice');
      const socket = t.socket;
      socket.deliver({ kind: 'response', id: socket.takeFrames()[0].id, status: 0, payload: new Uint8Array(0) });
      await login;
    },
  });
  t.socket.deliver({ kind: 'kick', reason: 5, text: 'server restarting, reconnect' });
  t.socket.end(4005, 'server restarting, reconnect');
  const [, reconnecting] = t.events.find(([type]) => type === 'reconnecting');
  assert.deepEqual([reconnecting.attempt, reconnecting.delay, reconnecting.kick.name], [1, 150, 'server_restart']);
  t.clock.advance(149);
  assert.equal(t.sockets.length, 1);
  t.clock.advance(1);
  assert.equal(t.sockets.length, 2);
  assert.equal(t.client.state, 'connecting');
  t.socket.accept();
  await settle();
  assert.deepEqual(hooked, ['open']);
  assert.ok(t.events.some(([type, d]) => type === 'open' && d.reconnected));
  assert.ok(t.events.some(([type]) => type === 'reconnected'));
  assert.equal(t.client.state, 'open');
});

test('a failing reconnect hook is an error event; the connection stays open', async () => {
  const t = await connected({ onReconnect: async () => { throw new Error('wrong password'); } });
  t.socket.end(4005, '');
  t.clock.advance(300);
  t.socket.accept();
  await settle();
  const [, detail] = t.events.find(([type]) => type === 'error');
  assert.equal(detail.error.message, 'wrong password');
  assert.ok(!t.events.some(([type]) => type === 'reconnected'));
  assert.equal(t.client.state, 'open');
});

test('refusals at accept back off: 1 s, 2 s, 4 s ...; being served starts over', async () => {
  const t = await connected();
  const delays = [];
  for (let i = 0; i < 4; i++) {
    t.socket.deliver({ kind: 'kick', reason: 3, text: 'server full' }); // refused at accept
    const [, reconnecting] = t.events.filter(([type]) => type === 'reconnecting').at(-1);
    delays.push(reconnecting.delay);
    t.clock.advance(reconnecting.delay);
    t.socket.accept();
  }
  assert.deepEqual(delays, [1000, 2000, 4000, 8000]);
  t.socket.deliver({ kind: 'pong', nonce: new Uint8Array(0) }); // this one is served
  t.socket.deliver({ kind: 'kick', reason: 3, text: 'server full' });
  assert.equal(t.events.filter(([type]) => type === 'reconnecting').at(-1)[1].delay, 1000);
});

test('a connection lost without a kick fails outstanding requests and pings, then reconnects', async () => {
  const t = await connected();
  const request = t.client.request(1, '', { timeout: 0 });
  const ping = t.client.ping();
  t.socket.end(1006);
  for (const waiting of [request, ping]) {
    await assert.rejects(waiting, (e) => e instanceof ConnectionClosed && !(e instanceof Kicked)
      && /connection lost \(close code 1006\)/.test(e.message) && e.code === 1006 && !e.byClient);
  }
  assert.equal(t.client.outstanding, 0);
  const [, close] = t.events.find(([type]) => type === 'close');
  assert.equal(close.reconnectIn, 500);
  t.clock.advance(500);
  assert.equal(t.sockets.length, 2);
  // That attempt fails too (the server is down): the next waits longer.
  t.socket.end(1006);
  assert.equal(t.events.filter(([type]) => type === 'reconnecting').at(-1)[1].delay, 1000);
});

test('close() by the client fails outstanding requests and never reconnects', async () => {
  const t = await connected();
  const waiting = t.client.request(1);
  t.client.close();
  await assert.rejects(waiting, (e) => e instanceof ConnectionClosed && /closed by the client/.test(e.message)
    && e.byClient && e.code === null);
  assert.equal(t.events.find(([type]) => type === 'close')[1].reconnectIn, null);
  t.clock.advance(60_000);
  assert.equal(t.sockets.length, 1);
  assert.equal(t.client.state, 'closed');
});

test('close() during the wait before a reconnection cancels it', async () => {
  const t = await connected();
  t.socket.end(4004, 'shutting down');
  t.client.close();
  t.clock.advance(60_000);
  assert.equal(t.sockets.length, 1);
});

test('a first connection that never opens rejects connect() and does not retry', async () => {
  const { FakeWebSocket, sockets } = fakeWebSocket();
  const clock = new FakeClock();
  const client = new Client({ WebSocket: FakeWebSocket, timers: clock.timers });
  const opening = client.connect(URL);
  sockets[0].end(1006);
  await assert.rejects(opening, ConnectionClosed);
  clock.advance(60_000);
  assert.equal(sockets.length, 1);
  await assert.rejects(new Client({ WebSocket: undefined }).connect(URL), /no WebSocket constructor/);
  await assert.rejects(client.request(1), ConnectionClosed);
});

test('a message over 262144 bytes is refused before sending; exactly that many passes', async () => {
  const t = await connected();
  await assert.rejects(t.client.request(1, new Uint8Array(MAX_FRAME_BYTES - 6)), RangeError);
  assert.throws(() => t.client.notify(1, new Uint8Array(MAX_FRAME_BYTES - 2)), RangeError);
  assert.deepEqual(t.socket.sent, []);
  ignore(t.client.request(1, new Uint8Array(MAX_FRAME_BYTES - 7)));
  t.client.notify(1, new Uint8Array(MAX_FRAME_BYTES - 3));
  assert.deepEqual(t.socket.sent.map((m) => m.byteLength), [MAX_FRAME_BYTES, MAX_FRAME_BYTES]);
  assert.equal(t.client.state, 'open');
  await assert.rejects(t.client.request(70000), RangeError);
});

test('everything the client sends is a binary message, never text', async () => {
  const t = await connected();
  ignore(t.client.request(1, 'a string payload goes as UTF-8 bytes'));
  t.client.notify(2, 'x');
  t.client.sendEmpty();
  ignore(t.client.ping());
  t.socket.deliver({ kind: 'ping', nonce: bytes('n') });
  t.clock.advance(15_000); // a heartbeat
  assert.ok(t.socket.sent.length >= 6);
  for (const message of t.socket.sent) {
    assert.equal(typeof message, 'object');
    assert.ok(message instanceof Uint8Array, `sent ${Object.prototype.toString.call(message)}`);
  }
  assert.deepEqual(t.socket.frames().map((f) => f.kind), ['request', 'notify', 'empty', 'ping', 'pong', 'ping']);
});

test('a text message, a malformed body or a client-only kind from the server closes the connection', async () => {
  for (const [deliver, pattern] of [
    [(s) => s.deliverText('hello'), /text message/],
    [(s) => s.deliver(new Uint8Array([0xff])), /unknown_kind/],
    [(s) => s.deliver(new Uint8Array([0x03, 0, 0])), /truncated/],
    [(s) => s.deliver({ kind: 'request', id: 1, route: 1 }), /unexpected request/],
  ]) {
    const t = await connected();
    const waiting = t.client.request(1);
    deliver(t.socket);
    await assert.rejects(waiting, (e) => e instanceof ConnectionClosed && !(e instanceof Kicked) && pattern.test(e.message));
    assert.equal(t.socket.closedWith.code, 1000);
  }
});

test('reconnect delays by kick reason (the pure policy), with jitter bounds', () => {
  const low = () => 0;
  const high = () => 0.999999;
  const within = (reason, attempt, lo, hi) => {
    const a = reconnectDelay(reason, attempt, low);
    const b = reconnectDelay(reason, attempt, high);
    assert.ok(a >= lo && b < hi && a <= b, `${reason}@${attempt}: ${a}..${b} not in [${lo}, ${hi})`);
  };
  // server_restart, room_closed and resume_failed: at once, a few hundred ms of jitter, every time.
  for (const reason of [5, 14, 15]) {
    for (const attempt of [0, 1, 5]) within(reason, attempt, 0, 300);
  }
  // shutdown, slow_consumer, idle, internal_error, login_timeout, and no kick: short, doubling.
  for (const reason of [4, 8, 1, 12, 10, null]) {
    within(reason, 0, 500, 1000);
    within(reason, 1, 1000, 2000);
    within(reason, 3, 4000, 8000);
    within(reason, 50, 10_000, 20_000);
  }
  // server_full, too_many_from_ip, dos: 1 s doubling to 30-60 s.
  for (const reason of [3, 11, 2]) {
    within(reason, 0, 1000, 2000);
    within(reason, 1, 2000, 4000);
    within(reason, 4, 16_000, 32_000);
    within(reason, 5, 30_000, 60_000);
    within(reason, 1000, 30_000, 60_000);
  }
  // Not automatically: duplicate_login, kicked, protocol_error, frame_too_large,
  // unknown framework codes (like kicked) and the games' own codes.
  for (const reason of [6, 13, 7, 9, 0, 16, 99, 999, 1000, 65535]) {
    assert.equal(reconnectDelay(reason, 0, low), null, `reason ${reason}`);
    assert.equal(reconnectPolicy(reason), 'never');
  }
  assert.equal(reconnectPolicy(5), 'now');
  assert.equal(reconnectPolicy(3), 'long');
  assert.equal(reconnectPolicy(undefined), 'short');
  // Math.random by default.
  const delay = reconnectDelay(5);
  assert.ok(delay >= 0 && delay < 300);
});

test('a custom reconnect policy is used, and reconnect: false turns reconnection off', async () => {
  const seen = [];
  const t = await connected({ reconnectPolicy: (reason, attempt) => { seen.push([reason, attempt]); return 7; } });
  t.socket.end(4006, '');
  assert.deepEqual(seen, [[6, 0]]);
  t.clock.advance(7);
  assert.equal(t.sockets.length, 2);

  const off = await connected({ reconnect: false });
  off.socket.end(4005, '');
  off.clock.advance(60_000);
  assert.equal(off.sockets.length, 1);
});

test('a close listener that connects again wins over the automatic reconnection', async () => {
  const t = await connected();
  t.client.addEventListener('close', () => { t.client.connect('ws://elsewhere.test/ws').catch(() => {}); }, { once: true });
  t.socket.end(4005, '');
  assert.equal(t.sockets.length, 2);
  assert.equal(t.socket.url, 'ws://elsewhere.test/ws');
  assert.ok(!t.events.some(([type]) => type === 'reconnecting'));
  t.clock.advance(60_000);
  assert.equal(t.sockets.length, 2);
});

test('close codes map to kicks as PROTOCOL.md says: 4000 + reason, 4999 a game kick', () => {
  assert.equal(kickFromCloseCode(4005), 5);
  assert.equal(kickFromCloseCode(4998), 998);
  assert.equal(kickFromCloseCode(4999), 13);
  assert.equal(kickFromCloseCode(1000), null);
  assert.equal(kickFromCloseCode(1006), null);
});
