// arena.js without a browser: RoomView's rules (those of
// clients/python/test_arena_view.py), the chat box's commands, the page's default
// WebSocket URL, what the page says in words (lost connections, kicks, who entered
// or left, /who and /rooms), the players' colours, and ArenaClient against a fake WebSocket (what login, walking and
// resync send, how pushes reach the view, logging in again after a reconnection).

import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as pb from '../arena_pb.js';
import {
  ArenaClient, ColourBook, defaultSocketUrl, describeClose, describeError, PALETTE, parseCommand,
  presenceChanges, PushRoute, RoomView, roomsText, Route, Status, whoText,
} from '../arena.js';
import { Client, ConnectionClosed, decodeBody, Kick, RequestError } from '../gatehouse.js';
import { FakeClock, fakeWebSocket, settle } from '../testing/fakes.mjs';

const body = ([name, x, y]) => pb.Body.create({ name, x, y });
const state = (room, tick, ...bodies) => pb.RoomState.create({ room, tick: BigInt(tick), players: bodies.map(body) });
const delta = (room, tick, since, { moved = [], entered = [], left = [] } = {}) => pb.Delta.create({
  room, tick: BigInt(tick), since: BigInt(since), moved: moved.map(body), entered: entered.map(body), left,
});
const positions = (view) => Object.fromEntries([...view.players].map(([name, { x, y }]) => [name, [x, y]]));

test('RoomView: a state, then deltas in sequence', () => {
  const view = new RoomView();
  assert.deepEqual([view.room, view.synced, view.players.size], ['', false, 0]);
  view.applyState(state('lobby', 7, ['me', 0, 0], ['bo', -3, 4]));
  assert.deepEqual([view.room, view.tick, view.synced], ['lobby', 7n, true]);
  assert.deepEqual(positions(view), { me: [0, 0], bo: [-3, 4] });
  assert.equal(view.applyDelta(delta('lobby', 8, 7, { entered: [['me', 0, 0], ['cy', 5, 5]] })), true);
  assert.equal(view.applyDelta(delta('lobby', 10, 8, { moved: [['bo', -23, 4]], left: ['cy'] })), true);
  assert.deepEqual(positions(view), { me: [0, 0], bo: [-23, 4] });
  assert.deepEqual([view.tick, view.deltas, view.missed, view.synced, view.states], [10n, 2, 0, true, 1]);
  assert.deepEqual(view.position('bo'), { x: -23, y: 4 });
  assert.equal(view.position('cy'), null);
});

test('RoomView: left, then entered, then moved', () => {
  const view = new RoomView();
  view.applyState(state('r', 1, ['a', 1, 1]));
  view.applyDelta(delta('r', 2, 1, { left: ['a'], entered: [['a', 5, 5]], moved: [['a', 6, 6]] }));
  assert.deepEqual(positions(view), { a: [6, 6] });
  view.applyDelta(delta('r', 3, 2, { left: ['a', 'b'], entered: [['b', 0, 0]] }));
  assert.deepEqual(positions(view), { b: [0, 0] });
});

test('RoomView: a missed delta is counted and still applied, until a RoomState', () => {
  const view = new RoomView();
  view.applyState(state('r', 4, ['a', 0, 0]));
  assert.equal(view.applyDelta(delta('r', 9, 6, { moved: [['a', 40, 0]] })), false);
  assert.deepEqual([view.missed, view.synced, view.tick], [1, false, 9n]);
  assert.deepEqual(view.position('a'), { x: 40, y: 0 });
  assert.equal(view.applyDelta(delta('r', 10, 9)), true);
  assert.deepEqual([view.missed, view.synced], [1, false]);
  view.applyState(state('r', 12, ['a', 60, 0]));
  assert.deepEqual([view.missed, view.synced, view.states], [1, true, 2]);
});

test('RoomView: a restart, then a state from tick 0', () => {
  const view = new RoomView();
  view.applyState(state('r', 50, ['a', 1, 2], ['b', 3, 4]));
  view.restarted('other');
  assert.deepEqual([view.restarts, view.synced], [0, true]);
  view.restarted('r');
  assert.deepEqual([view.restarts, view.synced], [1, false]);
  view.applyState(state('r', 0, ['a', 1, 2], ['b', 3, 4]));
  assert.equal(view.applyDelta(delta('r', 1, 0, { entered: [['a', 1, 2], ['b', 3, 4]] })), true);
  assert.deepEqual([view.missed, view.synced, view.tick], [0, true, 1n]);
});

test('RoomView: a delta of another room is ignored whole', () => {
  const view = new RoomView();
  assert.equal(view.applyDelta(delta('lobby', 5, 4, { entered: [['a', 1, 1]] })), true);
  assert.deepEqual([view.room, view.deltas, view.players.size], ['', 0, 0]);
  view.applyState(state('lobby', 5, ['me', 0, 0], ['a', 1, 1]));
  view.applyDelta(delta('lobby', 6, 5, { moved: [['a', 2, 2]] }));
  view.applyState(state('garden', 40, ['me', 0, 0], ['g', 9, 9]));
  assert.equal(view.applyDelta(delta('lobby', 7, 6, { moved: [['g', -1, -1]], left: ['me'] })), true);
  assert.deepEqual([view.room, view.tick, view.missed, view.synced, view.deltas], ['garden', 40n, 0, true, 1]);
  assert.equal(view.applyDelta(delta('garden', 41, 40, { moved: [['g', 8, 9]] })), true);
  assert.deepEqual(positions(view), { me: [0, 0], g: [8, 9] });
  assert.equal(view.applyDelta(delta('Garden', 99, 1, { left: ['g'] })), true);
  assert.deepEqual(view.position('g'), { x: 8, y: 9 });
});

test('parseCommand: chat, whispers and commands', () => {
  assert.deepEqual(parseCommand('  hello there '), { command: 'say', text: 'hello there' });
  assert.deepEqual(parseCommand('/w bob psst, over  here'), { command: 'whisper', to: 'bob', text: 'psst, over  here' });
  assert.deepEqual(parseCommand('/whisper bob hi'), { command: 'whisper', to: 'bob', text: 'hi' });
  assert.equal(parseCommand('/w bob').command, 'usage');
  assert.deepEqual(parseCommand('/join garden'), { command: 'join', room: 'garden' });
  assert.equal(parseCommand('/join').command, 'usage');
  for (const word of ['leave', 'who', 'rooms', 'help']) assert.deepEqual(parseCommand(`/${word}`), { command: word });
  assert.equal(parseCommand('/dance').command, 'usage');
});

test('the page connects to /ws on the server that served it', () => {
  assert.equal(defaultSocketUrl({ protocol: 'http:', host: '127.0.0.1:7080' }), 'ws://127.0.0.1:7080/ws');
  assert.equal(defaultSocketUrl({ protocol: 'https:', host: 'game.example' }), 'wss://game.example/ws');
  assert.equal(defaultSocketUrl({ protocol: 'file:', host: '' }), 'ws://127.0.0.1:7080/ws');
});

test('describeError names arena statuses', () => {
  const error = new RequestError(Status.WRONG_PASSWORD, new TextEncoder().encode('wrong password'));
  assert.equal(describeError(error), 'wrong_password (1007): wrong password');
  assert.equal(describeError(new RequestError(404, new Uint8Array())), 'unknown_route (404): ');
});

const lost = (code) => new ConnectionClosed(`connection lost (close code ${code})`, { code });
/** describeClose's words for a close event of `error` (or a kick) and a reconnection delay. */
const closeWords = (error, reconnectIn, options) => describeClose({ error, kick: null, reconnectIn }, options);
const kickWords = (reason, text, reconnectIn) => describeClose({ error: new Error('kicked'), kick: new Kick(reason, text), reconnectIn });
const again = (text) => ({ text, state: 'reconnecting' });

test('describeClose: lost connections in words, with what happens next', () => {
  assert.deepEqual(closeWords(lost(1006), 2400), again('connection lost — reconnecting in 2 s…'));
  assert.deepEqual(closeWords(lost(1006), 700), again('connection lost — reconnecting…'));
  assert.deepEqual(closeWords(lost(1001), 900), again('the server is going away — reconnecting…'));
  assert.deepEqual(closeWords(lost(1012), 1000), again('the server is restarting — reconnecting in 1 s…'));
  assert.deepEqual(closeWords(lost(1011), null), { text: 'the server failed', state: 'offline' });
  assert.equal(closeWords(lost(1000), null).text, 'the server closed the connection');
  assert.equal(closeWords(lost(3333), null).text, 'the connection closed (code 3333)');
  for (const code of [1002, 1003, 1007, 1008]) {
    assert.equal(closeWords(lost(code), null).text, 'the server refused what the page sent');
  }
  assert.deepEqual(closeWords(new ConnectionClosed('no frame from the server for 30000 ms'), 800),
    again('the connection broke (no frame from the server for 30000 ms) — reconnecting…'));
  assert.deepEqual(closeWords(new ConnectionClosed('closed by the client', { byClient: true }), null),
    { text: 'disconnected', state: 'offline' });
});

test('describeClose: kicks in words; their text where it says more than the reason', () => {
  assert.deepEqual(kickWords(5, 'server restarting', 150), again('the server is restarting — reconnecting…'));
  assert.deepEqual(kickWords(4, 'server shutting down', 5000), again('the server is shutting down — reconnecting in 5 s…'));
  assert.deepEqual(kickWords(3, '', 1500), again('the server is full — reconnecting in 2 s…'));
  assert.equal(kickWords(1, 'no frame for 60s', 600).text, 'you were idle too long — reconnecting…');
  assert.equal(kickWords(14, '', 100).text, 'the room closed after crashing — reconnecting…');
  const kicked = (text) => ({ text, state: 'kicked' });
  assert.deepEqual(kickWords(6, 'elsewhere', null), kicked('you logged in somewhere else — not reconnecting here'));
  assert.deepEqual(kickWords(13, 'no spamming', null), kicked('you were kicked: no spamming — log in again to play'));
  assert.deepEqual(kickWords(99, '', null), kicked('you were kicked — log in again to play'), 'unknown: `kicked`');
  assert.deepEqual(kickWords(1200, 'game over', null), kicked('the game ended your session: game over — log in again to play'));
  for (let reason = 1; reason <= 14; reason++) {
    assert.doesNotMatch(kickWords(reason, '', null).text, /undefined|\(\d+\)/, `reason ${reason} has words`);
  }
});

test('describeClose: a socket that never opened could not reach the server', () => {
  const url = 'ws://game.example/ws';
  assert.deepEqual(closeWords(lost(1006), null, { url, reached: false }),
    { text: 'could not reach the server at ws://game.example/ws', state: 'offline' });
  assert.deepEqual(closeWords(lost(1006), 4200, { url, reached: false }),
    again('could not reach the server at ws://game.example/ws — retrying in 4 s…'));
});

test('presenceChanges: who entered and left the room, not the player, not a first look', () => {
  const look = (room, ...names) => ({ room, names });
  const none = { entered: [], left: [] };
  assert.deepEqual(presenceChanges(look('r', 'me', 'bo'), look('r', 'me', 'cy', 'al'), 'me'), { entered: ['al', 'cy'], left: ['bo'] });
  assert.deepEqual(presenceChanges(look(''), look('r', 'me', 'bo', 'cy'), 'me'), none, 'first state');
  assert.deepEqual(presenceChanges(look('lobby', 'me', 'x'), look('r', 'me', 'bo'), 'me'), none, 'another room');
  assert.deepEqual(presenceChanges(look('r', 'bo'), look('r', 'me', 'bo'), 'me'), none, 'the player itself');
  assert.deepEqual(presenceChanges(look('r', 'me', 'bo'), look(''), 'me'), none, 'the connection ended');
});

test('whoText and roomsText: the answers of /who and /rooms as chat lines', () => {
  assert.equal(whoText({ players: ['al', 'bo'], online: 2, in_room: 1 }), '2 online, 1 in this room: al, bo');
  assert.equal(whoText({ players: ['al'], online: 150, in_room: 3 }), '150 online, 3 in this room: al, and 149 more');
  const rooms = [{ name: 'lobby', players: 2 }, { name: 'r', players: 1 }];
  assert.equal(roomsText({ rooms, total: 2 }), 'rooms: lobby (2), r (1)');
  assert.equal(roomsText({ rooms: [{ name: 'lobby', players: 2 }], total: 5 }), 'rooms: lobby (2), and 4 more');
  assert.equal(roomsText({ rooms: [], total: 0 }), 'no rooms in use');
});

test('ColourBook: no two players present share a colour; a colour stays while its player does', () => {
  const book = new ColourBook();
  const names = Array.from({ length: 40 }, (_, i) => `player-${i}`);
  book.update(names);
  const colours = names.map((n) => book.colourOf(n));
  assert.equal(new Set(colours).size, names.length, 'all distinct, past the palette too');
  assert.ok(PALETTE.every((c) => colours.includes(c)), 'the palette is used first');
  assert.equal(book.colourOf('nobody'), null);

  // Two names that hash to the same palette colour get different ones.
  const small = new ColourBook();
  small.update(['ab', 'bC']); // 'a'*31+'b' = 'b'*31+'C'
  assert.notEqual(small.colourOf('ab'), small.colourOf('bC'));
  const ab = small.colourOf('ab');
  const bc = small.colourOf('bC');

  // Leaving frees a colour for the next newcomer; those who stay keep theirs.
  small.update(['bC']);
  assert.equal(small.colourOf('bC'), bc);
  assert.equal(small.colourOf('ab'), null);
  small.update(['bC', 'ab']);
  assert.equal(small.colourOf('ab'), ab, 'back to the colour its name hashes to, free again');
  for (let round = 0; round < 5; round++) {
    book.update(names.slice(round * 5));
    const present = names.slice(round * 5);
    assert.deepEqual(present.map((n) => book.colourOf(n)), colours.slice(round * 5), 'stable while present');
    book.update([...present, `new-${round}`]);
    assert.equal(new Set(present.concat(`new-${round}`).map((n) => book.colourOf(n))).size, present.length + 1);
  }
});

/** An ArenaClient on a fake socket; `server` answers and pushes like arena. */
async function arenaOnFake() {
  const { FakeWebSocket, sockets } = fakeWebSocket();
  const clock = new FakeClock();
  const arena = new ArenaClient(new Client({ WebSocket: FakeWebSocket, timers: clock.timers, random: () => 0 }));
  const opening = arena.client.connect('ws://x/ws');
  sockets[0].accept();
  await opening;
  const server = {
    get socket() { return sockets.at(-1); },
    sockets,
    clock,
    /** The next frame the client sent, decoded. */
    next() {
      const frame = this.socket.sent.shift();
      assert.ok(frame, 'the client sent something');
      return decodeBody(frame);
    },
    answer(request, type, message) {
      const payload = type ? type.encode(message) : new Uint8Array();
      this.socket.deliver({ kind: 'response', id: request.id, status: 0, payload });
    },
    push(route, type, message) {
      this.socket.deliver({ kind: 'push', route, payload: type.encode(message) });
    },
  };
  return { arena, server };
}

test('ArenaClient: login, the view from pushes, chat, and resync after a missed delta', async () => {
  const { arena, server } = await arenaOnFake();
  const events = [];
  for (const type of ['state', 'view', 'chat', 'restarted', 'resync', 'announcement']) {
    arena.addEventListener(type, (e) => events.push(type === 'announcement' ? `announcement:${e.detail}` : type));
  }

  const login = arena.login('me', 'correct horse');
  const request = server.next();
  assert.deepEqual([request.kind, request.route], ['request', Route.LOGIN]);
  assert.deepEqual(pb.LoginRequest.decode(request.payload), { name: 'me', password: 'correct horse' });
  const me = pb.PlayerState.create({ name: 'me', room: 'lobby', logins: 3n });
  server.answer(request, pb.LoginReply, { state: me });
  assert.deepEqual(await login, me);
  assert.equal(arena.name, 'me');

  server.push(PushRoute.ROOM_STATE, pb.RoomState, state('lobby', 3, ['me', 0, 0], ['bo', 1, 1]));
  server.push(PushRoute.DELTA, pb.Delta, delta('lobby', 4, 3, { entered: [['me', 0, 0]] }));
  server.push(PushRoute.DELTA, pb.Delta, delta('lobby', 5, 4, { moved: [['bo', -19, 1]] }));
  server.push(PushRoute.CHAT, pb.Chat, { from: 'bo', text: 'hi', room: 'lobby', whisper: false });
  assert.deepEqual(positions(arena.view), { me: [0, 0], bo: [-19, 1] });
  assert.equal(arena.view.tick, 5n);

  // A gap: the room is asked for again (a JOIN of the same room), once.
  server.push(PushRoute.DELTA, pb.Delta, delta('lobby', 9, 7, { moved: [['bo', 0, 0]] }));
  server.push(PushRoute.DELTA, pb.Delta, delta('lobby', 11, 10));
  const resync = server.next();
  assert.deepEqual([resync.route, pb.JoinRoom.decode(resync.payload).room], [Route.JOIN, 'lobby']);
  assert.equal(server.socket.sent.length, 0, 'one resync at a time');
  server.answer(resync, pb.PlayerState, me);
  server.push(PushRoute.ROOM_STATE, pb.RoomState, state('lobby', 12, ['me', 0, 0], ['bo', 0, 0]));
  assert.equal(arena.view.synced, true);

  server.socket.deliver({ kind: 'push', route: PushRoute.ROOM_RESTARTED, payload: new TextEncoder().encode('lobby') });
  assert.equal(arena.view.restarts, 1);
  server.socket.deliver({ kind: 'push', route: PushRoute.ANNOUNCEMENT, payload: new TextEncoder().encode('restart at noon') });
  assert.deepEqual(events.filter((e) => e !== 'view'), ['state', 'chat', 'resync', 'restarted', 'announcement:restart at noon']);
  await settle();
  assert.ok(events.filter((e) => e === 'state').length >= 2, 'the resync answer is a state too');
});

test('ArenaClient: walking sends Input notifies; bad directions and coordinates are refused', async () => {
  const { arena, server } = await arenaOnFake();
  arena.walk(1, -1);
  arena.goto(-1000, 1000);
  arena.stop();
  const inputs = server.socket.takeFrames();
  assert.ok(inputs.every((f) => f.kind === 'notify' && f.route === Route.INPUT));
  assert.deepEqual(inputs.map((f) => pb.Input.decode(f.payload)), [
    { dx: 1, dy: -1, target: null }, { dx: 0, dy: 0, target: { x: -1000, y: 1000 } }, { dx: 0, dy: 0, target: null },
  ]);
  assert.equal(inputs[2].payload.length, 0, 'stop: an empty Input');
  for (const [dx, dy] of [[2, 0], [0, -2], [true, 0]]) assert.throws(() => arena.walk(dx, dy), RangeError);
  for (const [x, y] of [[1001, 0], [0, -1001], [0.5, 0]]) assert.throws(() => arena.goto(x, y), RangeError);
});

test('ArenaClient: requests of the other routes', async () => {
  const { arena, server } = await arenaOnFake();
  const calls = [
    [() => arena.say('hello'), Route.SAY, pb.Say, { text: 'hello' }, null, undefined],
    [() => arena.whisper('bo', 'psst'), Route.WHISPER, pb.Whisper, { to: 'bo', text: 'psst' }, null, undefined],
    [() => arena.join('garden'), Route.JOIN, pb.JoinRoom, { room: 'garden' }, pb.PlayerState, { name: 'me', room: 'garden' }],
    [() => arena.leave(), Route.LEAVE, null, null, pb.PlayerState, { name: 'me', room: 'lobby' }],
    [() => arena.move(3, -4), Route.MOVE, pb.Move, { x: 3, y: -4 }, pb.PlayerState, { name: 'me', x: 3, y: -4 }],
    [() => arena.who(), Route.WHO, null, null, pb.WhoReply, { players: ['bo', 'me'], online: 2, in_room: 1 }],
    [() => arena.rooms(), Route.ROOMS, null, null, pb.RoomList, { rooms: [{ name: 'lobby', players: 2 }], total: 1 }],
  ];
  for (const [call, route, requestType, requestMessage, answerType, answer] of calls) {
    const result = call();
    const request = server.next();
    assert.equal(request.route, route);
    if (requestType) assert.deepEqual(requestType.decode(request.payload), requestType.create(requestMessage));
    else assert.equal(request.payload.length, 0);
    server.answer(request, answerType, answer && answerType.create(answer));
    const got = await result;
    if (answerType) assert.deepEqual(got, answerType.decode(answerType.encode(answerType.create(answer))));
  }
  assert.equal(arena.state.y, -4, 'the last PlayerState answered is kept');
});

test('ArenaClient: after a reconnection it logs in again as the same player; a refused login is not retried', async () => {
  const { arena, server } = await arenaOnFake();
  const login = arena.login('me', 'correct horse');
  server.answer(server.next(), pb.LoginReply, { state: pb.PlayerState.create({ name: 'me', room: 'garden' }) });
  await login;
  server.push(PushRoute.ROOM_STATE, pb.RoomState, state('garden', 1, ['me', 0, 0]));

  server.socket.end(4005, 'server restarting');
  assert.equal(arena.view.players.size, 0, 'the view is cleared with the connection');
  server.clock.advance(300);
  assert.equal(server.sockets.length, 2);
  server.socket.accept();
  const again = server.next();
  assert.deepEqual([again.route, pb.LoginRequest.decode(again.payload).name], [Route.LOGIN, 'me']);
  assert.equal(pb.LoginRequest.decode(again.payload).password, 'correct horse');
  server.answer(again, pb.LoginReply, { state: pb.PlayerState.create({ name: 'me', room: 'garden', logins: 2n }) });
  await settle();
  assert.equal(arena.state.logins, 2n);

  // A refused login forgets the credentials: the next reconnection does not log in.
  const { arena: other, server: otherServer } = await arenaOnFake();
  const refused = other.login('me', 'wrong password');
  const request = otherServer.next();
  otherServer.socket.deliver({ kind: 'response', id: request.id, status: Status.WRONG_PASSWORD, payload: new Uint8Array() });
  await assert.rejects(refused, (e) => e instanceof RequestError && e.status === Status.WRONG_PASSWORD);
  otherServer.socket.end(1006);
  otherServer.clock.advance(500);
  otherServer.socket.accept();
  await settle();
  assert.equal(otherServer.socket.sent.length, 0);
});
