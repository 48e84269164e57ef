/**
 * admin_page_e2e.mjs: the admin listener's console (`/`) end to end, in Debian's
 * headless Chromium driven by playwright-core, against a running gatehouse whose
 * admin token is ADMIN_TOKEN and whose players (held by the caller) are in ROOM.
 *
 * 1. On a phone-sized viewport (390x844) the console must ask for the token (the
 *    event stream answers 401 without it), take it from its form, then show
 *    OPEN_BEFORE in #connections-open and draw the connections chart, without
 *    horizontal scrolling. A screenshot goes to SCREENSHOT and one JSON line
 *    {"phase":"counted",...} tells the caller, which then closes a connection: the
 *    page must then show OPEN_AFTER, live.
 * 2. On a desktop viewport (a second page, given the token again): the connections
 *    table lists PLAYERS (comma-separated),
 *    each in ROOM; the rooms table lists ROOM with as many members; searching for
 *    the first player shows only that player.
 * 3. Broadcast ANNOUNCE from its dialog; kick KICK: first cancelled (the player
 *    stays), then confirmed with the message KICK_TEXT (the player's row goes).
 * 4. A reload draws the charts at once from the server's history.
 *    SCREENSHOT_DESKTOP is saved.
 * 5. Drain, confirmed: the page says the server is draining.
 * A last JSON line says what was checked (exit 0); the caller checks that the
 * announcement and the kick reached its TCP players and that the server stopped.
 * Any failure or the budget running out prints {"ok":false,...} with the reason,
 * saves a screenshot if it can, and exits 1.
 *
 * Environment: ADMIN_URL, ADMIN_TOKEN, OPEN_BEFORE, OPEN_AFTER, PLAYERS, ROOM, KICK,
 * KICK_TEXT, ANNOUNCE, SCREENSHOT (default $TMPDIR/admin-page-e2e.png),
 * SCREENSHOT_DESKTOP (default $TMPDIR/admin-page-e2e-desktop.png), CHROMIUM_PATH
 * (default /usr/bin/chromium).
 *
 * Not a `node --test` file: run it as `node clients/web/e2e/admin_page_e2e.mjs`
 * after `npm ci` in clients/web.
 */

import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, harness } from './harness.mjs';

const config = {
  url: env('ADMIN_URL', 'http://127.0.0.1:7081/'),
  token: env('ADMIN_TOKEN', ''),
  openBefore: env('OPEN_BEFORE', '0'),
  openAfter: env('OPEN_AFTER', '0'),
  players: env('PLAYERS', '').split(',').filter(Boolean),
  room: env('ROOM', ''),
  kick: env('KICK', ''),
  kickText: env('KICK_TEXT', 'kicked from the console'),
  announce: env('ANNOUNCE', 'an announcement from the console'),
  screenshot: env('SCREENSHOT', join(tmpdir(), 'admin-page-e2e.png')),
  screenshotDesktop: env('SCREENSHOT_DESKTOP', join(tmpdir(), 'admin-page-e2e-desktop.png')),
  chromium: env('CHROMIUM_PATH', '/usr/bin/chromium'),
};
const e2e = harness({
  budgetMs: 80_000, // for the waits; the rest goes to a failure's screenshot
  hardLimitMs: 90_000,
  screenshot: config.screenshot,
});
const { left, step, checked } = e2e;
let page = null;

/** Waits until `predicate(arg)` holds in the page. */
const until = (predicate, arg) => page.waitForFunction(predicate, arg, { timeout: left() });

/** Waits until #connections-open reads exactly `count`. */
const showsOpen = (count) => until((c) => document.querySelector('#connections-open')?.textContent === c, count);

/** The players the connections table lists now, each with its room cell. */
const listedPlayers = () => page.$$eval('#conn-table tr[data-id]', (rows) => rows
  .map((row) => [row.dataset.player, row.cells[2].textContent]));

/** Waits until the connections table lists exactly `players`, each in `room`. */
function listsExactly(players, room) {
  return until(([want, inRoom]) => {
    const rows = [...document.querySelectorAll('#conn-table tr[data-id]')];
    const names = rows.map((row) => row.dataset.player).sort();
    return JSON.stringify(names) === JSON.stringify([...want].sort())
      && rows.every((row) => row.cells[2].textContent === inRoom);
  }, [players, room]);
}

/** Opens the dialog with `opener`, fills it with `fill`, and presses `button`. */
async function throughDialog(opener, fill, button) {
  await page.click(opener, { timeout: left() });
  await page.waitForSelector('#confirm[open]', { timeout: left() });
  await fill();
  await page.click(button, { timeout: left() });
  await page.waitForSelector('#confirm:not([open])', { state: 'attached', timeout: left() });
}

/** Waits for #action-result to say an action went well, and returns what it says. */
async function succeeded() {
  await until(() => document.querySelector('#action-result:not([hidden])')?.dataset.ok !== undefined);
  const [ok, text] = await page.$eval('#action-result', (p) => [p.dataset.ok, p.textContent]);
  if (ok !== 'true') throw new Error(`the console says: ${text}`);
  await page.$eval('#action-result', (p) => { p.hidden = true; delete p.dataset.ok; });
  return text;
}

/** Opens the console, which must ask for the token, and gives it. */
async function open() {
  step('opening the console; it must ask for the token');
  await page.goto(config.url, { timeout: left() });
  await page.waitForSelector('#token-form', { state: 'visible', timeout: left() });

  step('entering the token');
  await page.fill('#token', config.token, { timeout: left() });
  await page.click('#token-submit', { timeout: left() });
  await page.waitForSelector('#token-form', { state: 'hidden', timeout: left() });
}

async function phone() {
  page = await e2e.newPage({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  await open();
  checked.push('asked for the token');

  step(`#connections-open must show ${config.openBefore}`);
  await showsOpen(config.openBefore);
  checked.push(`shows ${config.openBefore} open`);

  step('the connections chart must draw');
  await until(() => {
    const chart = document.querySelector('#chart-connections');
    return Number(chart?.dataset.points) >= 2 && chart.querySelector('polyline')?.getAttribute('points');
  });
  await until(() => document.querySelectorAll('#conn-table tr[data-id]').length > 0);
  checked.push('chart drawn');

  step('no horizontal scrolling on a phone');
  const widths = await page.evaluate(() => ({
    content: document.documentElement.scrollWidth, viewport: window.innerWidth,
  }));
  if (widths.content > widths.viewport) {
    throw new Error(`the page is ${widths.content}px wide in a ${widths.viewport}px viewport`);
  }
  checked.push('fits a phone');

  step('phone screenshot');
  await e2e.screenshot(page, config.screenshot);
  e2e.report({ phase: 'counted', count: Number(config.openBefore), screenshot: config.screenshot });

  step(`#connections-open must follow to ${config.openAfter}, live`);
  await showsOpen(config.openAfter);
  checked.push(`then shows ${config.openAfter} open`);
}

async function tables() {
  page = await e2e.newPage({ viewport: { width: 1280, height: 900 } });
  await open();
  step(`the connections table must list ${config.players} in ${config.room}`);
  await listsExactly(config.players, config.room);
  checked.push('connections table');

  step(`the rooms table must list ${config.room} with ${config.players.length} members`);
  await until(([room, members]) => {
    const row = document.querySelector(`#rooms-table tr[data-room="${CSS.escape(room)}"]`);
    return row?.cells[2].textContent === members;
  }, [config.room, String(config.players.length)]);
  checked.push('rooms table');

  const [found] = config.players;
  step(`searching for ${found} must show only that player`);
  await page.fill('#conn-search', found, { timeout: left() });
  await listsExactly([found], config.room);
  await page.fill('#conn-search', '', { timeout: left() });
  await listsExactly(config.players, config.room);
  checked.push('search by player');
}

async function actions() {
  step('broadcasting an announcement');
  await throughDialog('#broadcast-open', () => page.fill('#broadcast-text', config.announce), '#confirm-ok');
  const sent = await succeeded();
  checked.push(`broadcast: ${sent}`);

  const kickButton = `#conn-table tr[data-player="${config.kick}"] button.kick`;
  step(`kicking ${config.kick}, cancelled: the player stays`);
  await throughDialog(kickButton, async () => {}, '#confirm-cancel');
  const stayed = (await listedPlayers()).some(([name]) => name === config.kick);
  if (!stayed) throw new Error(`${config.kick} left the table after a cancelled kick`);
  checked.push('a cancelled kick kicks nobody');

  step(`kicking ${config.kick}, confirmed`);
  await throughDialog(kickButton, async () => {
    await page.selectOption('#kick-reason', 'kicked');
    await page.fill('#kick-text', config.kickText);
  }, '#confirm-ok');
  checked.push(`kick: ${await succeeded()}`);
  const rest = config.players.filter((name) => name !== config.kick);
  await listsExactly(rest, config.room);
  checked.push(`${config.kick} gone from the table`);
}

async function reload() {
  step('after a reload, the charts come back from the server at once');
  const before = await page.$eval('#chart-connections', (chart) => Number(chart.dataset.points));
  await page.reload({ timeout: left() });
  await until(() => document.querySelector('#chart-connections')?.dataset.history !== undefined);
  const history = await page.$eval('#chart-connections', (chart) => Number(chart.dataset.history));
  // The server reads a point a second as the page did: a second or two of
  // difference between the two clocks, not a chart started over.
  if (history < Math.max(3, before - 3)) {
    throw new Error(`the reloaded chart has ${history} points from the server; it had ${before}`);
  }
  checked.push(`history of ${history} points after a reload (${before} before)`);
  await until(() => document.querySelectorAll('#conn-table tr[data-id]').length > 0);

  step('desktop screenshot');
  await e2e.screenshot(page, config.screenshotDesktop);
}

async function drain() {
  step('draining, confirmed');
  await throughDialog('#drain-open', async () => {}, '#confirm-ok');
  checked.push(`drain: ${await succeeded()}`);
}

async function main() {
  await e2e.launch(config.chromium);
  await phone();
  await tables();
  await actions();
  await reload();
  await drain();
  e2e.noPageErrors();
  e2e.report({ ok: true, url: config.url, checked, screenshot: config.screenshotDesktop });
}

await e2e.run(main);
