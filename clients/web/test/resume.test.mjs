// Session resume in gatehouse.js: SessionNumbering's counting (where the line is
// drawn, acks, what is sent again), and the Client against a fake WebSocket and a
// fake clock: a lost connection of an offered session is resumed on a new socket
// with the resume first, waiting requests answered there, what was sent meanwhile
// sent once it is back; a refused resume fails what waits and logs in again
// through the reconnect hook; a session not back within its window ends.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Client, Kicked, SessionNumbering } from '../gatehouse.js';
import { FakeClock, fakeWebSocket, settle } from '../testing/fakes.mjs';

const URL = 'ws://game.test/ws';
const bytes = (text) => new TextEncoder().encode(text);
const text = (data) => new TextDecoder().decode(data);
const TOKEN = new Uint8Array(32).fill(7);

test('the response after the session draws the line; frames after it are numbered and kept', () => {
  const n = new SessionNumbering();
  n.sent({ kind: 'request', id: 1 }, bytes('login'));
  n.sent({ kind: 'request', id: 2 }, bytes('behind it'));
  n.sent({ kind: 'notify' }, bytes('a notify'));
  n.offer({ id: 9n, windowMs: 30_000, token: TOKEN });
  n.response(1, 0, () => true);
  assert.deepEqual(n.resumeFrame(), { kind: 'resume', id: 9n, received: 1n, token: TOKEN });
  assert.throws(() => n.ack(3n), /ack_beyond_sent/);
  n.ack(1n);
  assert.deepEqual(n.resumed(1n).map(text), ['a notify']);
  assert.throws(() => n.resumed(0n), /bad_resume/, 'frame 1 was acknowledged and let go');
});

test('the server is acknowledged after 32 frames or a second after the oldest', () => {
  const n = new SessionNumbering();
  n.sent({ kind: 'request', id: 1 }, bytes('login'));
  n.offer({ id: 9n, windowMs: 30_000, token: TOKEN });
  n.response(1, 100, () => true);
  assert.equal(n.ackDue, 1100);
  assert.equal(n.takeAck(1099), null);
  assert.deepEqual(n.takeAck(1100), { kind: 'ack', count: 1n });
  for (let i = 0; i < 32; i += 1) n.push(2000);
  assert.equal(n.ackDue, 2000);
  assert.deepEqual(n.takeAck(2000), { kind: 'ack', count: 33n });
  assert.equal(n.takeAck(5000), null);
});

/** A client logged in on a fake socket with a session offered. */
async function inSession(options = {}) {
  const { FakeWebSocket, sockets } = fakeWebSocket();
  const clock = new FakeClock();
  const client = new Client({ WebSocket: FakeWebSocket, timers: clock.timers, random: () => 0, ...options });
  const events = [];
  for (const type of ['close', 'resuming', 'resumed', 'reconnected']) {
    client.addEventListener(type, (event) => events.push(type));
  }
  const opening = client.connect(URL);
  sockets[0].accept();
  await opening;
  const login = client.request(1, 'ada');
  const { id } = sockets[0].takeFrames()[0];
  sockets[0].deliver({ kind: 'session', id: 9n, windowMs: 5_000, token: TOKEN });
  sockets[0].deliver({ kind: 'response', id, status: 0, payload: bytes('welcome') });
  await login;
  return { client, clock, sockets, events, get socket() { return sockets.at(-1); } };
}

test('a lost connection is resumed: waiting requests are answered, later ones sent once back', async () => {
  const t = await inSession();
  const waiting = t.client.request(2, 'before the cut');
  const first = t.socket.takeFrames()[0];
  t.socket.end(1006); // lost, no kick
  assert.equal(t.client.state, 'resuming');
  const meanwhile = t.client.request(2, 'while away'); // kept, not failed
  t.clock.advance(1000);
  await settle();
  assert.equal(t.sockets.length, 2, 'a new connection');
  t.socket.accept();
  const [resume] = t.socket.takeFrames();
  assert.deepEqual(resume, { kind: 'resume', id: 9n, received: 1n, token: TOKEN });
  // The server had the first request (and answers it in the replay), not the second.
  t.socket.deliver({ kind: 'resumed', received: 1n });
  const again = t.socket.takeFrames();
  assert.deepEqual(again.map((f) => text(f.payload)), ['while away']);
  t.socket.deliver({ kind: 'response', id: first.id, status: 0, payload: bytes('one') });
  t.socket.deliver({ kind: 'response', id: again[0].id, status: 0, payload: bytes('two') });
  assert.equal(text(await waiting), 'one');
  assert.equal(text(await meanwhile), 'two');
  assert.equal(t.client.state, 'open');
  assert.equal(t.client.resumes, 1);
  assert.deepEqual(t.events, ['resuming', 'resumed'], 'no close, no reconnect hook');
});

test('a refused resume fails what waits, and the client reconnects to log in again', async () => {
  let loggedInAgain = 0;
  const t = await inSession({ onReconnect: async () => { loggedInAgain += 1; } });
  const waiting = t.client.request(2, 'x');
  t.socket.end(1006);
  t.clock.advance(1000);
  await settle();
  t.socket.accept();
  t.socket.takeFrames();
  t.socket.deliver({ kind: 'kick', reason: 15, text: 'gap: frames this client lacks were not kept' });
  await assert.rejects(waiting, (e) => e instanceof Kicked && e.kick.reason === 15);
  t.clock.advance(1000); // resume_failed reconnects at once (jitter 0)
  await settle();
  t.socket.accept();
  await settle();
  assert.equal(loggedInAgain, 1);
  assert.equal(t.socket.takeFrames().length, 0, 'a plain connection: no resume first');
});

test('a session not back within its window ends like any lost connection', async () => {
  const t = await inSession();
  const failed = assert.rejects(t.client.request(2, 'x'), /connection lost/);
  t.socket.end(1006);
  for (let i = 0; i < 20 && t.client.state === 'resuming'; i += 1) {
    t.clock.advance(1000);
    await settle();
    t.socket.end(1006); // every attempt fails
    await settle();
  }
  await failed;
  assert.ok(t.events.includes('close'));
  assert.equal(t.client.resumes, 0);
});

test('a kick is not a loss: no resume', async () => {
  const t = await inSession();
  t.socket.deliver({ kind: 'kick', reason: 6, text: 'logged in elsewhere' });
  assert.equal(t.client.state, 'closed');
  assert.equal(t.sockets.length, 1);
});
