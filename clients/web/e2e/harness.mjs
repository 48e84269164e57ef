/**
 * harness.mjs: what the end-to-end scripts in e2e/ share around their own steps.
 *
 * It owns the clock (the budget every wait takes its timeout from, `left()`, and a
 * hard limit after which a guard gives up even on a hang outside the waits), the
 * current step and the list of what was checked, headless Chromium (launched, and
 * closed at the end) and its pages (their uncaught errors collected), screenshots,
 * the TCP proxy that cuts connections (`tcpProxy`), and the script's output: JSON
 * lines on stdout (the Rust tests in
 * crates/gatehouse-cli/tests/ read them), each with `elapsed_ms`. `report()` prints
 * the script's own; on any failure it prints
 * {"ok":false,"step","error","checked","page_errors","screenshot"} (the screenshot,
 * of the first page opened, if it can save one) and exits 1.
 *
 * Use: `const e2e = harness({ budgetMs, hardLimitMs, screenshot })` as the script
 * starts (the clock starts then; `screenshot` is where a failure's goes), the
 * steps in an async `main`, and `await e2e.run(main)` last: it exits 0 when `main`
 * returns, 1 when it throws.
 */

import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import { chromium } from 'playwright-core';

/**
 * A TCP proxy on 127.0.0.1 to `server` (host:port) whose `cut()` closes both sides of
 * every connection open through it, as a network that drops would (later ones are
 * forwarded as usual). Resolves with {address, cuts, cut(), close()}.
 */
export function tcpProxy(server) {
  const at = server.lastIndexOf(':');
  const [host, port] = [server.slice(0, at), Number(server.slice(at + 1))];
  const open = new Set();
  const listener = net.createServer((client) => {
    const upstream = net.connect(port, host);
    for (const socket of [client, upstream]) {
      open.add(socket);
      socket.on('close', () => open.delete(socket));
      socket.on('error', () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve) => {
    listener.listen(0, '127.0.0.1', () => resolve({
      address: `127.0.0.1:${listener.address().port}`,
      cuts: 0,
      cut() {
        this.cuts += 1;
        for (const socket of open) socket.destroy();
        open.clear();
      },
      close() { listener.close(); this.cut(); },
    }));
  });
}

/** The environment variable `name`, or `fallback` when it is unset or empty. */
export const env = (name, fallback) => process.env[name] || fallback;

export function harness({ budgetMs, hardLimitMs, screenshot: failureShot }) {
  const started = Date.now();
  const checked = [];
  const pageErrors = [];
  let current = 'starting';
  let browser = null;
  let firstPage = null;
  const pages = [];

  /** What is left of the budget, for each wait. */
  const left = () => Math.max(1, budgetMs - (Date.now() - started));

  /** Names what the script does now, for a failure's report. */
  const step = (name) => {
    current = name;
  };

  /** Prints `result` as one JSON line. */
  const report = (result) => {
    console.log(JSON.stringify({ ...result, elapsed_ms: Date.now() - started }));
  };

  async function screenshot(page, path) {
    mkdirSync(dirname(path), { recursive: true });
    await page.screenshot({ path, fullPage: true, timeout: 5000 });
  }

  async function launch(executablePath) {
    step('launching Chromium');
    browser = await chromium.launch({
      executablePath,
      args: ['--no-sandbox', '--headless=new'],
      timeout: left(),
    });
    return browser;
  }

  /** A page in a new browser context with `contextOptions` (viewport and so on). */
  async function newPage(contextOptions) {
    const context = await browser.newContext(contextOptions);
    const page = await context.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    firstPage ??= page;
    pages.push(page);
    return page;
  }

  /** Throws if any page has had an uncaught error. */
  function noPageErrors() {
    if (pageErrors.length) throw new Error(`errors in the page: ${pageErrors.join('; ')}`);
  }

  /** What each page shows (the end of its text), for a failure's report: the one
   *  screenshot shows only the first page. Bounded in time: the browser may be gone. */
  async function pagesText() {
    const text = (page) => Promise.race([
      page.evaluate(() => document.body.innerText.slice(-600)),
      new Promise((resolve) => { setTimeout(() => resolve('(no answer)'), 1000); }),
    ]).catch(() => '(gone)');
    return Promise.all(pages.map(text));
  }

  async function fail(error) {
    let saved = null;
    if (firstPage) {
      try {
        await screenshot(firstPage, failureShot);
        saved = failureShot;
      } catch {
        // no screenshot: the browser is gone
      }
    }
    report({
      ok: false, step: current, error: String(error?.message ?? error).split('\n')[0], checked,
      page_errors: pageErrors, screenshot: saved, pages_text: await pagesText(),
    });
  }

  /** Runs `main`, closes the browser and exits: 0 if `main` returned, 1 if not. */
  async function run(main) {
    // The waits share the budget; this guard also covers a hang outside them.
    const guard = setTimeout(async () => {
      await fail(new Error(`timed out after ${hardLimitMs / 1000} s`));
      process.exit(1);
    }, hardLimitMs);

    let code = 0;
    try {
      await main();
    } catch (error) {
      await fail(error);
      code = 1;
    } finally {
      clearTimeout(guard);
      await browser?.close().catch(() => {});
    }
    process.exit(code);
  }

  return { left, step, checked, report, screenshot, launch, newPage, noPageErrors, run };
}
