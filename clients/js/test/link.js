// Test helper: a TCP link between clients and the server that a test can cut the
// way a network does — every open connection reset at once (no WebSocket close
// frame, no FIN), while the server keeps running — and then hold new connections
// until the test lets them through, so what happens "while the client is away" is
// decided by the test, not by a reconnect delay. Imported by the *.test.js files
// and the browser tests.
//
// Run alone by `node --test test/`, it checks itself against a plain TCP echo server.

import { createConnection, createServer } from "node:net";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

export class CuttableLink {
  /** @param {number} targetPort the server's port on 127.0.0.1 */
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.port = null;
    this.pairs = new Set(); // {client, upstream}
    this.held = []; // client sockets waiting for restore()
    this.holding = false;
    /** Connections accepted so far (held ones included). */
    this.accepted = 0;
    this._server = createServer((client) => this._accept(client));
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** Listens on a free port of 127.0.0.1. */
  start() {
    return new Promise((resolveStart, reject) => {
      this._server.once("error", reject);
      this._server.listen(0, "127.0.0.1", () => {
        this.port = this._server.address().port;
        resolveStart(this);
      });
    });
  }

  /**
   * Resets every open connection on both sides (RST: the server sees no close
   * frame, the client a dropped link) and holds every new one until restore().
   * Resolves once both ends of every pair are destroyed.
   */
  async cut() {
    this.holding = true;
    const closed = [];
    for (const { client, upstream } of this.pairs) {
      for (const socket of [client, upstream]) {
        if (socket.destroyed) continue;
        closed.push(new Promise((r) => socket.once("close", r)));
        socket.resetAndDestroy();
      }
    }
    this.pairs.clear();
    await Promise.all(closed);
  }

  /** Lets held and later connections through again. */
  restore() {
    this.holding = false;
    for (const client of this.held.splice(0)) this._forward(client);
  }

  /** Resolves once `count` connections have been accepted in total (held ones too). */
  acceptedAtLeast(count, timeout = 10000) {
    if (this.accepted >= count) return Promise.resolve();
    return new Promise((resolveCount, reject) => {
      const onConnection = () => {
        if (this.accepted < count) return;
        clearTimeout(timer);
        this._server.off("connection", onConnection);
        resolveCount();
      };
      const timer = setTimeout(() => {
        this._server.off("connection", onConnection);
        reject(new Error(`the link accepted ${this.accepted} connections within ${timeout} ms, not ${count}`));
      }, timeout);
      // Registered after _accept (the server's first listener), so `accepted` is counted.
      this._server.on("connection", onConnection);
    });
  }

  /** Stops listening and resets whatever is still open. */
  async close() {
    for (const client of this.held.splice(0)) client.destroy();
    await this.cut();
    await new Promise((r) => this._server.close(() => r()));
  }

  _accept(client) {
    this.accepted += 1;
    client.on("error", () => {});
    if (this.holding) {
      // Unread bytes stay in the kernel's buffer until the socket is forwarded.
      client.pause();
      this.held.push(client);
      return;
    }
    this._forward(client);
  }

  _forward(client) {
    if (client.destroyed) return;
    const upstream = createConnection({ host: "127.0.0.1", port: this.targetPort });
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
    const pair = { client, upstream };
    this.pairs.add(pair);
    const forget = () => this.pairs.delete(pair);
    client.once("close", () => {
      forget();
      upstream.destroy();
    });
    upstream.once("close", () => {
      forget();
      client.destroy();
    });
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  }
}

/** A link to `targetPort`, listening. */
export function startLink(targetPort) {
  return new CuttableLink(targetPort).start();
}

// ------------------------------------------------------- self-check when run alone

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const { test } = await import("node:test");
  const assert = (await import("node:assert/strict")).default;
  test("link: forwards, cuts with a reset, holds new connections until restored", async () => {
    const echo = createServer((socket) => {
      socket.on("error", () => {}); // the cut resets it
      socket.pipe(socket);
    });
    await new Promise((r) => echo.listen(0, "127.0.0.1", r));
    const link = await startLink(echo.address().port);
    const connect = () =>
      new Promise((r, reject) => {
        const socket = createConnection({ host: "127.0.0.1", port: link.port }, () => r(socket));
        socket.once("error", reject);
      });
    const roundTrip = (socket, text) =>
      new Promise((r) => {
        socket.once("data", (d) => r(String(d)));
        socket.write(text);
      });
    try {
      const first = await connect();
      assert.equal(await roundTrip(first, "one"), "one");
      const reset = new Promise((r) => first.once("error", (e) => r(e.code)));
      await link.cut();
      assert.equal(await reset, "ECONNRESET");

      const second = await connect(); // accepted by the kernel, held by the link
      await link.acceptedAtLeast(2);
      const answer = roundTrip(second, "two");
      link.restore();
      assert.equal(await answer, "two");
      second.destroy();
    } finally {
      await link.close();
      await new Promise((r) => echo.close(r));
    }
  });
}
