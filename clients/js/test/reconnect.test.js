// Reconnecting across a server restart on the same port: shutdown notice, state
// events, fresh token, subscriptions restored.

import { after, test } from "node:test";
import assert from "node:assert/strict";

import { RealtimeClient } from "../realtime-client.js";
import { TestServer, freePort, messageQueue, mintToken, nextEvent, recordEvents } from "./server.js";

let server;
let client;

after(async () => {
  client?.close();
  await server?.stop();
});

test("after a server restart the client reconnects, with a fresh token, and restores its subscriptions", async () => {
  server = new TestServer({ port: await freePort() });
  await server.start();
  let tokenCalls = 0;
  client = new RealtimeClient(server.wsUrl, {
    token: async () => {
      tokenCalls += 1;
      return mintToken({ sub: "rita" });
    },
  });
  const events = recordEvents(client);
  const first = await nextEvent(client, "connected");
  assert.equal(tokenCalls, 1);

  const inbox = messageQueue();
  const notices = messageQueue();
  client.on("server-shutdown", notices);
  await client.subscribe("news:restart", inbox);
  await server.api("POST", "/api/topics/news:restart/messages", { type: "before" });
  assert.equal((await inbox.next()).type, "before");

  // Graceful shutdown: notice, then close 1001, then a short random delay.
  const disconnectedP = nextEvent(client, "disconnected");
  const exit = await server.stop();
  assert.equal(exit.code, 0, `server exit ${JSON.stringify(exit)}`);
  const disconnected = await disconnectedP;
  assert.equal(disconnected.code, 1001);
  assert.equal(disconnected.reason, "server shutting down");
  assert.equal(disconnected.willReconnect, true);
  assert.ok(disconnected.delay >= 0 && disconnected.delay <= 1000, `shutdown delay ${disconnected.delay}`);
  assert.equal((await notices.next()).type, "server-shutdown");
  assert.equal(client.connectionId, null);

  // Subscribing while disconnected queues the subscription.
  const queuedInbox = messageQueue();
  const queued = client.subscribe("news:queued", queuedInbox);

  const reconnectedP = nextEvent(client, "connected", { timeout: 20000 });
  await server.start();
  const reconnected = await reconnectedP;
  assert.notEqual(reconnected.connectionId, first.connectionId);
  assert.equal(client.connectionId, reconnected.connectionId);
  assert.equal(client.state, "connected");
  assert.ok(tokenCalls >= 2, `the token function was called again (${tokenCalls} calls)`);
  assert.equal(tokenCalls, events.filter((e) => e.type === "connecting").length, "one token per attempt");

  // disconnected(1001) -> connecting -> [disconnected(1006) -> connecting]* -> connected
  const sequence = events.map((e) => e.type).join(",");
  assert.match(sequence, /^connecting,connected,disconnected(,connecting,disconnected)*,connecting,connected$/);
  for (const e of events.filter((e) => e.type === "disconnected").slice(1)) {
    assert.equal(e.willReconnect, true);
  }

  assert.deepEqual(await queued, { topic: "news:queued" });
  // Replies come in order: once the pong is back, the restore was carried out.
  await client.ping();
  const topics = await server.api("GET", "/api/topics");
  assert.deepEqual(topics.body.topics, { "news:restart": 1, "news:queued": 1 });
  await server.api("POST", "/api/topics/news:restart/messages", { type: "after" });
  assert.equal((await inbox.next()).type, "after");
  await server.api("POST", "/api/topics/news:queued/messages", { type: "queued" });
  assert.equal((await queuedInbox.next()).type, "queued");
  assert.deepEqual(inbox.all.map((m) => m.type), ["before", "after"]);
});
