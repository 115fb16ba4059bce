// Browser tests of the demo page, the admin page and the JavaScript client inside
// them: Debian's chromium (/usr/bin/chromium) driven by playwright-core, against
// the real realtime-server binary. A screenshot of each page is saved under
// tests/browser/artifacts/ (or $BROWSER_ARTIFACTS). Every wait is an upper bound
// on something awaited, never a schedule.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { launchChromium } from "./chromium.js";
import { API_KEY, TestServer } from "../../clients/js/test/server.js";
import { startLink } from "../../clients/js/test/link.js";

const here = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = process.env.BROWSER_ARTIFACTS ?? join(here, "artifacts");
const WAIT = 10000;


let browser;

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
});

/** A development-mode server (no key material at all: it serves the demo and
 *  /dev/token, and generates the API key, which the test server reads there). */
function developmentServer() {
  return new TestServer({ env: { REALTIME_JWT_SECRET: undefined, REALTIME_API_KEY: undefined } }).start();
}

/** Development mode with history on `feed` topics (memory store: lost on restart). */
const HISTORY_DEMO_CONFIG = `
[[namespaces]]
pattern = "feed"
subscribe = "authenticated"
publish = "nobody"
history_size = 100
history_ttl = "10m"

[[namespaces]]
pattern = "user:{sub}"
subscribe = "owner"
publish = "nobody"
`;

/** Development mode with presence, join and leave notices on `chat` topics. */
const PRESENCE_DEMO_CONFIG = `
[[namespaces]]
pattern = "chat"
subscribe = "authenticated"
publish = "nobody"
presence = true
join_leave = true

[[namespaces]]
pattern = "user:{sub}"
subscribe = "owner"
publish = "nobody"
`;

/** A page that fails the test on any uncaught page error. */
async function openPage(url) {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  page.errors = errors;
  await page.goto(url);
  return page;
}

async function screenshot(page, name) {
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

const status = (page) => page.locator("#status");
const subscription = (page, topic) => page.locator(`#subscriptions li[data-topic="${topic}"]`);
const received = (page, topic, text) =>
  page.locator(`#messages li.message[data-topic="${topic}"]`, { hasText: text });

async function connectedDemo(server, query = "") {
  const page = await openPage(`${server.httpUrl}/${query}`);
  await page.locator("#status", { hasText: "connected" }).waitFor({ timeout: WAIT });
  await subscription(page, "chat:lobby").waitFor({ timeout: WAIT });
  return page;
}

test("the demo page connects and shows a message published through the HTTP API", async () => {
  const server = await developmentServer();
  try {
    const page = await connectedDemo(server);
    assert.match(await page.locator("#connection-id").textContent(), /^[0-9a-f-]{36}$/);
    assert.equal(await page.locator("#user-id").textContent(), "demo-user");

    // From a backend.
    const sent = await server.api("POST", "/api/topics/chat:lobby/messages", {
      type: "greeting",
      text: "hello from a backend",
    });
    assert.equal(sent.status, 200, JSON.stringify(sent.body));
    const fromBackend = received(page, "chat:lobby", "hello from a backend");
    await fromBackend.waitFor({ timeout: WAIT });
    const shown = JSON.parse(await fromBackend.locator("pre").textContent());
    assert.equal(shown.type, "greeting");
    assert.equal(shown.topic, "chat:lobby");
    assert.ok(shown.timestamp, "the full message is shown, timestamp included");

    // From the page's own form, through the HTTP API.
    await page.fill("#send-text", "hello from the page");
    await page.click("#send-button");
    await received(page, "chat:lobby", "hello from the page").waitFor({ timeout: WAIT });
    assert.match(await page.locator("#send-result").textContent(), /^200 /);

    // Unsubscribing stops delivery: a later message to the topic is not shown,
    // while one to the user's own topic still is.
    await subscription(page, "chat:lobby").locator("button.unsubscribe").click();
    await subscription(page, "chat:lobby").waitFor({ state: "detached", timeout: WAIT });
    await server.api("POST", "/api/topics/chat:lobby/messages", { type: "t", text: "after unsubscribe" });
    await server.api("POST", "/api/topics/user:demo-user/messages", { type: "t", text: "still here" });
    await received(page, "user:demo-user", "still here").waitFor({ timeout: WAIT });
    assert.equal(await received(page, "chat:lobby", "after unsubscribe").count(), 0);

    // A refused subscription is shown, not swallowed.
    await page.fill("#topic-input", "user:someone-else");
    await page.click("#subscribe-button");
    await page.locator("#subscribe-error", { hasText: "forbidden" }).waitFor({ timeout: WAIT });

    console.log(`screenshot: ${await screenshot(page, "demo")}`);
    assert.deepEqual(page.errors, []);
  } finally {
    await server.stop();
  }
});

test("the demo page recovers after the server restarts and its subscriptions receive again", async () => {
  const server = await developmentServer();
  try {
    const page = await connectedDemo(server);
    await page.fill("#topic-input", "news:today");
    await page.click("#subscribe-button");
    await subscription(page, "news:today").waitFor({ timeout: WAIT });
    const firstId = await page.locator("#connection-id").textContent();

    // A new process: a new generated secret, so the page must fetch a new token.
    await server.restart();
    await page.locator("#reconnects", { hasText: "1" }).waitFor({ timeout: WAIT });
    await page.locator("#status", { hasText: "connected" }).waitFor({ timeout: WAIT });
    assert.notEqual(await page.locator("#connection-id").textContent(), firstId);
    await page
      .locator("#events li", { hasText: "disconnected: 1001" })
      .first()
      .waitFor({ timeout: WAIT });

    // The restored subscriptions are live on the new server.
    for (const topic of ["news:today", "chat:lobby"]) {
      await waitForSubscriber(server, topic);
      const sent = await server.api("POST", `/api/topics/${topic}/messages`, {
        type: "after-restart",
        text: `back on ${topic}`,
      });
      assert.equal(sent.status, 200);
      await received(page, topic, `back on ${topic}`).waitFor({ timeout: WAIT });
    }
    console.log(`screenshot: ${await screenshot(page, "demo-after-restart")}`);
    assert.deepEqual(page.errors, []);
  } finally {
    await server.stop();
  }
});

test("the demo page shows recovered after a dropped link, and not recovered after a restart lost the history", async () => {
  const server = await new TestServer({
    env: { REALTIME_JWT_SECRET: undefined, REALTIME_API_KEY: undefined },
    config: HISTORY_DEMO_CONFIG,
  }).start();
  // The page and its WebSocket go through a link the test can cut like a network.
  const link = await startLink(server.port);
  try {
    const page = await connectedDemo(link);
    await page.fill("#topic-input", "feed:browser");
    await page.click("#subscribe-button");
    const feed = subscription(page, "feed:browser");
    await feed.locator(".recovery", { hasText: "subscribed" }).waitFor({ timeout: WAIT });
    await feed.locator(".position", { hasText: /^offset 0 · epoch \S+$/ }).waitFor({ timeout: WAIT });
    const epoch = (await feed.locator(".position").textContent()).split("epoch ")[1];

    const publish = async (seq) => {
      const sent = await server.api("POST", "/api/topics/feed:browser/messages", { type: "tick", text: `seq ${seq}` });
      assert.equal(sent.status, 200, JSON.stringify(sent.body));
      assert.equal(sent.body.offset, seq);
    };
    await publish(1);
    await received(page, "feed:browser", "seq 1").waitFor({ timeout: WAIT });
    await feed.locator(".position", { hasText: `offset 1 · epoch ${epoch}` }).waitFor({ timeout: WAIT });

    // The link drops (reset, no close frame) and is held while two are published.
    await link.cut();
    await page.locator("#events li", { hasText: "disconnected: 1006" }).first().waitFor({ timeout: WAIT });
    await publish(2);
    await publish(3);
    link.restore();
    await page.locator("#reconnects", { hasText: "1" }).waitFor({ timeout: WAIT });
    await page.locator('#subscriptions li[data-topic="feed:browser"][data-recovery="true"]').waitFor({ timeout: WAIT });
    assert.equal(await feed.locator(".recovery").textContent(), "recovered");
    for (const seq of [2, 3]) await received(page, "feed:browser", `seq ${seq}`).waitFor({ timeout: WAIT });
    await feed.locator(".position", { hasText: `offset 3 · epoch ${epoch}` }).waitFor({ timeout: WAIT });
    // A topic without history cannot be recovered, and the page says so.
    const lobby = subscription(page, "chat:lobby");
    await lobby.locator(".recovery", { hasText: "not recovered (no_history)" }).waitFor({ timeout: WAIT });
    assert.equal(await lobby.locator(".position").textContent(), "no history");
    for (const seq of [1, 2, 3]) assert.equal(await received(page, "feed:browser", `seq ${seq}`).count(), 1, `seq ${seq} once`);
    console.log(`screenshot: ${await screenshot(page, "demo-recovered")}`);

    // A restart loses the memory history: the position cannot be recovered.
    await server.restart();
    await page.locator("#reconnects", { hasText: "2" }).waitFor({ timeout: WAIT });
    await page.locator('#subscriptions li[data-topic="feed:browser"][data-recovery="false"]').waitFor({ timeout: WAIT });
    const reason = await feed.locator(".recovery").textContent();
    assert.match(reason, /^not recovered \((other_epoch|ahead_of_top)\)$/);
    await feed.locator(".position", { hasText: /^offset 0 · epoch \S+$/ }).waitFor({ timeout: WAIT });
    console.log(`screenshot: ${await screenshot(page, "demo-not-recovered")}`);
    assert.deepEqual(page.errors, []);
  } finally {
    await link.close();
    await server.stop();
  }
});

test("the demo page shows who is in a presence topic: a second user appears and leaves", async () => {
  const server = await new TestServer({
    env: { REALTIME_JWT_SECRET: undefined, REALTIME_API_KEY: undefined },
    config: PRESENCE_DEMO_CONFIG,
  }).start();
  try {
    const first = await connectedDemo(server);
    const lobby = subscription(first, "chat:lobby");
    const member = (page, user) => subscription(page, "chat:lobby").locator(`.members li[data-user="${user}"]`);
    await member(first, "demo-user").waitFor({ timeout: WAIT });
    assert.equal(await member(first, "demo-user").textContent(), "demo-user (you)");
    assert.equal(await lobby.locator(".presence").textContent(), "here: 1 user, 1 connection");
    // The user's own topic keeps no presence, and the page says so.
    await subscription(first, "user:demo-user").locator(".presence", { hasText: "no presence" }).waitFor({ timeout: WAIT });

    // A second user opens the page: the first page's list gains them from the join notice.
    const second = await connectedDemo(server, "?user=second-user");
    await member(first, "second-user").waitFor({ timeout: WAIT });
    await lobby.locator(".presence", { hasText: "here: 2 users, 2 connections" }).waitFor({ timeout: WAIT });
    await first.locator("#events li", { hasText: "second-user joined chat:lobby" }).waitFor({ timeout: WAIT });
    // The second page read the list itself on subscribing: both are there.
    await member(second, "demo-user").waitFor({ timeout: WAIT });
    assert.equal(await member(second, "second-user").textContent(), "second-user (you)");
    // Notices are events, not messages.
    assert.equal(await first.locator("#messages li.message").count(), 0);
    console.log(`screenshot: ${await screenshot(first, "demo-presence")}`);

    // The second page goes away: the leave notice takes them off the list.
    await second.close();
    await member(first, "second-user").waitFor({ state: "detached", timeout: WAIT });
    await lobby.locator(".presence", { hasText: "here: 1 user, 1 connection" }).waitFor({ timeout: WAIT });
    await first.locator("#events li", { hasText: "second-user left chat:lobby" }).waitFor({ timeout: WAIT });
    assert.deepEqual(first.errors, []);
    assert.deepEqual(second.errors, []);
  } finally {
    await server.stop();
  }
});

/** Waits (bounded) until the server lists `topic` with a subscriber. */
async function waitForSubscriber(server, topic) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const { body } = await server.api("GET", "/api/topics");
    if (body?.topics?.[topic] >= 1) return;
    if (Date.now() > deadline) throw new Error(`${topic} has no subscriber: ${JSON.stringify(body)}`);
    await new Promise((r) => setImmediate(r));
  }
}

test("the admin page shows the connection and can disconnect it", async () => {
  const server = await developmentServer();
  try {
    const demo = await connectedDemo(server, "?user=watched-user");
    const connectionId = await demo.locator("#connection-id").textContent();

    const admin = await openPage(`${server.httpUrl}/admin`);
    await admin.locator("#admin-status", { hasText: "live" }).waitFor({ timeout: WAIT });
    await admin.locator("#connection-count", { hasText: "1" }).waitFor({ timeout: WAIT });
    const row = admin.locator(`#connections tr[data-id="${connectionId}"]`);
    await row.waitFor({ timeout: WAIT });
    assert.equal(await row.getAttribute("data-user"), "watched-user");
    await admin
      .locator('#topics li[data-topic="chat:lobby"]', { hasText: "1 subscriber" })
      .waitFor({ timeout: WAIT });

    // Traffic shows on the chart's rate line.
    for (let i = 0; i < 5; i++) {
      await server.api("POST", "/api/topics/chat:lobby/messages", { type: "tick", n: i });
    }
    await admin.waitForFunction(() => Number(document.getElementById("rate").textContent) > 0, null, {
      timeout: WAIT,
    });
    // ...and as bars on the chart: count the chart's blue pixels.
    const barPixels = await admin.evaluate(() => {
      const canvas = document.getElementById("chart");
      const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
      let blue = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i] === 0x24 && data[i + 1] === 0x56 && data[i + 2] === 0xd6) blue += 1;
      }
      return blue;
    });
    assert.ok(barPixels > 20, `the chart shows the rate as bars (${barPixels} bar pixels)`);
    console.log(`screenshot: ${await screenshot(admin, "admin")}`);

    await row.locator("button.disconnect").click();
    await demo
      .locator("#events li", { hasText: "disconnected: 3503" })
      .waitFor({ timeout: WAIT });
    await demo.locator("#status", { hasText: "disconnected" }).waitFor({ timeout: WAIT });
    await admin.locator("#connection-count", { hasText: "0" }).waitFor({ timeout: WAIT });
    await row.waitFor({ state: "detached", timeout: WAIT });
    assert.ok(
      await demo.locator("#events li", { hasText: "not reconnecting" }).count(),
      "3503 is terminal: the client does not reconnect",
    );
    assert.deepEqual(demo.errors, []);
    assert.deepEqual(admin.errors, []);
  } finally {
    await server.stop();
  }
});

test("the admin page needs the API key outside development mode", async () => {
  const server = await new TestServer().start();
  try {
    const admin = await openPage(`${server.httpUrl}/admin`);
    assert.equal(await admin.locator("#admin-status").textContent(), "locked");
    await admin.fill("#api-key", "a-wrong-key");
    await admin.click("#api-key-save");
    await admin.locator("#admin-status", { hasText: "wrong key" }).waitFor({ timeout: WAIT });
    await admin.fill("#api-key", API_KEY);
    await admin.click("#api-key-save");
    await admin.locator("#admin-status", { hasText: "live" }).waitFor({ timeout: WAIT });
    await admin.locator("#connection-count", { hasText: "0" }).waitFor({ timeout: WAIT });
    // The demo and its token endpoint do not exist in production mode.
    const demo = await fetch(`${server.httpUrl}/`);
    assert.equal(demo.status, 404);
    const token = await fetch(`${server.httpUrl}/dev/token`);
    assert.equal(token.status, 404);
    console.log(`screenshot: ${await screenshot(admin, "admin-production")}`);
    assert.deepEqual(admin.errors, []);
  } finally {
    await server.stop();
  }
});
