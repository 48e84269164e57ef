/**
 * arena.js: the arena game client and the arena page.
 *
 * What it owns:
 *  - arena's routes, statuses and limits (proto/arena.proto, crates/arena/src/lib.rs);
 *  - `RoomView`: the player's room as the RoomState and Delta pushes describe it
 *    (the rules of clients/python/arena_client.py's RoomView);
 *  - `ArenaClient`: login, rooms, join, leave, say, whisper, who, move, walking, on a
 *    gatehouse `Client`; it keeps the view, asks for the whole room again when a
 *    Delta was missed, and logs in again after an automatic reconnection;
 *  - `parseCommand`: what a line typed in the chat box means (`/w name text`, ...);
 *  - what the page says in words: `describeClose` (a lost connection or a kick),
 *    `presenceChanges` (who entered or left the room), `whoText`, `roomsText`, and
 *    `ColourBook` (a colour per player, no two alike);
 *  - the page (index.html): login, the room on a canvas (click to walk there,
 *    arrow keys or WASD to walk), chat, rooms, who is online, kicks and reconnects,
 *    log out.
 *    It starts only where there is a `document`, so Node can import the rest.
 */

import {
  Client, ConnectionClosed, GatehouseError, Kicked, RequestError, ROUTE_ANNOUNCEMENT,
  ROUTE_ROOM_RESTARTED, kickReasonName, statusName,
} from './gatehouse.js';
import * as pb from './arena_pb.js';

/** Request routes (and INPUT, a notify). */
export const Route = Object.freeze({
  LOGIN: 1, ROOMS: 2, JOIN: 3, LEAVE: 4, SAY: 5, MOVE: 6, WHISPER: 7, WHO: 8, INPUT: 9,
  CRASH_ROOM: 10, STATS: 11,
});

/** Push routes (ROOM_RESTARTED and ANNOUNCEMENT are the framework's). */
export const PushRoute = Object.freeze({
  CHAT: 100, ROOM_STATE: 103, DELTA: 104, ROOM_RESTARTED: ROUTE_ROOM_RESTARTED,
  ANNOUNCEMENT: ROUTE_ANNOUNCEMENT,
});

/** arena's own response statuses. */
export const Status = Object.freeze({
  NOT_LOGGED_IN: 1001, ALREADY_LOGGED_IN: 1002, BAD_NAME: 1003, NO_SUCH_PLAYER: 1004,
  OUT_OF_RANGE: 1005, LOGIN_BUSY: 1006, WRONG_PASSWORD: 1007, TOO_MANY_ATTEMPTS: 1008,
  BAD_PASSWORD: 1009, ROOM_FULL: 1010, TOO_MANY_ACCOUNTS: 1011,
});
const STATUS_NAMES = Object.freeze(Object.fromEntries(
  Object.entries(Status).map(([name, code]) => [code, name.toLowerCase()])));

export const LOBBY = 'lobby';
export const WORLD_EDGE = 1000; // |x| and |y| at most this
export const MAX_TEXT = 256; // bytes of a chat or whisper text
export const MAX_NAME = 24; // characters of a player or room name
export const MIN_PASSWORD = 8; // bytes
export const MAX_PASSWORD = 128;

/** How many times a login after a reconnection is retried while the old one lets go. */
const LOGIN_BUSY_RETRIES = 5;
const LOGIN_BUSY_WAIT_MS = 1000;

/** arena's name of a status (`wrong_password`), else the framework's. */
export function arenaStatusName(status) {
  return STATUS_NAMES[status] ?? statusName(status);
}

/** An error as a person reads it. */
export function describeError(error) {
  if (error instanceof RequestError) return `${arenaStatusName(error.status)} (${error.status}): ${error.text}`;
  if (error instanceof Kicked) return `kicked: ${error.kick}`;
  return error?.message ?? String(error);
}

// --------------------------------------------------------------------- room view

/**
 * The player's room as the pushes describe it. A RoomState replaces it; a Delta is
 * applied left, then entered, then moved. A Delta of another room (one just left)
 * is ignored. A Delta whose `since` is not the tick of the previous one means at
 * least one was missed: it is still applied (positions are absolute), `missed` is
 * counted and `synced` stays false until the next RoomState.
 */
export class RoomView {
  room = ''; // '' before the first RoomState
  tick = 0n;
  /** name -> {x, y}, the player itself included. */
  players = new Map();
  synced = false;
  missed = 0;
  deltas = 0;
  restarts = 0;
  states = 0;

  applyState(state) {
    this.room = state.room;
    this.tick = state.tick;
    this.players = new Map(state.players.map((b) => [b.name, { x: b.x, y: b.y }]));
    this.synced = true;
    this.states += 1;
  }

  /** Returns false when the Delta shows that one was missed before it. */
  applyDelta(delta) {
    if (delta.room !== this.room) return true;
    const inSequence = delta.since === this.tick;
    if (!inSequence) {
      this.missed += 1;
      this.synced = false;
    }
    for (const name of delta.left) this.players.delete(name);
    for (const b of delta.entered) this.players.set(b.name, { x: b.x, y: b.y });
    for (const b of delta.moved) this.players.set(b.name, { x: b.x, y: b.y });
    this.tick = delta.tick;
    this.deltas += 1;
    return inSequence;
  }

  /** The room-restarted push: stale until the RoomState that follows. */
  restarted(room) {
    if (room !== this.room) return;
    this.restarts += 1;
    this.synced = false;
  }

  position(name) {
    return this.players.get(name) ?? null;
  }
}

// ------------------------------------------------------------------------ client

function checkDirection(d) {
  if (d !== -1 && d !== 0 && d !== 1) throw new RangeError(`a direction is -1, 0 or 1, got ${d}`);
}

function checkCoordinate(v) {
  if (!Number.isInteger(v) || Math.abs(v) > WORLD_EDGE) {
    throw new RangeError(`a coordinate is in -${WORLD_EDGE}..${WORLD_EDGE}, got ${v}`);
  }
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/**
 * One arena player on a gatehouse `Client` (which it takes over: it sets the
 * client's `onReconnect` to log in again with the last good name and password).
 *
 * Events (`event.detail`): `state` (PlayerState, after login, join, leave, move),
 * `view` (the RoomView changed), `chat` (Chat), `restarted` (the room's name),
 * `announcement` (the text of the operators' announcement),
 * `resync` (the room's name: a Delta was missed, the room is asked for again).
 */
export class ArenaClient extends EventTarget {
  /** The player's state as last answered (null before login). */
  state = null;
  view = new RoomView();
  #credentials = null;
  #resyncing = false;

  constructor(client = new Client()) {
    super();
    this.client = client;
    client.onPush(PushRoute.CHAT, (payload) => this.#emit('chat', pb.Chat.decode(payload)));
    client.onPush(PushRoute.ROOM_STATE, (payload) => {
      this.view.applyState(pb.RoomState.decode(payload));
      this.#emit('view', this.view);
    });
    client.onPush(PushRoute.DELTA, (payload) => {
      if (!this.view.applyDelta(pb.Delta.decode(payload))) this.resync();
      this.#emit('view', this.view);
    });
    client.onPush(PushRoute.ROOM_RESTARTED, (payload) => {
      const room = new TextDecoder().decode(payload);
      this.view.restarted(room);
      this.#emit('restarted', room); // arena sends the RoomState without being asked
    });
    client.onPush(PushRoute.ANNOUNCEMENT, (payload) => {
      this.#emit('announcement', new TextDecoder().decode(payload));
    });
    client.addEventListener('close', () => {
      // The next connection starts from its own RoomState.
      this.view = new RoomView();
      this.#emit('view', this.view);
    });
    client.onReconnect = () => this.#logInAgain();
  }

  /** The player's name once logged in. */
  get name() {
    return this.state?.name ?? null;
  }

  /** Forgets the player (before logging in as someone else). */
  reset() {
    this.#credentials = null;
    this.state = null;
    this.view = new RoomView();
    this.#emit('view', this.view);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #setState(state) {
    this.state = state;
    this.#emit('state', state);
    return state;
  }

  /**
   * Logs in, or creates the player with `password` (8 to 128 bytes) on the first
   * login of `name`; resolves with the PlayerState. The room's RoomState follows.
   */
  async login(name, password) {
    this.#credentials = { name, password }; // kept for a reconnection, unless refused
    let payload;
    try {
      payload = await this.client.request(Route.LOGIN, pb.LoginRequest.encode({ name, password }));
    } catch (e) {
      if (e instanceof RequestError) this.#credentials = null;
      throw e;
    }
    const reply = pb.LoginReply.decode(payload);
    if (!reply.state) throw new GatehouseError('login reply without a state');
    return this.#setState(reply.state);
  }

  /** The client's reconnect hook: the same player again (arena puts it where it was). */
  async #logInAgain() {
    if (!this.#credentials) return;
    const { name, password } = this.#credentials;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.login(name, password);
      } catch (e) {
        // The old connection may not have let go yet: arena says try again.
        const busy = e instanceof RequestError && e.status === Status.LOGIN_BUSY;
        if (!busy || attempt >= LOGIN_BUSY_RETRIES) throw e;
        this.#credentials = { name, password };
        await sleep(LOGIN_BUSY_WAIT_MS);
      }
    }
  }

  /** The rooms in use: [{name, players}], sorted by name (at most 100), and the total. */
  async rooms() {
    return pb.RoomList.decode(await this.client.request(Route.ROOMS));
  }

  /** Moves to `room` (created on first join); its RoomState follows. */
  async join(room) {
    const payload = await this.client.request(Route.JOIN, pb.JoinRoom.encode({ room }));
    return this.#setState(pb.PlayerState.decode(payload));
  }

  /** Back to the lobby. */
  async leave() {
    return this.#setState(pb.PlayerState.decode(await this.client.request(Route.LEAVE)));
  }

  /**
   * Asks for the whole room again (a JOIN of the room the player is in, as the proto
   * says to after a missed Delta); one at a time.
   */
  resync() {
    const room = this.state?.room || this.view.room;
    if (this.#resyncing || !room) return;
    this.#resyncing = true;
    this.#emit('resync', room);
    this.join(room)
      .catch(() => {}) // the connection ended, or the room changed meanwhile
      .finally(() => { this.#resyncing = false; });
  }

  async say(text) {
    await this.client.request(Route.SAY, pb.Say.encode({ text }));
  }

  async whisper(to, text) {
    await this.client.request(Route.WHISPER, pb.Whisper.encode({ to, text }));
  }

  /** Who is online: {players (names, sorted, at most 100), online, in_room}. */
  async who() {
    return pb.WhoReply.decode(await this.client.request(Route.WHO));
  }

  /** Stands at (x, y) at once. */
  async move(x, y) {
    checkCoordinate(x);
    checkCoordinate(y);
    return this.#setState(pb.PlayerState.decode(
      await this.client.request(Route.MOVE, pb.Move.encode({ x, y }))));
  }

  /** Walks in the direction (dx, dy), each -1, 0 or 1, until told otherwise. */
  walk(dx, dy) {
    checkDirection(dx);
    checkDirection(dy);
    this.client.notify(Route.INPUT, pb.Input.encode({ dx, dy }));
  }

  /** Walks to (x, y) and stops there. */
  goto(x, y) {
    checkCoordinate(x);
    checkCoordinate(y);
    this.client.notify(Route.INPUT, pb.Input.encode({ target: { x, y } }));
  }

  stop() {
    this.client.notify(Route.INPUT, pb.Input.encode({}));
  }
}

// ---------------------------------------------------------------------- commands

export const HELP = 'type to chat; /w NAME TEXT whispers; /join ROOM; /leave; /who; /rooms; /help';

/**
 * What a line typed in the chat box means: {command: 'say', text},
 * {command: 'whisper', to, text}, {command: 'join', room}, {command: 'leave'},
 * {command: 'who'}, {command: 'rooms'}, {command: 'help'}, or {command: 'usage',
 * message} for a command it cannot read.
 */
export function parseCommand(line) {
  const text = line.trim();
  if (!text.startsWith('/')) return { command: 'say', text };
  const [word, ...rest] = text.split(/\s+/);
  switch (word.toLowerCase()) {
    case '/w':
    case '/whisper': {
      const match = /^\S+\s+(\S+)\s+([\s\S]+)$/.exec(text);
      if (!match) return { command: 'usage', message: 'usage: /w NAME TEXT' };
      return { command: 'whisper', to: match[1], text: match[2] };
    }
    case '/join':
      if (rest.length !== 1) return { command: 'usage', message: 'usage: /join ROOM' };
      return { command: 'join', room: rest[0] };
    case '/leave':
    case '/who':
    case '/rooms':
    case '/help':
      return { command: word.slice(1).toLowerCase() };
    default:
      return { command: 'usage', message: `unknown command ${word}; ${HELP}` };
  }
}

// ------------------------------------------------------------------------- words

/** What each kick reason means to the player (gatehouse.js's names). */
const KICK_WORDS = Object.freeze({
  idle: 'you were idle too long',
  dos: 'the page sent too much too fast',
  server_full: 'the server is full',
  shutdown: 'the server is shutting down',
  server_restart: 'the server is restarting',
  duplicate_login: 'you logged in somewhere else',
  protocol_error: 'the server could not read what the page sent (a bug)',
  slow_consumer: 'the connection could not keep up',
  frame_too_large: 'the page sent a message too large for the server (a bug)',
  login_timeout: 'you did not log in in time',
  too_many_from_ip: 'too many connections from your address',
  internal_error: 'the server failed',
  kicked: 'you were kicked',
  room_closed: 'the room closed after crashing',
  resume_failed: 'the session could not be resumed',
  game_kick: 'the game ended your session',
});
/**
 * Kicks whose text says more than their name (PROTOCOL.md: "show the text"); the
 * others' texts are mostly the server's own wording of the reason.
 */
const KICK_TEXT_MATTERS = new Set(['kicked', 'game_kick']);

/** What a WebSocket close code without a kick means (RFC 6455, 7.4.1). */
const CLOSE_WORDS = Object.freeze({
  1000: 'the server closed the connection',
  1001: 'the server is going away',
  1002: 'the server refused what the page sent',
  1003: 'the server refused what the page sent',
  1006: 'connection lost',
  1007: 'the server refused what the page sent',
  1008: 'the server refused what the page sent',
  1009: 'the page sent a message too large for the server',
  1011: 'the server failed',
  1012: 'the server is restarting',
  1013: 'the server is busy; try again later',
});

/** A delay as the status line says it: "in 2 s", or nothing under a second. */
function inSeconds(ms) {
  return ms < 1000 ? '' : ` in ${Math.round(ms / 1000)} s`;
}

/**
 * The words for the end of a connection, from the client's `close` event (`error`,
 * `kick`, `reconnectIn`): {text, state}, `state` being the status line's
 * `data-state`. `reached` is false when the socket never opened (the first connect,
 * or a reconnection attempt): then the server could not be reached at `url`.
 */
export function describeClose({ error, kick, reconnectIn }, { url = '', reached = true } = {}) {
  const again = reconnectIn !== null && reconnectIn !== undefined;
  if (!reached && !kick) {
    const what = `could not reach the server at ${url}`;
    return again ? { text: `${what} — retrying${inSeconds(reconnectIn)}…`, state: 'reconnecting' }
      : { text: what, state: 'offline' };
  }
  const kickName = kick ? kickReasonName(kick.reason) : null;
  let what;
  if (kick) {
    what = KICK_WORDS[kickName];
    if (kick.text && KICK_TEXT_MATTERS.has(kickName)) what += `: ${kick.text}`;
  } else if (error?.byClient) {
    return { text: 'disconnected', state: 'offline' };
  } else if (error?.code !== null && error?.code !== undefined) {
    what = CLOSE_WORDS[error.code] ?? `the connection closed (code ${error.code})`;
  } else {
    what = `the connection broke (${error?.message ?? error})`; // dead, or a malformed frame
  }
  if (again) return { text: `${what} — reconnecting${inSeconds(reconnectIn)}…`, state: 'reconnecting' };
  if (kickName === 'duplicate_login') return { text: `${what} — not reconnecting here`, state: 'kicked' };
  if (kick) return { text: `${what} — log in again to play`, state: 'kicked' };
  return { text: what, state: 'offline' };
}

/**
 * Who entered and who left between two looks at the room (`{room, names}`, names
 * an iterable), for the chat's notices: {entered, left}, sorted, `me` left out.
 * Nothing when the room changed or there was none before: a room's first state is
 * not news (joining a full room would flood the chat).
 */
export function presenceChanges(before, after, me) {
  if (!before.room || before.room !== after.room) return { entered: [], left: [] };
  const was = new Set(before.names);
  const is = new Set(after.names);
  const only = (a, b) => [...a].filter((n) => !b.has(n) && n !== me).sort();
  return { entered: only(is, was), left: only(was, is) };
}

/** A WhoReply as one line of the chat. */
export function whoText({ players, online, in_room: inRoom }) {
  const more = online > players.length ? `, and ${online - players.length} more` : '';
  return `${online} online, ${inRoom} in this room: ${players.join(', ')}${more}`;
}

/** A RoomList as one line of the chat. */
export function roomsText({ rooms, total }) {
  if (!rooms.length) return 'no rooms in use';
  const more = total > rooms.length ? `, and ${total - rooms.length} more` : '';
  return `rooms: ${rooms.map((r) => `${r.name} (${r.players})`).join(', ')}${more}`;
}

/**
 * Well-separated colours for the other players on the dark room; none near the
 * player's own gold (--accent), which marks the player itself.
 */
export const PALETTE = Object.freeze([
  '#ff6b6b', '#4dabf7', '#69db7c', '#da77f2', '#ff922b',
  '#3bc9db', '#f783ac', '#a9e34b', '#9775fa', '#20c997',
]);

/** The colour of slot `k`: the palette, then golden-angle hues, each its own. */
function slotColour(k) {
  if (k < PALETTE.length) return PALETTE[k];
  const n = k - PALETTE.length;
  return `hsl(${((n * 137.508) % 360).toFixed(1)} 70% ${58 + (n % 3) * 8}%)`;
}

function nameHash(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return hash;
}

/**
 * A colour per player present, no two alike. A newcomer gets the palette colour its
 * name hashes to (so a name tends to keep its colour from one visit to the next), or
 * the next one free; past the palette, colours of their own. A colour stays with its
 * player while they stay, and is free again once they leave.
 */
export class ColourBook {
  #slots = new Map(); // name -> slot

  /** The players present now (in order of appearance): keeps, frees, gives. */
  update(names) {
    const present = new Set(names);
    for (const name of this.#slots.keys()) if (!present.has(name)) this.#slots.delete(name);
    const taken = new Set(this.#slots.values());
    for (const name of present) {
      if (this.#slots.has(name)) continue;
      const slot = freeSlot(nameHash(name) % PALETTE.length, taken);
      this.#slots.set(name, slot);
      taken.add(slot);
    }
  }

  /** The colour of a player present, else null. */
  colourOf(name) {
    const slot = this.#slots.get(name);
    return slot === undefined ? null : slotColour(slot);
  }
}

function freeSlot(preferred, taken) {
  for (let i = 0; i < PALETTE.length; i++) {
    const slot = (preferred + i) % PALETTE.length;
    if (!taken.has(slot)) return slot;
  }
  let slot = PALETTE.length;
  while (taken.has(slot)) slot += 1;
  return slot;
}

// -------------------------------------------------------------------------- page

/** The page's WebSocket URL: the server that served it, path /ws. */
export function defaultSocketUrl(location) {
  if (!location?.host || !/^https?:$/.test(location.protocol)) return 'ws://127.0.0.1:7080/ws';
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
}

/** Arrow keys and WASD -> the direction they hold. */
const KEY_DIRECTIONS = {
  ArrowUp: 'up', KeyW: 'up', ArrowDown: 'down', KeyS: 'down',
  ArrowLeft: 'left', KeyA: 'left', ArrowRight: 'right', KeyD: 'right',
};

/** The room drawn on a canvas: the world is -1000..1000 on both axes, y down. */
class WorldCanvas {
  #canvas;
  #arena;
  #colours;
  #target = null; // where the player last asked to walk
  #pending = false;

  constructor(canvas, arena, colours) {
    this.#canvas = canvas;
    this.#arena = arena;
    this.#colours = colours;
    new ResizeObserver(() => this.redraw()).observe(canvas);
  }

  /** World coordinates of a point of the page (clamped to the world). */
  toWorld(clientX, clientY) {
    const box = this.#canvas.getBoundingClientRect();
    const clamp = (v) => Math.max(-WORLD_EDGE, Math.min(WORLD_EDGE, Math.round(v)));
    return {
      x: clamp(((clientX - box.left) / box.width) * 2 * WORLD_EDGE - WORLD_EDGE),
      y: clamp(((clientY - box.top) / box.height) * 2 * WORLD_EDGE - WORLD_EDGE),
    };
  }

  setTarget(target) {
    this.#target = target;
    this.redraw();
  }

  /** Draws at the next animation frame (once, however often it is asked). */
  redraw() {
    if (this.#pending) return;
    this.#pending = true;
    requestAnimationFrame(() => {
      this.#pending = false;
      this.#draw();
    });
  }

  #draw() {
    const canvas = this.#canvas;
    const box = canvas.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    const size = Math.max(1, Math.round(box.width * ratio));
    if (canvas.width !== size || canvas.height !== size) {
      canvas.width = size;
      canvas.height = size;
    }
    const g = canvas.getContext('2d');
    const toPixel = (v) => ((v + WORLD_EDGE) / (2 * WORLD_EDGE)) * size;
    const style = getComputedStyle(canvas);
    g.fillStyle = style.getPropertyValue('--world-bg').trim() || '#10161f';
    g.fillRect(0, 0, size, size);

    g.lineWidth = Math.max(1, ratio);
    for (let v = -WORLD_EDGE; v <= WORLD_EDGE; v += 250) {
      g.strokeStyle = v === 0 ? 'rgba(255,255,255,0.18)' : 'rgba(255,255,255,0.07)';
      const p = Math.min(size - 0.5, Math.max(0.5, toPixel(v)));
      g.beginPath();
      g.moveTo(p, 0);
      g.lineTo(p, size);
      g.moveTo(0, p);
      g.lineTo(size, p);
      g.stroke();
    }

    const me = this.#arena.name;
    const radius = Math.max(5 * ratio, size / 70);
    if (this.#target) {
      g.strokeStyle = 'rgba(255,255,255,0.45)';
      g.beginPath();
      g.arc(toPixel(this.#target.x), toPixel(this.#target.y), radius * 0.8, 0, 2 * Math.PI);
      g.stroke();
    }
    g.font = `${Math.round(12 * ratio)}px system-ui, sans-serif`;
    g.textAlign = 'center';
    for (const [name, { x, y }] of this.#arena.view.players) {
      const px = toPixel(x);
      const py = toPixel(y);
      g.fillStyle = name === me ? '#ffd166' : (this.#colours.colourOf(name) ?? '#8b98a9');
      g.beginPath();
      g.arc(px, py, radius, 0, 2 * Math.PI);
      g.fill();
      if (name === me) {
        g.strokeStyle = '#fff';
        g.lineWidth = 2 * ratio;
        g.stroke();
        g.lineWidth = Math.max(1, ratio);
      }
      g.fillStyle = '#e8edf3';
      g.fillText(name, px, py - radius - 4 * ratio);
    }
  }
}

/** Wires the page of index.html to an ArenaClient; returns that client. */
function startPage(doc) {
  const $ = (id) => doc.getElementById(id);
  const ui = {
    url: $('url'), name: $('name'), password: $('password'), login: $('login'),
    loginForm: $('login-form'), loginHint: $('login-hint'), logout: $('logout'),
    status: $('status'), room: $('room'), players: $('players'),
    chat: $('chat'), sayForm: $('say-form'), sayText: $('say-text'), joinForm: $('join-form'),
    roomName: $('room-name'), listRooms: $('list-rooms'), rooms: $('rooms'), leave: $('leave'),
    whoButton: $('who-button'), who: $('who'), world: $('world'), pad: $('pad'),
  };
  ui.url.value = defaultSocketUrl(window.location);

  const arena = new ArenaClient(new Client());
  const client = arena.client;
  const colours = new ColourBook();
  const canvas = new WorldCanvas(ui.world, arena, colours);
  window.arena = arena; // for debugging: arena.client is the gatehouse Client

  // ---- what the user reads

  const MAX_CHAT_LINES = 200;
  function chatLine(className, parts) {
    const li = doc.createElement('li');
    li.className = className;
    for (const [cls, text, colour] of parts) {
      const span = doc.createElement('span');
      if (cls) span.className = cls;
      if (colour) span.style.color = colour;
      span.textContent = text;
      li.append(span);
    }
    const atBottom = ui.chat.scrollTop + ui.chat.clientHeight >= ui.chat.scrollHeight - 8;
    ui.chat.append(li);
    while (ui.chat.children.length > MAX_CHAT_LINES) ui.chat.firstElementChild.remove();
    if (atBottom) ui.chat.scrollTop = ui.chat.scrollHeight;
  }
  const notice = (text) => chatLine('system', [[null, `* ${text}`]]);

  function setStatus(text, state) {
    ui.status.textContent = text;
    ui.status.dataset.state = state;
  }

  function showConnected() {
    if (client.state !== 'open') return;
    if (!arena.state) {
      setStatus('connected; log in', 'connected');
      return;
    }
    setStatus(`connected as ${arena.state.name} in ${arena.state.room}`, 'online');
  }

  /** Logged in (or getting back in): the log out button instead of the login form. */
  function showSession(on) {
    ui.loginForm.hidden = on;
    ui.loginHint.hidden = on;
    ui.logout.hidden = !on;
  }

  /** The player list: one <li data-name data-x data-y> per player, sorted by name. */
  const playerItems = new Map();
  function renderPlayers() {
    const view = arena.view;
    ui.players.dataset.room = view.room;
    const names = [...view.players.keys()].sort();
    const sameSet = names.length === playerItems.size && names.every((n) => playerItems.has(n));
    if (!sameSet) {
      colours.update([...view.players.keys()].filter((n) => n !== arena.name));
      for (const [name, li] of playerItems) {
        if (!view.players.has(name)) {
          li.remove();
          playerItems.delete(name);
        }
      }
      for (const name of names) {
        let li = playerItems.get(name);
        if (!li) {
          li = doc.createElement('li');
          li.dataset.name = name;
          playerItems.set(name, li);
        }
        li.style.setProperty('--dot', colours.colourOf(name));
        ui.players.append(li); // appending in sorted order sorts the list
      }
    }
    for (const [name, { x, y }] of view.players) {
      const li = playerItems.get(name);
      if (li.dataset.x === String(x) && li.dataset.y === String(y)) continue;
      li.dataset.x = x;
      li.dataset.y = y;
      li.classList.toggle('me', name === arena.name);
      li.textContent = `${name} (${x}, ${y})`;
    }
    canvas.redraw();
  }

  /** "bob entered", "bob left": the changes of the room the player is in. */
  let lastLook = { room: '', names: [] };
  function announceComings() {
    const look = { room: arena.view.room, names: [...arena.view.players.keys()] };
    const { entered, left } = presenceChanges(lastLook, look, arena.name);
    lastLook = look;
    for (const name of entered) notice(`${name} entered`);
    for (const name of left) notice(`${name} left`);
  }

  // ---- what the client tells

  arena.addEventListener('view', () => {
    renderPlayers();
    announceComings();
  });
  arena.addEventListener('state', ({ detail }) => {
    ui.room.textContent = detail.room;
    showConnected();
  });
  /** A player's name in the chat, in their colour (the player's own: gold, --accent). */
  const from = (name, label = name) => ['from', label, name === arena.name ? 'var(--accent)' : colours.colourOf(name)];
  arena.addEventListener('chat', ({ detail: chat }) => {
    const said = [[null, ': '], ['text', chat.text]];
    if (chat.whisper) chatLine('whisper', [from(chat.from, `(whisper) ${chat.from}`), ...said]);
    else chatLine('chat', [from(chat.from), ...said]);
  });
  arena.addEventListener('restarted', ({ detail }) => notice(`the room ${detail} restarted`));
  arena.addEventListener('announcement', ({ detail }) => notice(`announcement: ${detail}`));
  arena.addEventListener('resync', ({ detail }) => notice(`missed an update of ${detail}; asking for the room again`));

  // A socket that closes before it opened (a first connect, a reconnection attempt)
  // could not reach the server.
  let live = false;
  client.addEventListener('open', () => { live = true; });
  client.addEventListener('close', ({ detail }) => {
    const reached = live;
    live = false;
    ui.room.textContent = '';
    const { text, state } = describeClose(detail, { url: client.url, reached });
    setStatus(text, state);
    // Failed attempts only update the status: one notice per lost connection.
    if (reached && !detail.error?.byClient) notice(text);
    if (detail.reconnectIn === null) showSession(false);
  });
  // A lost connection of a logged-in player is resumed: the room goes on where it was.
  client.addEventListener('resuming', ({ detail }) => {
    if (detail.attempt === 1) notice('connection lost; resuming');
    setStatus('connection lost; resuming…', 'reconnecting');
  });
  client.addEventListener('resumed', () => {
    notice('resumed: nothing missed');
    showConnected();
  });
  client.addEventListener('reconnected', () => {
    notice('reconnected');
    showConnected();
  });
  client.addEventListener('error', ({ detail }) => {
    // The login after a reconnection failed: stop, and say why.
    client.close();
    showSession(false);
    setStatus(`could not log in again: ${describeError(detail.error)}`, 'offline');
  });

  // ---- what the user does

  /** Runs an action; a failure becomes a notice in the chat log. */
  async function attempt(what, action) {
    try {
      return await action();
    } catch (e) {
      notice(`${what}: ${describeError(e)}`);
      return undefined;
    }
  }

  ui.loginForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const name = ui.name.value.trim();
    const url = ui.url.value.trim();
    ui.login.disabled = true;
    try {
      // Someone else, or a reconnection under way: start afresh.
      if (client.state === 'connecting' || (client.state === 'open' && arena.state)) client.close();
      if (client.state !== 'open') {
        arena.reset();
        setStatus(`connecting to ${url}`, 'connecting');
        try {
          await client.connect(url);
        } catch (e) {
          // A socket that closed said why in its close event.
          if (!(e instanceof ConnectionClosed)) setStatus(`cannot connect to ${url}: ${describeError(e)}`, 'offline');
          return;
        }
      }
      setStatus(`logging in as ${name}`, 'connecting');
      try {
        await arena.login(name, ui.password.value);
      } catch (e) {
        if (e instanceof RequestError) {
          client.close(); // refused: the next try starts afresh
          setStatus(`login refused: ${describeError(e)}`, 'offline');
        } // else the connection ended: its close event said why, and whether it reconnects
        return;
      }
      showSession(true);
      notice(`logged in as ${arena.state.name} (login #${arena.state.logins})`); // the hint says the commands
    } finally {
      ui.login.disabled = false;
    }
  });

  /**
   * Log out: the connection closes for good (close() cancels any reconnection; the
   * server saves the player and takes it out of its room), and the page forgets the
   * session but for the name, ready for the next login.
   */
  ui.logout.addEventListener('click', () => {
    const name = arena.name;
    client.close();
    arena.reset();
    canvas.setTarget(null);
    ui.password.value = '';
    ui.room.textContent = '';
    ui.rooms.replaceChildren();
    ui.who.textContent = '';
    ui.chat.replaceChildren();
    showSession(false);
    setStatus(name ? `logged out (${name})` : 'logged out', 'offline');
  });

  async function join(room) {
    await attempt(`cannot join ${room}`, () => arena.join(room));
  }

  async function run(line) {
    const cmd = parseCommand(line);
    switch (cmd.command) {
      case 'say':
        if (cmd.text) await attempt('not said', () => arena.say(cmd.text));
        break;
      case 'whisper':
        if (await attempt(`whisper to ${cmd.to} failed`, () => arena.whisper(cmd.to, cmd.text).then(() => true))) {
          chatLine('whisper mine', [['from', `(to ${cmd.to})`], [null, ': '], ['text', cmd.text]]);
        }
        break;
      case 'join':
        await join(cmd.room);
        break;
      case 'leave':
        await attempt('cannot leave', () => arena.leave());
        break;
      case 'who':
        await showWho();
        break;
      case 'rooms':
        await listRooms();
        break;
      case 'help':
        notice(HELP);
        break;
      default:
        notice(cmd.message);
    }
  }

  ui.sayForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const line = ui.sayText.value;
    ui.sayText.value = '';
    if (line.trim()) run(line);
  });

  ui.joinForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const room = ui.roomName.value.trim();
    if (room) join(room);
  });
  ui.leave.addEventListener('click', () => attempt('cannot leave', () => arena.leave()));

  /** The rooms in use: in the chat (where a phone shows it), and as buttons to join. */
  async function listRooms() {
    const list = await attempt('cannot list rooms', () => arena.rooms());
    if (!list) return;
    notice(roomsText(list));
    ui.rooms.replaceChildren(...list.rooms.map((room) => {
      const li = doc.createElement('li');
      const button = doc.createElement('button');
      button.type = 'button';
      button.dataset.room = room.name;
      button.textContent = `${room.name} (${room.players})`;
      button.addEventListener('click', () => join(room.name));
      li.append(button);
      return li;
    }));
    if (list.total > list.rooms.length) {
      const li = doc.createElement('li');
      li.textContent = `and ${list.total - list.rooms.length} more`;
      ui.rooms.append(li);
    }
  }
  ui.listRooms.addEventListener('click', listRooms);

  /** Who is online: in the chat, and under the buttons. */
  async function showWho() {
    const who = await attempt('cannot ask who is online', () => arena.who());
    if (!who) return;
    ui.who.textContent = whoText(who);
    notice(ui.who.textContent);
  }
  ui.whoButton.addEventListener('click', showWho);

  // ---- walking: click or tap to walk there; keys or the pad to walk a direction

  const canWalk = () => client.state === 'open' && arena.state !== null;

  ui.world.addEventListener('click', (event) => {
    if (!canWalk()) return;
    const target = canvas.toWorld(event.clientX, event.clientY);
    attempt('cannot walk', () => arena.goto(target.x, target.y));
    canvas.setTarget(target);
  });

  const held = new Set(); // directions held by keys or the pad
  let walking = { dx: 0, dy: 0 };
  function steer() {
    const dx = (held.has('right') ? 1 : 0) - (held.has('left') ? 1 : 0);
    const dy = (held.has('down') ? 1 : 0) - (held.has('up') ? 1 : 0);
    if (dx === walking.dx && dy === walking.dy) return;
    walking = { dx, dy };
    if (!canWalk()) return;
    canvas.setTarget(null);
    attempt('cannot walk', () => arena.walk(dx, dy));
  }
  const typing = (el) => el && (el.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName));
  doc.addEventListener('keydown', (event) => {
    const dir = KEY_DIRECTIONS[event.code];
    if (!dir || typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
    event.preventDefault(); // arrows would scroll the page
    held.add(dir);
    steer();
  });
  doc.addEventListener('keyup', (event) => {
    const dir = KEY_DIRECTIONS[event.code];
    if (!dir) return;
    held.delete(dir);
    steer();
  });
  window.addEventListener('blur', () => {
    held.clear();
    steer();
  });
  for (const button of ui.pad.querySelectorAll('button[data-dir]')) {
    const dir = button.dataset.dir;
    button.addEventListener('pointerdown', (event) => {
      event.preventDefault();
      button.setPointerCapture?.(event.pointerId);
      held.add(dir);
      steer();
    });
    for (const type of ['pointerup', 'pointercancel', 'lostpointercapture']) {
      button.addEventListener(type, () => {
        held.delete(dir);
        steer();
      });
    }
  }

  setStatus('not connected', 'offline');
  canvas.redraw();
  return arena;
}

if (typeof document !== 'undefined' && document.getElementById('world')) {
  startPage(document);
}
