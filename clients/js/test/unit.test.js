// Pure unit tests: backoff, shutdown and refresh delays, close-code rules,
// URL building and option checks. No server, no timers waited on.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  Backoff,
  DEFAULT_OPTIONS,
  RealtimeClient,
  RealtimeError,
  backoffDelay,
  closeAction,
  isDuplicate,
  positionOf,
  refreshDelay,
  shutdownDelay,
} from "../realtime-client.js";

const top = () => 0.999999999;
const bottom = () => 0;

test("backoff: grows by the factor from the initial delay", () => {
  const opts = { initialDelay: 250, factor: 2, maxDelay: 10000, jitter: "none" };
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5].map((n) => backoffDelay(n, opts)),
    [250, 500, 1000, 2000, 4000, 8000],
  );
  const tripled = { initialDelay: 100, factor: 3, maxDelay: 1e9, jitter: "none" };
  assert.deepEqual([0, 1, 2].map((n) => backoffDelay(n, tripled)), [100, 300, 900]);
});

test("backoff: capped at maxDelay, also for huge attempt numbers", () => {
  const opts = { initialDelay: 250, factor: 2, maxDelay: 10000, jitter: "none" };
  assert.equal(backoffDelay(6, opts), 10000);
  assert.equal(backoffDelay(50, opts), 10000);
  assert.equal(backoffDelay(1e9, opts), 10000);
  assert.equal(backoffDelay(Number.MAX_SAFE_INTEGER, opts), 10000);
  assert.equal(backoffDelay(3, { initialDelay: 20000, maxDelay: 10000, jitter: "none" }), 10000);
});

test("backoff: defaults are 250 ms doubling to 10 s with equal jitter", () => {
  assert.equal(DEFAULT_OPTIONS.initialDelay, 250);
  assert.equal(DEFAULT_OPTIONS.factor, 2);
  assert.equal(DEFAULT_OPTIONS.maxDelay, 10000);
  assert.equal(DEFAULT_OPTIONS.jitter, "equal");
  assert.equal(backoffDelay(0, {}, top) <= 250, true);
  assert.equal(backoffDelay(0, {}, bottom), 125);
  assert.equal(backoffDelay(100, {}, bottom), 5000);
});

test("backoff: equal jitter stays in [d/2, d], full jitter in [0, d]", () => {
  let seed = 42;
  const lcg = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let attempt = 0; attempt < 12; attempt++) {
    const d = backoffDelay(attempt, { jitter: "none" });
    assert.equal(backoffDelay(attempt, { jitter: "equal" }, bottom), d / 2);
    assert.ok(Math.abs(backoffDelay(attempt, { jitter: "equal" }, top) - d) < 1e-3);
    assert.equal(backoffDelay(attempt, { jitter: "full" }, bottom), 0);
    assert.ok(Math.abs(backoffDelay(attempt, { jitter: "full" }, top) - d) < 1e-3);
    for (let i = 0; i < 200; i++) {
      const eq = backoffDelay(attempt, { jitter: "equal" }, lcg);
      assert.ok(eq >= d / 2 && eq <= d, `equal ${eq} outside [${d / 2}, ${d}]`);
      const full = backoffDelay(attempt, { jitter: "full" }, lcg);
      assert.ok(full >= 0 && full <= d, `full ${full} outside [0, ${d}]`);
    }
  }
  // Jitter really spreads clients: 200 draws are not all the same.
  const draws = new Set(Array.from({ length: 200 }, () => Math.round(backoffDelay(3, {}, lcg))));
  assert.ok(draws.size > 50, `only ${draws.size} distinct delays`);
  assert.throws(() => backoffDelay(0, { jitter: "sideways" }), RangeError);
});

test("backoff: the Backoff counter grows per failure and resets", () => {
  const b = new Backoff({ initialDelay: 100, factor: 2, maxDelay: 1000, jitter: "none" });
  assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()], [100, 200, 400, 800, 1000, 1000]);
  assert.equal(b.attempt, 6);
  b.reset();
  assert.equal(b.attempt, 0);
  assert.equal(b.next(), 100, "after a reset the first delay is the shortest again");
});

test("shutdown delay: uniform in [0, shutdownJitter], default 1 s", () => {
  assert.equal(DEFAULT_OPTIONS.shutdownJitter, 1000);
  assert.equal(shutdownDelay({}, bottom), 0);
  assert.ok(shutdownDelay({}, top) <= 1000 && shutdownDelay({}, top) > 999);
  assert.equal(shutdownDelay({ shutdownJitter: 400 }, () => 0.5), 200);
  for (let i = 0; i < 100; i++) {
    const d = shutdownDelay({ shutdownJitter: 300 });
    assert.ok(d >= 0 && d <= 300);
  }
});

test("refresh delay: margin min(30 s, 20% of the time left), not sooner than 1 s from now", () => {
  const now = 1_000_000;
  // One hour left: 30 s before expiry.
  assert.equal(refreshDelay(now + 3600_000, now), 3600_000 - 30_000);
  // One minute left: 20% margin (12 s).
  assert.equal(refreshDelay(now + 60_000, now), 48_000);
  // Three seconds left: 600 ms margin.
  assert.equal(refreshDelay(now + 3000, now), 2400);
  // Five seconds left, custom margin 4.5 s: 20% wins (1 s).
  assert.equal(refreshDelay(now + 5000, now, { refreshMargin: 4500 }), 4000);
  assert.equal(refreshDelay(now + 3000, now, { refreshMargin: 100 }), 2900);
  assert.equal(refreshDelay(now + 1500, now, { refreshMargin: 0 }), 1500);
  // Never sooner than 1 s from now...
  assert.equal(refreshDelay(now + 1200, now), 1000);
  assert.equal(refreshDelay(now + 1100, now), 1000);
  // ... unless less than 1.1 s are left: 100 ms before expiry, or at 80%.
  assert.equal(refreshDelay(now + 600, now), 500);
  assert.equal(refreshDelay(now + 300, now), 240);
  // Already expired: at once.
  assert.equal(refreshDelay(now - 5, now), 0);
  // Custom margin.
  assert.equal(refreshDelay(now + 3600_000, now, { refreshMargin: 60_000 }), 3540_000);
  // Always before expiry.
  for (const left of [10, 500, 999, 1000, 1500, 2000, 2500, 10_000, 1e7]) {
    const d = refreshDelay(now + left, now);
    assert.ok(d < left && d > 0, `left ${left}: ${d}`);
    if (left >= 1100) assert.ok(d >= 1000, `left ${left}: ${d} sooner than 1 s`);
  }
});

test("close codes: terminal, shutdown, fresh token, backoff", () => {
  for (const code of [1007, 1008, 1009, 3500, 3503, 3504, 3999, 4500, 4999]) {
    assert.equal(closeAction(code), "terminal", `code ${code}`);
  }
  assert.equal(closeAction(1001), "shutdown");
  assert.equal(closeAction(3005), "token");
  for (const code of [0, 1000, 1005, 1006, 1011, 3000, 3008, 3012, 3013, 3499, 4000, 4499]) {
    assert.equal(closeAction(code), "backoff", `code ${code}`);
  }
});

class FakeWebSocket {
  static instances = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeWebSocket.instances.push(this);
  }
  send(data) {
    this.sent.push(data);
  }
  close() {
    this.readyState = 3;
  }
}

function nextConnecting(client) {
  return new Promise((resolve) => client.addEventListener("connecting", resolve, { once: true }));
}

test("positions: an integer offset of 0 or more and a string epoch, nothing else", () => {
  assert.deepEqual(positionOf({ offset: 0, epoch: "e1" }), { offset: 0, epoch: "e1" });
  assert.deepEqual(positionOf({ type: "tick", topic: "t", offset: 17, epoch: "e1", seq: 3 }), { offset: 17, epoch: "e1" });
  for (const bad of [null, undefined, 5, "x", {}, { offset: 1 }, { epoch: "e" }, { offset: -1, epoch: "e" },
    { offset: 1.5, epoch: "e" }, { offset: "1", epoch: "e" }, { offset: 2 ** 60, epoch: "e" }, { offset: 1, epoch: 7 }]) {
    assert.equal(positionOf(bad), null, JSON.stringify(bad));
  }
});

test("duplicates: same epoch and an offset not above the last delivered; another epoch never is", () => {
  const last = { offset: 5, epoch: "a" };
  assert.equal(isDuplicate(last, { offset: 4, epoch: "a" }), true);
  assert.equal(isDuplicate(last, { offset: 5, epoch: "a" }), true);
  assert.equal(isDuplicate(last, { offset: 6, epoch: "a" }), false);
  assert.equal(isDuplicate(last, { offset: 9, epoch: "a" }), false, "a gap is not a duplicate");
  assert.equal(isDuplicate(last, { offset: 1, epoch: "b" }), false, "a new epoch starts again at 1");
  assert.equal(isDuplicate(null, { offset: 1, epoch: "a" }), false);
});

test("history: arguments are checked before anything is sent", async () => {
  const client = new RealtimeClient("ws://127.0.0.1:9/ws", { token: "t", autoConnect: false, WebSocket: class {} });
  await assert.rejects(client.history(""), TypeError);
  await assert.rejects(client.history("feed", { limit: 1.5 }), TypeError);
  await assert.rejects(client.history("feed", { since: { offset: 1, epoch: null } }), TypeError);
  await assert.rejects(client.history("feed"), (e) => e.code === "not_connected");
  await assert.rejects(client.subscribe("feed", () => {}, { since: { epoch: "e" } }), TypeError);
  assert.deepEqual(client.topics, [], "a refused since keeps nothing");
  assert.equal(client.position("feed"), null);
});

test("url: token URL-encoded in ?token=, other query parameters kept", async () => {
  FakeWebSocket.instances.length = 0;
  const token = "a.b+c/d=e&f g";
  const client = new RealtimeClient("ws://example.test:9000/ws?tenant=acme&x=1", { token, WebSocket: FakeWebSocket });
  await nextConnecting(client);
  // The token is fetched asynchronously; wait for the socket to be created.
  while (FakeWebSocket.instances.length === 0) await new Promise((r) => setImmediate(r));
  const url = new URL(FakeWebSocket.instances[0].url);
  client.close();
  assert.equal(url.origin, "ws://example.test:9000");
  assert.equal(url.pathname, "/ws");
  assert.equal(url.searchParams.get("tenant"), "acme");
  assert.equal(url.searchParams.get("x"), "1");
  assert.equal(url.searchParams.get("token"), token);
  assert.ok(!FakeWebSocket.instances[0].url.includes(" "), "encoded");
  assert.ok(!FakeWebSocket.instances[0].url.includes("&f"), "encoded &");
});

test("url: http(s) URLs become ws(s); other schemes are refused", () => {
  const c = new RealtimeClient("https://example.test/ws", { token: "t", WebSocket: FakeWebSocket, autoConnect: false });
  assert.equal(c._url.protocol, "wss:");
  assert.throws(() => new RealtimeClient("ftp://example.test/ws", { token: "t", WebSocket: FakeWebSocket }), TypeError);
});

test("options: a clear error without any WebSocket, and a token is required", () => {
  const descriptor = Object.getOwnPropertyDescriptor(globalThis, "WebSocket");
  Object.defineProperty(globalThis, "WebSocket", { value: undefined, configurable: true, writable: true });
  try {
    assert.throws(() => new RealtimeClient("ws://x/ws", { token: "t" }), /no WebSocket implementation.*--experimental-websocket/s);
  } finally {
    if (descriptor) Object.defineProperty(globalThis, "WebSocket", descriptor);
    else delete globalThis.WebSocket;
  }
  assert.throws(() => new RealtimeClient("ws://x/ws", { WebSocket: FakeWebSocket }), /token/);
  assert.throws(() => new RealtimeClient("ws://x/ws", { token: 42, WebSocket: FakeWebSocket }), /token/);
});

test("commands while disconnected: rejected not_connected; subscribe is queued", async () => {
  const client = new RealtimeClient("ws://x/ws", { token: "t", WebSocket: FakeWebSocket, autoConnect: false });
  for (const call of [() => client.publish("news", { type: "x" }), () => client.ping(), () => client.refreshToken("t")]) {
    await assert.rejects(call(), (e) => e instanceof RealtimeError && e.code === "not_connected");
  }
  const queued = client.subscribe("news", () => {});
  assert.deepEqual(client.topics, ["news"]);
  client.close();
  await assert.rejects(queued, (e) => e.code === "closed");
  assert.deepEqual(client.topics, []);
});

test("the token function failing is an error event and a retry with backoff", async () => {
  FakeWebSocket.instances.length = 0;
  let calls = 0;
  const client = new RealtimeClient("ws://x/ws", {
    WebSocket: FakeWebSocket,
    initialDelay: 10,
    token: async () => {
      calls += 1;
      if (calls === 1) throw new Error("auth service down");
      return "fresh";
    },
  });
  const errorP = new Promise((resolve) => client.addEventListener("error", resolve, { once: true }));
  const disconnectedP = new Promise((resolve) => client.addEventListener("disconnected", resolve, { once: true }));
  const [error, disconnected] = await Promise.all([errorP, disconnectedP]);
  assert.equal(client.state, "disconnected");
  await nextConnecting(client);
  while (FakeWebSocket.instances.length === 0) await new Promise((r) => setImmediate(r));
  client.close();
  assert.equal(error.error.code, "token");
  assert.match(error.error.message, /auth service down/);
  assert.equal(disconnected.willReconnect, true);
  assert.ok(disconnected.delay >= 5 && disconnected.delay <= 10, `delay ${disconnected.delay}`);
  assert.equal(calls, 2);
  assert.equal(new URL(FakeWebSocket.instances[0].url).searchParams.get("token"), "fresh");
});

test("an error listener that closes and connects again: the failed attempt does not end the new one", async () => {
  FakeWebSocket.instances.length = 0;
  let calls = 0;
  const client = new RealtimeClient("ws://x/ws", {
    WebSocket: FakeWebSocket,
    token: async () => {
      calls += 1;
      if (calls === 1) throw new Error("auth service down");
      return "fresh";
    },
  });
  const disconnects = [];
  client.addEventListener("disconnected", (e) => disconnects.push([e.code, e.willReconnect]));
  client.addEventListener("error", (e) => {
    if (e.error.code !== "token") return;
    client.close();
    client.connect();
  });
  while (FakeWebSocket.instances.length === 0) await new Promise((r) => setImmediate(r));
  assert.equal(client.state, "connecting");
  client.close();
  // Only close()'s own; no second one from the attempt whose token failed
  // (which would also have put the new attempt off by a backoff delay).
  assert.deepEqual(disconnects, [[1000, false], [1000, false]]);
  assert.equal(calls, 2);

  // The same when the WebSocket constructor throws (where "auto" falls back to SSE).
  let constructed = 0;
  class ThrowsOnce extends FakeWebSocket {
    constructor(url) {
      constructed += 1;
      if (constructed === 1) throw new Error("blocked by policy");
      super(url);
    }
  }
  const fetch = () => new Promise(() => {});
  const auto = new RealtimeClient("ws://x/ws", { token: "t", transport: "auto", WebSocket: ThrowsOnce, fetch });
  const events = [];
  auto.addEventListener("connecting", (e) => events.push(["connecting", e.transport]));
  auto.addEventListener("disconnected", (e) => events.push(["disconnected", e.code, e.willReconnect]));
  auto.addEventListener("error", (e) => {
    if (e.error.code !== "socket") return;
    auto.close();
    auto.connect();
  });
  while (constructed < 2) await new Promise((r) => setImmediate(r));
  assert.equal(auto.state, "connecting");
  auto.close();
  assert.deepEqual(events, [
    ["connecting", "websocket"],
    ["disconnected", 1000, false],
    ["connecting", "websocket"],
    ["disconnected", 1000, false],
  ]);
});

test("the module is browser-safe: no imports, no Node-only globals", async () => {
  const { readFile } = await import("node:fs/promises");
  const source = await readFile(new URL("../realtime-client.js", import.meta.url), "utf8");
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
  assert.doesNotMatch(code, /^\s*import\s/m, "no static import");
  assert.doesNotMatch(code, /\bimport\s*\(/, "no dynamic import");
  assert.doesNotMatch(code, /\brequire\s*\(/);
  assert.doesNotMatch(code, /\bprocess\./);
  assert.doesNotMatch(code, /\bBuffer\b/);
  assert.doesNotMatch(code, /\bglobal\./);
  assert.doesNotMatch(code, /\b(setImmediate|__dirname|__filename)\b/);
});
