// The client against one real server: connect, subscribe, direct messages,
// publish refusal, ping, timeouts, terminal close.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";

import { RealtimeClient, RealtimeError } from "../realtime-client.js";
import { messageQueue, mintToken, nextEvent, quietPeriod, recordEvents, startServer } from "./server.js";

let server;
const clients = [];

before(async () => {
  server = await startServer();
});

afterEach(() => {
  server.thaw();
  for (const c of clients.splice(0)) c.close();
});

after(async () => {
  for (const c of clients.splice(0)) c.close();
  await server?.stop();
});

/** A client for `sub`, resolved once connected. */
async function connect(sub, options = {}) {
  const client = new RealtimeClient(server.wsUrl, { token: mintToken({ sub, roles: options.roles ?? [] }), ...options });
  clients.push(client);
  const events = recordEvents(client);
  const connected = await nextEvent(client, "connected");
  return { client, connected, events };
}

test("connect: connecting then connected, with the welcome's connection id", async () => {
  const token = mintToken({ sub: "alice", roles: ["staff"] });
  const client = new RealtimeClient(server.wsUrl, { token });
  clients.push(client);
  const events = recordEvents(client);
  assert.equal(client.connectionId, null);
  const connected = await nextEvent(client, "connected");
  assert.deepEqual(
    events.map((e) => e.type),
    ["connecting", "connected"],
  );
  assert.match(connected.connectionId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.equal(client.connectionId, connected.connectionId);
  assert.equal(client.state, "connected");
  assert.equal(connected.userId, "alice");
  assert.deepEqual(connected.roles, ["staff"]);
  assert.equal(typeof connected.expiresAt, "number");
  assert.equal(connected.welcome.type, "welcome");
  assert.equal(connected.transport, "websocket", "the default transport");
  assert.equal(client.transport, "websocket");
  // The server knows this connection under the same id.
  const info = await server.api("GET", `/api/connections/${connected.connectionId}`);
  assert.equal(info.status, 200);
  assert.equal(info.body.user_id, "alice");
  client.close();
  assert.equal(client.state, "disconnected");
  assert.equal(client.connectionId, null);
  assert.deepEqual(events.at(-1), {
    type: "disconnected",
    code: 1000,
    reason: "client closed",
    willReconnect: false,
    wasConnected: true,
    transport: "websocket",
  });
});

test("subscribe resolves on subscribed and receives topic messages sent over the HTTP API", async () => {
  const { client } = await connect("bob");
  const first = messageQueue();
  const second = messageQueue();
  const everything = messageQueue();
  client.on("*", everything);
  assert.deepEqual(await client.subscribe("order:123", first), { topic: "order:123" });
  // A second handler on the same topic: resolves at once, both get messages.
  assert.deepEqual(await client.subscribe("order:123", second), { topic: "order:123" });
  assert.deepEqual(client.topics, ["order:123"]);

  const sent = await server.api("POST", "/api/topics/order:123/messages", { type: "order-updated", status: "shipped" });
  assert.equal(sent.status, 200);
  assert.equal(sent.body.delivered, 1);
  for (const queue of [first, second, everything]) {
    const message = await queue.next();
    assert.equal(message.type, "order-updated");
    assert.equal(message.status, "shipped");
    assert.equal(message.topic, "order:123");
    assert.match(message.timestamp, /^\d{4}-\d\d-\d\dT/);
  }

  // Removing one handler keeps the subscription; removing the last one ends it.
  await client.unsubscribe("order:123", first);
  assert.deepEqual(client.topics, ["order:123"]);
  await server.api("POST", "/api/topics/order:123/messages", { type: "order-updated", status: "delivered" });
  assert.equal((await second.next()).status, "delivered");
  assert.equal(first.all.length, 1, "the removed handler got nothing more");
  await client.unsubscribe("order:123");
  assert.deepEqual(client.topics, []);
  const afterUnsubscribe = await server.api("POST", "/api/topics/order:123/messages", { type: "order-updated" });
  assert.equal(afterUnsubscribe.body.delivered, 0, "the server no longer has the subscription");
});

test("subscribe to another user's topic rejects with forbidden and is not kept", async () => {
  const { client } = await connect("carol");
  await assert.rejects(client.subscribe("user:someone-else", () => {}), (e) => {
    assert.ok(e instanceof RealtimeError);
    assert.equal(e.code, "forbidden");
    assert.equal(e.topic, "user:someone-else");
    return true;
  });
  await assert.rejects(client.subscribe("not a topic", () => {}), (e) => e.code === "invalid_topic");
  assert.deepEqual(client.topics, []);
  // Own user topic is fine.
  await client.subscribe("user:carol", () => {});
  assert.deepEqual(client.topics, ["user:carol"]);
});

test("subscribe rejects with timeout when the server does not answer, and the topic is dropped", async () => {
  const { client } = await connect("dave");
  await server.freeze();
  const started = Date.now();
  try {
    await assert.rejects(client.subscribe("slow:topic", () => {}, { timeout: 300 }), (e) => e.code === "timeout");
  } finally {
    server.thaw();
  }
  const waited = Date.now() - started;
  assert.ok(waited >= 290 && waited < 3000, `rejected after ${waited} ms`);
  assert.deepEqual(client.topics, []);
  // The connection survives the freeze and works again.
  assert.equal(typeof (await client.ping()), "number");
  // The late subscribe was undone by the unsubscribe the client sent after the timeout.
  const sent = await server.api("POST", "/api/topics/slow:topic/messages", { type: "late" });
  assert.equal(sent.body.delivered, 0);
});

test("direct messages are dispatched by type with on(), and off() stops them", async () => {
  const { client } = await connect("erin");
  const notifications = messageQueue();
  const other = messageQueue();
  const all = messageQueue();
  const off = client.on("notification", notifications);
  client.on("other", other);
  client.on("*", all);
  const sent = await server.api("POST", "/api/users/erin/messages", { type: "notification", text: "New message received" });
  assert.equal(sent.body.delivered, 1);
  const message = await notifications.next();
  assert.equal(message.type, "notification");
  assert.equal(message.text, "New message received");
  assert.equal(typeof message.timestamp, "string");
  assert.equal(message.topic, undefined);
  assert.equal((await all.next()).type, "notification");
  assert.equal(other.all.length, 0);
  // By connection id too.
  await server.api("POST", `/api/connections/${client.connectionId}/messages`, { type: "other", n: 1 });
  assert.equal((await other.next()).n, 1);
  assert.equal((await all.next()).type, "other");
  off();
  await server.api("POST", "/api/users/erin/messages", { type: "notification", text: "again" });
  assert.equal((await all.next()).text, "again");
  assert.equal(notifications.all.length, 1, "off() removed the handler");
});

test("publish is refused with forbidden when client publishing is closed", async () => {
  const { client } = await connect("frank");
  await client.subscribe("chat:lobby", () => {});
  await assert.rejects(client.publish("chat:lobby", { type: "chat", text: "hi" }), (e) => {
    assert.equal(e.code, "forbidden");
    assert.match(e.message, /client publishing is not enabled/);
    return true;
  });
});

test("ping resolves with the round-trip time", async () => {
  const { client } = await connect("gina");
  const rtt = await client.ping();
  assert.equal(typeof rtt, "number");
  assert.ok(rtt >= 0 && rtt < 5000, `rtt ${rtt}`);
});

test("commands: not_connected before connecting; pending ones rejected with disconnected on close", async () => {
  const client = new RealtimeClient(server.wsUrl, { token: mintToken({ sub: "hank" }), autoConnect: false });
  clients.push(client);
  await assert.rejects(client.ping(), (e) => e.code === "not_connected");
  await assert.rejects(client.publish("chat:x", { type: "x" }), (e) => e.code === "not_connected");
  // subscribe is queued and sent once connected.
  const handler = messageQueue();
  const queued = client.subscribe("queued:topic", handler);
  client.connect();
  assert.deepEqual(await queued, { topic: "queued:topic" });
  await server.api("POST", "/api/topics/queued:topic/messages", { type: "hello" });
  assert.equal((await handler.next()).type, "hello");
  // A command in flight when the socket closes is rejected with `disconnected`.
  const pending = client.ping({ timeout: 5000 });
  client.close();
  await assert.rejects(pending, (e) => e.code === "disconnected");
});

test("terminal close 3503 (DELETE /api/connections/{id}): disconnected, no reconnect attempt", async () => {
  const { client, connected, events } = await connect("ivan");
  const disconnectedP = nextEvent(client, "disconnected");
  const deleted = await server.api("DELETE", `/api/connections/${connected.connectionId}`);
  assert.equal(deleted.status, 200);
  const disconnected = await disconnectedP;
  assert.equal(disconnected.code, 3503);
  assert.equal(disconnected.reason, "disconnected by server");
  assert.equal(disconnected.willReconnect, false);
  assert.equal(client.state, "disconnected");
  assert.equal(client.connectionId, null);
  // Longer than the largest first backoff delay (250 ms) plus slack: nothing happens.
  await quietPeriod(700);
  assert.deepEqual(
    events.map((e) => e.type),
    ["connecting", "connected", "disconnected"],
  );
  const conns = await server.api("GET", "/api/connections");
  assert.equal(conns.body.connections.filter((c) => c.user_id === "ivan").length, 0);
});

test("a handshake refused with 401 is retried with backoff, never connected", async () => {
  const client = new RealtimeClient(server.wsUrl, { token: "not-a-jwt", initialDelay: 20, maxDelay: 40 });
  clients.push(client);
  const events = recordEvents(client);
  const disconnected = await nextEvent(client, "disconnected");
  assert.equal(disconnected.code, 1006);
  assert.equal(disconnected.willReconnect, true);
  assert.ok(disconnected.delay >= 10 && disconnected.delay <= 20);
  await nextEvent(client, "disconnected", { filter: (e) => e.delay >= 20 });
  client.close();
  assert.ok(!events.some((e) => e.type === "connected"));
  assert.equal(events.filter((e) => e.type === "connecting").length, 2);
});

test("heartbeat: an unanswered application ping drops a dead link and reconnects", async () => {
  const { client, connected } = await connect("jack", { heartbeatInterval: 150, timeout: 300 });
  const droppedP = nextEvent(client, "disconnected");
  await server.freeze();
  let dropped;
  try {
    dropped = await droppedP;
  } finally {
    server.thaw();
  }
  assert.equal(dropped.code, 4001);
  assert.equal(dropped.reason, "heartbeat timeout");
  assert.equal(dropped.willReconnect, true);
  const again = await nextEvent(client, "connected");
  assert.notEqual(again.connectionId, connected.connectionId);
});

test("close() is final; connect() later restores the confirmed subscriptions", async () => {
  const { client, events } = await connect("kate");
  const inbox = messageQueue();
  await client.subscribe("news:kept", inbox);
  client.close();
  await quietPeriod(400);
  assert.equal(events.filter((e) => e.type === "connecting").length, 1, "no reconnect after close()");
  assert.deepEqual(client.topics, ["news:kept"]);
  client.connect();
  await nextEvent(client, "connected");
  await client.ping();
  await server.api("POST", "/api/topics/news:kept/messages", { type: "back" });
  assert.equal((await inbox.next()).type, "back");
});
