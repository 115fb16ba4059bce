// The client over Server-Sent Events, against the real server: receiving every
// kind of send, the "auto" fallback where a proxy refuses WebSocket upgrades,
// streams replaced when topics change (no gap, no duplicate: a tally of
// sequence numbers the test puts in the messages), recovery with Last-Event-ID
// after the link drops, the close event's codes, refused topics, and commands a
// stream cannot carry.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, request } from "node:http";

import { RealtimeClient, RealtimeError } from "../realtime-client.js";
import { startLink } from "./link.js";
import { HISTORY_CONFIG, TestServer, messageQueue, mintToken, nextEvent, quietPeriod, recordEvents, startServer } from "./server.js";

let server;
let link;
const clients = [];

before(async () => {
  server = await startServer({ config: HISTORY_CONFIG });
  link = await startLink(server.port);
});

afterEach(() => {
  link.restore();
  for (const c of clients.splice(0)) c.close();
});

after(async () => {
  for (const c of clients.splice(0)) c.close();
  await link?.close();
  await server?.stop();
});

const EVENTS = ["connecting", "connected", "disconnected", "error", "refreshed", "resubscribed"];

/** An SSE client for `sub` (straight to `target`'s /sse), connected. */
async function connect(sub, { target = server, ...options } = {}) {
  const client = new RealtimeClient(target.wsUrl, {
    token: () => mintToken({ sub }),
    transport: "sse",
    // A lost link is seen as soon as the stream breaks; no watchdog needed.
    heartbeatInterval: 0,
    ...options,
  });
  clients.push(client);
  const events = recordEvents(client, EVENTS);
  const connected = await nextEvent(client, "connected");
  return { client, events, connected };
}

/** Publishes `{type: "tick", seq}` on `topic` through the HTTP API of `node`. */
async function publish(topic, seq, node = server) {
  const sent = await node.api("POST", `/api/topics/${topic}/messages`, { type: "tick", seq });
  assert.equal(sent.status, 200, JSON.stringify(sent.body));
  return sent.body;
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Takes the next `count` messages of `inbox` and returns their sequence numbers. */
async function take(inbox, count, timeout = 5000) {
  const seqs = [];
  for (let i = 0; i < count; i++) seqs.push((await inbox.next(timeout)).seq);
  return seqs;
}

/** The server's view of one connection. */
async function connectionInfo(id) {
  return server.api("GET", `/api/connections/${id}`);
}

/** Waits (bounded) until `check()` holds; returns its last value. */
async function eventually(check, what, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`not within ${timeout} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("over SSE the client gets the welcome, topic messages and every direct send, as a first-class connection", async () => {
  const { client, connected, events } = await connect("sia", { token: () => mintToken({ sub: "sia", roles: ["ops"] }) });
  assert.equal(connected.transport, "sse");
  assert.equal(client.transport, "sse");
  assert.equal(client.state, "connected");
  assert.equal(connected.userId, "sia");
  assert.deepEqual(connected.roles, ["ops"]);
  assert.equal(connected.welcome.type, "welcome");
  assert.match(connected.connectionId, /^[0-9a-f-]{36}$/);
  const listed = await connectionInfo(connected.connectionId);
  assert.equal(listed.status, 200, JSON.stringify(listed.body));
  assert.equal(listed.body.user_id, "sia");
  assert.equal(listed.body.transport, "sse");

  const feed = messageQueue();
  const plain = messageQueue();
  const sub = await client.subscribe("feed:sse-basic", feed);
  assert.equal(sub.offset, 0);
  assert.equal(typeof sub.epoch, "string");
  assert.deepEqual(await client.subscribe("news:sse-basic", plain), { topic: "news:sse-basic" });
  for (const seq of range(1, 3)) await publish("feed:sse-basic", seq);
  await publish("news:sse-basic", 100);
  assert.deepEqual(await take(feed, 3), range(1, 3));
  const news = await plain.next();
  assert.equal(news.seq, 100);
  assert.equal(news.topic, "news:sse-basic");
  assert.equal(typeof news.timestamp, "string");
  assert.deepEqual(client.position("feed:sse-basic"), { offset: 3, epoch: sub.epoch });

  // Direct sends: to the connection id, the user, the role, everyone.
  const direct = messageQueue();
  client.on("note", direct);
  const id = client.connectionId;
  const sends = [
    ["POST", `/api/connections/${id}/messages`, { type: "note", via: "connection" }],
    ["POST", "/api/users/sia/messages", { type: "note", via: "user" }],
    ["POST", "/api/roles/ops/messages", { type: "note", via: "role" }],
    ["POST", "/api/broadcast", { type: "note", via: "broadcast" }],
  ];
  for (const [method, path, body] of sends) {
    const sent = await server.api(method, path, body);
    assert.equal(sent.status, 200, `${path}: ${JSON.stringify(sent.body)}`);
  }
  const vias = [];
  for (let i = 0; i < sends.length; i++) vias.push((await direct.next()).via);
  assert.deepEqual(vias, ["connection", "user", "role", "broadcast"], "in the order sent");

  // Subscribing reopened the stream twice; the connection id followed.
  const reopened = events.filter((e) => e.type === "connected" && e.reopened);
  assert.equal(reopened.length, 2, JSON.stringify(events.map((e) => e.type)));
  assert.equal(events.filter((e) => e.type === "disconnected").length, 0, "no disconnect on the way");
  assert.equal(client.connectionId, reopened.at(-1).connectionId);
  // The streams it replaced are gone from the server: one connection for the user.
  await eventually(async () => {
    const { body } = await server.api("GET", "/api/connections");
    return body.connections.filter((c) => c.user_id === "sia").length === 1;
  }, "the replaced streams are unregistered");
  assert.deepEqual(feed.all.map((m) => m.seq), range(1, 3));
  assert.deepEqual(plain.all.map((m) => m.seq), [100]);
});

test("subscribe and unsubscribe reopen the stream while messages flow: no gap and no duplicate on a history topic", async () => {
  const { client } = await connect("rho");
  const steady = messageQueue();
  const sub = await client.subscribe("feed:steady", steady);

  // A publisher that keeps publishing, one after the other, while the topic set changes.
  let seq = 0;
  let publishing = true;
  const publisher = (async () => {
    while (publishing && seq < 400) await publish("feed:steady", ++seq);
  })();
  const others = [];
  for (let i = 0; i < 6; i++) {
    await steady.next(); // something arrived since the last change
    const topic = `feed:other-${i}`;
    others.push(topic);
    await client.subscribe(topic, () => {});
    if (i % 2 === 1) await client.unsubscribe(others[i - 1]);
  }
  publishing = false;
  await publisher;
  const last = seq;
  assert.ok(last >= 6, `${last} published`);
  // A marker behind the last one: once it is in, everything before it is too.
  await publish("feed:steady", last + 1);
  await eventually(() => steady.all.some((m) => m.seq === last + 1), "the marker arrives");

  assert.deepEqual(steady.all.map((m) => m.seq), range(1, last + 1), "every message exactly once, in order");
  assert.deepEqual(steady.all.map((m) => m.offset), range(1, last + 1));
  assert.ok(steady.all.every((m) => m.epoch === sub.epoch));
  assert.deepEqual(client.topics.sort(), ["feed:other-1", "feed:other-3", "feed:other-5", "feed:steady"]);
  // What the server holds for the connection is what the client keeps.
  const { body } = await connectionInfo(client.connectionId);
  assert.deepEqual([...body.topics].sort(), client.topics.sort());
});

test("after unsubscribe resolves, the topic's messages no longer arrive", async () => {
  const { client } = await connect("uma");
  const gone = messageQueue();
  const kept = messageQueue();
  await client.subscribe("news:gone", gone);
  await client.subscribe("news:kept", kept);
  await client.unsubscribe("news:gone");
  assert.deepEqual(client.topics, ["news:kept"]);
  await publish("news:gone", 1);
  await publish("news:kept", 2);
  assert.equal((await kept.next()).seq, 2);
  assert.equal(gone.all.length, 0);
  const { body } = await connectionInfo(client.connectionId);
  assert.deepEqual(body.topics, ["news:kept"]);
});

test("a refused topic rejects its own subscribe; the stream and its other topics carry on", async () => {
  const { client, events } = await connect("ria");
  const kept = messageQueue();
  await client.subscribe("feed:refusals", kept);
  const before = client.connectionId;

  const forbidden = await client.subscribe("inbox:someone-else", () => {}).catch((e) => e);
  assert.ok(forbidden instanceof RealtimeError, String(forbidden));
  assert.equal(forbidden.code, "forbidden");
  assert.equal(forbidden.topic, "inbox:someone-else");
  assert.equal(forbidden.status, 403);
  const invalid = await client.subscribe("not a topic", () => {}).catch((e) => e);
  assert.equal(invalid.code, "invalid_topic");
  assert.equal(invalid.topic, "not a topic");
  assert.equal(invalid.status, 400);
  assert.deepEqual(client.topics, ["feed:refusals"]);
  assert.equal(client.connectionId, before, "the stream was never replaced");

  await publish("feed:refusals", 1);
  assert.equal((await kept.next()).seq, 1);
  assert.equal(events.filter((e) => e.type === "disconnected").length, 0);

  // Queued before connecting: the first request is refused, the next one opens without it.
  const queued = new RealtimeClient(server.wsUrl, {
    token: () => mintToken({ sub: "ria" }),
    transport: "sse",
    heartbeatInterval: 0,
    autoConnect: false,
  });
  clients.push(queued);
  const refused = queued.subscribe("inbox:not-ria", () => {}).catch((e) => e);
  const fine = queued.subscribe("news:fine", () => {});
  queued.connect();
  assert.equal((await refused).code, "forbidden");
  assert.deepEqual(await fine, { topic: "news:fine" });
  assert.equal(queued.state, "connected");
});

test("over SSE, commands reject with unsupported_transport", async () => {
  const { client } = await connect("pam");
  for (const call of [
    () => client.publish("chat:lobby", { type: "chat" }),
    () => client.history("feed:x"),
    () => client.presence("room:x"),
    () => client.presenceStats("room:x"),
    () => client.ping(),
    () => client.refreshToken(),
  ]) {
    await assert.rejects(call(), (e) => e instanceof RealtimeError && e.code === "unsupported_transport");
  }
  assert.equal(client.state, "connected", "the stream is untouched");
});

test("the link drops: the client reopens with Last-Event-ID and gets exactly what it missed, then live ones", async () => {
  const { client } = await connect("lia", { target: link });
  const inbox = messageQueue();
  const sub = await client.subscribe("feed:sse-cut", inbox);
  await client.subscribe("news:sse-cut", () => {});
  for (const seq of range(1, 5)) await publish("feed:sse-cut", seq);
  assert.deepEqual(await take(inbox, 5), range(1, 5));

  const disconnected = nextEvent(client, "disconnected");
  await link.cut();
  const lost = await disconnected;
  assert.equal(lost.code, 1006);
  assert.equal(lost.willReconnect, true);
  assert.equal(lost.transport, "sse");

  for (const seq of range(6, 15)) await publish("feed:sse-cut", seq);
  const recovered = nextEvent(client, "resubscribed", { filter: (e) => e.topic === "feed:sse-cut" });
  const plain = nextEvent(client, "resubscribed", { filter: (e) => e.topic === "news:sse-cut" });
  link.restore();
  const resumed = await recovered;
  assert.equal(resumed.recovered, true, JSON.stringify(resumed));
  assert.equal(resumed.epoch, sub.epoch);
  assert.deepEqual(await plain, { type: "resubscribed", topic: "news:sse-cut", recovered: false, reason: "no_history" });
  assert.deepEqual(await take(inbox, 10), range(6, 15), "the missed ones, in order");
  for (const seq of range(16, 18)) await publish("feed:sse-cut", seq);
  assert.deepEqual(await take(inbox, 3), range(16, 18), "then live ones");
  assert.deepEqual(inbox.all.map((m) => m.seq), range(1, 18), "every message exactly once");
  assert.equal(client.transport, "sse");
});

test("past the history window the reopened stream says not recovered, with the reason", async () => {
  const { client } = await connect("tia", { target: link });
  const inbox = messageQueue();
  await client.subscribe("tiny:sse", inbox);
  await publish("tiny:sse", 1);
  assert.deepEqual(await take(inbox, 1), [1]);
  const disconnected = nextEvent(client, "disconnected");
  await link.cut();
  await disconnected;
  for (const seq of range(2, 10)) await publish("tiny:sse", seq); // tiny keeps 3
  const resubscribed = nextEvent(client, "resubscribed");
  link.restore();
  const notice = await resubscribed;
  assert.equal(notice.recovered, false);
  assert.equal(notice.reason, "trimmed");
  assert.equal(notice.offset, 10);
  await publish("tiny:sse", 11);
  assert.deepEqual(await take(inbox, 1), [11], "live again, nothing replayed");
  assert.deepEqual(inbox.all.map((m) => m.seq), [1, 11]);
});

test("subscribe with since from an earlier visit resumes over SSE as over a WebSocket", async () => {
  const first = await connect("vic");
  const before = messageQueue();
  await first.client.subscribe("feed:visit", before);
  for (const seq of range(1, 3)) await publish("feed:visit", seq);
  assert.deepEqual(await take(before, 3), range(1, 3));
  const since = first.client.position("feed:visit");
  first.client.close();
  for (const seq of range(4, 6)) await publish("feed:visit", seq);

  const { client } = await connect("vic");
  const inbox = messageQueue();
  const sub = await client.subscribe("feed:visit", inbox, { since });
  assert.equal(sub.recovered, true, JSON.stringify(sub));
  assert.deepEqual(await take(inbox, 3), range(4, 6), "exactly what was published meanwhile");
  const stale = await client.subscribe("feed:visit-2", () => {}, { since: { offset: 5, epoch: "not-this-epoch" } });
  assert.equal(stale.recovered, false);
  assert.equal(stale.reason, "other_epoch");
});

test("close event: a force disconnect (3503) is terminal", async () => {
  const { client } = await connect("fay");
  const disconnected = nextEvent(client, "disconnected");
  const res = await server.api("DELETE", `/api/connections/${client.connectionId}`);
  assert.ok(res.status === 200 || res.status === 204, JSON.stringify(res));
  const event = await disconnected;
  assert.equal(event.code, 3503);
  assert.equal(event.reason, "disconnected by server");
  assert.equal(event.willReconnect, false);
  assert.equal(client.state, "disconnected");
});

test("close event: token expiry (3005) reconnects at once with a fresh token", async () => {
  let calls = 0;
  const expIn = (s) => Math.ceil(Date.now() / 1000) + s;
  const { client } = await connect("tex", {
    refresh: false,
    token: () => (++calls === 1 ? mintToken({ sub: "tex", exp: expIn(1) }) : mintToken({ sub: "tex" })),
  });
  const inbox = messageQueue();
  await client.subscribe("feed:expiry", inbox);
  await publish("feed:expiry", 1);
  const disconnected = await nextEvent(client, "disconnected", { timeout: 5000 });
  assert.equal(disconnected.code, 3005);
  assert.equal(disconnected.reason, "token expired");
  assert.equal(disconnected.delay, 0);
  await nextEvent(client, "connected");
  assert.equal(calls, 2);
  await publish("feed:expiry", 2);
  assert.deepEqual(await take(inbox, 2), [1, 2]);
});

test("a token function: before expiry a stream with a fresh token replaces the old one, without a disconnect", async () => {
  const calls = [];
  const expIn = (s) => Math.ceil(Date.now() / 1000) + s;
  const { client, events, connected } = await connect("ref", {
    token: (info) => {
      calls.push(info.reason);
      return calls.length === 1 ? mintToken({ sub: "ref", exp: expIn(2) }) : mintToken({ sub: "ref" });
    },
  });
  const inbox = messageQueue();
  await client.subscribe("feed:refresh", inbox);
  const refreshed = await nextEvent(client, "refreshed", { timeout: 5000 });
  assert.deepEqual(calls, ["connect", "refresh"]);
  assert.ok(refreshed.expiresAt > connected.expiresAt + 60);
  await quietPeriod(connected.expiresAt * 1000 - Date.now() + 500); // past the first token's expiry
  await publish("feed:refresh", 1);
  assert.deepEqual(await take(inbox, 1), [1]);
  assert.equal(events.filter((e) => e.type === "disconnected").length, 0, JSON.stringify(events));
});

test("a stream that receives nothing, not even the server's heartbeat, is taken for dead", async () => {
  const quiet = await startServer({ env: { REALTIME_PING_INTERVAL: "200ms" } });
  try {
    const { client, events } = await connect("hal", { target: quiet, heartbeatInterval: 400, timeout: 400 });
    // Many watchdog periods: the server's heartbeat comments keep the stream alive.
    await quietPeriod(2500);
    assert.equal(events.filter((e) => e.type === "disconnected").length, 0, JSON.stringify(events));
    await quiet.freeze();
    const dead = await nextEvent(client, "disconnected", { timeout: 5000 });
    assert.equal(dead.code, 4001);
    assert.equal(dead.willReconnect, true);
    client.close();
  } finally {
    await quiet.stop();
  }
});

test("graceful shutdown: queued frames, then the close event, then a reconnect once the server is back", async () => {
  const node = await new TestServer({ config: HISTORY_CONFIG }).start();
  try {
    const { client } = await connect("gus", { target: node });
    const inbox = messageQueue();
    const notices = messageQueue();
    client.on("server-shutdown", notices);
    await client.subscribe("news:shutdown", inbox);
    await publish("news:shutdown", 1, node);
    const disconnected = nextEvent(client, "disconnected");
    await node.stop();
    const event = await disconnected;
    assert.equal((await inbox.next()).seq, 1);
    assert.equal((await notices.next()).type, "server-shutdown");
    assert.equal(event.code, 1001, "the close event of a graceful shutdown");
    assert.equal(event.reason, "server shutting down");
    assert.equal(event.willReconnect, true);
    assert.ok(event.delay <= 1000, `a shutdown delay, not a backoff: ${event.delay}`);
    const back = nextEvent(client, "connected", { timeout: 20000 });
    await node.start();
    await back;
    await publish("news:shutdown", 2, node);
    assert.equal((await inbox.next()).seq, 2);
  } finally {
    await node.stop();
  }
});

test("a per-user limit of one: a second stream is refused with 3504, and topic changes close before they reopen", async () => {
  const node = await new TestServer({ env: { REALTIME_MAX_CONNECTIONS_PER_USER: "1" } }).start();
  try {
    const { client, events } = await connect("one", { target: node });
    const inbox = messageQueue();
    await client.subscribe("news:limit-a", inbox);
    // The replacement stream hit the limit: the client closed its stream and opened one with the topic
    // (retrying once when the server had not yet seen the closed one go: a 3504 right after it).
    const disconnects = events.filter((e) => e.type === "disconnected").map((e) => [e.code, e.willReconnect]);
    assert.deepEqual(disconnects[0], [4002, true], JSON.stringify(events));
    assert.equal(events.find((e) => e.type === "disconnected").delay, 0, "reopened at once");
    assert.ok(
      disconnects.length === 1 || (disconnects.length === 2 && disconnects[1][0] === 3504 && disconnects[1][1] === true),
      JSON.stringify(disconnects),
    );
    await client.subscribe("news:limit-b", inbox);
    await publish("news:limit-a", 1, node);
    await publish("news:limit-b", 2, node);
    assert.deepEqual(await take(inbox, 2), [1, 2]);

    const second = new RealtimeClient(node.wsUrl, { token: () => mintToken({ sub: "one" }), transport: "sse", heartbeatInterval: 0 });
    clients.push(second);
    const refused = await nextEvent(second, "disconnected");
    assert.equal(refused.code, 3504);
    assert.equal(refused.willReconnect, false);
    assert.equal(client.state, "connected", "the first one is untouched");
  } finally {
    await node.stop();
  }
});

/**
 * An HTTP proxy that forwards requests to `targetPort` (responses streamed as
 * they come) and refuses every WebSocket upgrade with 403, as some corporate
 * proxies do.
 */
async function startUpgradeRefusingProxy(targetPort) {
  let upgradesRefused = 0;
  const proxy = createServer((req, res) => {
    const upstream = request(
      { host: "127.0.0.1", port: targetPort, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", () => res.destroy());
    res.on("close", () => upstream.destroy());
    req.pipe(upstream);
  });
  proxy.on("upgrade", (req, socket) => {
    upgradesRefused += 1;
    socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
  const { port } = proxy.address();
  return {
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    get upgradesRefused() {
      return upgradesRefused;
    },
    close: () =>
      new Promise((r) => {
        proxy.closeAllConnections();
        proxy.close(() => r());
      }),
  };
}

test('transport "auto": where a proxy refuses the WebSocket upgrade the client falls back to SSE and stays on it', async () => {
  const proxy = await startUpgradeRefusingProxy(server.port);
  try {
    const client = new RealtimeClient(proxy.wsUrl, {
      token: () => mintToken({ sub: "ava" }),
      transport: "auto",
      heartbeatInterval: 0,
      initialDelay: 20,
    });
    clients.push(client);
    const events = recordEvents(client, EVENTS);
    const connected = await nextEvent(client, "connected");
    assert.equal(connected.transport, "sse");
    assert.equal(client.transport, "sse");
    assert.equal(proxy.upgradesRefused, 1);
    assert.deepEqual(
      events.map((e) => [e.type, e.transport]),
      [
        ["connecting", "websocket"],
        ["disconnected", "websocket"],
        ["connecting", "sse"],
        ["connected", "sse"],
      ],
    );
    const inbox = messageQueue();
    await client.subscribe("feed:auto", inbox);
    await publish("feed:auto", 1);
    assert.deepEqual(await take(inbox, 1), [1]);
    const { body } = await connectionInfo(client.connectionId);
    assert.equal(body.transport, "sse");
    await assert.rejects(client.publish("feed:auto", { type: "x" }), (e) => e.code === "unsupported_transport");

    // Later reconnects stay on SSE: a force disconnect is terminal, so reconnect by hand.
    await server.api("DELETE", `/api/connections/${client.connectionId}`);
    await nextEvent(client, "disconnected");
    client.connect();
    const again = await nextEvent(client, "connected");
    assert.equal(again.transport, "sse");
    assert.equal(proxy.upgradesRefused, 1, "no WebSocket tried again in the same session");
  } finally {
    await proxy.close();
  }
});

test('transport "auto": where WebSockets work it uses them', async () => {
  const client = new RealtimeClient(server.wsUrl, { token: () => mintToken({ sub: "wes" }), transport: "auto" });
  clients.push(client);
  const connected = await nextEvent(client, "connected");
  assert.equal(connected.transport, "websocket");
  const inbox = messageQueue();
  await client.subscribe("news:auto-ws", inbox);
  const reply = await server.api("POST", "/api/topics/news:auto-ws/messages", { type: "tick", seq: 1 });
  assert.equal(reply.status, 200);
  assert.equal((await inbox.next()).seq, 1);
  assert.equal(await client.ping().then((rtt) => typeof rtt), "number", "commands work");
});

test('transport "auto": a WebSocket constructor that throws falls back to SSE too', async () => {
  class Broken {
    constructor() {
      throw new Error("blocked by policy");
    }
  }
  const client = new RealtimeClient(server.wsUrl, {
    token: () => mintToken({ sub: "bro" }),
    transport: "auto",
    WebSocket: Broken,
    heartbeatInterval: 0,
    initialDelay: 20,
  });
  clients.push(client);
  const connected = await nextEvent(client, "connected");
  assert.equal(connected.transport, "sse");
});

test('transport "auto": a WebSocket closed by the server before its welcome (3504) is no reason to fall back to SSE', async () => {
  const node = await new TestServer({ env: { REALTIME_MAX_CONNECTIONS_PER_USER: "1" } }).start();
  try {
    const first = new RealtimeClient(node.wsUrl, { token: () => mintToken({ sub: "lim" }) });
    clients.push(first);
    await nextEvent(first, "connected");
    const client = new RealtimeClient(node.wsUrl, { token: () => mintToken({ sub: "lim" }), transport: "auto", heartbeatInterval: 0 });
    clients.push(client);
    const refused = await nextEvent(client, "disconnected");
    assert.equal(refused.code, 3504);
    assert.equal(refused.transport, "websocket");
    assert.equal(refused.willReconnect, false);
    // The upgrade worked and the server answered over it: once the user has room
    // again, the next session is a WebSocket one.
    first.close();
    await eventually(async () => (await node.api("GET", "/api/connections")).body?.connections?.length === 0, "the first connection gone");
    client.connect();
    const connected = await nextEvent(client, "connected");
    assert.equal(connected.transport, "websocket");
  } finally {
    await node.stop();
  }
});

test('transport "auto": connect() called by a disconnected listener of close() starts with a WebSocket again', async () => {
  const proxy = await startUpgradeRefusingProxy(server.port);
  try {
    const client = new RealtimeClient(proxy.wsUrl, {
      token: () => mintToken({ sub: "ara" }),
      transport: "auto",
      heartbeatInterval: 0,
      initialDelay: 20,
    });
    clients.push(client);
    assert.equal((await nextEvent(client, "connected")).transport, "sse");
    let again = false;
    client.addEventListener("disconnected", (e) => {
      if (e.willReconnect || again) return;
      again = true;
      client.connect();
    });
    const connecting = nextEvent(client, "connecting");
    client.close();
    assert.equal((await connecting).transport, "websocket", "a new session after close()");
    const connected = await nextEvent(client, "connected");
    assert.equal(connected.transport, "sse");
    assert.equal(proxy.upgradesRefused, 2);
  } finally {
    await proxy.close();
  }
});
