/**
 * browser_e2e.mjs: the arena page end to end, in Debian's headless Chromium driven
 * by playwright-core, against a running gatehouse WebSocket listener.
 *
 * Two pages log in as PLAYER_A and PLAYER_B and join ROOM; A says "hello from A"
 * and B sees it; B clicks on the canvas and A sees B move; both see TCP_PLAYER (a
 * player the caller connects over TCP, who answers A's hello) in the room and what
 * it says (TCP_SAYS) in the chat. Then a full-page screenshot of A goes to
 * SCREENSHOT, and one JSON line says what was checked (exit 0). Any failure or
 * the 60 s budget running out prints the reason as a JSON line, saves a
 * screenshot if it can, and exits 1.
 *
 * Environment: GATEHOUSE_URL (the page, default http://127.0.0.1:7080/), ROOM,
 * PLAYER_A, PLAYER_B, PASSWORD (defaults: fresh random names), TCP_PLAYER and
 * TCP_SAYS (unset: those checks are skipped), SCREENSHOT (default
 * $TMPDIR/arena-e2e.png), CHROMIUM_PATH (default /usr/bin/chromium).
 *
 * Not a `node --test` file: run it as `node clients/web/e2e/browser_e2e.mjs` after
 * `npm ci` in clients/web.
 */

import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, harness } from './harness.mjs';

const suffix = Math.random().toString(36).slice(2, 8);
const config = {
  url: env('GATEHOUSE_URL', 'http://127.0.0.1:7080/'),
  room: env('ROOM', `e2e-${suffix}`),
  a: env('PLAYER_A', `alice-${suffix}`),
  b: env('PLAYER_B', `bob-${suffix}`),
  password: env('PASSWORD', `e2e-password-${suffix}`),
  tcpPlayer: env('TCP_PLAYER', ''),
  tcpSays: env('TCP_SAYS', ''),
  screenshot: env('SCREENSHOT', join(tmpdir(), 'arena-e2e.png')),
  chromium: env('CHROMIUM_PATH', '/usr/bin/chromium'),
};
const e2e = harness({
  budgetMs: 50_000, // for the waits; the rest of the 60 s goes to a failure's screenshot
  hardLimitMs: 54_000, // then at most 5 s for the screenshot
  screenshot: config.screenshot,
});
const { left, step, checked } = e2e;

// ---- what the page shows (the DOM contract of README.md)

async function logIn(page, name) {
  await page.goto(config.url, { timeout: left() });
  await page.fill('#name', name, { timeout: left() });
  await page.fill('#password', config.password, { timeout: left() });
  await page.click('#login', { timeout: left() });
  await page.waitForFunction(
    (n) => document.querySelector('#status')?.textContent.startsWith(`connected as ${n} in `),
    name, { timeout: left() });
}

async function joinRoom(page, room) {
  await page.fill('#room-name', room, { timeout: left() });
  await page.click('#join', { timeout: left() });
  await page.waitForFunction((r) => document.querySelector('#room')?.textContent === r, room, { timeout: left() });
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

/** Where `page` shows `name` standing: {x, y}. */
function positionOn(page, name) {
  return page.evaluate((n) => {
    const li = [...document.querySelectorAll('#players li')].find((item) => item.dataset.name === n);
    return li ? { x: Number(li.dataset.x), y: Number(li.dataset.y) } : null;
  }, name);
}

async function main() {
  await e2e.launch(config.chromium);
  const viewport = { width: 1200, height: 820 };
  const pageA = await e2e.newPage({ viewport }); // the one a failure screenshots
  const pageB = await e2e.newPage({ viewport });

  step(`logging in as ${config.a} and ${config.b}`);
  await Promise.all([logIn(pageA, config.a), logIn(pageB, config.b)]);
  checked.push('both logged in');

  step(`joining ${config.room}`);
  await Promise.all([joinRoom(pageA, config.room), joinRoom(pageB, config.room)]);
  await Promise.all([seesPlayer(pageA, config.b), seesPlayer(pageB, config.a)]);
  checked.push('both in the room, each sees the other');

  // A's hello comes first: the TCP player answers it.
  step(`${config.a} says hello; ${config.b} must see it`);
  const hello = `hello from ${config.a}`;
  await pageA.fill('#say-text', hello, { timeout: left() });
  await pageA.click('#say', { timeout: left() });
  await seesChat(pageB, hello);
  checked.push('chat A -> B');

  step(`${config.b} clicks on the canvas; ${config.a} must see the move`);
  const before = await positionOn(pageA, config.b);
  const near = (p, q) => Math.abs(p.x - q.x) + Math.abs(p.y - q.y) < 400;
  const target = near(before, { x: 500, y: 500 }) ? { x: -500, y: -500 } : { x: 500, y: 500 };
  const box = await pageB.locator('#world').boundingBox({ timeout: left() });
  await pageB.locator('#world').click({
    position: { x: ((target.x + 1000) / 2000) * box.width, y: ((target.y + 1000) / 2000) * box.height },
    timeout: left(),
  });
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
  e2e.noPageErrors();

  step('screenshot');
  await e2e.screenshot(pageA, config.screenshot);
  e2e.report({
    ok: true,
    url: config.url,
    room: config.room,
    players: [config.a, config.b],
    tcp_player: config.tcpPlayer || null,
    checked,
    b_moved: { from: before, to: after, target },
    screenshot: config.screenshot,
  });
}

await e2e.run(main);
