/**
 * browser_e2e.mjs: the arena page end to end, in Debian's headless Chromium driven
 * by playwright-core, against a running gatehouse WebSocket listener.
 *
 * Two desktop pages log in as PLAYER_A and PLAYER_B and join ROOM, A first: A's
 * chat must say "B entered" and B's must not say "A entered" (a room's first state
 * is not news). A says "hello from A" and B sees it; B clicks on the canvas and A
 * sees B move; both see TCP_PLAYER (a player the caller connects over TCP, who
 * answers A's hello) in the room and what it says (TCP_SAYS) in the chat. A types
 * /who and clicks "List rooms": both answer in A's chat. B's page is served through a
 * TCP proxy, which then cuts B's connection: B's page says it resumes, then resumed,
 * B sees what A said meanwhile, and A never hears B leave (arena keeps the session).
 * B logs out: B's page shows
 * the login form again with the name kept and an empty chat, its client is closed
 * without a reconnection, and A's chat says "B left". Then PHONE_PLAYER logs in on a
 * phone-sized page (390x844, touch): the placeholders fit their inputs, the chat
 * box, the Say and Log out buttons show without horizontal scrolling, and /who
 * answers in its chat. Full-page screenshots of the phone page and of A go to
 * PHONE_SCREENSHOT and SCREENSHOT, and one JSON line says what was checked (exit 0).
 * Any failure or the 60 s budget running out prints the reason as a JSON line,
 * saves a screenshot of A if it can, and exits 1.
 *
 * Environment: GATEHOUSE_URL (the page, default http://127.0.0.1:7080/), ROOM,
 * PLAYER_A, PLAYER_B, PHONE_PLAYER, PASSWORD (defaults: fresh random names),
 * TCP_PLAYER and TCP_SAYS (unset: those checks are skipped), SCREENSHOT (default
 * $TMPDIR/arena-e2e.png), PHONE_SCREENSHOT (default $TMPDIR/arena-e2e-phone.png),
 * CHROMIUM_PATH (default /usr/bin/chromium).
 *
 * Not a `node --test` file: run it as `node clients/web/e2e/browser_e2e.mjs` after
 * `npm ci` in clients/web.
 */

import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, harness, tcpProxy } from './harness.mjs';

const suffix = Math.random().toString(36).slice(2, 8);
const config = {
  url: env('GATEHOUSE_URL', 'http://127.0.0.1:7080/'),
  room: env('ROOM', `e2e-${suffix}`),
  a: env('PLAYER_A', `alice-${suffix}`),
  b: env('PLAYER_B', `bob-${suffix}`),
  phone: env('PHONE_PLAYER', `dora-${suffix}`),
  password: env('PASSWORD', `e2e-password-${suffix}`),
  tcpPlayer: env('TCP_PLAYER', ''),
  tcpSays: env('TCP_SAYS', ''),
  screenshot: env('SCREENSHOT', join(tmpdir(), 'arena-e2e.png')),
  phoneScreenshot: env('PHONE_SCREENSHOT', join(tmpdir(), 'arena-e2e-phone.png')),
  chromium: env('CHROMIUM_PATH', '/usr/bin/chromium'),
};
const e2e = harness({
  budgetMs: 50_000, // for the waits; the rest of the 60 s goes to a failure's screenshot
  hardLimitMs: 54_000, // then at most 5 s for the screenshot
  screenshot: config.screenshot,
});
const { left, step, checked } = e2e;

// ---- what the page shows (the DOM contract of README.md)

async function logIn(page, name, url = config.url) {
  await page.goto(url, { timeout: left() });
  await page.fill('#name', name, { timeout: left() });
  await page.fill('#password', config.password, { timeout: left() });
  await page.click('#login', { timeout: left() });
  await page.waitForFunction(
    (n) => document.querySelector('#status')?.textContent.startsWith(`connected as ${n} in `),
    name, { timeout: left() });
  await page.waitForSelector('#logout', { state: 'visible', timeout: left() });
  await page.waitForSelector('#login-form', { state: 'hidden', timeout: left() });
}

/** Joins `room` and waits for its first RoomState (the players list of that room). */
async function joinRoom(page, room) {
  await page.fill('#room-name', room, { timeout: left() });
  await page.click('#join', { timeout: left() });
  await page.waitForFunction((r) => document.querySelector('#room')?.textContent === r
    && document.querySelector('#players')?.dataset.room === r, room, { timeout: left() });
}

function seesPlayer(page, name) {
  return page.waitForFunction(
    (n) => [...document.querySelectorAll('#players li')].some((li) => li.dataset.name === n),
    name, { timeout: left() });
}

function seesChat(page, text) {
  return page.waitForFunction(
    (t) => [...document.querySelectorAll('#chat li')].some((li) => li.textContent.includes(t)),
    text, { timeout: left() });
}

/** Waits for a notice (a system line of the chat): `* is` exactly, or one holding all of `has`. */
function seesNotice(page, { is = null, has = [] }) {
  return page.waitForFunction(
    ({ line, parts }) => [...document.querySelectorAll('#chat li.system')].some((li) => {
      const text = li.textContent;
      return (line === null || text === `* ${line}`) && parts.every((part) => text.includes(part));
    }),
    { line: is, parts: has }, { timeout: left() });
}

/** The chat's lines, as text. */
function chatLines(page) {
  return page.evaluate(() => [...document.querySelectorAll('#chat li')].map((li) => li.textContent));
}

/** Where `page` shows `name` standing: {x, y}. */
function positionOn(page, name) {
  return page.evaluate((n) => {
    const li = [...document.querySelectorAll('#players li')].find((item) => item.dataset.name === n);
    return li ? { x: Number(li.dataset.x), y: Number(li.dataset.y) } : null;
  }, name);
}

/** Where on `page`'s canvas the world's (x, y) is: {x, y} in the canvas's pixels. */
async function onCanvas(page, { x, y }) {
  const box = await page.locator('#world').boundingBox({ timeout: left() });
  return { x: ((x + 1000) / 2000) * box.width, y: ((y + 1000) / 2000) * box.height };
}

/** Waits until `page` shows `name` within a step of (x, y). */
function seesStanding(page, name, { x, y }) {
  return page.waitForFunction(({ n, tx, ty }) => {
    const li = [...document.querySelectorAll('#players li')].find((item) => item.dataset.name === n);
    return li && Math.abs(li.dataset.x - tx) <= 20 && Math.abs(li.dataset.y - ty) <= 20;
  }, { n: name, tx: x, ty: y }, { timeout: left() });
}

/** Types `line` in the chat box and sends it. */
async function say(page, line) {
  await page.fill('#say-text', line, { timeout: left() });
  await page.click('#say', { timeout: left() });
}

/** Counts the client's reconnections from now on (window.reconnections). */
function countReconnections(page) {
  return page.evaluate(() => {
    window.reconnections = 0;
    window.arena.client.addEventListener('reconnecting', () => { window.reconnections += 1; });
  });
}

/** Throws unless every placeholder of `selectors` fits its input's width. */
async function placeholdersFit(page, selectors) {
  const cut = await page.evaluate((list) => {
    const measure = document.createElement('canvas').getContext('2d');
    return list.flatMap((selector) => {
      const input = document.querySelector(selector);
      const style = getComputedStyle(input);
      measure.font = style.font;
      const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
      const needs = measure.measureText(input.placeholder).width;
      return needs > room ? [`${selector} "${input.placeholder}" needs ${Math.ceil(needs)}px of ${room}px`] : [];
    });
  }, selectors);
  if (cut.length) throw new Error(`placeholders cut off: ${cut.join('; ')}`);
}

/** Throws unless `selectors` show, whole, and the page does not scroll sideways. */
async function fitsTheWidth(page, selectors) {
  for (const selector of selectors) {
    await page.waitForSelector(selector, { state: 'visible', timeout: left() });
  }
  const problems = await page.evaluate((list) => {
    const width = window.innerWidth;
    const wide = document.scrollingElement.scrollWidth;
    const out = wide > width ? [`the page is ${wide}px wide in a ${width}px viewport`] : [];
    for (const selector of list) {
      const box = document.querySelector(selector).getBoundingClientRect();
      if (box.left < 0 || box.right > width) out.push(`${selector} spans ${box.left}..${box.right}px`);
    }
    return out;
  }, selectors);
  if (problems.length) throw new Error(problems.join('; '));
}

async function main() {
  await e2e.launch(config.chromium);
  const viewport = { width: 1200, height: 820 };
  const pageA = await e2e.newPage({ viewport }); // the one a failure screenshots
  const pageB = await e2e.newPage({ viewport });

  // A first, all the way into the room, then B: B's entry is news to A; A, already
  // there (and never in B's lobby), is not news to B.
  step(`${config.a} logs in and joins ${config.room}`);
  await logIn(pageA, config.a);
  await joinRoom(pageA, config.room);
  step(`${config.b} logs in through a proxy and joins ${config.room}`);
  const server = new URL(config.url);
  const through = await tcpProxy(`${server.hostname}:${server.port}`);
  await logIn(pageB, config.b, `http://${through.address}/`);
  checked.push('both logged in; Log out instead of the login form');
  await joinRoom(pageB, config.room);
  await Promise.all([seesPlayer(pageA, config.b), seesPlayer(pageB, config.a)]);
  checked.push('both in the room, each sees the other');
  await seesNotice(pageA, { is: `${config.b} entered` });
  if ((await chatLines(pageB)).some((line) => line.includes(`${config.a} entered`))) {
    throw new Error(`${config.b}'s chat says ${config.a} entered: the room's first state is not news`);
  }
  checked.push('A is told B entered; B is not told about A, already there');

  // A's hello comes first: the TCP player answers it.
  step(`${config.a} says hello; ${config.b} must see it`);
  const hello = `hello from ${config.a}`;
  await say(pageA, hello);
  await seesChat(pageB, hello);
  checked.push('chat A -> B');

  step(`${config.b} clicks on the canvas; ${config.a} must see the move`);
  const before = await positionOn(pageA, config.b);
  const near = (p, q) => Math.abs(p.x - q.x) + Math.abs(p.y - q.y) < 400;
  const target = near(before, { x: 500, y: 500 }) ? { x: -500, y: -500 } : { x: 500, y: 500 };
  await pageB.locator('#world').click({ position: await onCanvas(pageB, target), timeout: left() });
  await pageA.waitForFunction(({ name, x, y }) => {
    const li = [...document.querySelectorAll('#players li')].find((item) => item.dataset.name === name);
    return li && (li.dataset.x !== String(x) || li.dataset.y !== String(y));
  }, { name: config.b, ...before }, { timeout: left() });
  const after = await positionOn(pageA, config.b);
  checked.push('B walked, A saw it');

  if (config.tcpPlayer) {
    step(`both must see ${config.tcpPlayer} (over TCP) in the room`);
    await Promise.all([seesPlayer(pageA, config.tcpPlayer), seesPlayer(pageB, config.tcpPlayer)]);
    checked.push('TCP player in the room');
  }
  if (config.tcpSays) {
    step(`both must see "${config.tcpSays}" in the chat`);
    await Promise.all([seesChat(pageA, config.tcpSays), seesChat(pageB, config.tcpSays)]);
    checked.push('chat TCP -> both');
  }

  step(`${config.a} types /who and clicks "List rooms": the answers must be in the chat`);
  await say(pageA, '/who');
  const whoAnswer = [' online, ', ' in this room: '];
  await seesNotice(pageA, { has: [...whoAnswer, config.a, config.b] });
  await pageA.click('#list-rooms', { timeout: left() });
  await seesNotice(pageA, { has: ['* rooms: ', `${config.room} (`] });
  checked.push('/who and List rooms answer in the chat');

  step(`${config.b}'s connection is cut: the page must resume the session`);
  through.cut();
  const meanwhile = `said while ${config.b} was cut off`;
  await say(pageA, meanwhile);
  await seesNotice(pageB, { is: 'resumed: nothing missed' });
  await seesChat(pageB, meanwhile);
  await pageB.waitForFunction(
    (n) => document.querySelector('#status')?.textContent.startsWith(`connected as ${n} in `),
    config.b, { timeout: left() });
  const heard = (await chatLines(pageA)).filter((line) => line.includes(`${config.b} left`)
    || line.includes(`${config.b} entered`));
  if (heard.length !== 1) throw new Error(`${config.a} heard ${JSON.stringify(heard)} of ${config.b}: not one entry`);
  if ((await chatLines(pageB)).some((line) => line.includes('reconnected'))) {
    throw new Error(`${config.b}'s page logged in again instead of resuming`);
  }
  checked.push('a cut: B resumed, saw what A said meanwhile; A never heard B leave');

  step(`${config.b} logs out; ${config.a} must see ${config.b} leave`);
  await countReconnections(pageB);
  await pageB.click('#logout', { timeout: left() });
  await pageB.waitForSelector('#login-form', { state: 'visible', timeout: left() });
  await pageB.waitForSelector('#logout', { state: 'hidden', timeout: left() });
  await seesNotice(pageA, { is: `${config.b} left` });
  // close() ends the connection for good: a reconnection would have been scheduled
  // (and counted) at once, in the close event.
  const afterLogout = await pageB.evaluate(() => ({
    name: document.querySelector('#name').value,
    state: document.querySelector('#status').dataset.state,
    chat: document.querySelectorAll('#chat li').length,
    players: document.querySelectorAll('#players li').length,
    room: document.querySelector('#room').textContent,
    client: window.arena.client.state,
    reconnections: window.reconnections,
  }));
  const expected = JSON.stringify({
    name: config.b, state: 'offline', chat: 0, players: 0, room: '', client: 'closed', reconnections: 0,
  });
  if (JSON.stringify(afterLogout) !== expected) {
    throw new Error(`after logging out, ${config.b}'s page shows ${JSON.stringify(afterLogout)}, not ${expected}`);
  }
  checked.push('logout: login form, name kept, chat and room cleared, closed, no reconnection; A told B left');
  through.close();

  step(`${config.phone} on a phone`);
  const phoneSize = { width: 390, height: 844 };
  const phone = await e2e.newPage({ viewport: phoneSize, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  await phone.goto(config.url, { timeout: left() });
  await placeholdersFit(phone, ['#name', '#password']);
  await logIn(phone, config.phone);
  await joinRoom(phone, config.room);
  await placeholdersFit(phone, ['#say-text', '#room-name']);
  await fitsTheWidth(phone, ['#say-text', '#say', '#logout']);
  checked.push('phone: placeholders whole; chat box, Say and Log out shown, no sideways scrolling');
  await seesNotice(pageA, { is: `${config.phone} entered` });
  await say(phone, `hi from a phone, ${config.a}`);
  await say(phone, '/who');
  await seesNotice(phone, { has: [...whoAnswer, config.phone] });
  await seesChat(pageA, `hi from a phone, ${config.a}`);
  checked.push('phone: chat and /who');

  // Apart, so that the screenshots show each player and their name.
  step(`${config.a} clicks and ${config.phone} taps to walk apart`);
  const spots = { [config.a]: { x: -450, y: 250 }, [config.phone]: { x: 400, y: -350 } };
  await pageA.locator('#world').click({ position: await onCanvas(pageA, spots[config.a]), timeout: left() });
  await phone.locator('#world').tap({ position: await onCanvas(phone, spots[config.phone]), timeout: left() });
  await Promise.all(Object.entries(spots).flatMap(
    ([name, spot]) => [pageA, phone].map((page) => seesStanding(page, name, spot))));
  checked.push('A walked by click, the phone player by tap; both see both arrive');

  step('no reconnection of the logged-out page since');
  if (await pageB.evaluate(() => window.reconnections) !== 0) throw new Error(`${config.b}'s page reconnected`);
  e2e.noPageErrors();

  step('screenshots');
  // Chromium's full-page capture drops the touch emulation (and with it the walking
  // pad of `pointer: coarse`): the phone's viewport grows to the page's height instead.
  const tall = await phone.evaluate(() => document.scrollingElement.scrollHeight);
  await phone.setViewportSize({ width: phoneSize.width, height: tall });
  await e2e.screenshot(phone, config.phoneScreenshot);
  await e2e.screenshot(pageA, config.screenshot);
  e2e.report({
    ok: true,
    url: config.url,
    room: config.room,
    players: [config.a, config.b, config.phone],
    tcp_player: config.tcpPlayer || null,
    checked,
    b_moved: { from: before, to: after, target },
    screenshot: config.screenshot,
    phone_screenshot: config.phoneScreenshot,
  });
}

await e2e.run(main);
