// Test doubles for the unit tests: a WebSocket class the tests drive from the
// server's side, and a clock whose timers run only when the test advances it.
// (Kept out of test/ so that `node --test clients/web/test/` does not count it as a
// test file.)

import { decodeBody, encodeBody } from '../gatehouse.js';

/** A fresh fake WebSocket class, and the list of the sockets made with it. */
export function fakeWebSocket() {
  const sockets = [];

  class FakeWebSocket extends EventTarget {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;

    constructor(url) {
      super();
      this.url = url;
      this.readyState = FakeWebSocket.CONNECTING;
      this.binaryType = 'blob';
      this.sent = []; // exactly what the client passed to send()
      this.closedWith = null; // {code, reason} when the client called close()
      sockets.push(this);
    }

    send(data) {
      if (this.readyState === FakeWebSocket.CONNECTING) throw new Error('InvalidStateError: still connecting');
      if (this.readyState === FakeWebSocket.OPEN) this.sent.push(data);
    }

    close(code, reason) {
      if (this.readyState >= FakeWebSocket.CLOSING) return;
      this.readyState = FakeWebSocket.CLOSING;
      this.closedWith = { code, reason };
    }

    // ---- the server's side

    /** The frames the client sent, decoded. */
    frames() {
      return this.sent.map((data) => decodeBody(data));
    }

    /** The frames sent since the last call. */
    takeFrames() {
      const frames = this.frames();
      this.sent = [];
      return frames;
    }

    accept() {
      this.readyState = FakeWebSocket.OPEN;
      this.dispatchEvent(new Event('open'));
    }

    /** Delivers a frame (an object for encodeBody, or raw bytes) as a binary message. */
    deliver(frame) {
      const bytes = frame instanceof Uint8Array ? frame : encodeBody(frame);
      const data = bytes.slice().buffer; // an ArrayBuffer, as with binaryType 'arraybuffer'
      this.dispatchEvent(new MessageEvent('message', { data }));
    }

    deliverText(text) {
      this.dispatchEvent(new MessageEvent('message', { data: text }));
    }

    /** The connection ends with a close frame of this code (1006: no close frame). */
    end(code = 1006, reason = '') {
      this.readyState = FakeWebSocket.CLOSED;
      this.dispatchEvent(Object.assign(new Event('close'), { code, reason, wasClean: code !== 1006 }));
    }
  }

  return { FakeWebSocket, sockets };
}

/** Timers that fire only in advance(), in order of their due time. */
export class FakeClock {
  now = 0;
  #timers = new Map();
  #nextId = 1;

  setTimeout = (fn, ms) => {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.now + Math.max(0, ms), fn });
    return id;
  };

  clearTimeout = (id) => {
    this.#timers.delete(id);
  };

  /** The `timers` option of Client. */
  get timers() {
    return { setTimeout: this.setTimeout, clearTimeout: this.clearTimeout, now: () => this.now };
  }

  /** Timers waiting. */
  get pending() {
    return this.#timers.size;
  }

  /** Moves time on by `ms`, running every timer due meanwhile (and those they set). */
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let next = null;
      for (const [id, timer] of this.#timers) {
        if (timer.at <= end && (next === null || timer.at < next[1].at)) next = [id, timer];
      }
      if (next === null) break;
      this.#timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
    }
    this.now = end;
  }
}

/** Lets promise callbacks run. */
export const settle = () => new Promise((resolve) => { setImmediate(resolve); });
