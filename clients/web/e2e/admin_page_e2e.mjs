/**
 * admin_page_e2e.mjs: the admin listener's live page (`/`) end to end, in Debian's
 * headless Chromium driven by playwright-core, against a running gatehouse whose
 * admin token is ADMIN_TOKEN.
 *
 * On a phone-sized viewport (390x844) the page must ask for the token (the event
 * stream answers 401 without it), take it from its form, then show OPEN_BEFORE in
 * #connections-open and draw the connections chart, without horizontal scrolling.
 * A screenshot goes to SCREENSHOT and one JSON line {"phase":"counted",...} tells the
 * caller, which then closes connections: the page must then show OPEN_AFTER (if
 * set), live. A desktop-sized screenshot goes to SCREENSHOT_DESKTOP (if set), and a
 * last JSON line says what was checked (exit 0). Any failure or the budget running
 * out prints {"ok":false,...} with the reason, saves a screenshot if it can, and
 * exits 1.
 *
 * Environment: ADMIN_URL (the page, default http://127.0.0.1:7081/), ADMIN_TOKEN,
 * OPEN_BEFORE (default 0), OPEN_AFTER (unset: that check is skipped), SCREENSHOT
 * (default $TMPDIR/admin-page-e2e.png), SCREENSHOT_DESKTOP, CHROMIUM_PATH (default
 * /usr/bin/chromium).
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
  openAfter: env('OPEN_AFTER', ''),
  screenshot: env('SCREENSHOT', join(tmpdir(), 'admin-page-e2e.png')),
  screenshotDesktop: env('SCREENSHOT_DESKTOP', ''),
  chromium: env('CHROMIUM_PATH', '/usr/bin/chromium'),
};
const e2e = harness({
  budgetMs: 45_000, // for the waits; the rest goes to a failure's screenshot
  hardLimitMs: 50_000,
  screenshot: config.screenshot,
});
const { left, step, checked } = e2e;
let page = null;

/** Waits until #connections-open reads exactly `count`. */
function showsOpen(count) {
  return page.waitForFunction(
    (c) => document.querySelector('#connections-open')?.textContent === c,
    count, { timeout: left() });
}

async function main() {
  await e2e.launch(config.chromium);
  page = await e2e.newPage({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });

  step('opening the page; it must ask for the token');
  await page.goto(config.url, { timeout: left() });
  await page.waitForSelector('#token-form', { state: 'visible', timeout: left() });
  checked.push('asked for the token');

  step('entering the token');
  await page.fill('#token', config.token, { timeout: left() });
  await page.click('#token-submit', { timeout: left() });
  await page.waitForSelector('#token-form', { state: 'hidden', timeout: left() });

  step(`#connections-open must show ${config.openBefore}`);
  await showsOpen(config.openBefore);
  checked.push(`shows ${config.openBefore} open`);

  step('the connections chart must draw');
  await page.waitForFunction(() => {
    const chart = document.querySelector('#chart-connections');
    return Number(chart?.dataset.points) >= 2 && chart.querySelector('polyline')?.getAttribute('points');
  }, null, { timeout: left() });
  checked.push('chart drawn');

  step('no horizontal scrolling on a phone');
  const widths = await page.evaluate(() => ({
    content: document.documentElement.scrollWidth, viewport: window.innerWidth,
  }));
  if (widths.content > widths.viewport) {
    throw new Error(`the page is ${widths.content}px wide in a ${widths.viewport}px viewport`);
  }
  checked.push('fits a phone');

  step('screenshot');
  await e2e.screenshot(page, config.screenshot);
  e2e.report({ phase: 'counted', count: Number(config.openBefore), screenshot: config.screenshot });

  if (config.openAfter) {
    step(`#connections-open must follow to ${config.openAfter}, live`);
    await showsOpen(config.openAfter);
    checked.push(`then shows ${config.openAfter} open`);
  }
  if (config.screenshotDesktop) {
    step('desktop screenshot');
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.waitForTimeout(1200); // one more event, drawn at the new size
    await e2e.screenshot(page, config.screenshotDesktop);
  }
  e2e.noPageErrors();
  e2e.report({ ok: true, url: config.url, checked, screenshot: config.screenshot });
}

await e2e.run(main);
