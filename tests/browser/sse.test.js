// Server-Sent Events in a real browser: Chromium's own EventSource (and the
// JavaScript client with transport "sse" beside it) on a page served by node A
// of two realtime nodes sharing a Redis started here. Node A is killed, the
// Redis restarted, node A started again: the EventSource reconnects by itself
// with Last-Event-ID and gets every message exactly once and in order (a tally
// of the sequence numbers the test puts in the messages, read from what the
// page recorded) — or, where the history was lost, the `subscribed` frame says
// `recovered: false`. Every wait is an upper bound on something awaited.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchChromium } from "./chromium.js";
import { TestServer, freePort, mintToken } from "../../clients/js/test/server.js";

const WAIT = 20000;


const FEED_CONFIG = `
[[namespaces]]
pattern = "feed"
subscribe = "authenticated"
publish = "nobody"
history_size = 1000
history_ttl = "10m"
`;

let browser;
const cleanups = [];

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await browser?.close();
});

/** A redis-server on a fixed port; with `persist`, an append-only file in its own directory survives restarts. */
class Redis {
  constructor(port, { persist }) {
    this.port = port;
    this.persist = persist;
    this.dir = mkdtempSync(join(tmpdir(), "realtime-browser-redis-"));
    this.child = null;
    cleanups.push(async () => {
      this.child?.kill("SIGKILL");
      await this.exited;
      rmSync(this.dir, { recursive: true, force: true });
    });
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts it and resolves once it accepts connections. */
  async start() {
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--dir", this.dir, "--save", ""];
    args.push("--appendonly", this.persist ? "yes" : "no");
    const child = spawn("redis-server", args, { stdio: ["ignore", "pipe", "ignore"] });
    this.child = child;
    this.exited = new Promise((r) => child.once("exit", r));
    await new Promise((resolve, reject) => {
      let seen = "";
      const timer = setTimeout(() => reject(new Error("redis-server not ready in time")), WAIT);
      child.once("error", (e) => reject(new Error(`redis-server must be installed (scripts/test does): ${e.message}`)));
      child.once("exit", (code) => reject(new Error(`redis-server exited (${code}) before it was ready`)));
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (chunk) => {
        seen = (seen + chunk).slice(-4000);
        if (seen.includes("Ready to accept connections")) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  /** SHUTDOWN (which writes the append-only file when persisting) and waits for the exit. */
  async shutdown() {
    await new Promise((resolve, reject) => {
      const socket = tcpConnect({ host: "127.0.0.1", port: this.port }, () => socket.write("*1\r\n$8\r\nSHUTDOWN\r\n"));
      socket.on("error", reject);
      socket.on("close", resolve); // the server closes it as it exits
    });
    await this.exited;
    this.child = null;
  }
}

/** A realtime node of the Redis provider, in production mode with history on `feed` topics. */
function redisNode(redis, nodeId, port) {
  const node = new TestServer({
    port,
    config: FEED_CONFIG,
    env: { REALTIME_PROVIDER: "redis", REALTIME_REDIS_URL: redis.url, REALTIME_NODE_ID: nodeId },
  });
  cleanups.push(() => node.stop());
  return node;
}

/** Waits until `check()` is truthy (bounded); returns its value. */
async function eventually(check, what, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`not within ${timeout} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function healthStatus(node) {
  try {
    return (await fetch(`${node.httpUrl}/health`)).status;
  } catch {
    return 0;
  }
}

/**
 * Opens a page on `node` (its client script, so the page is of the node's
 * origin) and starts, side by side, a plain EventSource on `/sse?topic=…` and a
 * RealtimeClient with transport "sse" subscribed to the same topic. Everything
 * they get is recorded in `window.rec`.
 */
async function listeningPage(node, topic, token) {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  page.errors = errors;
  await page.goto(`${node.httpUrl}/client/realtime-client.js`);
  await page.evaluate(
    async ({ topic, token }) => {
      const rec = { es: [], esErrors: 0, esOpens: 0, client: [], clientEvents: [] };
      window.rec = rec;
      const es = new EventSource(`/sse?token=${encodeURIComponent(token)}&topic=${encodeURIComponent(topic)}`);
      es.onopen = () => rec.esOpens++;
      es.onmessage = (e) => rec.es.push({ frame: JSON.parse(e.data), id: e.lastEventId });
      es.addEventListener("close", (e) => rec.es.push({ close: JSON.parse(e.data) }));
      es.onerror = () => rec.esErrors++;
      window.es = es;
      const { RealtimeClient } = await import("/client/realtime-client.js");
      const client = new RealtimeClient("/ws", { token, transport: "sse", heartbeatInterval: 0, maxDelay: 500 });
      window.client = client;
      for (const type of ["connected", "disconnected", "resubscribed"]) {
        client.addEventListener(type, (e) => {
          const kept = { type };
          for (const key of ["code", "recovered", "reason"]) if (e[key] !== undefined) kept[key] = e[key];
          rec.clientEvents.push(kept);
        });
      }
      await client.subscribe(topic, (m) => rec.client.push(m));
    },
    { topic, token },
  );
  return page;
}

const record = (page) => page.evaluate(() => window.rec);
const ticks = (frames) => frames.filter((f) => f.frame?.type === "tick").map((f) => f.frame.seq);
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function publish(node, topic, seq) {
  const sent = await node.api("POST", `/api/topics/${topic}/messages`, { type: "tick", seq });
  assert.equal(sent.status, 200, `publish ${seq} via ${node.port}: ${JSON.stringify(sent.body)}`);
}

/** Waits until the page's EventSource and client both hold `count` ticks. */
async function received(page, count, what) {
  return eventually(async () => {
    const rec = await record(page);
    return ticks(rec.es).length >= count && rec.client.length >= count ? rec : null;
  }, `${count} ticks on the page (${what})`);
}

test("EventSource in Chromium: node A killed, Redis restarted with its AOF, A back: every message once and in order", async () => {
  const redis = new Redis(await freePort(), { persist: true });
  await redis.start();
  const a = redisNode(redis, "node-a", await freePort());
  const b = redisNode(redis, "node-b", await freePort());
  await a.start();
  await b.start();
  const topic = "feed:browser-resume";
  const page = await listeningPage(a, topic, mintToken({ sub: "browser-user" }));

  // Both listeners subscribed on A: the welcome, then `subscribed` with the position.
  const opened = await eventually(async () => {
    const rec = await record(page);
    return rec.es.some((f) => f.frame?.type === "subscribed") && rec.client.length === 0 ? rec : null;
  }, "the EventSource's subscribed frame");
  assert.equal(opened.es[0].frame.type, "welcome");
  const subscribed = opened.es.find((f) => f.frame?.type === "subscribed");
  assert.equal(subscribed.frame.topic, topic);
  assert.equal(subscribed.frame.offset, 0);
  assert.ok(subscribed.id.startsWith("r1"), `a history frame's event carries the cursor: ${subscribed.id}`);
  await eventually(async () => {
    const { body } = await a.api("GET", "/api/topics");
    return body?.topics?.[topic] === 2;
  }, "both streams subscribed on node A");

  // 1..5 through node B, live over the bus.
  for (const seq of range(1, 5)) await publish(b, topic, seq);
  let rec = await received(page, 5, "live before the crash");
  assert.deepEqual(ticks(rec.es), range(1, 5));
  const lastId = rec.es.at(-1).id;
  assert.ok(lastId.startsWith("r1,"), `a publication's event names the topic's position: ${lastId}`);

  // Node A crashes. 6..12 are published through B while it is down.
  await a.kill();
  for (const seq of range(6, 12)) await publish(b, topic, seq);
  // The Redis restarts too, from its append-only file.
  await redis.shutdown();
  await eventually(async () => (await healthStatus(b)) === 503, "node B sees Redis gone");
  await redis.start();
  await eventually(async () => (await healthStatus(b)) === 200, "node B back on Redis");

  // Node A again, on the same port: the EventSource reconnects by itself.
  const errorsBefore = (await record(page)).esErrors;
  assert.ok(errorsBefore >= 1, "the EventSource saw the stream drop");
  await a.start();
  rec = await received(page, 12, "the replay after the restart");
  assert.deepEqual(ticks(rec.es), range(1, 12), "EventSource: the missed ones, once each, in order");
  const resumed = rec.es.filter((f) => f.frame?.type === "subscribed");
  assert.equal(resumed.length, 2, "subscribed once per stream");
  assert.equal(resumed[1].frame.recovered, true, `resumed from Last-Event-ID: ${JSON.stringify(resumed[1].frame)}`);
  assert.equal(resumed[1].frame.epoch, subscribed.frame.epoch, "the same epoch: Redis kept the history");
  assert.equal(rec.es.filter((f) => f.frame?.type === "welcome").length, 2, "a second stream, opened by the browser");
  assert.ok(rec.esOpens >= 2);

  // Then live ones through B again.
  for (const seq of range(13, 15)) await publish(b, topic, seq);
  rec = await received(page, 15, "live after the restart");
  assert.deepEqual(ticks(rec.es), range(1, 15), "EventSource: every message exactly once, in order");
  assert.deepEqual(rec.es.filter((f) => f.frame?.type === "tick").map((f) => f.frame.offset), range(1, 15));
  assert.deepEqual(rec.client.map((m) => m.seq), range(1, 15), "the client over SSE: every message exactly once, in order");
  const clientResumed = rec.clientEvents.filter((e) => e.type === "resubscribed");
  assert.deepEqual(clientResumed, [{ type: "resubscribed", recovered: true }], JSON.stringify(rec.clientEvents));
  assert.equal(await page.evaluate(() => window.es.readyState), 1, "the EventSource is open");
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("EventSource in Chromium: Redis restarted without persistence lost the history: subscribed says recovered false", async () => {
  const redis = new Redis(await freePort(), { persist: false });
  await redis.start();
  const a = redisNode(redis, "node-a", await freePort());
  await a.start();
  const topic = "feed:browser-lost";
  const page = await listeningPage(a, topic, mintToken({ sub: "browser-user" }));
  await eventually(async () => {
    const { body } = await a.api("GET", "/api/topics");
    return body?.topics?.[topic] === 2;
  }, "both streams subscribed on node A");
  for (const seq of range(1, 3)) await publish(a, topic, seq);
  let rec = await received(page, 3, "before the restart");
  const first = rec.es.find((f) => f.frame?.type === "subscribed").frame;

  // Node A crashes, the Redis restarts empty, node A comes back.
  await a.kill();
  await redis.shutdown();
  await redis.start();
  await a.start();
  rec = await eventually(async () => {
    const r = await record(page);
    const subs = r.es.filter((f) => f.frame?.type === "subscribed");
    return subs.length === 2 && r.clientEvents.some((e) => e.type === "resubscribed") ? r : null;
  }, "the second stream's subscribed frame");
  const second = rec.es.filter((f) => f.frame?.type === "subscribed")[1].frame;
  assert.equal(second.recovered, false, JSON.stringify(second));
  assert.equal(second.reason, "other_epoch");
  assert.notEqual(second.epoch, first.epoch, "a new epoch");
  const clientNotice = rec.clientEvents.find((e) => e.type === "resubscribed");
  assert.deepEqual(clientNotice, { type: "resubscribed", recovered: false, reason: "other_epoch" });

  // Live again in the new epoch; nothing old replayed.
  await publish(a, topic, 4);
  rec = await received(page, 4, "live in the new epoch");
  assert.deepEqual(ticks(rec.es), [1, 2, 3, 4]);
  assert.deepEqual(rec.client.map((m) => m.seq), [1, 2, 3, 4]);
  assert.equal(rec.es.filter((f) => f.frame?.type === "tick").at(-1).frame.offset, 1, "offset 1 of the new epoch");
  assert.deepEqual(page.errors, []);
  await page.close();
});
