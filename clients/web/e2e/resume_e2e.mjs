/**
 * resume_e2e.mjs: the browser client's session resume, in Debian's headless Chromium
 * driven by playwright-core, against a running gatehouse serving the bench service
 * (which resumes once a connection logs in) on a WebSocket listener at SERVER (host:port).
 *
 * A TCP proxy in this script stands between the page and the server: the page is
 * loaded through it and its client connects through it (so the page's origin is the
 * one it talks to). In the page, gatehouse.js's Client logs in, asks for 200
 * numbered pushes and sends 50 increments at once; after the tenth push the proxy
 * cuts every connection (both sides closed, as a network that drops). The client
 * must resume: every push once and in order, the increments answered 1 to 50, one
 * resume. Then a second cut, and the session still answers.
 *
 * A last JSON line says what was checked (exit 0); any failure or the budget running
 * out prints {"ok":false,...} and exits 1.
 *
 * Environment: SERVER (host:port of the ws listener), SCREENSHOT (a failure's),
 * CHROMIUM_PATH (default /usr/bin/chromium).
 *
 * Not a `node --test` file: run it as `node clients/web/e2e/resume_e2e.mjs` after
 * `npm ci` in clients/web.
 */

import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, harness, tcpProxy } from './harness.mjs';

const config = {
  server: env('SERVER', '127.0.0.1:7080'),
  screenshot: env('SCREENSHOT', join(tmpdir(), 'resume-e2e.png')),
  chromium: env('CHROMIUM_PATH', '/usr/bin/chromium'),
};
const e2e = harness({ budgetMs: 50_000, hardLimitMs: 60_000, screenshot: config.screenshot });
const { left, step, checked } = e2e;

async function main() {
  const through = await tcpProxy(config.server);
  await e2e.launch(config.chromium);
  const page = await e2e.newPage({});
  await page.exposeFunction('cutTheNetwork', () => through.cut());

  step('loading the page through the proxy');
  await page.goto(`http://${through.address}/`, { timeout: left() });

  step('a session through a cut during 200 pushes and 50 increments');
  const result = await page.evaluate(async (timeout) => {
    const { Client } = await import('/gatehouse.js');
    const be32 = (n) => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, n); return b; };
    const u32 = (p) => new DataView(p.buffer, p.byteOffset, p.byteLength).getUint32(0);
    const u64 = (p) => Number(new DataView(p.buffer, p.byteOffset, p.byteLength).getBigUint64(0));
    const client = new Client({ requestTimeout: timeout });
    const pushes = [];
    let sawTen;
    const ten = new Promise((resolve) => { sawTen = resolve; });
    let sawAll;
    const all = new Promise((resolve) => { sawAll = resolve; });
    client.onPush(6, (payload) => {
      pushes.push(u32(payload));
      if (pushes.length === 10) sawTen();
      if (pushes.length === 200) sawAll();
    });
    await client.connect(`ws://${location.host}/ws`);
    await client.request(4, 'browser');
    await client.request(6, be32(200));
    const counts = Array.from({ length: 50 }, () => client.request(5, new Uint8Array(0)));
    await ten;
    await window.cutTheNetwork();
    // Everything may have reached the page before the cut, and the answers come
    // before the resume is done: wait for it (bounded; a missing one is reported).
    const resumed = (n) => new Promise((resolve) => {
      if (client.resumes >= n) return resolve();
      const done = () => { clearTimeout(late); client.removeEventListener('resumed', seen); resolve(); };
      const seen = () => { if (client.resumes >= n) done(); };
      const late = setTimeout(done, timeout);
      client.addEventListener('resumed', seen);
    });
    const answered = (await Promise.all(counts)).map(u64).sort((a, b) => a - b);
    await all;
    await resumed(1);
    const firstResumes = client.resumes;
    await window.cutTheNetwork();
    const after = u64(await client.request(5, new Uint8Array(0)));
    const result = { pushes, answered, firstResumes, resumes: client.resumes, after, state: client.state };
    client.close();
    return result;
  }, left());

  const inOrder = result.pushes.length === 200 && result.pushes.every((n, i) => n === i);
  if (!inOrder) throw new Error(`pushes not each once in order: ${JSON.stringify(result.pushes)}`);
  checked.push('200 pushes, each once, in order, across a cut');
  const once = result.answered.length === 50 && result.answered.every((n, i) => n === i + 1);
  if (!once) throw new Error(`increments not 1..50: ${JSON.stringify(result.answered)}`);
  checked.push('50 increments answered 1..50: each ran once');
  if (result.firstResumes !== 1) throw new Error(`resumed ${result.firstResumes} times for one cut`);
  if (result.resumes !== 2 || result.after !== 51) {
    throw new Error(`after a second cut: ${result.resumes} resumes, counter ${result.after}`);
  }
  checked.push('a second cut resumed too');
  e2e.noPageErrors();
  through.close();
  e2e.report({ ok: true, checked, cuts: through.cuts });
}

await e2e.run(main);
